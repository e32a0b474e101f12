//! aerial-featurize: consumes `featurize.tiles` ([`Tile`](aerial_shared::messages::Tile)) and will write feature shards to S3.
//!
//! This build only connects, declares the topology, serves `/metrics`, `/healthz` and
//! `/readyz`, and dead-letters each message with the reason below, so nothing is lost.

use aerial_shared::{messages::Tile, service, topology, worker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = service::start("featurize", None).await?;
    let handler = Arc::new(worker::Refuse::<Tile>::new(
        "featurize stage not implemented in this build",
    ));
    let cfg =
        worker::WorkerConfig::from_settings(&app.settings, "featurize", topology::FEATURIZE_TILES);
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
