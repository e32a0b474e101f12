//! Jobs longer than the broker's consumer timeout (60 s on the test servers): a fine-tune
//! that runs for minutes, and an ingest of ten scenes, each go on in segments of at most
//! `worker.segment_secs` and leave exactly one result: one run record with every epoch
//! once, one manifest part with every tile once; no job copy left in a queue or a DLQ, and
//! no delivery ever timed out (the broker would have closed the channel).

use aerial_shared::{
    keys, manifest,
    runs::{self, RunMetrics},
    topology,
};
use aerial_tests::{eventually, rsscn7_sample, servers, shared_data};
use std::path::Path;
use std::time::{Duration, Instant};

/// The consumer timeout `scripts/servers.sh` gives test brokers.
const CONSUMER_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_longer_than_the_consumer_timeout_leave_one_result() {
    let iso = servers().isolated("long").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let models = models.to_str().unwrap();
    // segments well under the timeout; the ingest's short enough to cut ten scenes in several
    let ingest = iso.spawn("aerial-ingest", &[("AERIAL__WORKER__SEGMENT_SECS", "0.1")]);
    let train = iso.spawn(
        "aerial-train",
        &[
            ("AERIAL__MODELS__DIR", models),
            ("AERIAL__WORKER__SEGMENT_SECS", "20"),
        ],
    );
    for p in [&ingest, &train] {
        p.wait_log("consuming", Duration::from_secs(30)).await;
    }

    // ten scenes, one job, continued in segments (at least one scene each)
    let region = shared_data().join("region/naip_nd_m_4709963_se");
    let mut args = vec!["ingest".to_string(), "scene".to_string()];
    let mut files: Vec<String> = std::fs::read_dir(&region)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().to_string())
        .filter(|p| p.ends_with(".tif"))
        .collect();
    files.sort();
    args.extend(files);
    args.extend(["--dataset".into(), "region".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = iso.cli(&args);
    assert!(ok, "{out}");
    let parts = iso
        .store
        .list(&keys::manifest_prefix("region"))
        .await
        .unwrap();
    assert_eq!(parts.len(), 1, "one manifest part: {parts:?}");
    let rows = manifest::load(&iso.store, "region").await.unwrap();
    let raw = iso.store.get(&parts[0].key).await.unwrap();
    let raw_rows = manifest::from_csv(&raw).unwrap().len();
    assert_eq!(raw_rows, 3200, "every tile of ten dates once in the part");
    assert_eq!(rows.len(), 3200);
    let ingest_segments = ingest
        .log_text()
        .matches("job continues in its next segment")
        .count();
    assert!(
        ingest_segments >= 1,
        "the ingest went on in segments: {ingest_segments}"
    );
    // the part is named by the ingest job
    let job_id = parts[0]
        .key
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_suffix(".csv"))
        .unwrap();
    let progress: serde_json::Value = iso
        .store
        .get_json(&keys::ingest_partial(job_id))
        .await
        .unwrap();
    assert_eq!(progress["finished"], true, "the job is marked finished");
    assert_eq!(progress["rows_csv"], "", "its progress dropped");

    // a fine-tune of several minutes on a small labelled sample
    let dir = tempfile::tempdir().unwrap();
    rsscn7_sample(
        dir.path(),
        &["forest", "industry", "river_lake"],
        &[("train", 60), ("val", 8)],
    );
    let (ok, out) = iso.cli(&[
        "ingest",
        "labelled",
        dir.path().to_str().unwrap(),
        "--dataset",
        "tiny",
        "--store-only",
    ]);
    assert!(ok, "{out}");
    let started = Instant::now();
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "long",
        "--dataset",
        "tiny",
        "--method",
        "finetune",
        "--epochs",
        "12",
        "--batch",
        "8",
        "--no-wait",
    ]);
    assert!(ok, "{out}");
    eventually(Duration::from_secs(1200), "fine-tune finished", || async {
        iso.store
            .exists(&runs::key("long", runs::SUMMARY))
            .await
            .ok()?
            .then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(
        took > CONSUMER_TIMEOUT,
        "the job must outlast the consumer timeout to test anything: {took:?}"
    );
    let metrics: RunMetrics = iso
        .store
        .get_json(&runs::key("long", runs::METRICS))
        .await
        .unwrap();
    let epochs: Vec<u32> = metrics.history.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, (1..=12).collect::<Vec<_>>(), "every epoch once");
    let (ok, out) = iso.cli(&["runs", "--json"]);
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "one run record: {out}");
    // let a stale copy, if any were left, come round and be dropped
    tokio::time::sleep(Duration::from_secs(3)).await;
    for q in [topology::TRAIN_JOBS, topology::INGEST_JOBS] {
        assert_eq!(iso.ready(q).await, 0, "{q}: no job copy left");
        assert_eq!(iso.ready(&topology::dlq(q)).await, 0, "{q}: nothing dead");
    }
    let log = train.log_text();
    let segments = log.matches("job continues in its next segment").count();
    assert!(
        segments as u64 >= took.as_secs() / 40,
        "a {took:?} fine-tune went on in {segments} segments"
    );
    for (name, p) in [("train", &train), ("ingest", &ingest)] {
        let log = p.log_text();
        assert!(
            !log.contains("broker connection lost"),
            "{name}: a delivery overran the consumer timeout: {log}"
        );
    }
    aerial_tests::record_reliability(
        "long-jobs",
        serde_json::json!({
            "kind": "long-job",
            "consumer_timeout_s": CONSUMER_TIMEOUT.as_secs(),
            "finetune_s": took.as_secs(),
            "finetune_deliveries": segments + 1,
            "epochs": epochs.len(),
            "run_records": listed.as_array().unwrap().len(),
            "ingest_deliveries": ingest_segments + 1,
            "ingest_tiles": raw_rows,
        }),
    );
    train.terminate();
    ingest.terminate();
}
