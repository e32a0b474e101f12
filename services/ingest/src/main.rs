//! aerial-ingest: consumes `ingest.jobs` ([`IngestJob`]); reads the uploaded raw input
//! (labelled folders, or GeoTIFF scenes cut into fixed-ground-size tiles with GDAL) from S3,
//! or scenes named in place (`s3://bucket/key.tif`, read by range, never copied);
//! validates and stores content-addressed tiles, writes the dataset manifest part and the
//! job status, and publishes one [`Tile`] per good tile to `featurize.tiles`.
//!
//! [`IngestJob`]: aerial_shared::messages::IngestJob
//! [`Tile`]: aerial_shared::messages::Tile

mod job;
mod labelled;
mod partial;
mod remote;
mod scene;

use aerial_shared::{service, topology, worker};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = service::start("ingest").await?;
    if !app.ensure_bucket().await {
        return Ok(());
    }
    let limits = scene::Limits {
        max_pixels: app.settings.ingest.max_scene_megapixels * 1_000_000,
        max_tiles: app.settings.ingest.max_scene_tiles,
    };
    let handler = Arc::new(job::Ingester::new(
        app.store.clone(),
        app.telemetry.clone(),
        limits,
        job::InPlace {
            access: remote::S3Access::new(&app.settings.s3),
            settings: app.settings.ingest.clone(),
        },
    ));
    // one job at a time: a job is already thousands of parallel tile uploads
    let cfg = worker::WorkerConfig::jobs(&app.settings, "ingest", topology::INGEST_JOBS);
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
