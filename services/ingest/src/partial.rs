//! An ingest job's progress between segments: which inputs are handled, the manifest rows
//! and the status so far. A job that reaches its segment deadline saves this and continues in
//! a new delivery; the next segment claims the progress when it starts and skips what is
//! handled. A segment redelivered after a later one claimed the progress (or after the job
//! finished) is stale and dropped; if the next segment was never published, the redelivered
//! one simply goes on from the saved progress, so no job is lost between the two.

use aerial_shared::{
    keys, manifest, manifest::ManifestRow, status::JobStatus, store::StoreError,
    worker::DeliveryInfo, Store,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Saved progress of one ingest job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partial {
    /// Message id of the job it belongs to.
    pub job: Option<String>,
    /// The latest segment that started from it (claimed it).
    pub segment: u32,
    /// The job finished: any later delivery of it is stale.
    #[serde(default)]
    pub finished: bool,
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
    /// A later segment of this job has started, or the job finished: a stale copy.
    Stale,
}

/// Reads the saved progress of `job_id` for the delivery `info`, and claims it for this
/// segment when a newer segment starts from it.
pub async fn start(store: &Store, job_id: &str, info: &DeliveryInfo) -> Result<Start, StoreError> {
    let key = keys::ingest_partial(job_id);
    let mut p: Partial = match store.get_json(&key).await {
        Ok(p) => p,
        Err(StoreError::NotFound { .. }) => return Ok(Start::Fresh),
        Err(e) => return Err(e),
    };
    // progress of another job under the same id (an earlier upload) is not ours to resume
    if info.message_id.is_none() || p.job != info.message_id {
        return Ok(Start::Fresh);
    }
    if p.finished || p.segment > info.segment {
        return Ok(Start::Stale);
    }
    if info.segment > p.segment {
        p.segment = info.segment;
        store.put_json(&key, &p).await?;
    }
    let rows = manifest::from_csv(p.rows_csv.as_bytes()).map_err(|e| StoreError::Corrupt {
        key: key.clone(),
        message: e.to_string(),
    })?;
    Ok(Start::Resume(Box::new(p), rows))
}

/// Saves progress for whichever segment goes on from here.
pub async fn save(
    store: &Store,
    info: &DeliveryInfo,
    done: &BTreeSet<String>,
    rows: &[ManifestRow],
    status: &JobStatus,
) -> Result<(), StoreError> {
    let p = Partial {
        job: info.message_id.clone(),
        segment: info.segment,
        finished: false,
        done: done.clone(),
        rows_csv: String::from_utf8(manifest::to_csv(rows)).unwrap_or_default(),
        status: status.clone(),
    };
    store
        .put_json(&keys::ingest_partial(&status.job_id), &p)
        .await
}

/// Marks the job finished (its progress dropped): a late copy of any segment is then stale.
pub async fn finished(
    store: &Store,
    info: &DeliveryInfo,
    status: &JobStatus,
) -> Result<(), StoreError> {
    let p = Partial {
        job: info.message_id.clone(),
        segment: info.segment,
        finished: true,
        done: BTreeSet::new(),
        rows_csv: String::new(),
        status: status.clone(),
    };
    store
        .put_json(&keys::ingest_partial(&status.job_id), &p)
        .await
}
