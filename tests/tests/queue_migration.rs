//! `aerial migrate-queues` against a real RabbitMQ: classic queues of an earlier version,
//! with messages waiting, become this version's quorum queues with every message kept
//! (body, headers, routing); a second run changes nothing.

use aerial_shared::{migrate, topology};
use aerial_tests::servers;
use lapin::{
    options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    BasicProperties, ExchangeKind,
};

/// The declarations of the version before quorum queues.
async fn old_topology(ch: &lapin::Channel) {
    for (x, kind) in [
        (topology::WORK_EXCHANGE, ExchangeKind::Direct),
        (topology::EVENTS_EXCHANGE, ExchangeKind::Topic),
    ] {
        ch.exchange_declare(
            x.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for (q, x, key) in [
        (
            topology::INGEST_JOBS,
            topology::WORK_EXCHANGE,
            topology::INGEST_JOBS,
        ),
        (topology::METRICS_EVENTS, topology::EVENTS_EXCHANGE, "#"),
    ] {
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(topology::DLX_EXCHANGE.into()),
        );
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        ch.queue_bind(
            q.into(),
            x.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_queues_become_quorum_queues_keeping_their_messages() {
    let iso = servers().isolated("migrate").await;
    let conn = iso.connect().await;
    let ch = conn.create_channel().await.unwrap();
    old_topology(&ch).await;
    let publish = |x: &'static str, key: String, body: String, n: i64| {
        let ch = ch.clone();
        async move {
            let mut h = FieldTable::default();
            h.insert("x-test".into(), AMQPValue::LongLongInt(n));
            ch.basic_publish(
                x.into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default()
                    .with_headers(h)
                    .with_message_id(format!("m{n}").into()),
            )
            .await
            .unwrap();
        }
    };
    for i in 0..3 {
        publish(
            topology::WORK_EXCHANGE,
            topology::INGEST_JOBS.into(),
            format!("job {i}"),
            i,
        )
        .await;
    }
    for i in 0..2 {
        publish(
            topology::EVENTS_EXCHANGE,
            "ingest.job_progress".into(),
            format!("event {i}"),
            10 + i,
        )
        .await;
    }
    assert_eq!(iso.ready(topology::INGEST_JOBS).await, 3);
    let _ = conn.close(200, "bye".into()).await;

    let report = migrate::run(&iso.settings.amqp).await.expect("migration");
    let of = |q: &str| report.iter().find(|m| m.queue == q).unwrap().clone();
    assert!(of(topology::INGEST_JOBS).redeclared);
    assert_eq!(of(topology::INGEST_JOBS).messages, 3);
    assert!(of(topology::METRICS_EVENTS).redeclared);
    assert_eq!(of(topology::METRICS_EVENTS).messages, 2);
    // queues that did not exist were simply declared: nothing to move
    assert!(!of(topology::TRAIN_JOBS).redeclared);
    assert_eq!(report.len(), topology::consumed_queues().count());

    // the services' own declaration (quorum arguments) now succeeds on every queue
    let conn = iso.connect().await;
    let ch = conn.create_channel().await.unwrap();
    topology::declare(
        &ch,
        topology::QueueLimits::from_settings(&iso.settings.amqp),
    )
    .await
    .expect("declaring as the services do");
    let _ = conn.close(200, "bye".into()).await;

    let jobs = iso.drain(topology::INGEST_JOBS).await;
    let mut bodies: Vec<String> = jobs
        .iter()
        .map(|(b, _)| String::from_utf8(b.clone()).unwrap())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["job 0", "job 1", "job 2"]);
    for (_, h) in &jobs {
        assert!(h.inner().contains_key("x-test"), "headers kept: {h:?}");
        assert!(!h.inner().keys().any(|k| k.as_str().contains("migrated")));
    }
    let events = iso.drain(topology::METRICS_EVENTS).await;
    assert_eq!(events.len(), 2, "events routed back by their original key");

    let again = migrate::run(&iso.settings.amqp).await.expect("second run");
    assert!(
        again.iter().all(|m| !m.redeclared && m.messages == 0),
        "{again:?}"
    );
    iso.cleanup().await;
}
