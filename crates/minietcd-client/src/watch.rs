//! Watch: the public side (options, [`Watcher`], [`WatchBatch`]) and the hub that hands out
//! the shared watch streams. The stream machinery itself is in `watch_stream.rs`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

use crate::pb::etcdserverpb::{
    watch_create_request::FilterType, ResponseHeader, WatchCreateRequest,
};
use crate::pb::mvccpb::Event;

use super::kv::RangeSpec;
use super::watch_stream::{Command, WatchStream, COMMAND_QUEUE};
use super::{range_setters, ClientError, ClientInner};

/// Batches a watcher's buffer holds. When it is full the watcher is paused (canceled on the
/// server) and resumed from its next revision once its reader has emptied half of it: the
/// reader misses nothing and the other watchers never wait for it (instead of clientv3's
/// unbounded buffer).
pub const DEFAULT_WATCHER_BUFFER: usize = 128;

/// What a watcher receives: the events of one watch response (fragments already merged), or
/// none for a progress notification.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchBatch {
    /// The response header; its revision is the store revision when it was sent.
    pub header: Option<ResponseHeader>,
    /// The server's id of the watch this batch came from (changes when the watch is resumed
    /// on a new stream).
    pub watch_id: i64,
    /// The events, in revision order, none of them delivered before.
    pub events: Vec<Event>,
}

impl WatchBatch {
    /// A progress notification: no events, only the header revision.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
    }
    /// The header revision (0 without a header).
    pub fn revision(&self) -> i64 {
        self.header.as_ref().map_or(0, |h| h.revision)
    }
}

/// How a watch ended, as the stream task reports it to the [`Watcher`].
pub(crate) struct WatchEnd {
    /// The error the user sees.
    pub(crate) error: ClientError,
    /// The header of the server response that ended the watch (compaction or cancel).
    pub(crate) header: Option<ResponseHeader>,
}

/// What travels from the stream task to a watcher.
pub(crate) type WatchItem = Result<WatchBatch, WatchEnd>;

/// Options of a watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    range: RangeSpec,
    start_revision: i64,
    prev_kv: bool,
    progress_notify: bool,
    no_put: bool,
    no_delete: bool,
    fragment: bool,
    require_leader: bool,
    buffer: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            range: RangeSpec::Key,
            start_revision: 0,
            prev_kv: false,
            progress_notify: false,
            no_put: false,
            no_delete: false,
            // Asked for by default: the client merges fragments, so a huge batch never hits
            // the server's response size limit.
            fragment: true,
            require_leader: false,
            buffer: DEFAULT_WATCHER_BUFFER,
        }
    }
}

range_setters!(WatchOptions);

impl WatchOptions {
    /// Watch the key alone, from the next revision.
    pub fn new() -> Self {
        Self::default()
    }
    /// Starts at this (possibly past) revision instead of the next one.
    pub fn start_revision(mut self, rev: i64) -> Self {
        self.start_revision = rev;
        self
    }
    /// Events carry the previous key-value.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    /// The server sends empty batches (progress notifications) when the watch is idle.
    pub fn progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }
    /// Leaves out put events.
    pub fn no_put(mut self) -> Self {
        self.no_put = true;
        self
    }
    /// Leaves out delete events.
    pub fn no_delete(mut self) -> Self {
        self.no_delete = true;
        self
    }
    /// Whether the server may split large batches (the client merges them again).
    pub fn fragment(mut self, on: bool) -> Self {
        self.fragment = on;
        self
    }
    /// Runs the watch on a stream that the member closes when it loses its leader.
    pub fn require_leader(mut self) -> Self {
        self.require_leader = true;
        self
    }
    /// Batches buffered for this watcher (at least 1); when full, the watch is paused on the
    /// server and resumed, from where the reader is, once half of the buffer has been read.
    pub fn buffer(mut self, batches: usize) -> Self {
        self.buffer = batches.max(1);
        self
    }

    fn to_request(&self, key: Vec<u8>) -> WatchCreateRequest {
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if self.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        WatchCreateRequest {
            range_end: self.range.range_end(&key),
            key,
            start_revision: self.start_revision,
            progress_notify: self.progress_notify,
            filters,
            prev_kv: self.prev_kv,
            watch_id: 0,
            fragment: self.fragment,
        }
    }
}

/// One watch. Receive its batches with [`Watcher::recv`] (or as a `Stream`); dropping it
/// cancels the watch on the server.
///
/// After an error (compaction, cancel by the server, a final stream error) nothing more
/// arrives and `recv` returns `None`.
pub struct Watcher {
    /// The server's id when the watch was created.
    watch_id: i64,
    /// Batches from the stream task.
    rx: mpsc::Receiver<WatchItem>,
    /// The header of the server response that ended the watch, once it has ended so.
    end_header: Option<ResponseHeader>,
    /// Dropped with the watcher: the stream task sees the other end close and cancels the
    /// watch on the server.
    _closer: oneshot::Sender<()>,
}

impl Watcher {
    /// The server's id of the watch when it was created.
    pub fn watch_id(&self) -> i64 {
        self.watch_id
    }

    /// The next batch or error; `None` once the watch has ended.
    pub async fn recv(&mut self) -> Option<Result<WatchBatch, ClientError>> {
        let item = self.rx.recv().await?;
        Some(self.take_end(item))
    }

    /// The header of the server response that ended the watch (a compaction or a cancel),
    /// once [`Watcher::recv`] has returned that error; etcdctl prints it.
    pub fn end_header(&self) -> Option<&ResponseHeader> {
        self.end_header.as_ref()
    }

    fn take_end(&mut self, item: WatchItem) -> Result<WatchBatch, ClientError> {
        item.map_err(|end| {
            self.end_header = end.header;
            end.error
        })
    }
}

impl futures::Stream for Watcher {
    type Item = Result<WatchBatch, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(self.take_end(item))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The watch streams of one client: one per leader requirement (a RequireLeader stream is a
/// different gRPC call, with its own metadata). Started on first use.
#[derive(Default)]
pub(crate) struct WatchHub {
    streams: Mutex<HashMap<bool, mpsc::Sender<Command>>>,
}

impl WatchHub {
    fn sender(&self, inner: &Arc<ClientInner>, require_leader: bool) -> mpsc::Sender<Command> {
        let mut streams = match self.streams.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(tx) = streams.get(&require_leader) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        WatchStream::spawn(
            Arc::clone(&inner.endpoints),
            inner.options.clone(),
            require_leader,
            rx,
        );
        streams.insert(require_leader, tx.clone());
        tx
    }
}

/// Watch requests of a [`super::Client`].
#[derive(Clone)]
pub struct WatchClient {
    inner: Arc<ClientInner>,
}

impl WatchClient {
    pub(crate) fn new(inner: Arc<ClientInner>) -> Self {
        WatchClient { inner }
    }

    /// Creates a watch and returns once the server has confirmed it: events written after this
    /// returns are delivered.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        opts: WatchOptions,
    ) -> Result<Watcher, ClientError> {
        let require_leader = opts.require_leader || self.inner.options.require_leader;
        let tx = self.inner.watch_hub.sender(&self.inner, require_leader);
        let (events_tx, events_rx) = mpsc::channel(opts.buffer);
        let (created_tx, created_rx) = oneshot::channel();
        let (closer, closed) = oneshot::channel();
        let create = Command::Create {
            request: opts.to_request(key.into()),
            events: events_tx,
            created: created_tx,
            closed,
        };
        tx.send(create).await.map_err(|_| ClientError::Closed)?;
        let watch_id = created_rx.await.map_err(|_| ClientError::Closed)??;
        Ok(Watcher {
            watch_id,
            rx: events_rx,
            end_header: None,
            _closer: closer,
        })
    }

    /// Asks the server for a progress notification on the client's (non RequireLeader) watch
    /// stream: every watcher on it receives an empty batch carrying the current revision.
    pub async fn request_progress(&self) -> Result<(), ClientError> {
        let require_leader = self.inner.options.require_leader;
        let tx = self.inner.watch_hub.sender(&self.inner, require_leader);
        tx.send(Command::Progress)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_build_etcd_create_requests() {
        let req = WatchOptions::new()
            .prefix()
            .start_revision(7)
            .prev_kv()
            .no_delete()
            .to_request(b"ab".to_vec());
        assert_eq!(
            (req.key.as_slice(), req.range_end.as_slice()),
            (&b"ab"[..], &b"ac"[..])
        );
        assert_eq!(req.start_revision, 7);
        assert!(
            req.prev_kv && req.fragment,
            "fragments are asked for by default"
        );
        assert_eq!(req.filters, vec![FilterType::Nodelete as i32]);
        let all = WatchOptions::new()
            .from_key()
            .fragment(false)
            .to_request(vec![0]);
        assert_eq!(all.range_end, vec![0]);
        assert!(!all.fragment);
        assert_eq!(
            WatchOptions::new().buffer(0).buffer,
            1,
            "a watcher buffer holds at least one batch"
        );
    }
}
