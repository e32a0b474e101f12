//! Which tiles have feature vectors for one (dataset, backbone), read from the shards
//! themselves: featurize skips the tiles it finds here, train waits for them, metrics counts
//! them. Kept in memory and refreshed incrementally (a LIST of the shards, then one ranged
//! GET of the header of each shard not seen before), so the shard stays the only record and
//! no per-tile object is written or read.

use crate::{
    keys,
    shards::{self, HeaderIds, HeaderTiles},
    store::StoreError,
    Store,
};
use futures::StreamExt;
use std::collections::HashSet;
use std::time::SystemTime;

/// Shard headers read at once.
const PARALLEL_READS: usize = 16;

/// The featurized tile ids of one (dataset, backbone).
#[derive(Debug)]
pub struct FeatureIndex {
    prefix: String,
    shards: HashSet<String>,
    unreadable: HashSet<String>,
    ids: HashSet<String>,
    /// Content hashes featurized per tile id (shards that record them).
    versions: std::collections::HashMap<String, HashSet<String>>,
    /// Tile ids from shards of earlier versions, without hashes: taken as current.
    unverified: HashSet<String>,
    refreshed: Option<SystemTime>,
}

/// What one refresh found.
#[derive(Debug, Default)]
pub struct Refresh {
    /// Shards read for the first time.
    pub new_shards: usize,
    /// Shards whose header could not be parsed, with the reason; their tiles count as not
    /// featurized (and are not read again).
    pub unreadable: Vec<(String, String)>,
}

impl FeatureIndex {
    /// An empty index of `dataset`'s `backbone` features.
    pub fn new(dataset: &str, backbone: &str) -> Self {
        Self {
            prefix: keys::feature_shards_prefix(dataset, backbone),
            shards: HashSet::new(),
            unreadable: HashSet::new(),
            ids: HashSet::new(),
            versions: Default::default(),
            unverified: HashSet::new(),
            refreshed: None,
        }
    }

    /// An index read from the store now.
    pub async fn load(store: &Store, dataset: &str, backbone: &str) -> Result<Self, StoreError> {
        let mut index = Self::new(dataset, backbone);
        index.refresh(store).await?;
        Ok(index)
    }

    /// Whether `tile_id` has features.
    pub fn contains(&self, tile_id: &str) -> bool {
        self.ids.contains(tile_id)
    }

    /// Whether `tile_id` has features of the image whose sha256 is `sha256` (a tile whose
    /// image changed under the same id has not; shards without hashes are taken as current).
    pub fn contains_version(&self, tile_id: &str, sha256: &str) -> bool {
        self.unverified.contains(tile_id)
            || self
                .versions
                .get(tile_id)
                .is_some_and(|v| v.contains(sha256))
    }

    /// Number of distinct featurized tiles.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no tile has features.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of readable shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// When the last refresh started listing (anything durable before it is in the index).
    pub fn refreshed_at(&self) -> Option<SystemTime> {
        self.refreshed
    }

    /// Records a shard this process has just written (or has read the header of).
    pub fn insert(&mut self, shard_key: &str, tiles: HeaderTiles) {
        self.shards.insert(shard_key.to_string());
        match tiles.sha256 {
            Some(hashes) => {
                for (id, h) in tiles.ids.iter().zip(hashes) {
                    self.versions.entry(id.clone()).or_default().insert(h);
                }
            }
            None => self.unverified.extend(tiles.ids.iter().cloned()),
        }
        self.ids.extend(tiles.ids);
    }

    /// Lists the shards and reads the headers of those not seen before. If a shard it knew
    /// is gone (features deleted to be computed again), the index starts over from the
    /// listing, so those tiles count as not featurized.
    pub async fn refresh(&mut self, store: &Store) -> Result<Refresh, StoreError> {
        let started = SystemTime::now();
        let listed: Vec<String> = store
            .list(&self.prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let present: HashSet<&str> = listed.iter().map(String::as_str).collect();
        if self.shards.iter().any(|k| !present.contains(k.as_str())) {
            self.shards.clear();
            self.unreadable.clear();
            self.ids.clear();
            self.versions.clear();
            self.unverified.clear();
        }
        let r = self.absorb(store, listed).await?;
        self.refreshed = Some(started);
        Ok(r)
    }

    /// Reads the headers of the listed `keys` not seen before (keys outside this index's
    /// prefix are ignored), e.g. from one LIST covering many indexes.
    pub async fn absorb(
        &mut self,
        store: &Store,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<Refresh, StoreError> {
        let new: Vec<String> = keys
            .into_iter()
            .filter(|k| {
                k.starts_with(&self.prefix)
                    && !self.shards.contains(k)
                    && !self.unreadable.contains(k)
            })
            .collect();
        let read = futures::stream::iter(new.into_iter().map(|key| async move {
            let ids = header_ids(store, &key).await;
            (key, ids)
        }))
        .buffer_unordered(PARALLEL_READS)
        .collect::<Vec<_>>()
        .await;
        let mut report = Refresh::default();
        for (key, ids) in read {
            match ids {
                Ok(Ok(ids)) => {
                    report.new_shards += 1;
                    self.insert(&key, ids);
                }
                // deleted between LIST and GET: nothing to index
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
                Ok(Err(reason)) => {
                    self.unreadable.insert(key.clone());
                    report.unreadable.push((key, reason));
                }
            }
        }
        Ok(report)
    }
}

/// A shard's tile ids from its header: usually one ranged GET, two for a long header.
/// The inner error is a shard that is not ours to read.
pub async fn header_ids(
    store: &Store,
    key: &str,
) -> Result<Result<HeaderTiles, String>, StoreError> {
    let start = store
        .get_range(key, 0, shards::HEADER_PROBE_BYTES as u64)
        .await?;
    match shards::header_tile_ids(&start) {
        Ok(HeaderIds::Ids(ids)) => Ok(Ok(ids)),
        Ok(HeaderIds::NeedBytes(n)) => {
            let whole = store.get_range(key, 0, n as u64).await?;
            Ok(match shards::header_tile_ids(&whole) {
                Ok(HeaderIds::Ids(ids)) => Ok(ids),
                Ok(HeaderIds::NeedBytes(_)) => Err("shard ends inside its header".into()),
                Err(e) => Err(e.to_string()),
            })
        }
        Err(e) => Ok(Err(e.to_string())),
    }
}
