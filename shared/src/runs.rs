//! What a training run leaves in S3 under `runs/<run>/`: its descriptor, model, validation
//! predictions, metrics and a one-line summary for listings.

use crate::evaluation::Evaluation;
use crate::messages::{Method, Retraining, TrainJob, TrainParams};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Descriptor file name.
pub const DESCRIPTOR: &str = "descriptor.json";
/// Classic model file name.
pub const MODEL: &str = "model.json";
/// Validation predictions (CSV).
pub const PREDICTIONS: &str = "predictions.csv";
/// Metrics file name.
pub const METRICS: &str = "metrics.json";
/// Summary file name; written last, so its presence means the run is finished.
pub const SUMMARY: &str = "summary.json";

/// Fine-tuned weights: the trained var store (blocks from the retraining depth on, and the
/// new classifier `head.*`), over the backbone's ImageNet weights for the rest.
pub const FINETUNED: &str = "finetuned.safetensors";
/// Fine-tuning progress: which epoch's weights to resume from.
pub const CHECKPOINT: &str = "checkpoint/state.json";

/// Checkpointed trained weights after `epoch`.
pub fn checkpoint_weights(epoch: u32) -> String {
    format!("checkpoint/epoch-{epoch:03}.safetensors")
}

/// Where a fine-tune stands, written after each epoch's weights are durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Epochs completed.
    pub epochs_done: u32,
    /// File (under the run prefix) with the trained weights after that epoch.
    pub weights: String,
    /// Per-epoch history so far.
    pub history: Vec<EpochRecord>,
    /// Training seconds spent so far, over all segments.
    pub elapsed_s: f64,
    /// Message id of the job this checkpoint belongs to: only the same job resumes it (a
    /// new job under the name of a failed one starts afresh). Absent in older checkpoints.
    #[serde(default)]
    pub job: Option<String>,
    /// The latest segment of that job that started from it (claimed it): an older segment
    /// redelivered after that is a stale copy and is dropped.
    #[serde(default)]
    pub segment: u32,
}

/// Why a run failed (written instead of a summary).
pub const ERROR: &str = "error.json";

/// Key of a run file.
pub fn key(run: &str, file: &str) -> String {
    format!("{}{file}", crate::keys::run_prefix(run))
}

/// How a run was made: enough to reproduce it and to use its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDescriptor {
    /// Run name.
    pub run: String,
    /// Method.
    pub method: Method,
    /// Backbone.
    pub backbone: String,
    /// Retraining depth (finetune only).
    pub retraining: Option<Retraining>,
    /// Hyper-parameters as requested.
    pub params: TrainParams,
    /// Training dataset.
    pub dataset: String,
    /// More datasets learnt from with it (absent for runs of one dataset).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    /// Share of each class's training tiles used.
    pub sample_frac: f64,
    /// Seed.
    pub seed: u64,
    /// Share of each label's training tiles kept out as the test split (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_frac: Option<f64>,
    /// Labels, sorted; a label's index is its position.
    pub labels: Vec<String>,
    /// Feature size the model expects (classic methods).
    pub feature_dim: Option<usize>,
    /// aerial version that trained it.
    pub code_version: String,
    /// When training started.
    pub started_at: DateTime<Utc>,
}

impl RunDescriptor {
    /// The descriptor of `job` with its label list.
    pub fn new(job: &TrainJob, labels: Vec<String>, feature_dim: Option<usize>) -> Self {
        Self {
            run: job.run.clone(),
            method: job.method,
            backbone: job.backbone.clone(),
            retraining: job.params.retraining,
            params: job.params.clone(),
            dataset: job.dataset.clone(),
            also: job.also.clone(),
            sample_frac: job.sample_frac,
            seed: job.seed,
            test_frac: job.test_frac,
            labels,
            feature_dim,
            code_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: Utc::now(),
        }
    }
}

/// One epoch of a fine-tune (or one fit of a classic method).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: u32,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training error, percent.
    pub train_error_pct: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Seconds the epoch took.
    pub duration_s: f64,
    /// Training samples per second.
    pub samples_per_sec: f64,
}

/// Metrics of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Validation evaluation.
    pub validation: Evaluation,
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
    /// Training tiles used (after `sample_frac`).
    pub train_tiles: u64,
    /// Training tiles per label.
    pub train_per_label: Vec<u64>,
    /// Validation tiles.
    pub val_tiles: u64,
    /// Evaluation on the tiles the job's `test_frac` kept out of training and of every
    /// choice made on validation (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Evaluation>,
}

/// One line per run, for `aerial runs` and the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run name.
    pub run: String,
    /// Method.
    pub method: Method,
    /// Backbone.
    pub backbone: String,
    /// Retraining depth.
    pub retraining: Option<Retraining>,
    /// Dataset.
    pub dataset: String,
    /// Validation accuracy.
    pub accuracy: f64,
    /// Test accuracy (runs with a `test_frac` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// Wall seconds.
    pub duration_s: f64,
    /// Training tiles used.
    pub train_tiles: u64,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}
