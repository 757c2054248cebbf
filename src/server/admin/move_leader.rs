//! etcd's MoveLeader, emulated (openraft 0.10's own transfer needs a transfer RPC the peer
//! transport does not carry yet): the
//! leader stops sending heartbeats, so that the followers' leader lease (openraft's
//! `election_timeout_max`) runs out, then asks the transferee to campaign. A follower with a
//! committed vote starts an election by itself only a whole election timeout after the lease,
//! so in that window the transferee is the only candidate; it wins as long as its log is up
//! to date, which the leader checks first. Heartbeats resume whatever the outcome.

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use tokio::time::{sleep, timeout_at, Instant};
use tonic::Status;

use super::{Admin, AdminReq, AdminRequest, ApiError};
use crate::pb::etcdserverpb::MoveLeaderRequest;

/// How often the leader looks at the transferee's progress and the leadership.
const POLL: Duration = Duration::from_millis(20);

impl Admin {
    /// etcd's `EtcdServer.MoveLeader` on this member: it must lead, the transferee must be a
    /// voting member; answers once the transferee leads, or with etcd's timeout error.
    pub async fn move_leader(&self, target: u64) -> Result<(), Status> {
        let raft = &self.inner.raft;
        let (leader, voter, caught_up) = {
            let m = raft.metrics().borrow_watched().clone();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == target);
            (m.current_leader, voter, m.last_log_index)
        };
        if leader != Some(self.inner.id) {
            return Err(ApiError::NotLeader.into());
        }
        if !voter {
            return Err(ApiError::BadLeaderTransferee.into());
        }
        if target == self.inner.id {
            return Ok(());
        }
        let deadline = Instant::now() + self.inner.request_timeout;
        raft.runtime_config().heartbeat(false);
        let result = timeout_at(deadline, self.hand_over(target, caught_up.unwrap_or(0))).await;
        raft.runtime_config().heartbeat(true);
        match result {
            Ok(r) => r,
            Err(_) => Err(ApiError::LeaderTransferTimeout.into()),
        }
    }

    async fn hand_over(&self, target: u64, last_index: u64) -> Result<(), Status> {
        let raft = &self.inner.raft;
        let lease = Duration::from_millis(raft.config().election_timeout_max);
        // The transferee must hold the whole log, or the others would not vote for it.
        loop {
            let matched = raft
                .metrics()
                .borrow_watched()
                .replication
                .as_ref()
                .and_then(|r| r.get(&target).cloned().flatten())
                .map_or(0, |l| l.index);
            if matched >= last_index {
                break;
            }
            sleep(POLL).await;
        }
        let node = self
            .membership()
            .get_node(&target)
            .cloned()
            .ok_or_else(|| Status::from(ApiError::BadLeaderTransferee))?;
        let mut client = self
            .inner
            .channels
            .client(target, &node)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        loop {
            sleep(lease + POLL).await;
            let campaign = AdminRequest {
                request: Some(AdminReq::Campaign(MoveLeaderRequest { target_id: target })),
            };
            if let Err(e) = client.admin(campaign).await {
                tracing::warn!(target, error = %e, "move-leader: the transferee did not campaign");
            }
            let mut rx = raft.metrics();
            let until = Instant::now() + lease;
            while Instant::now() < until {
                if rx.borrow_and_update().current_leader == Some(target) {
                    tracing::info!(target, "leadership transferred");
                    return Ok(());
                }
                let _ = tokio::time::timeout(POLL, rx.changed()).await;
            }
        }
    }

    /// The transferee's side: campaign at once.
    pub(super) async fn campaign(&self, r: &MoveLeaderRequest) -> Result<(), Status> {
        if r.target_id != self.inner.id {
            return Err(Status::invalid_argument("campaign sent to another member"));
        }
        self.inner
            .raft
            .trigger()
            .elect(false)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}
