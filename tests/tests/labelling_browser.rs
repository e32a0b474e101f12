//! The labelling loop in a real browser (Debian's chromium driven by selenium through
//! chromium-driver): on a scored date of the region, an analyst draws a stratified
//! assessment sample and labels every tile by keys and clicks, the page shows the accuracy
//! table; then labels corrections (one a new class), retrains and gets a new map. Checked
//! against what is stored: every label, the estimates recomputed from S3, the corrections
//! dataset `aerial train` reads, the new run and map. Writes need the token (401 without),
//! bad input is refused, and the labels survive a restart of the metrics service.
//! Screenshots go to `target/test-output/labelling/`.

use aerial_shared::{assessment, keys, manifest, runs, status::JobStatus};
use aerial_tests::{eventually, rsscn7_sample, servers, shared_data};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "test-dashboard-token-0123456789";
const DATE: &str = "2015-09-26";

fn dashboard(log: &str) -> String {
    log.lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["dashboard"]
                .as_str()
                .map(|s| s.trim_end_matches('/').to_string())
        })
        .expect("metrics logs its dashboard address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyst_assesses_corrects_and_retrains_in_the_browser() {
    let iso = servers().isolated("labelling").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let m = [("AERIAL__MODELS__DIR", models.to_str().unwrap())];
    let metrics_env = [
        ("AERIAL__TELEMETRY__HTTP_ADDR", "127.0.0.1:0"),
        ("AERIAL__DASHBOARD__TOKEN", TOKEN),
    ];
    let procs = [
        iso.spawn("aerial-ingest", &[]),
        iso.spawn("aerial-featurize", &m),
        iso.spawn("aerial-train", &m),
        iso.spawn("aerial-score", &m),
    ];
    let metrics = iso.spawn("aerial-metrics", &metrics_env);
    for p in procs.iter().chain([&metrics]) {
        p.wait_log("consuming", Duration::from_secs(60)).await;
    }
    let base = dashboard(&metrics.log_text());

    let dir = tempfile::tempdir().unwrap();
    let classes = [
        "field",
        "forest",
        "grass",
        "industry",
        "parking",
        "resident",
        "river_lake",
    ];
    rsscn7_sample(dir.path(), &classes, &[("train", 8), ("val", 3)]);
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
        "lr",
        "--dataset",
        "tiny",
        "--method",
        "logistic",
    ]);
    assert!(ok, "{out}");
    let scene = shared_data().join("region/naip_nd_m_4709963_se/m_4709963_se_14_1_20150926.tif");
    iso.ingest_scene(&scene, "region");
    let (ok, out) = iso.cli(&[
        "score",
        "--run",
        "lr",
        "--dataset",
        "region",
        "--name",
        "map",
    ]);
    assert!(ok, "{out}");

    // writes need the token; bad input is refused with a reason
    let http = reqwest::Client::new();
    let label = |tok: Option<&str>, body: serde_json::Value| {
        let mut r = http.post(format!("{base}/api/jobs/map/labels")).json(&body);
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let tile0 = "2015-09-26/r000c000";
    let ok_body =
        serde_json::json!({"mode": "correct", "tile_id": tile0, "label": "field", "by": "x"});
    assert_eq!(label(None, ok_body.clone()).await.unwrap().status(), 401);
    assert_eq!(
        label(Some("wrong"), ok_body.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    for (body, why) in [
        (
            serde_json::json!({"mode": "correct", "tile_id": "nope/r000c000", "label": "field", "by": "x"}),
            "not on this job's map",
        ),
        (
            serde_json::json!({"mode": "correct", "tile_id": tile0, "label": "<b>x</b>", "by": "x"}),
            "not a class name",
        ),
        (
            serde_json::json!({"mode": "correct", "tile_id": tile0, "label": "field", "by": "x", "labels_dataset": "tiny"}),
            "already holds other tiles",
        ),
        (
            serde_json::json!({"mode": "assess", "tile_id": tile0, "label": "field", "by": "x", "design": "none"}),
            "not found",
        ),
    ] {
        let r = label(Some(TOKEN), body).await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            status.is_client_error() && text.contains(why),
            "{status} {text}"
        );
    }
    assert!(
        iso.store
            .list(&keys::label_records_prefix("region-labels"))
            .await
            .unwrap()
            .is_empty(),
        "refused labels left nothing behind"
    );

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/labelling");
    std::fs::create_dir_all(&shots).unwrap();
    let py = aerial_tests::repo_root().join(".venv/bin/python");
    let script = aerial_tests::repo_root().join("tests/py/label_browser.py");
    let out = tokio::process::Command::new(py)
        .args([
            script.to_str().unwrap(),
            &base,
            "map",
            TOKEN,
            shots.to_str().unwrap(),
            "2",
            "6",
        ])
        .output()
        .await
        .expect("python with selenium (installed by make)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("browser: {seen}");
    // the page's console: only the expected 404s (favicon, and polling a run and a map
    // before they exist), no script error
    for e in seen["console_errors"].as_array().unwrap() {
        assert!(e.as_str().unwrap().contains("404 (Not Found)"), "{e}");
    }

    // assessment: the sample is stratified (2 per mapped class, fewer when a class has fewer),
    // every click/key stored once with who; the page's overall accuracy is the one S3 gives
    let names = assessment::designs(&iso.store, "region").await.unwrap();
    assert_eq!(
        names,
        vec![format!("map-{DATE}-s1")],
        "one sample, named by job, date, seed"
    );
    let design = assessment::design(&iso.store, "region", &names[0])
        .await
        .unwrap();
    let mut want = 0;
    for n in &design.stratum_units {
        want += (*n).min(2) as usize;
    }
    assert_eq!(design.tiles.len(), want, "{design:?}");
    assert_eq!(seen["assessment"]["sample"], want);
    assert_eq!(
        seen["assessment"]["pred_shown"], "",
        "predictions hidden while assessing"
    );
    let refs = assessment::references(&iso.store, &design).await.unwrap();
    let given: BTreeMap<String, String> =
        serde_json::from_value(seen["assessment"]["given"].clone()).unwrap();
    assert_eq!(given.len(), want);
    let stored = iso
        .store
        .list(&keys::assessment_labels_prefix("region", &design.name))
        .await
        .unwrap();
    assert_eq!(stored.len(), want, "one stored object per labelled tile");
    for (tile, l) in &given {
        assert_eq!(&refs[tile].label, l, "{tile}");
        assert_eq!(refs[tile].by, "ann");
    }
    let a = assessment::assess_design(&design, &refs).unwrap();
    let text = seen["assessment"]["overall_text"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "Overall accuracy {:.1} %",
            a.overall.value * 100.0
        )),
        "{text} vs {:?}",
        a.overall
    );
    assert_eq!(seen["assessment"]["table_rows"], a.per_class.len());
    let acc: serde_json::Value = serde_json::from_slice(
        &iso.store
            .get(&keys::job_output("map", keys::OUTPUT_ACCURACY))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(acc[0]["labelled"], want);
    let csv = iso
        .store
        .get(&keys::job_output("map", &keys::output_accuracy_csv(DATE)))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&csv).starts_with("class,mapped_tiles"));

    // a sampled tile cannot become a correction: it measures maps, never trains them
    let sampled = &design.tiles[0].tile_id;
    let r = label(
        Some(TOKEN),
        serde_json::json!({"mode": "correct", "tile_id": sampled, "label": "field", "by": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("is in assessment sample"));

    // corrections: a labels dataset train can read, who/when in its manifest
    let fixes: BTreeMap<String, String> =
        serde_json::from_value(seen["corrections"]["given"].clone()).unwrap();
    assert_eq!(fixes.len(), 6);
    assert!(seen["corrections"]["pred_shown"]
        .as_str()
        .unwrap()
        .starts_with("map says "));
    let rows = manifest::load(&iso.store, "region-labels").await.unwrap();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert_eq!(fixes[&r.id], r.label);
        assert_eq!(r.split, "train");
        assert_eq!(r.labelled_by.as_deref(), Some("ann"));
        assert!(r.labelled_at.is_some());
    }
    assert!(fixes.values().any(|l| l == "cropland"));
    // exported for GIS tools: one CSV row and one footprint per labelled tile
    let csv = http
        .get(format!(
            "{base}/api/datasets/region-labels/labels?format=csv"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    let geo: serde_json::Value = http
        .get(format!(
            "{base}/api/datasets/region-labels/labels?format=geojson"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(geo["features"].as_array().unwrap().len(), 6);
    assert!(fixes.contains_key(seen["corrections"]["prev_tile"].as_str().unwrap()));

    // the loop: a run on tiny + the corrections, a new map of every tile, on the page
    let new_job = seen["corrections"]["new_job"]
        .as_str()
        .expect("a new map")
        .to_string();
    let secs: f64 = seen["corrections"]["seconds_page"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    println!(
        "last label to new map: {secs} s (page); click to map {} s",
        seen["corrections"]["seconds_click_to_map"]
    );
    let st: JobStatus = iso
        .store
        .get_json(&keys::job_status(&new_job))
        .await
        .unwrap();
    assert_eq!((st.done, st.total), (320, 320));
    let summary: aerial_shared::predictions::ScoreSummary = iso
        .store
        .get_json(&keys::job_output(&new_job, keys::OUTPUT_SUMMARY))
        .await
        .unwrap();
    assert!(
        summary.labels.contains(&"cropland".to_string()),
        "{:?}",
        summary.labels
    );
    let d: runs::RunDescriptor = iso
        .store
        .get_json(&runs::key(&summary.run, runs::DESCRIPTOR))
        .await
        .unwrap();
    assert_eq!(
        (d.dataset.as_str(), d.also.clone()),
        ("tiny", vec!["region-labels".to_string()])
    );
    assert_eq!(seen["corrections"]["new_map_cells"], "320");
    assert_eq!(
        seen["corrections"]["comparison"].as_array().unwrap().len(),
        2,
        "header + the sample"
    );
    assert_eq!(seen["viewer"]["cells"], "320");
    assert_eq!(seen["viewer"]["scene_px"], "900", "20 tiles of 45 px");
    assert!(seen["viewer"]["legend"]
        .as_str()
        .unwrap()
        .contains("cropland"));

    // labels survive a restart of the service that took them
    // the process that took the token and the labels, for the log check below
    let first_metrics_log = metrics.log_text();
    metrics.terminate();
    let metrics = iso.spawn("aerial-metrics", &metrics_env);
    metrics.wait_log("consuming", Duration::from_secs(60)).await;
    let base = dashboard(&metrics.log_text());
    let q: serde_json::Value =
        eventually(Duration::from_secs(30), "queue after restart", || async {
            http.get(format!(
                "{base}/api/jobs/map/queue?mode=assess&design=map-{DATE}-s1"
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
        })
        .await;
    let labelled = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["label"].is_string())
        .count();
    assert_eq!(labelled, want);

    // the corrections are a dataset `aerial train` accepts alone (no val split: a fifth of
    // each label is held out for its validation)
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "only-labels",
        "--dataset",
        "region-labels",
        "--method",
        "logistic",
    ]);
    assert!(ok && out.contains("accuracy"), "{out}");

    // no secret and no token in any log
    let mut logs = first_metrics_log + &metrics.log_text();
    for p in &procs {
        logs.push_str(&p.log_text());
    }
    assert!(!logs.contains(TOKEN), "the dashboard token was logged");
    for secret in servers().secrets() {
        assert!(!logs.contains(&secret));
    }
    iso.cleanup().await;
}
