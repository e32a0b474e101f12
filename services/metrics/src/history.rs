//! The run and job history, read from the records the pipeline keeps in S3 (run summaries,
//! metrics and descriptors; job status and score summaries). S3 is the durable copy, so a
//! restarted metrics service has the whole history at once.

use aerial_shared::{
    change::ChangeReport,
    keys,
    predictions::ScoreSummary,
    runs::{self, RunDescriptor, RunMetrics, RunSummary},
    status::JobStatus,
    store::StoreError,
    Store,
};
use serde::Serialize;

/// Everything about one run.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    /// One-line summary.
    pub summary: RunSummary,
    /// How it was made.
    pub descriptor: RunDescriptor,
    /// Validation metrics and per-epoch history.
    pub metrics: RunMetrics,
}

/// Everything about one job.
#[derive(Debug, Serialize)]
pub struct JobDetail {
    /// Progress.
    pub status: JobStatus,
    /// Report of a finished score job.
    pub summary: Option<ScoreSummary>,
    /// Change between its first and last date.
    pub change: Option<ChangeReport>,
}

/// Finished runs, best accuracy first.
pub async fn runs(store: &Store) -> Result<Vec<RunSummary>, StoreError> {
    let mut all = Vec::new();
    for o in store.list("runs/").await? {
        if o.key.ends_with(&format!("/{}", runs::SUMMARY)) && o.key.matches('/').count() == 2 {
            all.push(store.get_json::<RunSummary>(&o.key).await?);
        }
    }
    all.sort_by(|a, b| b.accuracy.total_cmp(&a.accuracy));
    Ok(all)
}

/// One finished run.
pub async fn run(store: &Store, id: &str) -> Result<RunDetail, StoreError> {
    keys::validate_run_name(id)?;
    Ok(RunDetail {
        summary: store.get_json(&runs::key(id, runs::SUMMARY)).await?,
        descriptor: store.get_json(&runs::key(id, runs::DESCRIPTOR)).await?,
        metrics: store.get_json(&runs::key(id, runs::METRICS)).await?,
    })
}

/// Every job's status, newest first.
pub async fn jobs(store: &Store) -> Result<Vec<JobStatus>, StoreError> {
    let mut all = Vec::new();
    for o in store.list("jobs/").await? {
        if o.key.ends_with("/status.json") && o.key.matches('/').count() == 2 {
            all.push(store.get_json::<JobStatus>(&o.key).await?);
        }
    }
    all.sort_by_key(|j| std::cmp::Reverse(j.started_at));
    Ok(all)
}

/// `Ok(None)` for a missing object.
fn optional<T>(r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One job, with its score report and change report when it has them.
pub async fn job(store: &Store, id: &str) -> Result<JobDetail, StoreError> {
    keys::validate_name(id)?;
    let status = store.get_json(&keys::job_status(id)).await?;
    let summary = optional(
        store
            .get_json(&keys::job_output(id, keys::OUTPUT_SUMMARY))
            .await,
    )?;
    let change = optional(
        store
            .get_json(&keys::job_output(id, keys::OUTPUT_CHANGE))
            .await,
    )?;
    Ok(JobDetail {
        status,
        summary,
        change,
    })
}

/// An output file of a finished score job, if the job lists it.
pub async fn output(store: &Store, id: &str, file: &str) -> Result<Vec<u8>, StoreError> {
    let d = job(store, id).await?;
    let listed = d
        .summary
        .is_some_and(|s| s.outputs.iter().any(|o| o == file));
    if !listed {
        return Err(StoreError::NotFound {
            key: format!("{id}/{file}"),
        });
    }
    Ok(store.get(&keys::job_output(id, file)).await?.to_vec())
}
