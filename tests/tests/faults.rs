//! Faults a production queue system meets, injected into a running score job on a server pair
//! of the test's own: RabbitMQ restarted, the S3 server stopped for 30 s, featurize killed
//! with SIGKILL mid-batch. After each, the services recover by themselves (reconnect,
//! resubscribe, resume), the job completes, every tile is in the output exactly once, and no
//! dead-letter queue holds anything. Counts go to `target/reliability/` for RELIABILITY.md.
//! One scenario at a time: each runs the whole pipeline on this 2-core machine.

use aerial_shared::{
    keys, manifest, predictions,
    status::{JobState, JobStatus},
    topology,
};
use aerial_tests::{
    eventually, record_reliability, rsscn7_sample, shared_data, Isolated, PrivateServers, Proc,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn models() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/models")
        .to_str()
        .unwrap()
        .to_string()
}

/// Ingest, featurize and train a small logistic model, ingest the region at two dates (640
/// tiles), and start scoring it; returns the services and the tile ids expected.
async fn start_score_job(iso: &Isolated, job: &str) -> (Vec<Proc>, BTreeSet<String>) {
    let m = models();
    let score_env = [
        ("AERIAL__MODELS__DIR", m.as_str()),
        ("AERIAL__WORKER__BATCH_SIZE", "8"),
        ("AERIAL__WORKER__CONCURRENCY", "1"),
        ("AERIAL__WORKER__THREADS", "1"),
    ];
    let procs = vec![
        iso.spawn("aerial-ingest", &[]),
        iso.spawn("aerial-featurize", &[("AERIAL__MODELS__DIR", m.as_str())]),
        iso.spawn("aerial-train", &[]),
        iso.spawn("aerial-score", &score_env),
        iso.spawn("aerial-score", &score_env),
    ];
    for p in &procs {
        p.wait_log("consuming", Duration::from_secs(60)).await;
    }
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
    let region = shared_data().join("region/naip_nd_m_4709963_se");
    let (ok, out) = iso.cli(&[
        "ingest",
        "scene",
        region
            .join("m_4709963_se_14_1_20090818.tif")
            .to_str()
            .unwrap(),
        region
            .join("m_4709963_se_14_1_20200831.tif")
            .to_str()
            .unwrap(),
        "--dataset",
        "region",
    ]);
    assert!(ok, "{out}");
    let rows = manifest::load(&iso.store, "region").await.unwrap();
    let ids: BTreeSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 640);
    let (ok, out) = iso.cli(&[
        "score",
        "--run",
        "m",
        "--dataset",
        "region",
        "--name",
        job,
        "--no-wait",
    ]);
    assert!(ok, "{out}");
    eventually(Duration::from_secs(180), "first predictions", || async {
        let n = iso
            .store
            .list(&keys::predictions_prefix(job))
            .await
            .ok()?
            .len();
        (n >= 2).then_some(())
    })
    .await;
    (procs, ids)
}

/// The job's progress at the moment of a fault: it must be mid-job to test anything.
async fn at_fault(iso: &Isolated, job: &str) -> (u64, u64) {
    let st: JobStatus = iso.store.get_json(&keys::job_status(job)).await.unwrap();
    let written = iso
        .store
        .list(&keys::predictions_prefix(job))
        .await
        .unwrap()
        .len();
    assert!(
        written > 0,
        "no prediction written yet: the fault would hit before the job"
    );
    assert!(
        st.state != JobState::Done,
        "the job finished before the fault: nothing was tested"
    );
    (written as u64, st.total)
}

/// Rows and distinct tile ids in every feature shard under `prefix` (a tile featurized into
/// two shards counts twice in the rows).
async fn shard_rows(iso: &Isolated, prefix: &str) -> (usize, BTreeSet<String>) {
    let mut rows = 0;
    let mut ids = BTreeSet::new();
    for o in iso.store.list(prefix).await.unwrap_or_default() {
        let Ok(bytes) = iso.store.get(&o.key).await else {
            continue;
        };
        let s = aerial_shared::shards::decode(&bytes).expect("a readable shard");
        rows += s.tile_ids.len();
        ids.extend(s.tile_ids);
    }
    (rows, ids)
}

/// Messages left in every dead-letter queue (drained).
async fn dlq_total(iso: &Isolated) -> usize {
    let mut n = 0;
    for q in topology::WORK_QUEUES {
        n += iso.drain(&topology::dlq(q)).await.len();
    }
    n
}

/// How many of the services are still running.
fn alive_count(procs: &mut [Proc]) -> usize {
    procs.iter_mut().map(|p| p.alive()).filter(|&a| a).count()
}

/// Waits for the job, then checks and records: every tile once (counted in the raw batch
/// objects, where a tile scored twice would show), redeliveries seen, DLQs empty, services
/// alive.
#[allow(clippy::too_many_arguments)]
async fn finish_and_count(
    iso: &Isolated,
    job: &str,
    expected: &BTreeSet<String>,
    procs: &mut [Proc],
    at_fault: (u64, u64),
    scenario: &str,
    fault: &str,
    recovery: &str,
) {
    let st: JobStatus = eventually(
        Duration::from_secs(900),
        "job done after the fault",
        || async {
            let st: JobStatus = iso.store.get_json(&keys::job_status(job)).await.ok()?;
            (st.state == JobState::Done).then_some(st)
        },
    )
    .await;
    let table = iso
        .store
        .get(&keys::job_output(job, keys::OUTPUT_TABLE))
        .await
        .unwrap();
    let table = predictions::from_csv(&table).unwrap();
    let table_ids: BTreeSet<String> = table.iter().map(|r| r.tile_id.clone()).collect();
    let (raw_rows, ids) = iso.raw_predictions(job).await;
    let duplicates = raw_rows - ids.len();
    let dlq = dlq_total(iso).await;
    let alive = alive_count(procs);
    let logs: String = procs.iter().map(Proc::log_text).collect();
    let requeues = logs
        .matches("requeueing message after transient failure")
        .count();
    let reconnects = logs.matches("broker connection lost; reconnecting").count();
    let redelivered = aerial_tests::redelivered_in(&logs);
    let recovery = format!(
        "{recovery} (fault at {} of {} batch objects written; logs: {requeues} requeues after transient failures, {reconnects} reconnects)",
        at_fault.0, at_fault.1.div_ceil(8)
    );
    record_reliability(
        scenario,
        serde_json::json!({
            "kind": "fault",
            "fault": fault,
            "what_happened": recovery,
            "input": expected.len(),
            "output": ids.len(),
            "duplicates": duplicates,
            "redeliveries": redelivered,
            "dlq": dlq,
            "services_alive": format!("{alive}/{}", procs.len()),
        }),
    );
    assert_eq!(st.done, expected.len() as u64);
    assert_eq!(st.failed, 0);
    assert_eq!(&ids, expected, "every tile in the raw batch objects");
    assert_eq!(&table_ids, expected, "every tile in the table");
    assert_eq!(
        table.len(),
        expected.len(),
        "the table holds each tile once"
    );
    assert_eq!(duplicates, 0, "a tile was scored into two batch objects");
    assert!(
        requeues + reconnects > 0,
        "the fault caused no retry or reconnect: it did not hit the job"
    );
    assert!(
        redelivered > 0,
        "no service received a message again: the fault did not hit the job"
    );
    assert_eq!(dlq, 0, "nothing here was bad input");
    assert_eq!(alive, procs.len(), "a service died instead of recovering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restart_mid_job_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = PrivateServers::start();
    let iso = srv.servers.isolated("broker-restart").await;
    let (mut procs, ids) = start_score_job(&iso, "job").await;
    let at = at_fault(&iso, "job").await;
    srv.stop_rabbitmq();
    tokio::time::sleep(Duration::from_secs(5)).await;
    srv.start_stopped();
    for p in &procs {
        p.wait_log("broker connection lost", Duration::from_secs(60))
            .await;
    }
    finish_and_count(
        &iso,
        "job",
        &ids,
        &mut procs,
        at,
        "rabbitmq-restart",
        "RabbitMQ stopped (SIGTERM) mid-job, started again 5 s later",
        "every service logged the lost connection, reconnected with backoff and resubscribed; unacked deliveries were redelivered",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_of_30s_mid_job_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = PrivateServers::start();
    let iso = srv.servers.isolated("s3-outage").await;
    let (mut procs, ids) = start_score_job(&iso, "job").await;
    let at = at_fault(&iso, "job").await;
    let down = Instant::now();
    srv.stop_s3();
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    let outage = down.elapsed().as_secs();
    srv.start_stopped();
    finish_and_count(
        &iso,
        "job",
        &ids,
        &mut procs,
        at,
        "s3-outage",
        &format!("S3 server stopped mid-job for {outage} s, then started again"),
        "batches whose reads or writes failed were requeued (transient) and retried after the server came back; nothing was dead-lettered",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn featurize_killed_mid_batch_every_tile_featurized_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = PrivateServers::start();
    let iso = srv.servers.isolated("featurize-kill").await;
    let m = models();
    let fz = [
        ("AERIAL__MODELS__DIR", m.as_str()),
        ("AERIAL__WORKER__BATCH_SIZE", "8"),
    ];
    let ingest = iso.spawn("aerial-ingest", &[]);
    let victim = iso.spawn("aerial-featurize", &fz);
    ingest.wait_log("consuming", Duration::from_secs(60)).await;
    victim.wait_log("consuming", Duration::from_secs(60)).await;
    let dir = tempfile::tempdir().unwrap();
    rsscn7_sample(
        dir.path(),
        &["field", "forest", "resident", "parking"],
        &[("train", 20), ("val", 5)],
    );
    let (ok, out) = iso.cli(&[
        "ingest",
        "labelled",
        dir.path().to_str().unwrap(),
        "--dataset",
        "d",
        "--no-wait",
    ]);
    assert!(ok, "{out}");
    let prefix = keys::feature_shards_prefix("d", "mobilenet_v2");
    eventually(Duration::from_secs(180), "first feature shard", || async {
        (!iso.store.list(&prefix).await.ok()?.is_empty()).then_some(())
    })
    .await;
    let done_at_kill = shard_rows(&iso, &prefix).await.1.len();
    victim.kill9();
    let survivor = iso.spawn("aerial-featurize", &fz);
    let expected: BTreeSet<String> = eventually(Duration::from_secs(120), "manifest", || async {
        let rows = manifest::load(&iso.store, "d").await.ok()?;
        (rows.len() == 100).then(|| rows.into_iter().map(|r| r.id).collect())
    })
    .await;
    let (rows, ids) = eventually(Duration::from_secs(600), "all tiles featurized", || async {
        let (rows, ids) = shard_rows(&iso, &prefix).await;
        (ids.len() == expected.len()).then_some((rows, ids))
    })
    .await;
    let dlq = dlq_total(&iso).await;
    let redelivered = aerial_tests::redelivered_in(&survivor.log_text());
    let mut procs = [ingest, survivor];
    let alive = alive_count(&mut procs);
    record_reliability(
        "featurize-kill",
        serde_json::json!({
            "kind": "fault",
            "fault": "featurize killed with SIGKILL after its first shard, a new replica started",
            "what_happened": format!("the killed replica's unacked batches were redelivered to the new one; tiles whose shard was already durable were found in the shards and skipped (fault at {done_at_kill} of {} tiles featurized)", expected.len()),
            "input": expected.len(),
            "output": ids.len(),
            "duplicates": rows - ids.len(),
            "redeliveries": redelivered,
            "dlq": dlq,
            "services_alive": format!("{alive}/2"),
        }),
    );
    assert!(
        done_at_kill > 0 && done_at_kill < expected.len(),
        "the kill did not hit mid-job: {done_at_kill} of {} tiles featurized",
        expected.len()
    );
    assert!(
        redelivered > 0,
        "the new replica received no redelivered tile: the kill held none"
    );
    assert_eq!(ids, expected);
    assert_eq!(rows, ids.len(), "a tile was featurized twice");
    assert_eq!(dlq, 0);
    assert_eq!(alive, 2);
}

/// The county-sized load test (`make reliability` only: a few minutes here, as the county repeats
/// the region's images and their features come from the content cache, so it loads the broker,
/// the store and the coordinator rather than the CNN): 60,800
/// tiles through 2 score replicas with a deliberately small prefetch (batch 8, one batch in
/// flight: 16 unacked at most per consumer) and a RabbitMQ restart half-way. At the end no
/// message is ready or unacked anywhere, every tile is in the output once, and the replicas'
/// memory stayed bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "county-sized: run by make reliability"]
async fn load_60k_tiles_small_prefetch_broker_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let srv = PrivateServers::start();
    let iso = srv.servers.isolated("load").await;
    // the 2-date region (640 tiles) repeated 95 times = 60,800 tiles, the reference county's size
    let (mut procs, _) = start_score_job(&iso, "warmup").await;
    let out = std::process::Command::new(aerial_tests::bin("repeat_dataset"))
        .envs(iso.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["region", "county", "95"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: BTreeSet<String> = manifest::load(&iso.store, "county")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(expected.len(), 60_800);
    eventually(Duration::from_secs(600), "warm-up job done", || async {
        let st: JobStatus = iso.store.get_json(&keys::job_status("warmup")).await.ok()?;
        (st.state == JobState::Done).then_some(())
    })
    .await;
    let started = Instant::now();
    let (ok, out) = iso.cli(&[
        "score",
        "--run",
        "m",
        "--dataset",
        "county",
        "--name",
        "county",
        "--no-wait",
    ]);
    assert!(ok, "{out}");
    let replicas = [3usize, 4];
    let rss = |procs: &[Proc]| -> Vec<f64> {
        replicas
            .iter()
            .map(|&i| procs[i].rss_mib().unwrap_or(f64::NAN))
            .collect()
    };
    eventually(
        Duration::from_secs(300),
        "first county predictions",
        || async {
            let n = iso
                .store
                .list(&keys::predictions_prefix("county"))
                .await
                .ok()?
                .len();
            (n >= 4).then_some(())
        },
    )
    .await;
    let rss_start = rss(&procs);
    let mut rss_peak = rss_start.clone();
    // half-way: restart the broker
    loop {
        let st: Option<JobStatus> = iso.store.get_json(&keys::job_status("county")).await.ok();
        if st.is_some_and(|s| s.done >= 30_400) {
            break;
        }
        for (p, now) in rss_peak.iter_mut().zip(rss(&procs)) {
            *p = p.max(now);
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "half-way not reached in an hour"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let at_restart: JobStatus = iso
        .store
        .get_json(&keys::job_status("county"))
        .await
        .unwrap();
    assert_ne!(
        at_restart.state,
        JobState::Done,
        "the restart came too late"
    );
    srv.stop_rabbitmq();
    tokio::time::sleep(Duration::from_secs(5)).await;
    srv.start_stopped();
    loop {
        let st: Option<JobStatus> = iso.store.get_json(&keys::job_status("county")).await.ok();
        if st.is_some_and(|s| s.state == JobState::Done) {
            break;
        }
        for (p, now) in rss_peak.iter_mut().zip(rss(&procs)) {
            *p = p.max(now);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5400),
            "job not done in 90 min"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let secs = started.elapsed().as_secs();
    let rss_end = rss(&procs);
    // nothing ready or unacked in any work queue or DLQ (the management API refreshes every
    // few seconds); metrics.events only fills, as no metrics service runs here, but nothing
    // may be left unacked on it either
    let stuck = eventually(Duration::from_secs(60), "all queues empty", || async {
        let counts = iso.queue_counts().await;
        counts
            .iter()
            .all(|(q, r, u)| *u == 0 && (*r == 0 || q == topology::METRICS_EVENTS))
            .then_some(counts.len())
    })
    .await;
    let table = iso
        .store
        .get(&keys::job_output("county", keys::OUTPUT_TABLE))
        .await
        .unwrap();
    let table = predictions::from_csv(&table).unwrap();
    // counted in the raw batch objects, where a tile scored twice would show
    let (raw_rows, ids) = iso.raw_predictions("county").await;
    let duplicates = raw_rows - ids.len();
    let dlq = dlq_total(&iso).await;
    let alive = alive_count(&mut procs);
    let logs: String = procs.iter().map(Proc::log_text).collect();
    let redelivered = aerial_tests::redelivered_in(&logs);
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    record_reliability(
        "load-60k",
        serde_json::json!({
            "kind": "load",
            "fault": "60,800-tile score job (the region repeated 95 times: features from the content cache), 2 replicas, batch 8 and 1 batch in flight (prefetch 16), RabbitMQ restarted once 30,400 were scored",
            "what_happened": format!(
                "done in {secs} s ({:.1} tiles/s); restart at {} of {} tiles scored; at the end 0 unacked in all {stuck} queues and 0 ready in every work queue and DLQ; replica RSS MiB start {} → end {}, peak {}",
                60_800.0 / secs as f64, at_restart.done, at_restart.total, fmt(&rss_start), fmt(&rss_end), fmt(&rss_peak)
            ),
            "input": expected.len(),
            "output": ids.len(),
            "duplicates": duplicates,
            "redeliveries": redelivered,
            "dlq": dlq,
            "services_alive": format!("{alive}/{}", procs.len()),
        }),
    );
    assert_eq!(ids, expected, "every tile in the raw batch objects");
    let table_ids: BTreeSet<String> = table.iter().map(|r| r.tile_id.clone()).collect();
    assert_eq!(table_ids, expected, "every tile in the table");
    assert_eq!(
        table.len(),
        expected.len(),
        "the table holds each tile once"
    );
    assert_eq!(duplicates, 0, "a tile was scored into two batch objects");
    assert!(redelivered > 0, "the restart redelivered nothing");
    assert_eq!(dlq, 0);
    assert_eq!(alive, procs.len());
    for (s, p) in rss_start.iter().zip(&rss_peak) {
        assert!(
            *p < s * 2.0 + 512.0,
            "replica memory grew from {s:.0} to {p:.0} MiB"
        );
    }
}
