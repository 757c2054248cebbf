//! What travels from the store to a stream: one [`Delivery`] per watcher per batch of
//! revisions (etcd's `eventBatch` / mvcc `WatchResponse`).
//!
//! The events of a write are shared (`Arc<[Event]>`) between every watcher that matches: with
//! 10,000 watchers on one key, notify() copies the events once, not 10,000 times, and the
//! per-watcher part is a list of indices (or nothing, when the watcher wants them all). The
//! copy into the protobuf response happens on the stream's own task, outside the store lock.

use std::collections::HashMap;
use std::sync::Arc;

use super::watcher::{Watcher, WatcherId};
use super::watcher_group::WatcherGroup;
use crate::pb::mvccpb::Event;

/// The events one watcher receives in one response.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    /// Events of one or more consecutive revisions, in revision order.
    all: Arc<[Event]>,
    /// Indices into `all` when the watcher wants only some of them; `None` means all.
    picked: Option<Box<[u32]>>,
}

impl EventBatch {
    /// A batch of every event in `all`.
    pub fn whole(all: Arc<[Event]>) -> Self {
        EventBatch { all, picked: None }
    }

    /// A batch of `all[i]` for every `i` in `picked` (ascending).
    ///
    /// Sharing `all` keeps every event of it alive for as long as the batch lives, and a slow
    /// stream can hold many batches: when the watcher wants less than half of `all`, its
    /// events are copied out instead, so a batch never holds more than twice its own events.
    pub fn picked(all: Arc<[Event]>, picked: Vec<u32>) -> Self {
        if picked.len() == all.len() {
            return EventBatch::whole(all);
        }
        if picked.len() * 2 < all.len() {
            let own: Arc<[Event]> = picked
                .iter()
                .filter_map(|&i| all.get(i as usize).cloned())
                .collect();
            return EventBatch::whole(own);
        }
        EventBatch {
            all,
            picked: Some(picked.into_boxed_slice()),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.picked.as_ref().map_or(self.all.len(), |p| p.len())
    }

    /// Whether there is no event (a progress notification or a compaction notice).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Event> + '_ {
        let all = &self.all;
        let mut i = 0usize;
        std::iter::from_fn(move || {
            let idx = match &self.picked {
                Some(p) => *p.get(i)? as usize,
                None => i,
            };
            i += 1;
            all.get(idx)
        })
    }

    /// Owned copies of the events, `prev_kv` dropped unless `keep_prev_kv`.
    pub fn to_events(&self, keep_prev_kv: bool) -> Vec<Event> {
        self.iter()
            .map(|e| Event {
                r#type: e.r#type,
                kv: e.kv.clone(),
                prev_kv: if keep_prev_kv {
                    e.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect()
    }
}

/// One message from the store to a stream.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// The stream-level watch id (-1 for stream-wide progress answers).
    pub watch_id: i64,
    /// The store-level watcher, so that a stream can drop deliveries of a canceled watcher
    /// whose `watch_id` has been reused.
    pub watcher: u64,
    /// The store revision the response header reports.
    pub revision: i64,
    /// Non-zero: the watcher's next revision was compacted; it is canceled.
    pub compact_revision: i64,
    /// The events (empty for progress notifications and compaction notices).
    pub events: EventBatch,
}

/// The revision an event belongs to.
pub fn event_rev(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// The key an event is about.
pub fn event_key(ev: &Event) -> &[u8] {
    ev.kv.as_ref().map_or(&[][..], |kv| &kv.key[..])
}

/// Matches `events` against `group` and returns, per matching watcher, the indices of the
/// events it must receive: at or above its `min_rev` and not filtered out. Cost is
/// proportional to the matches; watchers that match nothing are never touched.
pub fn match_events(
    group: &WatcherGroup,
    watchers: &HashMap<WatcherId, Watcher>,
    events: &[Event],
) -> Vec<(WatcherId, Vec<u32>)> {
    let mut out: Vec<(WatcherId, Vec<u32>)> = Vec::new();
    let mut slot: HashMap<WatcherId, usize> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        let rev = event_rev(ev);
        group.for_each_match(event_key(ev), |id| {
            let Some(w) = watchers.get(&id) else {
                return;
            };
            if rev < w.min_rev || w.filters.drops(ev) {
                return;
            }
            let idx = *slot.entry(id).or_insert_with(|| {
                out.push((id, Vec::new()));
                out.len() - 1
            });
            if let Some((_, v)) = out.get_mut(idx) {
                v.push(i as u32);
            }
        });
    }
    out
}
