//! RabbitMQ client over `lapin`: connect with backoff, publish with confirms.

use crate::config::AmqpSettings;
use crate::messages::{encode, Message};
use crate::topology;
use backon::BackoffBuilder;
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
};
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Broker failures.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Any AMQP-level failure.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker nacked a publish.
    #[error("broker refused message for {exchange}/{routing_key}")]
    Nacked {
        /// Target exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
    /// Mandatory publish matched no queue.
    #[error("no queue bound for {exchange}/{routing_key}")]
    Unroutable {
        /// Target exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
    /// The CA bundle could not be read.
    #[error("reading amqp ca file {path}: {source}")]
    CaFile {
        /// Path given.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Shutdown was requested while connecting.
    #[error("shutdown requested while connecting")]
    Cancelled,
    /// The broker did not confirm a publish in time (a memory or disk alarm blocks
    /// publishers); transient.
    #[error("broker did not confirm within {secs} s (memory or disk alarm?)")]
    ConfirmTimeout {
        /// The limit that passed.
        secs: u64,
    },
    /// The queues could not be declared as this version needs them.
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
}

/// One connection plus a confirm-mode channel for publishing.
#[derive(Clone)]
pub struct Broker {
    conn: std::sync::Arc<Connection>,
    publisher: Publisher,
}

/// A confirm-mode channel; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
}

/// What to publish: target, body and extra headers.
pub struct Outgoing {
    /// Exchange name.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Raw body.
    pub body: Vec<u8>,
    /// Extra headers (e.g. the dead-letter reason).
    pub headers: FieldTable,
    /// AMQP `message_id`: kept when a job is re-published as its next segment, so every
    /// copy of one job is known as the same job; a fresh one is made when absent.
    pub message_id: Option<String>,
}

impl Outgoing {
    /// A typed message to a work queue (via the work exchange).
    pub fn work<M: Message>(queue: &str, msg: &M) -> Self {
        Self {
            exchange: topology::WORK_EXCHANGE.into(),
            routing_key: queue.into(),
            body: encode(msg),
            headers: FieldTable::default(),
            message_id: None,
        }
    }
}

impl Broker {
    /// Connects once.
    pub async fn connect(settings: &AmqpSettings, name: &str) -> Result<Self, BrokerError> {
        let tls = match &settings.ca_file {
            Some(path) => OwnedTLSConfig {
                identity: None,
                cert_chain: Some(std::fs::read_to_string(path).map_err(|source| {
                    BrokerError::CaFile {
                        path: path.display().to_string(),
                        source,
                    }
                })?),
            },
            None => OwnedTLSConfig::default(),
        };
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let conn = Connection::connect_with_config(
            settings.uri.expose_secret(),
            props,
            tls,
            lapin::runtime::default_runtime()?,
        )
        .await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            conn: std::sync::Arc::new(conn),
            publisher: Publisher {
                channel,
                confirm_timeout: Duration::from_secs(settings.confirm_timeout_secs.max(1)),
            },
        })
    }

    /// Connects, retrying with exponential backoff (capped at 10 s) until it works or
    /// `shutdown` fires; then declares the topology.
    pub async fn connect_with_retry(
        settings: &AmqpSettings,
        name: &str,
        shutdown: &CancellationToken,
    ) -> Result<Self, BrokerError> {
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times()
            .with_jitter()
            .build();
        loop {
            match Self::connect(settings, name).await {
                Ok(b) => {
                    topology::declare(
                        &b.publisher.channel,
                        topology::QueueLimits::from_settings(settings),
                    )
                    .await?;
                    return Ok(b);
                }
                // a missing CA file will not appear by retrying
                Err(e @ BrokerError::CaFile { .. }) => return Err(e),
                Err(e) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %e, broker = %settings.redacted_uri(), retry_in_ms = delay.as_millis() as u64, "broker unreachable");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(BrokerError::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The underlying connection (for the queue migration's own channels).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The confirm-mode publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// A fresh channel (for consuming).
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        Ok(self.conn.create_channel().await?)
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

impl Publisher {
    /// Publishes one persistent message and waits for the broker's confirm.
    pub async fn publish(&self, out: Outgoing) -> Result<(), BrokerError> {
        self.publish_all(vec![out]).await
    }

    /// Publishes a typed message to a work queue, confirmed.
    pub async fn send<M: Message>(&self, queue: &str, msg: &M) -> Result<(), BrokerError> {
        self.publish(Outgoing::work(queue, msg)).await
    }

    /// Publishes many messages, pipelined, and returns once every one is confirmed, or
    /// fails with [`BrokerError::ConfirmTimeout`] when the broker stops answering.
    pub async fn publish_all(&self, outs: Vec<Outgoing>) -> Result<(), BrokerError> {
        let limit = self.confirm_timeout;
        tokio::time::timeout(limit, self.publish_all_unbounded(outs))
            .await
            .unwrap_or(Err(BrokerError::ConfirmTimeout {
                secs: limit.as_secs(),
            }))
    }

    async fn publish_all_unbounded(&self, outs: Vec<Outgoing>) -> Result<(), BrokerError> {
        let mut pending = Vec::with_capacity(outs.len());
        // the publish time lets the management API report a queue's oldest message age
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for out in outs {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_timestamp(now)
                .with_content_type("application/json".into())
                .with_message_id(
                    out.message_id
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
                        .into(),
                )
                .with_headers(out.headers);
            let confirm = self
                .channel
                .basic_publish(
                    out.exchange.as_str().into(),
                    out.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &out.body,
                    props,
                )
                .await?;
            pending.push((confirm, out.exchange, out.routing_key));
        }
        for (confirm, exchange, routing_key) in pending {
            match confirm.await? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => {
                    return Err(BrokerError::Unroutable {
                        exchange,
                        routing_key,
                    })
                }
                Confirmation::Nack(_) => {
                    return Err(BrokerError::Nacked {
                        exchange,
                        routing_key,
                    })
                }
            }
        }
        Ok(())
    }

    /// Publishes an event to the events exchange (`<service>.<kind>` routing key).
    pub async fn event(
        &self,
        service: &str,
        kind: crate::messages::EventKind,
    ) -> Result<(), BrokerError> {
        let ev = crate::messages::Event {
            at: chrono::Utc::now(),
            service: service.to_string(),
            kind,
        };
        let tag = serde_json::to_value(&ev.kind)
            .ok()
            .and_then(|v| v.get("event").and_then(|e| e.as_str().map(String::from)))
            .unwrap_or_else(|| "event".into());
        self.publish(Outgoing {
            exchange: topology::EVENTS_EXCHANGE.into(),
            routing_key: format!("{service}.{tag}"),
            body: encode(&ev),
            headers: FieldTable::default(),
            message_id: None,
        })
        .await
    }

    /// Copies a message to the dead-letter queue of `queue` with the reason and the number of
    /// deliveries it took in headers.
    pub async fn dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        original: Option<&FieldTable>,
        reason: &str,
        deliveries: u32,
    ) -> Result<(), BrokerError> {
        let mut headers = topology::without_broker_headers(original.cloned().unwrap_or_default());
        headers.insert(
            topology::ERROR_HEADER.into(),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            topology::DELIVERIES_HEADER.into(),
            AMQPValue::LongUInt(deliveries),
        );
        headers.insert(
            topology::ORIGIN_HEADER.into(),
            AMQPValue::LongString(queue.into()),
        );
        self.publish(Outgoing {
            exchange: topology::DLX_EXCHANGE.into(),
            routing_key: queue.into(),
            body: body.to_vec(),
            headers,
            message_id: None,
        })
        .await
    }
}
