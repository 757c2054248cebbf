//! The proposer: how the etcd servers get a write through Raft, or a linearizable read
//! confirmed, from any member.
//!
//! The leader proposes locally (`client_write`, `ensure_linearizable`); a follower sends the
//! request to the leader over the peer channel (Forward, ReadIndex). A request is re-routed
//! only when it certainly did not take effect: the member asked was not the leader, the
//! leader could not be connected to, or openraft dropped the proposal before it committed
//! (`ForwardToLeader`). A write whose fate is unknown (the leader vanished mid-call, or the
//! deadline passed after leadership moved) is answered with `LeaderChanged`, as etcd does;
//! it is never retried here, since that could apply it twice.

use openraft::async_runtime::watch::WatchReceiver;
use std::time::Duration;

use crate::raft::RaftHandle;
use openraft::error::{ForwardReason, LinearizableReadError, RaftError};
use openraft::metrics::WaitError;
use std::sync::Arc;
use tokio::time::{timeout_at, Instant};
use tonic::Code;
use tracing::instrument;

use crate::pb::minietcdpb::{InternalRequest, InternalResponse, ReadIndexRequest};
use crate::raft::batcher::{BatchWriteError, WriteBatcher};
use crate::raft::network::{PeerChannels, PeerClient};
use crate::raft::read_batcher::ReadIndexBatcher;
use crate::raft::service::is_not_leader;
use crate::raft::types::{MemberNode, NodeId};

/// How many times one request may be routed to a (new) leader before giving up.
pub const MAX_ROUTING_ATTEMPTS: usize = 5;

/// Why a proposal or read index failed; the server maps each to etcd's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// No leader emerged within the leader wait (etcd: "etcdserver: no leader").
    #[error("no leader")]
    NoLeader,
    /// The request did not finish within the request timeout, under one leader
    /// (etcd: "etcdserver: request timed out").
    #[error("request timed out")]
    Timeout,
    /// Leadership moved while the request was in flight; its outcome is unknown
    /// (etcd: "etcdserver: leader changed").
    #[error("leader changed")]
    LeaderChanged,
    /// Raft stopped or storage failed.
    #[error("fatal raft error: {0}")]
    Fatal(String),
}

/// How long requests may wait.
#[derive(Debug, Clone, Copy)]
pub struct ProposerTimeouts {
    /// The whole budget of one request (etcd: 5 s + 2 election timeouts).
    pub request: Duration,
    /// How long a request waits for a leader to appear (a few election timeouts).
    pub leader_wait: Duration,
}

/// The leader as this member sees it.
#[derive(Debug, Clone)]
struct Leader {
    id: NodeId,
    term: u64,
    node: Option<MemberNode>,
}

/// What one routing attempt achieved.
enum Attempt<T> {
    /// Finished, well or not.
    Done(Result<T, ProposeError>),
    /// Certainly had no effect: try again with the leader known after this one.
    Reroute,
    /// Certainly had no effect, and the same leader will take it shortly (a new leader whose
    /// quorum lease is not yet established): try it again after [`RETRY_PAUSE`].
    Retry,
}

/// How long to wait before offering a write again to a leader that is not ready for it.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// The status message of a forwarded write refused because the leader's lease is not yet
/// established (nothing was proposed).
pub const LEASE_NOT_READY: &str = "raft: leader lease not established yet";

/// First and largest pause between start-up read index attempts ([`Proposer::catch_up`]).
const CATCH_UP_BACKOFF_MIN: Duration = Duration::from_millis(50);
const CATCH_UP_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Gets writes committed and reads confirmed through the current leader. Cheap to clone
/// (every field is a shared handle).
#[derive(Clone)]
pub struct Proposer {
    /// This member.
    id: NodeId,
    /// The local Raft.
    raft: RaftHandle,
    /// Channels to the peers, shared with the Raft network.
    channels: Arc<PeerChannels>,
    /// Request and leader-wait budgets.
    timeouts: ProposerTimeouts,
    /// Groups local writes (and forwarded ones) into shared entries while this member leads.
    writes: WriteBatcher,
    /// Shares one leadership confirmation among the local reads queued while it runs.
    reads: ReadIndexBatcher,
    /// Whether this member has applied everything the cluster committed before it started
    /// (see [`Self::catch_up`]); serializable reads wait for it.
    caught_up: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proposer {
    /// A proposer for member `id`.
    pub fn new(
        id: NodeId,
        raft: RaftHandle,
        channels: Arc<PeerChannels>,
        timeouts: ProposerTimeouts,
        writes: WriteBatcher,
    ) -> Proposer {
        let reads = ReadIndexBatcher::start(raft.clone());
        Proposer {
            id,
            raft,
            channels,
            timeouts,
            writes,
            reads,
            caught_up: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Brings a starting member's store up to what the cluster had committed: a read index
    /// round through the leader, retried until it succeeds or `stop` turns true. Until then a
    /// restarted member's store may be behind what it served before it stopped (applied
    /// writes reach sled's disk after their answer; the WAL replays them), so serializable
    /// reads wait for this ([`Self::wait_caught_up`]), as etcd serves nothing before its
    /// publish entry is applied.
    pub async fn catch_up(&self, stop: tokio::sync::watch::Receiver<bool>) {
        let done = crate::raft::retry::until_stopped(
            stop,
            CATCH_UP_BACKOFF_MIN,
            CATCH_UP_BACKOFF_MAX,
            || self.read_index(),
            |e| tracing::debug!(error = %e, "start-up read index failed; retrying"),
        )
        .await;
        if done.is_some() {
            self.caught_up.send_replace(true);
        }
    }

    /// Returns once [`Self::catch_up`] is done, or a timeout after the request budget.
    pub async fn wait_caught_up(&self) -> Result<(), ProposeError> {
        // Every serializable read asks: once caught up, no receiver and no timer.
        if *self.caught_up.borrow() {
            return Ok(());
        }
        let mut rx = self.caught_up.subscribe();
        let caught_up = tokio::time::timeout(self.timeouts.request, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok());
        if caught_up {
            Ok(())
        } else {
            Err(ProposeError::Timeout)
        }
    }

    /// The shared leadership rounds of this member (for other leader-only work, such as
    /// lease renewals, to confirm leadership without a quorum round each).
    pub fn reads(&self) -> ReadIndexBatcher {
        self.reads.clone()
    }

    /// Commits `req` through Raft and returns what the state machine answered.
    #[instrument(level = "debug", skip_all)]
    pub async fn write(&self, req: InternalRequest) -> Result<InternalResponse, ProposeError> {
        let proposal = crate::metrics::proposal();
        let deadline = Instant::now() + self.timeouts.request;
        let mut avoid = None;
        let mut routes = 0;
        while routes < MAX_ROUTING_ATTEMPTS {
            let leader = self.leader(deadline, avoid.as_ref()).await?;
            let attempt = if leader.id == self.id {
                self.write_local(req.clone(), &leader, deadline).await
            } else {
                self.write_forward(req.clone(), &leader, deadline).await
            };
            match attempt {
                Attempt::Done(r) => return proposal.finish(r),
                Attempt::Reroute => {
                    avoid = Some(leader);
                    routes += 1;
                }
                Attempt::Retry => {
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        return proposal.finish(Err(self.expired(&leader)));
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        Err(ProposeError::LeaderChanged)
    }

    /// Returns once a read served from the local store would be linearizable: the leader
    /// confirmed its leadership with a quorum and this member has applied up to the read
    /// index.
    #[instrument(level = "debug", skip_all)]
    pub async fn read_index(&self) -> Result<(), ProposeError> {
        let deadline = Instant::now() + self.timeouts.request;
        let mut avoid = None;
        for _ in 0..MAX_ROUTING_ATTEMPTS {
            let leader = self.leader(deadline, avoid.as_ref()).await?;
            let attempt = if leader.id == self.id {
                self.read_index_local(&leader, deadline).await
            } else {
                self.read_index_remote(&leader, deadline).await
            };
            match attempt {
                Attempt::Done(r) => return r,
                Attempt::Reroute | Attempt::Retry => avoid = Some(leader),
            }
        }
        Err(ProposeError::LeaderChanged)
    }

    /// Waits (at most the leader wait, and never past `deadline`) for a leader other than
    /// `avoid` (or the same one in a newer term).
    async fn leader(
        &self,
        deadline: Instant,
        avoid: Option<&Leader>,
    ) -> Result<Leader, ProposeError> {
        let wait_until = deadline.min(Instant::now() + self.timeouts.leader_wait);
        let mut rx = self.raft.metrics();
        loop {
            {
                let m = rx.borrow_and_update();
                if let Err(e) = &m.running_state {
                    return Err(ProposeError::Fatal(e.to_string()));
                }
                if let Some(id) = m.current_leader {
                    let stale = avoid.is_some_and(|a| a.id == id && a.term == m.current_term);
                    if !stale {
                        let node = m.membership_config.membership().get_node(&id).cloned();
                        return Ok(Leader {
                            id,
                            term: m.current_term,
                            node,
                        });
                    }
                }
            }
            match timeout_at(wait_until, rx.changed()).await {
                Err(_) => return Err(ProposeError::NoLeader),
                Ok(Err(_)) => return Err(ProposeError::Fatal("raft stopped".to_string())),
                Ok(Ok(())) => {}
            }
        }
    }

    /// The deadline passed: if leadership moved meanwhile, the outcome is unknown because
    /// of that, otherwise the cluster was just slow.
    fn expired(&self, leader: &Leader) -> ProposeError {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.current_term != leader.term || m.current_leader != Some(leader.id) {
            ProposeError::LeaderChanged
        } else {
            ProposeError::Timeout
        }
    }

    fn peer(&self, leader: &Leader) -> Result<PeerClient, ProposeError> {
        let node = leader.node.clone().unwrap_or_default();
        self.channels
            .client(leader.id, &node)
            .map_err(|e| ProposeError::Fatal(e.to_string()))
    }

    async fn write_local(
        &self,
        req: InternalRequest,
        leader: &Leader,
        deadline: Instant,
    ) -> Attempt<InternalResponse> {
        match timeout_at(deadline, self.writes.write(req)).await {
            Err(_) => Attempt::Done(Err(self.expired(leader))),
            Ok(Ok(resp)) => Attempt::Done(Ok(resp)),
            Ok(Err(BatchWriteError::NotLeader(f))) if f.reason == ForwardReason::LeaseExpired => {
                Attempt::Retry
            }
            // Either never appended or truncated by a new leader: not committed.
            Ok(Err(BatchWriteError::NotLeader(_))) => Attempt::Reroute,
            Ok(Err(BatchWriteError::Membership(e) | BatchWriteError::Fatal(e))) => {
                Attempt::Done(Err(ProposeError::Fatal(e)))
            }
            Ok(Err(BatchWriteError::Discarded(_))) => {
                Attempt::Done(Err(ProposeError::LeaderChanged))
            }
        }
    }

    async fn write_forward(
        &self,
        req: InternalRequest,
        leader: &Leader,
        deadline: Instant,
    ) -> Attempt<InternalResponse> {
        let mut client = match self.peer(leader) {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let mut request = tonic::Request::new(req);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match timeout_at(deadline, client.forward(request)).await {
            Err(_) => Attempt::Done(Err(self.expired(leader))),
            Ok(Ok(resp)) => {
                // etcd answers a write once the member the client talks to has applied it, so
                // a serializable read on this member right after sees the write.
                let resp = resp.into_inner();
                match self.wait_applied(resp.log_index, deadline).await {
                    Ok(()) => Attempt::Done(Ok(resp)),
                    Err(e) => Attempt::Done(Err(e)),
                }
            }
            Ok(Err(status))
                if status.code() == Code::Unavailable && status.message() == LEASE_NOT_READY =>
            {
                Attempt::Retry
            }
            Ok(Err(status)) if is_not_leader(&status) || never_connected(&status) => {
                tracing::debug!(leader = leader.id, code = ?status.code(), message = status.message(), "forward re-routed");
                Attempt::Reroute
            }
            Ok(Err(status)) => {
                tracing::debug!(leader = leader.id, code = ?status.code(), message = status.message(), "forward failed");
                Attempt::Done(Err(forward_failed(&status, || self.expired(leader))))
            }
        }
    }

    async fn read_index_local(&self, leader: &Leader, deadline: Instant) -> Attempt<()> {
        match timeout_at(deadline, self.reads.ensure_linearizable()).await {
            Err(_) => Attempt::Done(Err(self.expired(leader))),
            Ok(Ok(_)) => Attempt::Done(Ok(())),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))) => {
                Attempt::Reroute
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)))) => {
                Attempt::Done(Err(ProposeError::Timeout))
            }
            Ok(Err(RaftError::Fatal(f))) => Attempt::Done(Err(ProposeError::Fatal(f.to_string()))),
        }
    }

    /// Asks the leader for the read index, then waits until the local state machine has
    /// applied it. A read has no effect, so any failure to reach the leader re-routes.
    async fn read_index_remote(&self, leader: &Leader, deadline: Instant) -> Attempt<()> {
        let mut client = match self.peer(leader) {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let mut request = tonic::Request::new(ReadIndexRequest {});
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let index = match timeout_at(deadline, client.read_index(request)).await {
            Err(_) => return Attempt::Done(Err(self.expired(leader))),
            Ok(Ok(resp)) => resp.into_inner().read_index,
            Ok(Err(status)) => {
                return match status.code() {
                    Code::DeadlineExceeded | Code::Cancelled => {
                        Attempt::Done(Err(self.expired(leader)))
                    }
                    Code::FailedPrecondition | Code::Unavailable | Code::Unknown => {
                        Attempt::Reroute
                    }
                    _ => Attempt::Done(Err(ProposeError::Fatal(status.message().to_string()))),
                };
            }
        };
        Attempt::Done(self.wait_applied(index, deadline).await)
    }

    /// Waits until this member's state machine has applied log index `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ProposeError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "local apply")
            .await
        {
            Ok(_) => Ok(()),
            Err(WaitError::Timeout(..)) => Err(ProposeError::Timeout),
            Err(WaitError::ShuttingDown) => Err(ProposeError::Fatal("raft stopped".to_string())),
        }
    }
}

/// The outcome of a forwarded write that failed after it may have reached the leader.
/// A status with a source was raised by the local transport (reset stream, GOAWAY, h2
/// error), not answered by the leader: the leader may have the write, so the outcome is
/// unknown.
fn forward_failed(status: &tonic::Status, expired: impl FnOnce() -> ProposeError) -> ProposeError {
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => expired(),
        _ if std::error::Error::source(status).is_some() => ProposeError::LeaderChanged,
        // The leader went away while it had the request.
        Code::Unavailable | Code::Unknown | Code::Aborted => ProposeError::LeaderChanged,
        _ => ProposeError::Fatal(status.message().to_string()),
    }
}

/// Whether the call failed before reaching the peer: the TCP connect failed. tonic reports
/// it as `Unavailable` with the connector's "tcp connect error" and keeps the `io::Error` in
/// the source chain. Anything else, a reset connection included, is treated as possibly
/// delivered.
pub(crate) fn never_connected(status: &tonic::Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    if status.message().starts_with("tcp connect error") {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The re-route rule depends on how tonic words a refused connection: pin it.
    #[tokio::test]
    async fn a_refused_connection_counts_as_never_connected() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let node = MemberNode {
            peer_urls: vec![format!("http://{addr}")],
            ..Default::default()
        };
        let mut client = PeerChannels::default().client(2, &node).unwrap();
        let status = client
            .forward(InternalRequest::default())
            .await
            .unwrap_err();
        assert!(never_connected(&status), "{status:?}");
        // A second call on the same (reconnecting) channel is refused the same way.
        let status = client
            .forward(InternalRequest::default())
            .await
            .unwrap_err();
        assert!(never_connected(&status), "{status:?}");
    }

    #[test]
    fn a_failure_after_delivery_is_leader_changed_or_expired() {
        let expired = || ProposeError::Timeout;
        assert_eq!(
            forward_failed(&tonic::Status::unavailable("connection reset"), expired),
            ProposeError::LeaderChanged
        );
        assert_eq!(
            forward_failed(&tonic::Status::deadline_exceeded("late"), expired),
            ProposeError::Timeout
        );
        assert!(matches!(
            forward_failed(&tonic::Status::internal("bug"), expired),
            ProposeError::Fatal(_)
        ));
        assert!(!never_connected(&tonic::Status::unavailable(
            "connection reset"
        )));
        let mut transport = tonic::Status::internal("h2 protocol error");
        transport.set_source(Arc::new(std::io::Error::other("stream reset")));
        assert_eq!(
            forward_failed(&transport, expired),
            ProposeError::LeaderChanged
        );
    }
}
