//! Which tiles of a job are already in a written prediction batch, for redelivered tiles
//! only. A batch that was written but whose ack was lost (the broker went away) comes back,
//! maybe grouped with other tiles: scoring it again would put its tiles into a second batch
//! object. Its tiles are found here and acked instead, and the batch object that holds them
//! is reported to the coordinator again (it may never have heard of it). Read incrementally:
//! a LIST of the job's batch objects, then only the objects not seen before.

use aerial_shared::{keys, predictions::PredictionBatch, store::StoreError, Store};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Jobs whose index a replica keeps; the least recently used one beyond this is dropped
/// (and read again from the store if its redeliveries come back).
const KEPT_JOBS: usize = 8;

#[derive(Default)]
struct JobWritten {
    read: HashSet<String>,
    /// tile id -> the batch object holding its prediction
    tiles: HashMap<String, String>,
}

/// One job's index, locked while its objects are read.
type Shared = Arc<Mutex<JobWritten>>;

/// Per-replica index of written batch objects, by job.
#[derive(Default)]
pub struct Written {
    /// job id -> (last use, its index). The map's lock is held only to find a job's entry;
    /// store reads hold that job's own lock, so one job's reads never stall another's.
    jobs: std::sync::Mutex<HashMap<String, (u64, Shared)>>,
    /// Use counter ordering the entries.
    uses: std::sync::atomic::AtomicU64,
}

impl Written {
    fn entry(&self, job_id: &str) -> Shared {
        let mut jobs = self.jobs.lock().expect("written index lock");
        let now = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let job = jobs
            .entry(job_id.to_string())
            .or_insert_with(|| (now, Arc::default()));
        job.0 = now;
        let job = job.1.clone();
        if jobs.len() > KEPT_JOBS {
            if let Some(oldest) = jobs
                .iter()
                .filter(|(id, _)| id.as_str() != job_id)
                .min_by_key(|(_, (used, _))| *used)
                .map(|(id, _)| id.clone())
            {
                jobs.remove(&oldest);
            }
        }
        job
    }

    /// The batch object holding each of `tile_ids` that has one, read fresh from the store.
    pub async fn lookup(
        &self,
        store: &Store,
        job_id: &str,
        tile_ids: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let job = self.entry(job_id);
        let mut job = job.lock().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_number_of_jobs_dropping_the_least_recently_used() {
        let w = Written::default();
        for i in 0..KEPT_JOBS {
            w.entry(&format!("job{i}"));
        }
        let first = w.entry("job0"); // used again: now the most recent
        w.entry("new");
        let jobs = w.jobs.lock().unwrap();
        assert_eq!(jobs.len(), KEPT_JOBS);
        assert!(jobs.contains_key("job0"), "recently used job kept");
        assert!(
            !jobs.contains_key("job1"),
            "least recently used job dropped"
        );
        assert!(jobs.contains_key("new"));
        assert!(Arc::ptr_eq(&first, &jobs["job0"].1), "same index kept");
    }
}
