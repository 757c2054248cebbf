//! Response headers: every response carries cluster_id, member_id, revision and raft_term.

use crate::raft::RaftHandle;
use openraft::async_runtime::watch::WatchReceiver;

use crate::pb::etcdserverpb::ResponseHeader;

/// Makes response headers for this member.
#[derive(Clone)]
pub struct HeaderSource {
    cluster_id: u64,
    member_id: u64,
    raft: RaftHandle,
}

impl HeaderSource {
    pub fn new(cluster_id: u64, member_id: u64, raft: RaftHandle) -> Self {
        HeaderSource {
            cluster_id,
            member_id,
            raft,
        }
    }

    /// A header for a response at store revision `revision`.
    pub fn at(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft.metrics().borrow_watched().current_term,
        }
    }

    /// Fills `header` in place, keeping nothing of what was there but the revision.
    pub fn fill(&self, header: &mut Option<ResponseHeader>, revision: i64) {
        *header = Some(self.at(revision));
    }

    /// The latest Raft metrics of this member (term, leader, membership, indexes).
    pub fn metrics(&self) -> openraft::RaftMetrics<crate::raft::types::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }
}
