//! Group commit on the leader: concurrent writes share one Raft entry.
//!
//! openraft appends and flushes every proposed entry on its own, one after the other, so a
//! leader that proposed each write separately would pay one log flush per write (measured:
//! about 1,500 writes/s on three members). The [`WriteBatcher`] instead queues the writes of
//! every caller (local clients through the proposer, followers through the peer Forward
//! RPC) and one task turns everything queued into ONE entry, up to [`MAX_WRITES_PER_ENTRY`]
//! writes and [`MAX_ENTRY_BYTES`]. While up to [`MAX_ENTRIES_IN_FLIGHT`] entries are being
//! committed, the next writes accumulate, so the log is never idle and a busy leader flushes
//! once per entry, not per write. An idle batcher proposes a lone write at once: there is no
//! timer, so a single client sees no added latency.
//!
//! Measured with minietcd-bench put (100 clients on 10 connections, 256-byte values, release
//! build, 2-core VM, one run each, etcd 3.4.23 in the same run): one member 2.3k writes/s
//! before, 5.8k after (etcd 12.5k); three members 1.7k before, 2.6k after (etcd 7.1k). With
//! three members the leader's entries hold about 30 writes on average but take 5 to 10 ms
//! each: openraft 0.9 awaits every log flush inside its core before it replicates or commits
//! anything else. (Those figures predate the Raft log's own WAL and openraft 0.10, see
//! `docs/benchmarks.md`.) openraft 0.10 submits one entry per proposal (it merges queued
//! proposals into one log write, but each stays an entry that is encoded, replicated and
//! applied on its own), so grouping writes into one entry still saves work per write.
//!
//! Example, with 2 entries in flight (the default): writes a, b, c arrive together; a goes alone as
//! entry 7 (the batcher was idle), b and c are gathered into entry 8 while 7 is flushing;
//! d..k arrive while 7 and 8 are in flight and wait for a slot; when 7 commits they all go
//! as entry 9. The state machine applies an entry's writes in order, each its own revision,
//! and the answers are handed back to each caller.

use std::sync::Arc;

use crate::raft::RaftHandle;
use openraft::error::{ClientWriteError, ForwardToLeader};
use openraft::impls::ProgressResponder;
use prost::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use crate::pb::minietcdpb::{InternalRequest, InternalResponse};
use crate::raft::types::{Command, TypeConfig};

/// Most writes grouped into one entry: bounds an entry's apply time (and so the latency of
/// its first write) and its size on the wire.
pub const MAX_WRITES_PER_ENTRY: usize = 256;
/// Most encoded request bytes grouped into one entry; a single larger write (up to
/// `--max-request-bytes`) still goes, alone.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Entries proposed and not yet applied at once. With openraft 0.9, which flushed entries
/// one after the other, every entry in flight beyond the one being flushed only split the
/// waiting writes into smaller entries. Measured with 100 clients (release, 2 cores, writes/s for
/// 1, 2, 4, 8 in flight): one member 8.1k, 7.0k, 4.3k, 4.7k; three members 2.1k, 2.7k,
/// 2.4k. Two keeps the log busy while an entry replicates and applies. Measured again on
/// the WAL (three members, two runs each, other builds running, so noisy): 8.5-8.9k,
/// 7.7-8.5k, 6.8-7.0k, 3.9-4.1k; one and two are within noise, more only splits entries.
/// With openraft 0.10 (pipelined appends; three members, 100 clients, two alternating runs,
/// noisy machine) 2, 8, 32 in flight: 6.8k/6.3k, 5.9k/6.9k, 5.7k/5.3k writes/s: two stays.
pub const MAX_ENTRIES_IN_FLIGHT: usize = 2;
/// Writes waiting for an entry; when full, callers wait to enqueue (backpressure).
pub const WRITE_QUEUE_CAPACITY: usize = 4096;

/// Why a queued write was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchWriteError {
    /// This member is not the leader (or stopped being it before the entry was committed):
    /// the write did not take effect here.
    #[error("not leader")]
    NotLeader(ForwardToLeader<TypeConfig>),
    /// openraft refused the entry as a membership change (cannot happen for a normal entry).
    #[error("membership change error: {0}")]
    Membership(String),
    /// Raft stopped or failed; the outcome of the write is unknown.
    #[error("fatal: {0}")]
    Fatal(String),
    /// The entry was appended, then leadership moved before it committed: it may or may not
    /// take effect under the new leader (outcome unknown, as etcd's "leader changed").
    #[error("leader changed: {0}")]
    Discarded(String),
}

/// The answer to one queued write.
type Reply = Result<InternalResponse, BatchWriteError>;

/// A queued write and where its answer goes.
struct Pending {
    req: InternalRequest,
    reply: oneshot::Sender<Reply>,
}

/// Queues writes for the leader's group commit. Cheap to clone: clones share one queue and
/// one batching task, which ends once every clone is dropped.
#[derive(Clone)]
pub struct WriteBatcher {
    /// Writes waiting for the batching task.
    queue: mpsc::Sender<Pending>,
    /// Entries proposed and not yet answered (shared with the batching task).
    in_flight: Arc<Semaphore>,
    /// Where a lone write is proposed directly.
    raft: RaftHandle,
}

impl WriteBatcher {
    /// Starts the batching task for `raft` (needs a tokio runtime).
    pub fn start(raft: RaftHandle) -> WriteBatcher {
        let (queue, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let in_flight = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
        tokio::spawn(
            run(raft.clone(), rx, in_flight.clone())
                .instrument(tracing::debug_span!("write_batcher")),
        );
        WriteBatcher {
            queue,
            in_flight,
            raft,
        }
    }

    /// Proposes `req` in the next entry and returns what the state machine answered for it.
    /// If the caller stops waiting before the entry is formed, the write is dropped.
    pub async fn write(&self, req: InternalRequest) -> Reply {
        // Nothing queued and a slot free: nothing to group this write with, so it goes as an
        // entry of its own from the caller's task, and its answer comes straight back to it
        // (no hand-off to the batching task and back, on a lone client's every write).
        if self.queue.capacity() == self.queue.max_capacity() {
            if let Ok(slot) = self.in_flight.clone().try_acquire_owned() {
                let _slot = slot;
                let (responder, committed) = ProgressResponder::<TypeConfig, _>::complete_only();
                self.raft
                    .client_write_ff(Command(vec![req]), Some(responder))
                    .await
                    .map_err(|fatal| BatchWriteError::Fatal(fatal.to_string()))?;
                let mut answers = entry_answers(committed.await)?;
                return match (answers.pop(), answers.is_empty()) {
                    (Some(answer), true) => Ok(answer),
                    _ => Err(miscounted()),
                };
            }
        }
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Pending { req, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> BatchWriteError {
    BatchWriteError::Fatal("write batcher stopped".to_string())
}

/// The batching task: gathers queued writes into entries, proposes them in queue order and
/// hands each entry's answers back from a task of its own.
async fn run(raft: RaftHandle, mut rx: mpsc::Receiver<Pending>, in_flight: Arc<Semaphore>) {
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for a slot before gathering: writes queued meanwhile join this entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.req.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES_PER_ENTRY {
            let Ok(next) = rx.try_recv() else { break };
            let len = next.req.encoded_len();
            if bytes + len > MAX_ENTRY_BYTES {
                carried = Some(next);
                break;
            }
            bytes += len;
            batch.push(next);
        }
        // A caller that gave up (deadline) was told the outcome is unknown: skip its write.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (requests, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.req, p.reply)).unzip();
        tracing::trace!(writes = requests.len(), bytes, "propose entry");
        let (responder, committed) = ProgressResponder::<TypeConfig, _>::complete_only();
        match raft
            .client_write_ff(Command(requests), Some(responder))
            .await
        {
            Err(fatal) => answer_all(replies, &BatchWriteError::Fatal(fatal.to_string())),
            Ok(()) => {
                tokio::spawn(async move {
                    let _slot = permit;
                    match entry_answers(committed.await) {
                        Err(e) => answer_all(replies, &e),
                        Ok(answers) => answer_each(replies, answers),
                    }
                });
            }
        }
    }
}

/// What an entry's responder delivered: the state machine's answers, one per write, or why
/// the entry was not applied here.
fn entry_answers<E>(
    committed: Result<
        Result<openraft::raft::ClientWriteResponse<TypeConfig>, ClientWriteError<TypeConfig>>,
        E,
    >,
) -> Result<Vec<InternalResponse>, BatchWriteError> {
    match committed {
        Err(_) => Err(stopped()),
        Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(BatchWriteError::NotLeader(f)),
        Ok(Err(ClientWriteError::ChangeMembershipError(e))) => {
            Err(BatchWriteError::Membership(e.to_string()))
        }
        Ok(Err(ClientWriteError::LogEntryDiscarded(e))) => {
            Err(BatchWriteError::Discarded(e.to_string()))
        }
        Ok(Err(e)) => Err(BatchWriteError::Fatal(e.to_string())),
        Ok(Ok(resp)) => Ok(resp.data.0),
    }
}

fn miscounted() -> BatchWriteError {
    BatchWriteError::Fatal("entry answered with the wrong number of responses".into())
}

fn answer_all(replies: Vec<oneshot::Sender<Reply>>, err: &BatchWriteError) {
    for reply in replies {
        // A caller that stopped waiting needs no answer.
        let _ = reply.send(Err(err.clone()));
    }
}

/// Hands the i-th answer of the entry to the i-th caller.
fn answer_each(replies: Vec<oneshot::Sender<Reply>>, responses: Vec<InternalResponse>) {
    if replies.len() != responses.len() {
        // The state machine answers every write of an entry; anything else is a bug, and
        // no caller may be handed another caller's answer.
        tracing::error!(
            writes = replies.len(),
            answers = responses.len(),
            "entry answered with the wrong number of responses"
        );
        answer_all(replies, &miscounted());
        return;
    }
    for (reply, response) in replies.into_iter().zip(responses) {
        let _ = reply.send(Ok(response));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::pb::etcdserverpb::PutRequest;
    use crate::pb::minietcdpb::internal_request::Request;
    use crate::pb::minietcdpb::internal_response::Response;
    use crate::raft::types::{MemberNode, NoopObserver};
    use crate::raft::{start, RaftNode, RaftSettings};
    use crate::storage::MvccStore;
    use openraft::async_runtime::watch::WatchReceiver;

    /// A one-member cluster, leading.
    pub(crate) async fn one_member() -> (tempfile::TempDir, RaftNode, Arc<MvccStore>) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = Arc::new(MvccStore::open(&db).unwrap());
        let members = BTreeMap::from([(1, MemberNode::default())]);
        let node = start(
            RaftSettings::new(1, members, dir.path().join("wal")),
            db,
            store.clone(),
            Arc::new(NoopObserver),
        )
        .await
        .unwrap();
        node.raft()
            .wait(Some(Duration::from_secs(20)))
            .current_leader(1, "leader")
            .await
            .unwrap();
        (dir, node, store)
    }

    fn put(key: &str, value: &str) -> InternalRequest {
        InternalRequest {
            caller: None,
            request: Some(Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                prev_kv: true,
                ..Default::default()
            })),
        }
    }

    /// Many writers at once: each answer is the writer's own (its prev_kv is the writer's
    /// previous value of its own key), each writer's revisions increase, all revisions are
    /// distinct and dense, and far fewer entries than writes were needed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_get_their_own_answers_with_dense_revisions() {
        const WRITERS: usize = 50;
        const WRITES: usize = 40;
        let (_dir, node, store) = one_member().await;
        let first_index = node
            .raft()
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0);
        let start_rev = store.current_revision();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let proposer = node.proposer();
            tasks.spawn(async move {
                let key = format!("w{w}");
                let mut revs = Vec::with_capacity(WRITES);
                for i in 0..WRITES {
                    let resp = proposer.write(put(&key, &i.to_string())).await.unwrap();
                    let Some(Response::Put(p)) = resp.response else {
                        panic!("not a put response: {resp:?}");
                    };
                    let prev = p.prev_kv.map(|kv| (kv.key, kv.value));
                    let want = (i > 0).then(|| (key.clone().into_bytes(), (i - 1).to_string()));
                    let want = want.map(|(k, v)| (k, v.into_bytes()));
                    assert_eq!(prev, want, "writer {w} write {i} got another answer");
                    assert_eq!(p.header.unwrap().revision, resp.revision);
                    revs.push(resp.revision);
                }
                assert!(revs.windows(2).all(|r| r[0] < r[1]), "writer {w}: {revs:?}");
                revs
            });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r.unwrap());
        }
        all.sort_unstable();
        let total = (WRITERS * WRITES) as i64;
        let want: Vec<i64> = (start_rev + 1..=start_rev + total).collect();
        assert_eq!(all, want, "revisions not unique and dense");
        assert_eq!(store.current_revision(), start_rev + total);
        let entries = node
            .raft()
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0)
            - first_index;
        assert!(
            entries < (WRITERS * WRITES / 4) as u64,
            "{entries} entries for {total} writes: no grouping"
        );
        node.shutdown().await;
    }

    /// Once Raft has stopped, a queued write fails (fatal) instead of hanging.
    #[tokio::test]
    async fn a_write_after_raft_stopped_fails() {
        let (_dir, node, _store) = one_member().await;
        node.shutdown().await;
        let batcher = WriteBatcher::start(node.raft());
        let err = batcher.write(put("k", "v")).await.unwrap_err();
        assert!(matches!(err, BatchWriteError::Fatal(_)), "{err:?}");
    }

    /// An entry answered with the wrong number of responses answers nobody with another
    /// caller's response.
    #[tokio::test]
    async fn a_miscounted_answer_fails_every_caller() {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| oneshot::channel::<Reply>()).unzip();
        answer_each(txs, vec![InternalResponse::default(); 2]);
        for rx in rxs {
            assert!(matches!(rx.await.unwrap(), Err(BatchWriteError::Fatal(_))));
        }
    }
}
