//! Compaction: dropping history that no read at or above the compaction revision can need.
//!
//! The index decides what goes ([`KeyIndex::compact`](super::key_index::KeyIndex::compact));
//! the rows are then deleted from sled in batches of [`COMPACT_BATCH_ROWS`] so that a large
//! history never turns into one giant batch. The compaction revision is recorded before any
//! row is deleted; a crash in between leaves superseded rows behind, and open() simply
//! compacts again at the recorded revision (compaction is idempotent).

use super::backend::State;
use super::error::StorageError;
use super::revision::{row_key, Revision};

/// Rows deleted per sled batch during a compaction.
pub const COMPACT_BATCH_ROWS: usize = 4096;

/// Compacts the index at `at` and returns the rows that are no longer reachable.
pub(crate) fn compact_index(state: &mut State, at: i64) -> Vec<(Revision, bool)> {
    let mut removed = Vec::new();
    state.index.retain(|_, ki| {
        ki.compact(at, &mut removed);
        !ki.is_empty()
    });
    removed
}

/// Deletes `rows` from the tree, [`COMPACT_BATCH_ROWS`] at a time.
pub(crate) fn delete_rows(
    tree: &sled::Tree,
    rows: &[(Revision, bool)],
) -> Result<(), StorageError> {
    for chunk in rows.chunks(COMPACT_BATCH_ROWS) {
        let mut batch = sled::Batch::default();
        for (rev, tombstone) in chunk {
            batch.remove(row_key(*rev, *tombstone));
        }
        tree.apply_batch(batch)?;
    }
    Ok(())
}
