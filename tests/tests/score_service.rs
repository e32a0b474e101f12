//! Scoring a two-date region with two replicas, one of them killed with SIGKILL mid-job, and
//! one tile corrupted in storage: the job completes, every other tile is in the table exactly
//! once, the corrupt tile is in the DLQ and the report, and the outputs are usable GIS files.

use aerial_shared::{
    keys, manifest,
    predictions::{self, ScoreSummary},
    runs,
    status::{JobState, JobStatus},
    topology,
};
use aerial_tests::{
    eventually, header_str, header_u64, redelivered_in, rsscn7_sample, servers, shared_data,
    Isolated, Proc,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Ingest, featurize and train services.
fn pipeline(iso: &Isolated, models: &str) -> [Proc; 3] {
    [
        iso.spawn("aerial-ingest", &[]),
        iso.spawn(
            "aerial-featurize",
            &[
                ("AERIAL__MODELS__DIR", models),
                ("AERIAL__WORKER__BATCH_SIZE", "16"),
            ],
        ),
        iso.spawn("aerial-train", &[]),
    ]
}

/// A score job `id` as the fan-out leaves it running (j-good's spec under `id`, 24 tiles
/// expected), with no tile of its own published.
async fn running_job(iso: &Isolated, id: &str) {
    let mut spec: serde_json::Value = iso
        .store
        .get_json(&keys::score_spec("j-good"))
        .await
        .unwrap();
    spec["job"]["job_id"] = id.into();
    iso.store
        .put_json(&keys::score_spec(id), &spec)
        .await
        .unwrap();
    let mut status = JobStatus::new(id, "score", "tiny");
    status.total = 24;
    iso.store
        .put_json(&keys::job_status(id), &status)
        .await
        .unwrap();
}

/// Publishes a progress report of `job` naming `key`, as a replica would after writing it.
async fn report(iso: &Isolated, job: &str, key: &str) {
    let report = aerial_shared::messages::ScoreProgress {
        job_id: job.into(),
        key: key.into(),
        replica: "elsewhere".into(),
    };
    iso.publish_raw(
        topology::SCORE_PROGRESS,
        &aerial_shared::messages::encode(&report),
    )
    .await;
}

/// A small model, run `m`: logistic on 3 classes, 6 training tiles each (dataset `tiny`, 24
/// tiles with the validation ones).
async fn tiny_model(iso: &Isolated) {
    let dir = tempfile::tempdir().unwrap();
    rsscn7_sample(
        dir.path(),
        &["field", "forest", "resident"],
        &[("train", 6), ("val", 2)],
    );
    let (ok, out) = iso.cli(&[
        "ingest",
        "labelled",
        dir.path().to_str().unwrap(),
        "--dataset",
        "tiny",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "m",
        "--dataset",
        "tiny",
        "--method",
        "logistic",
    ]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_killed_every_tile_exactly_once() {
    let iso = servers().isolated("score").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let models = models.to_str().unwrap();
    let score_env = [
        ("AERIAL__MODELS__DIR", models),
        ("AERIAL__WORKER__BATCH_SIZE", "8"),
        ("AERIAL__WORKER__CONCURRENCY", "1"),
        ("AERIAL__WORKER__THREADS", "1"),
    ];
    let procs = pipeline(&iso, models);
    let victim = iso.spawn("aerial-score", &score_env);
    let mut survivor = iso.spawn("aerial-score", &score_env);
    for p in procs.iter().chain([&victim, &survivor]) {
        p.wait_log("consuming", Duration::from_secs(60)).await;
    }
    tiny_model(&iso).await;

    // the region at its first and last date: 2 × 320 tiles
    let region = shared_data().join("region/naip_nd_m_4709963_se");
    let first = region.join("m_4709963_se_14_1_20090818.tif");
    let last = region.join("m_4709963_se_14_1_20200831.tif");
    let (ok, out) = iso.cli(&[
        "ingest",
        "scene",
        first.to_str().unwrap(),
        last.to_str().unwrap(),
        "--dataset",
        "region",
    ]);
    assert!(ok, "{out}");
    let rows = manifest::load(&iso.store, "region").await.unwrap();
    assert_eq!(rows.len(), 640);

    // one tile goes bad in storage: its bytes inside its scene's pack are overwritten
    let bad = rows[37].clone();
    let (offset, length) = (bad.offset.unwrap() as usize, bad.length.unwrap() as usize);
    let mut pack = iso.store.get(&bad.key).await.unwrap().to_vec();
    pack[offset..offset + length].fill(0);
    iso.store.put(&bad.key, pack).await.unwrap();
    let bad_ids: BTreeSet<String> = [bad.id.clone()].into();

    let (ok, out) = iso.cli(&[
        "score",
        "--run",
        "m",
        "--dataset",
        "region",
        "--name",
        "job1",
        "--no-wait",
    ]);
    assert!(ok, "{out}");
    // kill one replica once predictions are being written
    eventually(Duration::from_secs(120), "first predictions", || async {
        let n = iso
            .store
            .list(&keys::predictions_prefix("job1"))
            .await
            .unwrap()
            .len();
        (n >= 2).then_some(())
    })
    .await;
    let written_at_kill = iso
        .store
        .list(&keys::predictions_prefix("job1"))
        .await
        .unwrap()
        .len();
    let st: JobStatus = iso.store.get_json(&keys::job_status("job1")).await.unwrap();
    assert_ne!(st.state, JobState::Done, "the job finished before the kill");
    victim.kill9();

    let st: JobStatus = eventually(Duration::from_secs(600), "job done", || async {
        let st: JobStatus = iso.store.get_json(&keys::job_status("job1")).await.ok()?;
        (st.state == JobState::Done).then_some(st)
    })
    .await;
    assert_eq!(st.total, 640);
    assert_eq!(st.done, 640);
    assert_eq!(st.failed, bad_ids.len() as u64);
    assert!(!st.replicas.is_empty());

    // the table: every good tile exactly once, no refused tile
    let table = iso
        .store
        .get(&keys::job_output("job1", keys::OUTPUT_TABLE))
        .await
        .unwrap();
    let table = predictions::from_csv(&table).unwrap();
    assert_eq!(table.len(), 640 - bad_ids.len());
    let ids: BTreeSet<String> = table.iter().map(|r| r.tile_id.clone()).collect();
    assert_eq!(ids.len(), table.len(), "a tile appears twice");
    let want: BTreeSet<String> = rows
        .iter()
        .map(|r| r.id.clone())
        .filter(|id| !bad_ids.contains(id))
        .collect();
    assert_eq!(ids, want);

    // the corrupt tile: in the report with its reason, and in the DLQ
    let summary: ScoreSummary = iso
        .store
        .get_json(&keys::job_output("job1", keys::OUTPUT_SUMMARY))
        .await
        .unwrap();
    let dead: BTreeSet<String> = summary.dead.iter().map(|d| d.tile_id.clone()).collect();
    assert_eq!(dead, bad_ids);
    assert!(
        summary.dead[0].reason.contains(&summary.dead[0].tile_id)
            && summary.dead[0].reason.contains(&bad.key),
        "{:?}",
        summary.dead[0]
    );
    let dlq = iso.drain(&topology::dlq(topology::SCORE_TILES)).await;
    // counted in the raw batch objects, where a tile scored twice would show
    let (raw_rows, raw_ids) = iso.raw_predictions("job1").await;
    let redelivered = redelivered_in(&survivor.log_text());
    aerial_tests::record_reliability(
        "score-kill",
        serde_json::json!({
            "kind": "fault",
            "fault": format!("one of 2 score replicas killed with SIGKILL mid-job; {} tile(s) corrupted in S3 beforehand", bad_ids.len()),
            "what_happened": format!("the survivor took the killed replica's redelivered batches (and the coordinator role when needed); the corrupt tiles went to the DLQ and the job report (fault at {written_at_kill} of {} batch objects written)", 640usize.div_ceil(8)),
            "input": 640 - bad_ids.len(),
            "output": raw_ids.len(),
            "duplicates": raw_rows - raw_ids.len(),
            "redeliveries": redelivered,
            "dlq": dlq.len(),
            "services_alive": format!("{}/1 (the survivor)", u8::from(survivor.alive())),
        }),
    );
    assert_eq!(raw_ids, want, "every good tile in the raw batch objects");
    assert_eq!(
        raw_rows,
        raw_ids.len(),
        "a tile was scored into two batch objects"
    );
    assert!(
        redelivered > 0,
        "the survivor received no redelivered tile: the kill held none"
    );
    assert_eq!(dlq.len(), bad_ids.len());
    assert!(header_str(&dlq[0].1, topology::ERROR_HEADER)
        .unwrap()
        .contains(&bad_ids.iter().next().unwrap()[..]));
    assert_eq!(summary.tiles_per_date.len(), 2);
    assert_eq!(
        summary.tiles_per_date["2009-08-18"].values().sum::<u64>()
            + summary.tiles_per_date["2020-08-31"].values().sum::<u64>(),
        640 - bad_ids.len() as u64
    );

    // outputs a GIS opens: the rasters carry the scene's CRS and the tile grid's transform
    let out_dir = tempfile::tempdir().unwrap();
    let (ok, out) = iso.cli(&["results", "job1", "--out", out_dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("2009-08-18"), "{out}");
    let tif = out_dir.path().join(keys::output_geotiff("2020-08-31"));
    let info = std::process::Command::new("gdalinfo")
        .args(["-json", tif.to_str().unwrap()])
        .output()
        .expect("gdalinfo (gdal-bin) installed by make");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["size"], serde_json::json!([20, 16]));
    assert!(info["coordinateSystem"]["wkt"]
        .as_str()
        .unwrap()
        .contains("\"EPSG\",26914"));
    let gt = info["geoTransform"].as_array().unwrap();
    assert_eq!(gt[1].as_f64(), Some(225.0));
    assert!((gt[0].as_f64().unwrap() - 485899.0).abs() < 1.0, "{gt:?}");
    // a Cloud-Optimized GeoTIFF: the class band, then one probability band per class
    assert_eq!(
        info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG",
        "{}",
        info["metadata"]
    );
    assert_eq!(
        info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"],
        "DEFLATE"
    );
    let bands = info["bands"].as_array().unwrap();
    assert_eq!(bands.len(), 1 + 3, "class + 3 probability bands");
    assert!(bands[0]["colorTable"].is_object());
    assert!(
        !bands[0]["overviews"].as_array().unwrap().is_empty(),
        "overviews"
    );
    assert_eq!(
        bands[0]["block"],
        serde_json::json!([16, 16]),
        "internal tiles"
    );
    assert_eq!(bands[2]["description"], "probability of forest (percent)");
    assert!(out_dir
        .path()
        .join(keys::output_style("2020-08-31"))
        .exists());
    // the vector layers: every scored window of both dates, and the dissolved regions
    let gpkg = out_dir.path().join(keys::OUTPUT_GPKG);
    let ogr = std::process::Command::new("ogrinfo")
        .args(["-ro", "-so", "-al", gpkg.to_str().unwrap()])
        .output()
        .expect("ogrinfo (gdal-bin)");
    let ogr = String::from_utf8_lossy(&ogr.stdout);
    assert!(ogr.contains("Layer name: windows"), "{ogr}");
    assert!(ogr.contains("Layer name: regions"), "{ogr}");
    assert!(
        ogr.contains(&format!("Feature Count: {}", 640 - bad_ids.len())),
        "{ogr}"
    );
    let dates = std::process::Command::new("ogrinfo")
        .args([
            "-ro",
            "-q",
            "-sql",
            "SELECT DISTINCT date FROM regions",
            gpkg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let dates = String::from_utf8_lossy(&dates.stdout);
    assert!(
        dates.contains("date (String) = 2009-08-18")
            && dates.contains("date (String) = 2020-08-31"),
        "{dates}"
    );
    // the STAC catalogue validates offline (pystac, core 1.1.0 + the extension schemas)
    let stac = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    )
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("py/stac_validate.py"))
    .arg(out_dir.path().join(keys::OUTPUT_STAC_CATALOG))
    .output()
    .expect("python from make install");
    let report = String::from_utf8_lossy(&stac.stdout);
    assert!(
        stac.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&stac.stderr)
    );
    let summary_line: serde_json::Value =
        serde_json::from_str(report.lines().last().unwrap()).unwrap();
    assert_eq!(
        summary_line["items"], 3,
        "two dates and the model: {report}"
    );
    assert_eq!(summary_line["collections"], 1);
    for ext in ["classification", "raster", "projection", "mlm"] {
        assert!(
            summary_line["extensions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e.as_str().unwrap().contains(&format!("/{ext}/"))),
            "{ext}: {report}"
        );
    }
    let png = image::open(out_dir.path().join(keys::output_png("2009-08-18"))).unwrap();
    assert!(png.width() > 400);
    let change: aerial_shared::change::ChangeReport =
        serde_json::from_slice(&std::fs::read(out_dir.path().join(keys::OUTPUT_CHANGE)).unwrap())
            .unwrap();
    assert_eq!(change.from_date, "2009-08-18");
    assert_eq!(change.to_date, "2020-08-31");
    assert!(change.compared >= 318);
    let cell_ha = change.cell_area_ha.expect("a metre grid");
    assert!((cell_ha - 5.0625).abs() < 1e-9, "225 m cells: {cell_ha}");
    let matrix_cells: u64 = change.matrix.values().flat_map(|r| r.values()).sum();
    assert_eq!(
        matrix_cells, change.compared,
        "the matrix covers every compared cell"
    );

    // a change report between two given dates, smoothed, from the CLI
    let (ok, out) = iso.cli(&[
        "results",
        "job1",
        "--change",
        "2009-08-18",
        "2020-08-31",
        "--smooth",
        "--json",
    ]);
    assert!(ok, "{out}");
    let smoothed: aerial_shared::change::ChangeReport = serde_json::from_str(&out).unwrap();
    assert!(smoothed.smoothed);
    assert_eq!(smoothed.compared, change.compared);
    // recomputed by the CLI, the job's own report exactly (a tile job: the table's labels)
    let (ok, out) = iso.cli(&[
        "results",
        "job1",
        "--change",
        "2009-08-18",
        "2020-08-31",
        "--json",
    ]);
    assert!(ok, "{out}");
    let again: aerial_shared::change::ChangeReport = serde_json::from_str(&out).unwrap();
    assert_eq!(again.changed, change.changed);
    assert_eq!(again.matrix, change.matrix);
    // and as a from -> to matrix in hectares
    let (ok, out) = iso.cli(&["results", "job1", "--change", "2009-08-18", "2020-08-31"]);
    assert!(ok, "{out}");
    assert!(out.contains("from -> to matrix, hectares"), "{out}");
    assert!(out.contains("a cell is 5.06 ha"), "{out}");
    survivor.terminate();
}

/// Jobs no retry can fix, sent to a real score replica: a fine-tuned run whose weights do
/// not load and a dataset whose manifest is corrupt. Each lands in its DLQ within the delivery
/// limit with its reason, the replica stays up, and a good job sent after them finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloadable_model_and_corrupt_manifest_are_dead_lettered_and_other_jobs_finish() {
    let iso = servers().isolated("score-poison").await;
    let limit = u64::from(iso.settings.amqp.delivery_limit);
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let models = models.to_str().unwrap();
    let procs = pipeline(&iso, models);
    let mut score = iso.spawn("aerial-score", &[("AERIAL__MODELS__DIR", models)]);
    for p in procs.iter().chain([&score]) {
        p.wait_log("consuming", Duration::from_secs(60)).await;
    }
    tiny_model(&iso).await;

    // run `broken`: m's descriptor as a fine-tune, with weights that are not a model
    let mut d: serde_json::Value = iso
        .store
        .get_json(&runs::key("m", runs::DESCRIPTOR))
        .await
        .unwrap();
    d["run"] = "broken".into();
    d["method"] = "finetune".into();
    d["retraining"] = "all".into();
    iso.store
        .put_json(&runs::key("broken", runs::DESCRIPTOR), &d)
        .await
        .unwrap();
    iso.store
        .put(
            &runs::key("broken", runs::FINETUNED),
            b"not a safetensors file".to_vec(),
        )
        .await
        .unwrap();
    // dataset `corrupt`: a manifest part that is not the manifest's CSV
    let part = keys::manifest_part("corrupt", "j1");
    iso.store
        .put(&part, b"id,key\nonly-one-field\n".to_vec())
        .await
        .unwrap();

    for (job, run, dataset) in [
        ("j-broken", "broken", "tiny"),
        ("j-corrupt", "m", "corrupt"),
    ] {
        let (ok, out) = iso.cli(&[
            "score",
            "--run",
            run,
            "--dataset",
            dataset,
            "--name",
            job,
            "--no-wait",
        ]);
        assert!(ok, "{out}");
    }
    // a good job after them finishes
    let (ok, out) = iso.cli(&[
        "score",
        "--run",
        "m",
        "--dataset",
        "tiny",
        "--name",
        "j-good",
    ]);
    assert!(ok, "{out}");
    let good: JobStatus = iso
        .store
        .get_json(&keys::job_status("j-good"))
        .await
        .unwrap();
    assert_eq!(
        (good.state, good.done, good.failed),
        (JobState::Done, 24, 0)
    );

    // the unloadable model: every tile of its job refused, with the reason
    let broken: JobStatus = eventually(Duration::from_secs(120), "j-broken settled", || async {
        let st: JobStatus = iso
            .store
            .get_json(&keys::job_status("j-broken"))
            .await
            .ok()?;
        (st.state != JobState::Running).then_some(st)
    })
    .await;
    let tiles_dlq = iso.drain(&topology::dlq(topology::SCORE_TILES)).await;
    assert_eq!(tiles_dlq.len(), 24, "each tile of j-broken once");
    let tile_deliveries: Vec<u64> = tiles_dlq
        .iter()
        .map(|(_, h)| header_u64(h, topology::DELIVERIES_HEADER).expect("deliveries header"))
        .collect();
    let tile_reason = header_str(&tiles_dlq[0].1, topology::ERROR_HEADER).unwrap();
    assert!(
        tile_reason.contains("broken") && tile_reason.contains("load"),
        "{tile_reason}"
    );
    assert!(tile_deliveries.iter().all(|&n| (1..=limit).contains(&n)));
    assert_eq!(broken.state, JobState::Done, "{broken:?}");
    assert_eq!((broken.done, broken.failed), (24, 24));

    // the corrupt manifest: the job itself, at once, naming the part
    let jobs_dlq = iso.drain(&topology::dlq(topology::SCORE_JOBS)).await;
    assert_eq!(jobs_dlq.len(), 1, "only j-corrupt");
    let job_reason = header_str(&jobs_dlq[0].1, topology::ERROR_HEADER).unwrap();
    let job_deliveries = header_u64(&jobs_dlq[0].1, topology::DELIVERIES_HEADER).unwrap();
    assert!(
        job_reason.contains("j-corrupt") && job_reason.contains(&part),
        "{job_reason}"
    );
    assert!((1..=limit).contains(&job_deliveries));
    let corrupt: JobStatus = iso
        .store
        .get_json(&keys::job_status("j-corrupt"))
        .await
        .unwrap();
    assert_eq!(corrupt.state, JobState::Failed);

    // a progress report that can never be handled (its object is gone) ends its job as
    // Failed with the reason, instead of leaving it running forever
    running_job(&iso, "j-lost").await;
    let lost_key = keys::prediction_batch("j-lost", "0000");
    report(&iso, "j-lost", &lost_key).await;
    let lost: JobStatus = eventually(Duration::from_secs(60), "j-lost failed", || async {
        let st: JobStatus = iso.store.get_json(&keys::job_status("j-lost")).await.ok()?;
        (st.state == JobState::Failed).then_some(st)
    })
    .await;
    let lost_error = lost.error.unwrap_or_default();
    assert!(lost_error.contains(&lost_key), "{lost_error}");
    let progress_dlq = iso.drain(&topology::dlq(topology::SCORE_PROGRESS)).await;
    assert_eq!(progress_dlq.len(), 1);
    let progress_deliveries = header_u64(&progress_dlq[0].1, topology::DELIVERIES_HEADER).unwrap();
    let progress_reason = header_str(&progress_dlq[0].1, topology::ERROR_HEADER).unwrap();
    assert!(progress_reason.contains(&lost_key), "{progress_reason}");
    // its objects are what counts: a later report of one that exists reopens and finishes it
    let rows: Vec<predictions::PredictionRow> = (0..24)
        .map(|i| predictions::PredictionRow {
            tile_id: format!("t{i}"),
            date: None,
            row: None,
            col: None,
            crs: None,
            bounds: None,
            lonlat_bounds: None,
            label: "field".into(),
            probs: vec![1.0, 0.0, 0.0],
        })
        .collect();
    let found_key = keys::prediction_batch("j-lost", "0001");
    iso.store
        .put_json(
            &found_key,
            &predictions::PredictionBatch {
                job_id: "j-lost".into(),
                replica: "elsewhere".into(),
                rows,
            },
        )
        .await
        .unwrap();
    report(&iso, "j-lost", &found_key).await;
    let reopened: JobStatus = eventually(
        Duration::from_secs(60),
        "j-lost reopened and done",
        || async {
            let st: JobStatus = iso.store.get_json(&keys::job_status("j-lost")).await.ok()?;
            (st.state == JobState::Done).then_some(st)
        },
    )
    .await;
    assert_eq!((reopened.done, reopened.failed), (24, 0));
    // a report naming another job's object is refused without touching either job: aimed at
    // a running job, which giving up would mark Failed
    running_job(&iso, "j-run").await;
    report(&iso, "j-run", &keys::prediction_batch("j-lost", "0001")).await;
    let foreign_dlq = eventually(Duration::from_secs(30), "foreign report dead", || async {
        let d = iso.drain(&topology::dlq(topology::SCORE_PROGRESS)).await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert!(header_str(&foreign_dlq[0].1, topology::ERROR_HEADER)
        .unwrap()
        .contains("not an object of that job"));
    let run_after: JobStatus = iso
        .store
        .get_json(&keys::job_status("j-run"))
        .await
        .unwrap();
    assert_eq!(
        (run_after.state, run_after.error),
        (JobState::Running, None),
        "the running job untouched"
    );
    let lost_after: JobStatus = iso
        .store
        .get_json(&keys::job_status("j-lost"))
        .await
        .unwrap();
    assert_eq!(lost_after.state, JobState::Done);
    assert!(score.alive(), "the score replica died");

    aerial_tests::record_reliability(
        "score-poison",
        serde_json::json!({
            "kind": "poison-service",
            "limit": limit,
            "cases": [
                {"item": "a fine-tuned run whose weights do not load (score.tiles, 24 tiles)",
                 "deliveries": tile_deliveries.iter().max(), "reason": tile_reason},
                {"item": "a score job on a corrupt manifest (score.jobs)",
                 "deliveries": job_deliveries, "reason": job_reason},
                {"item": "a progress report whose object is gone (score.progress; its job then shows Failed with the reason)",
                 "deliveries": progress_deliveries, "reason": progress_reason},
            ],
            "after": format!("a good job sent after them finished ({} of 24 tiles); the score replica stayed up", good.done - good.failed),
        }),
    );
    score.terminate();
}

/// A region date scored with windows every 112 m: the map is one cell per 110 m stride (the
/// nearest whole pixels), ~40 × 32 cells, a COG whose cells average the windows covering
/// them; the GeoPackage holds every window and the dissolved regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stride_gives_a_finer_map_of_averaged_windows() {
    let iso = servers().isolated("score-stride").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let models = models.to_str().unwrap();
    let procs = pipeline(&iso, models);
    // a window cap above this test's jobs (1,209 windows) and below a 56 m stride's 4,836
    let score = iso.spawn(
        "aerial-score",
        &[
            ("AERIAL__MODELS__DIR", models),
            ("AERIAL__SCORE__MAX_WINDOWS", "2000"),
        ],
    );
    for p in procs.iter().chain([&score]) {
        p.wait_log("consuming", Duration::from_secs(60)).await;
    }
    tiny_model(&iso).await;
    let scene = shared_data().join("region/naip_nd_m_4709963_se/m_4709963_se_14_1_20150926.tif");
    iso.ingest_scene(&scene, "region");
    let score_at = |dataset: &str, metres: &str| {
        iso.cli(&[
            "score",
            "--run",
            "m",
            "--dataset",
            dataset,
            "--stride-meters",
            metres,
        ])
    };
    // a stride of nothing is refused before anything is published
    let (ok, out) = score_at("region", "0");
    assert!(!ok && out.contains("positive number of metres"), "{out}");
    // over the window cap: refused by the fan-out with the count and the setting
    let (ok, out) = score_at("region", "56");
    assert!(
        !ok && out
            .contains("makes 4836 windows, over the limit of 2000 (AERIAL__SCORE__MAX_WINDOWS)"),
        "{out}"
    );
    // dates cut at different resolutions (a 10 m copy of another date): no common stride
    let coarse_dir = tempfile::tempdir().unwrap();
    let coarse = coarse_dir.path().join("m_4709963_se_14_1_20090818.tif");
    let st = std::process::Command::new("gdalwarp")
        .args(["-q", "-tr", "10", "10"])
        .arg(shared_data().join("region/naip_nd_m_4709963_se/m_4709963_se_14_1_20090818.tif"))
        .arg(&coarse)
        .status()
        .expect("gdalwarp (gdal-bin) installed by make");
    assert!(st.success());
    for f in [&scene, &coarse] {
        iso.ingest_scene(f, "mixed-res");
    }
    let (ok, out) = score_at("mixed-res", "112");
    assert!(
        !ok && out.contains(
            "a stride needs every date cut alike: 2009-08-18 has 22 px tiles of 10 m pixels, \
             2015-09-26 45 px of 5 m"
        ),
        "{out}"
    );
    let (ok, out) = score_at("region", "112");
    assert!(ok, "{out}");
    assert!(out.contains("published score job region-m-s112"), "{out}");
    assert!(out.contains("map cells of 110.0 m"), "{out}");
    let st: JobStatus = iso
        .store
        .get_json(&keys::job_status("region-m-s112"))
        .await
        .unwrap();
    assert_eq!(
        (st.total, st.done, st.failed),
        (31 * 39, 31 * 39, 0),
        "one per window"
    );
    let (raw_rows, raw_ids) = iso.raw_predictions("region-m-s112").await;
    assert_eq!((raw_rows, raw_ids.len()), (31 * 39, 31 * 39));

    let out_dir = tempfile::tempdir().unwrap();
    let (ok, out) = iso.cli(&[
        "results",
        "region-m-s112",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let tif = out_dir.path().join(keys::output_geotiff("2015-09-26"));
    let info = std::process::Command::new("gdalinfo")
        .args(["-json", tif.to_str().unwrap()])
        .output()
        .expect("gdalinfo");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["size"], serde_json::json!([40, 32]));
    assert_eq!(info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG");
    assert_eq!(info["bands"].as_array().unwrap().len(), 4);
    assert!(info["coordinateSystem"]["wkt"]
        .as_str()
        .unwrap()
        .contains("\"EPSG\",26914"));
    let gt = info["geoTransform"].as_array().unwrap();
    assert_eq!(gt[1].as_f64(), Some(110.0), "{gt:?}");
    // every cell covered; each class probability band sums to ~100 % per cell
    let band = |b: usize| -> Vec<u8> {
        let ds = gdal::Dataset::open(&tif).unwrap();
        let band = ds.rasterband(b).unwrap();
        band.read_as::<u8>((0, 0), (40, 32), (40, 32), None)
            .unwrap()
            .data()
            .to_vec()
    };
    let class = band(1);
    assert!(
        class.iter().all(|&c| c < 3),
        "no no-data cell in a full scene"
    );
    let (p1, p2, p3) = (band(2), band(3), band(4));
    for i in 0..class.len() {
        let sum = u32::from(p1[i]) + u32::from(p2[i]) + u32::from(p3[i]);
        assert!((98..=102).contains(&sum), "cell {i}: {sum}");
        let best = [p1[i], p2[i], p3[i]].iter().copied().max().unwrap();
        assert_eq!([p1[i], p2[i], p3[i]][class[i] as usize], best, "cell {i}");
    }
    // the summary's areas are of 110 m cells (1.21 ha each)
    let summary: ScoreSummary = iso
        .store
        .get_json(&keys::job_output("region-m-s112", keys::OUTPUT_SUMMARY))
        .await
        .unwrap();
    let km2: f64 = summary.area_km2_per_date["2015-09-26"].values().sum();
    assert!((km2 - 40.0 * 32.0 * 0.0121).abs() < 1e-6, "{km2}");
    // the windows as polygons
    let ogr = std::process::Command::new("ogrinfo")
        .args([
            "-ro",
            "-so",
            out_dir.path().join(keys::OUTPUT_GPKG).to_str().unwrap(),
            "windows",
        ])
        .output()
        .unwrap();
    let ogr = String::from_utf8_lossy(&ogr.stdout);
    assert!(
        ogr.contains(&format!("Feature Count: {}", 31 * 39)),
        "{ogr}"
    );

    // No-data from the scene: the same scene with a 100 px collar on its west edge, as
    // NAIP's nodata value 0 in every band (tile columns 0-1 wholly, column 2 for 10 of its
    // 45 px), another over the last tile column (pixels 855..900), and a hole where tile
    // r5c10 is (pixels 450..495 × 225..270). Tiles and windows over half no-data are not
    // scored and stay no-data cells in a map of the same size (without the job's extent the
    // east collar would shrink it); a kept window partly over the hole gives no class to the
    // cells centred in it.
    let dir = tempfile::tempdir().unwrap();
    let collared = dir.path().join("m_4709963_se_14_1_20150926.tif");
    {
        let src = gdal::Dataset::open(&scene).unwrap();
        let ds = src
            .create_copy(
                &gdal::DriverManager::get_driver_by_name("GTiff").unwrap(),
                &collared,
                &gdal::cpl::CslStringList::new(),
            )
            .unwrap();
        let (_, h) = ds.raster_size();
        for b in 1..=ds.raster_count() {
            let mut band = ds.rasterband(b).unwrap();
            assert_eq!(band.no_data_value(), Some(0.0), "NAIP declares nodata 0");
            let mut zeros = gdal::raster::Buffer::new((100, h), vec![0u8; 100 * h]);
            band.write((0, 0), (100, h), &mut zeros).unwrap();
            let mut hole = gdal::raster::Buffer::new((45, 45), vec![0u8; 45 * 45]);
            band.write((450, 225), (45, 45), &mut hole).unwrap();
            let mut east = gdal::raster::Buffer::new((45, h), vec![0u8; 45 * h]);
            band.write((855, 0), (45, h), &mut east).unwrap();
        }
    }
    iso.ingest_scene(&collared, "collared");
    let rows = manifest::load(&iso.store, "collared").await.unwrap();
    let share = |col: u32| -> BTreeSet<String> {
        rows.iter()
            .filter(|r| r.col == Some(col))
            .map(|r| format!("{:.3}", r.nodata.unwrap()))
            .collect()
    };
    assert_eq!(
        (share(0), share(1), share(2), share(3)),
        (
            BTreeSet::from(["1.000".into()]),
            BTreeSet::from(["1.000".into()]),
            BTreeSet::from(["0.222".into()]),
            BTreeSet::from(["0.000".into()])
        ),
        "each tile's no-data share in the manifest"
    );
    type Cells = fn(usize, usize) -> bool;
    let tiles_out: Cells = |r, c| c < 2 || c == 19 || (r, c) == (5, 10);
    // cells of 22 px: centres 22·i + 11 px; those in the two whole no-data tiles of the west
    // collar (0..90 px: cells 0-3; cell 4's centre, 99 px, is in the 22 % tile), in the east
    // one (855..900: cell 39) and in the hole (rows 10-11, columns 20-21)
    let cells_out: Cells =
        |r, c| c < 4 || c == 39 || ((10..=11).contains(&r) && (20..=21).contains(&c));
    for (stride, (total, skipped), (w, h), blank) in [
        (None, (271, 49), (20, 16), tiles_out),
        // windows 0-3 of each row are over half no-data (window 3: 24 px of a no-data tile,
        // 21 of a 22 % one), window 38 too (26 px of the east tile), and two over the hole
        // (r10c20: 40 × 35 px of it, r10c21: 40 × 33); r9c19, kept (18 × 13 px of it),
        // covers cell r10c20 but gives it no class
        (Some("112"), (31 * 34 - 2, 31 * 5 + 2), (40, 32), cells_out),
    ] {
        let mut args = vec!["score", "--run", "m", "--dataset", "collared"];
        args.extend(stride.iter().flat_map(|s| ["--stride-meters", *s]));
        let (ok, out) = iso.cli(&args);
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!("{skipped} tile(s) left out as no-data"))
                || out.contains(&format!("({skipped} window(s) left out as no-data)")),
            "{out}"
        );
        let job = format!(
            "collared-m{}",
            stride.map_or(String::new(), |s| format!("-s{s}"))
        );
        let job = job.as_str();
        let summary: ScoreSummary = iso
            .store
            .get_json(&keys::job_output(job, keys::OUTPUT_SUMMARY))
            .await
            .unwrap();
        assert_eq!(
            (summary.total, summary.predicted),
            (total, total),
            "{job}: only the valid ones are scored"
        );
        assert_eq!(
            summary.nodata_windows.get("2015-09-26"),
            Some(&skipped),
            "{job}"
        );
        let out_dir = tempfile::tempdir().unwrap();
        let (ok, out) = iso.cli(&["results", job, "--out", out_dir.path().to_str().unwrap()]);
        assert!(ok, "{out}");
        let tif = out_dir.path().join(keys::output_geotiff("2015-09-26"));
        let ds = gdal::Dataset::open(&tif).unwrap();
        assert_eq!(ds.raster_size(), (w, h), "{job}: the map keeps its size");
        // no-data in the class band and in every probability band
        for b in 1..=4 {
            let px = ds
                .rasterband(b)
                .unwrap()
                .read_as::<u8>((0, 0), (w, h), (w, h), None)
                .unwrap()
                .data()
                .to_vec();
            for (i, v) in px.iter().enumerate() {
                let out = blank(i / w, i % w);
                assert_eq!(*v == 255, out, "{job}: band {b}, cell {i}");
            }
        }
        let ogr = std::process::Command::new("ogrinfo")
            .args([
                "-ro",
                "-so",
                out_dir.path().join(keys::OUTPUT_GPKG).to_str().unwrap(),
                "windows",
            ])
            .output()
            .unwrap();
        let ogr = String::from_utf8_lossy(&ogr.stdout);
        assert!(ogr.contains(&format!("Feature Count: {total}")), "{ogr}");
    }
    drop(score);
}
