//! One featurize batch: skip tiles that already have features, fetch and preprocess the rest
//! in parallel off the runtime, run the backbone, write one shard per (dataset, backbone),
//! publish a `featurized` event, and only then let the runtime ack.

use aerial_model::backbone::{feature_dim, Inference};
use aerial_shared::{
    feature_index::FeatureIndex,
    keys,
    messages::{EventKind, Tile},
    shards::{self, Shard},
    tile_fetch::{self, FetchError},
    worker::{by_group, BatchCtx, BatchHandler, Outcome},
    Store, Telemetry,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Publish stamps are whole seconds from another machine's clock: an index listed less than
/// this after a tile's publish time may predate features written just before it.
const CLOCK_MARGIN: Duration = Duration::from_secs(5);

/// The featurized tiles of one (dataset, backbone), shared by the batches in flight.
type SharedIndex = Arc<tokio::sync::Mutex<FeatureIndex>>;

/// The featurize handler.
pub struct Featurizer {
    store: Store,
    inference: Inference,
    telemetry: Telemetry,
    indexes: Mutex<HashMap<(String, String), SharedIndex>>,
}

/// Whether an index listed at `refreshed` may be out of date for a tile: it may if the
/// tile's message was published (or redelivered) after, or too near, that listing. Features
/// written or deleted before the message was published are then seen by a refresh; a copy of
/// the tile featurized concurrently elsewhere is not (readers keep one row per tile id).
fn stale_for(refreshed: Option<SystemTime>, published: Option<u64>, redelivered: bool) -> bool {
    match (refreshed, published) {
        (Some(r), Some(p)) if !redelivered => {
            r < UNIX_EPOCH + Duration::from_secs(p) + CLOCK_MARGIN
        }
        _ => true,
    }
}

impl Featurizer {
    /// A handler writing shards to `store`.
    pub fn new(store: Store, inference: Inference, telemetry: Telemetry) -> Self {
        Self {
            store,
            inference,
            telemetry,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    fn index(&self, dataset: &str, backbone: &str) -> SharedIndex {
        let mut all = self.indexes.lock().expect("index map lock");
        all.entry((dataset.to_string(), backbone.to_string()))
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(FeatureIndex::new(
                    dataset, backbone,
                )))
            })
            .clone()
    }

    /// Splits `tiles` into those already featurized (acked) and those to do, refreshing the
    /// index from the store first when it may be out of date for them.
    async fn skip_done(
        &self,
        ctx: &BatchCtx,
        index: &SharedIndex,
        tiles: Vec<(usize, Tile)>,
        out: &mut Vec<(usize, Outcome)>,
    ) -> Vec<(usize, Tile)> {
        let mut idx = index.lock().await;
        let refreshed = idx.refreshed_at();
        // known tiles count too: their features may have been deleted to be recomputed
        let stale = tiles.iter().any(|(i, _)| {
            stale_for(
                refreshed,
                ctx.published.get(*i).copied().flatten(),
                ctx.redelivered.get(*i).copied().unwrap_or(true),
            )
        });
        if stale {
            match idx.refresh(&self.store).await {
                Ok(r) => {
                    tracing::debug!(
                        shards = idx.shards(),
                        tiles = idx.len(),
                        new = r.new_shards,
                        "feature index refreshed"
                    );
                    for (key, reason) in r.unreadable {
                        tracing::warn!(%key, %reason, "feature shard unreadable; its tiles will be featurized again");
                    }
                }
                Err(e) => {
                    out.extend(
                        tiles
                            .into_iter()
                            .map(|(i, _)| (i, Outcome::Retry(e.to_string()))),
                    );
                    return Vec::new();
                }
            }
        }
        let mut todo = Vec::with_capacity(tiles.len());
        for (i, t) in tiles {
            if idx.contains_version(&t.tile_id, &t.sha256) {
                out.push((i, Outcome::Ack));
            } else {
                todo.push((i, t));
            }
        }
        todo
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
        let index = self.index(dataset, backbone);
        let todo = self.skip_done(ctx, &index, tiles, &mut out).await;
        let fetched = {
            let refs: Vec<&Tile> = todo.iter().map(|(_, t)| t).collect();
            tile_fetch::fetch_tensors(&self.store, &refs).await
        };
        let mut input = Vec::new();
        let mut ok: Vec<(usize, Tile)> = Vec::new();
        for ((i, t), r) in todo.into_iter().zip(fetched) {
            match r {
                Ok(x) => {
                    input.extend_from_slice(&x);
                    ok.push((i, t));
                }
                Err(FetchError::Bad(reason)) => out.push((i, Outcome::Dead(reason))),
                Err(FetchError::Transient(reason)) => out.push((i, Outcome::Retry(reason))),
            }
        }
        if ok.is_empty() {
            return out;
        }
        let n = ok.len();
        let features = match self
            .inference
            .features(backbone, aerial_shared::messages::Tta::None, input, n)
            .await
        {
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
            tile_sha256: Some(ok.iter().map(|(_, t)| t.sha256.clone()).collect()),
        };
        let written = async {
            let bytes = shards::encode(&shard).map_err(|e| e.to_string())?;
            self.store.put(&key, bytes).await.map_err(|e| e.to_string())
        }
        .await;
        match written {
            Ok(()) => {
                index.lock().await.insert(
                    &key,
                    aerial_shared::shards::HeaderTiles {
                        ids: shard.tile_ids,
                        sha256: shard.tile_sha256,
                    },
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_stale_for_messages_published_near_or_after_its_listing() {
        let listed = UNIX_EPOCH + Duration::from_secs(1_000);
        // published well before the listing: features durable before it are in the index
        assert!(!stale_for(Some(listed), Some(900), false));
        // published within the clock margin of the listing, or after it
        assert!(stale_for(Some(listed), Some(996), false));
        assert!(stale_for(Some(listed), Some(1_200), false));
        // redelivered (its first delivery may have written a shard), unstamped, never listed
        assert!(stale_for(Some(listed), Some(900), true));
        assert!(stale_for(Some(listed), None, false));
        assert!(stale_for(None, Some(900), false));
    }
}
