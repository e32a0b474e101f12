//! aerial-metrics: consumes `metrics.events` ([`Event`]) from every service and exports
//! pipeline-level counters on `/metrics`.
//!
//! [`Event`]: aerial_shared::messages::Event

mod events;

use aerial_shared::{service, topology, worker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = service::start("metrics", None).await?;
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
