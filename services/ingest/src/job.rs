//! Running one ingest job: validate every input file, store tiles, write the manifest part
//! and the status, publish tile messages. Bad files are reported, never fatal.

use crate::labelled::{self, LabelledFile};
use crate::partial::{self, Start};
use crate::remote::{self, S3Access};
use crate::scene;
use aerial_shared::{
    broker::Outgoing,
    imaging, keys,
    manifest::{self, ManifestRow},
    messages::{EventKind, IngestJob, IngestSource, IngestTarget, Tile, TileGeo},
    status::{BadItem, JobState, JobStatus},
    store::{ObjectInfo, StoreError},
    topology,
    worker::{BatchCtx, BatchHandler, DeliveryInfo, Outcome},
    Publisher, Store, Telemetry,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Where a job stands: what it has handled and stored so far (carried across segments).
struct Progress {
    done: BTreeSet<String>,
    rows: Vec<ManifestRow>,
    tiles: Vec<Tile>,
    resumed: bool,
}

/// The delivery being worked on: it must be handed on by `deadline`.
struct Segment<'a> {
    publisher: &'a Publisher,
    info: &'a DeliveryInfo,
    deadline: tokio::time::Instant,
}

/// Files fetched, checked and stored at once.
const PARALLEL_FILES: usize = 16;
/// Tile messages published per confirm round.
const PUBLISH_CHUNK: usize = 500;

/// The ingest handler.
pub struct Ingester {
    store: Store,
    telemetry: Telemetry,
    limits: scene::Limits,
    scenes_in_place: InPlace,
}

/// Reading scenes where they lie in S3: how GDAL reaches the store, and which buckets.
pub struct InPlace {
    /// GDAL's options for the service's endpoint.
    pub access: S3Access,
    /// The ingest settings (`scene_buckets`).
    pub settings: aerial_shared::config::IngestSettings,
}

/// One scene of a job: uploaded under its raw prefix, or named in place.
enum SceneInput {
    Uploaded { key: String, name: String },
    InPlace(aerial_shared::keys::ObjectRef),
}

impl SceneInput {
    /// How the job's status and the manifest's `source` name it.
    fn name(&self) -> String {
        match self {
            SceneInput::Uploaded { name, .. } => name.clone(),
            SceneInput::InPlace(o) => o.to_string(),
        }
    }

    /// The file name its date is read from.
    fn file_name(&self) -> &str {
        match self {
            SceneInput::Uploaded { name, .. } => name,
            SceneInput::InPlace(o) => o.file_name(),
        }
    }
}

/// What happened to one input file.
enum FileResult {
    Stored {
        tile: Box<Tile>,
        row: Box<ManifestRow>,
        new: bool,
    },
    Bad(BadItem),
}

impl Ingester {
    /// A handler writing to `store`.
    pub fn new(
        store: Store,
        telemetry: Telemetry,
        limits: scene::Limits,
        scenes_in_place: InPlace,
    ) -> Self {
        Self {
            store,
            telemetry,
            limits,
            scenes_in_place,
        }
    }

    async fn save_status(&self, st: &mut JobStatus) -> Result<(), StoreError> {
        st.updated_at = chrono::Utc::now();
        self.store.put_json(&keys::job_status(&st.job_id), st).await
    }

    async fn fail(&self, st: &mut JobStatus, why: String) -> Outcome {
        st.state = JobState::Failed;
        st.error = Some(why.clone());
        let _ = self.save_status(st).await;
        Outcome::Dead(why)
    }

    /// The uploaded objects under a job's raw prefix; a bad or empty prefix fails the job,
    /// a store error retries it.
    async fn uploaded(
        &self,
        raw_prefix: &str,
        st: &mut JobStatus,
    ) -> Result<Vec<ObjectInfo>, Outcome> {
        if let Err(e) = keys::validate(raw_prefix) {
            return Err(self.fail(st, e.to_string()).await);
        }
        match self.store.list(raw_prefix).await {
            Ok(o) if o.is_empty() => Err(self
                .fail(st, format!("no uploaded files under {raw_prefix}"))
                .await),
            Ok(o) => Ok(o),
            Err(e) => Err(Outcome::Retry(e.to_string())),
        }
    }

    /// Logs, counts (job summary and `errors_total{kind="bad_input"}`) and lists one refused input.
    fn record_bad(&self, job: &IngestJob, st: &mut JobStatus, b: BadItem) {
        tracing::warn!(job = %job.job_id, item = %b.item, reason = %b.reason, "bad input");
        self.telemetry
            .worker
            .errors
            .with_label_values(&["bad_input"])
            .inc();
        st.failed += 1;
        st.bad.push(b);
    }

    /// Runs one job to completion; the outcome decides the job message's fate.
    async fn run(&self, seg: &Segment<'_>, job: IngestJob) -> Outcome {
        let mut st = JobStatus::new(&job.job_id, "ingest", &job.dataset);
        if let Err(e) = keys::validate_name(&job.dataset).and(keys::validate_name(&job.job_id)) {
            return Outcome::Dead(e.to_string());
        }
        let mut progress = Progress {
            done: BTreeSet::new(),
            rows: Vec::new(),
            tiles: Vec::new(),
            resumed: false,
        };
        match partial::start(&self.store, &job.job_id, seg.info).await {
            Ok(Start::Fresh) => {}
            Ok(Start::Stale) => {
                tracing::info!(job = %job.job_id, segment = seg.info.segment, "stale segment of a job that went on; dropped");
                return Outcome::Ack;
            }
            Ok(Start::Resume(p, rows)) => {
                tracing::info!(job = %job.job_id, segment = seg.info.segment, handled = p.done.len(), "ingest job resumes");
                st = p.status;
                progress.tiles = rows
                    .iter()
                    .map(|r| r.to_tile(&job.dataset, &job.backbone))
                    .collect();
                progress.rows = rows;
                progress.done = p.done;
                progress.resumed = true;
            }
            Err(e) => return Outcome::store_failure(&format!("ingest job {}", job.job_id), e),
        }
        match job.source.clone() {
            IngestSource::Labelled {
                raw_prefix,
                val_frac,
                seed,
            } => {
                let objects = match self.uploaded(&raw_prefix, &mut st).await {
                    Ok(o) => o,
                    Err(outcome) => return outcome,
                };
                let rels: Vec<String> = objects
                    .iter()
                    .filter_map(|o| o.key.strip_prefix(&raw_prefix).map(String::from))
                    .collect();
                let layout = labelled::parse(&rels, val_frac, seed);
                self.ingest_labelled(seg, &job, &raw_prefix, layout, progress, &mut st)
                    .await
            }
            IngestSource::Scene {
                raw_prefix,
                tile_meters,
                date,
            } => {
                if tile_meters.is_nan() || tile_meters <= 0.0 {
                    return self
                        .fail(
                            &mut st,
                            format!("tile_meters {tile_meters} must be positive"),
                        )
                        .await;
                }
                let objects = match self.uploaded(&raw_prefix, &mut st).await {
                    Ok(o) => o,
                    Err(outcome) => return outcome,
                };
                let inputs = objects
                    .into_iter()
                    .map(|o| SceneInput::Uploaded {
                        name: o
                            .key
                            .strip_prefix(&raw_prefix)
                            .unwrap_or(&o.key)
                            .to_string(),
                        key: o.key,
                    })
                    .collect();
                self.ingest_scenes(seg, &job, inputs, (tile_meters, date), progress, &mut st)
                    .await
            }
            IngestSource::SceneRefs {
                scenes,
                tile_meters,
                date,
            } => {
                if tile_meters.is_nan() || tile_meters <= 0.0 {
                    let why = format!("tile_meters {tile_meters} must be positive");
                    return self.fail(&mut st, why).await;
                }
                if scenes.is_empty() {
                    return self.fail(&mut st, "no scene named".into()).await;
                }
                let mut inputs: Vec<SceneInput> = Vec::with_capacity(scenes.len());
                for s in &scenes {
                    match aerial_shared::keys::ObjectRef::parse(s) {
                        // a scene named twice is read once
                        Ok(o) if inputs.iter().any(|i| i.name() == o.to_string()) => {}
                        Ok(o) => inputs.push(SceneInput::InPlace(o)),
                        Err(e) => return self.fail(&mut st, e.to_string()).await,
                    }
                }
                self.ingest_scenes(seg, &job, inputs, (tile_meters, date), progress, &mut st)
                    .await
            }
        }
    }

    /// Cuts one scene into a pack file at `pack_path`: an uploaded one is streamed to a file
    /// beside it first, one in place is read where it lies. `Err` is the job's outcome (a
    /// store failure), `Ok(Err)` the scene's own fault.
    async fn cut_scene(
        &self,
        input: &SceneInput,
        tile_meters: f64,
        dir: &std::path::Path,
    ) -> Result<Result<(scene::SceneInfo, scene::Pack), String>, Outcome> {
        let limits = self.limits;
        let pack_path = dir.join("pack");
        let cut = match input {
            SceneInput::Uploaded { key, name } => {
                // GDAL reads files: the scene is streamed into a private directory (never
                // held in memory), alone, so that no side-car file of someone else's is read
                let scene_path = dir.join("scene.tif");
                if let Err(e) = self.store.get_to_file(key, &scene_path).await {
                    return Err(Outcome::store_failure(&format!("scene {name}"), e));
                }
                tokio::task::spawn_blocking(move || {
                    scene::cut_to_pack(&scene_path, tile_meters, limits, &pack_path)
                })
                .await
            }
            SceneInput::InPlace(object) => {
                let own = self.store.bucket();
                if !self
                    .scenes_in_place
                    .settings
                    .reads_bucket(&object.bucket, own)
                {
                    return Ok(Err(format!(
                        "bucket {} is not one ingest reads scenes from (its own, {own}, and \
                         AERIAL__INGEST__SCENE_BUCKETS)",
                        object.bucket
                    )));
                }
                if object.bucket == own && object.is_aerials_own() {
                    return Ok(Err(format!(
                        "{} is aerial's own data (uploads, tiles, features, runs, job \
                         outputs), not a scene to read in place",
                        object.key
                    )));
                }
                if !remote::is_tiff_name(&object.key) {
                    return Ok(Err(
                        "only .tif or .tiff objects are read in place (GeoTIFF)".into(),
                    ));
                }
                let head = match self
                    .store
                    .with_bucket(&object.bucket)
                    .get_range(&object.key, 0, 64)
                    .await
                {
                    Ok(b) => b,
                    Err(StoreError::NotFound { .. }) => return Ok(Err("no such object".into())),
                    Err(StoreError::RangeOutside { .. }) => return Ok(Err("an empty file".into())),
                    Err(e) if refused_by_store(&e) => return Ok(Err(e.to_string())),
                    Err(e) => return Err(Outcome::store_failure(&object.to_string(), e)),
                };
                let (object, access) = (object.clone(), self.scenes_in_place.access.clone());
                tokio::task::spawn_blocking(move || {
                    scene::cut_remote_to_pack(
                        &object,
                        &head,
                        &access,
                        tile_meters,
                        limits,
                        &pack_path,
                    )
                })
                .await
            }
        };
        match cut.unwrap_or_else(|e| {
            Err(scene::SceneError::Unreadable(format!(
                "tiling panicked: {e}"
            )))
        }) {
            Ok(x) => Ok(Ok(x)),
            // the local disk, or the store on the way: the scene may be fine, retry the job
            Err(e @ (scene::SceneError::Io(_) | scene::SceneError::Remote(_))) => {
                Err(Outcome::Retry(format!("scene {}: {e}", input.name())))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    async fn ingest_labelled(
        &self,
        seg: &Segment<'_>,
        job: &IngestJob,
        raw_prefix: &str,
        layout: labelled::Layout,
        mut progress: Progress,
        st: &mut JobStatus,
    ) -> Outcome {
        let publisher = seg.publisher;
        if !progress.resumed {
            st.total = layout.files.len() as u64;
            for (item, reason) in &layout.misplaced {
                let b = BadItem {
                    item: item.clone(),
                    reason: reason.clone(),
                };
                // loose files beside the label folders (README, checksums) are skipped, not failures
                if item.contains('/') {
                    st.failed += 1;
                    st.bad.push(b);
                } else {
                    st.skipped.push(b);
                }
            }
            if let Err(e) = self.save_status(st).await {
                return Outcome::Retry(e.to_string());
            }
        }
        let mut last_save = Instant::now();
        let todo: Vec<LabelledFile> = layout
            .files
            .iter()
            .filter(|f| !progress.done.contains(&f.rel))
            .cloned()
            .collect();
        let remaining = todo.len();
        let mut handled = 0;
        let mut results = futures::stream::iter(todo)
            .map(|f| {
                let rel = f.rel.clone();
                async move { (rel, self.one_file(job, raw_prefix, f).await) }
            })
            .buffer_unordered(PARALLEL_FILES);
        while let Some((rel, r)) = results.next().await {
            match r {
                Ok(FileResult::Stored { tile, row, new }) => {
                    if new {
                        st.new_tiles += 1;
                    } else {
                        st.existing_tiles += 1;
                    }
                    *st.labels.entry(row.label.clone()).or_default() += 1;
                    *st.groups.entry(row.split.clone()).or_default() += 1;
                    progress.rows.push(*row);
                    progress.tiles.push(*tile);
                }
                Ok(FileResult::Bad(b)) => self.record_bad(job, st, b),
                // a store failure is not the file's fault: retry the whole job later
                Err(e) => return Outcome::Retry(e.to_string()),
            }
            st.done += 1;
            handled += 1;
            progress.done.insert(rel);
            if last_save.elapsed() > Duration::from_secs(2) {
                last_save = Instant::now();
                let _ = self.save_status(st).await;
                publish_progress(publisher, st).await;
            }
            if handled < remaining && tokio::time::Instant::now() >= seg.deadline {
                // files in flight are dropped unfinished: the next segment does them again
                drop(results);
                return self.hand_on(seg, job, &progress, st).await;
            }
        }
        drop(results);
        for folder in &layout.folders {
            let has_any = progress
                .rows
                .iter()
                .any(|r| r.source.starts_with(&format!("{folder}/")));
            if !has_any {
                st.failed += 1;
                st.bad.push(BadItem {
                    item: format!("{folder}/"),
                    reason: "label folder has no images".into(),
                });
            }
        }
        self.finish(publisher, seg.info, job, progress.rows, progress.tiles, st)
            .await
    }

    /// Saves the progress for the next segment and continues the job there.
    async fn hand_on(
        &self,
        seg: &Segment<'_>,
        job: &IngestJob,
        progress: &Progress,
        st: &mut JobStatus,
    ) -> Outcome {
        let saved = async {
            self.save_status(st).await?;
            partial::save(&self.store, seg.info, &progress.done, &progress.rows, st).await
        }
        .await;
        match saved {
            Ok(()) => {
                publish_progress(seg.publisher, st).await;
                Outcome::Continue(format!(
                    "ingest job {}: {} of {} inputs handled",
                    job.job_id, st.done, st.total
                ))
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Publishes tiles not yet published by this job, writes the manifest part, marks the
    /// job done. Shared by labelled and scene input.
    async fn finish(
        &self,
        publisher: &Publisher,
        info: &DeliveryInfo,
        job: &IngestJob,
        mut rows: Vec<ManifestRow>,
        mut tiles: Vec<Tile>,
        st: &mut JobStatus,
    ) -> Outcome {
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        tiles.sort_by(|a, b| a.tile_id.cmp(&b.tile_id));
        // The manifest part is keyed by the upload and written after publishing: tiles it
        // already lists were published by an earlier run of this job and are not sent again.
        let part_key = keys::manifest_part(&job.dataset, &job.job_id);
        let already: std::collections::HashSet<String> = match self.store.get(&part_key).await {
            Ok(b) => manifest::from_csv(&b)
                .map(|r| r.into_iter().map(|r| r.id).collect())
                .unwrap_or_default(),
            Err(StoreError::NotFound { .. }) => Default::default(),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        if job.target == IngestTarget::Featurize {
            let fresh: Vec<&Tile> = tiles
                .iter()
                .filter(|t| !already.contains(&t.tile_id))
                .collect();
            for chunk in fresh.chunks(PUBLISH_CHUNK) {
                let outs = chunk
                    .iter()
                    .map(|t| Outgoing::work(topology::FEATURIZE_TILES, *t))
                    .collect();
                if let Err(e) = publisher.publish_all(outs).await {
                    return Outcome::Retry(e.to_string());
                }
                st.published += chunk.len() as u64;
            }
        }
        if let Err(e) = self.store.put(&part_key, manifest::to_csv(&rows)).await {
            return Outcome::Retry(e.to_string());
        }
        st.state = JobState::Done;
        if let Err(e) = self.save_status(st).await {
            return Outcome::Retry(e.to_string());
        }
        // a late copy of any segment of this job now finds it finished and is dropped (best
        // effort: without the mark it would redo the job, idempotently)
        let _ = partial::finished(&self.store, info, st).await;
        self.telemetry
            .tiles
            .with_label_values(&[job.dataset.as_str()])
            .inc_by(rows.len() as u64);
        publish_progress(publisher, st).await;
        tracing::info!(job = %job.job_id, dataset = %job.dataset, tiles = rows.len(), new = st.new_tiles, existing = st.existing_tiles, bad = st.failed, "ingest job done");
        Outcome::Ack
    }

    async fn ingest_scenes(
        &self,
        seg: &Segment<'_>,
        job: &IngestJob,
        inputs: Vec<SceneInput>,
        (tile_meters, date): (f64, Option<String>),
        mut progress: Progress,
        st: &mut JobStatus,
    ) -> Outcome {
        let publisher = seg.publisher;
        st.total = inputs.len() as u64;
        let mut handled_here = 0;
        // which scene each date's tiles come from: this job's and the dataset's earlier ones
        let mut date_owner: std::collections::BTreeMap<String, String> = Default::default();
        match manifest::load(&self.store, &job.dataset).await {
            Ok(rows) => {
                for r in rows.into_iter().filter(|r| !r.date.is_empty()) {
                    date_owner.entry(r.date).or_insert(r.source);
                }
            }
            Err(e) => return Outcome::store_failure(&format!("dataset {}", job.dataset), e),
        }
        for r in &progress.rows {
            date_owner.insert(r.date.clone(), r.source.clone());
        }
        for input in inputs {
            let name = input.name();
            if progress.done.contains(&name) {
                continue;
            }
            // at least one scene per segment, so that every segment makes progress
            if handled_here > 0 && tokio::time::Instant::now() >= seg.deadline {
                return self.hand_on(seg, job, &progress, st).await;
            }
            handled_here += 1;
            progress.done.insert(name.clone());
            st.done += 1;
            let Some(date) = date
                .clone()
                .or_else(|| scene::date_from_name(input.file_name()))
            else {
                self.record_bad(
                    job,
                    st,
                    BadItem {
                        item: name,
                        reason:
                            "no acquisition date: name the file ..._YYYYMMDD.tif or pass --date"
                                .into(),
                    },
                );
                continue;
            };
            // two scenes of one date would give tiles of the same ids: the second is refused
            if let Some(other) = date_owner.get(&date).filter(|o| **o != name) {
                self.record_bad(
                    job,
                    st,
                    BadItem {
                        item: name,
                        reason: format!(
                            "tiles of {date} already come from scene {other} in dataset {}: \
                             tile ids are <date>/r<row>c<col>, so one dataset holds one scene \
                             per date; ingest this scene into another dataset",
                            job.dataset
                        ),
                    },
                );
                continue;
            }
            let dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => return Outcome::Retry(format!("temp dir: {e}")),
            };
            let pack_path = dir.path().join("pack");
            let (info, pack) = match self.cut_scene(&input, tile_meters, dir.path()).await {
                Ok(Ok(x)) => x,
                Ok(Err(reason)) => {
                    self.record_bad(job, st, BadItem { item: name, reason });
                    continue;
                }
                Err(outcome) => return outcome,
            };
            tracing::info!(scene = %name, %date, crs = %info.crs, tile_px = info.tile_px, rows = info.grid.0, cols = info.grid.1, nodata_from = info.mask, tiles_with_nodata = info.tiles_with_nodata, pack_bytes = pack.len, "scene tiled");
            date_owner.insert(date.clone(), name.clone());
            // one pack per scene: scoring reads a batch of neighbours with one GET
            let pack_key = keys::tile_pack(&pack.sha256);
            let new = match self.store.exists(&pack_key).await {
                Ok(true) => false,
                Ok(false) => match self.store.put_file(&pack_key, &pack_path).await {
                    Ok(()) => true,
                    Err(e) => return Outcome::Retry(e.to_string()),
                },
                Err(e) => return Outcome::Retry(e.to_string()),
            };
            for t in pack.tiles {
                let tile = Tile {
                    dataset: job.dataset.clone(),
                    tile_id: format!("{date}/r{:03}c{:03}", t.row, t.col),
                    key: pack_key.clone(),
                    range: Some(t.range),
                    sha256: t.sha256,
                    label: None,
                    split: None,
                    date: Some(date.clone()),
                    geo: Some(TileGeo {
                        row: t.row,
                        col: t.col,
                        crs: info.crs.clone(),
                        bounds: t.bounds,
                        lonlat_bounds: t.lonlat,
                        nodata: Some(t.nodata),
                    }),
                    backbone: job.backbone.clone(),
                };
                if new {
                    st.new_tiles += 1;
                } else {
                    st.existing_tiles += 1;
                }
                *st.groups.entry(date.clone()).or_default() += 1;
                progress.rows.push(ManifestRow::from_tile(&tile, &name));
                progress.tiles.push(tile);
            }
            let _ = self.save_status(st).await;
            publish_progress(publisher, st).await;
        }
        self.finish(publisher, seg.info, job, progress.rows, progress.tiles, st)
            .await
    }

    async fn one_file(
        &self,
        job: &IngestJob,
        raw_prefix: &str,
        f: LabelledFile,
    ) -> Result<FileResult, StoreError> {
        let key = format!("{raw_prefix}{}", f.rel);
        let bytes = self.store.get(&key).await?;
        let checked = {
            let bytes = bytes.clone();
            tokio::task::spawn_blocking(move || imaging::decode_rgb(&bytes).map(|_| ()))
                .await
                .expect("decode task does not panic")
        };
        if let Err(e) = checked {
            return Ok(FileResult::Bad(BadItem {
                item: f.rel.clone(),
                reason: e.to_string(),
            }));
        }
        let sha = hex::encode(Sha256::digest(&bytes));
        let ext = f
            .rel
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_else(|| "img".into());
        let ext = if ext.chars().all(|c| c.is_ascii_alphanumeric()) && ext.len() <= 5 {
            ext
        } else {
            "img".into()
        };
        let tile_key = keys::tile(&sha, &ext);
        let new = !self.store.exists(&tile_key).await?;
        if new {
            self.store.put(&tile_key, bytes).await?;
        }
        let tile = Tile {
            dataset: job.dataset.clone(),
            tile_id: labelled::tile_id(&f),
            key: tile_key,
            range: None,
            sha256: sha,
            label: Some(f.label.clone()),
            split: Some(f.split),
            date: None,
            geo: None,
            backbone: job.backbone.clone(),
        };
        let row = ManifestRow::from_tile(&tile, &f.rel);
        Ok(FileResult::Stored {
            tile: Box::new(tile),
            row: Box::new(row),
            new,
        })
    }
}

/// Whether the store refused a request for good (no such bucket, no access, another
/// region, bad credentials): the named scene is reported as bad, retrying cannot help. Read
/// from the S3 error code that leads the message, never from the key in it.
fn refused_by_store(e: &StoreError) -> bool {
    const FOR_GOOD: [&str; 8] = [
        "AccessDenied",
        "AllAccessDisabled",
        "NoSuchBucket",
        "InvalidBucketName",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    ];
    match e {
        StoreError::Request { message, .. } => message
            .split_once(": ")
            .is_some_and(|(code, _)| FOR_GOOD.contains(&code)),
        _ => false,
    }
}

/// Tells the events exchange how far a job is (best effort: the status object is the record).
async fn publish_progress(publisher: &Publisher, st: &JobStatus) {
    let kind = EventKind::JobProgress {
        job_id: st.job_id.clone(),
        done: st.done,
        total: Some(st.total),
        failed: st.failed,
    };
    let _ = publisher.event("ingest", kind).await;
}

#[async_trait::async_trait]
impl BatchHandler for Ingester {
    type Msg = IngestJob;

    async fn handle(&self, ctx: &BatchCtx, batch: Vec<IngestJob>) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        for (job, info) in batch.into_iter().zip(&ctx.deliveries) {
            let seg = Segment {
                publisher: &ctx.publisher,
                info,
                deadline: ctx.deadline,
            };
            let id = job.job_id.clone();
            let mut outcome = self.run(&seg, job).await;
            if let (Outcome::Retry(why), true) = (&outcome, info.last_try) {
                // the job's status says why it stopped, where `aerial status` looks
                let why = format!("gave up after {} deliveries: {why}", info.delivery);
                if keys::validate_name(&id).is_ok() {
                    let mut st = match self
                        .store
                        .get_json::<JobStatus>(&keys::job_status(&id))
                        .await
                    {
                        Ok(st) => st,
                        Err(_) => JobStatus::new(&id, "ingest", ""),
                    };
                    outcome = self.fail(&mut st, why).await;
                } else {
                    outcome = Outcome::Dead(why);
                }
            }
            out.push(outcome);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_refuses_for_good_by_its_error_code_not_the_key() {
        let request = |key: &str, message: &str| StoreError::Request {
            op: "get",
            key: key.into(),
            message: message.into(),
        };
        assert!(refused_by_store(&request(
            "nd/a.tif",
            "NoSuchBucket: The specified bucket does not exist"
        )));
        assert!(refused_by_store(&request(
            "nd/a.tif",
            "PermanentRedirect: use the bucket's region"
        )));
        // a transient error about a key whose name holds a code is still transient
        assert!(!refused_by_store(&request(
            "nd/AccessDenied_20200101.tif",
            "dispatch failure: connection refused for nd/AccessDenied_20200101.tif"
        )));
        assert!(!refused_by_store(&request(
            "nd/a.tif",
            "SlowDown: please reduce your request rate"
        )));
    }
}
