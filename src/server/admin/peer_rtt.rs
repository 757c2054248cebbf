//! etcd's `etcd_network_peer_round_trip_time_seconds`: every member times a small request to
//! each peer, periodically, as etcd's transport probes its peers (`/raft/probing`). The
//! request is the peer service's Members admin call, which a member answers from memory.

use std::time::Duration;

use tokio::time::Instant;

use super::{Admin, AdminReq, AdminRequest};
use crate::raft::types::{MemberNode, NodeId};

/// How often each peer is probed (etcd probes every 4 s and records every 30 s).
pub const PEER_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// A probe not answered within this bound is not a round trip (etcd counts it as a failed
/// probe, not as a sample).
const PEER_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Admin {
    /// Probes every other member each [`PEER_PROBE_INTERVAL`] and records each answered
    /// probe's round trip, labelled with the peer's id. Runs until dropped.
    pub async fn probe_peers(self) {
        let mut tick = tokio::time::interval(PEER_PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let peers: Vec<(NodeId, MemberNode)> = self
                .membership()
                .nodes()
                .filter(|(n, _)| **n != self.inner.id)
                .map(|(n, node)| (*n, node.clone()))
                .collect();
            for (peer, node) in peers {
                if let Some(rtt) = self.probe(peer, &node).await {
                    crate::metrics::peer_round_trip(peer, rtt);
                }
            }
        }
    }

    /// One probe of `peer`: the round trip, or `None` when it did not answer.
    async fn probe(&self, peer: NodeId, node: &MemberNode) -> Option<Duration> {
        let mut client = self.inner.channels.client(peer, node).ok()?;
        let mut request = tonic::Request::new(AdminRequest {
            request: Some(AdminReq::Members(crate::pb::minietcdpb::MembersRequest {})),
        });
        request.set_timeout(PEER_PROBE_TIMEOUT);
        let started = Instant::now();
        match tokio::time::timeout(PEER_PROBE_TIMEOUT, client.admin(request)).await {
            Ok(Ok(_)) => Some(started.elapsed()),
            Ok(Err(status)) => {
                tracing::debug!(peer = %format!("{peer:x}"), error = %status, "peer probe failed");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %format!("{peer:x}"), "peer probe timed out");
                None
            }
        }
    }
}
