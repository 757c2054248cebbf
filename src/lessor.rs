//! Lease expiry, etcd's lessor: the store records leases (granted through Raft); this keeps
//! their deadlines in memory on every member, and the leader revokes expired ones by
//! proposing LeaseRevoke. A member that becomes leader gives every lease a full TTL again
//! (etcd's Promote), so that a leader change never expires a lease early.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::Raft;
use tracing::{debug, warn};

use crate::pb::etcdserverpb::LeaseRevokeRequest;
use crate::pb::minietcdpb::internal_request::Request as Write;
use crate::pb::minietcdpb::InternalRequest;
use crate::raft::proposer::Proposer;
use crate::raft::types::{NodeId, TypeConfig};
use crate::storage::MvccStore;

/// How often the leader looks for expired leases.
pub const EXPIRY_CHECK_INTERVAL_MS: u64 = 250;
/// At most this many revokes are proposed per check, so that a mass expiry does not flood
/// the log in one go.
pub const MAX_REVOKES_PER_CHECK: usize = 500;

/// Lease deadlines on this member.
pub struct Lessor {
    store: Arc<MvccStore>,
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    /// Deadline per lease, valid while `leader_term` is this member's current leader term.
    deadlines: Mutex<Deadlines>,
    /// etcd's minimum TTL: leases shorter than an election are granted this TTL instead.
    pub min_ttl_secs: i64,
}

#[derive(Default)]
struct Deadlines {
    /// The term in which this member last saw itself leader (0 = not leader).
    leader_term: u64,
    by_id: HashMap<i64, Instant>,
}

impl Lessor {
    pub fn new(
        store: Arc<MvccStore>,
        raft: Raft<TypeConfig>,
        node_id: NodeId,
        election_timeout_ms: u64,
    ) -> Arc<Lessor> {
        // etcd: minTTL = ceil(3/2 * electionTicks * heartbeat) = 1.5 election timeouts.
        let min_ttl_secs = (election_timeout_ms * 3 / 2).div_ceil(1000) as i64;
        Arc::new(Lessor {
            store,
            raft,
            node_id,
            deadlines: Mutex::new(Deadlines::default()),
            min_ttl_secs,
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

    /// Starts (or restarts) the lease's clock; `None` when the store has no such lease.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let ttl = self.store.lease_ttl(id).ok().flatten()?;
        let ttl = self.effective_ttl(ttl);
        self.lock()
            .by_id
            .insert(id, Instant::now() + Duration::from_secs(ttl as u64));
        Some(ttl)
    }

    /// Seconds left before the lease expires, as this member knows it.
    pub fn remaining_secs(&self, id: i64, granted_ttl_secs: i64) -> i64 {
        match self.lock().by_id.get(&id) {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                left.as_secs_f64().ceil() as i64
            }
            None => self.effective_ttl(granted_ttl_secs),
        }
    }

    fn leader_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        (m.current_leader == Some(self.node_id)).then_some(m.current_term)
    }

    /// One round of the leader's check: returns the ids to revoke now.
    fn expired(&self) -> Vec<i64> {
        let Some(term) = self.leader_term() else {
            self.lock().leader_term = 0;
            return Vec::new();
        };
        let leases = match self.store.lease_ttls() {
            Ok(leases) => leases,
            Err(e) => {
                warn!(error = %e, "cannot list leases");
                return Vec::new();
            }
        };
        let now = Instant::now();
        let mut d = self.lock();
        if d.leader_term != term {
            // Newly leader: every lease gets a full TTL from now.
            d.leader_term = term;
            d.by_id.clear();
        }
        let live: std::collections::HashSet<i64> = leases.iter().map(|l| l.0).collect();
        d.by_id.retain(|id, _| live.contains(id));
        for &(id, granted) in &leases {
            let ttl = self.effective_ttl(granted);
            d.by_id
                .entry(id)
                .or_insert_with(|| now + Duration::from_secs(ttl as u64));
        }
        d.by_id
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| *id)
            .take(MAX_REVOKES_PER_CHECK)
            .collect()
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
                // Forget it so the next round does not propose it again while this one runs.
                self.lock().by_id.remove(&id);
                let req = InternalRequest {
                    request: Some(Write::LeaseRevoke(LeaseRevokeRequest { id })),
                };
                if let Err(e) = proposer.write(req).await {
                    warn!(lease = id, error = %e, "revoking an expired lease failed");
                }
            }
        }
    }
}
