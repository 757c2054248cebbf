//! Inbound peer traffic: the `RaftPeer` gRPC service on a member's peer URL.
//!
//! The openraft RPCs are decoded and handed to the local `Raft`; their answers (including
//! openraft's own errors) travel back serde-encoded, so the sender sees a remote error as it
//! was raised. Forward and ReadIndex are answered only by the leader; any other member
//! answers [`NOT_LEADER`] with the leader it knows in [`LEADER_ID_METADATA`], and the caller
//! retries there (nothing was proposed, so a retry cannot apply a write twice).

use openraft::async_runtime::watch::WatchReceiver;
use std::pin::Pin;

use crate::raft::RaftHandle;
use futures::Stream;
use openraft::error::{ForwardReason, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::raft::AppendEntriesRequest;
use openraft::ReadPolicy;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::pb::minietcdpb::raft_peer_server::{RaftPeer, RaftPeerServer};
use crate::pb::minietcdpb::{
    AdminRequest, AdminResponse, InternalRequest, InternalResponse, RaftPayload, ReadIndexRequest,
    ReadIndexResponse, SnapshotChunk,
};
use crate::raft::batcher::{BatchWriteError, WriteBatcher};
use crate::raft::codec;
use crate::raft::network::MAX_PEER_MESSAGE_BYTES;
use crate::raft::snapshot::SnapshotDir;
use crate::raft::snapshot_transfer;
use crate::raft::types::{NodeId, Snapshot, TypeConfig};

/// The status message of a Forward or ReadIndex sent to a member that is not the leader.
pub const NOT_LEADER: &str = "raft: not leader";
/// Metadata key carrying the leader id (hex) a non-leader knows of, if any.
pub const LEADER_ID_METADATA: &str = "minietcd-leader-id";

/// Executes the peer service's Admin requests. Membership and leases carry etcd semantics
/// that this layer does not know, so the node installs the handler; a request the handler
/// can only run on the leader is answered with [`not_leader`] elsewhere.
#[tonic::async_trait]
pub trait AdminHandler: Send + Sync + 'static {
    /// Executes `req` on this member.
    async fn admin(&self, req: AdminRequest) -> Result<AdminResponse, Status>;
}

/// The peer service of one member.
#[derive(Clone)]
pub struct PeerService {
    /// The local Raft every RPC is handed to.
    raft: RaftHandle,
    /// This member, reported as the leader in ReadIndex answers.
    id: NodeId,
    /// Runs Admin requests; without one they answer Unimplemented.
    admin: Option<std::sync::Arc<dyn AdminHandler>>,
    /// Forwarded writes join the leader's group commit.
    writes: WriteBatcher,
    /// Where received snapshots go.
    snapshots: SnapshotInbox,
}

/// Where and how this member receives snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotInbox {
    /// The member's snapshot directory (received files are renamed into place there).
    pub dir: SnapshotDir,
    /// How long to wait for each chunk.
    pub chunk_timeout: std::time::Duration,
}

impl PeerService {
    /// The service for member `id`.
    pub fn new(
        id: NodeId,
        raft: RaftHandle,
        writes: WriteBatcher,
        snapshots: SnapshotInbox,
    ) -> Self {
        PeerService {
            raft,
            id,
            admin: None,
            writes,
            snapshots,
        }
    }

    /// The same service, answering Admin requests with `admin`.
    pub fn with_admin(mut self, admin: std::sync::Arc<dyn AdminHandler>) -> Self {
        self.admin = Some(admin);
        self
    }

    /// The tonic server to mount on the peer listener.
    pub fn into_server(self) -> RaftPeerServer<PeerService> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
    }
}

fn bad_request(e: codec::CodecError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn encode_answer<T: serde::Serialize>(
    what: &'static str,
    v: &T,
) -> Result<Response<RaftPayload>, Status> {
    let data = codec::encode(what, v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload { data }))
}

/// The answer of a non-leader: [`NOT_LEADER`], plus the leader's id when known.
pub fn not_leader(f: &ForwardToLeader<TypeConfig>) -> Status {
    let mut status = Status::failed_precondition(NOT_LEADER);
    if let Some(id) = f.leader_id {
        if let Ok(v) = format!("{id:x}").parse() {
            status.metadata_mut().insert(LEADER_ID_METADATA, v);
        }
    }
    status
}

/// The leader a [`not_leader`] status names, if any.
pub fn leader_of(status: &Status) -> Option<NodeId> {
    if status.code() != tonic::Code::FailedPrecondition || status.message() != NOT_LEADER {
        return None;
    }
    let v = status.metadata().get(LEADER_ID_METADATA)?.to_str().ok()?;
    NodeId::from_str_radix(v, 16).ok()
}

/// Whether `status` is a [`not_leader`] answer.
pub fn is_not_leader(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message() == NOT_LEADER
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    #[instrument(level = "trace", skip_all)]
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req =
            codec::decode("append entries", &request.into_inner().data).map_err(bad_request)?;
        let res = self.raft.append_entries(req).await;
        encode_answer("append entries answer", &res)
    }

    #[instrument(level = "debug", skip_all)]
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req = codec::decode("vote", &request.into_inner().data).map_err(bad_request)?;
        let res = self.raft.vote(req).await;
        encode_answer("vote answer", &res)
    }

    /// Writes the chunks to a file as they arrive (see [`snapshot_transfer::receive`]),
    /// then has openraft install it.
    #[instrument(level = "info", skip_all)]
    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let started = std::time::Instant::now();
        let got = snapshot_transfer::receive(
            request.into_inner(),
            &self.snapshots.dir,
            self.snapshots.chunk_timeout,
        )
        .await?;
        tracing::info!(
            last_log_id = ?got.meta.last_log_id,
            bytes = got.data.len(),
            chunks = got.chunks,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot received"
        );
        let snapshot = Snapshot {
            meta: got.meta,
            snapshot: got.data,
        };
        let res = self.raft.install_full_snapshot(got.vote, snapshot).await;
        encode_answer("snapshot answer", &res)
    }

    type AppendStreamStream =
        Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send + 'static>>;

    /// Feeds each request to openraft's pipelined append as it arrives and sends each answer
    /// back as soon as it is known, in order.
    #[instrument(level = "debug", skip_all)]
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let inbound = request.into_inner();
        let (bad_tx, bad_rx) = tokio::sync::oneshot::channel::<Status>();
        let requests = futures::stream::unfold(
            (inbound, Some(bad_tx)),
            |(mut inbound, mut bad_tx)| async move {
                let msg = inbound.next().await?;
                let decoded = msg.and_then(|m| {
                    codec::decode::<AppendEntriesRequest<TypeConfig>>("append entries", &m.data)
                        .map_err(bad_request)
                });
                match decoded {
                    Ok(req) => Some((req, (inbound, bad_tx))),
                    Err(status) => {
                        if let Some(tx) = bad_tx.take() {
                            let _ = tx.send(status);
                        }
                        None
                    }
                }
            },
        );
        let answers = self.raft.stream_append(Box::pin(requests)).map(|res| {
            codec::encode("append stream answer", &res)
                .map(|data| RaftPayload { data })
                .map_err(|e| Status::internal(e.to_string()))
        });
        // A request that does not decode ends the stream with its error after the answers
        // of the requests before it.
        let failure = futures::stream::once(bad_rx).filter_map(|r| r.ok().map(Err));
        Ok(Response::new(Box::pin(answers.chain(failure))))
    }

    #[instrument(level = "debug", skip_all)]
    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req = codec::decode("pre-vote", &request.into_inner().data).map_err(bad_request)?;
        let res = self.raft.pre_vote(req).await;
        encode_answer("pre-vote answer", &res)
    }

    #[instrument(level = "debug", skip_all)]
    async fn forward(
        &self,
        request: Request<InternalRequest>,
    ) -> Result<Response<InternalResponse>, Status> {
        if self.raft.metrics().borrow_watched().running_state.is_err() {
            // Stopped before anything was proposed: the caller can safely go elsewhere.
            return Err(not_leader(&ForwardToLeader::empty()));
        }
        match self.writes.write(request.into_inner()).await {
            Ok(resp) => Ok(Response::new(resp)),
            Err(BatchWriteError::NotLeader(f)) if f.reason == ForwardReason::LeaseExpired => {
                Err(Status::unavailable(crate::raft::proposer::LEASE_NOT_READY))
            }
            Err(BatchWriteError::NotLeader(f)) => Err(not_leader(&f)),
            Err(BatchWriteError::Membership(e)) => Err(Status::internal(e)),
            Err(BatchWriteError::Fatal(f)) => Err(Status::unavailable(f)),
            // Outcome unknown: the caller reports "leader changed".
            Err(BatchWriteError::Discarded(e)) => Err(Status::aborted(e)),
        }
    }

    /// Confirms leadership with a quorum and returns the index a linearizable read must see
    /// applied; the leader does not wait for its own apply, the asking member does.
    #[instrument(level = "debug", skip_all)]
    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read_log_id, _applied)) => Ok(Response::new(ReadIndexResponse {
                read_index: read_log_id.index(),
                leader_id: self.id,
            })),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(not_leader(&f))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Err(Status::unavailable(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(Status::unavailable(f.to_string())),
        }
    }

    #[instrument(level = "debug", skip_all)]
    async fn admin(
        &self,
        request: Request<AdminRequest>,
    ) -> Result<Response<AdminResponse>, Status> {
        match &self.admin {
            Some(handler) => handler.admin(request.into_inner()).await.map(Response::new),
            None => Err(Status::unimplemented("this member takes no admin requests")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_status_carries_the_leader() {
        let s = not_leader(&ForwardToLeader {
            leader_id: Some(0xabc),
            leader_node: None,
            reason: openraft::error::ForwardReason::NotLeader,
        });
        assert!(is_not_leader(&s));
        assert_eq!(leader_of(&s), Some(0xabc));
        let s = not_leader(&ForwardToLeader::empty());
        assert!(is_not_leader(&s));
        assert_eq!(leader_of(&s), None);
        assert!(!is_not_leader(&Status::unavailable(NOT_LEADER)));
    }
}
