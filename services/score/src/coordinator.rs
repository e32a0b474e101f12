//! Counts each score job's distinct tiles as replicas report written objects, keeps the job's
//! status current, and assembles the outputs once every expected tile is predicted or
//! refused. Its view is rebuilt from S3 whenever it meets a job it has not seen (after a
//! restart, or when another replica's coordinator took over), so a failover loses nothing.

use crate::assemble;
use aerial_shared::{
    keys,
    messages::{EventKind, ScoreProgress},
    predictions::{DeadTile, PredictionBatch, PredictionRow, ScoreSpec},
    status::{BadItem, JobState, JobStatus},
    store::StoreError,
    worker::{BatchCtx, BatchHandler, Outcome},
    Store,
};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How a status the coordinator marked failed begins: such a job is reopened by its next
/// report (its objects are all in S3; only the report was lost), unlike a job refused at
/// the start.
const GAVE_UP: &str = "a progress report could not be handled";

/// How often a running job's status record is rewritten.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Objects read at once when rebuilding a job's view.
const PARALLEL_READS: usize = 16;

/// What the coordinator knows of one running job.
struct Track {
    spec: ScoreSpec,
    status: JobStatus,
    rows: HashMap<String, PredictionRow>,
    dead: BTreeMap<String, DeadTile>,
    keys: HashSet<String>,
    replicas: BTreeSet<String>,
    last_write: Instant,
}

impl Track {
    fn scored(&self) -> u64 {
        let refused = self
            .dead
            .keys()
            .filter(|t| !self.rows.contains_key(*t))
            .count();
        (self.rows.len() + refused) as u64
    }

    fn refused(&self) -> Vec<&DeadTile> {
        self.dead
            .values()
            .filter(|d| !self.rows.contains_key(&d.tile_id))
            .collect()
    }

    fn complete(&self) -> bool {
        self.scored() >= self.spec.total
    }

    fn refresh_status(&mut self) {
        let refused: Vec<BadItem> = self
            .refused()
            .into_iter()
            .map(|d| BadItem {
                item: d.tile_id.clone(),
                reason: d.reason.clone(),
            })
            .collect();
        self.status.done = self.scored();
        self.status.failed = refused.len() as u64;
        self.status.bad = refused;
        self.status.replicas = self.replicas.iter().cloned().collect();
        self.status.updated_at = chrono::Utc::now();
    }
}

/// One object a replica wrote.
enum Written {
    Batch(PredictionBatch),
    Dead(DeadTile),
}

/// The `score.progress` handler.
pub struct Coordinator {
    store: Store,
    /// Broker session the views were built in, and the views.
    jobs: Mutex<(u64, HashMap<String, Track>)>,
}

impl Coordinator {
    /// A coordinator reading and writing job objects in `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            jobs: Mutex::new((0, HashMap::new())),
        }
    }

    async fn read(&self, job_id: &str, key: &str) -> Result<Written, StoreError> {
        if key.starts_with(&keys::dead_prefix(job_id)) {
            Ok(Written::Dead(self.store.get_json(key).await?))
        } else if key.starts_with(&keys::predictions_prefix(job_id)) {
            Ok(Written::Batch(self.store.get_json(key).await?))
        } else {
            Err(StoreError::NotFound {
                key: format!("{key} (not an object of job {job_id})"),
            })
        }
    }

    fn merge(track: &mut Track, key: String, w: Written) {
        match w {
            Written::Batch(b) => {
                track.replicas.insert(b.replica);
                for r in b.rows {
                    track.rows.insert(r.tile_id.clone(), r);
                }
            }
            Written::Dead(d) => {
                track.replicas.insert(d.replica.clone());
                track.dead.insert(d.tile_id.clone(), d);
            }
        }
        track.keys.insert(key);
    }

    /// Builds a job's view from its status, spec and every object written so far.
    /// `Ok(None)`: the job is already done.
    async fn rebuild(&self, job_id: &str) -> Result<Option<Track>, StoreError> {
        let mut status: JobStatus = self.store.get_json(&keys::job_status(job_id)).await?;
        let gave_up = status.state == JobState::Failed
            && status
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(GAVE_UP));
        if status.state != JobState::Running && !gave_up {
            return Ok(None);
        }
        if gave_up {
            tracing::info!(
                job = job_id,
                "score job given up earlier reopened by a new report"
            );
            status.state = JobState::Running;
            status.error = None;
        }
        let spec: ScoreSpec = self.store.get_json(&keys::score_spec(job_id)).await?;
        let mut objects = self.store.list(&keys::predictions_prefix(job_id)).await?;
        objects.extend(self.store.list(&keys::dead_prefix(job_id)).await?);
        let read = futures::stream::iter(objects.into_iter().map(|o| async move {
            let w = self.read(job_id, &o.key).await;
            (o.key, w)
        }))
        .buffered(PARALLEL_READS)
        .collect::<Vec<_>>()
        .await;
        let mut track = Track {
            spec,
            status,
            rows: HashMap::new(),
            dead: BTreeMap::new(),
            keys: HashSet::new(),
            replicas: BTreeSet::new(),
            last_write: Instant::now() - STATUS_EVERY,
        };
        for (key, w) in read {
            Self::merge(&mut track, key, w?);
        }
        tracing::info!(
            job = job_id,
            scored = track.scored(),
            total = track.spec.total,
            "score job view rebuilt from s3"
        );
        Ok(Some(track))
    }

    /// Handles one job's reports; one outcome for all of them.
    async fn job(&self, ctx: &BatchCtx, job_id: &str, reports: &[ScoreProgress]) -> Outcome {
        let mut guard = self.jobs.lock().await;
        if guard.0 != ctx.session {
            // reports acked by another coordinator meanwhile are only in S3
            guard.0 = ctx.session;
            guard.1.clear();
        }
        let jobs = &mut guard.1;
        if !jobs.contains_key(job_id) {
            match self.rebuild(job_id).await {
                Ok(Some(t)) => {
                    jobs.insert(job_id.to_string(), t);
                }
                Ok(None) => return Outcome::Ack, // late report of a finished job
                Err(StoreError::NotFound { key }) => {
                    return Outcome::Dead(format!("score job {job_id}: {key} not found"))
                }
                Err(e) => return Outcome::store_failure(&format!("score job {job_id}"), e),
            }
        }
        let track = jobs.get_mut(job_id).expect("inserted above");
        for r in reports {
            track.replicas.insert(r.replica.clone());
            if track.keys.contains(&r.key) {
                continue;
            }
            match self.read(job_id, &r.key).await {
                Ok(w) => Self::merge(track, r.key.clone(), w),
                Err(e @ StoreError::NotFound { .. }) => {
                    return Outcome::Dead(format!("score job {job_id}: {e}"))
                }
                Err(e) => return Outcome::store_failure(&format!("score job {job_id}"), e),
            }
        }
        track.refresh_status();
        let done = track.status.done;
        let total = track.spec.total;
        let failed = track.status.failed;
        if track.complete() {
            let mut rows: Vec<PredictionRow> = track.rows.values().cloned().collect();
            rows.sort_by(|a, b| (&a.date, &a.tile_id).cmp(&(&b.date, &b.tile_id)));
            let dead: Vec<DeadTile> = track.refused().into_iter().cloned().collect();
            let replicas: Vec<String> = track.replicas.iter().cloned().collect();
            let started = Instant::now();
            if let Err(e) = assemble::assemble(&self.store, &track.spec, rows, dead, replicas).await
            {
                tracing::error!(job = job_id, error = %e, "assembling outputs failed; will retry");
                return Outcome::Retry(e.to_string());
            }
            track.status.state = JobState::Done;
            if let Err(e) = self
                .store
                .put_json(&keys::job_status(job_id), &track.status)
                .await
            {
                return Outcome::Retry(e.to_string());
            }
            tracing::info!(
                job = job_id,
                predicted = done - failed,
                refused = failed,
                assemble_ms = started.elapsed().as_millis() as u64,
                "score job complete"
            );
            jobs.remove(job_id);
        } else if track.last_write.elapsed() >= STATUS_EVERY {
            track.last_write = Instant::now();
            // progress only: a failed write is repaired by the next one
            if let Err(e) = self
                .store
                .put_json(&keys::job_status(job_id), &track.status)
                .await
            {
                tracing::warn!(job = job_id, error = %e, "status write failed");
            }
        }
        let _ = ctx
            .publisher
            .event(
                ctx.service,
                EventKind::JobProgress {
                    job_id: job_id.into(),
                    done,
                    total: Some(total),
                    failed,
                },
            )
            .await;
        Outcome::Ack
    }
}

impl Coordinator {
    /// A report that will never be handled (dead-lettered now, or on its last delivery): the
    /// job can no longer complete by itself, so its status says so instead of running on.
    async fn give_up(&self, job_id: &str, why: &str) {
        self.jobs.lock().await.1.remove(job_id);
        let key = keys::job_status(job_id);
        let Ok(mut st) = self.store.get_json::<JobStatus>(&key).await else {
            return;
        };
        if st.state != JobState::Running {
            return;
        }
        st.state = JobState::Failed;
        st.error = Some(format!(
            "{GAVE_UP} ({why}); a later report of the job reopens it, or publish the same score job again"
        ));
        st.updated_at = chrono::Utc::now();
        match self.store.put_json(&key, &st).await {
            Ok(()) => tracing::error!(job = job_id, reason = why, "score job marked failed"),
            Err(e) => {
                tracing::error!(job = job_id, error = %e, "score job could not be marked failed")
            }
        }
    }
}

#[async_trait::async_trait]
impl BatchHandler for Coordinator {
    type Msg = ScoreProgress;

    async fn handle(&self, ctx: &BatchCtx, batch: Vec<ScoreProgress>) -> Vec<Outcome> {
        let mut by_job: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, p) in batch.iter().enumerate() {
            by_job.entry(p.job_id.clone()).or_default().push(i);
        }
        let mut out = vec![Outcome::Ack; batch.len()];
        for (job, mut idx) in by_job {
            // a report of an object outside its job is bad input; it says nothing of the job
            idx.retain(|&i| {
                let key = &batch[i].key;
                let own = key.starts_with(&keys::predictions_prefix(&job))
                    || key.starts_with(&keys::dead_prefix(&job));
                if !own {
                    out[i] = Outcome::Dead(format!(
                        "score progress of job {job} names {key}, not an object of that job"
                    ));
                }
                own
            });
            if idx.is_empty() {
                continue;
            }
            let reports: Vec<ScoreProgress> = idx.iter().map(|&i| batch[i].clone()).collect();
            let o = if aerial_shared::keys::validate_name(&job).is_err() {
                Outcome::Dead(format!("score progress for invalid job id {job:?}"))
            } else {
                let o = self.job(ctx, &job, &reports).await;
                let last_try = idx
                    .iter()
                    .any(|&i| ctx.deliveries.get(i).is_some_and(|d| d.last_try));
                match &o {
                    Outcome::Dead(why) => self.give_up(&job, why).await,
                    Outcome::Retry(why) if last_try => self.give_up(&job, why).await,
                    _ => {}
                }
                o
            };
            for i in idx {
                out[i] = o.clone();
            }
        }
        out
    }
}
