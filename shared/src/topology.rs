//! Exchange, queue and routing-key names, and the one function that declares them all.

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    Channel, ExchangeKind,
};

/// Direct exchange every work queue is bound to (routing key = queue name).
pub const WORK_EXCHANGE: &str = "aerial.work";
/// Dead-letter exchange: routing key = the queue the message came from.
pub const DLX_EXCHANGE: &str = "aerial.dlx";
/// Topic exchange for [`crate::messages::Event`]s; routing key = `<service>.<event>`.
pub const EVENTS_EXCHANGE: &str = "aerial.events";

/// Ingest jobs ([`crate::messages::IngestJob`]).
pub const INGEST_JOBS: &str = "ingest.jobs";
/// Tiles to featurize ([`crate::messages::Tile`]).
pub const FEATURIZE_TILES: &str = "featurize.tiles";
/// Training jobs ([`crate::messages::TrainJob`]).
pub const TRAIN_JOBS: &str = "train.jobs";
/// Score jobs ([`crate::messages::ScoreJob`]), fanned out into `score.tiles`.
pub const SCORE_JOBS: &str = "score.jobs";
/// Tiles to score ([`crate::messages::ScoreTile`]).
pub const SCORE_TILES: &str = "score.tiles";
/// Written prediction batches of score jobs ([`crate::messages::ScoreProgress`]); one active
/// consumer at a time (the job coordinator), any replica can take over.
pub const SCORE_PROGRESS: &str = "score.progress";
/// The metrics service's copy of every event.
pub const METRICS_EVENTS: &str = "metrics.events";

/// Every work queue, in pipeline order.
pub const WORK_QUEUES: [&str; 6] = [
    INGEST_JOBS,
    FEATURIZE_TILES,
    TRAIN_JOBS,
    SCORE_JOBS,
    SCORE_TILES,
    SCORE_PROGRESS,
];

/// Header carrying why a message was dead-lettered.
pub const ERROR_HEADER: &str = "x-aerial-error";
/// Header numbering the segments of a job that continues in a new delivery (absent = 0).
pub const SEGMENT_HEADER: &str = "x-aerial-segment";
/// Header keeping when a continued job was first published (Unix seconds).
pub const FIRST_PUBLISHED_HEADER: &str = "x-aerial-first-published";
/// Header on a dead-lettered message: how many deliveries it took (1 = refused at once).
pub const DELIVERIES_HEADER: &str = "x-aerial-deliveries";
/// Header naming the queue a dead-lettered message came from.
pub const ORIGIN_HEADER: &str = "x-aerial-origin-queue";

/// Headers the broker sets on a delivery (its delivery count, dead-letter history): a copy
/// published again must not carry them, or its first delivery would look like a late one.
pub fn without_broker_headers(headers: FieldTable) -> FieldTable {
    let mut kept = FieldTable::default();
    for (k, v) in headers.inner() {
        if !matches!(
            k.as_str(),
            "x-delivery-count"
                | "x-death"
                | "x-first-death-exchange"
                | "x-first-death-queue"
                | "x-first-death-reason"
        ) {
            kept.insert(k.clone(), v.clone());
        }
    }
    kept
}

/// Name of the dead-letter queue of `queue`.
pub fn dlq(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// What the queue declarations carry beyond their names (from `[amqp]` settings).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Deliveries of one message before the broker dead-letters it (`x-delivery-limit`
    /// counts returns, so it is set one below: at most this many deliveries in all).
    pub delivery_limit: u32,
    /// Length bound of `metrics.events` (oldest dropped first).
    pub events_max_length: u32,
}

impl QueueLimits {
    /// From the broker settings.
    pub fn from_settings(s: &crate::config::AmqpSettings) -> Self {
        Self {
            delivery_limit: s.delivery_limit.max(1),
            events_max_length: s.events_max_length.max(1),
        }
    }
}

/// The arguments `queue` is declared with: a quorum queue (replicated on a cluster, counts
/// deliveries) with a delivery limit and a dead-letter route to its DLQ. A queue's type and
/// arguments cannot change in place: `aerial migrate-queues` moves older queues over.
pub fn queue_args(queue: &str, limits: QueueLimits) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(limits.delivery_limit.saturating_sub(1))),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DLX_EXCHANGE.into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    if queue == SCORE_PROGRESS {
        // completion is counted in one place; a standby replica takes over on failure
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    if queue == METRICS_EVENTS {
        // events pile up while metrics is down; the newest matter, the oldest go first
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(i64::from(limits.events_max_length)),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("drop-head".into()),
        );
    }
    args
}

/// Every queue that carries work or events (the ones [`queue_args`] describes).
pub fn consumed_queues() -> impl Iterator<Item = &'static str> {
    WORK_QUEUES.iter().copied().chain([METRICS_EVENTS])
}

/// Declares the exchanges (idempotent).
async fn declare_exchanges(channel: &Channel) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (name, kind) in [
        (WORK_EXCHANGE, ExchangeKind::Direct),
        (DLX_EXCHANGE, ExchangeKind::Direct),
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
    ] {
        channel
            .exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await?;
    }
    Ok(())
}

/// Durable queue options.
pub fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares `queue` with its arguments, its DLQ, and the bindings of both.
pub async fn declare_queue(
    channel: &Channel,
    queue: &str,
    limits: QueueLimits,
) -> lapin::Result<()> {
    channel
        .queue_declare(queue.into(), durable_queue(), queue_args(queue, limits))
        .await?;
    let dead = dlq(queue);
    channel
        .queue_declare(dead.as_str().into(), durable_queue(), FieldTable::default())
        .await?;
    channel
        .queue_bind(
            dead.as_str().into(),
            DLX_EXCHANGE.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let (exchange, key) = if queue == METRICS_EVENTS {
        (EVENTS_EXCHANGE, "#")
    } else {
        (WORK_EXCHANGE, queue)
    };
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares exchanges, the quorum work queues with their DLQs, and the events queue.
/// Idempotent: every service calls it on (re)connect. A queue that exists with other
/// arguments (a classic queue of an earlier version) fails with
/// [`TopologyError::Mismatch`], naming the queue and the way out.
pub async fn declare(channel: &Channel, limits: QueueLimits) -> Result<(), TopologyError> {
    declare_exchanges(channel).await?;
    for queue in consumed_queues() {
        declare_queue(channel, queue, limits)
            .await
            .map_err(|e| TopologyError::from_declare(queue, e))?;
    }
    Ok(())
}

/// Failures declaring the topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The queue exists with another type or other arguments.
    #[error("queue {queue} exists with other arguments ({reason}): stop the services and run `aerial migrate-queues` (README, \"Upgrading\")")]
    Mismatch {
        /// Queue name.
        queue: String,
        /// The broker's words.
        reason: String,
    },
    /// Any other AMQP failure.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
}

impl TopologyError {
    fn from_declare(queue: &str, e: lapin::Error) -> Self {
        if is_precondition_failed(&e) {
            TopologyError::Mismatch {
                queue: queue.to_string(),
                reason: e.to_string(),
            }
        } else {
            TopologyError::Amqp(e)
        }
    }
}

/// Whether the broker refused a declaration because the queue exists with other arguments.
pub fn is_precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => matches!(
            p.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_queues_are_quorum_with_a_delivery_limit() {
        let limits = QueueLimits {
            delivery_limit: 5,
            events_max_length: 10,
        };
        for q in consumed_queues() {
            let args = queue_args(q, limits);
            let inner = args.inner();
            assert_eq!(
                inner.get("x-queue-type"),
                Some(&AMQPValue::LongString("quorum".into())),
                "{q}"
            );
            // returns counted by the broker: 4 returns = 5 deliveries
            assert_eq!(
                inner.get("x-delivery-limit"),
                Some(&AMQPValue::LongLongInt(4)),
                "{q}"
            );
        }
        let events = queue_args(METRICS_EVENTS, limits);
        assert_eq!(
            events.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert!(queue_args(INGEST_JOBS, limits)
            .inner()
            .get("x-max-length")
            .is_none());
    }
}
