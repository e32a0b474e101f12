//! aerial-train: consumes `train.jobs` ([`TrainJob`](aerial_shared::messages::TrainJob)) and will write run records to S3.
//!
//! This build only connects, declares the topology, serves `/metrics`, `/healthz` and
//! `/readyz`, and dead-letters each message with the reason below, so nothing is lost.

use aerial_shared::{messages::TrainJob, service, topology, worker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = service::start("train", None).await?;
    let handler = Arc::new(worker::Refuse::<TrainJob>::new(
        "train stage not implemented in this build",
    ));
    let cfg = worker::WorkerConfig::from_settings(&app.settings, "train", topology::TRAIN_JOBS);
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
