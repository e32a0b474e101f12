//! The real `aerial-ingest` binary: bad messages go to the DLQ with a reason and the service
//! keeps running; a job published by Python's pika is accepted; bad files are reported one by
//! one while good tiles arrive; SIGTERM exits 0.

use aerial_shared::{keys, status::JobStatus, topology};
use aerial_tests::{eventually, header_str, servers, shared_data, Isolated};
use std::path::Path;
use std::time::Duration;

async fn status(iso: &Isolated, job: &str) -> Option<JobStatus> {
    iso.store
        .get_json::<JobStatus>(&keys::job_status(job))
        .await
        .ok()
}

async fn publish_raw(iso: &Isolated, queue: &str, body: &[u8]) {
    iso.publish_raw(queue, body).await
}

fn rsscn7(rel: &str) -> Vec<u8> {
    std::fs::read(shared_data().join("rsscn7").join(rel)).expect("rsscn7 image")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_dead_lettered_with_reason_and_service_keeps_running() {
    let iso = servers().isolated("dlq").await;
    let mut svc = iso.spawn("aerial-ingest", &[]);
    svc.wait_log("consuming", Duration::from_secs(30)).await;
    publish_raw(&iso, topology::INGEST_JOBS, b"{this is not json").await;
    publish_raw(
        &iso,
        topology::INGEST_JOBS,
        br#"{"schema_version":99,"job_id":"x","dataset":"d"}"#,
    )
    .await;
    publish_raw(
        &iso,
        topology::INGEST_JOBS,
        br#"{"schema_version":1,"job_id":"x"}"#,
    )
    .await;
    let dlq = topology::dlq(topology::INGEST_JOBS);
    eventually(Duration::from_secs(30), "3 messages in the DLQ", || async {
        (iso.ready(&dlq).await == 3).then_some(())
    })
    .await;
    let dead = iso.drain(&dlq).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|(_, h)| header_str(h, topology::ERROR_HEADER).expect("reason header"))
        .collect();
    assert!(reasons[0].contains("malformed json"), "{reasons:?}");
    assert!(
        reasons[1].contains("unsupported schema_version 99"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("invalid ingest_job message"),
        "{reasons:?}"
    );
    assert_eq!(dead[0].0, b"{this is not json", "the original body is kept");
    assert_eq!(
        header_str(&dead[0].1, topology::ORIGIN_HEADER).as_deref(),
        Some(topology::INGEST_JOBS)
    );
    assert!(svc.alive(), "service must survive bad messages");

    // still consuming: a valid job after the bad ones is processed
    iso.store
        .put(
            "raw/ok/u1/train/field/a.jpg",
            rsscn7("train/field/b001.jpg"),
        )
        .await
        .unwrap();
    iso.store
        .put("raw/ok/u1/val/field/b.jpg", rsscn7("val/field/b002.jpg"))
        .await
        .unwrap();
    let job = aerial_shared::messages::IngestJob {
        job_id: "after-bad".into(),
        dataset: "ok".into(),
        source: aerial_shared::messages::IngestSource::Labelled {
            raw_prefix: "raw/ok/u1/".into(),
            val_frac: 0.2,
            seed: 1,
        },
        target: Default::default(),
        backbone: "mobilenet_v2".into(),
    };
    publish_raw(
        &iso,
        topology::INGEST_JOBS,
        &aerial_shared::messages::encode(&job),
    )
    .await;
    let st = eventually(Duration::from_secs(30), "valid job done", || async {
        status(&iso, "after-bad")
            .await
            .filter(|s| s.state != aerial_shared::status::JobState::Running)
    })
    .await;
    assert_eq!(st.new_tiles, 2);
    assert_eq!(svc.terminate(), Some(0), "SIGTERM exits cleanly");
    iso.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_published_with_python_pika_is_accepted() {
    let iso = servers().isolated("pika").await;
    let svc = iso.spawn("aerial-ingest", &[]);
    svc.wait_log("consuming", Duration::from_secs(30)).await;
    iso.store
        .put(
            "raw/pk/u1/train/forest/a.jpg",
            rsscn7("train/forest/e001.jpg"),
        )
        .await
        .unwrap();
    iso.store
        .put("raw/pk/u1/val/grass/b.jpg", rsscn7("val/grass/a003.jpg"))
        .await
        .unwrap();
    // the JSON a user writes by hand from the committed schema
    let body = r#"{"schema_version": 1, "job_id": "from-pika", "dataset": "pk",
                   "source": {"source": "labelled", "raw_prefix": "raw/pk/u1/", "val_frac": 0.2, "seed": 7},
                   "target": "featurize", "backbone": "mobilenet_v2"}"#;
    let uri = iso
        .env
        .iter()
        .find(|(k, _)| k == "AERIAL__AMQP__URI")
        .unwrap()
        .1
        .clone();
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/publish.py");
    let out = std::process::Command::new(&py)
        .args([
            script.to_str().unwrap(),
            &uri,
            topology::WORK_EXCHANGE,
            topology::INGEST_JOBS,
            body,
        ])
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "pika publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = eventually(Duration::from_secs(30), "pika job done", || async {
        status(&iso, "from-pika")
            .await
            .filter(|s| s.state != aerial_shared::status::JobState::Running)
    })
    .await;
    assert_eq!(st.state, aerial_shared::status::JobState::Done);
    assert_eq!(st.new_tiles, 2);
    assert_eq!(st.labels.get("forest"), Some(&1));
    assert_eq!(iso.ready(topology::FEATURIZE_TILES).await, 2);
    iso.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_reported_and_good_tiles_arrive() {
    let iso = servers().isolated("badfiles").await;
    let mut svc = iso.spawn("aerial-ingest", &[]);
    svc.wait_log("consuming", Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let put = |rel: &str, bytes: &[u8]| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    put("train/field/good1.jpg", &rsscn7("train/field/b001.jpg"));
    put("train/field/good2.jpg", &rsscn7("train/field/b004.jpg"));
    put("val/field/good3.jpg", &rsscn7("val/field/b002.jpg"));
    put("train/forest/good4.jpg", &rsscn7("train/forest/e001.jpg"));
    let jpg = rsscn7("train/forest/e002.jpg");
    put("train/forest/corrupt.jpg", &jpg[..jpg.len() / 3]);
    put("train/forest/empty.jpg", b"");
    put(
        "train/forest/notes.png",
        b"just some text, not a png at all",
    );
    put(
        "train/forest/bomb.png",
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bomb_30000x30000.png"))
            .unwrap(),
    );
    std::fs::create_dir_all(dir.path().join("train/empty_label")).unwrap();

    let (ok, out) = iso.cli(&[
        "ingest",
        "labelled",
        dir.path().to_str().unwrap(),
        "--dataset",
        "mixed",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("4 tiles (4 new, 0 already stored), 4 published, 5 bad"),
        "{out}"
    );
    for (item, reason) in [
        ("train/forest/corrupt.jpg", "corrupt or truncated"),
        ("train/forest/empty.jpg", "zero-byte file"),
        ("train/forest/notes.png", "not a recognised image format"),
        ("train/forest/bomb.png", "30000x30000 exceeds"),
        ("train/empty_label/", "label folder has no images"),
    ] {
        assert!(
            out.lines().any(|l| l.contains(item) && l.contains(reason)),
            "{item}: {reason} missing in\n{out}"
        );
    }
    assert_eq!(iso.ready(topology::FEATURIZE_TILES).await, 4);
    assert!(svc.alive());

    let (ok, out) = iso.cli(&[
        "ingest",
        "labelled",
        dir.path().to_str().unwrap(),
        "--dataset",
        "mixed",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("uploaded 0 new"), "{out}");
    assert!(out.contains("nothing new"), "{out}");
    assert_eq!(
        iso.ready(topology::FEATURIZE_TILES).await,
        4,
        "re-ingest publishes nothing again"
    );
    let manifest = aerial_shared::manifest::load(&iso.store, "mixed")
        .await
        .unwrap();
    assert_eq!(manifest.len(), 4);
    assert_eq!(manifest.iter().filter(|r| r.split == "val").count(), 1);
    iso.cleanup().await;
}
