//! Raft snapshots on disk: the snapshot a member keeps, and the files snapshots travel in.
//!
//! A member keeps its current snapshot in `<data dir>/snap/current.snap`:
//!
//! ```text
//! magic "MINIETCD-RAFT-SNAP" | meta length u32 BE | meta (serde) | store snapshot
//! ```
//!
//! where the store snapshot is the MVCC store's own format (`storage::snapshot`), or a
//! marker, which has the same header under the magic "MINIETCD-RAFT-MARK" and no body: a
//! snapshot whose data is the store itself, durable up to the marker's position (what
//! `--snapshot-count` makes; the rows are read out only when a member needs them, see
//! `state_machine`). A new one (built here, or received from the leader) is written to a
//! temporary file in the same directory, synced, and renamed over `current.snap`, so the
//! kept snapshot is always a whole one. [`SnapshotData`] is an open file plus where the
//! store snapshot starts in it, or, sent from a marker, the store's rows as a thread reads
//! them from a view ([`Streamed`]): what the state machine hands to openraft and the network
//! sends in chunks, so a snapshot is never held in memory.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::paced::PacedFile;
use crate::raft::codec;
use crate::raft::types::SnapshotMeta;

/// The directory of snapshot files inside a data dir.
pub const SNAP_DIR: &str = "snap";
/// The kept snapshot's file name.
const KEPT: &str = "current.snap";
/// Temporary files end with this; leftovers are removed when the directory is opened.
const TEMP_SUFFIX: &str = ".tmp";
/// Identifies a kept snapshot file.
const MAGIC: &[u8] = b"MINIETCD-RAFT-SNAP";
/// Identifies a marker: a snapshot whose data is the store (same length as [`MAGIC`]).
const MARKER_MAGIC: &[u8] = b"MINIETCD-RAFT-MARK";
/// The largest meta accepted in a header (a membership of a few members is a few KiB).
const MAX_META_BYTES: u32 = 1 << 20;

/// The write buffer of a snapshot file.
const WRITE_BUFFER_BYTES: usize = 256 << 10;
/// Makes temporary file names unique within a process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A snapshot's bytes: an open file and the range of it holding the store snapshot.
pub struct SnapshotData {
    /// Open for reading; survives the file being renamed or replaced.
    file: File,
    /// Where the file was when opened (a temporary file until kept).
    path: PathBuf,
    /// The store snapshot's first byte.
    offset: u64,
    /// The store snapshot's length.
    len: u64,
    /// Removed when dropped: a received snapshot openraft did not install.
    temp: bool,
    /// A marker: no rows, the store holds the data (see the module doc).
    marker: bool,
    /// The store's rows as they are read from a view on another thread, in place of this
    /// data's own (see [`SnapshotData::take_stream`]).
    stream: Option<Streamed>,
}

/// What a streamed snapshot's reader hands over.
#[derive(Debug)]
pub enum Block {
    /// The next bytes of the store snapshot.
    Bytes(Vec<u8>),
    /// The store snapshot is complete.
    End,
}

/// The bytes of a store snapshot being read from the store, in order; a channel closed
/// before [`Block::End`] (or an error) means the snapshot is incomplete.
pub type Streamed = tokio::sync::mpsc::Receiver<io::Result<Block>>;

/// Blocks of a streamed snapshot waiting for the network: with [`STREAM_BLOCK_BYTES`], the
/// memory a send holds on the sending side.
pub const STREAM_QUEUE_BLOCKS: usize = 4;
/// The size of a streamed snapshot's blocks.
pub const STREAM_BLOCK_BYTES: usize = 1 << 20;

/// A writer that hands what is written to a [`Streamed`] receiver in blocks of
/// [`STREAM_BLOCK_BYTES`], waiting while the receiver is [`STREAM_QUEUE_BLOCKS`] behind. It
/// runs on a thread of its own (it blocks); a receiver that went away fails the next write.
pub struct BlockWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Block>>,
    buf: Vec<u8>,
}

impl BlockWriter {
    /// A writer feeding `tx`.
    pub fn new(tx: tokio::sync::mpsc::Sender<io::Result<Block>>) -> Self {
        BlockWriter {
            tx,
            buf: Vec::with_capacity(STREAM_BLOCK_BYTES),
        }
    }

    fn send(&self, item: io::Result<Block>) -> io::Result<()> {
        self.tx.blocking_send(item).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the snapshot's receiver went away",
            )
        })
    }

    /// Hands over what is buffered, then the end.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send(Ok(Block::Bytes(last)))?;
        }
        self.send(Ok(Block::End))
    }
}

impl Write for BlockWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(STREAM_BLOCK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == STREAM_BLOCK_BYTES {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_BLOCK_BYTES));
            self.send(Ok(Block::Bytes(full)))?;
        }
        Ok(n)
    }

    /// Blocks go when full (or at [`BlockWriter::finish`]), not when flushed.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotData")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("marker", &self.marker)
            .finish()
    }
}

impl SnapshotData {
    /// The store snapshot's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the store snapshot is empty (never, for a valid one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this is a marker, with no rows of its own (see the module doc).
    pub fn is_marker(&self) -> bool {
        self.marker
    }

    /// This data standing for the rows `stream` delivers (read from the store on another
    /// thread).
    pub fn streamed(mut self, stream: Streamed) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Whether the rows come from a stream (see [`SnapshotData::take_stream`]).
    pub fn is_streamed(&self) -> bool {
        self.stream.is_some()
    }

    /// The stream of the rows to send, when they come from one; otherwise this data's own
    /// rows are what is sent.
    pub fn take_stream(&mut self) -> Option<Streamed> {
        self.stream.take()
    }

    /// The data as a file: a streamed snapshot's rows written to a temporary file of `dir`
    /// (what a receiver of the stream would hold).
    #[cfg(test)]
    pub async fn into_file(
        mut self,
        dir: &SnapshotDir,
        meta: &SnapshotMeta,
    ) -> io::Result<SnapshotData> {
        let Some(mut stream) = self.take_stream() else {
            return Ok(self);
        };
        let mut w = dir.create(meta)?;
        loop {
            match stream.recv().await {
                Some(Ok(Block::Bytes(b))) => w.write(&b)?,
                Some(Ok(Block::End)) => return w.finish(),
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("the snapshot stream stopped")),
            }
        }
    }

    /// A reader of the store snapshot, from its first byte. Readers of one `SnapshotData`
    /// share the file position (the handles are duplicates): use one at a time.
    pub fn reader(&self) -> io::Result<io::Take<File>> {
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(self.offset))?;
        Ok(f.take(self.len))
    }

    /// An async reader of the store snapshot, from its first byte.
    pub async fn async_reader(&self) -> io::Result<tokio::io::Take<tokio::fs::File>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = tokio::fs::File::from_std(self.file.try_clone()?);
        f.seek(SeekFrom::Start(self.offset)).await?;
        Ok(f.take(self.len))
    }
}

impl Drop for SnapshotData {
    fn drop(&mut self) {
        if self.temp {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "temporary snapshot not removed");
            }
        }
    }
}

/// Writes one snapshot file: the header with its meta, then the store snapshot. Dropped
/// before [`SnapshotWriter::finish`], it removes its file.
pub struct SnapshotWriter {
    /// `None` once finished.
    out: Option<BufWriter<PacedFile>>,
    path: PathBuf,
    offset: u64,
}

impl SnapshotWriter {
    fn out(&mut self) -> io::Result<&mut BufWriter<PacedFile>> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot file already finished"))
    }

    /// Where the store snapshot goes.
    pub fn body(&mut self) -> io::Result<&mut BufWriter<PacedFile>> {
        self.out()
    }

    /// Appends bytes of the store snapshot (a received chunk).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out()?.write_all(bytes)
    }

    /// Syncs the file and opens it as [`SnapshotData`] (still temporary: removed when
    /// dropped unless [`SnapshotDir::keep`] keeps it).
    pub fn finish(mut self) -> io::Result<SnapshotData> {
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("snapshot file already finished"))?;
        let path = std::mem::take(&mut self.path);
        let file = match out.into_inner().map_err(|e| e.into_error()).and_then(|f| {
            let f = f.into_inner();
            f.sync_all()?;
            Ok(f)
        }) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        let size = file.metadata()?.len();
        // From here on `SnapshotData` removes the file if it is not kept.
        let data = SnapshotData {
            file: File::open(&path)?,
            path,
            offset: self.offset,
            len: size.saturating_sub(self.offset),
            temp: true,
            marker: false,
            stream: None,
        };
        Ok(data)
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "unfinished snapshot not removed");
            }
        }
    }
}

/// The directory of snapshot files.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    path: PathBuf,
}

impl SnapshotDir {
    /// Opens (or creates) the directory, removing temporary files a previous run left.
    pub fn open(path: &Path) -> io::Result<SnapshotDir> {
        fs::create_dir_all(path)?;
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                tracing::info!(path = %entry.path().display(), "removing an unfinished snapshot file");
                fs::remove_file(entry.path())?;
            }
        }
        Ok(SnapshotDir {
            path: path.to_path_buf(),
        })
    }

    /// Starts a temporary snapshot file for `meta`.
    pub fn create(&self, meta: &SnapshotMeta) -> io::Result<SnapshotWriter> {
        self.create_with(MAGIC, meta)
    }

    /// Keeps a marker for `meta` (the caller has made the store durable up to `meta`), in
    /// place of the kept snapshot.
    pub fn keep_marker(&self, meta: &SnapshotMeta) -> io::Result<SnapshotData> {
        let mut data = self.create_with(MARKER_MAGIC, meta)?.finish()?;
        data.marker = true;
        self.keep(&mut data)?;
        Ok(data)
    }

    fn create_with(&self, magic: &[u8], meta: &SnapshotMeta) -> io::Result<SnapshotWriter> {
        let meta_bytes = codec::encode("snapshot meta", meta).map_err(io::Error::other)?;
        let meta_len = u32::try_from(meta_bytes.len())
            .ok()
            .filter(|l| *l <= MAX_META_BYTES)
            .ok_or_else(|| io::Error::other("snapshot meta too large"))?;
        let name = format!(
            "{}-{}{TEMP_SUFFIX}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.path.join(name);
        // Written back as it grows: a snapshot is hundreds of MiB, and one fsync of all of it
        // at the end would hold up every Raft log fsync on the machine meanwhile.
        let out =
            BufWriter::with_capacity(WRITE_BUFFER_BYTES, PacedFile::new(File::create(&path)?));
        let offset = (magic.len() + 4 + meta_bytes.len()) as u64;
        let mut w = SnapshotWriter {
            out: Some(out),
            path,
            offset,
        };
        w.write(magic)?;
        w.write(&meta_len.to_be_bytes())?;
        w.write(&meta_bytes)?;
        Ok(w)
    }

    /// Makes `data` (a temporary file of this directory, synced) the kept snapshot,
    /// atomically. `data` then refers to the kept file.
    pub fn keep(&self, data: &mut SnapshotData) -> io::Result<()> {
        let kept = self.path.join(KEPT);
        if !data.temp || data.path.parent() != Some(self.path.as_path()) {
            return Err(io::Error::other(format!(
                "{} is not a new snapshot of {}",
                data.path.display(),
                self.path.display()
            )));
        }
        fs::rename(&data.path, &kept)?;
        File::open(&self.path)?.sync_all()?;
        data.path = kept;
        data.temp = false;
        Ok(())
    }

    /// Copies a snapshot from elsewhere into a temporary file of this directory.
    pub fn copy_in(&self, meta: &SnapshotMeta, data: &SnapshotData) -> io::Result<SnapshotData> {
        let mut w = self.create(meta)?;
        io::copy(&mut data.reader()?, w.body()?)?;
        w.finish()
    }

    /// Whether `data` is this directory's kept snapshot.
    pub fn is_kept(&self, data: &SnapshotData) -> bool {
        !data.temp && data.path == self.path.join(KEPT)
    }

    /// Whether `data` is a temporary file of this directory (one [`Self::keep`] takes).
    pub fn owns(&self, data: &SnapshotData) -> bool {
        data.temp && data.path.parent() == Some(self.path.as_path())
    }

    /// The kept snapshot, if any.
    pub fn kept(&self) -> io::Result<Option<(SnapshotMeta, SnapshotData)>> {
        let path = self.path.join(KEPT);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |what: &str| io::Error::other(format!("{}: {what}", path.display()));
        let mut magic = vec![0u8; MAGIC.len()];
        file.read_exact(&mut magic)
            .map_err(|_| bad("not a snapshot file"))?;
        let marker = magic == MARKER_MAGIC;
        if magic != MAGIC && !marker {
            return Err(bad("not a snapshot file"));
        }
        let mut len = [0u8; 4];
        file.read_exact(&mut len).map_err(|_| bad("truncated"))?;
        let len = u32::from_be_bytes(len);
        if len > MAX_META_BYTES {
            return Err(bad("garbled header"));
        }
        let mut meta = vec![0u8; len as usize];
        file.read_exact(&mut meta).map_err(|_| bad("truncated"))?;
        let meta: SnapshotMeta =
            codec::decode("snapshot meta", &meta).map_err(|e| bad(&e.to_string()))?;
        let offset = (MAGIC.len() + 4) as u64 + u64::from(len);
        let size = file.metadata()?.len();
        if marker && size != offset {
            return Err(bad("a snapshot marker with rows after its header"));
        }
        Ok(Some((
            meta,
            SnapshotData {
                file,
                path,
                offset,
                len: size.saturating_sub(offset),
                temp: false,
                marker,
                stream: None,
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_snapshot_reads_back_and_unkept_ones_vanish() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(&tmp.path().join(SNAP_DIR)).unwrap();
        assert!(dir.kept().unwrap().is_none());
        let meta = SnapshotMeta::default();
        let mut w = dir.create(&meta).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        let mut data = w.finish().unwrap();
        assert_eq!(data.len(), 11);
        dir.keep(&mut data).unwrap();
        let (back, kept) = dir.kept().unwrap().unwrap();
        assert_eq!(back, meta);
        let mut s = String::new();
        kept.reader().unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        // A received snapshot that is dropped unkept leaves nothing behind.
        let w = dir.create(&meta).unwrap();
        drop(w.finish().unwrap());
        let names: Vec<_> = fs::read_dir(tmp.path().join(SNAP_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEPT)]);
    }

    #[test]
    fn a_marker_replaces_the_kept_snapshot_and_reads_back_as_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(&tmp.path().join(SNAP_DIR)).unwrap();
        let mut w = dir.create(&SnapshotMeta::default()).unwrap();
        w.write(b"rows").unwrap();
        let mut full = w.finish().unwrap();
        dir.keep(&mut full).unwrap();
        assert!(!dir.kept().unwrap().unwrap().1.is_marker());
        let meta = SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id::<crate::raft::types::TypeConfig>(
                3, 1, 77,
            )),
            ..SnapshotMeta::default()
        };
        let marker = dir.keep_marker(&meta).unwrap();
        assert!(marker.is_marker() && marker.is_empty());
        let (back, kept) = dir.kept().unwrap().unwrap();
        assert_eq!(back, meta);
        assert!(kept.is_marker());
        assert_eq!(kept.len(), 0);
        // A marker with bytes after its header is refused, not read as rows.
        let path = tmp.path().join(SNAP_DIR).join(KEPT);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"junk").unwrap();
        let err = dir.kept().unwrap_err().to_string();
        assert!(err.contains("marker with rows"), "{err}");
    }
}
