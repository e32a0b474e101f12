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
/// Header naming the queue a dead-lettered message came from.
pub const ORIGIN_HEADER: &str = "x-aerial-origin-queue";

/// Name of the dead-letter queue of `queue`.
pub fn dlq(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// Declares exchanges, durable work queues with their DLQs, and the events queue.
/// Idempotent: every service calls it on (re)connect.
pub async fn declare(channel: &Channel) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            WORK_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            DLX_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    let qopts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for queue in WORK_QUEUES.iter().copied().chain([METRICS_EVENTS]) {
        let mut args = FieldTable::default();
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
        channel.queue_declare(queue.into(), qopts, args).await?;
        let dead = dlq(queue);
        channel
            .queue_declare(dead.as_str().into(), qopts, FieldTable::default())
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
    }
    for queue in WORK_QUEUES {
        channel
            .queue_bind(
                queue.into(),
                WORK_EXCHANGE.into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .queue_bind(
            METRICS_EVENTS.into(),
            EVENTS_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}
