//! One gRPC watch stream carrying many watchers, kept alive across member failures.
//!
//! A single task owns the stream and every watcher on it (clientv3's `watchGrpcStream`):
//!
//! - New watchers, and watchers to resume after a reconnect, wait in `resuming`. Only the
//!   head's create request is in flight; etcd assigns watch ids in request order and answers
//!   each create with a `created` response, which is matched to that head. Then the next one
//!   is sent.
//! - Each watcher keeps `next_rev`, the revision after the last event it delivered (or, for a
//!   watch "from now", the creation revision + 1). When the stream fails with an error that
//!   is not final, the task moves to the next member (after a backoff) and re-creates every
//!   watcher from its `next_rev`: nothing is missed, and events below `next_rev` are dropped
//!   should a server send them again, so nothing is delivered twice.
//! - Fragments of one response are merged before delivery.
//! - A response for an unknown watch id (a watcher closed meanwhile) is answered with one
//!   cancel request; closing a watcher cancels it on the server at once.
//! - Compaction ends the watcher with [`ClientError::Compacted`] carrying the revision.
//! - Progress notifications (a response with no events) move a watcher's resume point to
//!   the header revision + 1 (clientv3's nextRev), so a quiet watcher resumed after a
//!   compaction above its last event does not fail with `Compacted`.
//! - Buffers are bounded and the task never waits for a watcher's reader. Each watcher has
//!   its own bounded buffer (`WatchOptions::buffer` batches); a batch that does not fit
//!   *pauses* the watcher: the batch is dropped undelivered (its `next_rev` stays before
//!   it), the watch is canceled on the server, and once the reader has emptied half of the
//!   buffer the watch is created again from `next_rev`, so the reader still gets every event,
//!   in order, once (or `Compacted`, should the store be compacted past `next_rev`
//!   meanwhile). Progress notifications that do not fit are skipped. Memory stays bounded by
//!   the buffers, and one unread watcher never stalls creates, cancels, progress requests,
//!   reconnects or the other watchers of the stream.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, instrument, warn};

use crate::pb::etcdserverpb::{
    watch_client::WatchClient as PbWatchClient, watch_request::RequestUnion, ResponseHeader,
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use crate::pb::mvccpb::Event;

use super::endpoints::Endpoints;
use super::endpoints::{MAX_RECV_MSG_BYTES, REQUIRE_LEADER_KEY};
use super::watch::{WatchBatch, WatchEnd, WatchItem};
use super::{ClientError, ClientOptions};

/// Commands (create, progress) queued towards the stream task.
pub(crate) const COMMAND_QUEUE: usize = 256;

/// Requests queued towards the gRPC stream's send half.
const REQUEST_QUEUE: usize = 64;

/// First wait before reconnecting after a stream failure; doubled on each failure in a row.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest wait between reconnection attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The watch id etcd uses for responses meant for every watcher on the stream (progress).
const BROADCAST_WATCH_ID: i64 = -1;

/// What a [`super::WatchClient`] asks of the stream task.
pub(crate) enum Command {
    /// Add a watcher.
    Create {
        /// The create request as the user asked for it.
        request: WatchCreateRequest,
        /// Where the watcher's batches go.
        events: mpsc::Sender<WatchItem>,
        /// Answered with the watch id once the server has created the watch.
        created: oneshot::Sender<Result<i64, ClientError>>,
        /// Resolves when the [`super::Watcher`] is dropped.
        closed: oneshot::Receiver<()>,
    },
    /// Ask the server for a progress notification.
    Progress,
}

/// One watcher as the stream task sees it.
struct Substream {
    /// The create request as first asked; resumes change only its start revision.
    request: WatchCreateRequest,
    /// The revision after the last event delivered; 0 until known for a watch "from now".
    /// Events below it are dropped as duplicates.
    next_rev: i64,
    /// The header revision + 1 of the last progress notification (0: none): every event
    /// below it was delivered, so a resume may start there when it is past `next_rev`. Kept
    /// apart from `next_rev` so that a progress notification never makes the task drop an
    /// event as a duplicate (etcd 3.4 answers a progress request without waiting for its
    /// unsynced watchers).
    progress_rev: i64,
    /// Paused because its buffer was full: canceled on the server, resumed from `next_rev`
    /// once its reader has made room.
    paused: bool,
    /// Where batches go (bounded).
    events: mpsc::Sender<WatchItem>,
    /// Pending answer to the creator, until the first `created` response.
    created: Option<oneshot::Sender<Result<i64, ClientError>>>,
    /// The server's watch id on the live stream, once created there.
    server_id: Option<i64>,
    /// Events of a fragmented response received so far.
    fragments: Vec<Event>,
}

/// The gRPC stream in use.
struct Live {
    /// Requests to the server.
    requests: mpsc::Sender<WatchRequest>,
    /// Responses from the server.
    responses: tonic::Streaming<WatchResponse>,
    /// Index of the member it runs on (to move past it when it fails).
    endpoint: usize,
}

/// What woke the task up.
enum Wake {
    Command(Option<Command>),
    Closed(u64),
    Unpaused(u64),
    Response(Result<Option<WatchResponse>, tonic::Status>),
    RetryDue,
}

/// The task owning one watch stream and its watchers.
pub(crate) struct WatchStream {
    /// The client's members (shared, so failover moves every user of the client).
    endpoints: Arc<Endpoints>,
    /// The client's timeouts.
    options: ClientOptions,
    /// Whether the stream carries `hasleader: true`.
    require_leader: bool,
    /// Watchers by local id; ordered so resumes keep creation order.
    subs: BTreeMap<u64, Substream>,
    /// Server watch id -> local id, for the live stream.
    by_server: HashMap<i64, u64>,
    /// Watchers waiting for their create request to be sent.
    resuming: VecDeque<u64>,
    /// The watcher whose create request is in flight.
    in_flight: Option<u64>,
    /// Server ids already sent a cancel on the live stream (one cancel per unknown id).
    cancel_sent: HashSet<i64>,
    /// Next local id.
    next_local: u64,
    /// The stream, when connected.
    live: Option<Live>,
    /// Wait before the next reconnection attempt.
    backoff: Duration,
    /// When the next reconnection may start.
    retry_at: Option<Instant>,
    /// Resolve with a local id when that watcher is dropped.
    closers: FuturesUnordered<BoxFuture<'static, u64>>,
    /// Resolve with a local id when that paused watcher's buffer has room again (or its
    /// reader is gone).
    unpauses: FuturesUnordered<BoxFuture<'static, u64>>,
}

impl WatchStream {
    /// Starts the task; it ends when the client is gone and no watcher is left.
    pub(crate) fn spawn(
        endpoints: Arc<Endpoints>,
        options: ClientOptions,
        require_leader: bool,
        commands: mpsc::Receiver<Command>,
    ) {
        let stream = WatchStream {
            endpoints,
            options,
            require_leader,
            subs: BTreeMap::new(),
            by_server: HashMap::new(),
            resuming: VecDeque::new(),
            in_flight: None,
            cancel_sent: HashSet::new(),
            next_local: 0,
            live: None,
            backoff: RECONNECT_BACKOFF_MIN,
            retry_at: None,
            closers: FuturesUnordered::new(),
            unpauses: FuturesUnordered::new(),
        };
        tokio::spawn(stream.run(commands));
    }

    #[instrument(skip_all, fields(require_leader = self.require_leader))]
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut commands_open = true;
        loop {
            if !commands_open && self.subs.is_empty() {
                break;
            }
            let retry_due = self.retry_at.is_none_or(|at| at <= Instant::now());
            if self.live.is_none() && !self.resuming.is_empty() && retry_due {
                self.retry_at = None;
                self.connect().await;
                continue;
            }
            let retry_at = self.retry_at;
            let wake = tokio::select! {
                cmd = commands.recv(), if commands_open => Wake::Command(cmd),
                Some(local) = self.closers.next(), if !self.closers.is_empty() => Wake::Closed(local),
                Some(local) = self.unpauses.next(), if !self.unpauses.is_empty() => Wake::Unpaused(local),
                msg = next_response(&mut self.live) => Wake::Response(msg),
                _ = sleep_until(retry_at), if retry_at.is_some() => Wake::RetryDue,
            };
            match wake {
                Wake::Command(None) => commands_open = false,
                Wake::Command(Some(cmd)) => self.on_command(cmd).await,
                Wake::Closed(local) => self.on_close(local).await,
                Wake::Unpaused(local) => self.on_unpause(local).await,
                Wake::Response(Ok(Some(resp))) => self.on_response(resp).await,
                Wake::Response(Ok(None)) => {
                    self.on_stream_error(ClientError::Unavailable(
                        "watch stream closed by the server".into(),
                    ))
                    .await
                }
                Wake::Response(Err(status)) => {
                    self.on_stream_error(ClientError::from_status(&status))
                        .await
                }
                Wake::RetryDue => self.retry_at = None,
            }
        }
        debug!("watch stream task done");
    }

    /// The create request for a (re)start of `sub`: from its next revision once known.
    fn create_request(sub: &Substream) -> WatchRequest {
        let mut req = sub.request.clone();
        let resume_at = sub.next_rev.max(sub.progress_rev);
        if resume_at > 0 {
            req.start_revision = resume_at;
        }
        WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(req)),
        }
    }

    /// Opens a stream on the current member with the head of the queue as first request.
    async fn connect(&mut self) {
        let head = loop {
            match self.resuming.pop_front() {
                Some(local) if self.subs.contains_key(&local) => break local,
                Some(_) => continue,
                None => return,
            }
        };
        let Some(sub) = self.subs.get(&head) else {
            return;
        };
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        // The first request is queued before the call is awaited: the server may send its
        // response headers only with its first message, and the call completes only then.
        if tx.try_send(Self::create_request(sub)).is_err() {
            return;
        }
        let (endpoint, member) = self.endpoints.current();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        crate::auth::add_token(&mut request, self.endpoints.login().as_deref());
        if self.require_leader {
            request.metadata_mut().insert(
                REQUIRE_LEADER_KEY,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        let mut client =
            PbWatchClient::new(member.channel).max_decoding_message_size(MAX_RECV_MSG_BYTES);
        let deadline = self.options.dial_timeout + self.options.request_timeout;
        let opened = tokio::time::timeout(deadline, client.watch(request)).await;
        match opened {
            Ok(Ok(resp)) => {
                info!(endpoint = %member.url, watchers = self.subs.len(), "watch stream open");
                self.live = Some(Live {
                    requests: tx,
                    responses: resp.into_inner(),
                    endpoint,
                });
                self.in_flight = Some(head);
            }
            Ok(Err(status)) => {
                self.resuming.push_front(head);
                let err = ClientError::from_status(&status);
                warn!(endpoint = %member.url, error = %err, "opening watch stream failed");
                if status.message() == crate::auth::MSG_INVALID_TOKEN
                    && self.relogin_and_reopen().await
                {
                    return;
                }
                if err.is_endpoint_failure() {
                    self.schedule_retry(endpoint);
                } else {
                    self.halt_all(err).await;
                }
            }
            Err(_) => {
                self.resuming.push_front(head);
                warn!(endpoint = %member.url, "opening watch stream timed out");
                self.schedule_retry(endpoint);
            }
        }
    }

    /// Moves past the failed member and waits the backoff before trying again.
    fn schedule_retry(&mut self, failed_endpoint: usize) {
        self.endpoints.advance_from(failed_endpoint);
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Create {
                request,
                events,
                created,
                closed,
            } => {
                let local = self.next_local;
                self.next_local += 1;
                self.closers.push(closed.map(move |_| local).boxed());
                self.subs.insert(
                    local,
                    Substream {
                        next_rev: request.start_revision,
                        progress_rev: 0,
                        paused: false,
                        request,
                        events,
                        created: Some(created),
                        server_id: None,
                        fragments: Vec::new(),
                    },
                );
                self.resuming.push_back(local);
                self.send_next_create().await;
            }
            Command::Progress => {
                let req = WatchRequest {
                    request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                };
                self.send(req).await;
            }
        }
    }

    /// Sends a request on the live stream; a failure shows up on the receive side.
    async fn send(&mut self, req: WatchRequest) {
        if let Some(live) = &self.live {
            if live.requests.send(req).await.is_err() {
                debug!("watch stream send half closed");
            }
        }
    }

    async fn send_cancel(&mut self, watch_id: i64) {
        if watch_id < 0 || !self.cancel_sent.insert(watch_id) {
            return;
        }
        debug!(watch_id, "canceling watch");
        let req = WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
        };
        self.send(req).await;
    }

    /// Sends the next queued create request, unless one is in flight.
    async fn send_next_create(&mut self) {
        if self.live.is_none() || self.in_flight.is_some() {
            return;
        }
        while let Some(local) = self.resuming.pop_front() {
            if let Some(sub) = self.subs.get(&local) {
                let req = Self::create_request(sub);
                self.in_flight = Some(local);
                self.send(req).await;
                return;
            }
        }
    }

    /// A watcher was dropped: forget it and cancel it on the server.
    async fn on_close(&mut self, local: u64) {
        let Some(sub) = self.subs.remove(&local) else {
            return;
        };
        self.resuming.retain(|l| *l != local);
        if let Some(id) = sub.server_id {
            self.by_server.remove(&id);
            self.send_cancel(id).await;
        }
    }

    /// Ends one watcher with an error (its creator's wait, or its batch receiver, gets it),
    /// keeping the header of the server response that ended it, if there was one.
    async fn fail_sub(&mut self, local: u64, err: ClientError, header: Option<ResponseHeader>) {
        let Some(mut sub) = self.subs.remove(&local) else {
            return;
        };
        self.resuming.retain(|l| *l != local);
        if let Some(id) = sub.server_id {
            self.by_server.remove(&id);
        }
        match sub.created.take() {
            Some(created) => {
                let _ = created.send(Err(err));
            }
            None => {
                let end = Err(WatchEnd { error: err, header });
                if let Err(TrySendError::Full(end)) = sub.events.try_send(end) {
                    // The reader is behind: the end waits for it in a task of its own (one
                    // item, gone with the reader), after the batches already buffered.
                    let events = sub.events;
                    tokio::spawn(async move {
                        let _ = events.send(end).await;
                    });
                }
            }
        }
    }

    /// A final error: every watcher ends with it.
    async fn halt_all(&mut self, err: ClientError) {
        warn!(error = %err, "watch stream halted");
        self.live = None;
        self.in_flight = None;
        let locals: Vec<u64> = self.subs.keys().copied().collect();
        for local in locals {
            self.fail_sub(local, err.clone(), None).await;
        }
    }

    /// The stream broke: queue every watcher for resumption, from its next revision.
    async fn on_stream_error(&mut self, err: ClientError) {
        let Some(live) = self.live.take() else { return };
        if !err.is_endpoint_failure() {
            self.halt_all(err).await;
            return;
        }
        warn!(error = %err, watchers = self.subs.len(), "watch stream failed, resuming elsewhere");
        self.requeue_all();
        self.schedule_retry(live.endpoint);
    }

    /// Forgets the stream's server ids and queues every watcher for resumption, from its
    /// next revision.
    fn requeue_all(&mut self) {
        self.in_flight = None;
        self.by_server.clear();
        self.cancel_sent.clear();
        self.resuming.clear();
        for (local, sub) in self.subs.iter_mut() {
            sub.server_id = None;
            sub.fragments.clear();
            if !sub.paused {
                self.resuming.push_back(*local);
            }
        }
    }

    /// A create refused for an expired token: logs in again and reopens the stream with the
    /// new token after the backoff (as clientv3 refreshes its token). False when there is no
    /// login to renew or it failed.
    async fn relogin_and_reopen(&mut self) -> bool {
        let Some(login) = self.endpoints.login() else {
            return false;
        };
        let (_, member) = self.endpoints.current();
        if let Err(e) = login.authenticate(member.channel).await {
            warn!(error = %e, "logging in again for the watch stream failed");
            return false;
        }
        self.live = None;
        self.requeue_all();
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
        true
    }

    async fn on_response(&mut self, resp: WatchResponse) {
        if resp.created {
            self.on_created(resp).await;
            return;
        }
        if resp.watch_id == BROADCAST_WATCH_ID && !resp.canceled {
            self.broadcast_progress(resp.header).await;
            return;
        }
        let Some(&local) = self.by_server.get(&resp.watch_id) else {
            if resp.canceled {
                // The server confirms a cancel: the id is gone for good, so forget it (the
                // set stays as small as the number of cancels in flight).
                self.cancel_sent.remove(&resp.watch_id);
            } else {
                self.send_cancel(resp.watch_id).await;
            }
            return;
        };
        if resp.canceled {
            let err = if resp.compact_revision > 0 {
                ClientError::Compacted {
                    compact_revision: resp.compact_revision,
                }
            } else {
                ClientError::WatchCanceled {
                    reason: resp.cancel_reason,
                }
            };
            debug!(watch_id = resp.watch_id, error = %err, "watch canceled by the server");
            self.fail_sub(local, err, resp.header).await;
            return;
        }
        self.dispatch(local, resp).await;
    }

    /// Matches a `created` response to the head of the queue.
    async fn on_created(&mut self, resp: WatchResponse) {
        let Some(local) = self.in_flight.take() else {
            warn!(
                watch_id = resp.watch_id,
                "created response with no create in flight"
            );
            self.send_cancel(resp.watch_id).await;
            return;
        };
        let failed = resp.canceled || resp.watch_id == BROADCAST_WATCH_ID;
        if failed
            && resp.cancel_reason.contains(crate::auth::MSG_INVALID_TOKEN)
            && self.subs.contains_key(&local)
            && self.relogin_and_reopen().await
        {
            return;
        }
        match self.subs.get_mut(&local) {
            None => {
                // Dropped while its create was in flight.
                if !failed {
                    self.send_cancel(resp.watch_id).await;
                }
            }
            Some(_) if failed => {
                let err = if resp.compact_revision > 0 {
                    ClientError::Compacted {
                        compact_revision: resp.compact_revision,
                    }
                } else {
                    ClientError::WatchCanceled {
                        reason: resp.cancel_reason.clone(),
                    }
                };
                self.fail_sub(local, err, resp.header).await;
            }
            Some(sub) => {
                sub.server_id = Some(resp.watch_id);
                if sub.next_rev == 0 {
                    // A watch "from now" resumes after its creation revision, so a write
                    // made while the stream is down is not missed.
                    sub.next_rev = resp.header.as_ref().map_or(0, |h| h.revision) + 1;
                }
                if let Some(created) = sub.created.take() {
                    let _ = created.send(Ok(resp.watch_id));
                }
                self.by_server.insert(resp.watch_id, local);
                self.backoff = RECONNECT_BACKOFF_MIN;
                if !resp.events.is_empty() {
                    self.dispatch(local, resp).await;
                }
            }
        }
        self.send_next_create().await;
    }

    /// Merges fragments, drops anything already delivered, delivers the rest.
    ///
    /// Dropping by revision relies on etcd's contract that the events of one revision travel
    /// in one response (or in the fragments of one): a revision is never split across two
    /// complete responses, so "below next_rev" always means "delivered before".
    async fn dispatch(&mut self, local: u64, resp: WatchResponse) {
        let Some(sub) = self.subs.get_mut(&local) else {
            return;
        };
        if resp.fragment {
            sub.fragments.extend(resp.events);
            return;
        }
        let mut events = std::mem::take(&mut sub.fragments);
        events.extend(resp.events);
        let progress = events.is_empty();
        let next_rev = sub.next_rev;
        events.retain(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= next_rev));
        if !progress && events.is_empty() {
            debug!(watch_id = resp.watch_id, "dropping events delivered before");
            return;
        }
        if progress {
            note_progress(sub, resp.header.as_ref());
        }
        let last_rev = events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision);
        let batch = WatchBatch {
            header: resp.header,
            watch_id: resp.watch_id,
            events,
        };
        match sub.events.try_send(Ok(batch)) {
            Ok(()) => {
                if let Some(last) = last_rev {
                    sub.next_rev = last + 1;
                }
            }
            // A progress notification the reader has no room for is skipped.
            Err(TrySendError::Full(_)) if progress => {}
            Err(TrySendError::Full(_)) => self.pause(local).await,
            Err(TrySendError::Closed(_)) => self.on_close(local).await,
        }
    }

    /// The watcher's buffer is full: cancel it on the server and resume it from `next_rev`
    /// once its reader has emptied half of the buffer.
    async fn pause(&mut self, local: u64) {
        let Some(sub) = self.subs.get_mut(&local) else {
            return;
        };
        sub.paused = true;
        sub.fragments.clear();
        let server_id = sub.server_id.take();
        let events = sub.events.clone();
        let room = (events.max_capacity() / 2).max(1);
        debug!(
            ?server_id,
            next_rev = sub.next_rev,
            "watcher buffer full, pausing"
        );
        self.unpauses.push(
            async move {
                // Err: the reader is gone; the closer takes care of that.
                let _ = events.reserve_many(room).await;
                local
            }
            .boxed(),
        );
        if let Some(id) = server_id {
            self.by_server.remove(&id);
            self.send_cancel(id).await;
        }
    }

    /// A paused watcher's reader has made room: create the watch again from `next_rev`.
    async fn on_unpause(&mut self, local: u64) {
        let Some(sub) = self.subs.get_mut(&local) else {
            return;
        };
        if !sub.paused {
            return;
        }
        sub.paused = false;
        debug!(next_rev = sub.next_rev, "resuming paused watcher");
        self.resuming.push_back(local);
        self.send_next_create().await;
    }

    async fn broadcast_progress(&mut self, header: Option<ResponseHeader>) {
        let targets: Vec<(u64, i64)> = self
            .subs
            .iter()
            .filter_map(|(local, sub)| sub.server_id.map(|id| (*local, id)))
            .collect();
        for (local, watch_id) in targets {
            let Some(sub) = self.subs.get_mut(&local) else {
                continue;
            };
            note_progress(sub, header.as_ref());
            let batch = WatchBatch {
                header,
                watch_id,
                events: Vec::new(),
            };
            // A progress notification the reader has no room for is skipped.
            if let Err(TrySendError::Closed(_)) = sub.events.try_send(Ok(batch)) {
                self.on_close(local).await;
            }
        }
    }
}

/// A progress notification at the header's revision: every event of the watch up to it has
/// been sent, so a resume may start after it (clientv3 sets nextRev the same way).
fn note_progress(sub: &mut Substream, header: Option<&ResponseHeader>) {
    if let Some(h) = header {
        sub.progress_rev = sub.progress_rev.max(h.revision + 1);
    }
}

async fn next_response(live: &mut Option<Live>) -> Result<Option<WatchResponse>, tonic::Status> {
    match live {
        Some(live) => live.responses.message().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
