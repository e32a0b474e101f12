//! aerial-train: consumes `train.jobs` ([`TrainJob`]); fits logistic regression or a random
//! forest on a dataset's frozen CNN features, or fine-tunes MobileNetV2 at a retraining depth
//! (checkpointed per epoch, in segments that requeue the job), evaluates on its validation
//! split (and a test share when the job keeps one), with the run's test-time views, and writes the run record under `runs/<run>/` (descriptor, model, predictions,
//! metrics, summary), then publishes `run_finished`.
//!
//! [`TrainJob`]: aerial_shared::messages::TrainJob

mod data;
mod finetune;
mod handler;
mod record;
mod views;

use aerial_shared::{service, topology, worker};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    aerial_shared::malloc::inference_runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let app = service::start("train").await?;
    if !app.ensure_bucket().await {
        return Ok(());
    }
    let finetune = finetune::Finetuner::new(
        app.store.clone(),
        app.telemetry.clone(),
        app.settings.models.dir.clone(),
        app.settings.worker.threads,
        app.shutdown.clone(),
    );
    let handler = Arc::new(handler::Trainer::new(
        app.store.clone(),
        app.telemetry.clone(),
        finetune,
        app.settings.models.dir.clone(),
        app.settings.worker.threads,
    ));
    let cfg = worker::WorkerConfig::jobs(&app.settings, "train", topology::TRAIN_JOBS);
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
