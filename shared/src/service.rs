//! Start-up common to every service binary: settings, logs, telemetry server, store client
//! and the shutdown token.

use crate::{config::Settings, shutdown, store::Store, telemetry::Telemetry};
use axum::Router;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// A started service's shared parts.
pub struct App {
    /// Loaded settings.
    pub settings: Settings,
    /// Registry, readiness and standard metrics.
    pub telemetry: Telemetry,
    /// Cancelled on SIGTERM / Ctrl-C.
    pub shutdown: CancellationToken,
    /// Object store on the configured bucket (created if missing).
    pub store: Store,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub http_addr: SocketAddr,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The HTTP listener could not bind.
    #[error("binding http server: {0}")]
    Bind(#[from] std::io::Error),
}

/// Loads settings (`$AERIAL_CONFIG` + `AERIAL__*`), installs logs, serves health and metrics,
/// and prepares the store. The bucket is created lazily by [`App::ensure_bucket`] so a
/// service starts even while the store is down.
pub async fn start(name: &'static str) -> Result<App, StartError> {
    start_with_routes(name, |_, _, _| Router::new()).await
}

/// Like [`start`], with extra HTTP routes built from the settings, store and telemetry
/// (the metrics service's API and dashboard).
pub async fn start_with_routes(
    name: &'static str,
    routes: impl FnOnce(&Settings, &Store, &Telemetry) -> Router,
) -> Result<App, StartError> {
    let settings = Settings::load(None)?;
    crate::telemetry::init_logs(&settings.telemetry);
    let telemetry = Telemetry::new(name);
    let shutdown = shutdown::on_signals();
    let store = Store::connect(&settings.s3).await;
    let router =
        crate::telemetry::routes(telemetry.clone()).merge(routes(&settings, &store, &telemetry));
    let http_addr =
        crate::telemetry::serve(&settings.telemetry.http_addr, router, shutdown.clone()).await?;
    tracing::info!(
        service = name,
        broker = %settings.amqp.redacted_uri(),
        s3 = settings.s3.endpoint.as_deref().unwrap_or("aws"),
        bucket = %settings.s3.bucket,
        http = %http_addr,
        "starting"
    );
    Ok(App {
        settings,
        telemetry,
        shutdown,
        store,
        http_addr,
    })
}

impl App {
    /// Creates the bucket, retrying until the store answers or shutdown is requested.
    pub async fn ensure_bucket(&self) -> bool {
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            match self.store.ensure_bucket().await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, "object store unavailable; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(std::time::Duration::from_secs(10));
                }
            }
        }
    }
}
