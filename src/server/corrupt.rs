//! etcd's initial corruption check (`--experimental-initial-corrupt-check`): before a member
//! serves clients, it compares its HashKV with every peer's at its own current revision, and
//! refuses to start when a peer with the same compaction revision hashes the same history
//! differently (etcd 3.4 `etcdserver/corrupt.go` `CheckInitialHashKV`).
//!
//!
//! With `--experimental-corrupt-check-time` the leader also checks the whole cluster
//! periodically ([`monitor`], etcd's `monitorKVHash` and `checkHashKV`): it hashes its store,
//! asks every peer for its hash at that revision, confirms its leadership (a linearizable read
//! barrier), hashes again, and raises the CORRUPT alarm through Raft for the first member
//! found inconsistent. While that alarm is active every member refuses writes with
//! "etcdserver: corrupt cluster" (see `storage::alarm`).
//!
//! As in etcd, a peer that cannot answer (down, behind, compacted past the revision) is only
//! logged: the check cannot tell anything from it. As etcd, members ask each other over the
//! peer port (the peer service's Admin HashKV), so the checks need no client credentials
//! when auth is on.

use std::time::Duration;

use tokio::sync::watch;

use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::{AlarmRequest, AlarmType, Member};
use crate::pb::minietcdpb::internal_request::Request as Write;
use crate::server::admin::Admin;
use crate::server::ServerContext;
use crate::storage::{KvHash, MvccStore};

/// How long one peer may take to answer (connect and HashKV).
const PEER_HASH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the check refuses to start the member.
#[derive(Debug, thiserror::Error)]
pub enum CorruptError {
    /// etcd's wording: "<id> found data inconsistency with peers".
    #[error("{member:x} found data inconsistency with peers ({details})")]
    Mismatch { member: u64, details: String },
    #[error("cannot hash the local store: {0}")]
    Local(#[from] crate::storage::StorageError),
}

/// Compares this member's HashKV at its current revision with every peer's.
pub async fn check_initial(
    store: &MvccStore,
    member_id: u64,
    peers: &[Member],
    admin: &Admin,
) -> Result<(), CorruptError> {
    let local = store.hash_kv(0)?;
    tracing::info!(
        member = %format!("{member_id:x}"),
        revision = local.current,
        compact_revision = local.compacted,
        hash = local.hash,
        "starting initial corruption check"
    );
    let mut mismatches = Vec::new();
    for peer in peers.iter().filter(|m| m.id != member_id) {
        match peer_hash(admin, peer, local.current).await {
            Ok(theirs) => {
                if let Some(m) = mismatch(&local, &theirs) {
                    tracing::error!(
                        peer = %format!("{:x}", peer.id),
                        local_hash = local.hash,
                        peer_hash = theirs.hash,
                        revision = local.current,
                        compact_revision = local.compacted,
                        "found different hash values from a peer"
                    );
                    mismatches.push(format!("peer {:x}: {m}", peer.id));
                }
            }
            Err(why) => tracing::warn!(
                peer = %format!("{:x}", peer.id),
                error = %why,
                "cannot fetch hash from peer"
            ),
        }
    }
    if !mismatches.is_empty() {
        return Err(CorruptError::Mismatch {
            member: member_id,
            details: mismatches.join("; "),
        });
    }
    tracing::info!(
        member = %format!("{member_id:x}"),
        "initial corruption checking passed; no corruption was detected"
    );
    Ok(())
}

/// etcd's `monitorKVHash`: every `every`, while this member leads, checks the cluster's
/// hashes ([`check_cluster`]). Runs until the future is dropped.
pub async fn monitor(
    ctx: ServerContext,
    admin: Admin,
    leader: watch::Receiver<Option<u64>>,
    every: Duration,
) {
    let me = ctx.header.member_id();
    tracing::info!(interval = ?every, "enabled corruption checking");
    loop {
        tokio::time::sleep(every).await;
        if *leader.borrow() != Some(me) {
            continue;
        }
        if let Err(e) = check_cluster(&ctx, &admin).await {
            tracing::debug!(error = %e, "failed to check hash KV");
        }
    }
}

/// One pass of etcd's `checkHashKV`, run by the leader: raises the CORRUPT alarm of the
/// first member found inconsistent.
async fn check_cluster(ctx: &ServerContext, admin: &Admin) -> Result<(), String> {
    let me = ctx.header.member_id();
    let before = local_hash(ctx).await?;
    let members =
        crate::server::admin::members_of(ctx.header.metrics().membership_config.membership());
    let mut answers = Vec::new();
    for peer in members.iter().filter(|m| m.id != me) {
        match peer_hash(admin, peer, before.current).await {
            Ok(h) => answers.push((peer.id, h)),
            Err(why) => tracing::warn!(
                peer = %format!("{:x}", peer.id),
                error = %why,
                "failed to get hashKV from peer"
            ),
        }
    }
    // Still the leader, and every write committed before the peers answered applied here:
    // a follower may not be ahead of what the leader has now.
    ctx.proposer.read_index().await.map_err(|e| e.to_string())?;
    let after = local_hash(ctx).await?;
    let Some(member) = inconsistent_member(me, &before, &after, &answers) else {
        return Ok(());
    };
    let corrupt = AlarmType::Corrupt as i32;
    let active = ctx
        .store
        .alarms()
        .map_err(|e| e.to_string())?
        .contains(&(member, corrupt));
    if active {
        return Ok(());
    }
    let raise = AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: member,
        alarm: corrupt,
    };
    ctx.propose(Write::Alarm(raise))
        .await
        .map_err(|e| format!("could not raise the CORRUPT alarm: {e}"))?;
    tracing::error!(
        member = %format!("{member:x}"),
        "data inconsistency found; CORRUPT alarm raised"
    );
    Ok(())
}

/// This member's HashKV at its current revision, off the async runtime.
async fn local_hash(ctx: &ServerContext) -> Result<KvHash, String> {
    let store = ctx.store.clone();
    match tokio::task::spawn_blocking(move || store.hash_kv(0)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// etcd's `checkHashKV` decision. `before` and `after` are the leader's hashes around the
/// read barrier, `peers` each peer's answer at `before.current`. The leader itself is
/// inconsistent when its hash of one revision changed; a peer when it is ahead of the
/// leader (revision or compaction) or hashes the leader's revision differently at the same
/// compaction. The first member found is returned (etcd raises one alarm a pass).
fn inconsistent_member(
    me: u64,
    before: &KvHash,
    after: &KvHash,
    peers: &[(u64, KvHash)],
) -> Option<u64> {
    if after.hash != before.hash
        && after.current == before.current
        && after.compacted == before.compacted
    {
        tracing::warn!(
            hash1 = before.hash,
            hash2 = after.hash,
            revision = before.current,
            "mismatched hashes"
        );
        return Some(me);
    }
    for (id, theirs) in peers {
        let peer = format!("{id:x}");
        if theirs.current > after.current {
            tracing::warn!(
                peer = %peer,
                follower_revision = theirs.current,
                leader_revision = after.current,
                "revision from follower must be less than or equal to leader's"
            );
            return Some(*id);
        }
        if theirs.compacted > after.compacted {
            tracing::warn!(
                peer = %peer,
                follower_compact_revision = theirs.compacted,
                leader_compact_revision = after.compacted,
                "compact revision from follower must be less than or equal to leader's"
            );
            return Some(*id);
        }
        if theirs.compacted == before.compacted && theirs.hash != before.hash {
            tracing::warn!(
                peer = %peer,
                follower_hash = theirs.hash,
                leader_hash = before.hash,
                revision = before.current,
                "same compact revision then hashes must match"
            );
            return Some(*id);
        }
    }
    None
}

/// etcd's rule: hashes compare only between stores compacted at the same revision.
fn mismatch(local: &KvHash, theirs: &KvHash) -> Option<String> {
    (theirs.compacted == local.compacted && theirs.hash != local.hash).then(|| {
        format!(
            "hash {} against local {} at revision {}",
            theirs.hash, local.hash, local.current
        )
    })
}

/// The peer's HashKV at `rev`, from the first of its client URLs that answers.
async fn peer_hash(admin: &Admin, peer: &Member, rev: i64) -> Result<KvHash, String> {
    if peer.peer_ur_ls.is_empty() {
        return Err("the peer has no peer URLs".into());
    }
    admin.peer_hash_kv(peer, rev, PEER_HASH_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hash: u32, compacted: i64) -> KvHash {
        KvHash {
            hash,
            current: 10,
            compacted,
        }
    }

    #[test]
    fn only_equal_compactions_are_compared() {
        assert!(mismatch(&h(1, 5), &h(1, 5)).is_none());
        assert!(mismatch(&h(1, 5), &h(2, 5)).is_some());
        // Compacted at another revision: the hashes cover different rows.
        assert!(mismatch(&h(1, 5), &h(2, 7)).is_none());
    }

    fn at(hash: u32, current: i64, compacted: i64) -> KvHash {
        KvHash {
            hash,
            current,
            compacted,
        }
    }

    #[test]
    fn the_periodic_check_names_the_inconsistent_member() {
        let leader = at(7, 10, 2);
        // Agreeing peers, and a peer compacted elsewhere: nothing to say.
        let fine = [(2, at(7, 10, 2)), (3, at(9, 10, 1))];
        assert_eq!(inconsistent_member(1, &leader, &leader, &fine), None);
        // Same compaction, other hash.
        let peers = [(2, at(7, 10, 2)), (3, at(8, 10, 2))];
        assert_eq!(inconsistent_member(1, &leader, &leader, &peers), Some(3));
        // Ahead of the leader, in revision or compaction.
        assert_eq!(
            inconsistent_member(1, &leader, &leader, &[(2, at(7, 11, 2))]),
            Some(2)
        );
        assert_eq!(
            inconsistent_member(1, &leader, &leader, &[(2, at(7, 10, 3))]),
            Some(2)
        );
        // The leader's own hash of one revision changed across the barrier.
        assert_eq!(
            inconsistent_member(1, &leader, &at(6, 10, 2), &fine),
            Some(1)
        );
        // A write in between: the leader's second hash is of another revision.
        assert_eq!(inconsistent_member(1, &leader, &at(6, 11, 2), &fine), None);
    }
}
