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
    /// Most windows a strided job may have.
    max_windows: u64,
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
    pub fn new(store: Store, max_nodata: f64, max_windows: u64) -> Self {
        Self {
            store,
            max_nodata,
            max_windows,
        }
    }

    /// The pixel side and ground pixel size of a tile, read from its image.
    async fn tile_size(&self, tile: &Tile) -> Result<(u32, f64), StrideFailure> {
        let bytes = match tile_fetch::fetch_bytes(&self.store, &[tile])
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
                tile.tile_id
            )));
        };
        let g = tile.geo.as_ref().expect("tiles with geo only");
        Ok((width, (g.bounds[2] - g.bounds[0]) / f64::from(width)))
    }

    /// The stride of `stride_m` metres over these tiles, from one tile of each date: every
    /// date must have tiles of one pixel side and ground pixel size, as windows and cells are
    /// laid out in pixels (a job over scenes of different resolutions is refused).
    async fn stride(&self, tiles: &[Tile], stride_m: f64) -> Result<Stride, StrideFailure> {
        let mut one_per_date: std::collections::BTreeMap<&str, &Tile> = Default::default();
        for t in tiles.iter().filter(|t| t.geo.is_some()) {
            one_per_date
                .entry(t.date.as_deref().unwrap_or_default())
                .or_insert(t);
        }
        let mut sizes = Vec::new();
        for (date, t) in &one_per_date {
            sizes.push((*date, self.tile_size(t).await?));
        }
        let Some(&(first_date, (width, pixel_m))) = sizes.first() else {
            return Err(StrideFailure::Refused(
                "a stride needs georeferenced scene tiles, and this dataset has none".into(),
            ));
        };
        if let Some((date, (w, px))) = sizes
            .iter()
            .find(|(_, (w, px))| *w != width || (px - pixel_m).abs() > pixel_m * 1e-6)
        {
            return Err(StrideFailure::Refused(format!(
                "a stride needs every date cut alike: {first_date} has {width} px tiles of \
                 {pixel_m} m pixels, {date} {w} px of {px} m"
            )));
        }
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
        let mut holes = std::collections::BTreeMap::new();
        let (stride, work): (Option<Stride>, Vec<(Tile, Option<Window>)>) = match job.stride_m {
            None => {
                if let Some(why) = windows::misaligned(&tiles, None) {
                    return self.refuse(&job, why).await;
                }
                // tiles mostly no-data in their scene (collars, gaps) are not scored
                let mut work = Vec::with_capacity(tiles.len());
                for t in &tiles {
                    if windows::nodata_of(t) > self.max_nodata {
                        *nodata
                            .entry(t.date.clone().unwrap_or_default())
                            .or_default() += 1;
                    } else {
                        work.push((t.clone(), None));
                    }
                }
                (None, work)
            }
            Some(m) => {
                let stride = match self.stride(&tiles, m).await {
                    Ok(s) => s,
                    Err(StrideFailure::Transient(e)) => return Outcome::Retry(e),
                    Err(StrideFailure::Refused(why)) => return self.refuse(&job, why).await,
                };
                // before any window is planned: a job over dates off one grid is refused
                if let Some(why) = windows::misaligned(&tiles, Some(stride.cell_m())) {
                    return self.refuse(&job, why).await;
                }
                let n = windows::count(&tiles, &stride);
                if n > self.max_windows {
                    let why = format!(
                        "a stride of {m} m makes {n} windows, over the limit of {} \
                         (AERIAL__SCORE__MAX_WINDOWS): choose a longer stride",
                        self.max_windows
                    );
                    return self.refuse(&job, why).await;
                }
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
                holes = plan.holes;
                let w = plan
                    .windows
                    .into_iter()
                    .map(|(t, w)| (t, Some(w)))
                    .collect();
                (Some(stride), w)
            }
        };
        let extent = windows::cell_extent(&tiles, stride.as_ref());
        if work.is_empty() {
            return self
                .refuse(
                    &job,
                    format!(
                        "dataset {:?} has nothing to score: all {} tile(s) or window(s) are \
                         over AERIAL__SCORE__MAX_NODATA ({}) of no-data",
                        job.dataset,
                        nodata.values().sum::<u64>(),
                        self.max_nodata
                    ),
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
            extent: (extent != (0, 0)).then_some(extent),
            holes,
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
