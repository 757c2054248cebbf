//! The two background loops of the watchable store (etcd's `syncWatchersLoop` and
//! `syncVictimsLoop`): unsynced watchers catch up from history, victims retry their batch.
//!
//! A sync round: under the lock, pick up to `MAX_WATCHERS_PER_SYNC` unsynced watchers (cancel
//! the compacted ones with a `compact_revision` notice) and group them into windows of
//! `WATCH_BATCH_MAX_REVS` revisions by their `min_rev`. For each window: note its lowest
//! `min_rev` and the current revision `cur`, and open a gap buffer; without the lock, read at
//! most `WATCH_BATCH_MAX_REVS` revisions `min..=cur` from history; under the lock again, append the
//! revisions notified meanwhile (the gap), match, send with `try_send`, and move every watcher
//! that has now seen the current revision to synced. Example with cur = 10, a watcher at
//! min_rev 4 and a write of revision 11 landing during the read: the read returns 4..=10, the
//! gap holds 11, the watcher receives 4..=11 in one response and is synced at min_rev 12.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::event_batch::{match_events, Delivery, EventBatch};
use super::watchable_store::{Gap, Inner, Victim, WatchableStore};
use super::watcher::{WatcherId, WatcherState};
use super::watcher_group::WatcherGroup;
use super::{MAX_WATCHERS_PER_SYNC, SYNC_INTERVAL, VICTIM_RETRY_INTERVAL, WATCH_BATCH_MAX_REVS};
use crate::pb::mvccpb::Event;
use crate::storage::StorageError;

/// What a sync round achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Watchers still unsynced.
    pub unsynced: usize,
    /// The round stopped at the batch limit: more history is waiting.
    pub more: bool,
}

/// Stops the background loops when dropped.
pub struct WatchLoops {
    handles: Vec<JoinHandle<()>>,
}

impl Drop for WatchLoops {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

impl WatchableStore {
    /// Starts the sync and victim loops on the current tokio runtime; they stop when the
    /// returned guard is dropped or the store is gone.
    pub fn start(self: &Arc<Self>) -> WatchLoops {
        let weak = Arc::downgrade(self);
        let victims = tokio::spawn(
            victim_loop(weak.clone()).instrument(tracing::debug_span!("watch_victims")),
        );
        let sync = tokio::spawn(sync_loop(weak).instrument(tracing::debug_span!("watch_sync")));
        WatchLoops {
            handles: vec![victims, sync],
        }
    }

    /// One victim retry round; returns how many victims remain.
    pub fn sync_victims(&self) -> usize {
        let victims = {
            let mut inner = self.lock();
            if inner.victims.is_empty() {
                return 0;
            }
            std::mem::take(&mut inner.victims)
        };
        let mut sent = Vec::new();
        let mut again = Vec::new();
        for v in victims {
            match v.tx.try_send(v.delivery) {
                Ok(()) => sent.push(v.id),
                Err(TrySendError::Full(delivery)) => again.push(Victim { delivery, ..v }),
                // The stream is gone; its teardown cancels the watcher.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut kick = false;
        for id in sent {
            let Some(w) = inner.watchers.get_mut(&id) else {
                continue;
            };
            if w.state != WatcherState::Victim {
                continue;
            }
            if w.min_rev > inner.current_rev {
                inner.make_synced(id);
            } else {
                w.state = WatcherState::Unsynced;
                inner.unsynced.insert(id);
                kick = true;
            }
        }
        // A watcher canceled while its batch was out of the list must not come back.
        again.retain(|v| inner.watchers.contains_key(&v.id));
        inner.victims.extend(again);
        let left = inner.victims.len();
        drop(guard);
        if kick {
            self.sync_kick.notify_one();
        }
        left
    }

    /// One catch-up round; returns how many watchers are still unsynced and whether the
    /// round read a full batch (more history is waiting).
    pub async fn sync_watchers(&self) -> SyncOutcome {
        let (unsynced, more) = self.sync_round().await;
        SyncOutcome { unsynced, more }
    }

    /// One round: the picked watchers are grouped by how far behind they are, and each
    /// group is served from its own history read of at most `WATCH_BATCH_MAX_REVS`
    /// revisions. So a watcher far behind costs one window per round and never holds back
    /// the nearly caught-up ones (the round's work is bounded per watcher, as etcd's).
    async fn sync_round(&self) -> (usize, bool) {
        let groups = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let compact = self.history.compact_revision();
            let cur = inner.current_rev;
            let ids = pick_round(&inner.unsynced, inner.sync_cursor);
            if let Some(last) = ids.last() {
                inner.sync_cursor = WatcherId(last.0 + 1);
            }
            let mut behind = Vec::new();
            for id in ids {
                let Some(w) = inner.watchers.get(&id) else {
                    continue;
                };
                // As etcd: history at the compaction revision itself is still served.
                if w.min_rev < compact {
                    cancel_compacted(inner, id, compact, cur, |_| true);
                    continue;
                }
                if w.min_rev > cur {
                    inner.make_synced(id);
                    continue;
                }
                behind.push((w.min_rev, id));
            }
            if behind.is_empty() {
                return (inner.unsynced.len(), false);
            }
            group_by_window(behind)
        };
        let mut out = (0, false);
        for (from, chosen) in groups {
            let (left, more) = self.serve_window(chosen, from).await;
            out = (left, out.1 || more);
        }
        out
    }

    /// Serves `chosen` (unsynced watchers whose `min_rev` is at least `from`) from one read of
    /// history starting at `from`, plus the revisions notified during the read.
    async fn serve_window(&self, chosen: Vec<WatcherId>, from: i64) -> (usize, bool) {
        let (cur, epoch) = {
            let mut inner = self.lock();
            inner.gap = Some(Gap::default());
            (inner.current_rev, inner.epoch)
        };

        let history = self.history.clone();
        let read =
            tokio::task::spawn_blocking(move || history.events(from, cur, WATCH_BATCH_MAX_REVS))
                .await;

        let mut guard = self.lock();
        let inner = &mut *guard;
        let gap = inner.gap.take();
        let read = match read {
            Ok(Ok(r)) => r,
            // Compacted meanwhile, or the history keeps less than etcd at the compaction
            // revision itself: cancel those that cannot be served rather than retry forever.
            Ok(Err(StorageError::Compacted)) => {
                let compact = self.history.compact_revision();
                for id in chosen {
                    cancel_compacted(inner, id, compact, cur, |min_rev| min_rev <= compact);
                }
                return (inner.unsynced.len(), true);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, from, to = cur, "watch history read failed");
                return (inner.unsynced.len(), false);
            }
            Err(e) => {
                tracing::error!(error = %e, "watch history read task failed");
                return (inner.unsynced.len(), false);
            }
        };
        if inner.epoch != epoch {
            return (inner.unsynced.len(), true);
        }
        let complete = read.len() < WATCH_BATCH_MAX_REVS || read.last().is_some_and(|r| r.0 >= cur);
        let mut seen_to = if complete {
            cur
        } else {
            read.last().map_or(cur, |r| r.0)
        };
        let mut events: Vec<Event> = read.into_iter().flat_map(|(_, evs)| evs).collect();
        if complete {
            if let Some(gap) = gap.filter(|g| !g.overflow) {
                for (_, evs) in &gap.revs {
                    events.extend(evs.iter().cloned());
                }
                seen_to = inner.current_rev;
            }
        }
        let all: Arc<[Event]> = events.into();

        let mut group = WatcherGroup::new();
        let live: Vec<WatcherId> = chosen
            .into_iter()
            .filter(|id| {
                inner
                    .watchers
                    .get(id)
                    .is_some_and(|w| w.state == WatcherState::Unsynced)
            })
            .collect();
        for id in &live {
            if let Some(w) = inner.watchers.get(id) {
                group.add(*id, &w.target);
            }
        }
        let mut batches: std::collections::HashMap<WatcherId, Vec<u32>> =
            match_events(&group, &inner.watchers, &all)
                .into_iter()
                .collect();
        let current = inner.current_rev;
        for id in live {
            let Some(w) = inner.watchers.get_mut(&id) else {
                continue;
            };
            w.min_rev = w.min_rev.max(seen_to + 1);
            if let Some(picked) = batches.remove(&id) {
                let d = Delivery {
                    watch_id: w.watch_id,
                    watcher: id.0,
                    revision: current,
                    compact_revision: 0,
                    events: EventBatch::picked(all.clone(), picked),
                };
                match w.tx.try_send(d) {
                    Ok(()) => {}
                    Err(TrySendError::Full(delivery)) => {
                        w.state = WatcherState::Victim;
                        let tx = w.tx.clone();
                        inner.unsynced.remove(&id);
                        inner.victims.push(Victim { id, tx, delivery });
                        continue;
                    }
                    Err(TrySendError::Closed(_)) => continue,
                }
            }
            if w.min_rev > current {
                inner.make_synced(id);
            }
        }
        (inner.unsynced.len(), !complete)
    }
}

/// Sends an unsynced watcher whose history is gone its compaction notice and drops it; when
/// its channel is full it stays unsynced and is retried next round.
fn cancel_compacted(
    inner: &mut Inner,
    id: WatcherId,
    compact: i64,
    cur: i64,
    applies: impl Fn(i64) -> bool,
) {
    let Some(w) = inner.watchers.get(&id) else {
        return;
    };
    if w.state != WatcherState::Unsynced || !applies(w.min_rev) {
        return;
    }
    let d = Delivery {
        watch_id: w.watch_id,
        watcher: id.0,
        revision: cur,
        // A store never compacted is at etcd's compactMainRev of -1: a watch from a negative
        // start revision is canceled with compact_revision -1, as etcd 3.4 answers it
        // (0 would read as "not compacted" and leave a silently dead watch).
        compact_revision: if compact > 0 { compact } else { -1 },
        events: EventBatch::default(),
    };
    match w.tx.try_send(d) {
        Ok(()) | Err(TrySendError::Closed(_)) => {
            tracing::debug!(watcher = id.0, compact, "watcher compacted");
            inner.remove_watcher(id);
        }
        Err(TrySendError::Full(_)) => {}
    }
}

/// Groups watchers `(min_rev, id)` into windows: each starts at the lowest `min_rev` not yet
/// covered and takes every watcher whose `min_rev` is less than `WATCH_BATCH_MAX_REVS`
/// revisions past it. Returns `(start, watchers)` per window, lowest first.
fn group_by_window(mut behind: Vec<(i64, WatcherId)>) -> Vec<(i64, Vec<WatcherId>)> {
    behind.sort_unstable();
    let span = i64::try_from(WATCH_BATCH_MAX_REVS).unwrap_or(i64::MAX);
    let mut groups: Vec<(i64, Vec<WatcherId>)> = Vec::new();
    for (min_rev, id) in behind {
        match groups.last_mut() {
            Some((start, ids)) if min_rev < start.saturating_add(span) => ids.push(id),
            _ => groups.push((min_rev, vec![id])),
        }
    }
    groups
}

/// Up to `MAX_WATCHERS_PER_SYNC` unsynced watchers, starting at `cursor` and wrapping.
fn pick_round(
    unsynced: &std::collections::BTreeSet<WatcherId>,
    cursor: WatcherId,
) -> Vec<WatcherId> {
    unsynced
        .range(cursor..)
        .chain(unsynced.range(..cursor))
        .take(MAX_WATCHERS_PER_SYNC)
        .copied()
        .collect()
}

async fn victim_loop(store: Weak<WatchableStore>) {
    let mut tick = tokio::time::interval(VICTIM_RETRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        store.sync_victims();
    }
}

async fn sync_loop(store: Weak<WatchableStore>) {
    let mut wait = SYNC_INTERVAL;
    loop {
        {
            let Some(s) = store.upgrade() else {
                return;
            };
            // Wake early when a watcher becomes unsynced; otherwise tick every SYNC_INTERVAL.
            let _ = tokio::time::timeout(wait, s.sync_kick.notified()).await;
        }
        let Some(s) = store.upgrade() else {
            return;
        };
        let before = s.lock().unsynced.len();
        if before == 0 {
            wait = SYNC_INTERVAL;
            continue;
        }
        let started = Instant::now();
        let out = s.sync_watchers().await;
        // As etcd: while rounds make progress, yield only as long as the round took.
        wait = if out.unsynced != 0 && (out.unsynced < before || out.more) {
            started.elapsed().max(Duration::from_millis(1))
        } else {
            SYNC_INTERVAL
        };
    }
}
