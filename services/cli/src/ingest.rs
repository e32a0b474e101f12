//! `aerial ingest`: upload a folder (skipping what is already there) and publish an ingest job.

use aerial_shared::{
    keys,
    messages::{IngestJob, IngestSource, IngestTarget},
    status::{JobState, JobStatus},
    topology, Broker, Settings, Store,
};
use clap::Subcommand;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to ingest.
#[derive(Subcommand)]
pub enum IngestCmd {
    /// A folder of `train/<label>/*` + `val/<label>/*`, or `<label>/*` to split here.
    Labelled {
        /// The folder.
        dir: PathBuf,
        /// Dataset name.
        #[arg(long)]
        dataset: String,
        /// Validation share for a folder without train/val.
        #[arg(long, default_value_t = 0.2)]
        val_frac: f64,
        /// Seed of that split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Backbone the featurize stage uses.
        #[arg(long, default_value = "mobilenet_v2")]
        backbone: String,
        /// Store tiles without sending them to featurize.
        #[arg(long)]
        store_only: bool,
        /// Return after publishing instead of following progress.
        #[arg(long)]
        no_wait: bool,
    },
    /// Geo-referenced scenes (GeoTIFF), cut into tiles of a fixed ground size; several dates
    /// of one place make one dataset.
    Scene {
        /// The scene files, or `s3://bucket/key.tif` references to scenes already on the
        /// service's S3 endpoint (read in place by range, not copied; the bucket must be the
        /// service's own or in its AERIAL__INGEST__SCENE_BUCKETS).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Dataset name.
        #[arg(long)]
        dataset: String,
        /// Tile edge on the ground, metres.
        #[arg(long, default_value_t = 224.0)]
        tile_meters: f64,
        /// Acquisition date (YYYY-MM-DD) for every file; default: parsed from each file name.
        #[arg(long)]
        date: Option<String>,
        /// Backbone the featurize stage uses.
        #[arg(long, default_value = "mobilenet_v2")]
        backbone: String,
        /// Also send the tiles to featurize (default: store them for scoring).
        #[arg(long)]
        featurize: bool,
        /// Return after publishing instead of following progress.
        #[arg(long)]
        no_wait: bool,
    },
}

struct LocalFile {
    rel: String,
    path: PathBuf,
    size: u64,
    sha: String,
}

fn walk(
    root: &Path,
    dir: &Path,
    files: &mut Vec<LocalFile>,
    empty_dirs: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut any = false;
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let rel = path
            .strip_prefix(root)?
            .to_string_lossy()
            .replace('\\', "/");
        if e.file_type()?.is_dir() {
            walk(root, &path, files, empty_dirs)?;
        } else {
            let bytes = std::fs::read(&path)?;
            files.push(LocalFile {
                rel,
                path,
                size: bytes.len() as u64,
                sha: hex::encode(Sha256::digest(&bytes)),
            });
        }
        any = true;
    }
    if !any && dir != root {
        empty_dirs.push(dir.strip_prefix(root)?.to_string_lossy().to_string());
    }
    Ok(())
}

fn local_file(path: &Path, rel: String) -> anyhow::Result<LocalFile> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(LocalFile {
        rel,
        path: path.to_path_buf(),
        size: bytes.len() as u64,
        sha: hex::encode(Sha256::digest(&bytes)),
    })
}

/// What to upload and how to describe the job.
struct Upload {
    dataset: String,
    files: Vec<LocalFile>,
    empty_dirs: Vec<String>,
    /// Options that change the result; part of the upload id.
    options: String,
    target: IngestTarget,
    backbone: String,
    no_wait: bool,
    label: String,
}

/// Runs an ingest subcommand.
pub async fn run(settings: &Settings, cmd: IngestCmd) -> anyhow::Result<()> {
    match cmd {
        IngestCmd::Labelled {
            dir,
            dataset,
            val_frac,
            seed,
            backbone,
            store_only,
            no_wait,
        } => {
            anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
            anyhow::ensure!(
                (0.0..1.0).contains(&val_frac),
                "--val-frac must be in [0, 1)"
            );
            let mut files = Vec::new();
            let mut empty_dirs = Vec::new();
            walk(&dir, &dir, &mut files, &mut empty_dirs)?;
            let up = Upload {
                dataset,
                files,
                empty_dirs,
                options: format!("labelled/{val_frac}/{seed}/{backbone}/{store_only}"),
                target: if store_only {
                    IngestTarget::Store
                } else {
                    IngestTarget::Featurize
                },
                backbone,
                no_wait,
                label: dir.display().to_string(),
            };
            upload_and_publish(settings, up, |raw_prefix| IngestSource::Labelled {
                raw_prefix,
                val_frac,
                seed,
            })
            .await
        }
        IngestCmd::Scene {
            files,
            dataset,
            tile_meters,
            date,
            backbone,
            featurize,
            no_wait,
        } => {
            anyhow::ensure!(tile_meters > 0.0, "--tile-meters must be positive");
            if let Some(d) = &date {
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|e| anyhow::anyhow!("--date {d}: {e}"))?;
            }
            let refs: Vec<&str> = files
                .iter()
                .filter_map(|f| f.to_str().filter(|s| s.starts_with("s3://")))
                .collect();
            if !refs.is_empty() {
                anyhow::ensure!(
                    refs.len() == files.len(),
                    "give either local scene files or s3:// references, not both in one ingest"
                );
                let target = if featurize {
                    IngestTarget::Featurize
                } else {
                    IngestTarget::Store
                };
                let scenes = in_place(&refs)?;
                let options = format!("scene-refs/{tile_meters}/{date:?}/{backbone}/{featurize}");
                let source = IngestSource::SceneRefs {
                    scenes,
                    tile_meters,
                    date,
                };
                return publish_in_place(
                    settings, dataset, source, options, target, backbone, no_wait,
                )
                .await;
            }
            let mut local = Vec::new();
            for f in &files {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .ok_or_else(|| anyhow::anyhow!("{} is not a file", f.display()))?;
                anyhow::ensure!(
                    !local.iter().any(|l: &LocalFile| l.rel == name),
                    "two scenes named {name}"
                );
                local.push(local_file(f, name)?);
            }
            let up = Upload {
                dataset,
                files: local,
                empty_dirs: Vec::new(),
                options: format!("scene/{tile_meters}/{date:?}/{backbone}/{featurize}"),
                target: if featurize {
                    IngestTarget::Featurize
                } else {
                    IngestTarget::Store
                },
                backbone,
                no_wait,
                label: format!("{} scene(s)", files.len()),
            };
            upload_and_publish(settings, up, |raw_prefix| IngestSource::Scene {
                raw_prefix,
                tile_meters,
                date,
            })
            .await
        }
    }
}

/// Checks `s3://bucket/key` references (each once) and returns them as given.
fn in_place(refs: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let o = keys::ObjectRef::parse(r)?;
        anyhow::ensure!(seen.insert(o.to_string()), "{o} named twice");
        out.push(o.to_string());
    }
    Ok(out)
}

/// Publishes an ingest job of scenes read in place (nothing uploaded) and follows it.
#[allow(clippy::too_many_arguments)]
async fn publish_in_place(
    settings: &Settings,
    dataset: String,
    source: IngestSource,
    options: String,
    target: IngestTarget,
    backbone: String,
    no_wait: bool,
) -> anyhow::Result<()> {
    keys::validate_name(&dataset)?;
    let IngestSource::SceneRefs { scenes, .. } = &source else {
        anyhow::bail!("not scenes in place");
    };
    // the job id derives from the references and options: naming the same scenes again is
    // the same job (an object replaced under the same key: use another --dataset)
    let mut h = Sha256::new();
    for s in scenes {
        h.update(s.as_bytes());
        h.update(b"\n");
    }
    h.update(options.as_bytes());
    let job_id = format!("ingest-{dataset}-{}", &hex::encode(h.finalize())[..12]);
    println!(
        "{} scene(s) read in place: {}",
        scenes.len(),
        scenes.join(", ")
    );
    let job = IngestJob {
        job_id,
        dataset,
        source,
        target,
        backbone,
    };
    publish_and_follow(settings, job, no_wait).await
}

async fn upload_and_publish(
    settings: &Settings,
    up: Upload,
    source: impl FnOnce(String) -> IngestSource,
) -> anyhow::Result<()> {
    let Upload {
        dataset,
        files,
        empty_dirs: empty,
        options,
        target,
        backbone,
        no_wait,
        label,
    } = up;
    keys::validate_name(&dataset)?;
    // the upload id derives from content, so the same input maps to the same prefix and job
    let mut h = Sha256::new();
    for f in &files {
        h.update(f.rel.as_bytes());
        h.update(f.sha.as_bytes());
    }
    for d in &empty {
        h.update(d.as_bytes());
    }
    h.update(options.as_bytes());
    let upload = hex::encode(h.finalize())[..12].to_string();
    let job_id = format!("ingest-{dataset}-{upload}");
    let prefix = keys::raw_prefix(&dataset, &upload);

    let store = Store::connect(&settings.s3).await;
    store.ensure_bucket().await?;
    let present: HashSet<(String, u64)> = store
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let todo: Vec<&LocalFile> = files
        .iter()
        .filter(|f| !present.contains(&(format!("{prefix}{}", f.rel), f.size)))
        .collect();
    let n_todo = todo.len();
    let mut uploads = futures::stream::iter(todo.into_iter().map(|f| {
        let store = store.clone();
        let key = format!("{prefix}{}", f.rel);
        let path = f.path.clone();
        async move {
            let bytes = tokio::fs::read(&path).await?;
            store.put(&key, bytes).await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(16);
    while let Some(r) = uploads.next().await {
        r?;
    }
    drop(uploads);
    for d in &empty {
        store
            .put(&format!("{prefix}{d}/.aerial-dir"), Vec::<u8>::new())
            .await?;
    }
    println!(
        "{label}: {} files, uploaded {} new, {} already in s3://{}/{}",
        files.len(),
        n_todo,
        files.len() - n_todo,
        store.bucket(),
        prefix
    );
    let job = IngestJob {
        job_id,
        dataset,
        source: source(prefix),
        target,
        backbone,
    };
    publish_and_follow(settings, job, no_wait).await
}

/// Publishes `job`, then (unless `no_wait`) follows it to its end.
async fn publish_and_follow(
    settings: &Settings,
    job: IngestJob,
    no_wait: bool,
) -> anyhow::Result<()> {
    let job_id = job.job_id.clone();
    let store = Store::connect(&settings.s3).await;
    store.ensure_bucket().await?;
    // a stale status from an earlier run of the same job must not read as this one's result
    store.delete(&keys::job_status(&job_id)).await?;
    let shutdown = aerial_shared::shutdown::Token::new();
    let broker = Broker::connect_with_retry(&settings.amqp, "aerial-cli", &shutdown).await?;
    broker.publisher().send(topology::INGEST_JOBS, &job).await?;
    broker.close().await;
    println!("published ingest job {job_id}");
    if no_wait {
        return Ok(());
    }
    let st = wait(&store, &job_id).await?;
    print_summary(&st);
    anyhow::ensure!(
        st.state == JobState::Done,
        "ingest job {job_id} failed: {}",
        st.error.unwrap_or_default()
    );
    Ok(())
}

/// Polls a job's status until it is done or failed, printing progress.
pub async fn wait(store: &Store, job_id: &str) -> anyhow::Result<JobStatus> {
    let mut last = String::new();
    let started = std::time::Instant::now();
    let mut hinted = false;
    loop {
        match store.get_json::<JobStatus>(&keys::job_status(job_id)).await {
            Ok(st) => {
                let line = crate::status::line(&st);
                if line != last {
                    eprintln!("{line}");
                    last = line;
                }
                if st.state != JobState::Running {
                    return Ok(st);
                }
            }
            Err(aerial_shared::store::StoreError::NotFound { .. }) => {
                if !hinted && started.elapsed() > Duration::from_secs(15) {
                    eprintln!("no ingest service has picked the job up yet (is one running? `make up` starts it); still waiting");
                    hinted = true;
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_summary(st: &JobStatus) {
    println!(
        "ingest {}: {} tiles ({} new, {} already stored), {} published, {} bad",
        st.job_id,
        st.new_tiles + st.existing_tiles,
        st.new_tiles,
        st.existing_tiles,
        st.published,
        st.failed
    );
    if st.new_tiles == 0 && st.existing_tiles > 0 {
        println!(
            "nothing new: every tile was already stored{}",
            if st.published == 0 {
                " and published"
            } else {
                ""
            }
        );
    }
    for s in &st.skipped {
        println!("  skipped: {}: {}", s.item, s.reason);
    }
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // labelled datasets count tiles per label and split; scenes count tiles per date
    if st.labels.is_empty() {
        println!("  dates: {}", counts(&st.groups));
    } else {
        println!("  labels: {}", counts(&st.labels));
        println!("  splits: {}", counts(&st.groups));
    }
    for b in &st.bad {
        println!("  bad: {}: {}", b.item, b.reason);
    }
}
