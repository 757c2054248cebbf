//! The watchable store (etcd's `watchableStore`): owns every watcher and sorts them into
//! synced (caught up; matched by notify), unsynced (behind; fed from history by the sync
//! loop, see `sync.rs`) and victims (their stream channel was full; retried by the victim
//! loop).
//!
//! Invariants, all under the one `inner` lock:
//! - a watcher is in exactly one place, given by `Watcher::state`;
//! - a synced watcher has seen every revision up to `current_rev` (its `min_rev` may be
//!   stale, except for a future-revision watcher whose `min_rev` is its start);
//! - an unsynced watcher has seen every revision below its `min_rev`;
//! - a victim holds one undelivered batch ending at `min_rev - 1`.
//!
//! The lock is never held across I/O (history reads happen outside it) or across a channel
//! send that can wait: every send under it is a `try_send`, and a full channel turns the
//! watcher into a victim instead of blocking the apply path.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;

use super::event_batch::{match_events, Delivery, EventBatch};
use super::history::History;
use super::watcher::{Filters, WatchTarget, Watcher, WatcherId, WatcherState};
use super::watcher_group::WatcherGroup;
use super::GAP_MAX_REVS;
use crate::pb::mvccpb::Event;
use crate::raft::types::ApplyObserver;

/// A watcher whose stream channel was full, with the batch it still has to receive.
pub(super) struct Victim {
    /// The watcher.
    pub id: WatcherId,
    /// Its stream's channel (cloned so the retry can send without the lock).
    pub tx: mpsc::Sender<Delivery>,
    /// The pending batch.
    pub delivery: Delivery,
}

/// Revisions notified while a sync round was reading history: the round hands them to its
/// watchers as well, so that a watcher can become synced even under a constant write load.
#[derive(Default)]
pub(super) struct Gap {
    /// (revision, events) in order.
    pub revs: Vec<(i64, Arc<[Event]>)>,
    /// More than `GAP_MAX_REVS` revisions arrived: the gap is unusable this round.
    pub overflow: bool,
}

/// Everything guarded by the store lock.
pub(super) struct Inner {
    /// Every live watcher.
    pub watchers: HashMap<WatcherId, Watcher>,
    /// Caught-up watchers, indexed for matching.
    pub synced: WatcherGroup,
    /// Watchers behind the store, in id order (the sync loop walks them round-robin).
    pub unsynced: BTreeSet<WatcherId>,
    /// Where the next sync round starts in `unsynced` (fairness past 512 watchers).
    pub sync_cursor: WatcherId,
    /// Watchers waiting for their stream channel to drain.
    pub victims: Vec<Victim>,
    /// The latest revision notified.
    pub current_rev: i64,
    /// Next watcher id (0 is reserved for stream-wide deliveries).
    pub next_id: u64,
    /// Present while a sync round reads history.
    pub gap: Option<Gap>,
    /// Bumped by `restored`: a sync round that read the old history is discarded.
    pub epoch: u64,
}

impl Inner {
    /// Moves `id` to synced (from unsynced or victims).
    pub fn make_synced(&mut self, id: WatcherId) {
        if let Some(w) = self.watchers.get_mut(&id) {
            if w.state == WatcherState::Unsynced {
                self.unsynced.remove(&id);
            }
            if w.state != WatcherState::Synced {
                w.state = WatcherState::Synced;
                self.synced.add(id, &w.target);
            }
        }
    }

    /// Drops `id` from wherever it is.
    pub fn remove_watcher(&mut self, id: WatcherId) -> Option<Watcher> {
        let w = self.watchers.remove(&id)?;
        match w.state {
            WatcherState::Synced => {
                self.synced.remove(id, &w.target);
            }
            WatcherState::Unsynced => {
                self.unsynced.remove(&id);
            }
            WatcherState::Victim => self.victims.retain(|v| v.id != id),
        }
        Some(w)
    }
}

/// The store's watch side: register watchers, feed them from notify() and from history.
pub struct WatchableStore {
    /// The write history, for unsynced catch-up.
    pub(super) history: Arc<dyn History>,
    /// All mutable state.
    pub(super) inner: Mutex<Inner>,
    /// Wakes the sync loop when a watcher becomes unsynced, so a watch from a past revision
    /// does not wait for the next 100 ms tick.
    pub(super) sync_kick: Notify,
    /// How many watchers want prev_kv (the store fills it in apply events only then).
    prev_kv_demand: crate::storage::PrevKvDemand,
}

impl WatchableStore {
    /// A store with no watcher, starting at the history's current revision.
    pub fn new(history: Arc<dyn History>) -> Arc<Self> {
        let current_rev = history.current_revision();
        Arc::new(WatchableStore {
            history,
            inner: Mutex::new(Inner {
                watchers: HashMap::new(),
                synced: WatcherGroup::new(),
                unsynced: BTreeSet::new(),
                sync_cursor: WatcherId(0),
                victims: Vec::new(),
                current_rev,
                next_id: 1,
                gap: None,
                epoch: 0,
            }),
            sync_kick: Notify::new(),
            prev_kv_demand: crate::storage::PrevKvDemand::default(),
        })
    }

    /// The count of watchers that want prev_kv, for the store that feeds this one (see
    /// [`crate::storage::MvccStore::fill_prev_kv_on_demand`]).
    pub fn prev_kv_demand(&self) -> &crate::storage::PrevKvDemand {
        &self.prev_kv_demand
    }

    /// The lock, recovering from poisoning: every critical section leaves `Inner` consistent
    /// before doing anything that could panic.
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest revision notified.
    pub fn rev(&self) -> i64 {
        self.lock().current_rev
    }

    /// Registers a watcher. `start_rev` 0 means "from the next revision"; a revision at or
    /// below the current one replays history; a future revision waits for it.
    pub fn watch(
        &self,
        target: WatchTarget,
        start_rev: i64,
        filters: Filters,
        watch_id: i64,
        tx: mpsc::Sender<Delivery>,
    ) -> WatcherId {
        let mut inner = self.lock();
        let cur = inner.current_rev;
        let synced = start_rev == 0 || start_rev > cur;
        let min_rev = if synced {
            start_rev.max(cur + 1)
        } else {
            start_rev
        };
        let id = WatcherId(inner.next_id);
        inner.next_id += 1;
        let target = match target {
            WatchTarget::Key(k) => WatchTarget::Key(inner.synced.shared_key(&k).unwrap_or(k)),
            range => range,
        };
        let state = if synced {
            inner.synced.add(id, &target);
            WatcherState::Synced
        } else {
            inner.unsynced.insert(id);
            WatcherState::Unsynced
        };
        inner.watchers.insert(
            id,
            Watcher {
                target,
                min_rev,
                watch_id,
                tx,
                filters,
                state,
            },
        );
        drop(inner);
        if !synced {
            self.sync_kick.notify_one();
        }
        tracing::debug!(watcher = id.0, watch_id, start_rev, synced, "watch");
        id
    }

    /// Removes a watcher; false if it was already gone (canceled or compacted).
    pub fn cancel(&self, id: WatcherId) -> bool {
        self.lock().remove_watcher(id).is_some()
    }

    /// Whether the watcher is caught up with the store.
    pub fn is_synced(&self, id: WatcherId) -> bool {
        matches!(self.lock().watchers.get(&id), Some(w) if w.state == WatcherState::Synced)
    }

    /// Sends the watcher an empty response at the current revision if it is synced (etcd's
    /// progress notification: "you have seen everything up to here"). Returns whether sent.
    pub fn progress(&self, id: WatcherId) -> bool {
        let inner = self.lock();
        let Some(w) = inner.watchers.get(&id) else {
            return false;
        };
        if w.state != WatcherState::Synced {
            return false;
        }
        let d = Delivery {
            watch_id: w.watch_id,
            watcher: id.0,
            revision: inner.current_rev,
            ..Delivery::default()
        };
        w.tx.try_send(d).is_ok()
    }

    /// Answers a stream-wide progress request through the stream channel (so it is ordered
    /// after every event already queued) when all of `ids` are synced. Returns whether sent;
    /// the caller retries later otherwise.
    pub fn progress_all(&self, ids: &[WatcherId], tx: &mpsc::Sender<Delivery>) -> bool {
        let inner = self.lock();
        let all_synced = ids.iter().all(|id| {
            inner
                .watchers
                .get(id)
                .is_none_or(|w| w.state == WatcherState::Synced)
        });
        if !all_synced {
            return false;
        }
        let d = Delivery {
            watch_id: -1,
            watcher: WatcherId::STREAM.0,
            revision: inner.current_rev,
            ..Delivery::default()
        };
        tx.try_send(d).is_ok()
    }

    /// Every watcher of the member, whatever its state (`etcd_debugging_mvcc_watcher_total`).
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// (synced, unsynced, victims) counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let victims = inner
            .watchers
            .values()
            .filter(|w| w.state == WatcherState::Victim)
            .count();
        (inner.synced.len(), inner.unsynced.len(), victims)
    }
}

impl ApplyObserver for WatchableStore {
    /// Called by the state machine after the write of `revision` is durable in sled.
    fn notify(&self, revision: i64, events: &[Event]) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if revision <= inner.current_rev {
            // A re-applied entry (or an event-less write such as a compaction): synced
            // watchers have seen it already.
            return;
        }
        inner.current_rev = revision;
        if events.is_empty() {
            return;
        }
        let mut shared: Option<Arc<[Event]>> = None;
        if let Some(gap) = inner.gap.as_mut() {
            if gap.revs.len() >= GAP_MAX_REVS {
                gap.overflow = true;
            } else {
                let all: Arc<[Event]> = Arc::from(events);
                gap.revs.push((revision, all.clone()));
                shared = Some(all);
            }
        }
        if inner.synced.is_empty() {
            return;
        }
        let batches = match_events(&inner.synced, &inner.watchers, events);
        if batches.is_empty() {
            return;
        }
        let all = shared.unwrap_or_else(|| Arc::from(events));
        for (id, picked) in batches {
            let Some(w) = inner.watchers.get_mut(&id) else {
                continue;
            };
            let d = Delivery {
                watch_id: w.watch_id,
                watcher: id.0,
                revision,
                compact_revision: 0,
                events: EventBatch::picked(all.clone(), picked),
            };
            match w.tx.try_send(d) {
                Ok(()) => {}
                Err(TrySendError::Full(d)) => {
                    w.min_rev = revision + 1;
                    w.state = WatcherState::Victim;
                    inner.synced.remove(id, &w.target);
                    inner.victims.push(Victim {
                        id,
                        tx: w.tx.clone(),
                        delivery: d,
                    });
                    tracing::debug!(
                        watcher = id.0,
                        rev = revision,
                        "slow watcher became a victim"
                    );
                }
                // The stream is gone; its teardown cancels the watcher.
                Err(TrySendError::Closed(_)) => {}
            }
        }
    }

    /// The whole state was replaced by a snapshot: every synced watcher replays from sled.
    fn restored(&self, revision: i64) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let seen = inner.current_rev;
        let ids: Vec<WatcherId> = inner
            .watchers
            .iter()
            .filter(|(_, w)| w.state == WatcherState::Synced)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(w) = inner.watchers.get_mut(&id) {
                inner.synced.remove(id, &w.target);
                // A synced watcher has seen everything up to the old current revision.
                w.min_rev = w.min_rev.max(seen + 1);
                w.state = WatcherState::Unsynced;
                inner.unsynced.insert(id);
            }
        }
        inner.current_rev = revision;
        inner.epoch += 1;
        drop(guard);
        self.sync_kick.notify_one();
    }
}
