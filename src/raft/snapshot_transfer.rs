//! Moving a snapshot between members: a stream of `SnapshotChunk`s read from the sender's
//! snapshot file, or from its store as the rows are read ([`streamed_chunks`]), and written
//! to a file on the receiver, a few chunks in memory at a time on each side.
//!
//! Deadlines are per chunk, not per snapshot: the sender gives up when no chunk went out for
//! the chunk deadline (openraft's `install_snapshot_timeout`, from
//! `RaftTuning::snapshot_timeout_ms`), the receiver when no chunk came in for as long. After
//! the last chunk the receiver installs before it answers; the sender then waits the chunk
//! deadline plus the time an install of that size may take at
//! [`INSTALL_MIN_BYTES_PER_SEC`]. A transfer that goes on logs its progress every
//! [`PROGRESS_LOG_INTERVAL`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_stream::StreamExt;
use tonic::Status;

use crate::pb::minietcdpb::SnapshotChunk;
use crate::raft::codec;
use crate::raft::snapshot::{Block, SnapshotData, SnapshotDir, SnapshotWriter, Streamed};
use crate::raft::types::{SnapshotMeta, Vote};

/// A transfer logs its progress this often.
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// The slowest install a sender waits for after its last chunk (a receiver installs the
/// whole snapshot before it answers).
pub const INSTALL_MIN_BYTES_PER_SEC: u64 = 4 << 20;
/// The largest snapshot accepted from a peer: etcd's largest allowed backend quota (8 GiB),
/// so that a confused peer cannot fill this member's disk.
pub const MAX_SNAPSHOT_BYTES: u64 = 8 << 30;

/// Bytes of a transfer handed over so far, shared between the chunk stream and the
/// deadline watcher.
#[derive(Debug)]
pub struct Progress {
    bytes: AtomicU64,
    /// The snapshot's size, once known (`u64::MAX` before: a streamed snapshot's size is
    /// known at its end).
    total: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            bytes: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
        }
    }
}

impl Progress {
    /// Bytes handed over so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// The snapshot's size, once known.
    pub fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Acquire)).filter(|t| *t != u64::MAX)
    }

    fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Release);
    }
}

/// Logs a transfer's progress at most every [`PROGRESS_LOG_INTERVAL`].
struct ProgressLog {
    what: &'static str,
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl ProgressLog {
    fn new(what: &'static str, total: Option<u64>) -> Self {
        let now = Instant::now();
        ProgressLog {
            what,
            started: now,
            last: now,
            total,
        }
    }

    fn tick(&mut self, bytes: u64) {
        if self.last.elapsed() >= PROGRESS_LOG_INTERVAL {
            self.last = Instant::now();
            tracing::info!(
                bytes,
                total = ?self.total,
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "snapshot {} progress",
                self.what
            );
        }
    }
}

/// The chunks of one snapshot read lazily from `reader` (`total` bytes): `vote` and `meta`
/// ride in the first chunk, `done` is set on the last. A read error ends the stream
/// without a `done` chunk, which the receiver refuses.
pub fn chunks<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    total: u64,
    header: (Vec<u8>, Vec<u8>),
    chunk_bytes: usize,
    progress: Arc<Progress>,
) -> impl Stream<Item = SnapshotChunk> + Send + 'static {
    struct St<R> {
        reader: R,
        header: Option<(Vec<u8>, Vec<u8>)>,
        sent: u64,
        finished: bool,
        log: ProgressLog,
    }
    let st = St {
        reader,
        header: Some(header),
        sent: 0,
        finished: false,
        log: ProgressLog::new("send", Some(total)),
    };
    let chunk_bytes = chunk_bytes.max(1) as u64;
    progress.set_total(total);
    futures::stream::unfold(st, move |mut st| {
        let progress = progress.clone();
        async move {
            if st.finished {
                return None;
            }
            let n = (total - st.sent).min(chunk_bytes);
            let mut data = vec![0u8; usize::try_from(n).ok()?];
            if let Err(e) = st.reader.read_exact(&mut data).await {
                tracing::error!(error = %e, sent = st.sent, "reading the snapshot to send failed");
                return None;
            }
            st.sent += n;
            st.finished = st.sent >= total;
            progress.bytes.store(st.sent, Ordering::Release);
            st.log.tick(st.sent);
            let (vote, meta) = st.header.take().unwrap_or_default();
            let chunk = SnapshotChunk {
                vote,
                meta,
                data,
                done: st.finished,
            };
            Some((chunk, st))
        }
    })
}

/// The chunks of a snapshot whose bytes `blocks` delivers as they are read from the store
/// (see `snapshot::Streamed`), at most `chunk_bytes` each: `vote` and `meta` ride in the
/// first chunk, `done` is set on the last, sent once the stream says it is complete (the
/// last chunk may be empty). A stream that fails or stops short ends the chunks without a
/// `done` chunk, which the receiver refuses.
pub fn streamed_chunks(
    blocks: Streamed,
    header: (Vec<u8>, Vec<u8>),
    chunk_bytes: usize,
    progress: Arc<Progress>,
) -> impl Stream<Item = SnapshotChunk> + Send + 'static {
    struct St {
        blocks: Streamed,
        header: Option<(Vec<u8>, Vec<u8>)>,
        buf: Vec<u8>,
        sent: u64,
        finished: bool,
        log: ProgressLog,
    }
    let st = St {
        blocks,
        header: Some(header),
        buf: Vec::new(),
        sent: 0,
        finished: false,
        log: ProgressLog::new("send", None),
    };
    let chunk_bytes = chunk_bytes.max(1);
    futures::stream::unfold(st, move |mut st| {
        let progress = progress.clone();
        async move {
            if st.finished {
                return None;
            }
            // Gather a whole chunk, or the rest once the stream is complete.
            let done = loop {
                if st.buf.len() >= chunk_bytes {
                    break false;
                }
                match st.blocks.recv().await {
                    // A block is taken as it is when nothing waits before it (with blocks
                    // of the chunk size, every block): no copy on the way to the network.
                    Some(Ok(Block::Bytes(b))) if st.buf.is_empty() => st.buf = b,
                    Some(Ok(Block::Bytes(b))) => st.buf.extend_from_slice(&b),
                    Some(Ok(Block::End)) => break true,
                    Some(Err(e)) => {
                        tracing::error!(error = %e, sent = st.sent, "reading the snapshot to send failed");
                        return None;
                    }
                    None => {
                        tracing::error!(sent = st.sent, "the snapshot to send stopped short");
                        return None;
                    }
                }
            };
            let data = if done {
                std::mem::take(&mut st.buf)
            } else {
                let rest = st.buf.split_off(chunk_bytes);
                std::mem::replace(&mut st.buf, rest)
            };
            st.sent += data.len() as u64;
            st.finished = done;
            if done {
                progress.set_total(st.sent);
            }
            progress.bytes.store(st.sent, Ordering::Release);
            st.log.tick(st.sent);
            let (vote, meta) = st.header.take().unwrap_or_default();
            Some((
                SnapshotChunk {
                    vote,
                    meta,
                    data,
                    done,
                },
                st,
            ))
        }
    })
}

/// Why a send stopped waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum SendTimeout {
    /// No chunk went out for the chunk deadline.
    Stalled {
        /// Bytes sent before the stall.
        sent: u64,
    },
    /// The receiver did not answer in time after the last chunk.
    NoAnswer,
}

/// Waits for `call` (the InstallSnapshot RPC fed by [`chunks`] or [`streamed_chunks`])
/// with per-chunk deadlines: `chunk_ttl` without progress fails it, and after the last byte
/// (the progress's total) the answer may take `chunk_ttl` plus an install's time.
pub async fn with_chunk_deadlines<T>(
    call: impl std::future::Future<Output = T>,
    progress: &Progress,
    chunk_ttl: Duration,
) -> Result<T, SendTimeout> {
    tokio::pin!(call);
    let check = (chunk_ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut last = (progress.bytes(), TokioInstant::now());
    let mut known_total = progress.total().is_some();
    loop {
        tokio::select! {
            r = &mut call => return Ok(r),
            () = tokio::time::sleep(check) => {
                let sent = progress.bytes();
                let total = progress.total();
                // The end of a stream (its last chunk may be empty) counts as progress: the
                // wait for the receiver's install starts there.
                if sent != last.0 || (total.is_some() && !known_total) {
                    last = (sent, TokioInstant::now());
                    known_total = total.is_some();
                }
                let all_sent = total.is_some_and(|t| sent >= t);
                let allowed = match total {
                    Some(t) if all_sent => chunk_ttl + Duration::from_secs(t / INSTALL_MIN_BYTES_PER_SEC),
                    _ => chunk_ttl,
                };
                if last.1.elapsed() > allowed {
                    return Err(if all_sent { SendTimeout::NoAnswer } else { SendTimeout::Stalled { sent } });
                }
            }
        }
    }
}

/// A snapshot received into a file.
pub struct Received {
    /// The sender's vote.
    pub vote: Vote,
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The snapshot's bytes, in a temporary file of the snapshot directory.
    pub data: SnapshotData,
    /// Chunks received.
    pub chunks: usize,
}

/// Receives one snapshot from `stream` into a temporary file of `dir`, waiting at most
/// `chunk_ttl` for each chunk.
pub async fn receive<S>(
    mut stream: S,
    dir: &SnapshotDir,
    chunk_ttl: Duration,
) -> Result<Received, Status>
where
    S: Stream<Item = Result<SnapshotChunk, Status>> + Unpin,
{
    let mut header: Option<(Vote, SnapshotMeta)> = None;
    let mut writer: Option<SnapshotWriter> = None;
    let mut bytes = 0u64;
    let mut chunks = 0usize;
    let mut log = ProgressLog::new("receive", None);
    loop {
        let chunk = match tokio::time::timeout(chunk_ttl, stream.next()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no snapshot chunk for {chunk_ttl:?} after {bytes} bytes"
                )))
            }
            Ok(None) => {
                return Err(Status::aborted(
                    "snapshot stream ended before its last chunk",
                ))
            }
            Ok(Some(chunk)) => chunk?,
        };
        chunks += 1;
        let mut w = match writer.take() {
            Some(w) => w,
            None => {
                let vote = codec::decode("vote", &chunk.vote).map_err(bad_request)?;
                let meta: SnapshotMeta =
                    codec::decode("snapshot meta", &chunk.meta).map_err(bad_request)?;
                let w = dir.create(&meta).map_err(io_status)?;
                header = Some((vote, meta));
                w
            }
        };
        bytes = bytes.saturating_add(chunk.data.len() as u64);
        if bytes > MAX_SNAPSHOT_BYTES {
            return Err(Status::resource_exhausted(
                "snapshot larger than MAX_SNAPSHOT_BYTES",
            ));
        }
        let done = chunk.done;
        // Writing may block on the disk: off the runtime's threads.
        let w = tokio::task::spawn_blocking(move || w.write(&chunk.data).map(|()| w))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(io_status)?;
        log.tick(bytes);
        if done {
            let data = tokio::task::spawn_blocking(move || w.finish())
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(io_status)?;
            let (vote, meta) = header.ok_or_else(|| Status::internal("snapshot header lost"))?;
            return Ok(Received {
                vote,
                meta,
                data,
                chunks,
            });
        }
        writer = Some(w);
    }
}

fn bad_request(e: codec::CodecError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn io_status(e: std::io::Error) -> Status {
    Status::internal(format!("snapshot file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vote and meta (`[1]`, `[2]` in these tests) ride in the first chunk and no other.
    fn assert_header_in_the_first_chunk_only(got: &[SnapshotChunk]) {
        assert_eq!(
            (got[0].vote.as_slice(), got[0].meta.as_slice()),
            (&[1u8][..], &[2u8][..])
        );
        assert!(got
            .iter()
            .skip(1)
            .all(|c| c.vote.is_empty() && c.meta.is_empty()));
    }

    async fn collect(len: usize, chunk: usize) -> Vec<SnapshotChunk> {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let progress = Arc::new(Progress::default());
        chunks(
            std::io::Cursor::new(data),
            len as u64,
            (vec![1], vec![2]),
            chunk,
            progress.clone(),
        )
        .collect::<Vec<_>>()
        .await
    }

    #[tokio::test]
    async fn chunks_cover_data_once_header_first_done_last() {
        for (len, chunk, expect) in [(0, 4, 1), (1, 4, 1), (4, 4, 1), (5, 4, 2), (1000, 7, 143)] {
            let got = collect(len, chunk).await;
            assert_eq!(got.len(), expect, "len {len} chunk {chunk}");
            let joined: Vec<u8> = got.iter().flat_map(|c| c.data.clone()).collect();
            assert_eq!(joined, (0..len).map(|i| i as u8).collect::<Vec<_>>());
            assert_header_in_the_first_chunk_only(&got);
            assert!(got.last().unwrap().done);
            assert!(got.iter().rev().skip(1).all(|c| !c.done));
        }
    }

    #[tokio::test]
    async fn a_short_file_ends_the_stream_without_done() {
        let progress = Arc::new(Progress::default());
        let got: Vec<_> = chunks(&b"abc"[..], 10, (vec![], vec![]), 2, progress)
            .collect::<Vec<_>>()
            .await;
        assert_eq!(got.len(), 1);
        assert!(!got[0].done);
    }

    /// Streams `blocks` (then `end`, if any) through [`streamed_chunks`].
    async fn stream(
        blocks: &[Vec<u8>],
        end: Option<std::io::Result<Block>>,
        chunk: usize,
    ) -> (Vec<SnapshotChunk>, Arc<Progress>) {
        let (tx, rx) = tokio::sync::mpsc::channel(blocks.len() + 1);
        for b in blocks {
            tx.send(Ok(Block::Bytes(b.clone()))).await.unwrap();
        }
        if let Some(end) = end {
            tx.send(end).await.unwrap();
        }
        drop(tx);
        let progress = Arc::new(Progress::default());
        let got = streamed_chunks(rx, (vec![1], vec![2]), chunk, progress.clone())
            .collect::<Vec<_>>()
            .await;
        (got, progress)
    }

    #[tokio::test]
    async fn streamed_blocks_are_sent_in_chunks_with_done_after_the_end() {
        let blocks: Vec<Vec<u8>> = [5usize, 0, 13, 1, 7]
            .iter()
            .scan(0u8, |n, len| {
                Some(
                    (0..*len)
                        .map(|_| {
                            *n = n.wrapping_add(1);
                            *n
                        })
                        .collect(),
                )
            })
            .collect();
        let all: Vec<u8> = blocks.concat();
        for chunk in [1, 4, 26, 100] {
            let (got, progress) = stream(&blocks, Some(Ok(Block::End)), chunk).await;
            let joined: Vec<u8> = got.iter().flat_map(|c| c.data.clone()).collect();
            assert_eq!(joined, all, "chunk {chunk}");
            assert!(got.iter().all(|c| c.data.len() <= chunk));
            assert!(got
                .iter()
                .rev()
                .skip(1)
                .all(|c| !c.done && c.data.len() == chunk));
            assert!(got.last().unwrap().done);
            assert_header_in_the_first_chunk_only(&got);
            assert_eq!(progress.total(), Some(all.len() as u64));
            assert_eq!(progress.bytes(), all.len() as u64);
        }
        // Nothing at all: one empty chunk that carries the header and the end.
        let (got, _) = stream(&[], Some(Ok(Block::End)), 4).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].done && got[0].data.is_empty());
    }

    #[tokio::test]
    async fn a_stream_that_fails_or_stops_short_is_never_done() {
        let blocks = vec![vec![7u8; 10]];
        let failed = Some(Err(std::io::Error::other("disk gone")));
        for end in [failed, None] {
            let (got, progress) = stream(&blocks, end, 4).await;
            assert!(got.iter().all(|c| !c.done), "no done chunk");
            assert_eq!(progress.total(), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_are_per_chunk_not_per_snapshot() {
        let ttl = Duration::from_secs(1);
        let progress = Arc::new(Progress::default());
        // Progress every 500 ms for 5 s: far longer than one deadline, never stalled.
        let p = progress.clone();
        let call = async move {
            for i in 1..=10u64 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                p.bytes.store(i, Ordering::Release);
            }
            "answer"
        };
        progress.set_total(10);
        assert_eq!(
            with_chunk_deadlines(call, &progress, ttl).await,
            Ok("answer")
        );
        // No progress at all: fails after about one deadline.
        let stalled = Arc::new(Progress::default());
        let start = tokio::time::Instant::now();
        let r = with_chunk_deadlines(std::future::pending::<()>(), &stalled, ttl).await;
        assert_eq!(r, Err(SendTimeout::Stalled { sent: 0 }));
        assert!(start.elapsed() < ttl * 2);
    }
}
