//! The shared broker client and consumer runtime against a real RabbitMQ: 1,000 messages
//! through a consumer stopped mid-way lose nothing (unacked ones come back, acked ones never
//! do); a message that always fails or whose batch panics reaches its DLQ after exactly the
//! delivery limit while the consumer goes on; a job continued in segments keeps its id.

use aerial_shared::{
    messages::ScoreJob,
    topology,
    worker::{self, BatchCtx, BatchHandler, Outcome, WorkerConfig},
    Broker, Telemetry,
};
use aerial_tests::{eventually, servers};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Recorder {
    /// id -> (times acked, times seen redelivered)
    seen: Mutex<HashMap<String, (u32, u32)>>,
}

#[async_trait::async_trait]
impl BatchHandler for Recorder {
    type Msg = ScoreJob;
    async fn handle(&self, ctx: &BatchCtx, batch: Vec<ScoreJob>) -> Vec<Outcome> {
        // slow enough that the prefetch window fills with unacked deliveries
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut seen = self.seen.lock().unwrap();
        for (m, redelivered) in batch.iter().zip(&ctx.redelivered) {
            let e = seen.entry(m.job_id.clone()).or_default();
            e.0 += 1;
            e.1 += u32::from(*redelivered);
        }
        vec![Outcome::Ack; batch.len()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_lost_when_consumer_stops_mid_way() {
    let iso = servers().isolated("redeliver").await;
    let token = aerial_shared::shutdown::Token::new();
    let broker = Broker::connect_with_retry(&iso.settings.amqp, "test", &token)
        .await
        .unwrap();
    let msgs: Vec<_> = (0..1000)
        .map(|i| {
            aerial_shared::broker::Outgoing::work(
                topology::SCORE_JOBS,
                &ScoreJob {
                    job_id: format!("m{i:04}"),
                    run: "r".into(),
                    dataset: "d".into(),
                    smooth: false,
                    stride_m: None,
                },
            )
        })
        .collect();
    broker.publisher().publish_all(msgs).await.unwrap();
    assert_eq!(iso.ready(topology::SCORE_JOBS).await, 1000);

    let cfg = WorkerConfig {
        batch_size: 16,
        batch_wait: Duration::from_millis(50),
        concurrency: 2,
        ..WorkerConfig::from_settings(&iso.settings, "test", topology::SCORE_JOBS)
    };
    let first = Arc::new(Recorder::default());
    let stop = aerial_shared::shutdown::Token::new();
    let run = {
        let (s, c, h, t) = (
            iso.settings.clone(),
            cfg.clone(),
            first.clone(),
            stop.clone(),
        );
        tokio::spawn(async move { worker::run(&s, c, h, Telemetry::new("test"), t).await })
    };
    eventually(Duration::from_secs(30), "first consumer to ack 300", || {
        let n = first.seen.lock().unwrap().len();
        async move { (n >= 300).then_some(()) }
    })
    .await;
    stop.cancel();
    run.await.unwrap();
    let acked_first: HashMap<_, _> = first.seen.lock().unwrap().clone();
    assert!(
        acked_first.len() < 1000,
        "stopped too late to test anything"
    );

    let second = Arc::new(Recorder::default());
    let stop2 = aerial_shared::shutdown::Token::new();
    let run2 = {
        let (s, c, h, t) = (
            iso.settings.clone(),
            cfg.clone(),
            second.clone(),
            stop2.clone(),
        );
        tokio::spawn(async move { worker::run(&s, c, h, Telemetry::new("test"), t).await })
    };
    let want = 1000 - acked_first.len();
    eventually(
        Duration::from_secs(60),
        "second consumer to get the rest",
        || {
            let n = second.seen.lock().unwrap().len();
            async move { (n >= want).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop2.cancel();
    run2.await.unwrap();
    let acked_second = second.seen.lock().unwrap().clone();

    for id in acked_second.keys() {
        assert!(
            !acked_first.contains_key(id),
            "{id} was acked by the first consumer and seen again"
        );
    }
    let mut all: Vec<_> = acked_first
        .keys()
        .chain(acked_second.keys())
        .cloned()
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        1000,
        "every message processed exactly once across both consumers"
    );
    assert!(acked_first
        .values()
        .chain(acked_second.values())
        .all(|(n, _)| *n == 1));
    let redelivered: u32 = acked_second.values().map(|(_, r)| r).sum();
    assert!(
        redelivered > 0,
        "prefetched-but-unacked messages come back marked redelivered"
    );
    assert_eq!(iso.ready(topology::SCORE_JOBS).await, 0);
    broker.close().await;
    iso.cleanup().await;
}

fn job(id: &str) -> aerial_shared::broker::Outgoing {
    aerial_shared::broker::Outgoing::work(
        topology::SCORE_JOBS,
        &ScoreJob {
            job_id: id.into(),
            run: "r".into(),
            dataset: "d".into(),
            smooth: false,
            stride_m: None,
        },
    )
}

/// (delivery number, segment, message id) of one delivery.
type Seen = (u32, u32, Option<String>);

/// Records every delivery; "panic" panics, "retry" always fails transiently, "seg" continues
/// until its third segment, anything else is acked.
#[derive(Default)]
struct Poison {
    /// id -> (delivery number, segment, message id) of every delivery
    seen: Mutex<HashMap<String, Vec<Seen>>>,
}

#[async_trait::async_trait]
impl BatchHandler for Poison {
    type Msg = ScoreJob;
    async fn handle(&self, ctx: &BatchCtx, batch: Vec<ScoreJob>) -> Vec<Outcome> {
        let mut out = Vec::new();
        for (m, d) in batch.iter().zip(&ctx.deliveries) {
            self.seen
                .lock()
                .unwrap()
                .entry(m.job_id.clone())
                .or_default()
                .push((d.delivery, d.segment, d.message_id.clone()));
            out.push(match m.job_id.as_str() {
                "panic" => panic!("tensor shape mismatch in {}", m.job_id),
                "retry" => Outcome::Retry("s3 unreachable".into()),
                "seg" if d.segment < 3 => Outcome::Continue(format!("segment {}", d.segment)),
                _ => Outcome::Ack,
            });
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_reach_the_dlq_after_the_delivery_limit() {
    let iso = servers().isolated("poison").await;
    let token = aerial_shared::shutdown::Token::new();
    let broker = Broker::connect_with_retry(&iso.settings.amqp, "test", &token)
        .await
        .unwrap();
    let limit = iso.settings.amqp.delivery_limit;
    assert_eq!(limit, 5, "the default limit");
    let cfg = WorkerConfig {
        batch_size: 1,
        ..WorkerConfig::from_settings(&iso.settings, "test", topology::SCORE_JOBS)
    };
    let handler = Arc::new(Poison::default());
    let stop = aerial_shared::shutdown::Token::new();
    let run = {
        let (s, c, h, t) = (
            iso.settings.clone(),
            cfg.clone(),
            handler.clone(),
            stop.clone(),
        );
        tokio::spawn(async move { worker::run(&s, c, h, Telemetry::new("test"), t).await })
    };
    broker
        .publisher()
        .publish_all(vec![job("panic"), job("retry"), job("seg"), job("ok")])
        .await
        .unwrap();
    let dlq = topology::dlq(topology::SCORE_JOBS);
    eventually(
        Duration::from_secs(60),
        "both poison messages in the DLQ",
        || {
            let iso = &iso;
            let dlq = dlq.clone();
            async move { (iso.ready(&dlq).await >= 2).then_some(()) }
        },
    )
    .await;
    // a message published after the poison ones is still handled: the consumer is alive
    broker.publisher().publish(job("after")).await.unwrap();
    eventually(Duration::from_secs(30), "the later message handled", || {
        let n = handler.seen.lock().unwrap().contains_key("after");
        async move { n.then_some(()) }
    })
    .await;
    assert!(!run.is_finished(), "the consumer survived the panics");

    let dead = iso.drain(&dlq).await;
    assert_eq!(dead.len(), 2, "exactly the two poison messages");
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|(_, h)| aerial_tests::header_str(h, topology::ERROR_HEADER).unwrap_or_default())
        .collect();
    reasons.sort();
    assert!(
        reasons[0].starts_with("gave up after 5 deliveries")
            && reasons[0].contains("handler panicked: tensor shape mismatch in panic"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("gave up after 5 deliveries")
            && reasons[1].ends_with("s3 unreachable"),
        "{reasons:?}"
    );
    let seen = handler.seen.lock().unwrap().clone();
    for id in ["panic", "retry"] {
        let numbers: Vec<u32> = seen[id].iter().map(|d| d.0).collect();
        assert_eq!(
            numbers,
            (1..=limit).collect::<Vec<_>>(),
            "{id}: one handling per delivery, counted by the broker"
        );
    }
    // the continued job: four segments, one delivery each, one message id throughout
    let seg = &seen["seg"];
    assert_eq!(
        seg.iter().map(|d| d.1).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "{seg:?}"
    );
    assert!(
        seg.iter().all(|d| d.0 == 1),
        "each segment is a first delivery: {seg:?}"
    );
    let ids: std::collections::HashSet<_> = seg.iter().map(|d| d.2.clone()).collect();
    assert_eq!(ids.len(), 1, "one message id across segments: {seg:?}");
    assert!(ids.iter().all(Option::is_some));
    assert_eq!(seen["ok"].len(), 1);
    aerial_tests::record_reliability(
        "poison",
        serde_json::json!({
            "kind": "poison",
            "limit": limit,
            "cases": [
                {"item": "a batch whose handler panics", "deliveries": seen["panic"].len(), "reason": reasons[0]},
                {"item": "a message that always fails transiently (its store unreachable)", "deliveries": seen["retry"].len(), "reason": reasons[1]},
            ],
            "after": "a job published after them was handled; the consumer never stopped",
        }),
    );
    assert_eq!(iso.ready(topology::SCORE_JOBS).await, 0);
    stop.cancel();
    run.await.unwrap();
    broker.close().await;
    iso.cleanup().await;
}
