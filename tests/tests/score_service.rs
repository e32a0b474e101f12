//! Scoring a two-date region with two replicas, one of them killed with SIGKILL mid-job, and
//! one tile corrupted in storage: the job completes, every other tile is in the table exactly
//! once, the corrupt tile is in the DLQ and the report, and the outputs are usable GIS files.

use aerial_shared::{
    keys, manifest,
    predictions::{self, ScoreSummary},
    status::{JobState, JobStatus},
    topology,
};
use aerial_tests::{eventually, header_str, rsscn7_sample, servers, shared_data};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

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
    let procs = [
        iso.spawn("aerial-ingest", &[]),
        iso.spawn(
            "aerial-featurize",
            &[
                ("AERIAL__MODELS__DIR", models),
                ("AERIAL__WORKER__BATCH_SIZE", "16"),
            ],
        ),
        iso.spawn("aerial-train", &[]),
    ];
    let victim = iso.spawn("aerial-score", &score_env);
    let mut survivor = iso.spawn("aerial-score", &score_env);
    for p in procs.iter().chain([&victim, &survivor]) {
        p.wait_log("consuming", Duration::from_secs(60)).await;
    }

    // a small model: 3 classes, 6 training tiles each
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
    aerial_tests::record_reliability(
        "score-kill",
        serde_json::json!({
            "kind": "fault",
            "fault": format!("one of 2 score replicas killed with SIGKILL mid-job; {} tile(s) corrupted in S3 beforehand", bad_ids.len()),
            "what_happened": "the survivor took the killed replica's redelivered batches (and the coordinator role when needed); the corrupt tiles went to the DLQ and the job report",
            "input": 640 - bad_ids.len(),
            "output": ids.len(),
            "duplicates": table.len() - ids.len(),
            "dlq": dlq.len(),
            "services_alive": format!("{}/1 (the survivor)", u8::from(survivor.alive())),
        }),
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
    let png = image::open(out_dir.path().join(keys::output_png("2009-08-18"))).unwrap();
    assert!(png.width() > 400);
    let change: aerial_shared::change::ChangeReport =
        serde_json::from_slice(&std::fs::read(out_dir.path().join(keys::OUTPUT_CHANGE)).unwrap())
            .unwrap();
    assert_eq!(change.from_date, "2009-08-18");
    assert_eq!(change.to_date, "2020-08-31");
    assert!(change.compared >= 318);

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
    survivor.terminate();
}
