//! The Raft log's own write-ahead log: segment files of framed, checksummed records.
//!
//! Design (etcd's `wal` package and databend's raft-log, written for this project):
//! - **Segments** `<seq as 16 hex digits>.wal`, zero-filled to [`WalOptions::segment_bytes`]
//!   before use by a background thread (the *preparer*), so that a sync never grows a file
//!   and `fdatasync` has no metadata to commit. Every segment starts with a header (the
//!   format magic [`SEGMENT_MAGIC`] and its sequence number) and a state record (vote,
//!   committed, purge point), so that older segments only matter for their entries and are
//!   dropped whole once purged.
//! - **One ordered stream** of records (entries, votes, committed, truncations, purges).
//!   Callers frame their records into a pending buffer under a short lock and return; one
//!   writer thread takes everything pending, writes it with one `pwrite` per segment, syncs
//!   once (`fdatasync`), and then completes every caller's callback: group commit, and an
//!   append is acknowledged only once it is on stable storage.
//! - **Recovery** replays the segments in order. A torn write at the end of the last segment
//!   (a record partly zero: it never reached the disk whole, so it was never acknowledged) is
//!   cut off and zeroed; any other bad record, or a torn one in an older segment, is refused
//!   with the segment, the offset and the reason. A file that does not start with the magic is
//!   refused as a foreign format.
//!
//! The WAL knows log indexes and bytes, nothing of openraft: `raft::log_store` encodes the
//! entries and keeps decoded recent ones in a cache.

pub mod fs;
pub mod record;
mod recover;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

use fs::{WalFile, WalFs};
use record::Kind;

/// The first bytes of every segment's header record: the format this code reads and writes.
pub const SEGMENT_MAGIC: &[u8] = b"minietcd-wal-v1";
/// Default segment size. etcd uses 64 MB segments that it pre-allocates without writing;
/// segments here are zero-filled (an overwrite of written blocks syncs fastest), so they
/// are smaller to keep that cost down.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of prepared (zero-filled, not yet used) segment files.
const PREPARED_SUFFIX: &str = ".tmp";

/// A WAL failure.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("wal: {what}: {source}")]
    Io {
        /// What was being done, and on which file.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A segment holds a record that is neither good nor a torn write at the end.
    #[error("wal segment {file} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        file: String,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A file in the WAL directory is not a segment of this format.
    #[error("wal file {file} is not in minietcd's log format {format:?}: {reason}")]
    Foreign {
        /// The file.
        file: String,
        /// The format this build reads.
        format: &'static str,
        /// What was found instead.
        reason: String,
    },
    /// An earlier write failed; the WAL accepts nothing more (the node must stop).
    #[error("wal stopped after a failed write: {0}")]
    Failed(String),
    /// The caller broke the log's rules (an entry that leaves a gap).
    #[error("wal: {0}")]
    Invalid(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalError {
    let what = what.into();
    move |source| WalError::Io { what, source }
}

/// Called once what was queued before it is durable (or the write failed).
pub type Done = Box<dyn FnOnce(Result<(), WalError>) + Send>;

/// Tuning.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size of a segment file.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// The durable Raft state other than entries, as last written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalState {
    /// The vote's bytes.
    pub vote: Option<Vec<u8>>,
    /// The committed log id's bytes.
    pub committed: Option<Vec<u8>>,
    /// The last purged index and log id bytes.
    pub purged: Option<(u64, Vec<u8>)>,
    /// The first and last entry index held, if any.
    pub entries: Option<(u64, u64)>,
}

/// Where an entry's bytes are.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seq: u64,
    /// Offset of the entry's bytes (after the index) in the segment.
    off: u64,
    len: usize,
}

/// One segment the WAL knows.
struct Segment {
    /// `None` until the writer has created it.
    file: Option<Arc<dyn WalFile>>,
    /// The highest entry index written to it (lowered by truncation).
    last_index: Option<u64>,
}

/// Bytes to write at `off` of segment `seq`, creating the segment first when `create` says
/// how large.
struct Chunk {
    seq: u64,
    off: u64,
    create: Option<u64>,
    buf: Vec<u8>,
}

impl Chunk {
    fn covers(&self, seq: u64, off: u64, len: usize) -> Option<&[u8]> {
        if self.seq != seq || off < self.off {
            return None;
        }
        let start = usize::try_from(off - self.off).ok()?;
        self.buf.get(start..start.checked_add(len)?)
    }
}

/// Everything behind the lock.
struct Inner {
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
    entries: BTreeMap<u64, Loc>,
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to, where the next record goes, and its size.
    cur_seq: u64,
    cur_off: u64,
    cur_size: u64,
    /// Framed records the writer has not taken yet, in order.
    pending: Vec<Chunk>,
    /// Records the writer is writing now (still readable from here until written).
    in_flight: Arc<Vec<Chunk>>,
    /// Completed after the next sync.
    waiters: Vec<Done>,
    /// Segments to remove after the next sync.
    deletions: Vec<u64>,
    /// Set by the first failed write; everything after fails with it.
    failed: Option<String>,
    /// The last handle is gone: the writer stops once idle.
    stop: bool,
}

/// Shared by the handles and the writer thread.
struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the writer.
    work: Condvar,
    fs: Arc<dyn WalFs>,
    opts: WalOptions,
    /// Prepared segments from the preparer thread.
    prepared: Mutex<mpsc::Receiver<writer::Prepared>>,
    /// `fdatasync` calls made, for the benchmark's report.
    syncs: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stops the writer when the last [`Wal`] handle is dropped.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.work.notify_all();
    }
}

/// A handle on the WAL; clones share it.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    _stop: Arc<StopGuard>,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

/// Encodes an optional blob for the state record: u32 length (u32::MAX for none), bytes.
fn put_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(b) => {
            out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX - 1).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

fn get_opt<'a>(p: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
    *p = &p[4..];
    if len == u32::MAX {
        return Some(None);
    }
    let len = len as usize;
    let v = p.get(..len)?;
    *p = &p[len..];
    Some(Some(v))
}

impl Inner {
    fn state_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_opt(&mut out, self.vote.as_deref());
        put_opt(&mut out, self.committed.as_deref());
        match &self.purged {
            Some((idx, b)) => {
                out.push(1);
                out.extend_from_slice(&idx.to_le_bytes());
                put_opt(&mut out, Some(b));
            }
            None => out.push(0),
        }
        out
    }

    /// Frames a record into the pending buffer, starting a new segment when it does not fit;
    /// returns the offset of its payload.
    fn push(&mut self, segment_bytes: u64, kind: Kind, parts: &[&[u8]]) -> u64 {
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        let n = record::framed_len(payload) as u64;
        if self.cur_off + n > self.cur_size {
            self.rotate(segment_bytes, n);
        }
        let off = self.cur_off;
        let seq = self.cur_seq;
        let append_here = matches!(self.pending.last(),
            Some(c) if c.seq == seq && c.off + c.buf.len() as u64 == off);
        if !append_here {
            self.pending.push(Chunk {
                seq,
                off,
                create: None,
                buf: Vec::new(),
            });
        }
        if let Some(c) = self.pending.last_mut() {
            record::encode(seq, kind, parts, &mut c.buf);
        }
        self.cur_off += n;
        off + (record::HEADER_BYTES + 1) as u64
    }

    /// Starts segment `cur_seq + 1`, large enough for a record of `need` bytes.
    fn rotate(&mut self, segment_bytes: u64, need: u64) {
        self.start_segment(self.cur_seq + 1, segment_bytes, need);
    }

    /// Makes `seq` the current segment: queues its creation with its header and a state
    /// record, sized for a record of `need` bytes at least.
    fn start_segment(&mut self, seq: u64, segment_bytes: u64, need: u64) {
        let state = self.state_payload();
        let mut buf = Vec::new();
        record::encode(
            seq,
            Kind::SegmentHeader,
            &[SEGMENT_MAGIC, &seq.to_le_bytes()],
            &mut buf,
        );
        record::encode(seq, Kind::State, &[&state], &mut buf);
        let size = segment_bytes.max((need + buf.len() as u64).next_multiple_of(4096));
        self.segments.insert(
            seq,
            Segment {
                file: None,
                last_index: None,
            },
        );
        self.cur_seq = seq;
        self.cur_off = buf.len() as u64;
        self.cur_size = size;
        self.pending.push(Chunk {
            seq,
            off: 0,
            create: Some(size),
            buf,
        });
    }

    /// Applies an entry record (live or replayed) to the index.
    fn add_entry(&mut self, index: u64, loc: Loc) -> Result<(), String> {
        if let Some((&last, _)) = self.entries.last_key_value() {
            if index <= last {
                self.cut_from(index);
            } else if index != last + 1 {
                return Err(format!("entry {index} leaves a gap after {last}"));
            }
        }
        self.entries.insert(index, loc);
        if let Some(s) = self.segments.get_mut(&loc.seq) {
            s.last_index = Some(s.last_index.map_or(index, |l| l.max(index)));
        }
        Ok(())
    }

    /// Drops entries from `index` on.
    fn cut_from(&mut self, index: u64) {
        self.entries.split_off(&index);
        for s in self.segments.values_mut() {
            if matches!(s.last_index, Some(l) if l >= index) {
                s.last_index = index.checked_sub(1);
            }
        }
    }

    /// Drops entries up to `index`.
    fn purge_to(&mut self, index: u64, id: Vec<u8>) {
        self.entries = self.entries.split_off(&(index + 1));
        self.purged = Some((index, id));
    }

    fn apply_state(&mut self, mut p: &[u8]) -> Option<()> {
        let vote = get_opt(&mut p)?.map(<[u8]>::to_vec);
        let committed = get_opt(&mut p)?.map(<[u8]>::to_vec);
        let purged = match p.first()? {
            0 => None,
            _ => {
                let idx = record::read_u64(p.get(1..)?)?;
                let mut rest = p.get(9..)?;
                Some((idx, get_opt(&mut rest)??.to_vec()))
            }
        };
        self.vote = vote;
        self.committed = committed;
        if let Some((idx, id)) = purged {
            self.purge_to(idx, id);
        }
        Some(())
    }

    /// Segments (oldest first, never the current one) whose entries are all purged.
    fn purgeable(&self) -> Vec<u64> {
        let upto = self.purged.as_ref().map_or(0, |(i, _)| *i);
        self.segments
            .iter()
            .take_while(|(&seq, s)| {
                seq < self.cur_seq && s.file.is_some() && s.last_index.is_none_or(|l| l <= upto)
            })
            .map(|(&seq, _)| seq)
            .collect()
    }

    fn read_pending(&self, loc: Loc) -> Option<Vec<u8>> {
        self.pending
            .iter()
            .chain(self.in_flight.iter())
            .find_map(|c| c.covers(loc.seq, loc.off, loc.len))
            .map(<[u8]>::to_vec)
    }
}

impl Wal {
    /// Opens the WAL in `fs`, recovering what it holds, or starts an empty one.
    pub fn open(fs: Arc<dyn WalFs>, opts: WalOptions) -> Result<Wal, WalError> {
        let mut seqs = Vec::new();
        for name in fs.list().map_err(io_err("list the wal directory"))? {
            if name.ends_with(PREPARED_SUFFIX) {
                fs.remove(&name).map_err(io_err(format!("remove {name}")))?;
                continue;
            }
            let seq = name
                .strip_suffix(SEGMENT_SUFFIX)
                .filter(|s| s.len() == 16)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or_else(|| WalError::Foreign {
                    file: name.clone(),
                    format: "minietcd-wal-v1",
                    reason: "not a segment file name".into(),
                })?;
            seqs.push(seq);
        }
        seqs.sort_unstable();
        let mut inner = Inner {
            vote: None,
            committed: None,
            purged: None,
            entries: BTreeMap::new(),
            segments: BTreeMap::new(),
            cur_seq: 0,
            cur_off: 0,
            cur_size: 0,
            pending: Vec::new(),
            in_flight: Arc::new(Vec::new()),
            waiters: Vec::new(),
            deletions: Vec::new(),
            failed: None,
            stop: false,
        };
        for (i, &seq) in seqs.iter().enumerate() {
            if i > 0 && seqs[i - 1] + 1 != seq {
                return Err(WalError::Corrupt {
                    file: segment_name(seq),
                    offset: 0,
                    reason: format!("segment {} is missing", seqs[i - 1] + 1),
                });
            }
            let last = i + 1 == seqs.len();
            recover::replay_segment(fs.as_ref(), &mut inner, seq, last)?;
        }
        let (tx, rx) = mpsc::sync_channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            work: Condvar::new(),
            fs: fs.clone(),
            opts,
            prepared: Mutex::new(rx),
            syncs: AtomicU64::new(0),
        });
        writer::start_preparer(fs, shared.opts.segment_bytes, tx)?;
        {
            let mut inner = shared.lock();
            if inner.cur_size == 0 {
                // A fresh WAL, or the last segment never got its header (and was removed).
                let seq = seqs.last().copied().unwrap_or(0);
                let bytes = shared.opts.segment_bytes;
                inner.start_segment(seq, bytes, 0);
            }
        }
        writer::start_writer(shared.clone())?;
        let wal = Wal {
            _stop: Arc::new(StopGuard(shared.clone())),
            shared,
        };
        // Make the first segment exist before anyone relies on it.
        wal.sync_blocking()?;
        Ok(wal)
    }

    /// The vote, committed id, purge point and entry range.
    pub fn state(&self) -> WalState {
        let inner = self.shared.lock();
        let first = inner.entries.first_key_value().map(|(&i, _)| i);
        let last = inner.entries.last_key_value().map(|(&i, _)| i);
        WalState {
            vote: inner.vote.clone(),
            committed: inner.committed.clone(),
            purged: inner.purged.clone(),
            entries: first.zip(last),
        }
    }

    /// How many `fdatasync` calls the writer made.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Queues records under the lock and wakes the writer; `done` runs after the sync that
    /// covers them.
    fn submit(
        &self,
        done: Option<Done>,
        f: impl FnOnce(&mut Inner, u64) -> Result<(), WalError>,
    ) -> Result<(), WalError> {
        let mut inner = self.shared.lock();
        if let Some(msg) = &inner.failed {
            let msg = msg.clone();
            drop(inner);
            if let Some(done) = done {
                done(Err(WalError::Failed(msg.clone())));
            }
            return Err(WalError::Failed(msg));
        }
        f(&mut inner, self.shared.opts.segment_bytes)?;
        if let Some(done) = done {
            inner.waiters.push(done);
            drop(inner);
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Appends entries `(index, bytes)`, indexes consecutive; `done` runs once they are
    /// durable. An index at or below the last one replaces it and everything after.
    pub fn append<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
        done: Option<Done>,
    ) -> Result<(), WalError> {
        self.submit(done, |inner, seg| {
            for (index, bytes) in entries {
                let off = inner.push(seg, Kind::Entry, &[&index.to_le_bytes(), bytes]);
                let loc = Loc {
                    seq: inner.cur_seq,
                    off: off + 8,
                    len: bytes.len(),
                };
                inner.add_entry(index, loc).map_err(WalError::Invalid)?;
            }
            Ok(())
        })
    }

    /// Records the vote; `done` runs once it is durable.
    pub fn save_vote(&self, vote: &[u8], done: Option<Done>) -> Result<(), WalError> {
        self.submit(done, |inner, seg| {
            inner.push(seg, Kind::Vote, &[vote]);
            inner.vote = Some(vote.to_vec());
            Ok(())
        })
    }

    /// Records the committed id; it becomes durable with the next sync.
    pub fn save_committed(&self, committed: &[u8]) -> Result<(), WalError> {
        self.submit(None, |inner, seg| {
            inner.push(seg, Kind::Committed, &[committed]);
            inner.committed = Some(committed.to_vec());
            Ok(())
        })
    }

    /// Drops entries from `index` on; `done` runs once that is durable.
    pub fn truncate(&self, index: u64, done: Option<Done>) -> Result<(), WalError> {
        self.submit(done, |inner, seg| {
            inner.push(seg, Kind::Truncate, &[&index.to_le_bytes()]);
            inner.cut_from(index);
            Ok(())
        })
    }

    /// Drops entries up to `index` (recording `id`, the purged log id); segments holding only
    /// purged entries are removed after the next sync.
    pub fn purge(&self, index: u64, id: &[u8]) -> Result<(), WalError> {
        self.submit(None, |inner, seg| {
            inner.push(seg, Kind::Purge, &[&index.to_le_bytes(), id]);
            inner.purge_to(index, id.to_vec());
            for seq in inner.purgeable() {
                inner.segments.remove(&seq);
                inner.deletions.push(seq);
            }
            Ok(())
        })
    }

    /// Waits until everything queued so far is durable (blocking: not on the async runtime).
    pub fn sync_blocking(&self) -> Result<(), WalError> {
        let (tx, rx) = mpsc::channel();
        self.submit(
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
            |_, _| Ok(()),
        )?;
        rx.recv()
            .map_err(|_| WalError::Failed("the wal writer stopped".into()))?
    }

    /// The bytes of entry `index`, if the log holds it.
    pub fn read(&self, index: u64) -> Result<Option<Vec<u8>>, WalError> {
        let (loc, file) = {
            let inner = self.shared.lock();
            let Some(&loc) = inner.entries.get(&index) else {
                return Ok(None);
            };
            if let Some(bytes) = inner.read_pending(loc) {
                return Ok(Some(bytes));
            }
            let file = inner.segments.get(&loc.seq).and_then(|s| s.file.clone());
            (loc, file)
        };
        let file = file.ok_or_else(|| {
            WalError::Invalid(format!(
                "entry {index} is in segment {} which is gone",
                loc.seq
            ))
        })?;
        let mut buf = vec![0u8; loc.len];
        file.read_exact_at(&mut buf, loc.off)
            .map_err(io_err(format!(
                "read entry {index} from {}",
                segment_name(loc.seq)
            )))?;
        Ok(Some(buf))
    }
}
