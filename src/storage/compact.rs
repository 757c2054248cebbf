//! Compaction: dropping history that no read at or above the compaction revision can need.
//!
//! Applying a compaction only records its revision (reads below it are refused from then
//! on); the history goes afterwards, in the background, as etcd's scheduled compaction does.
//! The index decides what goes ([`KeyIndex::compact`](super::key_index::KeyIndex::compact)),
//! a bounded step under the apply lock at a time (`--experimental-compaction-batch-limit`,
//! default [`COMPACT_STEP_KEYS`]), with a pause between steps; the rows the steps drop are
//! gathered (up to [`COMPACT_PENDING_ROWS`]) and deleted from sled in revision order, a
//! batch of as many rows at a time, a leaf at a time, without the apply lock (applies only
//! add rows above the compaction, and reads at or above it never reach the rows that go).
//! A crash before the end leaves superseded rows behind, and open() compacts again at the
//! recorded revision (compaction is idempotent). sled recovers a prefix of its log, and a
//! key's rows go oldest first, a generation's tombstone last: whatever a crash keeps of a
//! key still reads as it did (a put row left without its tombstone would bring the key
//! back).

use std::ops::Bound;
use std::time::Duration;

use super::backend::State;
use super::error::StorageError;
use super::revision::{row_key, Revision};

/// etcd's default compaction batch limit: one compaction step visits at most this many keys
/// and stops once it has dropped this many revisions (etcd's batch reads this many revisions).
pub const COMPACT_STEP_KEYS: usize = 1000;
/// The pause between background compaction steps (etcd's is 10 ms).
pub const COMPACT_STEP_PAUSE: Duration = Duration::from_millis(10);
/// How long the deletion of compacted rows rests after a batch, per unit of time the batch
/// took: a deletion that runs behind the requests still shares the disk, sled's buffers and
/// the cores they leave with them, so it works at most a third of the time.
pub const COMPACT_DELETE_REST_PER_WORK: u32 = 2;

/// The rest after a batch of deletions that took `worked`: [`COMPACT_DELETE_REST_PER_WORK`]
/// times as long, and never less than [`COMPACT_STEP_PAUSE`].
pub fn delete_pause(worked: Duration) -> Duration {
    (worked * COMPACT_DELETE_REST_PER_WORK).max(COMPACT_STEP_PAUSE)
}
/// The rows a compaction gathers from its index steps before deleting them (in revision
/// order, a batch at a time): deleted in revision order across many steps, the rows that
/// share a leaf go together. About 24 bytes a row; the step that reaches it may add its own
/// rows beyond it (a step drops about as many rows as the batch limit).
pub const COMPACT_PENDING_ROWS: usize = 256 * 1024;
/// How often a long removal of compacted history logs its progress.
pub const COMPACT_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Compacts the whole index at `at` (step after step, without pauses) and returns the rows
/// that are no longer reachable.
pub(crate) fn compact_index(state: &mut State, at: i64) -> Vec<(Revision, bool)> {
    let mut removed = Vec::new();
    let mut from: Option<Vec<u8>> = None;
    loop {
        let (rows, next) = compact_index_step(state, at, from.as_deref(), COMPACT_STEP_KEYS);
        removed.extend(rows);
        match next {
            Some(key) => from = Some(key),
            None => return removed,
        }
    }
}

/// Compacts the index at `at` for the keys after `after` (from the first key when `None`),
/// stopping after `limit` keys or once `limit` revisions were dropped, whichever comes first
/// (one key's history is never split, so a step may drop a few more); returns the rows no
/// longer reachable and the last key compacted when keys may remain.
pub(crate) fn compact_index_step(
    state: &mut State,
    at: i64,
    after: Option<&[u8]>,
    limit: usize,
) -> (Vec<(Revision, bool)>, Option<Vec<u8>>) {
    let limit = limit.max(1);
    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut removed = Vec::new();
    let mut emptied = Vec::new();
    let mut last = None;
    let mut n = 0;
    for (key, ki) in state.index.range_mut::<[u8], _>((lower, Bound::Unbounded)) {
        ki.compact(at, &mut removed);
        if ki.is_empty() {
            emptied.push(key.clone());
        }
        n += 1;
        if n >= limit || removed.len() >= limit {
            last = Some(key.clone());
            break;
        }
    }
    for key in emptied {
        state.index.remove(&key);
    }
    (removed, last)
}

/// Deletes `rows` from the tree in revision order (so each key's rows go oldest first, its
/// tombstones last), a leaf at a time (`Tree::remove_ordered`, a patch of ours, see
/// `vendor/sled/PATCHES.md`): the rows a compaction drops are most of those below it, so
/// many share a leaf, and each leaf is written once instead of once per row. No sled
/// batch, whose lock would hold every concurrent write back until the whole batch is in; a
/// crash keeps a prefix of the leaves written. Returns the bytes of the rows that were
/// there (keys and values).
pub(crate) fn delete_rows(
    tree: &sled::Tree,
    rows: &mut [(Revision, bool)],
) -> Result<u64, StorageError> {
    removal_order(rows);
    let keys: Vec<Vec<u8>> = rows
        .iter()
        .map(|(rev, tombstone)| row_key(*rev, *tombstone))
        .collect();
    Ok(tree.remove_ordered(&keys)?)
}

/// Puts rows in the order [`delete_rows`] deletes them: by revision, so that every prefix of
/// the deletion (what a crash may keep of it) leaves each key's tombstones in place.
pub(crate) fn removal_order(rows: &mut [(Revision, bool)]) {
    rows.sort_unstable_by_key(|(rev, _)| *rev);
}
