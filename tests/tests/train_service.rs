//! Ingest → featurize → train on a small real dataset: `--sample-frac 0.25` trains on a
//! quarter of each class, a repeated job leaves one record, `--test-frac` keeps a test share
//! out, `--tta d4` validates over the 8 views as `aerial evaluate` does, `aerial runs --json`
//! lists runs.

use aerial_shared::{runs, topology, Broker};
use aerial_tests::{rsscn7_sample, servers};
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_frac_is_stratified_and_runs_are_recorded_once() {
    let iso = servers().isolated("train").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let models = models.to_str().unwrap();
    let procs = [
        iso.spawn("aerial-ingest", &[]),
        iso.spawn(
            "aerial-featurize",
            &[
                ("AERIAL__MODELS__DIR", models),
                ("AERIAL__WORKER__BATCH_SIZE", "16"),
            ],
        ),
        // a run with test-time views featurizes its tiles' views itself
        iso.spawn("aerial-train", &[("AERIAL__MODELS__DIR", models)]),
    ];
    for p in &procs {
        p.wait_log("consuming", Duration::from_secs(30)).await;
    }
    // 3 classes, 8 train + 2 val each
    let dir = tempfile::tempdir().unwrap();
    rsscn7_sample(
        dir.path(),
        &["forest", "industry", "river_lake"],
        &[("train", 8), ("val", 2)],
    );
    let (ok, out) = iso.cli(&[
        "ingest",
        "labelled",
        dir.path().to_str().unwrap(),
        "--dataset",
        "tiny",
    ]);
    assert!(ok, "{out}");

    // the train job waits for featurize to finish on its own
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "quarter",
        "--dataset",
        "tiny",
        "--method",
        "logistic",
        "--sample-frac",
        "0.25",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("on 6 training tiles"), "{out}");
    let metrics: runs::RunMetrics = iso
        .store
        .get_json(&runs::key("quarter", runs::METRICS))
        .await
        .unwrap();
    assert_eq!(
        metrics.train_per_label,
        vec![2, 2, 2],
        "a quarter of each class's 8 training tiles"
    );
    assert_eq!(metrics.val_tiles, 6);
    assert_eq!(
        metrics.validation.confusion.iter().flatten().sum::<u64>(),
        6
    );
    let desc: runs::RunDescriptor = iso
        .store
        .get_json(&runs::key("quarter", runs::DESCRIPTOR))
        .await
        .unwrap();
    assert_eq!(desc.labels, vec!["forest", "industry", "river_lake"]);
    assert_eq!(desc.feature_dim, Some(1280));
    let preds = String::from_utf8(
        iso.store
            .get(&runs::key("quarter", runs::PREDICTIONS))
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(preds.lines().count(), 7, "header + 6 validation rows");
    assert!(preds.starts_with("tile,true,predicted,p_forest,p_industry,p_river_lake"));

    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "forest",
        "--dataset",
        "tiny",
        "--method",
        "random-forest",
        "--trees",
        "10",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("on 24 training tiles"), "{out}");

    // the same job delivered again (as after a crash before the ack) makes no second record
    let first: runs::RunSummary = iso
        .store
        .get_json(&runs::key("quarter", runs::SUMMARY))
        .await
        .unwrap();
    let token = aerial_shared::shutdown::Token::new();
    let broker = Broker::connect_with_retry(&iso.settings.amqp, "test", &token)
        .await
        .unwrap();
    let job: aerial_shared::messages::TrainJob =
        serde_json::from_str(out_job(&iso).as_str()).unwrap();
    broker
        .publisher()
        .send(topology::TRAIN_JOBS, &job)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(iso.ready(topology::TRAIN_JOBS).await, 0);
    let again: runs::RunSummary = iso
        .store
        .get_json(&runs::key("quarter", runs::SUMMARY))
        .await
        .unwrap();
    assert_eq!(first, again, "summary rewritten by a redelivered job");
    assert_eq!(iso.ready(&topology::dlq(topology::TRAIN_JOBS)).await, 0);

    // a test share and test-time views: the same 18 training tiles twice, with and without
    // the 8 views; validation is measured with the views and `aerial evaluate` agrees
    let views = |name: &str, tta: &str| {
        let (ok, out) = iso.cli(&[
            "train",
            "--name",
            name,
            "--dataset",
            "tiny",
            "--method",
            "logistic",
            "--test-frac",
            "0.25",
            "--tta",
            tta,
        ]);
        assert!(ok, "{out}");
        assert!(out.contains("on 18 training tiles"), "{out}");
        assert!(
            out.contains("on 6 test tiles (held out of training and validation)"),
            "{out}"
        );
    };
    views("one-view", "none");
    views("d4", "d4");
    let get = |run: &'static str, file: &'static str| {
        let store = iso.store.clone();
        async move {
            String::from_utf8(store.get(&runs::key(run, file)).await.unwrap().to_vec()).unwrap()
        }
    };
    let m: runs::RunMetrics = serde_json::from_str(&get("d4", runs::METRICS).await).unwrap();
    let test = m.test.expect("a test evaluation");
    assert_eq!(test.total, 6, "2 of each class's 8 training tiles");
    assert_eq!(m.train_per_label, vec![6, 6, 6]);
    let d: runs::RunDescriptor = serde_json::from_str(&get("d4", runs::DESCRIPTOR).await).unwrap();
    assert_eq!(d.params.tta, aerial_shared::messages::Tta::D4);
    assert_eq!(d.test_frac, Some(0.25));
    let s: runs::RunSummary = serde_json::from_str(&get("d4", runs::SUMMARY).await).unwrap();
    assert_eq!(s.test_accuracy, Some(test.accuracy));
    assert_ne!(
        get("d4", runs::PREDICTIONS).await,
        get("one-view", runs::PREDICTIONS).await,
        "the same model's validation probabilities change with the views"
    );
    let (ok, out) = iso.cli(&[
        "evaluate",
        "--run",
        "d4",
        dir.path().join("val").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{out}");
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["total"], 6);
    assert_eq!(
        e["accuracy"].as_f64(),
        Some(s.accuracy),
        "evaluate uses the run's views, as its validation did"
    );

    // at a coarser ground resolution: the same 18 training tiles, every part's features from
    // images degraded to 45 px; the descriptor says so and evaluate degrades alike
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "coarse",
        "--dataset",
        "tiny",
        "--method",
        "logistic",
        "--test-frac",
        "0.25",
        "--degrade-px",
        "45",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("on 18 training tiles"), "{out}");
    let d: runs::RunDescriptor =
        serde_json::from_str(&get("coarse", runs::DESCRIPTOR).await).unwrap();
    assert_eq!(d.params.degrade_px, Some(45));
    assert_ne!(
        get("coarse", runs::PREDICTIONS).await,
        get("one-view", runs::PREDICTIONS).await,
        "degraded images give other features and probabilities"
    );
    let (ok, out) = iso.cli(&[
        "evaluate",
        "--run",
        "coarse",
        dir.path().join("val").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("images degraded to 45 px"), "{out}");
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "bad",
        "--dataset",
        "tiny",
        "--method",
        "logistic",
        "--degrade-px",
        "300",
    ]);
    assert!(
        !ok && out.contains("--degrade-px must be in 8..224"),
        "{out}"
    );

    let (ok, out) = iso.cli(&["runs", "--json"]);
    assert!(ok, "{out}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows
        .iter()
        .any(|r| r["name"] == "d4" && r["test_accuracy"].as_f64() == Some(test.accuracy)));
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"quarter") && names.contains(&"forest"));
    assert!(
        rows[0]["accuracy"].as_f64().unwrap() >= rows[1]["accuracy"].as_f64().unwrap(),
        "best first"
    );
    broker.close().await;
    iso.cleanup().await;
}

/// The "quarter" job as the CLI published it (its first output line).
fn out_job(iso: &aerial_tests::Isolated) -> String {
    let (_, out) = iso.cli(&[
        "train",
        "--name",
        "quarter",
        "--dataset",
        "tiny",
        "--method",
        "logistic",
        "--sample-frac",
        "0.25",
        "--no-wait",
    ]);
    out.lines()
        .next()
        .unwrap()
        .trim_start_matches("train job: ")
        .to_string()
}
