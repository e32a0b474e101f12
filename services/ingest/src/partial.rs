//! An ingest job's progress between segments: which inputs are handled, the manifest rows
//! and the status so far. A job that reaches its segment deadline saves this, names the next
//! segment as the one to go on, and continues in a new delivery; the next segment skips what
//! is handled. A segment redelivered after its successor was published is stale.

use aerial_shared::{
    keys, manifest, manifest::ManifestRow, status::JobStatus, worker::DeliveryInfo, Store,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Saved progress of one ingest job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partial {
    /// Message id of the job it belongs to.
    pub job: Option<String>,
    /// The segment that goes on from here.
    pub segment: u32,
    /// Inputs handled (stored or refused), by their name in the upload.
    pub done: BTreeSet<String>,
    /// Manifest rows of the stored ones, as CSV.
    pub rows_csv: String,
    /// The job's status so far (counts, refused items).
    pub status: JobStatus,
}

/// What a segment starts from.
pub enum Start {
    /// Nothing saved for this job: start afresh.
    Fresh,
    /// Go on from saved progress.
    Resume(Box<Partial>, Vec<ManifestRow>),
    /// A later segment of this job exists: this delivery is a stale copy.
    Stale,
}

/// Reads the saved progress of `job_id` for the delivery `info`.
pub async fn start(
    store: &Store,
    job_id: &str,
    info: &DeliveryInfo,
) -> Result<Start, aerial_shared::store::StoreError> {
    let p: Partial = match store.get_json(&keys::ingest_partial(job_id)).await {
        Ok(p) => p,
        Err(aerial_shared::store::StoreError::NotFound { .. }) => return Ok(Start::Fresh),
        Err(e) => return Err(e),
    };
    // progress of another job under the same id (an earlier upload) is not ours to resume
    if info.message_id.is_none() || p.job != info.message_id {
        return Ok(Start::Fresh);
    }
    if p.segment > info.segment {
        return Ok(Start::Stale);
    }
    let rows = manifest::from_csv(p.rows_csv.as_bytes()).map_err(|e| {
        aerial_shared::store::StoreError::Corrupt {
            key: keys::ingest_partial(job_id),
            message: e.to_string(),
        }
    })?;
    Ok(Start::Resume(Box::new(p), rows))
}

/// Saves progress for the next segment of the delivery `info`.
pub async fn save(
    store: &Store,
    info: &DeliveryInfo,
    done: &BTreeSet<String>,
    rows: &[ManifestRow],
    status: &JobStatus,
) -> Result<(), aerial_shared::store::StoreError> {
    let p = Partial {
        job: info.message_id.clone(),
        segment: info.segment + 1,
        done: done.clone(),
        rows_csv: String::from_utf8(manifest::to_csv(rows)).unwrap_or_default(),
        status: status.clone(),
    };
    store
        .put_json(&keys::ingest_partial(&status.job_id), &p)
        .await
}
