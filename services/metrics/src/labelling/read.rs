//! What the viewer and the labelling page read: grids, scenes, tiles, the labelling queue and
//! the accuracy of a map on the assessment samples of its dataset.

use super::{fail, labels_dataset, map_error, store_error, Labelling};
use crate::maps::JobMap;
use aerial_shared::{
    assessment, keys,
    labels::{self, LabelRecord},
    store::StoreError,
    Store,
};
use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
pub(super) struct DateQ {
    date: Option<String>,
}

pub(super) async fn grid(
    State(l): State<Labelling>,
    Path(job): Path<String>,
    Query(q): Query<DateQ>,
) -> Response {
    match l.map(&job).await {
        Ok(m) => Json(m.grid(q.date.as_deref())).into_response(),
        Err(r) => r,
    }
}

pub(super) async fn scene(
    State(l): State<Labelling>,
    Path(job): Path<String>,
    Query(q): Query<DateQ>,
) -> Response {
    let m = match l.map(&job).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let date = q.date.unwrap_or_else(|| m.dates()[0].clone());
    match m.scene_png(&l.store, &date).await {
        Ok(png) => ([(header::CONTENT_TYPE, "image/png")], png.as_ref().clone()).into_response(),
        Err(e) => map_error(e),
    }
}

#[derive(Deserialize)]
pub(super) struct TileQ {
    id: String,
}

pub(super) async fn tile(
    State(l): State<Labelling>,
    Path(job): Path<String>,
    Query(q): Query<TileQ>,
) -> Response {
    let m = match l.map(&job).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if m.cell(&q.id).is_none() {
        return fail(
            StatusCode::NOT_FOUND,
            format!("tile {:?} is not on this job's map", q.id),
        );
    }
    match m.tile_png(&l.store, &q.id).await {
        Ok(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        Err(e) => map_error(e),
    }
}

#[derive(Deserialize)]
pub(super) struct QueueQ {
    mode: String,
    date: Option<String>,
    design: Option<String>,
    labels: Option<String>,
}

/// What the labelling page walks through: an assessment's sample in its drawn order
/// (predictions withheld), or every tile of a date least confident first (predictions shown).
pub(super) async fn queue(
    State(l): State<Labelling>,
    Path(job): Path<String>,
    Query(q): Query<QueueQ>,
) -> Response {
    let m = match l.map(&job).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let region = m.summary.dataset.clone();
    match q.mode.as_str() {
        "assess" => {
            let Some(name) = q.design.as_deref() else {
                return fail(StatusCode::BAD_REQUEST, "assess mode needs ?design=");
            };
            if let Err(e) = keys::validate_name(name) {
                return fail(StatusCode::BAD_REQUEST, e.to_string());
            }
            let d = match assessment::design(&l.store, &region, name).await {
                Ok(d) => d,
                Err(e) => return store_error(e),
            };
            let refs = match assessment::references(&l.store, &d).await {
                Ok(r) => r,
                Err(e) => return store_error(e),
            };
            let items: Vec<_> = d
                .tiles
                .iter()
                .map(|t| serde_json::json!({"id": t.tile_id, "label": refs.get(&t.tile_id).map(|r| &r.label)}))
                .collect();
            Json(serde_json::json!({"mode": "assess", "design": d.name, "dataset": d.dataset, "date": d.date, "classes": classes(&m, &refs), "items": items})).into_response()
        }
        "correct" => {
            let ds = match labels_dataset(&region, q.labels.as_deref()) {
                Ok(d) => d,
                Err(r) => return r,
            };
            let given = match labels::corrections(&l.store, &ds).await {
                Ok(g) => g,
                Err(e) => return store_error(e),
            };
            let sampled = match super::sampled_tiles(&l.store, &region).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            let grid = m.grid(q.date.as_deref());
            // assessment tiles are left out: they measure maps, never train them
            let mut cells: Vec<_> = m
                .cells
                .iter()
                .filter(|c| c.date == grid.date && !sampled.contains_key(&c.tile_id))
                .collect();
            cells.sort_by(|a, b| {
                a.confidence
                    .total_cmp(&b.confidence)
                    .then(a.tile_id.cmp(&b.tile_id))
            });
            let items: Vec<_> = cells
                .iter()
                .map(|c| serde_json::json!({"id": c.tile_id, "predicted": c.label, "confidence": c.confidence, "label": given.get(&c.tile_id).map(|r| &r.label)}))
                .collect();
            Json(serde_json::json!({"mode": "correct", "labels_dataset": ds, "date": grid.date, "classes": classes(&m, &given), "items": items})).into_response()
        }
        other => fail(
            StatusCode::BAD_REQUEST,
            format!("unknown mode {other:?}: assess or correct"),
        ),
    }
}

/// The job's classes, then any new class an analyst has used.
fn classes(m: &JobMap, given: &BTreeMap<String, LabelRecord>) -> Vec<String> {
    let mut out = m.summary.labels.clone();
    for r in given.values() {
        if !out.contains(&r.label) {
            out.push(r.label.clone());
        }
    }
    out
}

/// The accuracy of this job's map on every assessment of its dataset: the full Olofsson
/// table for samples drawn from this map, the overall accuracy (design-based) for samples
/// drawn from another map of the same dataset.
pub(super) async fn accuracy(State(l): State<Labelling>, Path(job): Path<String>) -> Response {
    let m = match l.map(&job).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    match accuracy_of(&l.store, &m, &job).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

pub(super) async fn accuracy_of(
    store: &Store,
    m: &JobMap,
    job: &str,
) -> Result<Vec<assessment::MapAccuracy>, StoreError> {
    assessment::map_accuracy(store, &m.summary.dataset, job, &m.cells).await
}

#[derive(Deserialize)]
pub(super) struct FormatQ {
    format: Option<String>,
}

/// Labels as a file: `csv` (default) or `geojson`.
fn export(records: &BTreeMap<String, LabelRecord>, format: Option<&str>, name: &str) -> Response {
    match format.unwrap_or("csv") {
        "csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}.csv\""),
                ),
            ],
            labels::records_csv(records),
        )
            .into_response(),
        "geojson" => (
            [(header::CONTENT_TYPE, "application/geo+json".to_string())],
            labels::records_geojson(records).to_string(),
        )
            .into_response(),
        other => fail(
            StatusCode::BAD_REQUEST,
            format!("format {other:?}: csv or geojson"),
        ),
    }
}

/// A labels dataset's corrections, for GIS tools and spreadsheets.
pub(super) async fn export_corrections(
    State(l): State<Labelling>,
    Path(dataset): Path<String>,
    Query(q): Query<FormatQ>,
) -> Response {
    if let Err(e) = keys::validate_name(&dataset) {
        return fail(StatusCode::BAD_REQUEST, e.to_string());
    }
    match labels::corrections(&l.store, &dataset).await {
        Ok(r) => export(&r, q.format.as_deref(), &format!("{dataset}-labels")),
        Err(e) => store_error(e),
    }
}

/// An assessment sample's reference labels.
pub(super) async fn export_references(
    State(l): State<Labelling>,
    Path((dataset, name)): Path<(String, String)>,
    Query(q): Query<FormatQ>,
) -> Response {
    if let Some(e) = [&dataset, &name]
        .iter()
        .find_map(|n| keys::validate_name(n).err())
    {
        return fail(StatusCode::BAD_REQUEST, e.to_string());
    }
    let d = match assessment::design(&l.store, &dataset, &name).await {
        Ok(d) => d,
        Err(e) => return store_error(e),
    };
    match assessment::references(&l.store, &d).await {
        Ok(r) => export(&r, q.format.as_deref(), &format!("{name}-reference")),
        Err(e) => store_error(e),
    }
}
