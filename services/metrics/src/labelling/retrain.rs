//! The correction loop's last steps: a logistic run on the original dataset plus the
//! corrections, then a score job of the region with it.

use super::{fail, labels_dataset, store_error, Labelling};
use aerial_shared::{
    keys, labels,
    messages::{Method, ScoreJob, TrainJob, TrainParams, Tta},
    runs::{self, RunDescriptor},
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
pub(super) struct RetrainReq {
    labels_dataset: Option<String>,
    base_dataset: Option<String>,
}

/// Publishes a logistic run on the base dataset (the job's run's, by default) plus the
/// corrections; its name is returned for the page to follow.
pub(super) async fn retrain(
    State(l): State<Labelling>,
    Path(job): Path<String>,
    headers: HeaderMap,
    Json(req): Json<RetrainReq>,
) -> Response {
    let m = match l.map_for_write(&headers, &job).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let ds = match labels_dataset(&m.summary.dataset, req.labels_dataset.as_deref()) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let d: RunDescriptor = match l
        .store
        .get_json(&runs::key(&m.summary.run, runs::DESCRIPTOR))
        .await
    {
        Ok(d) => d,
        Err(e) => return store_error(e),
    };
    let base = req.base_dataset.unwrap_or(d.dataset.clone());
    if let Err(e) = keys::validate_name(&base) {
        return fail(StatusCode::BAD_REQUEST, e.to_string());
    }
    let corrections = match labels::corrections(&l.store, &ds).await {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    let n = corrections.len();
    if n == 0 {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("{ds} holds no corrections yet"),
        );
    }
    // ask for every correction's features again (featurize skips those it has): a label
    // stored while the broker was away would otherwise keep the run waiting for them
    for rec in corrections.values() {
        if let Err(r) = l
            .send(topology::FEATURIZE_TILES, &labels::training_tile(&ds, rec))
            .await
        {
            return r;
        }
    }
    // to the millisecond: a double click must not publish the same run name twice
    let run = format!("{ds}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S%3f"));
    let tj = TrainJob {
        run: run.clone(),
        dataset: base,
        also: vec![ds.clone()],
        backbone: d.backbone.clone(),
        method: Method::Logistic,
        sample_frac: 1.0,
        seed: 42,
        params: TrainParams {
            epochs: 500,
            batch: 32,
            lr: 1.0,
            retraining: None,
            trees: None,
            max_depth: None,
            // one view: test-time views multiply the featurizing of a classic run (every view
            // of every training tile), and the correction loop must stay in seconds
            tta: Tta::None,
            // the resolution the map being corrected was learnt at
            degrade_px: d.params.degrade_px,
            label_smoothing: None,
            mixup: None,
        },
        test_frac: None,
    };
    if let Err(r) = l.send(topology::TRAIN_JOBS, &tj).await {
        return r;
    }
    tracing::info!(job = %job, run = %run, corrections = n, "retrain requested");
    Json(serde_json::json!({"run": run, "corrections": n})).into_response()
}

#[derive(Deserialize)]
pub(super) struct RescoreReq {
    run: String,
}

/// Publishes a score job of the job's dataset with another run (once it has finished).
pub(super) async fn rescore(
    State(l): State<Labelling>,
    Path(job): Path<String>,
    headers: HeaderMap,
    Json(req): Json<RescoreReq>,
) -> Response {
    if let Err(r) = l.authorise(&headers) {
        return r;
    }
    if let Err(e) = keys::validate_name(&job) {
        return fail(StatusCode::BAD_REQUEST, e.to_string());
    }
    let spec = match l.spec(&job).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = keys::validate_name(&req.run) {
        return fail(StatusCode::BAD_REQUEST, e.to_string());
    }
    match l.store.exists(&runs::key(&req.run, runs::SUMMARY)).await {
        Ok(true) => {}
        Ok(false) => {
            return fail(
                StatusCode::CONFLICT,
                format!("run {} has not finished", req.run),
            )
        }
        Err(e) => return store_error(e),
    }
    let new = format!("{}-{}", spec.job.dataset, req.run);
    if let Err(e) = keys::validate_name(&new) {
        return fail(StatusCode::BAD_REQUEST, e.to_string());
    }
    let sj = ScoreJob {
        job_id: new.clone(),
        run: req.run,
        dataset: spec.job.dataset,
        smooth: spec.job.smooth,
        stride_m: spec.job.stride_m,
    };
    if let Err(r) = l.send(topology::SCORE_JOBS, &sj).await {
        return r;
    }
    Json(serde_json::json!({"job": new})).into_response()
}
