//! aerial-metrics: the pipeline's view for operators and data scientists.
//!
//! - Consumes `metrics.events` ([`Event`]) from every service into pipeline metrics on
//!   `/metrics`: tiles featurized per dataset and backbone, accuracy, epoch and loss per run,
//!   progress and ETA per job, dead-lettered messages per queue.
//! - Polls RabbitMQ's management API for ready / unacked messages and consumers per queue,
//!   and counts the store: tiles per dataset, tiles with features per dataset and backbone.
//! - Serves the read-only JSON API (`/api/runs`, `/api/runs/{id}`, `/api/compare?runs=a,b`,
//!   `/api/jobs`, `/api/jobs/{id}`) and the HTML dashboard (`/`), both read from the run
//!   and job records in S3, which are the durable history.
//! - Serves each finished map over its imagery (`/jobs/{id}/view`) and the labelling page
//!   (`/jobs/{id}/label`): with the dashboard token, analysts label assessment samples and
//!   corrections (stored in S3), and ask for a retrain (publishes `train.jobs`, and the
//!   corrections to `featurize.tiles`) and a new map (publishes `score.jobs`).
//!
//! [`Event`]: aerial_shared::messages::Event

mod api;
mod charts;
mod events;
mod history;
mod inventory;
mod label_pages;
// its helpers return the finished error response itself, as axum handlers do
#[allow(clippy::result_large_err)]
mod labelling;
mod maps;
mod pages;
mod queues;

use aerial_shared::{service, topology, worker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = service::start_with_routes("metrics", |settings, store, _| {
        let labelling = labelling::Labelling::new(
            store.clone(),
            settings.dashboard.token.clone(),
            settings.amqp.clone(),
        );
        api::routes(store.clone())
            .merge(pages::routes(store.clone()))
            .merge(label_pages::routes(store.clone()))
            .merge(labelling::routes(labelling))
    })
    .await?;
    tracing::info!(dashboard = %format!("http://{}/", app.http_addr), "dashboard up");
    let gauges = queues::QueueGauges::new(&app.telemetry.registry);
    tokio::spawn(queues::poll(
        app.settings.amqp.clone(),
        gauges,
        app.shutdown.clone(),
    ));
    tokio::spawn(
        inventory::Inventory::new(&app.telemetry.registry)
            .poll(app.store.clone(), app.shutdown.clone()),
    );
    let handler = Arc::new(events::EventCounter::new(&app.telemetry));
    let cfg =
        worker::WorkerConfig::from_settings(&app.settings, "metrics", topology::METRICS_EVENTS);
    worker::run(
        &app.settings,
        cfg,
        handler,
        app.telemetry.clone(),
        app.shutdown.clone(),
    )
    .await;
    Ok(())
}
