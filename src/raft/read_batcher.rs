//! Shared read index rounds on the leader.
//!
//! A linearizable read needs the leader to confirm its leadership with a quorum (one
//! heartbeat round) and then the state machine to reach the read index. Doing that per read
//! costs one round per Range; the [`ReadIndexBatcher`] serves every read queued while a round
//! runs by the NEXT round: a round that started before a read arrived could miss a write
//! acknowledged just before the read, so reads only ever join a round that starts after them
//! (etcd's read loop batches its ReadIndex requests the same way). The wait for the state
//! machine runs apart from the rounds, so the next round starts at once.
//!
//! Lease renewals come in by the thousand and read little of the store: their rounds
//! ([`ReadIndexBatcher::ensure_linearizable_by_lease`]) confirm the leadership by openraft's
//! leader lease when it holds (a quorum acknowledged this leader within the lease, and no voter
//! grants another candidate its vote before that lease ends), which needs no message to the
//! followers, and by a quorum when it does not; then, like every read, they wait for the
//! state machine to apply what was committed (a new leader may not have applied a grant or
//! a revoke committed under the old one yet).

use crate::raft::RaftHandle;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::metrics::WaitError;
use openraft::ReadPolicy;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::raft::types::TypeConfig;

/// Reads waiting for a round; when full, callers wait to enqueue (backpressure).
pub const READ_QUEUE_CAPACITY: usize = 4096;
/// Most reads answered by one round; a full round leaves the rest for the next one.
pub const MAX_READS_PER_ROUND: usize = 1024;

/// What a read index round answers: openraft's own outcome of `ensure_linearizable`.
pub type ReadReply = Result<(), RaftError<TypeConfig, LinearizableReadError<TypeConfig>>>;

/// Queues linearizable reads for shared read index rounds. Cheap to clone: clones share one
/// queue and one task, which ends once every clone is dropped.
#[derive(Clone)]
pub struct ReadIndexBatcher {
    /// Where each waiting read gets its answer.
    queue: mpsc::Sender<oneshot::Sender<ReadReply>>,
    /// Where each waiting leadership check gets its answer.
    leadership: mpsc::Sender<oneshot::Sender<ReadReply>>,
}

impl ReadIndexBatcher {
    /// Starts the round task for `raft` (needs a tokio runtime).
    pub fn start(raft: RaftHandle) -> ReadIndexBatcher {
        let (queue, rx) = mpsc::channel(READ_QUEUE_CAPACITY);
        let (leadership, leadership_rx) = mpsc::channel(READ_QUEUE_CAPACITY);
        tokio::spawn(
            run(raft.clone(), leadership_rx, Confirm::LeaseFirst)
                .instrument(tracing::debug_span!("lease_read_batcher")),
        );
        tokio::spawn(
            run(raft, rx, Confirm::Quorum).instrument(tracing::debug_span!("read_index_batcher")),
        );
        ReadIndexBatcher { queue, leadership }
    }

    /// [`Self::ensure_linearizable`], with the leadership confirmed by the leader lease when
    /// it holds (by a quorum otherwise): for lease renewals, which move the leader's clock and
    /// read little of the store (whether the lease exists), and come in by the thousand.
    pub async fn ensure_linearizable_by_lease(&self) -> ReadReply {
        let (tx, rx) = oneshot::channel();
        self.leadership.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Returns once a local read is linearizable: leadership was confirmed by a round that
    /// started after this call and the state machine applied that round's read index.
    pub async fn ensure_linearizable(&self) -> ReadReply {
        let (tx, rx) = oneshot::channel();
        self.queue.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> RaftError<TypeConfig, LinearizableReadError<TypeConfig>> {
    RaftError::Fatal(openraft::error::Fatal::Stopped)
}

/// Takes every check waiting when the previous round ended.
fn gather(
    first: oneshot::Sender<ReadReply>,
    rx: &mut mpsc::Receiver<oneshot::Sender<ReadReply>>,
) -> Vec<oneshot::Sender<ReadReply>> {
    let mut waiting = vec![first];
    while waiting.len() < MAX_READS_PER_ROUND {
        let Ok(next) = rx.try_recv() else { break };
        waiting.push(next);
    }
    waiting
}

/// How a round confirms this member's leadership.
#[derive(Clone, Copy, Debug)]
enum Confirm {
    /// By a quorum, always.
    Quorum,
    /// By the leader lease when it holds, else by a quorum.
    LeaseFirst,
}

async fn run(
    raft: RaftHandle,
    mut rx: mpsc::Receiver<oneshot::Sender<ReadReply>>,
    confirm: Confirm,
) {
    while let Some(first) = rx.recv().await {
        // Every read in `waiting` arrived before this round starts.
        let waiting = gather(first, &mut rx);
        let read = match confirm {
            Confirm::Quorum => raft.get_read_log_id(ReadPolicy::ReadIndex).await,
            Confirm::LeaseFirst => match raft.get_read_log_id(ReadPolicy::LeaseRead).await {
                // The lease ran out (no quorum acknowledgement within it): ask a quorum.
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                    raft.get_read_log_id(ReadPolicy::ReadIndex).await
                }
                other => other,
            },
        };
        let (read_index, applied) = match read {
            Ok((read_log_id, applied)) => (read_log_id.index(), applied.map(|a| a.index())),
            Err(e) => {
                for tx in waiting {
                    let _ = tx.send(Err(e.clone()));
                }
                continue;
            }
        };
        tracing::trace!(
            reads = waiting.len(),
            ?confirm,
            read_index,
            "read index round"
        );
        if applied.is_some_and(|a| a >= read_index) {
            for tx in waiting {
                let _ = tx.send(Ok(()));
            }
            continue;
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let reply = match raft
                .wait(None)
                .applied_index_at_least(Some(read_index), "read index")
                .await
            {
                Ok(_) => Ok(()),
                Err(WaitError::Timeout(..) | WaitError::ShuttingDown) => Err(stopped()),
            };
            for tx in waiting {
                // A read that stopped waiting needs no answer.
                let _ = tx.send(reply.clone());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::pb::etcdserverpb::{PutRequest, RangeRequest};
    use crate::pb::minietcdpb::internal_request::Request;
    use crate::pb::minietcdpb::InternalRequest;
    use crate::raft::types::{MemberNode, NoopObserver};
    use crate::raft::{start, RaftSettings};
    use crate::storage::MvccStore;

    /// Writers and readers at once on one member: every read that starts after a write was
    /// acknowledged sees it, and all reads are answered although they share rounds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_see_every_acknowledged_write() {
        const READERS: usize = 20;
        const ROUNDS: usize = 20;
        let (_dir, node, store) = crate::raft::batcher::tests::one_member().await;
        let mut tasks = tokio::task::JoinSet::new();
        for r in 0..READERS {
            let proposer = node.proposer();
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0..ROUNDS {
                    let key = format!("r{r}");
                    let put = InternalRequest {
                        caller: None,
                        request: Some(Request::Put(PutRequest {
                            key: key.clone().into_bytes(),
                            value: i.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    };
                    let acked = proposer.write(put).await.unwrap().revision;
                    proposer.read_index().await.unwrap();
                    assert!(store.current_revision() >= acked);
                    let got = store
                        .range(&RangeRequest {
                            key: key.into_bytes(),
                            ..Default::default()
                        })
                        .unwrap();
                    assert_eq!(got.kvs[0].value, i.to_string().into_bytes());
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        node.shutdown().await;
    }

    /// Once Raft has stopped, a read fails instead of hanging.
    #[tokio::test]
    async fn a_read_after_raft_stopped_fails() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = Arc::new(MvccStore::open(&db).unwrap());
        let members = BTreeMap::from([(1, MemberNode::default())]);
        let node = start(
            RaftSettings::new(1, members, dir.path().join("wal")),
            db,
            store,
            Arc::new(NoopObserver),
        )
        .await
        .unwrap();
        node.shutdown().await;
        let reads = ReadIndexBatcher::start(node.raft());
        assert!(matches!(
            reads.ensure_linearizable().await,
            Err(RaftError::Fatal(_))
        ));
        assert!(matches!(
            reads.ensure_linearizable_by_lease().await,
            Err(RaftError::Fatal(_))
        ));
    }

    /// The leader confirms its leadership to many concurrent checks, sharing rounds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leader_confirms_its_leadership_to_concurrent_checks() {
        let (_dir, node, _store) = crate::raft::batcher::tests::one_member().await;
        let reads = node.proposer().reads();
        let mut checks = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let reads = reads.clone();
            checks.spawn(async move { reads.ensure_linearizable_by_lease().await });
        }
        while let Some(r) = checks.join_next().await {
            assert!(r.unwrap().is_ok());
        }
        node.shutdown().await;
    }
}
