//! The consumer runtime shared by every service: consume a queue with a prefetch window,
//! gather deliveries into batches, dead-letter undecodable ones with a reason, hand the rest
//! to a [`BatchHandler`], and ack each message only after the handler says its output is
//! durable. Redelivery is bounded: a message retried `delivery_limit` times, or whose batch
//! panicked that often, goes to its DLQ with the last error. Jobs longer than a segment
//! hand themselves on ([`Outcome::Continue`]) before the broker's consumer timeout.
//! Reconnects with backoff; on shutdown it stops consuming, finishes in-flight batches and
//! acks them.

use crate::broker::{Broker, Publisher};
use crate::config::Settings;
use crate::messages::{decode, Message};
use crate::telemetry::Telemetry;
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    },
    types::FieldTable,
};
use std::sync::{atomic::Ordering, Arc};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What to do with one message after its batch ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Output is durable: ack.
    Ack,
    /// Bad input: copy to the DLQ with this reason, then ack.
    Dead(String),
    /// Transient failure: requeue for another try (up to the delivery limit).
    Retry(String),
    /// The handler saved its progress and the job goes on in a new delivery: the message is
    /// published again as the next segment (same message id), then this delivery is acked.
    Continue(String),
}

impl Outcome {
    /// A store failure's outcome: dead at once when no retry can help (an unreadable
    /// manifest or predictions object, an invalid key), otherwise retried.
    pub fn store_failure(what: &str, e: crate::store::StoreError) -> Self {
        if e.is_permanent() {
            Outcome::Dead(format!("{what}: {e}"))
        } else {
            Outcome::Retry(format!("{what}: {e}"))
        }
    }
}

/// What the broker says about one delivery.
#[derive(Debug, Clone, Default)]
pub struct DeliveryInfo {
    /// Delivered before (requeued or its consumer went away).
    pub redelivered: bool,
    /// When it was published (Unix seconds, from its AMQP timestamp), if stamped.
    pub published: Option<u64>,
    /// Its AMQP message id: the same for every segment and redelivery of one job.
    pub message_id: Option<String>,
    /// Which segment of its job this is (0 for the first).
    pub segment: u32,
    /// When the job's first segment was published (Unix seconds), if stamped.
    pub first_published: Option<u64>,
    /// The how-many-th delivery this is (1 for the first), from the quorum queue's count.
    pub delivery: u32,
    /// The last delivery the limit allows: a `Retry` now becomes a dead letter, so a handler
    /// records the failure where users look (job status, run error, refused tile).
    pub last_try: bool,
}

/// Context a handler gets with each batch.
pub struct BatchCtx {
    /// Confirm-mode publisher of the current connection.
    pub publisher: Publisher,
    /// Service name, for events.
    pub service: &'static str,
    /// Whether each message of the batch was delivered before.
    pub redelivered: Vec<bool>,
    /// When each message was published (Unix seconds, from its AMQP timestamp), if stamped.
    pub published: Vec<Option<u64>>,
    /// Everything the broker says about each message.
    pub deliveries: Vec<DeliveryInfo>,
    /// When a job should save its progress and return [`Outcome::Continue`].
    pub deadline: tokio::time::Instant,
    /// Counts broker sessions of this consumer: a handler that caches what it consumed
    /// drops the cache when this changes (another consumer may have taken over meanwhile).
    pub session: u64,
}

/// A service's work: turn a batch of decoded messages into one outcome per message.
#[async_trait::async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// Message type of the consumed queue.
    type Msg: Message + Clone;
    /// Processes `batch`; returns exactly one outcome per message, in order.
    async fn handle(&self, ctx: &BatchCtx, batch: Vec<Self::Msg>) -> Vec<Outcome>;
}

/// Runs `f` once per group of messages sharing `key` (e.g. one dataset and backbone) and
/// puts each returned `(index, outcome)` back at its message's place in the batch; a message
/// `f` leaves out is requeued.
pub async fn by_group<M, K, F, Fut>(batch: Vec<M>, key: impl Fn(&M) -> K, mut f: F) -> Vec<Outcome>
where
    K: Ord,
    F: FnMut(K, Vec<(usize, M)>) -> Fut,
    Fut: std::future::Future<Output = Vec<(usize, Outcome)>>,
{
    let n = batch.len();
    let mut groups: std::collections::BTreeMap<K, Vec<(usize, M)>> = Default::default();
    for (i, m) in batch.into_iter().enumerate() {
        groups.entry(key(&m)).or_default().push((i, m));
    }
    let mut outcomes = vec![Outcome::Retry("not processed".into()); n];
    for (k, members) in groups {
        for (i, o) in f(k, members).await {
            outcomes[i] = o;
        }
    }
    outcomes
}

/// Consumer runtime settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queue to consume.
    pub queue: &'static str,
    /// Service name (connection name, events).
    pub service: &'static str,
    /// Messages per batch.
    pub batch_size: usize,
    /// Flush a partial batch after this long.
    pub batch_wait: Duration,
    /// Batches processed at once.
    pub concurrency: usize,
    /// Deliveries before a message that keeps failing goes to its DLQ.
    pub delivery_limit: u32,
    /// Longest a job holds one delivery before it continues in the next.
    pub segment: Duration,
    /// `/healthz` fails after deliveries are held this long without a settle.
    pub stall: Duration,
    /// A job queue: one delivery at a time and none waiting in the prefetch window, whose
    /// consumer timeout would otherwise run while the job before it works.
    pub one_at_a_time: bool,
}

impl WorkerConfig {
    /// From the `[worker]` settings.
    pub fn from_settings(s: &Settings, service: &'static str, queue: &'static str) -> Self {
        Self {
            queue,
            service,
            batch_size: s.worker.batch_size.max(1),
            batch_wait: Duration::from_millis(s.worker.batch_wait_ms),
            concurrency: s.worker.concurrency.max(1),
            delivery_limit: s.amqp.delivery_limit.max(1),
            segment: Duration::from_secs_f64(s.worker.segment_secs.max(0.1)),
            stall: Duration::from_secs(s.worker.stall_secs),
            one_at_a_time: false,
        }
    }

    /// A job queue's consumer: one job at a time, nothing prefetched behind it.
    pub fn jobs(s: &Settings, service: &'static str, queue: &'static str) -> Self {
        Self {
            batch_size: 1,
            concurrency: 1,
            one_at_a_time: true,
            ..Self::from_settings(s, service, queue)
        }
    }

    /// Broker prefetch: enough unacked deliveries to fill every in-flight batch plus the
    /// next; for a job queue exactly the one being worked on.
    fn prefetch(&self) -> u16 {
        let extra = if self.one_at_a_time { 0 } else { 1 };
        (self.batch_size * (self.concurrency + extra)).min(u16::MAX as usize) as u16
    }
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// Runs the consumer until `shutdown` is cancelled, reconnecting whenever the broker goes away.
pub async fn run<H: BatchHandler>(
    settings: &Settings,
    cfg: WorkerConfig,
    handler: Arc<H>,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) {
    // zero-valued series from the start, so rate() and alert rules see them before any event
    let m = &telemetry.worker;
    for c in [&m.consumed, &m.acked, &m.requeued] {
        c.with_label_values(&[cfg.queue]);
    }
    m.in_flight.with_label_values(&[cfg.queue]);
    telemetry.liveness.set_limit(cfg.stall);
    for kind in ["broker", "transient", "bad_input", "gave_up", "panic"] {
        m.errors.with_label_values(&[kind]);
    }
    let mut generation = 0u64;
    loop {
        generation += 1;
        let broker = match Broker::connect_with_retry(&settings.amqp, cfg.service, &shutdown).await
        {
            Ok(b) => b,
            Err(crate::broker::BrokerError::Cancelled) => return,
            Err(e) => {
                tracing::error!(error = %e, "broker setup failed; retrying");
                telemetry.worker.errors.with_label_values(&["broker"]).inc();
                // a queue to migrate waits for the operator: no need to hammer the broker
                let pause = if matches!(e, crate::broker::BrokerError::Topology(_)) {
                    10
                } else {
                    2
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(pause)) => continue,
                }
            }
        };
        tracing::info!(
            queue = cfg.queue,
            prefetch = cfg.prefetch(),
            batch = cfg.batch_size,
            "consuming"
        );
        let end = session(&broker, &cfg, &handler, &telemetry, &shutdown, generation).await;
        telemetry.ready.store(false, Ordering::Relaxed);
        match end {
            SessionEnd::Shutdown => {
                broker.close().await;
                tracing::info!(queue = cfg.queue, "stopped consuming; in-flight work acked");
                return;
            }
            SessionEnd::Lost(why) => {
                telemetry
                    .worker
                    .errors
                    .with_label_values(&["connection_lost"])
                    .inc();
                tracing::warn!(reason = %why, "broker connection lost; reconnecting");
                broker.close().await;
            }
        }
    }
}

async fn session<H: BatchHandler>(
    broker: &Broker,
    cfg: &WorkerConfig,
    handler: &Arc<H>,
    telemetry: &Telemetry,
    shutdown: &CancellationToken,
    generation: u64,
) -> SessionEnd {
    let setup = async {
        let ch = broker.channel().await?;
        ch.basic_qos(cfg.prefetch(), BasicQosOptions::default())
            .await?;
        let consumer = ch
            .basic_consume(
                cfg.queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, crate::broker::BrokerError>((ch, consumer))
    };
    let (channel, mut consumer) = match setup.await {
        Ok(x) => x,
        Err(e) => return SessionEnd::Lost(e.to_string()),
    };
    telemetry.ready.store(true, Ordering::Relaxed);
    let slots = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tasks = JoinSet::new();
    let end = loop {
        // reap finished batches so the set does not grow
        while tasks.try_join_next().is_some() {}
        let first = tokio::select! {
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
            d = consumer.next() => match d {
                Some(Ok(d)) => d,
                Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                None => break SessionEnd::Lost("consumer cancelled by broker".into()),
            },
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + cfg.batch_wait;
        let mut lost = None;
        while batch.len() < cfg.batch_size {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.cancelled() => break,
                d = consumer.next() => match d {
                    Some(Ok(d)) => batch.push(d),
                    Some(Err(e)) => { lost = Some(e.to_string()); break }
                    None => { lost = Some("consumer cancelled by broker".into()); break }
                },
            }
        }
        if let Some(why) = lost {
            break SessionEnd::Lost(why);
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
        };
        let (h, t, c, p) = (
            handler.clone(),
            telemetry.clone(),
            cfg.clone(),
            broker.publisher().clone(),
        );
        tasks.spawn(async move {
            process(h, &c, &t, p, batch, generation).await;
            drop(permit);
        });
    };
    // stop new deliveries, then let in-flight batches finish and ack
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    while tasks.join_next().await.is_some() {}
    let _ = channel.close(200, "bye".into()).await;
    end
}

async fn process<H: BatchHandler>(
    handler: Arc<H>,
    cfg: &WorkerConfig,
    telemetry: &Telemetry,
    publisher: Publisher,
    batch: Vec<Delivery>,
    generation: u64,
) {
    let q = [cfg.queue];
    let m = &telemetry.worker;
    m.consumed.with_label_values(&q).inc_by(batch.len() as u64);
    m.in_flight.with_label_values(&q).add(batch.len() as i64);
    telemetry.liveness.hold(batch.len());
    let started = Instant::now();
    let mut good = Vec::with_capacity(batch.len());
    let mut good_msgs = Vec::with_capacity(batch.len());
    for d in batch {
        match decode::<H::Msg>(&d.data) {
            Ok(msg) => {
                good_msgs.push(msg);
                good.push(d);
            }
            Err(e) => {
                // no id can be read from it: name it by size and content hash instead
                let reason = format!(
                    "undecodable {} message ({} bytes, sha256 {}): {e}",
                    <H::Msg as Message>::NAME,
                    d.data.len(),
                    &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&d.data))[..12]
                );
                settle(
                    cfg,
                    telemetry,
                    &publisher,
                    &d,
                    Outcome::Dead(reason),
                    "decode",
                )
                .await;
            }
        }
    }
    if good.is_empty() {
        return;
    }
    m.batch_size
        .with_label_values(&q)
        .observe(good.len() as f64);
    let deliveries: Vec<DeliveryInfo> = good
        .iter()
        .map(|d| {
            let mut info = delivery_info(d);
            info.last_try = info.delivery >= cfg.delivery_limit;
            info
        })
        .collect();
    let again = deliveries.iter().filter(|d| d.redelivered).count();
    if again > 0 {
        m.redelivered.with_label_values(&q).inc_by(again as u64);
        tracing::info!(
            queue = cfg.queue,
            redelivered = again,
            batch = deliveries.len(),
            "handling redelivered messages"
        );
    }
    let ctx = BatchCtx {
        publisher: publisher.clone(),
        service: cfg.service,
        redelivered: deliveries.iter().map(|d| d.redelivered).collect(),
        published: deliveries.iter().map(|d| d.published).collect(),
        deliveries,
        deadline: tokio::time::Instant::now() + cfg.segment,
        session: generation,
    };
    let n = good.len();
    // the handler runs in its own task so that a panic (a tch assertion, an `expect`) is
    // caught here and its deliveries are settled instead of held until the channel closes
    let run = tokio::spawn(async move { handler.handle(&ctx, good_msgs).await });
    let mut outcomes = match run.await {
        Ok(o) => o,
        Err(e) => {
            let why = if e.is_panic() {
                m.errors.with_label_values(&["panic"]).inc();
                format!("handler panicked: {}", panic_text(e.into_panic()))
            } else {
                "handler task cancelled".to_string()
            };
            tracing::error!(queue = cfg.queue, reason = %why, batch = n, "batch failed; requeueing its messages");
            vec![Outcome::Retry(why); n]
        }
    };
    if outcomes.len() != n {
        tracing::error!(
            expected = n,
            got = outcomes.len(),
            "handler returned wrong outcome count; requeueing batch"
        );
        outcomes = vec![Outcome::Retry("handler bug: outcome count".into()); n];
    }
    // one pause per batch (not per message) before its retries go back, growing with the
    // delivery count, so that the few deliveries a message has span an outage of a
    // dependency (2, 4, 8, 16 s before the 5th) instead of being spent in seconds
    let retried = good
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, Outcome::Retry(_)))
        .map(|(d, _)| delivery_number(d))
        // the last allowed delivery is dead-lettered, not retried: no pause for it
        .filter(|&n| n < cfg.delivery_limit)
        .max();
    if let Some(n) = retried {
        tokio::time::sleep(retry_pause(n)).await;
    }
    for (d, o) in good.iter().zip(outcomes) {
        let o = bounded(o, delivery_number(d), cfg.delivery_limit);
        settle(cfg, telemetry, &publisher, d, o, "input").await;
    }
    m.batch_seconds
        .with_label_values(&q)
        .observe(started.elapsed().as_secs_f64());
}

/// Returns a delivery to its queue (the quorum queue counts it against the limit); a failed
/// nack means the channel is gone, and the broker requeues it anyway.
async fn requeue(d: &Delivery) {
    let _ = d
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

/// Pause before the retries of a batch whose latest delivery was the `delivery`-th.
fn retry_pause(delivery: u32) -> Duration {
    Duration::from_secs(1u64 << delivery.clamp(1, 6)).min(Duration::from_secs(60))
}

/// A retry on the last allowed delivery becomes a dead letter with the last error.
fn bounded(o: Outcome, delivery: u32, limit: u32) -> Outcome {
    match o {
        Outcome::Retry(why) if delivery >= limit => Outcome::Dead(format!(
            "gave up after {delivery} deliveries (limit {limit}): {why}"
        )),
        o => o,
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn header_u32(d: &Delivery, name: &str) -> Option<u32> {
    header_u64(d, name).and_then(|n| u32::try_from(n).ok())
}

fn header_u64(d: &Delivery, name: &str) -> Option<u64> {
    use lapin::types::AMQPValue as V;
    let h = d.properties.headers().as_ref()?;
    let v = h.inner().get(name)?;
    let n: i128 = match v {
        V::ShortShortInt(x) => (*x).into(),
        V::ShortShortUInt(x) => (*x).into(),
        V::ShortInt(x) => (*x).into(),
        V::ShortUInt(x) => (*x).into(),
        V::LongInt(x) => (*x).into(),
        V::LongUInt(x) => (*x).into(),
        V::LongLongInt(x) => (*x).into(),
        _ => return None,
    };
    u64::try_from(n).ok()
}

/// 1 for a first delivery; the quorum queue counts the returns before this one.
fn delivery_number(d: &Delivery) -> u32 {
    header_u32(d, "x-delivery-count").map_or(1, |c| c.saturating_add(1))
}

fn delivery_info(d: &Delivery) -> DeliveryInfo {
    DeliveryInfo {
        redelivered: d.redelivered,
        published: *d.properties.timestamp(),
        message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
        segment: header_u32(d, crate::topology::SEGMENT_HEADER).unwrap_or(0),
        first_published: header_u64(d, crate::topology::FIRST_PUBLISHED_HEADER)
            .or(*d.properties.timestamp()),
        delivery: delivery_number(d),
        last_try: false,
    }
}

async fn settle(
    cfg: &WorkerConfig,
    telemetry: &Telemetry,
    publisher: &Publisher,
    d: &Delivery,
    outcome: Outcome,
    kind: &str,
) {
    let q = [cfg.queue];
    let m = &telemetry.worker;
    m.in_flight.with_label_values(&q).dec();
    telemetry.liveness.settled();
    match outcome {
        Outcome::Ack => {
            if d.acker.ack(BasicAckOptions::default()).await.is_ok() {
                m.acked.with_label_values(&q).inc();
            }
        }
        Outcome::Dead(reason) => {
            tracing::warn!(queue = cfg.queue, %reason, "dead-lettering message");
            // the copy must be durable before the original is acked, or the message is lost
            match publisher
                .dead_letter(
                    cfg.queue,
                    &d.data,
                    d.properties.headers().as_ref(),
                    &reason,
                    delivery_number(d),
                )
                .await
            {
                Ok(()) => {
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                    let kind = if reason.starts_with("gave up after") {
                        "gave_up"
                    } else {
                        kind
                    };
                    m.dead_lettered.with_label_values(&[cfg.queue, kind]).inc();
                    m.errors.with_label_values(&["bad_input"]).inc();
                    // an event about a dead event would feed itself forever
                    if cfg.queue == crate::topology::METRICS_EVENTS {
                        return;
                    }
                    let _ = publisher
                        .event(
                            cfg.service,
                            crate::messages::EventKind::DeadLettered {
                                queue: cfg.queue.to_string(),
                                reason,
                            },
                        )
                        .await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "dead-letter publish failed; requeueing");
                    requeue(d).await;
                }
            }
        }
        Outcome::Continue(reason) => {
            let info = delivery_info(d);
            let next = info.segment + 1;
            let mut headers = crate::topology::without_broker_headers(
                d.properties.headers().clone().unwrap_or_default(),
            );
            headers.insert(
                crate::topology::SEGMENT_HEADER.into(),
                lapin::types::AMQPValue::LongUInt(next),
            );
            if let Some(first) = info.first_published {
                headers.insert(
                    crate::topology::FIRST_PUBLISHED_HEADER.into(),
                    lapin::types::AMQPValue::LongLongInt(first as i64),
                );
            }
            let copy = crate::broker::Outgoing {
                exchange: crate::topology::WORK_EXCHANGE.into(),
                routing_key: cfg.queue.into(),
                body: d.data.clone(),
                headers,
                message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
            };
            // the next segment must be durable before this one is acked, or the job is lost;
            // if the ack then fails, the redelivered old segment is recognised and dropped
            match publisher.publish(copy).await {
                Ok(()) => {
                    tracing::info!(queue = cfg.queue, segment = next, %reason, "job continues in its next segment");
                    if d.acker.ack(BasicAckOptions::default()).await.is_ok() {
                        m.acked.with_label_values(&q).inc();
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = cfg.queue, error = %e, "next segment not published; requeueing this one");
                    m.requeued.with_label_values(&q).inc();
                    requeue(d).await;
                }
            }
        }
        Outcome::Retry(reason) => {
            tracing::warn!(queue = cfg.queue, %reason, "requeueing message after transient failure");
            m.requeued.with_label_values(&q).inc();
            m.errors.with_label_values(&["transient"]).inc();
            requeue(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_grow_with_the_delivery_count() {
        let p: Vec<u64> = (1..=5).map(|n| retry_pause(n).as_secs()).collect();
        assert_eq!(p, vec![2, 4, 8, 16, 32]);
        assert_eq!(retry_pause(50), Duration::from_secs(60));
    }

    #[test]
    fn retries_become_dead_letters_at_the_limit() {
        let retry = || Outcome::Retry("s3 down".into());
        assert_eq!(bounded(retry(), 1, 5), retry());
        assert_eq!(bounded(retry(), 4, 5), retry());
        match bounded(retry(), 5, 5) {
            Outcome::Dead(why) => {
                assert!(why.contains("gave up after 5 deliveries"), "{why}");
                assert!(why.ends_with("s3 down"), "the last error is kept: {why}");
            }
            o => panic!("expected a dead letter, got {o:?}"),
        }
        // other outcomes are never changed by the count
        assert_eq!(bounded(Outcome::Ack, 9, 5), Outcome::Ack);
    }

    #[tokio::test]
    async fn by_group_puts_outcomes_back_in_place() {
        let batch = vec![1u32, 2, 3, 4, 5];
        let mut calls = 0;
        let out = by_group(
            batch,
            |m| m % 2,
            |parity, members| {
                calls += 1;
                async move {
                    members
                        .into_iter()
                        // leave out 5: it must come back as a retry
                        .filter(|(_, m)| *m != 5)
                        .map(|(i, m)| {
                            let o = if parity == 0 {
                                Outcome::Ack
                            } else {
                                Outcome::Dead(format!("odd {m}"))
                            };
                            (i, o)
                        })
                        .collect()
                }
            },
        )
        .await;
        assert_eq!(calls, 2, "one call per group");
        assert_eq!(
            out,
            vec![
                Outcome::Dead("odd 1".into()),
                Outcome::Ack,
                Outcome::Dead("odd 3".into()),
                Outcome::Ack,
                Outcome::Retry("not processed".into()),
            ]
        );
    }
}
