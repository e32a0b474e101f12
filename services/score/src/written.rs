//! Which tiles of a job are already in a written prediction batch, for redelivered tiles
//! only. A batch that was written but whose ack was lost (the broker went away) comes back,
//! maybe grouped with other tiles: scoring it again would put its tiles into a second batch
//! object. Its tiles are found here and acked instead, and the batch object that holds them
//! is reported to the coordinator again (it may never have heard of it). Read incrementally:
//! a LIST of the job's batch objects, then only the objects not seen before.

use aerial_shared::{keys, predictions::PredictionBatch, store::StoreError, Store};
use std::collections::{HashMap, HashSet};
use tokio::sync::Mutex;

#[derive(Default)]
struct JobWritten {
    read: HashSet<String>,
    /// tile id -> the batch object holding its prediction
    tiles: HashMap<String, String>,
}

/// Per-replica index of written batch objects, by job.
#[derive(Default)]
pub struct Written {
    jobs: Mutex<HashMap<String, JobWritten>>,
}

impl Written {
    /// The batch object holding each of `tile_ids` that has one, read fresh from the store.
    pub async fn lookup(
        &self,
        store: &Store,
        job_id: &str,
        tile_ids: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let mut jobs = self.jobs.lock().await;
        let job = jobs.entry(job_id.to_string()).or_default();
        for o in store.list(&keys::predictions_prefix(job_id)).await? {
            if job.read.contains(&o.key) {
                continue;
            }
            let b: PredictionBatch = store.get_json(&o.key).await?;
            for r in b.rows {
                job.tiles.insert(r.tile_id, o.key.clone());
            }
            job.read.insert(o.key);
        }
        Ok(tile_ids
            .iter()
            .map(|id| job.tiles.get(*id).cloned())
            .collect())
    }
}
