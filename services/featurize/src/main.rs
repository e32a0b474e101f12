//! aerial-featurize: consumes `featurize.tiles` ([`Tile`]) in batches, runs an
//! ImageNet-pretrained backbone on each batch on a dedicated inference thread (CUDA when
//! present), writes one feature shard per batch to
//! `features/<dataset>/<backbone>/shards/` plus a per-tile marker, publishes a `featurized`
//! event, and acks only after the shard is durable. Tiles that already have features are
//! skipped; undecodable tiles go to the DLQ with their reason.
//!
//! [`Tile`]: aerial_shared::messages::Tile

mod backbone;
mod handler;

use aerial_shared::{malloc, service, topology, worker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    malloc::tune_for_inference();
    let app = service::start("featurize", None).await?;
    if !app.ensure_bucket().await {
        return Ok(());
    }
    let load_hist = app.telemetry.model_load_seconds.clone();
    let inference = backbone::Inference::spawn(
        app.settings.models.dir.clone(),
        app.settings.worker.threads,
        move |s| load_hist.observe(s),
    );
    let handler = Arc::new(handler::Featurizer::new(
        app.store.clone(),
        inference,
        app.telemetry.clone(),
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
