//! One featurize batch: skip tiles that already have features, fetch and preprocess the rest
//! in parallel off the runtime, run the backbone, write one shard per (dataset, backbone),
//! mark each tile, publish a `featurized` event, and only then let the runtime ack.

use aerial_featurize::backbone::{feature_dim, Inference};
use aerial_shared::{
    imaging::{self, FetchError},
    keys,
    messages::{EventKind, Tile},
    shards::{self, Shard},
    worker::{by_group, BatchCtx, BatchHandler, Outcome},
    Store, Telemetry,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Downloads and decodes in flight at once per batch.
const PARALLEL_FETCH: usize = 16;

/// The featurize handler.
pub struct Featurizer {
    store: Store,
    inference: Inference,
    telemetry: Telemetry,
}

impl Featurizer {
    /// A handler writing shards to `store`.
    pub fn new(store: Store, inference: Inference, telemetry: Telemetry) -> Self {
        Self {
            store,
            inference,
            telemetry,
        }
    }

    async fn fetch(&self, tile: &Tile) -> Result<Vec<f32>, Outcome> {
        imaging::fetch_tensor(&self.store, tile)
            .await
            .map_err(|e| match e {
                FetchError::Bad(reason) => Outcome::Dead(reason),
                FetchError::Transient(reason) => Outcome::Retry(reason),
            })
    }

    /// Features one (dataset, backbone) group; returns outcomes for its indices.
    async fn group(
        &self,
        ctx: &BatchCtx,
        dataset: &str,
        backbone: &str,
        tiles: Vec<(usize, Tile)>,
    ) -> Vec<(usize, Outcome)> {
        let mut out = Vec::with_capacity(tiles.len());
        if feature_dim(backbone).is_none() {
            return tiles
                .into_iter()
                .map(|(i, _)| (i, Outcome::Dead(format!("unknown backbone {backbone:?}"))))
                .collect();
        }
        // already featurized for this backbone: nothing to do
        let checks = futures::stream::iter(tiles.into_iter().map(|(i, t)| {
            let marker = keys::feature_marker(dataset, backbone, &t.tile_id);
            let store = self.store.clone();
            async move {
                let exists = store.exists(&marker).await;
                (i, t, exists)
            }
        }))
        .buffered(PARALLEL_FETCH)
        .collect::<Vec<_>>()
        .await;
        let mut todo = Vec::new();
        for (i, t, exists) in checks {
            match exists {
                Ok(true) => out.push((i, Outcome::Ack)),
                Ok(false) => todo.push((i, t)),
                Err(e) => out.push((i, Outcome::Retry(e.to_string()))),
            }
        }
        let fetched = futures::stream::iter(todo.into_iter().map(|(i, t)| async move {
            let r = self.fetch(&t).await;
            (i, t, r)
        }))
        .buffered(PARALLEL_FETCH)
        .collect::<Vec<_>>()
        .await;
        let mut input = Vec::new();
        let mut ok: Vec<(usize, Tile)> = Vec::new();
        for (i, t, r) in fetched {
            match r {
                Ok(x) => {
                    input.extend_from_slice(&x);
                    ok.push((i, t));
                }
                Err(o) => out.push((i, o)),
            }
        }
        if ok.is_empty() {
            return out;
        }
        let n = ok.len();
        let features = match self.inference.features(backbone, input, n).await {
            Ok(f) => f,
            Err(e) => {
                self.telemetry
                    .worker
                    .errors
                    .with_label_values(&["inference"])
                    .inc();
                out.extend(ok.iter().map(|(i, _)| (*i, Outcome::Retry(e.to_string()))));
                return out;
            }
        };
        let tile_ids: Vec<String> = ok.iter().map(|(_, t)| t.tile_id.clone()).collect();
        let mut sorted = tile_ids.clone();
        sorted.sort();
        // the shard name hashes its tile ids: a redelivered batch overwrites its own shard
        let hash = hex::encode(Sha256::digest(sorted.join("\n").as_bytes()));
        let key = keys::feature_shard(dataset, backbone, &hash[..32]);
        let shard = Shard {
            dim: features.len() / n,
            tile_ids,
            features,
        };
        let written = async {
            let bytes = shards::encode(&shard).map_err(|e| e.to_string())?;
            self.store
                .put(&key, bytes)
                .await
                .map_err(|e| e.to_string())?;
            let markers: Vec<(String, Vec<u8>)> = ok
                .iter()
                .map(|(_, t)| {
                    (
                        keys::feature_marker(dataset, backbone, &t.tile_id),
                        key.clone().into_bytes(),
                    )
                })
                .collect();
            let marks = futures::stream::iter(markers.into_iter().map(|(marker, body)| {
                let store = self.store.clone();
                async move { store.put(&marker, body).await }
            }))
            .buffer_unordered(PARALLEL_FETCH)
            .collect::<Vec<_>>()
            .await;
            marks
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        match written {
            Ok(()) => {
                self.telemetry
                    .tiles
                    .with_label_values(&[dataset])
                    .inc_by(n as u64);
                let _ = ctx
                    .publisher
                    .event(
                        ctx.service,
                        EventKind::Featurized {
                            dataset: dataset.into(),
                            backbone: backbone.into(),
                            tiles: n as u64,
                            key,
                        },
                    )
                    .await;
                out.extend(ok.iter().map(|(i, _)| (*i, Outcome::Ack)));
            }
            Err(e) => out.extend(ok.iter().map(|(i, _)| (*i, Outcome::Retry(e.clone())))),
        }
        out
    }
}

#[async_trait::async_trait]
impl BatchHandler for Featurizer {
    type Msg = Tile;

    async fn handle(&self, ctx: &BatchCtx, batch: Vec<Tile>) -> Vec<Outcome> {
        let key = |t: &Tile| (t.dataset.clone(), t.backbone.clone());
        by_group(batch, key, |(dataset, backbone), tiles| async move {
            self.group(ctx, &dataset, &backbone, tiles).await
        })
        .await
    }
}
