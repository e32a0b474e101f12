//! The progress record of a job, kept in S3 at [`crate::keys::job_status`] and read by the CLI.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, work under way.
    Running,
    /// Finished; counts are final.
    Done,
    /// Stopped by an error that is not about one item.
    Failed,
}

/// One refused input item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadItem {
    /// File or tile that was refused.
    pub item: String,
    /// Why.
    pub reason: String,
}

/// Progress and summary of an ingest or score job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Job id.
    pub job_id: String,
    /// `ingest` or `score`.
    pub kind: String,
    /// Dataset concerned.
    pub dataset: String,
    /// Current state.
    pub state: JobState,
    /// Items expected (0 while unknown).
    pub total: u64,
    /// Items handled so far, good or bad.
    pub done: u64,
    /// Items refused.
    pub failed: u64,
    /// Tiles newly stored.
    pub new_tiles: u64,
    /// Tiles that were already stored (content-addressed, so not uploaded again).
    pub existing_tiles: u64,
    /// Tile messages published downstream.
    pub published: u64,
    /// Tiles per label.
    pub labels: BTreeMap<String, u64>,
    /// Tiles per split (or per date for scenes).
    pub groups: BTreeMap<String, u64>,
    /// Every refused item with its reason.
    pub bad: Vec<BadItem>,
    /// Items ignored on purpose (e.g. loose files beside the label folders).
    #[serde(default)]
    pub skipped: Vec<BadItem>,
    /// Fatal error, when `state` is `failed`.
    pub error: Option<String>,
    /// Workers that contributed (score replicas).
    #[serde(default)]
    pub replicas: Vec<String>,
    /// When work began.
    pub started_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

impl JobStatus {
    /// A new running job.
    pub fn new(job_id: &str, kind: &str, dataset: &str) -> Self {
        let now = Utc::now();
        Self {
            job_id: job_id.into(),
            kind: kind.into(),
            dataset: dataset.into(),
            state: JobState::Running,
            total: 0,
            done: 0,
            failed: 0,
            new_tiles: 0,
            existing_tiles: 0,
            published: 0,
            labels: BTreeMap::new(),
            groups: BTreeMap::new(),
            bad: Vec::new(),
            skipped: Vec::new(),
            error: None,
            replicas: Vec::new(),
            started_at: now,
            updated_at: now,
        }
    }

    /// Items per second since the start.
    pub fn rate(&self) -> f64 {
        let secs = (self.updated_at - self.started_at).num_milliseconds() as f64 / 1000.0;
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }

    /// Seconds left at the current rate, when known.
    pub fn eta_seconds(&self) -> Option<f64> {
        let rate = self.rate();
        (self.total > self.done && rate > 0.0).then(|| (self.total - self.done) as f64 / rate)
    }
}
