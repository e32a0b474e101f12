//! Whether a service still makes progress on the deliveries it holds: `/healthz` fails when
//! deliveries have been held for the stall limit without any being settled, so an
//! orchestrator restarts a worker that is stuck (a hung handler, a publish that never
//! returns) instead of letting it hold messages and replicas forever.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Shared counters of held deliveries and of the last settle; cheap to clone.
#[derive(Clone, Default)]
pub struct Liveness {
    held: Arc<AtomicI64>,
    /// Milliseconds since the epoch of the last settle, or of the first hold after idling.
    progress_ms: Arc<AtomicU64>,
    /// Stall limit in milliseconds; 0 = never stalled.
    limit_ms: Arc<AtomicU64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Liveness {
    /// Sets the stall limit (the worker does, from `worker.stall_secs`).
    pub fn set_limit(&self, limit: std::time::Duration) {
        self.limit_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// `n` deliveries are now held; the clock starts when the worker was idle.
    pub fn hold(&self, n: usize) {
        self.hold_at(n, now_ms());
    }

    fn hold_at(&self, n: usize, at: u64) {
        if self.held.fetch_add(n as i64, Ordering::Relaxed) <= 0 {
            self.progress_ms.store(at, Ordering::Relaxed);
        }
    }

    /// One held delivery was acked, dead-lettered or requeued.
    pub fn settled(&self) {
        self.settled_at(now_ms());
    }

    fn settled_at(&self, at: u64) {
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.progress_ms.store(at, Ordering::Relaxed);
    }

    /// Why the service is stalled, if it is.
    pub fn stalled(&self) -> Option<String> {
        self.stalled_at(now_ms())
    }

    fn stalled_at(&self, now: u64) -> Option<String> {
        let (held, limit) = (
            self.held.load(Ordering::Relaxed),
            self.limit_ms.load(Ordering::Relaxed),
        );
        let idle = now.saturating_sub(self.progress_ms.load(Ordering::Relaxed));
        (held > 0 && limit > 0 && idle > limit).then(|| {
            format!(
                "stalled: {held} deliveries held, none settled for {} s (limit {} s)",
                idle / 1000,
                limit / 1000
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_only_while_holding_without_progress() {
        let l = Liveness::default();
        l.set_limit(std::time::Duration::from_secs(10));
        assert!(l.stalled_at(1_000_000).is_none(), "idle is not stalled");
        l.hold_at(2, 1_000_000);
        assert!(l.stalled_at(1_009_000).is_none());
        let why = l.stalled_at(1_011_000).expect("held 11 s without a settle");
        assert!(why.contains("2 deliveries held"), "{why}");
        l.settled_at(1_011_500);
        assert!(l.stalled_at(1_012_000).is_none(), "a settle is progress");
        l.settled_at(1_012_000);
        // nothing held: never stalled, however long it stays idle
        assert!(l.stalled_at(9_000_000).is_none());
        // holding again after idling starts a fresh clock
        l.hold_at(1, 9_000_000);
        assert!(l.stalled_at(9_005_000).is_none());
    }
}
