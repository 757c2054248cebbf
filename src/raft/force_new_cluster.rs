//! `--force-new-cluster`, etcd's disaster recovery: the other members are gone for good, and
//! this member restarts from its own data as the only member of the same cluster.
//!
//! etcd rewrites its WAL before raft starts: it appends configuration changes that remove
//! every other member, and commits them itself. minietcd does the same to its Raft log before
//! openraft opens it: it appends one membership entry whose only voter is this member, under a
//! new term that this member is recorded as having led. openraft takes a membership entry as
//! effective as soon as it is in the log, so the member starts as the sole voter, elects
//! itself at once (see `start_tuned`), and its first leader entry commits the whole log: every
//! entry already on this member's disk is kept and applied, so the store keeps its keys and
//! revisions. (etcd drops the entries past its last persisted commit index; minietcd keeps
//! them, since it persists the commit index lazily and may have acknowledged them.)
//!
//! Example: a log ending at index 41 of term 3, led by member b, among members {a, b, c},
//! forced on a: entry 42, term 4, led by a, holds membership {a}; the vote is a's, term 4,
//! committed. On start a elects itself for term 5 and commits 42 with its blank entry 43.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::vote::{RaftLeaderId, RaftLeaderIdExt};
use openraft::{EntryPayload, StorageHelper};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{Entry, LogId, Membership, NodeId, TypeConfig, Vote};
use super::RaftError;

/// Rewrites this member's log so that it is the only voter of its cluster. Returns the
/// membership entry appended, or `None` when there is nothing to rewrite (no Raft state
/// yet: a first start forms its cluster from the flags, as etcd ignores the flag then).
pub async fn rewrite(
    log: &mut LogStore,
    sm: &mut StateMachine,
    me: NodeId,
) -> Result<Option<LogId>, RaftError> {
    let storage = |e: &dyn std::fmt::Display| RaftError::Storage(format!("force new cluster: {e}"));
    let effective = StorageHelper::new(log, sm)
        .get_membership()
        .await
        .map_err(|e| storage(&e))?
        .effective()
        .membership()
        .clone();
    if effective.nodes().next().is_none() {
        tracing::info!("no cluster membership on disk yet; --force-new-cluster has nothing to do");
        return Ok(None);
    }
    let Some(node) = effective.get_node(&me).cloned() else {
        return Err(RaftError::Storage(format!(
            "force new cluster: member {me:x} is not in its own cluster's membership"
        )));
    };
    let state = log.get_log_state().await.map_err(|e| storage(&e))?;
    let vote = log.read_vote().await.map_err(|e| storage(&e))?;
    let last_term = state.last_log_id.map_or(0, |l| l.leader_id.term());
    let vote_term = vote.as_ref().map_or(0, |v| v.leader_id().term());
    let term = last_term.max(vote_term) + 1;
    let index = state.last_log_id.map_or(0, |l| l.index + 1);
    let membership = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, node)]))
        .map_err(|e| storage(&e))?;
    let log_id = LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, me),
        index,
    );
    let entry = Entry {
        log_id,
        payload: EntryPayload::Membership(membership),
    };
    // The vote first: a log entry of a term the vote has not reached would be an entry no
    // leader could have written.
    log.save_vote(&Vote::new_committed(term, me))
        .await
        .map_err(|e| storage(&e))?;
    let (tx, rx) = TypeConfig::oneshot();
    log.append([entry], IOFlushed::signal(tx))
        .await
        .map_err(|e| storage(&e))?;
    match rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(storage(&e)),
        Err(e) => return Err(storage(&e)),
    }
    tracing::warn!(
        member = %format!("{me:x}"),
        removed = ?effective
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, _)| format!("{id:x}"))
            .collect::<Vec<_>>(),
        log_id = %log_id,
        "forcing a new one-member cluster from this member's data"
    );
    Ok(Some(log_id))
}
