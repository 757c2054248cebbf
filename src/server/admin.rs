//! Requests only the leader may execute and that are not log writes of the MVCC store:
//! membership changes (etcd's MemberAdd/Remove/Update/Promote), member attributes (etcd's
//! "publish": a started member makes its name and client URLs known), and lease renewals
//! and time-to-live questions (only the leader's lessor decides when a lease expires).
//!
//! Any member takes such a request from a client; [`Admin::route`] runs it locally when
//! this member leads, or sends it to the leader over the peer service's Admin RPC, whose
//! handler is [`Admin::execute`]. Member attributes live in the Raft membership itself
//! (`MemberNode` carries name and client URLs), so they are replicated, kept across
//! restarts and carried by snapshots with no separate store rows.

use openraft::async_runtime::watch::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::raft::RaftHandle;
use openraft::error::{ChangeMembershipError, ClientWriteError, LinearizableReadError, RaftError};
use openraft::ChangeMembers;
use sha1::{Digest, Sha1};
use tokio::time::{sleep, timeout_at, Instant};
use tonic::{Code, Status};
use tracing::{info, instrument, warn};

use crate::lessor::Lessor;
use crate::pb::etcdserverpb::{
    LeaseKeepAliveResponse, Member, MemberAddRequest, MemberAddResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use crate::pb::minietcdpb::admin_request::Request as AdminReq;
use crate::pb::minietcdpb::admin_response::Response as AdminResp;
use crate::pb::minietcdpb::{AdminRequest, AdminResponse, MemberAttributes, MembersResponse};
use crate::raft::proposer::never_connected;
use crate::raft::read_batcher::ReadIndexBatcher;
use crate::raft::service::{is_not_leader, not_leader, AdminHandler};
use crate::raft::types::{MemberNode, Membership, NodeId};
use crate::raft::{PeerChannels, ProposeError};

use super::ApiError;

mod move_leader;
mod peer_rtt;

/// How many times one request may be sent to a (new) leader before giving up.
const MAX_ROUTING_ATTEMPTS: usize = 5;
/// Pause between attempts of a membership change while another one is still committing.
const IN_PROGRESS_RETRY: Duration = Duration::from_millis(50);
/// First and largest pause between attempts to publish this member's attributes.
const PUBLISH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const PUBLISH_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A peer that answered a Raft RPC this recently counts as active for
/// `--strict-reconfig-check` (etcd's `HealthInterval`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often a keep-alive for an expired lease checks whether its revoke has applied.
const REVOKE_POLL: Duration = Duration::from_millis(20);
/// etcd 3.4 allows one learner at a time (`maxLearners`).
const MAX_LEARNERS: usize = 1;
/// A learner is ready for promotion when it has matched this share of the leader's log
/// (etcd's `readyPercent`).
const LEARNER_READY_PERCENT: u64 = 90;

/// etcd's error strings for membership requests (rpctypes), with their codes.
fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}
fn peer_url_exists() -> Status {
    Status::failed_precondition("etcdserver: Peer URLs already exists")
}
fn member_exists() -> Status {
    Status::failed_precondition("etcdserver: member ID already exist")
}
fn bad_urls() -> Status {
    Status::invalid_argument("etcdserver: given member URLs are invalid")
}
fn not_learner() -> Status {
    Status::failed_precondition("etcdserver: can only promote a learner member")
}
fn learner_not_ready() -> Status {
    Status::failed_precondition(
        "etcdserver: can only promote a learner member which is in sync with leader",
    )
}
fn unhealthy_cluster() -> Status {
    Status::unavailable("etcdserver: unhealthy cluster")
}
fn not_enough_started_members() -> Status {
    Status::failed_precondition(
        "etcdserver: re-configuration failed due to not enough started members",
    )
}
fn too_many_learners() -> Status {
    Status::failed_precondition("etcdserver: too many learner members in cluster")
}

/// The etcd view of one membership: every member, voters and learners.
pub fn members_of(m: &Membership) -> Vec<Member> {
    let voters: BTreeSet<NodeId> = m.voter_ids().collect();
    m.nodes()
        .map(|(id, node)| Member {
            id: *id,
            name: node.name.clone(),
            peer_ur_ls: node.peer_urls.clone(),
            client_ur_ls: node.client_urls.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

/// etcd's id for a member added at run time: SHA-1 of its sorted peer URLs, the cluster
/// token and the Unix time in seconds (etcd's `computeMemberId` with a time).
pub fn added_member_id(peer_urls: &[String], token: &str, unix_secs: u64) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    h.update(unix_secs.to_string().as_bytes());
    let digest = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// etcd's `types.NewURLs` check: http(s), a host and a port, no path.
fn valid_peer_urls(urls: &[String]) -> bool {
    !urls.is_empty()
        && urls.iter().all(|u| match url::Url::parse(u) {
            Ok(p) => {
                matches!(p.scheme(), "http" | "https")
                    && p.host().is_some()
                    && p.port().is_some()
                    && (p.path().is_empty() || p.path() == "/")
            }
            Err(_) => false,
        })
}

fn sorted(urls: &[String]) -> Vec<String> {
    let mut v = urls.to_vec();
    v.sort();
    v
}

/// Routes and executes admin requests for one member. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    /// This member.
    id: NodeId,
    /// Reported to members that join (`--initial-cluster-state existing`).
    cluster_id: u64,
    /// `--initial-cluster-token`, part of an added member's id.
    token: String,
    /// The local Raft: leadership, membership changes.
    raft: RaftHandle,
    /// Channels to the peers, shared with the Raft network.
    channels: Arc<PeerChannels>,
    /// Lease deadlines; renewals count only on the leader's.
    lessor: Arc<Lessor>,
    /// Shared leadership rounds: concurrent keep-alives confirm leadership with one quorum
    /// round instead of one each.
    reads: ReadIndexBatcher,
    /// The whole budget of one request, as for writes.
    request_timeout: Duration,
    /// `--strict-reconfig-check`: refuse a member remove that would lose quorum.
    strict_reconfig_check: bool,
    /// The store whose HashKV peers ask for (the corruption checks).
    store: Option<Arc<crate::storage::MvccStore>>,
}

impl Admin {
    pub fn new(
        id: NodeId,
        cluster_id: u64,
        token: &str,
        node: &crate::raft::RaftNode,
        lessor: Arc<Lessor>,
        request_timeout: Duration,
    ) -> Admin {
        Admin {
            inner: Arc::new(Inner {
                id,
                cluster_id,
                token: token.to_string(),
                raft: node.raft(),
                channels: node.channels(),
                lessor,
                reads: node.proposer().reads(),
                request_timeout,
                strict_reconfig_check: true,
                store: None,
            }),
        }
    }

    /// Sets `--strict-reconfig-check` (on by default, as in etcd); call before sharing.
    pub fn with_strict_reconfig_check(mut self, on: bool) -> Admin {
        let inner = Arc::get_mut(&mut self.inner);
        assert!(
            inner.is_some(),
            "with_strict_reconfig_check is called on a new Admin, before it is cloned"
        );
        if let Some(inner) = inner {
            inner.strict_reconfig_check = on;
        }
        self
    }

    /// Answers peers' HashKV requests from `store`; call before sharing.
    pub fn with_store(mut self, store: Arc<crate::storage::MvccStore>) -> Admin {
        let inner = Arc::get_mut(&mut self.inner);
        assert!(
            inner.is_some(),
            "with_store is called on a new Admin, before it is cloned"
        );
        if let Some(inner) = inner {
            inner.store = Some(store);
        }
        self
    }

    /// `peer`'s HashKV at `rev`, asked over the peer port (etcd's corruption checks ask
    /// there too, so they need no client credentials when auth is on).
    pub async fn peer_hash_kv(
        &self,
        peer: &crate::pb::etcdserverpb::Member,
        rev: i64,
        timeout: Duration,
    ) -> Result<crate::storage::KvHash, String> {
        let node = MemberNode {
            peer_urls: peer.peer_ur_ls.clone(),
            ..MemberNode::default()
        };
        let mut client = self
            .inner
            .channels
            .client(peer.id, &node)
            .map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(AdminRequest {
            request: Some(AdminReq::HashKv(crate::pb::etcdserverpb::HashKvRequest {
                revision: rev,
            })),
        });
        request.set_timeout(timeout);
        let answer = tokio::time::timeout(timeout, client.admin(request))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|s| s.message().to_string())?;
        match answer.into_inner().response {
            Some(AdminResp::HashKv(r)) => Ok(crate::storage::KvHash {
                hash: r.hash,
                current: r.header.map_or(0, |h| h.revision),
                compacted: r.compact_revision,
            }),
            _ => Err("the peer answered something else".into()),
        }
    }

    /// etcd's `mayRemoveMember`: with `--strict-reconfig-check`, removing a voter must leave
    /// a quorum of started members, and must not leave too few active ones (a member that
    /// is down may always be removed: it is not part of the active quorum).
    fn may_remove_member(&self, m: &Membership, id: NodeId) -> Result<(), Status> {
        if !self.inner.strict_reconfig_check || !m.voter_ids().any(|v| v == id) {
            return Ok(());
        }
        let voters: Vec<NodeId> = m.voter_ids().collect();
        let rest = voters.iter().filter(|v| **v != id);
        let started = rest
            .clone()
            .filter(|v| m.get_node(v).is_some_and(|n| !n.name.is_empty()))
            .count();
        if started < rest.count() / 2 + 1 {
            return Err(not_enough_started_members());
        }
        let channels = &self.inner.channels;
        if id != self.inner.id && channels.active_since(id).is_none() {
            return Ok(());
        }
        // etcd's numConnectedSince: this member, and the peers connected for HEALTH_INTERVAL.
        let active = voters
            .iter()
            .filter(|v| {
                **v == self.inner.id
                    || channels
                        .active_since(**v)
                        .is_some_and(|t| t.elapsed() >= HEALTH_INTERVAL)
            })
            .count();
        if active.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
            return Err(unhealthy_cluster());
        }
        Ok(())
    }

    /// Runs `req` on the leader, wherever it is, and returns its answer. A request is sent
    /// again only when it certainly had no effect (the member asked was not the leader, or
    /// could not be connected to).
    #[instrument(level = "debug", skip_all)]
    pub async fn route(&self, req: AdminRequest) -> Result<AdminResponse, Status> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let mut avoid: Option<(NodeId, u64)> = None;
        for _ in 0..MAX_ROUTING_ATTEMPTS {
            let (leader, term, node) = self.leader(deadline, avoid).await?;
            let res = if leader == self.inner.id {
                timeout_at(deadline, self.execute(req.clone()))
                    .await
                    .unwrap_or_else(|_| Err(Status::from(ApiError::Timeout)))
            } else {
                let mut client = self
                    .inner
                    .channels
                    .client(leader, &node)
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                let mut request = tonic::Request::new(req.clone());
                request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                match timeout_at(deadline, client.admin(request)).await {
                    Err(_) => Err(Status::from(ApiError::Timeout)),
                    Ok(r) => r.map(tonic::Response::into_inner),
                }
            };
            match res {
                Err(s) if is_not_leader(&s) || never_connected(&s) => {
                    avoid = Some((leader, term));
                }
                Err(s) if s.code() == Code::DeadlineExceeded => {
                    return Err(Status::from(ApiError::Timeout))
                }
                other => return other,
            }
        }
        Err(Status::from(ApiError::LeaderChanged))
    }

    /// Waits for a leader other than `avoid` (or the same in a newer term) until `deadline`.
    async fn leader(
        &self,
        deadline: Instant,
        avoid: Option<(NodeId, u64)>,
    ) -> Result<(NodeId, u64, MemberNode), Status> {
        let mut rx = self.inner.raft.metrics();
        loop {
            {
                let m = rx.borrow_and_update();
                if let Some(id) = m.current_leader {
                    if avoid != Some((id, m.current_term)) {
                        let node = m
                            .membership_config
                            .membership()
                            .get_node(&id)
                            .cloned()
                            .unwrap_or_default();
                        return Ok((id, m.current_term, node));
                    }
                }
            }
            match timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(Status::from(ApiError::from(ProposeError::Fatal(
                        "raft stopped".into(),
                    ))))
                }
                Err(_) => return Err(Status::from(ApiError::NoLeader)),
            }
        }
    }

    /// Executes `req` on this member; everything but Members needs it to be the leader.
    pub async fn execute(&self, req: AdminRequest) -> Result<AdminResponse, Status> {
        let resp = match req.request {
            None => return Err(Status::invalid_argument("empty admin request")),
            Some(AdminReq::Members(_)) => {
                let leader = self.inner.raft.metrics().borrow_watched().current_leader;
                AdminResp::Members(MembersResponse {
                    cluster_id: self.inner.cluster_id,
                    members: members_of(&self.membership()),
                    member_id: self.inner.id,
                    leader_id: leader.unwrap_or(0),
                })
            }
            Some(AdminReq::HashKv(r)) => {
                let store = self
                    .inner
                    .store
                    .clone()
                    .ok_or_else(|| Status::unavailable("this member has no store to hash"))?;
                let h = tokio::task::spawn_blocking(move || store.hash_kv(r.revision))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(|e| Status::from(crate::server::status::ApiError::from(e)))?;
                AdminResp::HashKv(crate::pb::etcdserverpb::HashKvResponse {
                    header: Some(crate::pb::etcdserverpb::ResponseHeader {
                        revision: h.current,
                        member_id: self.inner.id,
                        cluster_id: self.inner.cluster_id,
                        raft_term: 0,
                    }),
                    hash: h.hash,
                    compact_revision: h.compacted,
                })
            }
            Some(AdminReq::LeaseRenew(r)) => {
                // Renewals come by the thousand: the leader lease confirms the leadership.
                self.confirm_leader_by_lease().await?;
                let ttl = self.renew(r.id).await?;
                AdminResp::LeaseRenew(LeaseKeepAliveResponse {
                    header: None,
                    id: r.id,
                    ttl,
                })
            }
            Some(AdminReq::LeaseTimeToLive(r)) => {
                self.confirm_leader().await?;
                let resp = self
                    .inner
                    .lessor
                    .time_to_live(&r)
                    .map_err(|e| Status::from(ApiError::from(e)))?;
                AdminResp::LeaseTimeToLive(resp)
            }
            Some(AdminReq::Publish(a)) => AdminResp::Publish(self.publish_here(a).await?),
            Some(AdminReq::MemberAdd(r)) => AdminResp::MemberAdd(self.add(r).await?),
            Some(AdminReq::MemberRemove(r)) => AdminResp::MemberRemove(self.remove(r).await?),
            Some(AdminReq::MemberUpdate(r)) => AdminResp::MemberUpdate(self.update(r).await?),
            Some(AdminReq::MemberPromote(r)) => AdminResp::MemberPromote(self.promote(r).await?),
            Some(AdminReq::Campaign(r)) => {
                self.campaign(&r).await?;
                AdminResp::Campaign(Default::default())
            }
        };
        Ok(AdminResponse {
            response: Some(resp),
        })
    }

    /// Renews a lease on the leader: its TTL, or 0 when the lease does not exist. An expired
    /// lease is never renewed; as in etcd, the answer waits until its revoke has deleted it
    /// (so the keys are gone when the client hears TTL 0), or fails with "not leader" when
    /// this member stops leading meanwhile (the request then goes to the new leader).
    async fn renew(&self, id: i64) -> Result<i64, Status> {
        let lessor = &self.inner.lessor;
        loop {
            if let Some(ttl) = lessor.renew(id) {
                return Ok(ttl);
            }
            if !lessor.exists(id) {
                return Ok(0);
            }
            self.leader_membership()?;
            sleep(REVOKE_POLL).await;
        }
    }

    /// The latest membership this member knows.
    fn membership(&self) -> Membership {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().clone()
    }

    /// Confirms with a quorum that this member leads, and that its store applied everything
    /// committed before this call.
    async fn confirm_leader(&self) -> Result<(), Status> {
        leadership_answer(self.inner.reads.ensure_linearizable().await)
    }

    /// [`Self::confirm_leader`], by the leader lease when it holds (see
    /// [`ReadIndexBatcher::ensure_linearizable_by_lease`]).
    async fn confirm_leader_by_lease(&self) -> Result<(), Status> {
        leadership_answer(self.inner.reads.ensure_linearizable_by_lease().await)
    }

    /// Proposes a membership change, waiting out a change still in progress, and returns the
    /// membership it produced.
    async fn change(
        &self,
        changes: ChangeMembers<NodeId, MemberNode>,
    ) -> Result<Membership, Status> {
        let deadline = Instant::now() + self.inner.request_timeout;
        loop {
            match self
                .inner
                .raft
                .change_membership(changes.clone(), false)
                .await
            {
                Ok(resp) => return Ok(resp.membership.unwrap_or_else(|| self.membership())),
                // A leader whose quorum lease is not yet established takes it shortly;
                // nothing was proposed.
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                    if f.reason == openraft::error::ForwardReason::LeaseExpired
                        && Instant::now() + IN_PROGRESS_RETRY < deadline =>
                {
                    sleep(IN_PROGRESS_RETRY).await;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return Err(not_leader(&f))
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() + IN_PROGRESS_RETRY < deadline => {
                    sleep(IN_PROGRESS_RETRY).await;
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) => return Err(Status::from(ApiError::Timeout)),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::LearnerNotFound(_),
                ))) => return Err(member_not_found()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(Status::failed_precondition(e.to_string()))
                }
                Err(RaftError::APIError(e)) => return Err(Status::unavailable(e.to_string())),
                Err(RaftError::Fatal(f)) => return Err(Status::unavailable(f.to_string())),
            }
        }
    }

    /// Fails with "not leader" unless this member leads: a change must be checked against
    /// the leader's membership, which is the newest.
    fn leader_membership(&self) -> Result<Membership, Status> {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        if m.current_leader != Some(self.inner.id) {
            return Err(not_leader(&openraft::error::ForwardToLeader {
                leader_id: m.current_leader,
                leader_node: None,
                reason: openraft::error::ForwardReason::NotLeader,
            }));
        }
        Ok(m.membership_config.membership().clone())
    }

    async fn publish_here(&self, a: MemberAttributes) -> Result<MemberAttributes, Status> {
        let m = self.leader_membership()?;
        let Some(node) = m.get_node(&a.id) else {
            return Err(member_not_found());
        };
        if node.name == a.name && node.client_urls == a.client_urls {
            return Ok(a);
        }
        let updated = MemberNode {
            name: a.name.clone(),
            client_urls: a.client_urls.clone(),
            peer_urls: node.peer_urls.clone(),
        };
        self.change(ChangeMembers::SetNodes(BTreeMap::from([(a.id, updated)])))
            .await?;
        info!(member = %format!("{:x}", a.id), name = %a.name, "member attributes published");
        Ok(a)
    }

    async fn add(&self, r: MemberAddRequest) -> Result<MemberAddResponse, Status> {
        if !valid_peer_urls(&r.peer_ur_ls) {
            return Err(bad_urls());
        }
        let m = self.leader_membership()?;
        let wanted: BTreeSet<&String> = r.peer_ur_ls.iter().collect();
        if m.nodes()
            .any(|(_, n)| n.peer_urls.iter().any(|u| wanted.contains(u)))
        {
            return Err(peer_url_exists());
        }
        if r.is_learner {
            let voters: BTreeSet<NodeId> = m.voter_ids().collect();
            let learners = m.nodes().filter(|(id, _)| !voters.contains(id)).count();
            if learners >= MAX_LEARNERS {
                return Err(too_many_learners());
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = added_member_id(&r.peer_ur_ls, &self.inner.token, now);
        if m.get_node(&id).is_some() {
            return Err(member_exists());
        }
        let node = MemberNode {
            name: String::new(),
            peer_urls: r.peer_ur_ls.clone(),
            client_urls: Vec::new(),
        };
        let nodes = BTreeMap::from([(id, node)]);
        let changes = if r.is_learner {
            ChangeMembers::AddNodes(nodes)
        } else {
            ChangeMembers::AddVoters(nodes)
        };
        let after = if !r.is_learner && m.voter_ids().count() == 1 {
            self.add_to_single_member(changes, id).await?
        } else {
            self.change(changes).await?
        };
        info!(member = %format!("{id:x}"), learner = r.is_learner, "member added");
        let members = members_of(&after);
        let member = members.iter().find(|x| x.id == id).cloned();
        Ok(MemberAddResponse {
            header: None,
            member,
            members,
        })
    }

    /// A voter added to a one-member cluster: the new configuration needs the new member's
    /// vote to commit, which comes only once that member starts. etcd answers at once with
    /// the new member list; so does this, as soon as the change is in the leader's log, and
    /// the change completes in the background when the new member joins.
    async fn add_to_single_member(
        &self,
        changes: ChangeMembers<NodeId, MemberNode>,
        id: NodeId,
    ) -> Result<Membership, Status> {
        let this = self.clone();
        let mut task = tokio::spawn(async move { this.change(changes).await });
        let mut metrics = self.inner.raft.metrics();
        let deadline = Instant::now() + self.inner.request_timeout;
        loop {
            {
                let m = metrics.borrow_and_update();
                let effective = m.membership_config.membership();
                if effective.get_node(&id).is_some() {
                    return Ok(effective.clone());
                }
            }
            tokio::select! {
                done = &mut task => {
                    return done.map_err(|e| Status::internal(e.to_string()))?;
                }
                changed = timeout_at(deadline, metrics.changed()) => match changed {
                    Err(_) => return Err(Status::from(ApiError::Timeout)),
                    Ok(Err(_)) => return Err(Status::unavailable("etcdserver: server stopped")),
                    Ok(Ok(())) => {}
                },
            }
        }
    }

    async fn remove(&self, r: MemberRemoveRequest) -> Result<MemberRemoveResponse, Status> {
        let m = self.leader_membership()?;
        if m.get_node(&r.id).is_none() {
            return Err(member_not_found());
        }
        self.may_remove_member(&m, r.id)?;
        let is_voter = m.voter_ids().any(|v| v == r.id);
        let changes = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([r.id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([r.id]))
        };
        let after = self.change(changes).await?;
        info!(member = %format!("{:x}", r.id), "member removed");
        Ok(MemberRemoveResponse {
            header: None,
            members: members_of(&after),
        })
    }

    async fn update(&self, r: MemberUpdateRequest) -> Result<MemberUpdateResponse, Status> {
        // etcd looks the member up first: an unknown id is "member not found" whatever URLs.
        let m = self.leader_membership()?;
        let Some(node) = m.get_node(&r.id) else {
            return Err(member_not_found());
        };
        if !valid_peer_urls(&r.peer_ur_ls) {
            return Err(bad_urls());
        }
        let wanted: BTreeSet<&String> = r.peer_ur_ls.iter().collect();
        if m.nodes()
            .any(|(id, n)| *id != r.id && n.peer_urls.iter().any(|u| wanted.contains(u)))
        {
            return Err(peer_url_exists());
        }
        let after = if sorted(&node.peer_urls) == sorted(&r.peer_ur_ls) {
            m.clone()
        } else {
            let updated = MemberNode {
                peer_urls: r.peer_ur_ls.clone(),
                ..node.clone()
            };
            self.change(ChangeMembers::SetNodes(BTreeMap::from([(r.id, updated)])))
                .await?
        };
        Ok(MemberUpdateResponse {
            header: None,
            members: members_of(&after),
        })
    }

    async fn promote(&self, r: MemberPromoteRequest) -> Result<MemberPromoteResponse, Status> {
        let m = self.leader_membership()?;
        if m.get_node(&r.id).is_none() {
            return Err(member_not_found());
        }
        if m.voter_ids().any(|v| v == r.id) {
            return Err(not_learner());
        }
        if !self.learner_ready(r.id) {
            return Err(learner_not_ready());
        }
        let after = self
            .change(ChangeMembers::AddVoterIds(BTreeSet::from([r.id])))
            .await?;
        info!(member = %format!("{:x}", r.id), "learner promoted");
        Ok(MemberPromoteResponse {
            header: None,
            members: members_of(&after),
        })
    }

    /// etcd's `isLearnerReady`: the learner has matched at least 90% of the leader's log.
    fn learner_ready(&self, id: NodeId) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        let leader_index = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|l| l.index)
            .unwrap_or(0);
        matched * 100 >= leader_index * LEARNER_READY_PERCENT
    }

    /// Makes this member's name and client URLs part of the cluster's membership, once a
    /// leader exists; gives up only when `stop` turns true. A member on a fresh data dir
    /// always asks the leader: its own initial membership is not yet the cluster's. A
    /// restarted member whose stored membership already holds its attributes has nothing to
    /// publish.
    pub async fn publish(
        self,
        name: String,
        client_urls: Vec<String>,
        fresh: bool,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let attrs = MemberAttributes {
            id: self.inner.id,
            name,
            client_urls,
        };
        let known = self
            .membership()
            .get_node(&self.inner.id)
            .is_some_and(|n| n.name == attrs.name && n.client_urls == attrs.client_urls);
        if known && !fresh {
            return;
        }
        crate::raft::retry::until_stopped(
            stop,
            PUBLISH_BACKOFF_MIN,
            PUBLISH_BACKOFF_MAX,
            || {
                self.route(AdminRequest {
                    request: Some(AdminReq::Publish(attrs.clone())),
                })
            },
            |e: &Status| {
                warn!(code = ?e.code(), message = e.message(), "publishing member attributes failed; retrying");
            },
        )
        .await;
    }
}

#[tonic::async_trait]
impl AdminHandler for Admin {
    async fn admin(&self, req: AdminRequest) -> Result<AdminResponse, Status> {
        self.execute(req).await
    }
}

/// How long a member joining a running cluster keeps asking the other members for the
/// membership before it gives up.
const JOIN_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The budget of one Members call to one peer.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between rounds over the peers.
const JOIN_RETRY: Duration = Duration::from_millis(300);

/// etcd's request timeout for a given election timeout: 5 s plus two election timeouts.
pub fn request_timeout(election_timeout_ms: u64) -> Duration {
    Duration::from_secs(5) + Duration::from_millis(election_timeout_ms.saturating_mul(2))
}

/// Why a member started with `--initial-cluster-state existing` could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("no other member of --initial-cluster answered at {0}")]
    Unreachable(String),
    #[error(
        "the cluster has no member with peer URLs {0} (add it first: etcdctl member add NAME \
         --peer-urls=URLS)"
    )]
    NotAdded(String),
}

/// For a member joining a running cluster: asks the other members of `--initial-cluster`
/// for the membership and returns (this member's id, the cluster id), this member being
/// the one whose peer URLs are `my_peer_urls` (etcd's `ValidateClusterAndAssignIDs`).
pub async fn discover_join_identity(
    my_peer_urls: &[String],
    others: &[Vec<String>],
    peer_tls: Option<minietcd_client::tls::TlsConnector>,
) -> Result<(NodeId, u64), JoinError> {
    let channels = PeerChannels::with_tls(peer_tls);
    let mine = sorted(my_peer_urls);
    let deadline = Instant::now() + JOIN_DISCOVERY_TIMEOUT;
    let all: Vec<String> = others.iter().flatten().cloned().collect();
    loop {
        for urls in others {
            let node = MemberNode {
                peer_urls: urls.clone(),
                ..MemberNode::default()
            };
            let Ok(mut client) = channels.client(0, &node) else {
                continue;
            };
            let mut request = tonic::Request::new(AdminRequest {
                request: Some(AdminReq::Members(crate::pb::minietcdpb::MembersRequest {})),
            });
            request.set_timeout(JOIN_CALL_TIMEOUT);
            let answer = tokio::time::timeout(JOIN_CALL_TIMEOUT, client.admin(request)).await;
            let Ok(Ok(resp)) = answer else {
                continue;
            };
            let Some(AdminResp::Members(m)) = resp.into_inner().response else {
                continue;
            };
            return match m.members.iter().find(|x| sorted(&x.peer_ur_ls) == mine) {
                Some(me) => {
                    info!(member = %format!("{:x}", me.id), cluster = %format!("{:x}", m.cluster_id), "joining a running cluster");
                    Ok((me.id, m.cluster_id))
                }
                None => Err(JoinError::NotAdded(mine.join(","))),
            };
        }
        if Instant::now() + JOIN_RETRY >= deadline {
            return Err(JoinError::Unreachable(all.join(",")));
        }
        sleep(JOIN_RETRY).await;
    }
}

/// How long a member goes without a leader before it asks its peers whether it was removed.
const REMOVAL_CHECK_AFTER_ELECTIONS: u32 = 3;
/// Pause between such checks.
const REMOVAL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Admin {
    /// Resolves once this member, having been part of the membership, is no longer in it:
    /// it was removed, and etcd stops such a member. A removed member often never receives
    /// the entry that removes it (the leader stops replicating to it), so a member without
    /// a leader for a while asks its peers: the leader's membership is the newest, and if
    /// it lacks this member, the member was removed. A member still waiting for its first
    /// log (a joiner) has not been part of the membership yet. Never resolves if Raft
    /// stops first.
    pub async fn removed_from_cluster(self, election_timeout: Duration) {
        let id = self.inner.id;
        // Leader and membership only: this waiter must not wake at every write.
        let mut rx = self.inner.raft.server_metrics();
        let mut member = false;
        let mut leaderless_since: Option<Instant> = None;
        loop {
            let peers: Vec<(NodeId, MemberNode)> = {
                let m = rx.borrow_and_update();
                let membership = m.membership_config.membership();
                if membership.get_node(&id).is_some() {
                    member = true;
                } else if member {
                    return;
                }
                match m.current_leader {
                    Some(_) => leaderless_since = None,
                    None => {
                        leaderless_since.get_or_insert_with(Instant::now);
                    }
                }
                membership
                    .nodes()
                    .filter(|(n, _)| **n != id)
                    .map(|(n, node)| (*n, node.clone()))
                    .collect()
            };
            let overdue = leaderless_since
                .is_some_and(|t| t.elapsed() >= election_timeout * REMOVAL_CHECK_AFTER_ELECTIONS);
            if member && overdue && self.leader_says_removed(&peers).await {
                return;
            }
            // Raft stopped: the node is going down anyway.
            if let Ok(Err(_)) = tokio::time::timeout(REMOVAL_CHECK_INTERVAL, rx.changed()).await {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether one of `peers`, being the leader, answers a membership without this member.
    async fn leader_says_removed(&self, peers: &[(NodeId, MemberNode)]) -> bool {
        for (peer, node) in peers {
            let Ok(mut client) = self.inner.channels.client(*peer, node) else {
                continue;
            };
            let mut request = tonic::Request::new(AdminRequest {
                request: Some(AdminReq::Members(crate::pb::minietcdpb::MembersRequest {})),
            });
            request.set_timeout(JOIN_CALL_TIMEOUT);
            let answer = tokio::time::timeout(JOIN_CALL_TIMEOUT, client.admin(request)).await;
            let Ok(Ok(resp)) = answer else {
                continue;
            };
            if let Some(AdminResp::Members(m)) = resp.into_inner().response {
                if m.leader_id != 0 && m.leader_id == m.member_id {
                    return m.members.iter().all(|x| x.id != self.inner.id);
                }
            }
        }
        false
    }
}

/// The status a failed leadership check answers with.
fn leadership_answer(reply: crate::raft::read_batcher::ReadReply) -> Result<(), Status> {
    match reply {
        Ok(()) => Ok(()),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => Err(not_leader(&f)),
        Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
            Err(Status::from(ApiError::Timeout))
        }
        Err(RaftError::Fatal(f)) => Err(Status::unavailable(f.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_member_ids_follow_etcd() {
        // The same inputs give the same id; the time makes a re-added member distinct.
        let urls = vec!["http://127.0.0.1:2380".to_string()];
        let a = added_member_id(&urls, "etcd-cluster", 1_700_000_000);
        assert_eq!(a, added_member_id(&urls, "etcd-cluster", 1_700_000_000));
        assert_ne!(a, added_member_id(&urls, "etcd-cluster", 1_700_000_001));
        // URL order does not matter.
        let two = vec!["http://b:2".to_string(), "http://a:1".to_string()];
        let rev: Vec<String> = two.iter().rev().cloned().collect();
        assert_eq!(added_member_id(&two, "t", 5), added_member_id(&rev, "t", 5));
        // The time is appended as decimal text, after the token.
        let mut h = Sha1::new();
        h.update(b"http://127.0.0.1:2380etcd-cluster1700000000");
        let d = h.finalize();
        assert_eq!(a.to_be_bytes(), d[..8]);
    }

    #[test]
    fn peer_urls_are_checked_as_etcd_does() {
        assert!(valid_peer_urls(&["http://127.0.0.1:2380".into()]));
        assert!(!valid_peer_urls(&[]));
        assert!(!valid_peer_urls(&["127.0.0.1:2380".into()]));
        assert!(!valid_peer_urls(&["http://127.0.0.1".into()]));
        assert!(!valid_peer_urls(&["http://127.0.0.1:2380/x".into()]));
    }
}
