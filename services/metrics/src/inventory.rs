//! What the store holds, as gauges: tiles per dataset, and per dataset and backbone the tiles
//! with features. Counted from S3 every 30 s, so the figures are right however long the
//! metrics service has been running (event counters only see what happened since its start).

use aerial_shared::{manifest, Store};
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

    async fn count(&self, store: &Store) -> Result<(), aerial_shared::store::StoreError> {
        let datasets: BTreeSet<String> = store
            .list("datasets/")
            .await?
            .into_iter()
            .filter_map(|o| o.key.split('/').nth(1).map(String::from))
            .collect();
        for ds in &datasets {
            let n = manifest::load(store, ds).await?.len();
            self.tiles.with_label_values(&[ds]).set(n as i64);
        }
        // features/<dataset>/<backbone>/index/<tile id>
        let mut per: BTreeMap<(String, String), i64> = BTreeMap::new();
        for o in store.list("features/").await? {
            let parts: Vec<&str> = o.key.splitn(5, '/').collect();
            if parts.len() == 5 && parts[3] == "index" {
                *per.entry((parts[1].into(), parts[2].into())).or_default() += 1;
            }
        }
        for ((ds, bb), n) in per {
            self.featurized.with_label_values(&[&ds, &bb]).set(n);
        }
        Ok(())
    }

    /// Counts until shutdown.
    pub async fn poll(self, store: Store, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.count(&store).await {
                tracing::warn!(error = %e, "counting the store failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }
}
