//! Three Raft members in one process, each with its own sled database, MVCC store and peer
//! gRPC server on a loopback port: election, writes through the leader and through a
//! follower, follower read index, leader loss, and a snapshot streamed to a lagging member.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;
use crate::pb::etcdserverpb::{PutRequest, RangeRequest};
use crate::pb::minietcdpb::internal_request::Request;
use crate::pb::minietcdpb::{InternalRequest, InternalResponse};
use crate::raft::types::NoopObserver;

const HEARTBEAT_MS: u64 = 50;
const ELECTION_MS: u64 = 300;
/// How long a test waits for a condition before failing.
const WAIT: Duration = Duration::from_secs(20);

struct Member {
    id: NodeId,
    /// Where the member's peer server listens (to restart it on the same URL).
    addr: SocketAddr,
    node: RaftNode,
    store: Arc<MvccStore>,
    stop_server: Option<oneshot::Sender<()>>,
    dir: tempfile::TempDir,
}

impl Member {
    async fn stop(&mut self) {
        self.node.shutdown().await;
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the member and starts it again on the same data and peer URL.
    async fn restart(mut self, settings: RaftSettings) -> Member {
        self.stop().await;
        let Member {
            dir,
            addr,
            node,
            store,
            ..
        } = self;
        // Every handle on the old database must go before it can be opened again.
        drop((node, store));
        // The old server lets go of the port once its accept loop has stopped.
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "port still bound: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        start_in(dir, settings, RaftTuning::default(), listener).await
    }

    /// A linearizable read on this member sees every key in `keys`.
    async fn proposer_read_index_sees(&self, keys: &[&str]) {
        self.node.proposer().read_index().await.unwrap();
        for k in keys {
            assert!(self.get(k).is_some(), "{k} missing after read index");
        }
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let resp = self
            .store
            .range(&RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .unwrap();
        resp.kvs.first().map(|kv| kv.value.clone())
    }
}

fn put(key: &str, value: &str) -> InternalRequest {
    InternalRequest {
        caller: None,
        request: Some(Request::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// Reserves loopback ports for `n` members; the listeners are handed to the members that
/// start now, and dropped (freeing the port) for those that start later.
async fn listeners(n: usize) -> (Vec<TcpListener>, BTreeMap<NodeId, MemberNode>) {
    let mut ls = Vec::new();
    let mut members = BTreeMap::new();
    for i in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = l.local_addr().unwrap();
        members.insert(
            i as NodeId + 1,
            MemberNode {
                name: format!("m{}", i + 1),
                peer_urls: vec![format!("http://{addr}")],
                client_urls: vec![],
            },
        );
        ls.push(l);
    }
    (ls, members)
}

fn settings(id: NodeId, members: &BTreeMap<NodeId, MemberNode>) -> RaftSettings {
    // The wal dir is set by `start_in`, next to the member's database.
    let mut s = RaftSettings::new(id, members.clone(), std::path::PathBuf::new());
    s.heartbeat_interval_ms = HEARTBEAT_MS;
    s.election_timeout_ms = ELECTION_MS;
    s
}

async fn start_member(settings: RaftSettings, listener: TcpListener) -> Member {
    start_tuned_member(settings, RaftTuning::default(), listener).await
}

async fn start_tuned_member(
    settings: RaftSettings,
    tuning: RaftTuning,
    listener: TcpListener,
) -> Member {
    start_in(tempfile::tempdir().unwrap(), settings, tuning, listener).await
}

/// Opens sled in `dir`, waiting for a previous instance's storage tasks to let go of it.
async fn open_db(dir: &std::path::Path) -> sled::Db {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "database still locked: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_in(
    dir: tempfile::TempDir,
    mut settings: RaftSettings,
    mut tuning: RaftTuning,
    listener: TcpListener,
) -> Member {
    settings.wal_dir = dir.path().join("wal");
    settings.snapshot_dir = dir.path().join("snap");
    tuning.wal.segment_bytes = 1 << 20;
    let db = open_db(&dir.path().join("db")).await;
    let store = Arc::new(MvccStore::open(&db).unwrap());
    let id = settings.node_id;
    let addr = listener.local_addr().unwrap();
    let node = start_tuned(settings, tuning, db, store.clone(), Arc::new(NoopObserver))
        .await
        .unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let svc = node.peer_service();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = rx.await;
                },
            )
            .await;
    });
    Member {
        id,
        addr,
        node,
        store,
        stop_server: Some(tx),
        dir,
    }
}

/// Waits until every member in `alive` names the same leader, among `alive`.
async fn agreed_leader(members: &[Member], alive: &[usize]) -> NodeId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let leaders: Vec<Option<NodeId>> = alive
            .iter()
            .map(|&i| {
                members[i]
                    .node
                    .raft()
                    .metrics()
                    .borrow_watched()
                    .current_leader
            })
            .collect();
        if let Some(Some(l)) = leaders.first() {
            let l = *l;
            if leaders.iter().all(|x| *x == Some(l)) && alive.iter().any(|&i| members[i].id == l) {
                return l;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs to the test output when RUST_LOG asks for it.
fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// Writes `req` through `member`, again (up to three times) while the outcome is unknown
/// because the leader was just lost: safe in these tests, whose old leader's Raft stopped.
async fn write_retrying_unknown(
    member: &Member,
    req: InternalRequest,
) -> Result<InternalResponse, ProposeError> {
    let mut r = member.node.proposer().write(req.clone()).await;
    for _ in 0..3 {
        if r != Err(ProposeError::LeaderChanged) && r != Err(ProposeError::Timeout) {
            break;
        }
        r = member.node.proposer().write(req.clone()).await;
    }
    r
}

fn index_of(members: &[Member], id: NodeId) -> usize {
    members.iter().position(|m| m.id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_write_forward_read_and_survive_leader_loss() {
    init_log();
    let (ls, members_map) = listeners(3).await;
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        members.push(start_member(settings(i as NodeId + 1, &members_map), l).await);
    }
    let leader = agreed_leader(&members, &[0, 1, 2]).await;
    let li = index_of(&members, leader);
    let fi = (li + 1) % 3;

    // Through the leader.
    let r = members[li]
        .node
        .proposer()
        .write(put("a", "1"))
        .await
        .unwrap();
    assert_eq!(r.revision, 2);
    // Through a follower (forwarded to the leader).
    let r = members[fi]
        .node
        .proposer()
        .write(put("b", "2"))
        .await
        .unwrap();
    assert_eq!(r.revision, 3);
    // A linearizable read on the other follower sees both writes once read_index returns.
    let oi = (li + 2) % 3;
    members[oi].node.proposer().read_index().await.unwrap();
    assert_eq!(members[oi].get("a"), Some(b"1".to_vec()));
    assert_eq!(members[oi].get("b"), Some(b"2".to_vec()));
    members[li].node.proposer().read_index().await.unwrap();

    // Lose the leader; a surviving member elects a new one and the next write commits.
    members[li].stop().await;
    // The stopped leader's server may still be closing its connections; a write racing
    // that close is answered "leader changed" (outcome unknown), which etcd clients retry.
    // The old leader's Raft had stopped, so the retried write is applied exactly once.
    // When the follower has not yet noticed the leader is gone, the same race is answered
    // "timeout" (also outcome unknown).
    let r = write_retrying_unknown(&members[fi], put("c", "3")).await;
    assert_eq!(r.unwrap().revision, 4);
    let survivors = [fi, oi];
    let new_leader = agreed_leader(&members, &survivors).await;
    assert_ne!(new_leader, leader);
    members[oi].node.proposer().read_index().await.unwrap();
    assert_eq!(members[oi].get("c"), Some(b"3".to_vec()));
    wait_for("c on every survivor", || {
        survivors.iter().all(|&i| members[i].get("c").is_some())
    })
    .await;
    for i in survivors {
        members[i].stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_catches_up_from_a_streamed_snapshot() {
    init_log();
    let (mut ls, members_map) = listeners(3).await;
    let late_listener_addr = ls.pop().unwrap().local_addr().unwrap();
    let tweak = |id| {
        let mut s = settings(id, &members_map);
        s.snapshot_count = 10;
        s
    };
    // Force many chunks: the snapshot of 60 keys is a few KiB.
    let tuning = RaftTuning {
        snapshot_catchup_entries: 0,
        snapshot_chunk_bytes: 64,
        ..Default::default()
    };
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        members.push(start_tuned_member(tweak(i as NodeId + 1), tuning.clone(), l).await);
    }
    let leader = agreed_leader(&members, &[0, 1]).await;
    let li = index_of(&members, leader);
    for i in 0..60 {
        members[li]
            .node
            .proposer()
            .write(put(&format!("k{i:02}"), &format!("v{i}")))
            .await
            .unwrap();
    }
    // The leader's log no longer reaches back to the start: member 3 can only catch up from
    // a snapshot.
    wait_for("leader purged its log", || {
        let m = members[li].node.raft().metrics().borrow_watched().clone();
        m.purged.is_some_and(|p| p.index > 10)
    })
    .await;

    let listener = TcpListener::bind(late_listener_addr).await.unwrap();
    members.push(start_tuned_member(tweak(3), tuning, listener).await);
    let leader_applied = members[li]
        .node
        .raft()
        .metrics()
        .borrow_watched()
        .last_applied;
    wait_for("member 3 caught up", || {
        members[2]
            .node
            .raft()
            .metrics()
            .borrow_watched()
            .last_applied
            >= leader_applied
    })
    .await;
    let m3 = members[2].node.raft().metrics().borrow_watched().clone();
    assert!(
        m3.snapshot.is_some(),
        "member 3 installed a snapshot: {m3:?}"
    );
    for i in 0..60 {
        assert_eq!(
            members[2].get(&format!("k{i:02}")),
            Some(format!("v{i}").into_bytes())
        );
    }
    // And it keeps up from the log afterwards, forwarding its own writes.
    let r = members[2]
        .node
        .proposer()
        .write(put("after", "x"))
        .await
        .unwrap();
    assert_eq!(r.revision, 62);
    for m in &mut members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_leads_at_once_and_again_after_restart() {
    init_log();
    let (mut ls, members_map) = listeners(1).await;
    let listener = ls.pop().unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A long election timeout: leading within a fraction of it proves no election wait.
    let mut s = RaftSettings::new(1, members_map.clone(), dir.path().join("wal"));
    s.election_timeout_ms = 5000;
    s.heartbeat_interval_ms = 500;
    let quick = Duration::from_millis(2500);
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = Arc::new(MvccStore::open(&db).unwrap());
        let node = start(s.clone(), db, store, Arc::new(NoopObserver))
            .await
            .unwrap();
        node.raft()
            .wait(Some(quick))
            .current_leader(1, "fresh single member leads")
            .await
            .unwrap();
        let r = node.proposer().write(put("k", "v")).await.unwrap();
        assert_eq!(r.revision, 2);
        node.shutdown().await;
    }
    drop(listener);
    // Restart on the same data: the member is initialized already and leads again at once.
    // openraft's storage tasks let go of the database shortly after shutdown returns.
    let db = open_db(&dir.path().join("db")).await;
    let store = Arc::new(MvccStore::open(&db).unwrap());
    let node = start(s, db, store.clone(), Arc::new(NoopObserver))
        .await
        .unwrap();
    node.raft()
        .wait(Some(quick))
        .current_leader(1, "restarted single member leads")
        .await
        .unwrap();
    node.proposer().read_index().await.unwrap();
    let resp = store
        .range(&RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(resp.kvs.len(), 1, "the write survived the restart");
    let r = node.proposer().write(put("k", "w")).await.unwrap();
    assert_eq!(r.revision, 3);
    node.shutdown().await;
    let _ = addr;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_requests_fail_with_no_leader_in_bounded_time() {
    init_log();
    let (mut ls, members_map) = listeners(3).await;
    // Only member 1 runs; 2 and 3 never start, so no leader can be elected.
    ls.truncate(1);
    let member = start_member(settings(1, &members_map), ls.pop().unwrap()).await;
    let budget = Duration::from_millis(ELECTION_MS * u64::from(LEADER_WAIT_ELECTIONS));
    let t0 = std::time::Instant::now();
    assert_eq!(
        member.node.proposer().write(put("k", "v")).await,
        Err(ProposeError::NoLeader)
    );
    assert_eq!(
        member.node.proposer().read_index().await,
        Err(ProposeError::NoLeader)
    );
    let took = t0.elapsed();
    assert!(took >= budget, "gave up before the leader wait: {took:?}");
    assert!(
        took < budget * 2 + Duration::from_secs(1),
        "waited too long: {took:?}"
    );
    assert_eq!(member.get("k"), None);
}

/// The pipelined append stream carries requests to a member and its answers back, in order;
/// a stale leader's request is answered with the member's newer vote and ends the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_stream_answers_in_order_and_stops_a_stale_leader() {
    use futures::StreamExt;
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    use openraft::raft::{AppendEntriesRequest, StreamAppendError};
    init_log();
    let (mut ls, members_map) = listeners(1).await;
    let member = start_member(settings(1, &members_map), ls.pop().unwrap()).await;
    member
        .node
        .raft()
        .wait(Some(WAIT))
        .current_leader(1, "single member leads")
        .await
        .unwrap();
    let mut factory = PeerNetworkFactory::new(9, Arc::new(PeerChannels::default()), 1024);
    let mut net = factory.new_client(1, &members_map[&1]).await;
    let stale = || AppendEntriesRequest::<TypeConfig> {
        vote: crate::raft::types::Vote::new_committed(0, 9),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let input = futures::stream::iter([stale(), stale()]);
    let answers: Vec<_> = net
        .stream_append(input, RPCOption::new(Duration::from_secs(5)))
        .await
        .unwrap()
        .collect()
        .await;
    let my_vote = member.node.raft().metrics().borrow_watched().vote;
    assert_eq!(
        answers.len(),
        1,
        "the stream ends at the first refusal: {answers:?}"
    );
    match &answers[0] {
        Ok(Err(StreamAppendError::HigherVote(v))) => assert_eq!(*v, my_vote),
        other => panic!("expected HigherVote, got {other:?}"),
    }
    assert!(my_vote.leader_id().term >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_from_its_own_log() {
    init_log();
    let (ls, members_map) = listeners(3).await;
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        members.push(start_member(settings(i as NodeId + 1, &members_map), l).await);
    }
    let leader = agreed_leader(&members, &[0, 1, 2]).await;
    let li = index_of(&members, leader);
    let fi = (li + 1) % 3;
    for i in 0..5 {
        members[li]
            .node
            .proposer()
            .write(put(&format!("before{i}"), "x"))
            .await
            .unwrap();
    }
    wait_for("follower applied the first writes", || {
        members[fi].get("before4").is_some()
    })
    .await;

    let follower = members.remove(fi);
    let follower_settings = {
        let mut s = settings(follower.id, &members_map);
        // Initialized already: the flag must be ignored on restart.
        s.initialize = true;
        s
    };
    follower.node.shutdown().await;
    let li = index_of(&members, leader);
    for i in 0..5 {
        members[li]
            .node
            .proposer()
            .write(put(&format!("after{i}"), "y"))
            .await
            .unwrap();
    }
    let follower = follower.restart(follower_settings).await;
    assert_eq!(
        follower.get("before4"),
        Some(b"x".to_vec()),
        "applied state survived the restart"
    );
    follower
        .proposer_read_index_sees(&["after0", "after4"])
        .await;
    let r = follower
        .node
        .proposer()
        .write(put("from-follower", "z"))
        .await
        .unwrap();
    assert_eq!(r.revision, 12);
    members.push(follower);
    for m in &mut members {
        m.stop().await;
    }
}

/// Concurrent writers on every member (the followers' writes are forwarded and join the
/// leader's entries): each writer's answers come in its own order, revisions are unique and
/// dense across the cluster, and every member ends with the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_every_member_share_entries() {
    const WRITERS_PER_MEMBER: usize = 10;
    const WRITES: usize = 20;
    init_log();
    let (ls, members_map) = listeners(3).await;
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        members.push(start_member(settings(i as NodeId + 1, &members_map), l).await);
    }
    agreed_leader(&members, &[0, 1, 2]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for (m, member) in members.iter().enumerate() {
        for w in 0..WRITERS_PER_MEMBER {
            let proposer = member.node.proposer();
            tasks.spawn(async move {
                let mut revs = Vec::with_capacity(WRITES);
                for i in 0..WRITES {
                    let r = proposer
                        .write(put(&format!("m{m}w{w}"), &i.to_string()))
                        .await
                        .unwrap();
                    revs.push(r.revision);
                }
                assert!(revs.windows(2).all(|r| r[0] < r[1]), "{revs:?}");
                revs
            });
        }
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all.sort_unstable();
    let total = (3 * WRITERS_PER_MEMBER * WRITES) as i64;
    assert_eq!(all, (2..2 + total).collect::<Vec<_>>());
    let last = format!("{}", WRITES - 1);
    wait_for("every write on every member", || {
        members.iter().all(|mem| {
            (0..3).all(|m| {
                (0..WRITERS_PER_MEMBER)
                    .all(|w| mem.get(&format!("m{m}w{w}")) == Some(last.clone().into_bytes()))
            })
        })
    })
    .await;
    for m in &mut members {
        m.stop().await;
    }
}

/// With Pre-Vote (`--pre-vote`) a cluster still elects, commits, and replaces a lost leader;
/// a member that only failed a Pre-Vote never raised its term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_vote_cluster_elects_commits_and_fails_over() {
    init_log();
    let (ls, members_map) = listeners(3).await;
    let mut members = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let mut s = settings(i as NodeId + 1, &members_map);
        s.pre_vote = true;
        members.push(start_member(s, l).await);
    }
    assert!(members
        .iter()
        .all(|m| m.node.raft().config().enable_pre_vote == Some(true)));
    let leader = agreed_leader(&members, &[0, 1, 2]).await;
    let li = index_of(&members, leader);
    let fi = (li + 1) % 3;
    let oi = (li + 2) % 3;
    let term = members[fi]
        .node
        .raft()
        .metrics()
        .borrow_watched()
        .current_term;
    let r = members[fi]
        .node
        .proposer()
        .write(put("a", "1"))
        .await
        .unwrap();
    assert_eq!(r.revision, 2);
    members[li].stop().await;
    let new_leader = agreed_leader(&members, &[fi, oi]).await;
    assert_ne!(new_leader, leader);
    let new_term = members[fi]
        .node
        .raft()
        .metrics()
        .borrow_watched()
        .current_term;
    assert!(new_term > term, "a real election followed the Pre-Vote");
    let r = write_retrying_unknown(&members[fi], put("b", "2")).await;
    assert_eq!(r.unwrap().revision, 3);
    for i in [fi, oi] {
        members[i].stop().await;
    }
}
