//! aerial-score: consumes `score.tiles` ([`ScoreTile`](aerial_shared::messages::ScoreTile)) and will write prediction batches to S3.
//!
//! This build only connects, declares the topology, serves `/metrics`, `/healthz` and
//! `/readyz`, and dead-letters each message with the reason below, so nothing is lost.

use aerial_shared::{messages::ScoreTile, service, topology, worker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = service::start("score", None).await?;
    let handler = Arc::new(worker::Refuse::<ScoreTile>::new(
        "score stage not implemented in this build",
    ));
    let cfg = worker::WorkerConfig::from_settings(&app.settings, "score", topology::SCORE_TILES);
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
