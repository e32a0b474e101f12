//! One batch of `score.tiles`: fetch and preprocess in parallel off the runtime, featurize on
//! the inference workers, classify, write the batch's predictions, tell the coordinator, and
//! only then let the runtime ack.

use crate::feature_cache::{FeatureCache, Space};
use crate::models::{Models, RunModel, Scoring};
use crate::written::Written;
use aerial_model::backbone::{InferError, Inference};
use aerial_model::classifier::argmax_rows;
use aerial_shared::{
    keys,
    messages::ScoreProgress,
    messages::ScoreTile,
    predictions::{DeadTile, PredictionBatch, PredictionRow},
    tile_fetch::{self, FetchError},
    topology,
    worker::{by_group, BatchCtx, BatchHandler, Outcome},
    Store, Telemetry,
};
use ndarray::Array2;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The `score.tiles` handler.
pub struct Scorer {
    store: Store,
    inference: Inference,
    telemetry: Telemetry,
    models: Models,
    cache: FeatureCache,
    written: Written,
    replica: String,
}

fn short_hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))[..32].to_string()
}

impl Scorer {
    /// A handler reading tiles from and writing predictions to `store`.
    pub fn new(store: Store, inference: Inference, telemetry: Telemetry, replica: String) -> Self {
        Self {
            store,
            inference,
            telemetry,
            models: Models::default(),
            cache: FeatureCache::default(),
            written: Written::default(),
            replica,
        }
    }

    /// Tells the job's coordinator that `key` was written.
    async fn progress(&self, ctx: &BatchCtx, job_id: &str, key: String) -> Result<(), String> {
        ctx.publisher
            .send(
                topology::SCORE_PROGRESS,
                &ScoreProgress {
                    job_id: job_id.into(),
                    key,
                    replica: self.replica.clone(),
                },
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Model input of each tile, in order: stored tiles read as they are, windows cut from
    /// the tiles they overlap.
    async fn fetch(&self, tiles: &[&ScoreTile]) -> Vec<Result<Vec<f32>, FetchError>> {
        let plain: Vec<&aerial_shared::messages::Tile> = tiles
            .iter()
            .filter(|st| st.window.is_none())
            .map(|st| &st.tile)
            .collect();
        let windows: Vec<_> = tiles
            .iter()
            .filter_map(|st| st.window.as_ref().map(|w| (&st.tile, w)))
            .collect();
        let mut plain = tile_fetch::fetch_tensors(&self.store, &plain)
            .await
            .into_iter();
        let mut windows = tile_fetch::fetch_windows(&self.store, &windows)
            .await
            .into_iter();
        tiles
            .iter()
            .map(|st| {
                let next = if st.window.is_some() {
                    windows.next()
                } else {
                    plain.next()
                };
                next.expect("one input per tile")
            })
            .collect()
    }

    /// Records a refused tile for the job report, then dead-letters it.
    async fn refuse(&self, ctx: &BatchCtx, st: &ScoreTile, reason: String) -> Outcome {
        let key = keys::dead_tile(&st.job_id, &short_hash(&st.tile.tile_id));
        let dead = DeadTile {
            job_id: st.job_id.clone(),
            tile_id: st.tile.tile_id.clone(),
            date: st.tile.date.clone(),
            reason: reason.clone(),
            replica: self.replica.clone(),
        };
        if let Err(e) = self.store.put_json(&key, &dead).await {
            return Outcome::Retry(e.to_string());
        }
        if let Err(e) = self.progress(ctx, &st.job_id, key).await {
            return Outcome::Retry(e);
        }
        Outcome::Dead(reason)
    }

    /// Class probabilities `[n, labels]` of the `ok` tiles: `input` holds the preprocessed
    /// tiles without cached features, in order. A classic run's new features join the cache.
    async fn classify(
        &self,
        model: &Arc<RunModel>,
        ok: &[(usize, ScoreTile, Option<Vec<f32>>)],
        input: Vec<f32>,
    ) -> Result<Array2<f64>, InferError> {
        let n = ok.len();
        match &model.scoring {
            Scoring::Classic(classifier) => {
                let misses: Vec<&ScoreTile> = ok
                    .iter()
                    .filter(|(_, _, c)| c.is_none())
                    .map(|(_, st, _)| st)
                    .collect();
                let backbone = &model.descriptor.backbone;
                let tta = model.descriptor.params.tta;
                let computed = if misses.is_empty() {
                    Vec::new()
                } else {
                    self.inference
                        .features(backbone, tta, input, misses.len())
                        .await?
                };
                let dim = if misses.is_empty() {
                    ok[0].2.as_ref().map_or(0, Vec::len)
                } else {
                    computed.len() / misses.len()
                };
                if !misses.is_empty() {
                    let shas = misses.iter().map(|st| st.tile.sha256.clone()).collect();
                    let ds = &misses[0].tile.dataset;
                    if let Err(e) = self
                        .cache
                        .put(
                            &self.store,
                            Space {
                                dataset: ds,
                                backbone,
                                tta,
                            },
                            shas,
                            computed.clone(),
                            dim,
                        )
                        .await
                    {
                        tracing::warn!(error = %e, "feature cache not written");
                    }
                }
                let mut x = Vec::with_capacity(n * dim);
                let mut fresh = computed.chunks(dim.max(1));
                for (_, _, c) in ok {
                    match c {
                        Some(v) => x.extend(v.iter().map(|&f| f64::from(f))),
                        None => x.extend(
                            fresh
                                .next()
                                .expect("one row per miss")
                                .iter()
                                .map(|&f| f64::from(f)),
                        ),
                    }
                }
                let Ok(x) = Array2::from_shape_vec((n, dim), x) else {
                    return Err(InferError::Shape(format!(
                        "{n} tiles' features are not all {dim} wide"
                    )));
                };
                let c = classifier.clone();
                tokio::task::spawn_blocking(move || c.predict_proba(x))
                    .await
                    .map_err(|e| InferError::Shape(format!("classifier failed: {e}")))
            }
            Scoring::Finetuned { model: f, .. } => {
                let p = self.inference.finetuned(f, input, n).await?;
                let k = p.len() / n;
                Ok(
                    Array2::from_shape_vec((n, k), p.into_iter().map(f64::from).collect())
                        .expect("probabilities are n × classes"),
                )
            }
        }
    }

    /// The tiles still to score: redelivered tiles already in a written batch object are
    /// acked (after that object is reported again) instead of being scored into a second one.
    /// `None` when the check itself failed (every tile is then retried, in `out`).
    async fn not_yet_written(
        &self,
        ctx: &BatchCtx,
        job_id: &str,
        tiles: Vec<(usize, ScoreTile)>,
        out: &mut Vec<(usize, Outcome)>,
    ) -> Option<Vec<(usize, ScoreTile)>> {
        let redelivered: Vec<String> = tiles
            .iter()
            .filter(|(i, _)| ctx.redelivered.get(*i).copied().unwrap_or(false))
            .map(|(_, st)| st.tile.tile_id.clone())
            .collect();
        if redelivered.is_empty() {
            return Some(tiles);
        }
        let ids: Vec<&str> = redelivered.iter().map(String::as_str).collect();
        let found = match self.written.lookup(&self.store, job_id, &ids).await {
            Ok(f) => f,
            Err(e) => {
                out.extend(
                    tiles
                        .into_iter()
                        .map(|(i, _)| (i, Outcome::Retry(e.to_string()))),
                );
                return None;
            }
        };
        let holder: std::collections::HashMap<String, String> = redelivered
            .into_iter()
            .zip(found)
            .filter_map(|(id, k)| k.map(|k| (id, k)))
            .collect();
        let mut reported: std::collections::HashMap<String, Result<(), String>> =
            Default::default();
        let mut rest = Vec::with_capacity(tiles.len());
        for (i, st) in tiles {
            match holder.get(&st.tile.tile_id) {
                Some(key) if ctx.redelivered.get(i).copied().unwrap_or(false) => {
                    if !reported.contains_key(key) {
                        let r = self.progress(ctx, job_id, key.clone()).await;
                        reported.insert(key.clone(), r);
                    }
                    out.push((
                        i,
                        match &reported[key] {
                            Ok(()) => Outcome::Ack,
                            Err(e) => Outcome::Retry(e.clone()),
                        },
                    ));
                }
                _ => rest.push((i, st)),
            }
        }
        if !holder.is_empty() {
            tracing::info!(
                job = job_id,
                already = holder.len(),
                "redelivered tiles already written; acked, not scored again"
            );
        }
        Some(rest)
    }

    /// Scores one (job, run) group; returns outcomes for its indices.
    async fn group(
        &self,
        ctx: &BatchCtx,
        job_id: &str,
        run: &str,
        tiles: Vec<(usize, ScoreTile)>,
    ) -> Vec<(usize, Outcome)> {
        let mut out = Vec::with_capacity(tiles.len());
        let model = match self.models.get(&self.store, run).await {
            Ok(m) => m,
            Err(e) if e.is_transient() => {
                return tiles
                    .into_iter()
                    .map(|(i, _)| (i, Outcome::Retry(e.to_string())))
                    .collect()
            }
            Err(e) => {
                for (i, st) in tiles {
                    out.push((i, self.refuse(ctx, &st, e.to_string()).await));
                }
                return out;
            }
        };
        let started = std::time::Instant::now();
        // classic runs: tiles whose content the cache knows skip the fetch and the CNN
        let mut cached = vec![None; tiles.len()];
        let tiles = match self.not_yet_written(ctx, job_id, tiles, &mut out).await {
            Some(t) if !t.is_empty() => t,
            _ => return out,
        };
        if matches!(model.scoring, Scoring::Classic(_)) {
            let shas: Vec<&str> = tiles
                .iter()
                .map(|(_, st)| st.tile.sha256.as_str())
                .collect();
            match self
                .cache
                .lookup(
                    &self.store,
                    Space {
                        dataset: &tiles[0].1.tile.dataset,
                        backbone: &model.descriptor.backbone,
                        tta: model.descriptor.params.tta,
                    },
                    &shas,
                )
                .await
            {
                // a cached vector of another width (another model under the same backbone
                // name) is a miss, never a wrong input to the classifier
                Ok(c) => {
                    cached = c
                        .into_iter()
                        .map(|v| {
                            v.filter(|v| model.descriptor.feature_dim.is_none_or(|d| v.len() == d))
                        })
                        .collect()
                }
                Err(e) => tracing::warn!(error = %e, "feature cache unavailable; computing"),
            }
        }
        let fetched = {
            let uncached: Vec<&ScoreTile> = tiles
                .iter()
                .zip(&cached)
                .filter(|(_, c)| c.is_none())
                .map(|((_, st), _)| st)
                .collect();
            self.fetch(&uncached).await
        };
        let mut fetched = fetched.into_iter();
        let mut input = Vec::new();
        let mut ok: Vec<(usize, ScoreTile, Option<Vec<f32>>)> = Vec::new();
        for ((i, st), c) in tiles.into_iter().zip(cached) {
            if c.is_some() {
                ok.push((i, st, c));
                continue;
            }
            match fetched.next().expect("one fetch per uncached tile") {
                Ok(x) => {
                    input.extend_from_slice(&x);
                    ok.push((i, st, None));
                }
                Err(FetchError::Bad(reason)) => out.push((i, self.refuse(ctx, &st, reason).await)),
                Err(FetchError::Transient(transient)) => out.push((i, Outcome::Retry(transient))),
            }
        }
        if ok.is_empty() {
            return out;
        }
        let n = ok.len();
        let fetched_at = std::time::Instant::now();
        let probs = match self.classify(&model, &ok, input).await {
            Ok(p) => p,
            Err(e) => {
                self.telemetry
                    .worker
                    .errors
                    .with_label_values(&["inference"])
                    .inc();
                if e.is_permanent() {
                    for (i, st, _) in &ok {
                        out.push((*i, self.refuse(ctx, st, e.to_string()).await));
                    }
                } else {
                    out.extend(
                        ok.iter()
                            .map(|(i, _, _)| (*i, Outcome::Retry(e.to_string()))),
                    );
                }
                return out;
            }
        };
        let classified_at = std::time::Instant::now();
        let labels = &model.descriptor.labels;
        let best = argmax_rows(&probs);
        let rows: Vec<PredictionRow> = ok
            .iter()
            .zip(best)
            .zip(probs.rows())
            .map(|(((_, st, _), b), p)| {
                PredictionRow::new(
                    &st.tile,
                    labels[b].clone(),
                    p.iter().map(|&v| v as f32).collect(),
                )
            })
            .collect();
        let mut ids: Vec<&str> = rows.iter().map(|r| r.tile_id.as_str()).collect();
        ids.sort_unstable();
        // named by its tile ids: a redelivered batch overwrites its own predictions
        let key = keys::prediction_batch(job_id, &short_hash(&ids.join("\n")));
        let batch = PredictionBatch {
            job_id: job_id.into(),
            replica: self.replica.clone(),
            rows,
        };
        let written = async {
            self.store
                .put(&key, serde_json::to_vec(&batch).expect("serialisable"))
                .await
                .map_err(|e| e.to_string())?;
            self.progress(ctx, job_id, key.clone()).await
        }
        .await;
        match written {
            Ok(()) => {
                tracing::debug!(
                    job = job_id,
                    tiles = n,
                    fetch_ms = (fetched_at - started).as_millis() as u64,
                    classify_ms = (classified_at - fetched_at).as_millis() as u64,
                    write_ms = classified_at.elapsed().as_millis() as u64,
                    "batch scored"
                );
                self.telemetry
                    .tiles
                    .with_label_values(&[ok[0].1.tile.dataset.as_str()])
                    .inc_by(n as u64);
                out.extend(ok.iter().map(|(i, _, _)| (*i, Outcome::Ack)));
            }
            Err(e) => out.extend(ok.iter().map(|(i, _, _)| (*i, Outcome::Retry(e.clone())))),
        }
        out
    }
}

#[async_trait::async_trait]
impl BatchHandler for Scorer {
    type Msg = ScoreTile;

    async fn handle(&self, ctx: &BatchCtx, batch: Vec<ScoreTile>) -> Vec<Outcome> {
        let key = |st: &ScoreTile| (st.job_id.clone(), st.run.clone());
        let tiles = batch.clone();
        let mut out = by_group(batch, key, |(job, run), tiles| async move {
            self.group(ctx, &job, &run, tiles).await
        })
        .await;
        // a tile on its last allowed delivery that failed again is refused with the reason,
        // so its job still completes (with it among the refused) instead of waiting forever
        for (i, o) in out.iter_mut().enumerate() {
            let info = &ctx.deliveries[i];
            if let Outcome::Retry(why) = o {
                if info.last_try {
                    let reason = format!("gave up after {} deliveries: {why}", info.delivery);
                    *o = self.refuse(ctx, &tiles[i], reason).await;
                }
            }
        }
        out
    }
}
