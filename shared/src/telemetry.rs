//! Logs (`tracing`, JSON or pretty), the Prometheus registry with the consumer metrics every
//! service has, and the HTTP server exposing `/metrics`, `/healthz` and `/readyz`.

use crate::config::TelemetrySettings;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global `tracing` subscriber. Safe to call twice (the second is ignored).
pub fn init_logs(s: &TelemetrySettings) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&s.log_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if s.log_format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Metrics of the consumer runtime, labelled by queue (a bounded set).
#[derive(Clone)]
pub struct WorkerMetrics {
    /// Deliveries received.
    pub consumed: IntCounterVec,
    /// Deliveries acked after their output was durable.
    pub acked: IntCounterVec,
    /// Deliveries dead-lettered, by reason kind.
    pub dead_lettered: IntCounterVec,
    /// Deliveries requeued after a transient failure.
    pub requeued: IntCounterVec,
    /// Deliveries that had been delivered before (requeued, or held by a consumer that went
    /// away): the visible trace of a fault.
    pub redelivered: IntCounterVec,
    /// Items in batches being processed.
    pub in_flight: IntGaugeVec,
    /// Batch sizes.
    pub batch_size: HistogramVec,
    /// Seconds to process one batch.
    pub batch_seconds: HistogramVec,
    /// Errors by kind.
    pub errors: IntCounterVec,
}

/// A service's registry, readiness flag and standard metrics.
#[derive(Clone)]
pub struct Telemetry {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Set while the service is connected and consuming.
    pub ready: Arc<AtomicBool>,
    /// Held deliveries and the last settle, for `/healthz`.
    pub liveness: crate::liveness::Liveness,
    /// Consumer metrics.
    pub worker: WorkerMetrics,
    /// Seconds spent loading models.
    pub model_load_seconds: Histogram,
    /// Tiles processed (featurized, scored, ingested) by this service.
    pub tiles: IntCounterVec,
    /// 1 while the service runs; labelled with its name for target discovery.
    pub up: IntGauge,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Telemetry {
    /// Creates the registry with `aerial_` metrics const-labelled by `service`.
    pub fn new(service: &str) -> Self {
        let registry = Registry::new_custom(
            Some("aerial".into()),
            Some([("service".to_string(), service.to_string())].into()),
        )
        .expect("valid registry");
        let q = &["queue"];
        let r = &registry;
        let worker = WorkerMetrics {
            consumed: reg(
                r,
                IntCounterVec::new(
                    Opts::new("messages_consumed_total", "Deliveries received."),
                    q,
                )
                .unwrap(),
            ),
            acked: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "messages_acked_total",
                        "Deliveries acked after their output was durable.",
                    ),
                    q,
                )
                .unwrap(),
            ),
            dead_lettered: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "messages_dead_lettered_total",
                        "Deliveries sent to a dead-letter queue.",
                    ),
                    &["queue", "reason"],
                )
                .unwrap(),
            ),
            requeued: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "messages_requeued_total",
                        "Deliveries requeued after a transient failure.",
                    ),
                    q,
                )
                .unwrap(),
            ),
            redelivered: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "messages_redelivered_total",
                        "Deliveries received that had been delivered before.",
                    ),
                    q,
                )
                .unwrap(),
            ),
            in_flight: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "messages_in_flight",
                        "Deliveries in batches being processed.",
                    ),
                    q,
                )
                .unwrap(),
            ),
            batch_size: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new("batch_size", "Messages per processed batch.")
                        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
                    q,
                )
                .unwrap(),
            ),
            batch_seconds: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new("batch_duration_seconds", "Seconds to process one batch.")
                        .buckets(prometheus::exponential_buckets(0.01, 2.0, 14).unwrap()),
                    q,
                )
                .unwrap(),
            ),
            errors: reg(
                r,
                IntCounterVec::new(Opts::new("errors_total", "Errors by kind."), &["kind"])
                    .unwrap(),
            ),
        };
        let model_load_seconds = reg(
            r,
            Histogram::with_opts(HistogramOpts::new(
                "model_load_seconds",
                "Seconds to load a model.",
            ))
            .unwrap(),
        );
        let tiles = reg(
            r,
            IntCounterVec::new(
                Opts::new("tiles_processed_total", "Tiles processed by this service."),
                &["dataset"],
            )
            .unwrap(),
        );
        let up = reg(
            r,
            IntGauge::new("service_up", "1 while the service runs.").unwrap(),
        );
        up.set(1);
        Self {
            registry,
            ready: Arc::new(AtomicBool::new(false)),
            liveness: Default::default(),
            worker,
            model_load_seconds,
            tiles,
            up,
        }
    }

    /// Text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is utf-8")
    }
}

async fn metrics(State(t): State<Telemetry>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], t.render())
}

async fn healthz(State(t): State<Telemetry>) -> impl IntoResponse {
    match t.liveness.stalled() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    if t.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// The health/metrics routes, to serve alone or merge into a bigger router.
pub fn routes(t: Telemetry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(t)
}

/// Binds `addr` and serves `router` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: &str,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "http server listening");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(local)
}
