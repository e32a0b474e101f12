//! The read-only HTTP JSON API over the run and job history.

use crate::history;
use aerial_shared::{store::StoreError, Store};
use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Deserialize;

/// A store error as an HTTP answer: 404 for what does not exist, 502 for the store failing.
pub fn error(e: StoreError) -> Response {
    let status = match e {
        StoreError::NotFound { .. }
        | StoreError::InvalidKey(_)
        | StoreError::RangeOutside { .. } => StatusCode::NOT_FOUND,
        StoreError::Request { .. } => StatusCode::BAD_GATEWAY,
        // an object the pipeline wrote that no longer parses: the server's data is at fault
        StoreError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(serde_json::json!({"error": e.to_string()}))).into_response()
}

fn json<T: serde::Serialize>(r: Result<T, StoreError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    }
}

/// `?runs=a,b` of the compare endpoints.
#[derive(Deserialize)]
pub struct CompareQuery {
    /// Comma-separated run names.
    pub runs: String,
}

impl CompareQuery {
    /// The run names, without empties.
    pub fn names(&self) -> Vec<String> {
        self.runs
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }
}

async fn runs(State(s): State<Store>) -> Response {
    json(history::runs(&s).await)
}

async fn run(State(s): State<Store>, Path(id): Path<String>) -> Response {
    json(history::run(&s, &id).await)
}

async fn compare(State(s): State<Store>, Query(q): Query<CompareQuery>) -> Response {
    let mut out = Vec::new();
    for name in q.names() {
        match history::run(&s, &name).await {
            Ok(d) => out.push(serde_json::json!({
                "name": d.summary.run,
                "method": d.summary.method,
                "backbone": d.summary.backbone,
                "retraining": d.summary.retraining,
                "accuracy": d.summary.accuracy,
                "macro_f1": d.metrics.validation.macro_f1,
                "duration_s": d.summary.duration_s,
                "history": d.metrics.history,
            })),
            Err(e) => return error(e),
        }
    }
    Json(serde_json::json!({"runs": out})).into_response()
}

async fn jobs(State(s): State<Store>) -> Response {
    json(history::jobs(&s).await)
}

async fn job(State(s): State<Store>, Path(id): Path<String>) -> Response {
    json(history::job(&s, &id).await)
}

async fn output(State(s): State<Store>, Path((id, file)): Path<(String, String)>) -> Response {
    match history::output(&s, &id, &file).await {
        Ok(bytes) => {
            let ct = match file.rsplit('.').next() {
                Some("png") => "image/png",
                Some("tif") => "image/tiff; application=geotiff; profile=cloud-optimized",
                Some("gpkg") => "application/geopackage+sqlite3",
                Some("qml") => "application/xml",
                Some("csv") => "text/csv; charset=utf-8",
                Some("json" | "geojson") => "application/json",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(e) => error(e),
    }
}

/// The API routes.
pub fn routes(store: Store) -> Router {
    Router::new()
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/compare", get(compare))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/outputs/{*file}", get(output))
        .with_state(store)
}
