//! The WAL's two threads: the writer (group commit) and the preparer (zero-filled segments
//! ready before they are needed, etcd's file pipeline).

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use super::fs::{WalFile, WalFs};
use super::{io_err, segment_name, Chunk, Done, Shared, WalError, PREPARED_SUFFIX};

/// A prepared segment: its temporary name and the open file.
pub(super) type Prepared = std::io::Result<(String, Arc<dyn WalFile>)>;

/// Starts the preparer: it zero-fills one segment of `segment_bytes` ahead and hands it over
/// when the writer asks; it ends when the WAL is gone.
pub(super) fn start_preparer(
    fs: Arc<dyn WalFs>,
    segment_bytes: u64,
    tx: mpsc::SyncSender<Prepared>,
) -> Result<(), WalError> {
    std::thread::Builder::new()
        .name("wal-preparer".into())
        .spawn(move || {
            for n in 0u64.. {
                let name = format!("prepared-{n}{PREPARED_SUFFIX}");
                let made = fs.create_zeroed(&name, segment_bytes).map(|f| (name, f));
                if tx.send(made).is_err() {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(io_err("start the wal preparer thread"))
}

/// Starts the writer thread.
pub(super) fn start_writer(shared: Arc<Shared>) -> Result<(), WalError> {
    std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || run(&shared))
        .map(drop)
        .map_err(io_err("start the wal writer thread"))
}

/// Takes everything queued, writes and syncs it, completes the callbacks; until stopped.
fn run(shared: &Shared) {
    loop {
        let (chunks, waiters, deletions) = {
            let mut inner = shared.lock();
            // Records nobody waits for (the committed id, a purge) ride along with the
            // next sync instead of costing one of their own.
            while inner.waiters.is_empty() && !inner.stop {
                inner = shared.work.wait(inner).unwrap_or_else(|p| p.into_inner());
            }
            if inner.stop && inner.pending.is_empty() && inner.waiters.is_empty() {
                return;
            }
            // Stopping: write what is pending (a last committed id) before the thread ends.
            let chunks = Arc::new(std::mem::take(&mut inner.pending));
            inner.in_flight = chunks.clone();
            (
                chunks,
                std::mem::take(&mut inner.waiters),
                std::mem::take(&mut inner.deletions),
            )
        };
        let result = write_and_sync(shared, &chunks);
        let mut inner = shared.lock();
        inner.in_flight = Arc::new(Vec::new());
        let result = match (result, &inner.failed) {
            (Ok(()), None) => Ok(()),
            (Ok(()), Some(msg)) => Err(msg.clone()),
            (Err(e), _) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "wal write failed; the log accepts no more writes");
                inner.failed = Some(msg.clone());
                Err(msg)
            }
        };
        drop(inner);
        if result.is_ok() {
            for seq in deletions {
                let name = segment_name(seq);
                match shared.fs.remove(&name) {
                    Ok(()) => tracing::debug!(segment = %name, "purged wal segment removed"),
                    Err(e) => {
                        tracing::warn!(segment = %name, error = %e, "cannot remove a purged wal segment")
                    }
                }
            }
        }
        complete(waiters, &result);
    }
}

fn complete(waiters: Vec<Done>, result: &Result<(), String>) {
    for done in waiters {
        done(result.clone().map_err(WalError::Failed));
    }
}

/// Writes `chunks` in order, one `pwrite` each, and syncs every file written. A new segment
/// is only started after the older ones are synced, so a torn write can only be in the last.
fn write_and_sync(shared: &Shared, chunks: &[Chunk]) -> Result<(), WalError> {
    let mut dirty: Vec<(u64, Arc<dyn WalFile>)> = Vec::new();
    for chunk in chunks {
        if let Some(size) = chunk.create {
            sync_all(shared, &mut dirty)?;
            let file = create_segment(shared, chunk.seq, size)?;
            if let Some(s) = shared.lock().segments.get_mut(&chunk.seq) {
                s.file = Some(file);
            }
        }
        let file = shared
            .lock()
            .segments
            .get(&chunk.seq)
            .and_then(|s| s.file.clone())
            .ok_or_else(|| WalError::Invalid(format!("segment {} has no file", chunk.seq)))?;
        file.write_all_at(&chunk.buf, chunk.off)
            .map_err(io_err(format!("write {}", segment_name(chunk.seq))))?;
        if !dirty.iter().any(|(s, _)| *s == chunk.seq) {
            dirty.push((chunk.seq, file));
        }
    }
    sync_all(shared, &mut dirty)
}

fn sync_all(shared: &Shared, dirty: &mut Vec<(u64, Arc<dyn WalFile>)>) -> Result<(), WalError> {
    for (seq, file) in dirty.drain(..) {
        crate::metrics::wal_fsync(|| file.sync_data())
            .map_err(io_err(format!("fdatasync {}", segment_name(seq))))?;
        shared.syncs.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Makes segment `seq`: the prepared one when it is large enough, else a new one of `size`;
/// renamed into place and the directory synced, so the segment survives a power cut.
fn create_segment(shared: &Shared, seq: u64, size: u64) -> Result<Arc<dyn WalFile>, WalError> {
    let name = segment_name(seq);
    let (tmp, file) = if size <= shared.opts.segment_bytes {
        let rx = shared.prepared.lock().unwrap_or_else(|p| p.into_inner());
        rx.recv()
            .map_err(|_| WalError::Failed("the wal preparer stopped".into()))?
            .map_err(io_err("prepare a wal segment"))?
    } else {
        let tmp = format!("large-{seq}{PREPARED_SUFFIX}");
        let file = shared
            .fs
            .create_zeroed(&tmp, size)
            .map_err(io_err(format!("create {tmp}")))?;
        (tmp, file)
    };
    shared
        .fs
        .rename(&tmp, &name)
        .and_then(|()| shared.fs.sync_dir())
        .map_err(io_err(format!("rename {tmp} to {name}")))?;
    Ok(file)
}
