//! `--snapshot-count` as etcd counts it: applied writes, not Raft entries.
//!
//! The leader groups up to a few hundred writes into one entry, so openraft's own policy
//! (`LogsSinceLast(n)`, which counts entries) would let the log between snapshots grow to
//! hundreds of times what etcd keeps for the same setting. openraft's policy is therefore
//! `Never`, and the state machine counts the writes it applies; once `n` were applied since
//! the last snapshot was captured, it asks openraft for one (`raft.trigger().snapshot()`).
//!
//! Example with `--snapshot-count=1000` and entries of 256 writes: the 4th entry brings the
//! count to 1024 and requests a snapshot; the snapshot captured after the 5th entry moves
//! the baseline to 1280, so the next request comes once 2280 writes were applied.
//!
//! After a restart the count starts from zero (etcd also counts from its last snapshot, but
//! knows how far back that is; the writes replayed from the log are counted again here).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts applied writes and says when a snapshot is due.
#[derive(Debug)]
pub struct SnapshotTrigger {
    /// `--snapshot-count`: writes between snapshots (0 never asks).
    every_writes: AtomicU64,
    /// Writes applied since the state machine opened.
    applied: AtomicU64,
    /// `applied` when the last snapshot was captured (or installed).
    at_last_snapshot: AtomicU64,
    /// Set once a snapshot was asked for, until one is captured: one request per threshold.
    requested: AtomicBool,
    /// Woken when a snapshot is due; the task holding the Raft handle asks openraft.
    due: Notify,
}

impl SnapshotTrigger {
    /// A trigger asking for a snapshot every `every_writes` applied writes.
    pub fn new(every_writes: u64) -> Arc<SnapshotTrigger> {
        Arc::new(SnapshotTrigger {
            every_writes: AtomicU64::new(every_writes),
            applied: AtomicU64::new(0),
            at_last_snapshot: AtomicU64::new(0),
            requested: AtomicBool::new(false),
            due: Notify::new(),
        })
    }

    /// Sets `--snapshot-count`.
    pub fn set_every(&self, writes: u64) {
        self.every_writes.store(writes, Ordering::Relaxed);
    }

    /// Counts `writes` more applied writes; wakes [`Self::wait_due`] when a snapshot is due.
    pub fn applied(&self, writes: u64) {
        if writes == 0 {
            return;
        }
        let now = self.applied.fetch_add(writes, Ordering::AcqRel) + writes;
        let every = self.every_writes.load(Ordering::Relaxed);
        if every == 0 {
            return;
        }
        let since = now.saturating_sub(self.at_last_snapshot.load(Ordering::Acquire));
        if since >= every && !self.requested.swap(true, Ordering::AcqRel) {
            tracing::debug!(writes = since, "snapshot due");
            self.due.notify_one();
        }
    }

    /// Records that a snapshot now covers every write counted so far (called while apply
    /// is held off, when a snapshot's state is captured or one is installed).
    pub fn captured(&self) {
        self.at_last_snapshot
            .store(self.applied.load(Ordering::Acquire), Ordering::Release);
        self.requested.store(false, Ordering::Release);
    }

    /// Writes applied since the last snapshot.
    pub fn since_last(&self) -> u64 {
        self.applied
            .load(Ordering::Acquire)
            .saturating_sub(self.at_last_snapshot.load(Ordering::Acquire))
    }

    /// Resolves when a snapshot is due (at once when one became due meanwhile).
    pub async fn wait_due(&self) {
        self.due.notified().await;
    }

    /// Whether a snapshot was asked for and none was captured since. openraft drops a
    /// trigger that arrives while a snapshot is being built; the asker tries again while
    /// this holds.
    pub fn pending(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn due_after_the_count_once_per_threshold() {
        let t = SnapshotTrigger::new(1000);
        t.applied(256);
        t.applied(256);
        t.applied(256);
        assert!(!t.requested.load(Ordering::Acquire));
        t.applied(256);
        assert!(t.requested.load(Ordering::Acquire));
        // The permit is stored: a waiter arriving later still wakes.
        tokio::time::timeout(std::time::Duration::from_secs(1), t.wait_due())
            .await
            .unwrap();
        t.applied(256);
        t.captured();
        assert_eq!(t.since_last(), 0);
        t.applied(999);
        assert!(!t.requested.load(Ordering::Acquire));
        t.applied(1);
        assert!(t.requested.load(Ordering::Acquire));
    }

    #[test]
    fn zero_never_asks() {
        let t = SnapshotTrigger::new(0);
        t.applied(1_000_000);
        assert!(!t.requested.load(Ordering::Acquire));
    }
}
