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

/// Equal-length, constant-time comparison: the token is not guessable byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Labelling {
    /// Routes over `store`; writes need `token` (none: the dashboard stays read-only).
    pub fn new(store: Store, token: Option<SecretString>, amqp: AmqpSettings) -> Self {
        Self {
            store,
            maps: Maps::default(),
            token: token.map(Arc::new),
            amqp,
            broker: Arc::new(Mutex::new(None)),
        }
    }

    pub(crate) fn authorise(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(token) = &self.token else {
            return Err(fail(
                StatusCode::FORBIDDEN,
                "labelling is off: no dashboard token is configured (AERIAL__DASHBOARD__TOKEN)",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if same(given.as_bytes(), token.expose_secret().as_bytes()) {
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

    pub(crate) async fn map(&self, job: &str) -> Result<Arc<JobMap>, Response> {
        self.maps.get(&self.store, job).await.map_err(map_error)
    }

    pub(crate) async fn spec(&self, job: &str) -> Result<ScoreSpec, Response> {
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

/// Refuses a labels dataset that already holds tiles of another kind (a labelled folder),
/// so corrections never mix into a dataset they would change behind its owner's back.
pub(crate) async fn check_labels_dataset(store: &Store, name: &str) -> Result<(), Response> {
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
