//! Analysts' writes: drawing an assessment sample and storing labels (assessment references,
//! or corrections that also go to featurize for training).

use super::{
    check_labels_dataset, fail, labels_dataset, read::accuracy_of, sampled_tiles, store_error,
    Labelling,
};
use crate::maps::MapError;
use aerial_shared::{
    assessment::{self, Design},
    keys,
    labels::{self, LabelRecord},
    store::StoreError,
    topology,
};
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct NewDesign {
    date: String,
    per_class: u32,
    seed: Option<u64>,
}

pub(super) async fn create_design(
    State(l): State<Labelling>,
    Path(job): Path<String>,
    headers: HeaderMap,
    Json(req): Json<NewDesign>,
) -> Response {
    let m = match l.map_for_write(&headers, &job).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if !(1..=1000).contains(&req.per_class) {
        return fail(StatusCode::BAD_REQUEST, "per_class must be 1-1000");
    }
    if !m.dates().contains(&req.date) {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("the job has no date {:?}", req.date),
        );
    }
    let s = &m.summary;
    let tiles = s
        .tiles_per_date
        .get(&req.date)
        .map(|t| t.values().sum::<u64>())
        .unwrap_or(0);
    let km2: f64 = s
        .area_km2_per_date
        .get(&req.date)
        .map(|a| a.values().sum())
        .unwrap_or(0.0);
    let unit_ha = if tiles > 0 {
        km2 * 100.0 / tiles as f64
    } else {
        0.0
    };
    let seed = req
        .seed
        .unwrap_or_else(|| chrono::Utc::now().timestamp() as u64);
    // one sample per (job, date, seed): drawing again never replaces a sample being labelled
    let name = format!("{job}-{}-s{seed}", req.date);
    if let Err(e) = keys::validate_name(&name) {
        return fail(StatusCode::BAD_REQUEST, e.to_string());
    }
    match l
        .store
        .exists(&keys::assessment_design(&s.dataset, &name))
        .await
    {
        Ok(false) => {}
        Ok(true) => {
            return fail(
                StatusCode::CONFLICT,
                format!("sample {name} exists: continue it, or draw with another seed"),
            )
        }
        Err(e) => return store_error(e),
    }
    // tiles already corrected (trained on) are not drawn: a sample must not measure a map on
    // its own training tiles; the strata sizes stay those of the whole map
    let corrected = match labels::corrections(&l.store, &format!("{}-labels", s.dataset)).await {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    let drawable: Vec<_> = m
        .cells
        .iter()
        .filter(|c| !corrected.contains_key(&c.tile_id))
        .cloned()
        .collect();
    let mut d = assessment::draw(
        &name,
        &s.dataset,
        &job,
        &s.run,
        &req.date,
        &s.labels,
        &drawable,
        req.per_class,
        seed,
        unit_ha,
    );
    d.stratum_units = assessment::draw(
        &name, &s.dataset, &job, &s.run, &req.date, &s.labels, &m.cells, 0, seed, unit_ha,
    )
    .stratum_units;
    if let Err(e) = assessment::put_design(&l.store, &d).await {
        return store_error(e);
    }
    tracing::info!(job = %job, design = %d.name, sample = d.tiles.len(), seed, "assessment sample drawn");
    Json(d).into_response()
}

#[derive(Deserialize)]
pub(super) struct LabelReq {
    mode: String,
    tile_id: String,
    label: String,
    by: String,
    design: Option<String>,
    labels_dataset: Option<String>,
}

pub(super) async fn put_label(
    State(l): State<Labelling>,
    Path(job): Path<String>,
    headers: HeaderMap,
    Json(req): Json<LabelReq>,
) -> Response {
    let m = match l.map_for_write(&headers, &job).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(cell) = m.cell(&req.tile_id) else {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("tile {:?} is not on this job's map", req.tile_id),
        );
    };
    if !m.summary.labels.contains(&req.label) {
        if let Err(e) = labels::validate_class(&req.label) {
            return fail(StatusCode::BAD_REQUEST, e);
        }
    }
    if let Err(e) = labels::validate_analyst(&req.by) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    let Some(row) = m.tiles.get(&req.tile_id) else {
        return fail(StatusCode::BAD_REQUEST, "tile not in the region's manifest");
    };
    let spec = match l.spec(&job).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rec = LabelRecord {
        tile: row.to_tile(&m.summary.dataset, &spec.backbone),
        label: req.label.clone(),
        by: req.by.trim().to_string(),
        at: chrono::Utc::now(),
        job: job.clone(),
        predicted: cell.label.clone(),
    };
    match req.mode.as_str() {
        "assess" => {
            let Some(name) = req.design.as_deref() else {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "an assessment label names its design",
                );
            };
            if let Err(e) = keys::validate_name(name) {
                return fail(StatusCode::BAD_REQUEST, e.to_string());
            }
            let d: Design = match assessment::design(&l.store, &m.summary.dataset, name).await {
                Ok(d) => d,
                Err(e) => return store_error(e),
            };
            if !d.tiles.iter().any(|t| t.tile_id == req.tile_id) {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("tile {:?} is not in sample {}", req.tile_id, d.name),
                );
            }
            if let Err(e) = assessment::put_reference(&l.store, &d, &rec).await {
                return store_error(e);
            }
            // the design's own job gets its accuracy outputs rewritten; the label is stored
            // either way (/accuracy computes from the labels themselves)
            if let Err(e) = write_outputs(&l, &d).await {
                tracing::warn!(design = %d.name, error = %e, "accuracy outputs not rewritten");
            }
            Json(serde_json::json!({"stored": "assessment", "design": d.name})).into_response()
        }
        "correct" => {
            let ds = match labels_dataset(&m.summary.dataset, req.labels_dataset.as_deref()) {
                Ok(d) => d,
                Err(r) => return r,
            };
            if let Err(r) = check_labels_dataset(&l.store, &ds, &m.summary.dataset).await {
                return r;
            }
            match sampled_tiles(&l.store, &m.summary.dataset).await {
                Ok(s) => {
                    if let Some(design) = s.get(&req.tile_id) {
                        return fail(
                            StatusCode::CONFLICT,
                            format!(
                                "tile {:?} is in assessment sample {design}: its label measures maps and is never used to train them",
                                req.tile_id
                            ),
                        );
                    }
                }
                Err(r) => return r,
            }
            let tile = match labels::put_correction(&l.store, &ds, &rec).await {
                Ok(t) => t,
                Err(e) => return store_error(e),
            };
            // features for training: featurize computes them as for any labelled tile; if the
            // broker is away the label is still stored, and a retrain asks again
            if l.send(topology::FEATURIZE_TILES, &tile).await.is_err() {
                return (
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({"stored": "correction", "labels_dataset": ds,
                        "features": "pending: the broker is unavailable; retraining requests them again"})),
                )
                    .into_response();
            }
            Json(serde_json::json!({"stored": "correction", "labels_dataset": ds})).into_response()
        }
        other => fail(StatusCode::BAD_REQUEST, format!("unknown mode {other:?}")),
    }
}

/// Rewrites `accuracy.json` and `accuracy_<date>.csv` of the design's job.
async fn write_outputs(l: &Labelling, d: &Design) -> Result<(), StoreError> {
    let _one_at_a_time = l.outputs.lock().await;
    let m = match l.maps.get(&l.store, &d.job).await {
        Ok(m) => m,
        Err(MapError::Store(e)) => return Err(e),
        Err(MapError::NotAMap(_)) => return Ok(()),
    };
    let all = accuracy_of(&l.store, &m, &d.job).await?;
    l.store
        .put(
            &keys::job_output(&d.job, keys::OUTPUT_ACCURACY),
            serde_json::to_vec_pretty(&all).expect("json"),
        )
        .await?;
    let refs = assessment::references(&l.store, d).await?;
    if let Ok(a) = assessment::assess_design(d, &refs) {
        l.store
            .put(
                &keys::job_output(&d.job, &keys::output_accuracy_csv(&d.date)),
                assessment::assessment_csv(&a),
            )
            .await?;
    }
    Ok(())
}
