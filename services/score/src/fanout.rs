//! A score job: check the run and the dataset, record what the job expects, and publish one
//! `score.tiles` message per tile (or, with a stride, per window across the tiles). The spec and status are written before any tile is
//! published, so the coordinator always knows the expected count.

use crate::{models, windows};
use aerial_shared::{
    broker::Outgoing,
    cells::Stride,
    keys, manifest,
    messages::{ScoreJob, ScoreTile, Tile, Window},
    predictions::ScoreSpec,
    status::{JobState, JobStatus},
    store::StoreError,
    tile_fetch::{self, FetchError},
    topology,
    worker::{BatchCtx, BatchHandler, Outcome},
    Store,
};

/// Tile messages published per confirm round.
const PUBLISH_CHUNK: usize = 2000;

/// The `score.jobs` handler.
pub struct FanOut {
    store: Store,
    /// A strided job leaves out windows with more no-data than this share.
    max_nodata: f64,
}

/// Why a stride could not be set up for a job.
enum StrideFailure {
    /// The job cannot have this stride (said why).
    Refused(String),
    /// The store failed: another try may work.
    Transient(String),
}

impl FanOut {
    /// A handler reading runs and manifests from `store`.
    pub fn new(store: Store, max_nodata: f64) -> Self {
        Self { store, max_nodata }
    }

    /// The stride of `stride_m` metres over these tiles: their pixel size comes from the
    /// first georeferenced tile's image (all tiles of a scene dataset are cut alike).
    async fn stride(&self, tiles: &[Tile], stride_m: f64) -> Result<Stride, StrideFailure> {
        let Some(first) = tiles.iter().find(|t| t.geo.is_some()) else {
            return Err(StrideFailure::Refused(
                "a stride needs georeferenced scene tiles, and this dataset has none".into(),
            ));
        };
        let bytes = match tile_fetch::fetch_bytes(&self.store, &[first])
            .await
            .remove(0)
        {
            Ok(b) => b,
            Err(FetchError::Transient(e)) => return Err(StrideFailure::Transient(e)),
            Err(FetchError::Bad(e)) => return Err(StrideFailure::Refused(e)),
        };
        let size = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        let Some((width, _)) = size else {
            return Err(StrideFailure::Refused(format!(
                "tile {}: its image size cannot be read",
                first.tile_id
            )));
        };
        let g = first.geo.as_ref().expect("found with geo");
        let pixel_m = (g.bounds[2] - g.bounds[0]) / f64::from(width);
        Stride::new(width, pixel_m, stride_m).map_err(|e| StrideFailure::Refused(e.to_string()))
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
        let tiles: Vec<Tile> = rows
            .iter()
            .map(|r| r.to_tile(&job.dataset, &d.backbone))
            .collect();
        // what the job scores: the stored tiles, or windows across them every stride
        let mut nodata = std::collections::BTreeMap::new();
        let (stride, work): (Option<Stride>, Vec<(Tile, Option<Window>)>) = match job.stride_m {
            None => (None, tiles.into_iter().map(|t| (t, None)).collect()),
            Some(m) => {
                let stride = match self.stride(&tiles, m).await {
                    Ok(s) => s,
                    Err(StrideFailure::Transient(e)) => return Outcome::Retry(e),
                    Err(StrideFailure::Refused(why)) => return self.refuse(&job, why).await,
                };
                let plan = windows::plan(&tiles, &stride, self.max_nodata);
                tracing::info!(
                    job = %job.job_id,
                    stride_px = stride.stride_px,
                    cell_m = stride.cell_m(),
                    windows = plan.windows.len(),
                    skipped_nodata = plan.skipped.values().sum::<u64>(),
                    "strided score job planned"
                );
                nodata = plan.skipped;
                let w = plan
                    .windows
                    .into_iter()
                    .map(|(t, w)| (t, Some(w)))
                    .collect();
                (Some(stride), w)
            }
        };
        if work.is_empty() {
            return self
                .refuse(
                    &job,
                    format!("dataset {:?} has nothing to score", job.dataset),
                )
                .await;
        }
        let spec = ScoreSpec {
            job: job.clone(),
            labels: d.labels.clone(),
            total: work.len() as u64,
            method: d.method.as_str().into(),
            backbone: d.backbone.clone(),
            accepted_at: chrono::Utc::now(),
            stride,
            nodata,
        };
        let mut st = JobStatus::new(&job.job_id, "score", &job.dataset);
        st.total = work.len() as u64;
        for (t, _) in &work {
            *st.groups
                .entry(t.date.clone().unwrap_or_default())
                .or_default() += 1;
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
        for chunk in work.chunks(PUBLISH_CHUNK) {
            let msgs: Vec<Outgoing> = chunk
                .iter()
                .map(|(tile, window)| {
                    Outgoing::work(
                        topology::SCORE_TILES,
                        &ScoreTile {
                            job_id: job.job_id.clone(),
                            run: job.run.clone(),
                            tile: tile.clone(),
                            window: window.clone(),
                        },
                    )
                })
                .collect();
            if let Err(e) = ctx.publisher.publish_all(msgs).await {
                return Outcome::Retry(format!("publishing tiles: {e}"));
            }
        }
        tracing::info!(job = %job.job_id, run = %job.run, dataset = %job.dataset, tiles = work.len(), "score job fanned out");
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
