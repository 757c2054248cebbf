//! Lease expiry, etcd's lessor: the store records leases (granted through Raft); the leader
//! keeps their deadlines in memory and revokes expired ones by proposing LeaseRevoke. A
//! member that becomes leader gives every lease a full TTL again (etcd's Promote), so that a
//! leader change never expires a lease early. Followers keep no deadlines: keep-alives and
//! time-to-live questions go to the leader, whose clock alone counts.
//!
//! With lease checkpoints (`--experimental-enable-lease-checkpoint`), the leader proposes,
//! every checkpoint interval, the remaining TTL of each lease that has more than an interval
//! left (etcd's LeaseCheckpoint); every member records it, and a new leader starts that
//! lease's clock from the checkpointed remainder instead of the full TTL, so that frequent
//! leader changes do not keep a long lease alive forever. A keep-alive of a checkpointed
//! lease clears its checkpoint (a checkpoint of 0), as etcd's Renew does.
//!
//! Example, TTL 600 s, interval 60 s: the leader checkpoints 540, 480, ... every minute; if
//! it dies when 455 s are left, the next leader's clock starts at 480 s, not 600 s.

use openraft::async_runtime::watch::WatchReceiver;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::raft::RaftHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::pb::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
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

/// etcd's `maxLeaseCheckpointBatchSize`: checkpoints per proposal.
pub const MAX_CHECKPOINTS_PER_PROPOSAL: usize = 1000;

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
    /// How often the leader checkpoints remaining TTLs; `None`: checkpoints are off.
    checkpoint_interval: Option<Duration>,
    /// Leases renewed while they had a checkpoint: the loop proposes a checkpoint of 0 for
    /// them, so that a later leader gives them their full TTL.
    clear_checkpoints: Mutex<HashSet<i64>>,
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
    /// When each long lease's next checkpoint is due (with checkpoints on).
    checkpoint_at: HashMap<i64, Instant>,
}

impl Deadlines {
    /// [`Deadlines::lead_from`] without checkpoints.
    #[cfg(test)]
    fn lead(&mut self, term: u64, leases: &[(i64, i64)], now: Instant) {
        self.lead_from(term, leases, &HashMap::new(), now);
    }

    /// This member leads in `term` and the store holds `leases` (id, effective TTL), some
    /// with a checkpointed remaining TTL in `remaining`: a new term restarts every clock
    /// (etcd's Promote), from the checkpoint where there is one; leases gone from the store
    /// are forgotten and new ones start their clock now.
    fn lead_from(
        &mut self,
        term: u64,
        leases: &[(i64, i64)],
        remaining: &HashMap<i64, i64>,
        now: Instant,
    ) {
        self.promote(term);
        let live: HashSet<i64> = leases.iter().map(|l| l.0).collect();
        self.by_id.retain(|id, _| live.contains(id));
        self.checkpoint_at.retain(|id, _| live.contains(id));
        for &(id, ttl) in leases {
            let ttl = remaining
                .get(&id)
                .copied()
                .filter(|r| *r > 0)
                .unwrap_or(ttl);
            self.by_id.entry(id).or_insert(Entry {
                deadline: now + secs(ttl),
                revoking: false,
            });
        }
    }

    /// The checkpoints due now, at most `max`: (lease, whole seconds left). A lease with more
    /// than `interval` left gets its first checkpoint an interval after it is first seen, then
    /// one every interval (etcd's `scheduleCheckpointIfNeeded`).
    fn take_checkpoints(
        &mut self,
        now: Instant,
        interval: Duration,
        max: usize,
    ) -> Vec<(i64, i64)> {
        let mut due = Vec::new();
        for (id, e) in &self.by_id {
            let left = e.deadline.saturating_duration_since(now);
            if e.revoking || left <= interval {
                self.checkpoint_at.remove(id);
                continue;
            }
            match self.checkpoint_at.get(id) {
                None => {
                    self.checkpoint_at.insert(*id, now + interval);
                }
                Some(at) if *at <= now => due.push((*at, *id, left)),
                Some(_) => {}
            }
        }
        due.sort_unstable();
        due.truncate(max);
        due.into_iter()
            .map(|(_, id, left)| {
                self.checkpoint_at.insert(id, now + interval);
                (id, left.as_secs_f64().ceil() as i64)
            })
            .collect()
    }

    /// This member leads in `term`: a new term restarts every clock (the leases without one
    /// get theirs at the next [`Deadlines::lead`] or renewal).
    fn promote(&mut self, term: u64) {
        if self.leader_term != term {
            self.leader_term = term;
            self.by_id.clear();
            self.checkpoint_at.clear();
        }
    }

    /// This member does not lead: it keeps no deadlines.
    fn follow(&mut self) {
        self.leader_term = 0;
        self.by_id = HashMap::new();
        self.checkpoint_at = HashMap::new();
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
        Lessor::with_checkpoints(
            store,
            raft,
            node_id,
            heartbeat_ms,
            election_timeout_ms,
            None,
        )
    }

    /// [`Lessor::new`] with lease checkpoints every `checkpoint_interval` (`None`: off).
    pub fn with_checkpoints(
        store: Arc<MvccStore>,
        raft: RaftHandle,
        node_id: NodeId,
        heartbeat_ms: u64,
        election_timeout_ms: u64,
        checkpoint_interval: Option<Duration>,
    ) -> Arc<Lessor> {
        Arc::new(Lessor {
            store,
            raft,
            node_id,
            deadlines: Mutex::new(Deadlines::default()),
            min_ttl_secs: min_lease_ttl_secs(heartbeat_ms, election_timeout_ms),
            checkpoint_interval,
            clear_checkpoints: Mutex::new(HashSet::new()),
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
        let renewed = {
            let mut d = self.lock();
            match term {
                // Promoted before the expiry loop noticed: the clocks start now, not at its
                // next round.
                Some(term) => d.promote(term),
                None => d.follow(),
            }
            d.renew(id, ttl, Instant::now())
        };
        if renewed.is_some()
            && term.is_some()
            && self.checkpoint_interval.is_some()
            && self.store.lease_checkpoint(id).unwrap_or(0) > 0
        {
            if let Ok(mut clear) = self.clear_checkpoints.lock() {
                clear.insert(id);
            }
        }
        renewed
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
                // A lease without a clock yet (just promoted) gets what the expiry loop will
                // give it: the checkpointed remainder, else the full TTL.
                ttl: self.lock().remaining(
                    req.id,
                    Some(self.store.lease_checkpoint(req.id)?)
                        .filter(|r| *r > 0)
                        .unwrap_or_else(|| self.effective_ttl(info.granted_ttl_secs)),
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

    /// One round of the leader's check: returns the ids to revoke now, and the checkpoints
    /// to propose (with checkpoints on).
    fn expired(&self) -> (Vec<i64>, Vec<LeaseCheckpoint>) {
        let Some(term) = self.leader_term() else {
            self.lock().follow();
            if let Ok(mut clear) = self.clear_checkpoints.lock() {
                clear.clear();
            }
            return (Vec::new(), Vec::new());
        };
        let leases: Vec<(i64, i64)> = match self.store.lease_ttls() {
            Ok(leases) => leases
                .into_iter()
                .map(|(id, granted)| (id, self.effective_ttl(granted)))
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot list leases");
                return (Vec::new(), Vec::new());
            }
        };
        let remaining: HashMap<i64, i64> = match self.store.lease_checkpoints() {
            Ok(r) => r.into_iter().collect(),
            Err(e) => {
                warn!(error = %e, "cannot list lease checkpoints");
                return (Vec::new(), Vec::new());
            }
        };
        let now = Instant::now();
        let mut d = self.lock();
        d.lead_from(term, &leases, &remaining, now);
        let expired = d.take_expired(now, MAX_REVOKES_PER_CHECK);
        let Some(interval) = self.checkpoint_interval else {
            return (expired, Vec::new());
        };
        let mut checkpoints: Vec<LeaseCheckpoint> = d
            .take_checkpoints(now, interval, MAX_CHECKPOINTS_PER_PROPOSAL)
            .into_iter()
            .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
            .collect();
        drop(d);
        if let Ok(mut clear) = self.clear_checkpoints.lock() {
            let room = MAX_CHECKPOINTS_PER_PROPOSAL.saturating_sub(checkpoints.len());
            let ids: Vec<i64> = clear.iter().copied().take(room).collect();
            for id in ids {
                clear.remove(&id);
                if !checkpoints.iter().any(|c| c.id == id) {
                    checkpoints.push(LeaseCheckpoint {
                        id,
                        remaining_ttl: 0,
                    });
                }
            }
        }
        (expired, checkpoints)
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
            let (expired, checkpoints) = self.expired();
            if !checkpoints.is_empty() {
                debug!(
                    leases = checkpoints.len(),
                    "checkpointing lease remaining TTLs"
                );
                let req = InternalRequest {
                    caller: None,
                    request: Some(Write::LeaseCheckpoint(LeaseCheckpointRequest {
                        checkpoints,
                    })),
                };
                // A lost checkpoint is taken again at the next interval.
                if let Err(e) = proposer.write(req).await {
                    warn!(error = %e, "proposing lease checkpoints failed");
                }
            }
            for id in expired {
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
