//! Outbound peer traffic: openraft's `RaftNetwork` over the `RaftPeer` gRPC service.
//!
//! One tonic `Channel` per peer, created lazily and shared by every user (openraft's
//! replication and vote tasks, the snapshot sender, the proposer forwarding writes): a
//! `Channel` multiplexes calls over one HTTP/2 connection and reconnects by itself when the
//! connection drops. A dead peer costs at most [`CONNECT_TIMEOUT`] per attempt, every call
//! is bounded by openraft's `RPCOption` deadline, and openraft spaces retries to an
//! unreachable peer with [`PeerNetwork::backoff`].

// The error types are openraft's, fixed by the traits implemented here.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::RPCTypes;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::pb::minietcdpb::raft_peer_client::RaftPeerClient;
use crate::pb::minietcdpb::RaftPayload;
use crate::raft::codec;
use crate::raft::snapshot_transfer;
use crate::raft::types::{MemberNode, NodeId, Snapshot, SnapshotData, TypeConfig, Vote};

/// How long establishing a TCP connection to a peer may take before the call fails; this is
/// what bounds the cost of a dead peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Snapshot data per `SnapshotChunk` message (etcd streams snapshots too; 1 MiB keeps every
/// message far below gRPC's 4 MiB default limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// The largest peer message accepted or sent (a single entry may be as large as
/// `--max-request-bytes` allows, and snapshot chunks are far smaller).
pub const MAX_PEER_MESSAGE_BYTES: usize = 256 << 20;
/// Most entry bytes one AppendEntries carries (etcd's `MaxSizePerMsg`, 1 MiB): a lagging
/// follower gets the log in messages that each finish well within a heartbeat, never in one
/// huge call that times out again and again. A single larger entry still goes alone.
pub const APPEND_ENTRIES_MAX_BYTES: usize = 1 << 20;
/// After a timed-out AppendEntries the bound for that peer halves, down to this; each
/// answered call doubles it back up to [`APPEND_ENTRIES_MAX_BYTES`].
pub const APPEND_ENTRIES_MIN_BYTES: usize = 64 << 10;
/// First retry delay after a peer was unreachable; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Longest delay between retries to an unreachable peer.
pub const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// HTTP/2 keep-alive ping interval: detects a silently dead connection.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A peer could not be addressed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The member has no peer URL in the membership.
    #[error("member {0:x} has no peer URL")]
    NoPeerUrl(NodeId),
    /// The peer URL does not parse as an endpoint.
    #[error("member {id:x} peer URL {url:?}: {reason}")]
    BadUrl {
        /// The member.
        id: NodeId,
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

/// The gRPC client of one peer.
pub type PeerClient = RaftPeerClient<Channel>;

/// One channel per peer, shared by the network factory and the proposer.
#[derive(Default)]
pub struct PeerChannels {
    /// Member id -> (the URL the channel dials, the channel).
    channels: Mutex<HashMap<NodeId, (String, Channel)>>,
    /// Member id -> (since when it has answered every Raft RPC, when it last answered): etcd's
    /// transport "active since", which `--strict-reconfig-check` reads to protect quorum. A
    /// failed RPC, or a silence longer than [`ACTIVE_GAP`], ends the streak.
    answered: Mutex<HashMap<NodeId, (std::time::Instant, std::time::Instant)>>,
    /// How `https://` peer URLs are dialled (peer TLS); `None`: they cannot be.
    tls: Option<minietcd_client::tls::TlsConnector>,
    /// How many snapshots this member is sending, each counted until the receiver answers
    /// (after its install): while any is, no new snapshot is built (see
    /// [`PeerChannels::snapshots_not_sending`]).
    sending_snapshots: tokio::sync::watch::Sender<usize>,
}

/// One snapshot being sent, counted in [`PeerChannels`] while it lives.
struct SendingSnapshot(Arc<PeerChannels>);

impl Drop for SendingSnapshot {
    fn drop(&mut self) {
        self.0.sending_snapshots.send_modify(|n| *n -= 1);
    }
}

/// A peer silent this long is no longer active (heartbeats come every heartbeat interval).
const ACTIVE_GAP: Duration = Duration::from_secs(1);

impl PeerChannels {
    /// Channels that dial `https://` peer URLs with `tls`.
    pub fn with_tls(tls: Option<minietcd_client::tls::TlsConnector>) -> PeerChannels {
        PeerChannels {
            tls,
            ..PeerChannels::default()
        }
    }

    /// Counts a snapshot send until the returned guard is dropped (answered, failed or
    /// cancelled alike).
    fn sending_snapshot(self: &Arc<Self>) -> SendingSnapshot {
        self.sending_snapshots.send_modify(|n| *n += 1);
        SendingSnapshot(self.clone())
    }

    /// Resolves once no snapshot is being sent to a peer.
    ///
    /// A member sending a snapshot builds no new one. etcd keeps building its snapshots but
    /// skips compacting its log while one is in flight; openraft purges the log as soon as a
    /// snapshot is built, so here the build waits. The entries right after the snapshot on
    /// its way are the ones the receiver asks for when its install is done: a send and
    /// install that outlast the next `--snapshot-count` writes would otherwise find them
    /// gone, and the receiver would be sent another snapshot, then another, each a whole
    /// store.
    pub async fn snapshots_not_sending(&self) {
        let mut sending = self.sending_snapshots.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        let _ = sending.wait_for(|n| *n == 0).await;
    }

    /// Whether a snapshot is being sent to a peer.
    pub fn is_sending_snapshot(&self) -> bool {
        *self.sending_snapshots.borrow() > 0
    }

    /// Records that member `id` answered a Raft RPC now.
    pub fn mark_answered(&self, id: NodeId) {
        let now = std::time::Instant::now();
        let mut a = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        let streak = match a.get(&id) {
            Some((since, last)) if now.duration_since(*last) <= ACTIVE_GAP => *since,
            _ => now,
        };
        a.insert(id, (streak, now));
    }

    /// Records that a Raft RPC to member `id` failed: it is not active.
    pub fn mark_failed(&self, id: NodeId) {
        let mut a = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        a.remove(&id);
    }

    /// Since when member `id` has been answering (etcd's `ActiveSince`); `None` when it is
    /// not active now.
    pub fn active_since(&self, id: NodeId) -> Option<std::time::Instant> {
        let a = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        a.get(&id)
            .filter(|(_, last)| last.elapsed() <= ACTIVE_GAP)
            .map(|(since, _)| *since)
    }

    /// A client for member `id` at `node`'s first peer URL; reuses the member's channel while
    /// its URL is unchanged.
    pub fn client(&self, id: NodeId, node: &MemberNode) -> Result<PeerClient, PeerError> {
        let url = node.peer_urls.first().ok_or(PeerError::NoPeerUrl(id))?;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&id) {
            Some((known, ch)) if known == url => ch.clone(),
            _ => {
                let bad_url = |e: tonic::transport::Error| PeerError::BadUrl {
                    id,
                    url: url.clone(),
                    reason: e.to_string(),
                };
                let tls = self.tls.as_ref().filter(|_| url.starts_with("https://"));
                let endpoint = match tls {
                    Some(_) => minietcd_client::tls::tls_endpoint(url),
                    None => Endpoint::from_shared(url.clone()),
                }
                .map_err(bad_url)?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .keep_alive_while_idle(true);
                let ch = match tls {
                    Some(tls) => tls.channel_lazy(&endpoint),
                    None => endpoint.connect_lazy(),
                };
                channels.insert(id, (url.clone(), ch.clone()));
                ch
            }
        };
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }
}

/// Creates [`PeerNetwork`]s for openraft.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    /// This member (named in timeout errors).
    id: NodeId,
    /// The shared channels.
    channels: Arc<PeerChannels>,
    /// Snapshot bytes per chunk ([`SNAPSHOT_CHUNK_BYTES`] unless a test forces small chunks).
    snapshot_chunk_bytes: usize,
}

impl PeerNetworkFactory {
    /// A factory for member `id`.
    pub fn new(id: NodeId, channels: Arc<PeerChannels>, snapshot_chunk_bytes: usize) -> Self {
        PeerNetworkFactory {
            id,
            channels,
            snapshot_chunk_bytes: snapshot_chunk_bytes.max(1),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerNetwork {
        let client = self.channels.client(target, node);
        if let Err(e) = &client {
            tracing::warn!(target, error = %e, "peer unreachable by configuration");
        }
        PeerNetwork {
            id: self.id,
            target,
            client,
            channels: self.channels.clone(),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            append_limit_bytes: APPEND_ENTRIES_MAX_BYTES,
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerNetwork {
    /// This member.
    id: NodeId,
    /// The peer.
    target: NodeId,
    /// The peer's client, or why there is none.
    client: Result<PeerClient, PeerError>,
    /// The shared channels, told when the peer answers.
    channels: Arc<PeerChannels>,
    /// Snapshot bytes per chunk.
    snapshot_chunk_bytes: usize,
    /// The current bound on entry bytes per AppendEntries to this peer (see
    /// [`APPEND_ENTRIES_MIN_BYTES`]).
    append_limit_bytes: usize,
}

type RpcResult<T> = Result<T, RPCError<TypeConfig>>;

impl PeerNetwork {
    fn client(&self) -> RpcResult<PeerClient> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    fn timeout(&self, action: RPCTypes, ttl: Duration) -> Timeout<TypeConfig> {
        rpc_timeout(self.id, self.target, action, ttl)
    }

    /// Sends one encoded request with `call`, bounded by `ttl`, and decodes the answer, a
    /// serde-encoded `Result<Resp, RaftError>`.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        action: RPCTypes,
        req: &Req,
        ttl: Duration,
        call: F,
    ) -> RpcResult<Resp>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(PeerClient, tonic::Request<RaftPayload>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let data =
            codec::encode("raft rpc", req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        let client = self.client()?;
        let answer = match tokio::time::timeout(ttl, call(client, request)).await {
            Err(_) => {
                self.channels.mark_failed(self.target);
                return Err(RPCError::Timeout(self.timeout(action, ttl)));
            }
            Ok(Err(status)) => {
                self.channels.mark_failed(self.target);
                return Err(status_to_rpc_error(status, || self.timeout(action, ttl)));
            }
            Ok(Ok(resp)) => resp.into_inner(),
        };
        self.channels.mark_answered(self.target);
        let result: Result<Resp, RaftError<TypeConfig>> =
            codec::decode("raft rpc answer", &answer.data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The only error a peer raises here is its own Raft having stopped: as good as gone.
        result.map_err(|e| {
            RPCError::Unreachable(Unreachable::new(&RemoteError::<TypeConfig, _>::new(
                self.target,
                e,
            )))
        })
    }
}

/// openraft's timeout error for a call from `id` to `target`.
fn rpc_timeout(id: NodeId, target: NodeId, action: RPCTypes, ttl: Duration) -> Timeout<TypeConfig> {
    Timeout {
        action,
        id,
        target,
        timeout: ttl,
    }
}

/// One answer of a pipelined append stream.
type StreamAnswer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The least time an append stream waits for an answer, or for the stream to open. Losing a
/// follower is noticed by the heartbeats (which have their own deadline), so replication can
/// be patient with a follower that is busy flushing.
fn stream_answer_timeout(hard_ttl: Duration) -> Duration {
    (hard_ttl * 10).max(Duration::from_secs(1))
}

/// Extra time for an answer to a request of `bytes` (a lagging follower catching up gets
/// large requests): one second per 8 MiB.
fn answer_time_for(bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    Duration::from_millis(bytes.saturating_mul(1000) / (8 << 20))
}

/// When the commands of an AppendEntries (which dominate its size) exceed `limit_bytes`
/// and it carries more than one entry: how many entries to try instead.
fn fewer_entries_hint(rpc: &AppendEntriesRequest<TypeConfig>, limit_bytes: usize) -> Option<u64> {
    let mut bytes = 0usize;
    for (i, e) in rpc.entries.iter().enumerate() {
        bytes += match &e.payload {
            openraft::EntryPayload::Normal(cmd) => cmd.encoded_len(),
            _ => 0,
        };
        if bytes > limit_bytes && i > 0 {
            // The first `i` entries fit; a single larger entry still goes alone.
            return Some(i as u64);
        }
    }
    None
}

/// Connection failures are `Unreachable` (openraft backs off before retrying), an expired
/// deadline is a `Timeout`, anything else a plain network error.
fn status_to_rpc_error<E: std::error::Error>(
    status: tonic::Status,
    timeout: impl FnOnce() -> Timeout<TypeConfig>,
) -> RPCError<TypeConfig, E> {
    match status.code() {
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        Code::DeadlineExceeded | Code::Cancelled => RPCError::Timeout(timeout()),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        // Too many bytes for one message: send the first entries only and report the rest
        // as not yet replicated (a partial success), so that openraft sends them next.
        let partial = fewer_entries_hint(&rpc, self.append_limit_bytes).and_then(|hint| {
            rpc.entries
                .truncate(usize::try_from(hint).unwrap_or(usize::MAX));
            rpc.entries.last().map(|e| e.log_id)
        });
        let several = rpc.entries.len() > 1;
        let answer = self
            .unary(
                RPCTypes::AppendEntries,
                &rpc,
                option.hard_ttl(),
                |mut c, r| async move { c.append_entries(r).await },
            )
            .await;
        self.append_limit_bytes = match &answer {
            Err(RPCError::Timeout(_)) if several => {
                (self.append_limit_bytes / 2).max(APPEND_ENTRIES_MIN_BYTES)
            }
            Ok(_) => self
                .append_limit_bytes
                .saturating_mul(2)
                .min(APPEND_ENTRIES_MAX_BYTES),
            Err(_) => self.append_limit_bytes,
        };
        match (answer, partial) {
            (Ok(AppendEntriesResponse::Success), Some(last)) => {
                Ok(AppendEntriesResponse::PartialSuccess(Some(last)))
            }
            (answer, _) => answer,
        }
    }

    /// Pipelined replication over one gRPC bidirectional stream: openraft's requests go out
    /// as it produces them, without waiting for the answers of the ones before, and the
    /// follower answers each in order as soon as it is durable there.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamAnswer>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            // Take the first request before dialing: openraft delays it while it backs off
            // from an unreachable peer, and an empty input needs no stream at all.
            let mut input = input;
            let Some(first) = input.next().await else {
                let none: BoxStream<'s, StreamAnswer> = Box::pin(futures::stream::empty());
                return Ok(none);
            };
            let mut client = self.client()?;
            // Sizes of the requests sent and not yet answered, oldest first: how long an
            // answer may take grows with the size of its request.
            let outstanding: Arc<Mutex<VecDeque<usize>>> = Arc::default();
            let sent = outstanding.clone();
            let input = futures::stream::once(std::future::ready(first)).chain(input);
            let outbound = input.filter_map(move |req| {
                let payload = match codec::encode("append entries", &req) {
                    Ok(data) => {
                        lock(&sent).push_back(data.len());
                        Some(RaftPayload { data })
                    }
                    Err(e) => {
                        // Not sent: its answer never comes, and openraft resends it.
                        tracing::error!(error = %e, "cannot encode an append request");
                        None
                    }
                };
                std::future::ready(payload)
            });
            let base = stream_answer_timeout(option.hard_ttl());
            let (id, target) = (self.id, self.target);
            let channels = self.channels.clone();
            let timeout = move |ttl| rpc_timeout(id, target, RPCTypes::AppendEntries, ttl);
            let opened = tokio::time::timeout(base, client.append_stream(outbound)).await;
            let inbound = match opened {
                Err(_) => {
                    channels.mark_failed(target);
                    return Err(RPCError::Timeout(timeout(base)));
                }
                Ok(Err(status)) => {
                    channels.mark_failed(target);
                    return Err(status_to_rpc_error(status, || timeout(base)));
                }
                Ok(Ok(resp)) => resp.into_inner(),
            };
            let answers = futures::stream::unfold(Some(inbound), move |state| {
                let outstanding = outstanding.clone();
                let channels = channels.clone();
                async move {
                    let mut inbound = state?;
                    let head = lock(&outstanding).front().copied();
                    let next = match head {
                        Some(bytes) => {
                            let ttl = base + answer_time_for(bytes);
                            match tokio::time::timeout(ttl, inbound.message()).await {
                                Ok(r) => r,
                                Err(_) => {
                                    channels.mark_failed(target);
                                    return Some((Err(RPCError::Timeout(timeout(ttl))), None));
                                }
                            }
                        }
                        // Nothing is waiting for an answer: the follower speaks next only
                        // after another request, or closes the stream after the last.
                        None => inbound.message().await,
                    };
                    let payload = match next {
                        Ok(Some(p)) => p,
                        Ok(None) => return None,
                        Err(status) => {
                            channels.mark_failed(target);
                            let e = status_to_rpc_error(status, || timeout(base));
                            return Some((Err(e), None));
                        }
                    };
                    lock(&outstanding).pop_front();
                    let decoded: Result<
                        Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>,
                        _,
                    > = codec::decode("append stream answer", &payload.data);
                    match decoded {
                        Ok(Ok(result)) => {
                            channels.mark_answered(target);
                            let more = result.is_ok();
                            Some((Ok(result), more.then_some(inbound)))
                        }
                        Ok(Err(fatal)) => Some((
                            Err(RPCError::Unreachable(Unreachable::new(&RemoteError::<
                                TypeConfig,
                                _,
                            >::new(
                                target, fatal
                            )))),
                            None,
                        )),
                        Err(e) => Some((Err(RPCError::Network(NetworkError::new(&e))), None)),
                    }
                }
            });
            let answers: BoxStream<'s, StreamAnswer> = Box::pin(answers);
            Ok(answers)
        })
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.unary(
            RPCTypes::Vote,
            &rpc,
            option.hard_ttl(),
            |mut c, r| async move { c.pre_vote(r).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.unary(
            RPCTypes::Vote,
            &rpc,
            option.hard_ttl(),
            |mut c, r| async move { c.vote(r).await },
        )
        .await
    }

    /// Streams the snapshot (a file's, or the store's rows as they are read, see
    /// `state_machine`) in one client-streaming call, a chunk at a time
    /// (see [`snapshot_transfer`]); `cancel` (the replication stream closing) and the
    /// per-chunk deadline (openraft's `install_snapshot_timeout`) both abort it.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let net_err = |e: codec::CodecError| StreamingError::Network(NetworkError::new(&e));
        tokio::pin!(cancel);
        let Snapshot { meta, mut snapshot } = snapshot;
        // The store's rows read from a view as they are sent (see `state_machine`), or a
        // snapshot file's.
        let stream = snapshot.take_stream();
        if stream.is_none() && snapshot.is_marker() {
            // Only in the moment between openraft's start and `ServeSnapshots::start`: the
            // next attempt gets the rows.
            return Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other("the snapshot's rows are not served yet"),
            )));
        }
        let snapshot = Snapshot { meta, snapshot };
        let header = (
            codec::encode("vote", &vote).map_err(net_err)?,
            codec::encode("snapshot meta", &snapshot.meta).map_err(net_err)?,
        );
        let progress = Arc::new(snapshot_transfer::Progress::default());
        let chunks = match stream {
            Some(blocks) => futures::future::Either::Left(snapshot_transfer::streamed_chunks(
                blocks,
                header,
                self.snapshot_chunk_bytes,
                progress.clone(),
            )),
            None => {
                let reader = snapshot
                    .snapshot
                    .async_reader()
                    .await
                    .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
                futures::future::Either::Right(snapshot_transfer::chunks(
                    reader,
                    snapshot.snapshot.len(),
                    header,
                    self.snapshot_chunk_bytes,
                    progress.clone(),
                ))
            }
        };
        let mut client = self
            .client
            .clone()
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let chunk_ttl = option.hard_ttl();
        let _sending = self.channels.sending_snapshot();
        let started = std::time::Instant::now();
        tracing::info!(target = self.target, bytes = ?progress.total(), streamed = progress.total().is_none(), last_log_id = ?snapshot.meta.last_log_id, "sending snapshot");
        let call = client.install_snapshot(tonic::Request::new(chunks));
        let answer = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            r = snapshot_transfer::with_chunk_deadlines(call, &progress, chunk_ttl) => r,
        };
        let answer = match answer {
            Err(why) => {
                tracing::warn!(
                    target = self.target,
                    ?why,
                    sent = progress.bytes(),
                    bytes = ?progress.total(),
                    "snapshot send timed out"
                );
                return Err(StreamingError::Timeout(
                    self.timeout(RPCTypes::InstallSnapshot, chunk_ttl),
                ));
            }
            Ok(Err(status)) => {
                let e: RPCError<TypeConfig> = status_to_rpc_error(status, || {
                    self.timeout(RPCTypes::InstallSnapshot, chunk_ttl)
                });
                return Err(match e {
                    RPCError::Timeout(t) => StreamingError::Timeout(t),
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Network(n) => StreamingError::Network(n),
                    RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
                });
            }
            Ok(Ok(resp)) => resp.into_inner(),
        };
        tracing::info!(
            target = self.target,
            bytes = progress.bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot sent"
        );
        drop(snapshot);
        let result: Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>> =
            codec::decode("snapshot answer", &answer.data).map_err(net_err)?;
        result.map_err(|e| {
            StreamingError::Network(NetworkError::new(&RemoteError::<TypeConfig, _>::new(
                self.target,
                e,
            )))
        })
    }

    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new((0u32..).map(|attempt| {
            BACKOFF_BASE
                .saturating_mul(1u32 << attempt.min(16))
                .min(BACKOFF_MAX)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let net = PeerNetwork {
            id: 1,
            target: 2,
            client: Err(PeerError::NoPeerUrl(2)),
            channels: Arc::default(),
            snapshot_chunk_bytes: 1,
            append_limit_bytes: APPEND_ENTRIES_MAX_BYTES,
        };
        let delays: Vec<Duration> = net.backoff().unwrap().take(8).collect();
        assert_eq!(delays[0], BACKOFF_BASE);
        assert_eq!(delays[1], BACKOFF_BASE * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX);
    }

    fn network_to(addr: std::net::SocketAddr) -> PeerNetwork {
        let node = MemberNode {
            peer_urls: vec![format!("http://{addr}")],
            ..Default::default()
        };
        PeerNetwork {
            id: 1,
            target: 2,
            client: PeerChannels::default().client(2, &node),
            channels: Arc::default(),
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
            append_limit_bytes: APPEND_ENTRIES_MAX_BYTES,
        }
    }

    /// An address nothing listens on any more.
    async fn dead_addr() -> std::net::SocketAddr {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn vote_req() -> VoteRequest<TypeConfig> {
        VoteRequest::new(Vote::new(1, 1), None)
    }

    #[tokio::test]
    async fn rpc_to_a_dead_peer_fails_fast_as_unreachable() {
        let mut net = network_to(dead_addr().await);
        let t0 = std::time::Instant::now();
        let err = net
            .vote(vote_req(), RPCOption::new(Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn stream_append_takes_the_first_request_before_dialing() {
        let mut net = network_to(dead_addr().await);
        // No request: nothing to send, no connection attempted, no error.
        let empty = futures::stream::empty::<AppendEntriesRequest<TypeConfig>>();
        let answers: Vec<_> = net
            .stream_append(empty, RPCOption::new(Duration::from_secs(1)))
            .await
            .unwrap()
            .collect()
            .await;
        assert!(answers.is_empty());
        // One request to a dead peer: unreachable, which openraft backs off from (it delays
        // the first request of the next attempt, which this transport waits for).
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let err = match net
            .stream_append(
                futures::stream::iter([req]),
                RPCOption::new(Duration::from_secs(1)),
            )
            .await
        {
            Err(e) => e,
            Ok(s) => s.collect::<Vec<_>>().await.pop().unwrap().unwrap_err(),
        };
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn rpc_to_a_silent_peer_times_out_within_the_ttl() {
        // Accepts TCP connections (the kernel does) but never speaks HTTP/2.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut net = network_to(silent.local_addr().unwrap());
        let ttl = Duration::from_millis(300);
        let t0 = std::time::Instant::now();
        let err = net.vote(vote_req(), RPCOption::new(ttl)).await.unwrap_err();
        assert!(
            matches!(err, RPCError::Timeout(_) | RPCError::Unreachable(_)),
            "{err:?}"
        );
        assert!(
            t0.elapsed() < ttl + CONNECT_TIMEOUT + Duration::from_millis(500),
            "took {:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn an_oversized_append_asks_for_fewer_entries() {
        use crate::pb::etcdserverpb::PutRequest;
        use crate::pb::minietcdpb::internal_request::Request;
        use crate::pb::minietcdpb::InternalRequest;
        use crate::raft::types::Entry;
        use openraft::EntryPayload;
        let entry = |i| Entry {
            log_id: openraft::testing::log_id::<TypeConfig>(1, 1, i),
            payload: EntryPayload::Normal(crate::raft::types::Command(vec![InternalRequest {
                caller: None,
                request: Some(Request::Put(PutRequest {
                    key: b"k".to_vec(),
                    value: vec![0; 1000],
                    ..Default::default()
                })),
            }])),
        };
        let rpc = |n: u64| AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: (1..=n).map(entry).collect(),
            leader_commit: None,
        };
        // About 1 KB each: the first four fit in 5000 bytes.
        assert_eq!(fewer_entries_hint(&rpc(10), 5000), Some(4));
        assert_eq!(fewer_entries_hint(&rpc(4), 5000), None);
        assert_eq!(
            fewer_entries_hint(&rpc(300), APPEND_ENTRIES_MAX_BYTES),
            None
        );
        assert!(fewer_entries_hint(&rpc(2000), APPEND_ENTRIES_MAX_BYTES).is_some_and(|n| n < 1100));
        assert_eq!(
            fewer_entries_hint(&rpc(1), 10),
            None,
            "one entry is sent whatever its size"
        );
    }

    #[test]
    fn channels_are_reused_per_peer() {
        let channels = PeerChannels::default();
        let node = MemberNode {
            peer_urls: vec!["http://127.0.0.1:1".into()],
            ..Default::default()
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _guard = rt.enter();
        channels.client(1, &node).unwrap();
        channels.client(1, &node).unwrap();
        assert_eq!(channels.channels.lock().unwrap().len(), 1);
        assert!(matches!(
            channels.client(2, &MemberNode::default()),
            Err(PeerError::NoPeerUrl(2))
        ));
        let bad = MemberNode {
            peer_urls: vec!["not a url".into()],
            ..Default::default()
        };
        assert!(matches!(
            channels.client(3, &bad),
            Err(PeerError::BadUrl { .. })
        ));
    }
}
