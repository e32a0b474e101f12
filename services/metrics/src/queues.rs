//! Queue depths from RabbitMQ's management API: ready, unacked and consumers per queue of
//! our vhost (DLQs included), polled into gauges, since the broker's own Prometheus plugin
//! does not know which queues are ours.

use aerial_shared::config::AmqpSettings;
use prometheus::{IntGaugeVec, Opts, Registry};
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the management API is asked.
const EVERY: Duration = Duration::from_secs(10);

/// The queue gauges.
#[derive(Clone)]
pub struct QueueGauges {
    ready: IntGaugeVec,
    unacked: IntGaugeVec,
    consumers: IntGaugeVec,
    oldest: IntGaugeVec,
}

impl QueueGauges {
    /// Registers the gauges.
    pub fn new(registry: &Registry) -> Self {
        let g = |name: &str, help: &str| {
            let v = IntGaugeVec::new(Opts::new(name, help), &["queue"]).expect("valid metric");
            registry
                .register(Box::new(v.clone()))
                .expect("unique metric name");
            v
        };
        Self {
            ready: g("queue_messages_ready", "Messages waiting in each queue."),
            unacked: g(
                "queue_messages_unacked",
                "Messages delivered to a consumer and not yet acked.",
            ),
            consumers: g("queue_consumers", "Consumers of each queue."),
            oldest: g(
                "queue_oldest_message_age_seconds",
                "Seconds since the message at the head of each queue was published (0 when empty).",
            ),
        }
    }
}

/// User, password and vhost of an `amqp://user:pass@host:port/vhost` URI.
pub fn credentials(uri: &str) -> Option<(String, String, String)> {
    let rest = uri.split_once("://")?.1;
    let (userinfo, hostpath) = rest.rsplit_once('@')?;
    let (user, pass) = userinfo.split_once(':')?;
    let vhost = hostpath.split_once('/').map_or("%2f", |(_, v)| v);
    let vhost = if vhost.is_empty() { "%2f" } else { vhost };
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .to_string()
    };
    Some((dec(user), dec(pass), dec(vhost)))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Age of a queue's head message from the management API's `head_message_timestamp` (our
/// publishers stamp every message); 0 when the queue is empty or the head has no stamp.
fn head_age(q: &serde_json::Value, now: i64) -> i64 {
    if q["messages_ready"].as_i64().unwrap_or(0) == 0 {
        return 0;
    }
    q["head_message_timestamp"]
        .as_i64()
        .map_or(0, |t| (now - t).max(0))
}

/// Polls the management API until shutdown; does nothing when no URL is configured.
pub async fn poll(amqp: AmqpSettings, gauges: QueueGauges, shutdown: CancellationToken) {
    let Some(base) = amqp.management_url.clone() else {
        tracing::info!("no amqp.management_url: queue depth metrics off");
        return;
    };
    let Some((user, pass, vhost)) = credentials(amqp.uri.expose_secret()) else {
        tracing::warn!("amqp uri without user:pass: queue depth metrics off");
        return;
    };
    let vh = percent_encoding::utf8_percent_encode(&vhost, percent_encoding::NON_ALPHANUMERIC);
    let url = format!("{}/api/queues/{vh}", base.trim_end_matches('/'));
    let http = reqwest::Client::new();
    loop {
        let got = async {
            http.get(&url)
                .basic_auth(&user, Some(&pass))
                .timeout(Duration::from_secs(5))
                .send()
                .await?
                .error_for_status()?
                .json::<Vec<serde_json::Value>>()
                .await
        }
        .await;
        match got {
            Ok(queues) => {
                for q in queues {
                    let name = q["name"].as_str().unwrap_or_default();
                    let n = |k: &str| q[k].as_i64().unwrap_or(0);
                    gauges
                        .ready
                        .with_label_values(&[name])
                        .set(n("messages_ready"));
                    gauges
                        .unacked
                        .with_label_values(&[name])
                        .set(n("messages_unacknowledged"));
                    gauges
                        .consumers
                        .with_label_values(&[name])
                        .set(n("consumers"));
                    gauges
                        .oldest
                        .with_label_values(&[name])
                        .set(head_age(&q, now_secs()));
                }
            }
            // the error names the URL, never the credentials
            Err(e) => {
                tracing::warn!(error = %e.without_url(), url = %url, "management api unavailable")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uri_credentials_and_vhost() {
        assert_eq!(
            credentials("amqp://u:p%40ss@127.0.0.1:5672/%2f"),
            Some(("u".into(), "p@ss".into(), "/".into()))
        );
        assert_eq!(
            credentials("amqp://u:p@h/test-1"),
            Some(("u".into(), "p".into(), "test-1".into()))
        );
        assert_eq!(credentials("amqp://h:5672"), None);
    }

    #[test]
    fn head_age_is_zero_for_empty_or_unstamped_queues() {
        let q = serde_json::json!({"messages_ready": 3, "head_message_timestamp": 1000});
        assert_eq!(head_age(&q, 1600), 600);
        let empty = serde_json::json!({"messages_ready": 0, "head_message_timestamp": 1000});
        assert_eq!(head_age(&empty, 1600), 0);
        let unstamped = serde_json::json!({"messages_ready": 3});
        assert_eq!(head_age(&unstamped, 1600), 0);
    }
}
