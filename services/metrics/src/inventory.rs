//! What the store holds, as gauges: tiles per dataset, and per dataset and backbone the tiles
//! with features. Counted from S3 every 30 s, so the figures are right however long the
//! metrics service has been running (event counters only see what happened since its start).

use aerial_shared::{feature_index::FeatureIndex, manifest, Store};
use prometheus::{IntGaugeVec, Opts, Registry};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the store is counted.
const EVERY: Duration = Duration::from_secs(30);

/// The inventory gauges.
#[derive(Clone)]
pub struct Inventory {
    tiles: IntGaugeVec,
    featurized: IntGaugeVec,
}

impl Inventory {
    /// Registers the gauges.
    pub fn new(registry: &Registry) -> Self {
        let tiles = IntGaugeVec::new(
            Opts::new(
                "pipeline_dataset_tiles",
                "Tiles in each dataset's manifest.",
            ),
            &["dataset"],
        )
        .expect("valid metric");
        let featurized = IntGaugeVec::new(
            Opts::new(
                "pipeline_dataset_featurized_tiles",
                "Tiles of each dataset with feature vectors, per backbone.",
            ),
            &["dataset", "backbone"],
        )
        .expect("valid metric");
        registry.register(Box::new(tiles.clone())).expect("unique");
        registry
            .register(Box::new(featurized.clone()))
            .expect("unique");
        Self { tiles, featurized }
    }

    async fn count(
        &self,
        store: &Store,
        indexes: &mut BTreeMap<(String, String), FeatureIndex>,
    ) -> Result<(), aerial_shared::store::StoreError> {
        let datasets: BTreeSet<String> = store
            .list("datasets/")
            .await?
            .into_iter()
            .filter_map(|o| o.key.split('/').nth(1).map(String::from))
            .collect();
        // every figure is read first and the gauges set together, so a scrape never sees
        // one pass's tile counts beside the previous pass's feature counts
        let mut tiles = Vec::with_capacity(datasets.len());
        for ds in &datasets {
            tiles.push((ds, manifest::load(store, ds).await?.len()));
        }
        // features/<dataset>/<backbone>/shards/<hash>.safetensors; each index reads only the
        // headers of shards it has not seen in an earlier count
        let mut listed: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for o in store.list("features/").await? {
            let parts: Vec<&str> = o.key.splitn(5, '/').collect();
            if parts.len() == 5 && parts[3] == "shards" {
                listed
                    .entry((parts[1].into(), parts[2].into()))
                    .or_default()
                    .push(o.key);
            }
        }
        let mut featurized = Vec::with_capacity(listed.len());
        for ((ds, bb), keys) in listed {
            let index = indexes
                .entry((ds.clone(), bb.clone()))
                .or_insert_with(|| FeatureIndex::new(&ds, &bb));
            if keys.len() < index.shards() {
                // shards were deleted: count afresh
                *index = FeatureIndex::new(&ds, &bb);
            }
            let r = index.absorb(store, keys).await?;
            for (key, reason) in r.unreadable {
                tracing::warn!(%key, %reason, "feature shard unreadable; not counted");
            }
            featurized.push((ds, bb, index.len()));
        }
        for (ds, n) in tiles {
            self.tiles.with_label_values(&[ds]).set(n as i64);
        }
        for (ds, bb, n) in featurized {
            self.featurized.with_label_values(&[&ds, &bb]).set(n as i64);
        }
        Ok(())
    }

    /// Counts until shutdown.
    pub async fn poll(self, store: Store, shutdown: CancellationToken) {
        let mut indexes = BTreeMap::new();
        loop {
            if let Err(e) = self.count(&store, &mut indexes).await {
                tracing::warn!(error = %e, "counting the store failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }
}
