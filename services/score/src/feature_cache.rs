//! Backbone features of a region's tiles, kept by the score replicas so a new classic run
//! maps the region again without running the CNN: shards under
//! `features/<dataset>/<backbone>/by-content/` (`by-content-d4/` for features averaged over
//! the 8 test-time views), in the featurize shard format, whose row ids
//! are the tiles' content hashes (sha256 of the tile bytes). A tile whose bytes change gets a
//! new hash, so a cached vector can never belong to other pixels.

use aerial_shared::{feature_index, keys, messages::Tta, shards, store::StoreError, Store};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How stale the list of cache shards may be before a lookup lists again.
const RELIST: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Index {
    /// content hash → (shard key, row)
    at: HashMap<String, (String, usize)>,
    shards: HashSet<String>,
    listed: Option<Instant>,
}

/// Which cached features: a dataset's, from a backbone, over the views of a run's `tta`.
#[derive(Debug, Clone, Copy)]
pub struct Space<'a> {
    /// Dataset of the tiles.
    pub dataset: &'a str,
    /// Backbone name.
    pub backbone: &'a str,
    /// Test-time views averaged.
    pub tta: Tta,
}

impl Space<'_> {
    fn prefix(&self) -> String {
        keys::feature_cache_prefix(self.dataset, self.backbone, self.tta)
    }
}

/// Per-replica view of the cache, by (dataset, backbone).
#[derive(Default)]
pub struct FeatureCache {
    indexes: Mutex<HashMap<String, Index>>,
}

impl FeatureCache {
    /// Features of each tile whose content is cached (`None` for the others), in order.
    pub async fn lookup(
        &self,
        store: &Store,
        of: Space<'_>,
        shas: &[&str],
    ) -> Result<Vec<Option<Vec<f32>>>, StoreError> {
        let prefix = of.prefix();
        let wanted: Vec<Option<(String, usize)>> = {
            let mut all = self.indexes.lock().await;
            let idx = all.entry(prefix.clone()).or_default();
            if idx.listed.is_none_or(|t| t.elapsed() > RELIST) {
                refresh(store, &prefix, idx).await?;
            }
            shas.iter().map(|s| idx.at.get(*s).cloned()).collect()
        };
        let keys: HashSet<String> = wanted.iter().flatten().map(|(k, _)| k.clone()).collect();
        let got: Vec<(String, Result<shards::Shard, String>)> = futures::stream::iter(keys)
            .map(|k: String| async move {
                let r = match store.get(&k).await {
                    Ok(b) => shards::decode(&b).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (k, r)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let decoded: HashMap<String, shards::Shard> = got
            .into_iter()
            .filter_map(|(k, r)| match r {
                Ok(s) => Some((k, s)),
                Err(e) => {
                    // a cache shard that went away or is damaged: recompute those tiles
                    tracing::warn!(shard = %k, error = %e, "feature cache shard unreadable");
                    None
                }
            })
            .collect();
        Ok(wanted
            .into_iter()
            .map(|w| {
                let (k, row) = w?;
                let s = decoded.get(&k)?;
                s.features
                    .get(row * s.dim..(row + 1) * s.dim)
                    .map(<[f32]>::to_vec)
            })
            .collect())
    }

    /// Stores freshly computed features (`[shas.len(), dim]` row-major) for later maps.
    pub async fn put(
        &self,
        store: &Store,
        of: Space<'_>,
        shas: Vec<String>,
        features: Vec<f32>,
        dim: usize,
    ) -> Result<(), StoreError> {
        if shas.is_empty() {
            return Ok(());
        }
        let mut sorted = shas.clone();
        sorted.sort_unstable();
        let name = hex::encode(Sha256::digest(sorted.join("\n").as_bytes()))[..32].to_string();
        let key = format!("{}{name}.safetensors", of.prefix());
        // rows are named by the tile's sha256 already: the content is the name
        let bytes = shards::encode(&shards::Shard {
            tile_ids: shas.clone(),
            dim,
            features,
            tile_sha256: None,
        })
        .map_err(|e| StoreError::Request {
            op: "encode_shard",
            key: key.clone(),
            message: e.to_string(),
        })?;
        store.put(&key, bytes).await?;
        let mut all = self.indexes.lock().await;
        let idx = all.entry(of.prefix()).or_default();
        idx.shards.insert(key.clone());
        for (row, s) in shas.into_iter().enumerate() {
            idx.at.insert(s, (key.clone(), row));
        }
        Ok(())
    }
}

async fn refresh(store: &Store, prefix: &str, idx: &mut Index) -> Result<(), StoreError> {
    let started = Instant::now();
    let listed: Vec<String> = store
        .list(prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let present: HashSet<&String> = listed.iter().collect();
    if idx.shards.iter().any(|k| !present.contains(k)) {
        // shards were deleted: start over from the listing
        *idx = Index::default();
    }
    let new: Vec<String> = listed
        .into_iter()
        .filter(|k| !idx.shards.contains(k))
        .collect();
    // per shard: its row ids, or why its header is not ours to read
    type HeaderRead = Result<Result<shards::HeaderTiles, String>, StoreError>;
    let read: Vec<(String, HeaderRead)> = futures::stream::iter(new)
        .map(|k: String| async move {
            let ids = feature_index::header_ids(store, &k).await;
            (k, ids)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (k, ids) in read {
        match ids {
            Ok(Ok(tiles)) => {
                for (row, s) in tiles.ids.into_iter().enumerate() {
                    idx.at.insert(s, (k.clone(), row));
                }
                idx.shards.insert(k);
            }
            Ok(Err(_)) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    idx.listed = Some(started);
    Ok(())
}
