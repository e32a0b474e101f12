//! The dashboard's write side: analysts label a finished map's tiles (assessment samples and
//! corrections), and ask for a retrain on their corrections and a new map. Every write needs
//! the dashboard token as `Authorization: Bearer ...`: a header, not a cookie, so another
//! site's form cannot make a browser send it (no CSRF). Reads stay open like the rest.

mod read;
mod retrain;
mod write;

use crate::maps::{JobMap, MapError, Maps};
use aerial_shared::{
    broker::Broker, config::AmqpSettings, keys, predictions::ScoreSpec, store::StoreError, Store,
};
use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Shared state of the labelling routes.
#[derive(Clone)]
pub struct Labelling {
    store: Store,
    maps: Maps,
    token: Option<Arc<SecretString>>,
    amqp: AmqpSettings,
    broker: Arc<Mutex<Option<Broker>>>,
    /// Held while a job's accuracy outputs are rewritten, so two labels stored at once cannot
    /// leave a file that misses one of them.
    pub(crate) outputs: Arc<Mutex<()>>,
}

pub(crate) fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": msg.into()}))).into_response()
}

pub(crate) fn map_error(e: MapError) -> Response {
    match e {
        MapError::Store(e) => crate::api::error(e),
        MapError::NotAMap(m) => fail(StatusCode::NOT_FOUND, m),
    }
}

pub(crate) fn store_error(e: StoreError) -> Response {
    crate::api::error(e)
}

/// Why a configured token cannot protect writes: empty (an empty `Authorization` would
/// match it), short, or the examples' placeholder.
fn weak_token(t: &str) -> Option<&'static str> {
    let t = t.trim();
    if t.is_empty() {
        Some("empty")
    } else if t.len() < 16 {
        Some("shorter than 16 characters")
    } else if t.eq_ignore_ascii_case("change_me") || t.to_ascii_uppercase().contains("CHANGE_ME") {
        Some("still the example's CHANGE_ME")
    } else {
        None
    }
}

/// Equal-length, constant-time comparison: the token is not guessable byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Labelling {
    /// Routes over `store`; writes need `token` (none, or one too weak to guard anything:
    /// the dashboard stays read-only).
    pub fn new(store: Store, token: Option<SecretString>, amqp: AmqpSettings) -> Self {
        let token = token.filter(|t| match weak_token(t.expose_secret()) {
            Some(why) => {
                tracing::warn!(reason = why, "dashboard token refused; labelling is off");
                false
            }
            None => true,
        });
        Self {
            store,
            maps: Maps::default(),
            token: token.map(Arc::new),
            amqp,
            broker: Arc::new(Mutex::new(None)),
            outputs: Arc::new(Mutex::new(())),
        }
    }

    pub(crate) fn authorise(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(token) = &self.token else {
            return Err(fail(
                StatusCode::FORBIDDEN,
                "labelling is off: no usable dashboard token is configured (AERIAL__DASHBOARD__TOKEN, 16 characters or more)",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !given.is_empty() && same(given.as_bytes(), token.expose_secret().as_bytes()) {
            Ok(())
        } else {
            Err(fail(
                StatusCode::UNAUTHORIZED,
                "missing or wrong dashboard token",
            ))
        }
    }

    /// Publishes one message, connecting on first use (and again after a failure).
    pub(crate) async fn send<M: aerial_shared::messages::Message>(
        &self,
        queue: &str,
        msg: &M,
    ) -> Result<(), Response> {
        let mut guard = self.broker.lock().await;
        if guard.is_none() {
            let b = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                Broker::connect(&self.amqp, "metrics-labelling"),
            )
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            match b {
                Ok(b) => *guard = Some(b),
                Err(e) => {
                    return Err(fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("broker unavailable: {e}"),
                    ))
                }
            }
        }
        let b = guard.as_ref().expect("connected above");
        if let Err(e) = b.publisher().send(queue, msg).await {
            *guard = None;
            return Err(fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("publishing to {queue} failed: {e}"),
            ));
        }
        Ok(())
    }

    /// The map of `job` for a write: the token first, then the map.
    pub(crate) async fn map_for_write(
        &self,
        headers: &HeaderMap,
        job: &str,
    ) -> Result<Arc<JobMap>, Response> {
        self.authorise(headers)?;
        self.map(job).await
    }

    pub(crate) async fn map(&self, job: &str) -> Result<Arc<JobMap>, Response> {
        self.maps.get(&self.store, job).await.map_err(map_error)
    }

    pub(crate) async fn spec(&self, job: &str) -> Result<ScoreSpec, Response> {
        keys::validate_name(job).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
        self.store
            .get_json(&keys::score_spec(job))
            .await
            .map_err(store_error)
    }
}

/// The labels dataset of corrections for a region: `<region>-labels` unless named.
pub(crate) fn labels_dataset(region: &str, named: Option<&str>) -> Result<String, Response> {
    let name = named
        .map(str::to_string)
        .unwrap_or_else(|| format!("{region}-labels"));
    keys::validate_name(&name).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
    if name == region {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "corrections go to their own dataset, not into the region's",
        ));
    }
    Ok(name)
}

/// Refuses a labels dataset that already holds tiles of another kind (a labelled folder) or
/// corrections of another region: scene tile ids (`<date>/rRRRcCCC`) repeat between regions,
/// so two regions in one labels dataset would overwrite each other's labels and features.
pub(crate) async fn check_labels_dataset(
    store: &Store,
    name: &str,
    region: &str,
) -> Result<(), Response> {
    let records = store
        .list(&keys::label_records_prefix(name))
        .await
        .map_err(store_error)?;
    if let Some(first) = records.first() {
        let rec: aerial_shared::labels::LabelRecord =
            store.get_json(&first.key).await.map_err(store_error)?;
        if rec.tile.dataset != region {
            return Err(fail(
                StatusCode::CONFLICT,
                format!(
                    "dataset {name} holds corrections of region {}: name another labels dataset for {region}",
                    rec.tile.dataset
                ),
            ));
        }
    }
    let prefix = keys::manifest_prefix(name);
    let parts = store.list(&prefix).await.map_err(store_error)?;
    if let Some(p) = parts
        .iter()
        .find(|p| !p.key[prefix.len()..].starts_with("label-"))
    {
        return Err(fail(
            StatusCode::CONFLICT,
            format!(
                "dataset {name} already holds other tiles ({}): name another labels dataset",
                p.key
            ),
        ));
    }
    Ok(())
}

/// Tiles of the region that belong to an assessment sample: their labels measure maps, so
/// they are never corrections (a map trained on them would be measured on its own training).
pub(crate) async fn sampled_tiles(
    store: &Store,
    region: &str,
) -> Result<std::collections::HashMap<String, String>, Response> {
    let mut out = std::collections::HashMap::new();
    for name in aerial_shared::assessment::designs(store, region)
        .await
        .map_err(store_error)?
    {
        let d = aerial_shared::assessment::design(store, region, &name)
            .await
            .map_err(store_error)?;
        out.extend(d.tiles.into_iter().map(|t| (t.tile_id, name.clone())));
    }
    Ok(out)
}

/// The labelling and map routes.
pub fn routes(l: Labelling) -> Router {
    Router::new()
        .route("/api/jobs/{id}/grid", get(read::grid))
        .route("/api/jobs/{id}/scene", get(read::scene))
        .route("/api/jobs/{id}/tile", get(read::tile))
        .route("/api/jobs/{id}/queue", get(read::queue))
        .route("/api/jobs/{id}/accuracy", get(read::accuracy))
        .route("/api/jobs/{id}/assessments", post(write::create_design))
        .route("/api/jobs/{id}/labels", post(write::put_label))
        .route("/api/jobs/{id}/retrain", post(retrain::retrain))
        .route("/api/jobs/{id}/rescore", post(retrain::rescore))
        .route("/api/datasets/{ds}/labels", get(read::export_corrections))
        .route(
            "/api/datasets/{ds}/assessments/{name}/labels",
            get(read::export_references),
        )
        .with_state(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_tokens_are_refused() {
        assert_eq!(weak_token(""), Some("empty"));
        assert_eq!(weak_token("   "), Some("empty"));
        assert!(weak_token("short").is_some());
        assert!(weak_token("CHANGE_ME").is_some());
        assert!(weak_token("CHANGE_ME_CHANGE_ME_123").is_some());
        assert_eq!(weak_token("mVyvN3GCd6o1taOLLHHTZR12_q5dsux3"), None);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
