//! aerial-score: maps a region with a trained run. Every replica runs three consumers:
//!
//! - `score.jobs` ([`ScoreJob`]): check the run and the dataset, record the job's spec and
//!   expected tile count, and fan its tiles out to `score.tiles`.
//! - `score.tiles` ([`ScoreTile`]): in batches, featurize (backbone on the inference workers)
//!   and classify with the run's model, write the batch's predictions to
//!   `jobs/<job>/predictions/<hash of tile ids>.json` (a redelivered batch overwrites), then
//!   publish a [`ScoreProgress`] and ack. Undecodable tiles are recorded under
//!   `jobs/<job>/dead/` and dead-lettered.
//! - `score.progress` ([`ScoreProgress`], single active consumer): count distinct tiles per
//!   job; when predicted + refused = expected, assemble the outputs once (table, GeoJSON,
//!   per-date GeoTIFF and PNG map, change report, summary) under `jobs/<job>/outputs/`.
//!
//! Replicas are stateless (a model cache only); add or remove them at any time.
//!
//! [`ScoreJob`]: aerial_shared::messages::ScoreJob
//! [`ScoreTile`]: aerial_shared::messages::ScoreTile
//! [`ScoreProgress`]: aerial_shared::messages::ScoreProgress

mod assemble;
mod cog;
mod coordinator;
mod fanout;
mod feature_cache;
mod gpkg;
mod mapimage;
mod models;
mod scorer;
mod stac;
mod style;
mod windows;
mod written;

use aerial_model::backbone::Inference;
use aerial_shared::{malloc, service, topology, worker};
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    malloc::inference_runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let app = service::start("score").await?;
    if !app.ensure_bucket().await {
        return Ok(());
    }
    let replica = replica_id();
    tracing::info!(%replica, "score replica starting");
    // GDAL's messages (e.g. a COG's small internal tiles, chosen on purpose) go to the logs
    // at debug, not to stderr; its failures come back as errors of the calls that made them
    gdal::config::set_error_handler(|kind, code, msg| {
        tracing::debug!(?kind, code, msg, "gdal");
    });
    let load_hist = app.telemetry.model_load_seconds.clone();
    let inference = Inference::spawn(
        app.settings.models.dir.clone(),
        app.settings.worker.threads,
        move |s| load_hist.observe(s),
    );

    let jobs = worker::WorkerConfig::jobs(&app.settings, "score", topology::SCORE_JOBS);
    let tiles = worker::WorkerConfig::from_settings(&app.settings, "score", topology::SCORE_TILES);
    let progress = worker::WorkerConfig {
        batch_size: 64,
        batch_wait: Duration::from_millis(200),
        concurrency: 1,
        ..worker::WorkerConfig::from_settings(&app.settings, "score", topology::SCORE_PROGRESS)
    };
    let fanout = Arc::new(fanout::FanOut::new(
        app.store.clone(),
        app.settings.score.max_nodata,
        app.settings.score.max_windows,
    ));
    let scorer = Arc::new(scorer::Scorer::new(
        app.store.clone(),
        inference,
        app.telemetry.clone(),
        replica,
    ));
    let coordinator = Arc::new(coordinator::Coordinator::new(app.store.clone()));
    let (s, t, x) = (&app.settings, &app.telemetry, &app.shutdown);
    tokio::join!(
        worker::run(s, jobs, fanout, t.clone(), x.clone()),
        worker::run(s, tiles, scorer, t.clone(), x.clone()),
        worker::run(s, progress, coordinator, t.clone(), x.clone()),
    );
    Ok(())
}

/// Names this replica in prediction batches: host (the pod name on Kubernetes) and pid.
fn replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}
