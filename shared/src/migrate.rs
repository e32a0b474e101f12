//! Moving queues declared by an earlier version (classic queues, other arguments) to the
//! declarations of this one. A queue's type and arguments cannot change in place, so each
//! such queue is emptied into a holding queue, deleted, declared anew and refilled, keeping
//! every message with its properties. Run with the services stopped (they would consume
//! from the holding queue's source meanwhile); safe to run again after a crash: leftover
//! holding queues are drained first.

use crate::config::AmqpSettings;
use crate::topology::{self, QueueLimits};
use lapin::{
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
    Channel, Connection, ExchangeKind,
};

/// Exchange the holding queues are bound to while a migration runs.
const HOLDING_EXCHANGE: &str = "aerial.migrate";
/// Header keeping a held message's original routing key (events are routed by it).
const ROUTING_HEADER: &str = "x-aerial-migrated-routing-key";

/// What happened to one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Queue name.
    pub queue: String,
    /// Whether it had to be re-declared.
    pub redeclared: bool,
    /// Messages moved out and back in.
    pub messages: u64,
}

/// Migration failures.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Broker failure.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] crate::broker::BrokerError),
    /// A moved message was not confirmed.
    #[error("broker did not confirm a moved message of {queue}")]
    NotConfirmed {
        /// Queue being moved.
        queue: String,
    },
    /// Declaring the new topology failed.
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
}

fn holding(queue: &str) -> String {
    format!("{queue}.migrating")
}

/// Migrates every queue of the topology that needs it; reports each queue.
pub async fn run(settings: &AmqpSettings) -> Result<Vec<Migrated>, MigrateError> {
    let broker = crate::Broker::connect(settings, "aerial-migrate").await?;
    let conn = broker.connection();
    let limits = QueueLimits::from_settings(settings);
    let ch = confirm_channel(conn).await?;
    declare_exchanges(&ch).await?;
    let mut report = Vec::new();
    for queue in topology::consumed_queues() {
        report.push(one(conn, queue, limits).await?);
    }
    let ch = conn.create_channel().await?;
    ch.exchange_delete(HOLDING_EXCHANGE.into(), ExchangeDeleteOptions::default())
        .await?;
    // the final check: declaring the topology as the services will must now work
    topology::declare(&ch, limits).await?;
    broker.close().await;
    Ok(report)
}

async fn confirm_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

async fn declare_exchanges(ch: &Channel) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (name, kind) in [
        (topology::WORK_EXCHANGE, ExchangeKind::Direct),
        (topology::DLX_EXCHANGE, ExchangeKind::Direct),
        (topology::EVENTS_EXCHANGE, ExchangeKind::Topic),
        (HOLDING_EXCHANGE, ExchangeKind::Direct),
    ] {
        ch.exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await?;
    }
    Ok(())
}

async fn one(
    conn: &Connection,
    queue: &str,
    limits: QueueLimits,
) -> Result<Migrated, MigrateError> {
    let hold = holding(queue);
    let ch = confirm_channel(conn).await?;
    // the holding queue may exist from an interrupted run: it keeps what it holds
    ch.queue_declare(
        hold.as_str().into(),
        topology::durable_queue(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        hold.as_str().into(),
        HOLDING_EXCHANGE.into(),
        queue.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let probe = conn.create_channel().await?;
    let redeclared = match topology::declare_queue(&probe, queue, limits).await {
        Ok(()) => false,
        Err(e) if topology::is_precondition_failed(&e) => {
            move_all(&ch, queue, HOLDING_EXCHANGE, |_| queue.to_string(), true).await?;
            // only if nothing arrived meanwhile (a publisher still running): then this fails
            // and the operator runs it again, nothing is lost
            ch.queue_delete(
                queue.into(),
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            )
            .await?;
            let fresh = conn.create_channel().await?;
            topology::declare_queue(&fresh, queue, limits).await?;
            true
        }
        Err(e) => return Err(e.into()),
    };
    let exchange = if queue == topology::METRICS_EVENTS {
        topology::EVENTS_EXCHANGE
    } else {
        topology::WORK_EXCHANGE
    };
    // a fresh channel: RabbitMQ 3.10 crashes a channel that publishes to a queue it knew
    // under its old type
    let _ = ch.close(200, "bye".into()).await;
    let ch = confirm_channel(conn).await?;
    let messages = move_all(&ch, &hold, exchange, |key| key.to_string(), false).await?;
    ch.queue_delete(hold.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = ch.close(200, "bye".into()).await;
    Ok(Migrated {
        queue: queue.to_string(),
        redeclared,
        messages,
    })
}

/// Moves every message of `from` to `exchange`, each confirmed before it is acked. Going
/// out (`keep_key`), the original routing key is kept in a header; coming back it is the
/// routing key again and the header is removed.
async fn move_all(
    ch: &Channel,
    from: &str,
    exchange: &str,
    key: impl Fn(&str) -> String,
    keep_key: bool,
) -> Result<u64, MigrateError> {
    let mut moved = 0;
    while let Some(m) = ch
        .basic_get(from.into(), BasicGetOptions { no_ack: false })
        .await?
    {
        let d = m.delivery;
        let mut headers =
            topology::without_broker_headers(d.properties.headers().clone().unwrap_or_default());
        let routing = if keep_key {
            headers.insert(
                ROUTING_HEADER.into(),
                AMQPValue::LongString(d.routing_key.as_str().into()),
            );
            key(from)
        } else {
            let original = match headers.inner().get(ROUTING_HEADER) {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                _ => from.trim_end_matches(".migrating").to_string(),
            };
            let mut kept = FieldTable::default();
            for (k, v) in headers.inner() {
                if k.as_str() != ROUTING_HEADER {
                    kept.insert(k.clone(), v.clone());
                }
            }
            headers = kept;
            key(&original)
        };
        let props = d.properties.clone().with_headers(headers);
        let confirm = ch
            .basic_publish(
                exchange.into(),
                routing.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &d.data,
                props,
            )
            .await?
            .await?;
        if !matches!(confirm, lapin::Confirmation::Ack(None)) {
            return Err(MigrateError::NotConfirmed {
                queue: from.to_string(),
            });
        }
        d.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    Ok(moved)
}
