//! One watcher: what it watches, how far it has seen, and where its events go.
//!
//! Kept small on purpose (etcd's watcher is ~350 bytes with its map entries): a node may hold
//! hundreds of thousands of idle watchers, and notify() touches only the matching ones.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::event_batch::Delivery;
use super::interval_tree::Interval;
use crate::pb::mvccpb::{event::EventType, Event};

/// A watcher's identity inside one [`super::WatchableStore`], unique for the store's life
/// (a stream's `watch_id`s may be reused after a cancel; these never are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatcherId(pub u64);

impl WatcherId {
    /// Stamped on stream-wide deliveries (progress answers) that belong to no watcher.
    pub const STREAM: WatcherId = WatcherId(0);
}

/// What a watcher watches: one key (found by hash lookup) or a range (found by stab query).
/// Sixteen bytes either way (the rarer range behind a box), since every watcher keeps one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// Exactly this key; watchers of one key share it (see `WatcherGroup::shared_key`).
    Key(Arc<[u8]>),
    /// Every key in the interval.
    Range(Box<Interval>),
}

impl WatchTarget {
    /// etcd's convention: an empty `range_end` is one key, `"\0"` is every key >= `key`.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        if range_end.is_empty() {
            WatchTarget::Key(key.into())
        } else {
            WatchTarget::Range(Box::new(Interval::new(key, range_end)))
        }
    }

    /// Whether an event on `key` concerns this target.
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            WatchTarget::Key(k) => &k[..] == key,
            WatchTarget::Range(i) => i.contains(key),
        }
    }
}

/// Event filters (etcd's NOPUT / NODELETE), as bits to keep the watcher small.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filters(u8);

impl Filters {
    /// Drop PUT events.
    pub const NO_PUT: Filters = Filters(1);
    /// Drop DELETE events.
    pub const NO_DELETE: Filters = Filters(2);

    /// The union of two filter sets.
    pub fn with(self, other: Filters) -> Filters {
        Filters(self.0 | other.0)
    }

    /// Whether `ev` must not be sent.
    pub fn drops(self, ev: &Event) -> bool {
        if ev.r#type == EventType::Delete as i32 {
            self.0 & Self::NO_DELETE.0 != 0
        } else {
            self.0 & Self::NO_PUT.0 != 0
        }
    }
}

/// Where a watcher currently lives in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherState {
    /// Caught up: notify() matches new events against it.
    Synced,
    /// Behind: the sync loop replays history to it.
    Unsynced,
    /// Its stream channel was full; a pending batch waits in the victim list.
    Victim,
}

/// A registered watcher.
#[derive(Debug)]
pub struct Watcher {
    /// The keys it watches.
    pub target: WatchTarget,
    /// The next revision it must see: every event below it has been sent (or filtered), so
    /// nothing is ever sent twice.
    pub min_rev: i64,
    /// The stream-level id stamped on its responses.
    pub watch_id: i64,
    /// The owning stream's bounded channel (shared by all watchers of that stream).
    pub tx: mpsc::Sender<Delivery>,
    /// NOPUT / NODELETE.
    pub filters: Filters,
    /// Which group holds it.
    pub state: WatcherState,
}
