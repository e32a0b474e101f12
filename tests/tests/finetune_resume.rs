//! Fine-tuning survives its train service being killed: after `kill -9` mid-run, a new
//! train service resumes from the last per-epoch checkpoint (in one-epoch segments that
//! requeue the job) and the run ends with one record holding every epoch once. Then
//! `aerial evaluate` scores a labelled folder with the fine-tuned network.

use aerial_shared::runs::{self, Checkpoint, RunMetrics, RunSummary};
use aerial_tests::{eventually, rsscn7_sample, servers};
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_finetune_resumes_from_its_checkpoint() {
    let iso = servers().isolated("finetune").await;
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let models = models.to_str().unwrap();
    let train_env = [("AERIAL__MODELS__DIR", models)];
    let ingest = iso.spawn("aerial-ingest", &[]);
    let first = iso.spawn("aerial-train", &train_env);
    for p in [&ingest, &first] {
        p.wait_log("consuming", Duration::from_secs(30)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    rsscn7_sample(
        dir.path(),
        &["forest", "industry", "river_lake"],
        &[("train", 8), ("val", 4)],
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
    let (ok, out) = iso.cli(&[
        "train",
        "--name",
        "ft",
        "--dataset",
        "tiny",
        "--method",
        "finetune",
        "--epochs",
        "4",
        "--batch",
        "8",
        // its result is validated over the 8 test-time views, as `aerial evaluate` scores
        "--tta",
        "d4",
        // and at a coarser resolution, which evaluate applies too
        "--degrade-px",
        "64",
        "--no-wait",
    ]);
    assert!(ok, "{out}");

    // kill the service as soon as the first epoch is checkpointed
    eventually(Duration::from_secs(300), "first checkpoint", || async {
        let c: Checkpoint = iso
            .store
            .get_json(&runs::key("ft", runs::CHECKPOINT))
            .await
            .ok()?;
        (c.epochs_done >= 1).then_some(())
    })
    .await;
    first.kill9();
    assert!(
        !iso.store
            .exists(&runs::key("ft", runs::SUMMARY))
            .await
            .unwrap(),
        "killed before finishing"
    );

    // a new service, one epoch per delivery: the rest goes through requeued segments
    let second = iso.spawn(
        "aerial-train",
        &[
            ("AERIAL__MODELS__DIR", models),
            ("AERIAL__WORKER__SEGMENT_SECS", "1"),
        ],
    );
    let summary: RunSummary = eventually(Duration::from_secs(600), "run finished", || async {
        iso.store
            .get_json(&runs::key("ft", runs::SUMMARY))
            .await
            .ok()
    })
    .await;
    let log = second.log_text();
    assert!(log.contains("resuming fine-tune from checkpoint"), "{log}");
    assert!(log.contains("job continues in its next segment"), "{log}");
    let metrics: RunMetrics = iso
        .store
        .get_json(&runs::key("ft", runs::METRICS))
        .await
        .unwrap();
    let epochs: Vec<u32> = metrics.history.iter().map(|e| e.epoch).collect();
    let distinct: std::collections::BTreeSet<u32> = epochs.iter().copied().collect();
    let dlq = iso
        .drain(&aerial_shared::topology::dlq(
            aerial_shared::topology::TRAIN_JOBS,
        ))
        .await
        .len();
    let mut second = second;
    let alive = usize::from(second.alive());
    let segments = log.matches("job continues in its next segment").count();
    aerial_tests::record_reliability(
        "train-kill",
        serde_json::json!({
            "kind": "fault",
            "fault": "train killed with SIGKILL after its first epoch checkpoint (4-epoch fine-tune), a new one started",
            "what_happened": format!("the job was redelivered; the new service resumed from the checkpoint and finished the remaining epochs in {} deliveries of one epoch each (counts are epochs)", segments + 1),
            "input": 4,
            "output": distinct.len(),
            "duplicates": epochs.len() - distinct.len(),
            "redeliveries": log.matches("resuming fine-tune from checkpoint").count(),
            "dlq": dlq,
            "services_alive": format!("{alive}/1"),
        }),
    );
    assert_eq!(epochs, vec![1, 2, 3, 4], "every epoch once, in order");
    assert_eq!(dlq, 0);
    assert_eq!(alive, 1);
    assert_eq!(metrics.train_tiles, 24);
    assert_eq!(metrics.val_tiles, 12);
    assert!(metrics
        .history
        .iter()
        .all(|e| e.train_loss.is_finite() && e.samples_per_sec > 0.0));
    assert_eq!(
        summary.retraining,
        Some(aerial_shared::messages::Retraining::All)
    );
    let (ok, out) = iso.cli(&["runs", "--json"]);
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "one record: {out}");

    // the fine-tuned network scores a labelled folder through the CLI
    let (ok, out) = iso.cli(&[
        "evaluate",
        "--run",
        "ft",
        dir.path().join("val").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{out}");
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["total"], 12);
    let acc = e["accuracy"].as_f64().unwrap();
    assert!(
        (acc - summary.accuracy).abs() < 1e-9,
        "evaluate on the validation folder (8 views at 64 px, as the run's validation) gives the run's validation accuracy: {acc} vs {}",
        summary.accuracy
    );
    second.terminate();
}
