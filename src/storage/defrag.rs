//! Defragment: sled never gives back the space of deleted rows (its file only grows), so the
//! store is copied row by row into a fresh sled database, which is then switched in.
//!
//! The store lives in its own sled database, `<data dir>/mvcc/` (older data dirs keep it as
//! a tree of the member's shared database in `db/` until their first defragment moves it
//! out). A defragment, with every apply and read held off:
//!
//! 1. copies every row into a new database in `mvcc.defrag/`, flushes and fsyncs it;
//! 2. renames `mvcc/` to `mvcc.old/` (own database only), then `mvcc.defrag/` to `mvcc/`,
//!    and fsyncs the data dir;
//! 3. opens `mvcc/` and switches the store to it; removes `mvcc.old/` (or, for an older
//!    data dir, empties the tree in the shared database).
//!
//! A crash anywhere is repaired by [`recover`] when the store opens next: a `mvcc.defrag/`
//! beside a `mvcc/` is an unfinished copy (removed); a `mvcc.defrag/` beside a `mvcc.old/`
//! without `mvcc/` is a finished copy between the two renames (renamed into place); a
//! left-over `mvcc.old/` is removed. The copy is complete and durable before the first
//! rename, so whichever directory ends up as `mvcc/` holds the whole store.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::StorageError;

/// The store's own sled database, inside the data dir.
pub(crate) const MVCC_DIR: &str = "mvcc";
/// A copy being made.
const COPY_DIR: &str = "mvcc.defrag";
/// The database being replaced.
const OLD_DIR: &str = "mvcc.old";

fn io(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Corrupt(format!("{what} {}: {e}", path.display()))
}

/// Repairs what an interrupted defragment left in `home` (see the module comment).
pub(crate) fn recover(home: &Path) -> Result<(), StorageError> {
    let (live, copy, old) = (home.join(MVCC_DIR), home.join(COPY_DIR), home.join(OLD_DIR));
    if copy.exists() {
        if !live.exists() && old.exists() {
            tracing::warn!("finishing an interrupted defragment");
            fs::rename(&copy, &live).map_err(|e| io("rename", &copy, e))?;
            sync_dir(home)?;
        } else {
            tracing::warn!("removing the copy of an interrupted defragment");
            fs::remove_dir_all(&copy).map_err(|e| io("remove", &copy, e))?;
        }
    }
    if old.exists() && live.exists() {
        fs::remove_dir_all(&old).map_err(|e| io("remove", &old, e))?;
    }
    Ok(())
}

/// A new database being filled in `home/mvcc.defrag` (by a defragment or a snapshot
/// install); [`Copy::finish`] makes it durable, [`switch`] then moves it into place. Dropped
/// unfinished, it stays behind for [`recover`] (or the next copy) to remove.
pub(crate) struct Copy {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
}

impl Copy {
    /// Starts an empty copy, removing what an earlier unfinished one left.
    pub(crate) fn create(home: &Path, tree_name: &str) -> Result<Copy, StorageError> {
        let dir = home.join(COPY_DIR);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io("remove", &dir, e))?;
        }
        let db = super::backend::copy_db_config(&dir).open()?;
        let tree = db.open_tree(tree_name)?;
        Ok(Copy { db, tree, dir })
    }

    /// The tree the rows go to.
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Flushes the copy, closes it and fsyncs its files. It is closed because sled reads
    /// large values by path: the copy is opened again after its rename.
    pub(crate) fn finish(self) -> Result<(), StorageError> {
        let Copy { db, tree, dir } = self;
        db.flush()?;
        drop(tree);
        drop(db);
        sync_db_files(&dir)
    }

    /// Closes and removes an unfinished copy (what is left if that fails goes on the next
    /// open or copy).
    pub(crate) fn discard(self) {
        let Copy { db, tree, dir } = self;
        drop(tree);
        drop(db);
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove an unfinished copy");
        }
    }
}

/// Copies every row of `tree` into a new database in `home/mvcc.defrag`, durably. The rows
/// go in key order, a run at a time, so that each leaf of the copy is written once per run
/// (`extend_ordered`); the copy is trusted only once finished, so sled's atomic batches would
/// buy nothing.
pub(crate) fn copy(home: &Path, tree: &sled::Tree, tree_name: &str) -> Result<(), StorageError> {
    let copy = Copy::create(home, tree_name)?;
    let (mut run, mut bytes) = (Vec::new(), 0);
    for row in tree.iter() {
        let (k, v) = row?;
        bytes += k.len() + v.len();
        run.push((k, v));
        if run.len() >= super::INSTALL_BATCH_ROWS || bytes >= super::INSTALL_BATCH_BYTES {
            copy.tree().extend_ordered(std::mem::take(&mut run))?;
            bytes = 0;
        }
    }
    copy.tree().extend_ordered(run)?;
    copy.finish()
}

/// Moves the finished copy into place: `mvcc/` (if any) aside, the copy in, the data dir
/// synced. Returns the directory to remove once the old database is closed.
pub(crate) fn switch(home: &Path) -> Result<Option<PathBuf>, StorageError> {
    let (live, copy, old) = (home.join(MVCC_DIR), home.join(COPY_DIR), home.join(OLD_DIR));
    let aside = if live.exists() {
        fs::rename(&live, &old).map_err(|e| io("rename", &live, e))?;
        Some(old)
    } else {
        None
    };
    fs::rename(&copy, &live).map_err(|e| io("rename", &copy, e))?;
    sync_dir(home)?;
    Ok(aside)
}

/// fdatasyncs a sled database's data file and its large-value files (sled's own flush only
/// writes with `sync_file_range`).
pub(crate) fn sync_db_files(dir: &Path) -> Result<(), StorageError> {
    let data = dir.join("db");
    fs::File::open(&data)
        .and_then(|f| f.sync_data())
        .map_err(|e| io("sync", &data, e))?;
    let blobs = dir.join("blobs");
    if let Ok(entries) = fs::read_dir(&blobs) {
        for entry in entries.flatten() {
            if let Ok(f) = fs::File::open(entry.path()) {
                f.sync_data().map_err(|e| io("sync", &entry.path(), e))?;
            }
        }
        sync_dir(&blobs)?;
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync", dir, e))
}

/// Creates the store's own database for a new store, atomically: made and synced as a copy,
/// then renamed into place, so that an existing `mvcc/` always holds a store (an empty one
/// means the database was damaged; see [`super::MvccStore::open_dir`]).
pub(crate) fn create(
    home: &Path,
    tree_name: &str,
    rows: &[(&[u8], Vec<u8>)],
) -> Result<(), StorageError> {
    let copy = Copy::create(home, tree_name)?;
    let mut batch = sled::Batch::default();
    for (k, v) in rows {
        batch.insert(*k, v.clone());
    }
    copy.tree().apply_batch(batch)?;
    copy.finish()?;
    let copy = home.join(COPY_DIR);
    let live = home.join(MVCC_DIR);
    fs::rename(&copy, &live).map_err(|e| io("rename", &copy, e))?;
    sync_dir(home)
}

/// How long [`open_db`] retries: sled's I/O threads release a dropped database's file lock a
/// moment after the drop, and a defragment reopens the copy it has just closed.
const REOPEN_ATTEMPTS: usize = 500;
const REOPEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Opens the sled database in `dir`, retrying while a just-dropped handle still holds it.
pub(crate) fn open_db(dir: &Path) -> Result<sled::Db, StorageError> {
    let mut attempt = 0;
    loop {
        match super::backend::store_db_config(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if attempt < REOPEN_ATTEMPTS
                    && e.to_string().contains("could not acquire lock") =>
            {
                attempt += 1;
                std::thread::sleep(REOPEN_PAUSE);
            }
            Err(e) => return Err(e.into()),
        }
    }
}
