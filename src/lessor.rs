//! Lease expiry, etcd's lessor: the store records leases (granted through Raft); the leader
//! keeps their deadlines in memory and revokes expired ones by proposing LeaseRevoke. A
//! member that becomes leader gives every lease a full TTL again (etcd's Promote), so that a
//! leader change never expires a lease early. Followers keep no deadlines: keep-alives and
//! time-to-live questions go to the leader, whose clock alone counts.

use openraft::async_runtime::watch::WatchReceiver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::raft::RaftHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::pb::etcdserverpb::{
    LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::pb::minietcdpb::internal_request::Request as Write;
use crate::pb::minietcdpb::InternalRequest;
use crate::raft::proposer::Proposer;
use crate::raft::types::NodeId;
use crate::storage::{MvccStore, StorageError};

/// How often the leader looks for expired leases.
pub const EXPIRY_CHECK_INTERVAL_MS: u64 = 250;
/// At most this many revokes are proposed per check, so that a mass expiry does not flood
/// the log in one go.
pub const MAX_REVOKES_PER_CHECK: usize = 500;
/// An expired lease whose revoke was proposed is looked at again this long after, and its
/// revoke proposed again if it is still there (etcd's `expiredLeaseRetryInterval`).
pub const EXPIRED_LEASE_RETRY: Duration = Duration::from_secs(3);

/// etcd's minimum lease TTL: `(3 * electionTicks) / 2` heartbeats, rounded up to seconds
/// (`electionTicks` = election timeout / heartbeat, in whole ticks).
pub fn min_lease_ttl_secs(heartbeat_ms: u64, election_timeout_ms: u64) -> i64 {
    let heartbeat_ms = heartbeat_ms.max(1);
    let election_ticks = election_timeout_ms / heartbeat_ms;
    let min_ms = (3 * election_ticks / 2) * heartbeat_ms;
    min_ms.div_ceil(1000) as i64
}

/// Lease deadlines on this member.
pub struct Lessor {
    store: Arc<MvccStore>,
    raft: RaftHandle,
    node_id: NodeId,
    /// Deadline per lease, valid while `leader_term` is this member's current leader term.
    deadlines: Mutex<Deadlines>,
    /// etcd's minimum TTL: leases shorter than an election are granted this TTL instead.
    pub min_ttl_secs: i64,
}

/// One lease's clock on the leader.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the lease expires; for a lease being revoked, when to propose its revoke again.
    deadline: Instant,
    /// Expired, and its revoke proposed: renewals are refused from then on.
    revoking: bool,
}

/// The leader's deadlines, apart from Raft and the store so that they can be tested alone.
#[derive(Default)]
struct Deadlines {
    /// The term in which this member last saw itself leader (0 = not leader; no deadlines
    /// are kept then).
    leader_term: u64,
    by_id: HashMap<i64, Entry>,
}

impl Deadlines {
    /// This member leads in `term` and the store holds `leases` (id, effective TTL): a new
    /// term restarts every clock (etcd's Promote); leases gone from the store are forgotten
    /// and new ones start their clock now.
    fn lead(&mut self, term: u64, leases: &[(i64, i64)], now: Instant) {
        self.promote(term);
        let live: std::collections::HashSet<i64> = leases.iter().map(|l| l.0).collect();
        self.by_id.retain(|id, _| live.contains(id));
        for &(id, ttl) in leases {
            self.by_id.entry(id).or_insert(Entry {
                deadline: now + secs(ttl),
                revoking: false,
            });
        }
    }

    /// This member leads in `term`: a new term restarts every clock (the leases without one
    /// get theirs at the next [`Deadlines::lead`] or renewal).
    fn promote(&mut self, term: u64) {
        if self.leader_term != term {
            self.leader_term = term;
            self.by_id.clear();
        }
    }

    /// This member does not lead: it keeps no deadlines.
    fn follow(&mut self) {
        self.leader_term = 0;
        self.by_id = HashMap::new();
    }

    /// Restarts the lease's clock with `ttl`; `None` when it expired (its revoke is due or
    /// under way), which etcd answers as "lease not found". A member that does not lead
    /// records nothing.
    fn renew(&mut self, id: i64, ttl: i64, now: Instant) -> Option<i64> {
        if self.leader_term == 0 {
            return Some(ttl);
        }
        if let Some(e) = self.by_id.get(&id) {
            if e.revoking || e.deadline <= now {
                return None;
            }
        }
        self.by_id.insert(
            id,
            Entry {
                deadline: now + secs(ttl),
                revoking: false,
            },
        );
        Some(ttl)
    }

    /// Whole seconds left, rounded up; 0 once expired; `ttl` for a lease with no clock here.
    fn remaining(&self, id: i64, ttl: i64, now: Instant) -> i64 {
        match self.by_id.get(&id) {
            Some(e) if e.revoking => 0,
            Some(e) => e
                .deadline
                .saturating_duration_since(now)
                .as_secs_f64()
                .ceil() as i64,
            None => ttl,
        }
    }

    /// The leases to revoke now, earliest deadline first, at most `max`: each is marked as
    /// being revoked and comes back after [`EXPIRED_LEASE_RETRY`] if it is still there.
    fn take_expired(&mut self, now: Instant, max: usize) -> Vec<i64> {
        let mut due: Vec<(Instant, i64)> = self
            .by_id
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, e)| (e.deadline, *id))
            .collect();
        due.sort_unstable();
        due.truncate(max);
        for (_, id) in &due {
            self.by_id.insert(
                *id,
                Entry {
                    deadline: now + EXPIRED_LEASE_RETRY,
                    revoking: true,
                },
            );
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    pub fn new(
        store: Arc<MvccStore>,
        raft: RaftHandle,
        node_id: NodeId,
        heartbeat_ms: u64,
        election_timeout_ms: u64,
    ) -> Arc<Lessor> {
        Arc::new(Lessor {
            store,
            raft,
            node_id,
            deadlines: Mutex::new(Deadlines::default()),
            min_ttl_secs: min_lease_ttl_secs(heartbeat_ms, election_timeout_ms),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The TTL a grant of `ttl_secs` actually gets.
    pub fn effective_ttl(&self, ttl_secs: i64) -> i64 {
        ttl_secs.max(self.min_ttl_secs)
    }

    /// Starts (or restarts) the lease's clock; `None` when the store has no such lease or
    /// it expired (a lease being revoked is never renewed, as in etcd).
    pub fn renew(&self, id: i64) -> Option<i64> {
        let ttl = self.store.lease_ttl(id).ok().flatten()?;
        let ttl = self.effective_ttl(ttl);
        let term = self.leader_term();
        let mut d = self.lock();
        match term {
            // Promoted before the expiry loop noticed: the clocks start now, not at its
            // next round.
            Some(term) => d.promote(term),
            None => d.follow(),
        }
        d.renew(id, ttl, Instant::now())
    }

    /// Whether the store still holds the lease (an expired one until its revoke applies).
    pub fn exists(&self, id: i64) -> bool {
        matches!(self.store.lease_ttl(id), Ok(Some(_)))
    }

    /// The leader's answer to LeaseTimeToLive: remaining TTL from its clock, granted TTL and
    /// keys from its store; TTL -1 for a lease it does not know (as etcd answers).
    pub fn time_to_live(
        &self,
        req: &LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, StorageError> {
        let resp = match self.store.lease_info(req.id)? {
            Some(info) => LeaseTimeToLiveResponse {
                header: None,
                id: req.id,
                ttl: self.lock().remaining(
                    req.id,
                    self.effective_ttl(info.granted_ttl_secs),
                    Instant::now(),
                ),
                granted_ttl: info.granted_ttl_secs,
                keys: if req.keys { info.keys } else { Vec::new() },
            },
            None => LeaseTimeToLiveResponse {
                header: None,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(resp)
    }

    fn leader_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow_watched().clone();
        (m.current_leader == Some(self.node_id)).then_some(m.current_term)
    }

    /// One round of the leader's check: returns the ids to revoke now.
    fn expired(&self) -> Vec<i64> {
        let Some(term) = self.leader_term() else {
            self.lock().follow();
            return Vec::new();
        };
        let leases: Vec<(i64, i64)> = match self.store.lease_ttls() {
            Ok(leases) => leases
                .into_iter()
                .map(|(id, granted)| (id, self.effective_ttl(granted)))
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot list leases");
                return Vec::new();
            }
        };
        let now = Instant::now();
        let mut d = self.lock();
        d.lead(term, &leases, now);
        d.take_expired(now, MAX_REVOKES_PER_CHECK)
    }

    /// The leader's expiry loop; ends when `stop` turns true.
    pub async fn run(
        self: Arc<Self>,
        proposer: Proposer,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(EXPIRY_CHECK_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            for id in self.expired() {
                debug!(lease = id, "lease expired; revoking");
                let req = InternalRequest {
                    caller: None,
                    request: Some(Write::LeaseRevoke(LeaseRevokeRequest { id })),
                };
                // A failure leaves the lease marked as being revoked: the check after
                // EXPIRED_LEASE_RETRY proposes it again.
                if let Err(e) = proposer.write(req).await {
                    warn!(lease = id, error = %e, "revoking an expired lease failed; retrying later");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
