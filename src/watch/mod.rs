//! Watch, etcd's way: the watchable store and everything a watch stream needs.
//!
//! The state machine calls [`WatchableStore`]'s `notify` (through
//! [`crate::raft::types::ApplyObserver`]) after each write is durable; the store matches the
//! events against synced watchers ([`watcher_group`]: a hash map for keys and an
//! [`interval_tree`] for ranges) and pushes one [`event_batch::Delivery`] per watcher into
//! the watcher's stream channel without ever waiting. Watchers that are behind replay
//! [`history`] in the background ([`sync`]); watchers whose channel was full retry as victims.
//! [`stream`] holds the per-stream bookkeeping the gRPC layer (`server::watch`) uses, and
//! [`checker`] verifies etcd's watch guarantees over a recorded run.
//!
//! - [`interval_tree`]: balanced interval tree over byte-string keys.
//! - [`watcher`] / [`watcher_group`]: one watcher; watchers indexed for matching.
//! - [`event_batch`]: what travels from the store to a stream.
//! - [`watchable_store`]: synced / unsynced / victims, notify, restore.
//! - [`sync`]: unsynced catch-up and victim retry loops.
//! - [`history`]: the history source (sled store or memory).
//! - [`stream`]: one gRPC stream's watch ids, options and response shaping.
//! - [`checker`]: ordered, unique, reliable, atomic, resumable.

use std::time::Duration;

pub mod checker;
pub mod event_batch;
pub mod history;
pub mod interval_tree;
pub mod stream;
pub mod sync;
pub mod watchable_store;
pub mod watcher;
pub mod watcher_group;

pub use event_batch::Delivery;
pub use history::{History, MemoryHistory};
pub use sync::{SyncOutcome, WatchLoops};
pub use watchable_store::WatchableStore;
pub use watcher::{Filters, WatchTarget, WatcherId};

/// Capacity of a stream's delivery channel (etcd's `chanBufLen`): beyond it, watchers of the
/// stream become victims rather than block the apply path.
pub const CHAN_BUF_LEN: usize = 128;

/// Unsynced watchers served per sync round (etcd's `maxWatchersPerSync`).
pub const MAX_WATCHERS_PER_SYNC: usize = 512;

/// Revisions read from history per sync round (etcd's `watchBatchMaxRevs`).
pub const WATCH_BATCH_MAX_REVS: usize = 1000;

/// Period of the unsynced catch-up loop.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Period of the victim retry loop.
pub const VICTIM_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// Revisions buffered for an in-flight sync round (see `sync.rs`); beyond it the round's
/// watchers simply stay unsynced one more round.
pub const GAP_MAX_REVS: usize = 1024;

#[cfg(test)]
mod store_tests;
