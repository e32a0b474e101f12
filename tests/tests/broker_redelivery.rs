//! 1,000 messages through the shared broker client and consumer runtime: a consumer stopped
//! mid-way loses nothing; unacked messages come back, acked ones never do.

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
                },
            )
        })
        .collect();
    broker.publisher().publish_all(msgs).await.unwrap();
    assert_eq!(iso.ready(topology::SCORE_JOBS).await, 1000);

    let cfg = WorkerConfig {
        queue: topology::SCORE_JOBS,
        service: "test",
        batch_size: 16,
        batch_wait: Duration::from_millis(50),
        concurrency: 2,
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
