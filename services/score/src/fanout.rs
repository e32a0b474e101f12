//! A score job: check the run and the dataset, record what the job expects, and publish one
//! `score.tiles` message per tile. The spec and status are written before any tile is
//! published, so the coordinator always knows the expected count.

use crate::models;
use aerial_shared::{
    broker::Outgoing,
    keys, manifest,
    messages::{ScoreJob, ScoreTile},
    predictions::ScoreSpec,
    status::{JobState, JobStatus},
    store::StoreError,
    topology,
    worker::{BatchCtx, BatchHandler, Outcome},
    Store,
};

/// Tile messages published per confirm round.
const PUBLISH_CHUNK: usize = 2000;

/// The `score.jobs` handler.
pub struct FanOut {
    store: Store,
}

impl FanOut {
    /// A handler reading runs and manifests from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records a refused job so `aerial status` shows why, and dead-letters it.
    async fn refuse(&self, job: &ScoreJob, reason: String) -> Outcome {
        if keys::validate_name(&job.job_id).is_ok() {
            let mut st = JobStatus::new(&job.job_id, "score", &job.dataset);
            st.state = JobState::Failed;
            st.error = Some(reason.clone());
            if let Err(e) = self
                .store
                .put_json(&keys::job_status(&job.job_id), &st)
                .await
            {
                return Outcome::Retry(e.to_string());
            }
        }
        Outcome::Dead(format!("score job {}: {reason}", job.job_id))
    }

    async fn one(&self, ctx: &BatchCtx, job: ScoreJob) -> Outcome {
        let names = keys::validate_name(&job.job_id)
            .and(keys::validate_name(&job.dataset))
            .and(keys::validate_run_name(&job.run));
        if let Err(e) = names {
            return self.refuse(&job, e.to_string()).await;
        }
        // a job id already taken by another run or dataset is refused, never answered with
        // the other job's results
        match self
            .store
            .get_json::<ScoreSpec>(&keys::score_spec(&job.job_id))
            .await
        {
            Ok(spec) => {
                if let Some(why) = spec.conflict(&job) {
                    return Outcome::Dead(format!("score job {}: {why}", job.job_id));
                }
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Outcome::store_failure(&format!("score job {}", job.job_id), e),
        }
        let mut seen_before = false;
        match self
            .store
            .get_json::<JobStatus>(&keys::job_status(&job.job_id))
            .await
        {
            Ok(st) if st.state == JobState::Done => {
                tracing::info!(job = %job.job_id, "score job already done; nothing to do");
                return Outcome::Ack;
            }
            Ok(st) if st.state == JobState::Running => {
                // a redelivered job: publishing its tiles again only overwrites predictions
                tracing::info!(job = %job.job_id, "score job seen before; publishing its tiles again");
                seen_before = true;
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Outcome::store_failure(&format!("score job {}", job.job_id), e),
        }
        let run = match models::load(&self.store, &job.run).await {
            Ok(r) => r,
            Err(e) if e.is_transient() => return Outcome::Retry(e.to_string()),
            Err(e) => return self.refuse(&job, e.to_string()).await,
        };
        let rows = match manifest::load(&self.store, &job.dataset).await {
            Ok(r) => r,
            Err(e) if e.is_permanent() => {
                return self
                    .refuse(&job, format!("dataset {}: {e}", job.dataset))
                    .await
            }
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        if rows.is_empty() {
            return self
                .refuse(&job, format!("dataset {:?} has no tiles", job.dataset))
                .await;
        }
        let d = &run.descriptor;
        let spec = ScoreSpec {
            job: job.clone(),
            labels: d.labels.clone(),
            total: rows.len() as u64,
            method: d.method.as_str().into(),
            backbone: d.backbone.clone(),
            accepted_at: chrono::Utc::now(),
        };
        let mut st = JobStatus::new(&job.job_id, "score", &job.dataset);
        st.total = rows.len() as u64;
        for r in &rows {
            *st.groups.entry(r.date.clone()).or_default() += 1;
        }
        st.published = st.total;
        let recorded = async {
            if seen_before {
                return Ok(());
            }
            self.store
                .put_json(&keys::score_spec(&job.job_id), &spec)
                .await?;
            self.store
                .put_json(&keys::job_status(&job.job_id), &st)
                .await
        }
        .await;
        if let Err(e) = recorded {
            return Outcome::Retry(e.to_string());
        }
        for chunk in rows.chunks(PUBLISH_CHUNK) {
            let msgs: Vec<Outgoing> = chunk
                .iter()
                .map(|r| {
                    Outgoing::work(
                        topology::SCORE_TILES,
                        &ScoreTile {
                            job_id: job.job_id.clone(),
                            run: job.run.clone(),
                            tile: r.to_tile(&job.dataset, &d.backbone),
                        },
                    )
                })
                .collect();
            if let Err(e) = ctx.publisher.publish_all(msgs).await {
                return Outcome::Retry(format!("publishing tiles: {e}"));
            }
        }
        tracing::info!(job = %job.job_id, run = %job.run, dataset = %job.dataset, tiles = rows.len(), "score job fanned out");
        Outcome::Ack
    }
}

#[async_trait::async_trait]
impl BatchHandler for FanOut {
    type Msg = ScoreJob;

    async fn handle(&self, ctx: &BatchCtx, batch: Vec<ScoreJob>) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        for job in batch {
            out.push(self.one(ctx, job).await);
        }
        out
    }
}
