//! The state machine against the real MVCC store: openraft's conformance suite (with the
//! real log store), writes reaching the observer, restart recovery and snapshot moves.

use std::sync::Mutex as StdMutex;

use openraft::storage::RaftStateMachine;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::EntryPayload;

use super::*;
use crate::pb::etcdserverpb::{PutRequest, RangeRequest};
use crate::pb::minietcdpb::internal_request::Request;
use crate::pb::minietcdpb::InternalRequest;
use crate::pb::mvccpb::Event;
use crate::raft::log_store::LogStore;
use crate::raft::types::{Command, Entry, MemberNode, Membership, NoopObserver};

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, node, index)
}

/// Records what the state machine reports.
#[derive(Default)]
struct Recorder {
    notified: StdMutex<Vec<(i64, Vec<Event>)>>,
    restored: StdMutex<Vec<i64>>,
}

impl ApplyObserver for Recorder {
    fn notify(&self, revision: i64, events: &[Event]) {
        self.notified
            .lock()
            .unwrap()
            .push((revision, events.to_vec()));
    }
    fn restored(&self, revision: i64) {
        self.restored.lock().unwrap().push(revision);
    }
}

fn open(dir: &std::path::Path, observer: Arc<dyn ApplyObserver>) -> (sled::Db, StateMachine) {
    // A previous instance's blocking apply tasks may hold the database for a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(dir.join("db")) {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("database still locked: {e}"),
        }
    };
    let store = Arc::new(MvccStore::open(&db).unwrap());
    let sm = StateMachine::open(&dir.join("snap"), store, observer).unwrap();
    (db, sm)
}

/// A snapshot's store bytes.
fn bytes(data: &SnapshotData) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    data.reader().unwrap().read_to_end(&mut out).unwrap();
    out
}

fn put(index: u64, key: &str, value: &str) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Command(vec![InternalRequest {
            caller: None,
            request: Some(Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })),
        }])),
    }
}

fn put_req(key: &str, value: &str) -> InternalRequest {
    InternalRequest {
        caller: None,
        request: Some(Request::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// One entry carrying several writes.
fn group(index: u64, writes: Vec<InternalRequest>) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Command(writes)),
    }
}

fn get(store: &MvccStore, key: &str) -> Option<Vec<u8>> {
    let resp = store
        .range(&RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .unwrap();
    resp.kvs.first().map(|kv| kv.value.clone())
}

/// Opens a state machine in `dir`, applies a membership entry and a put, and closes it.
async fn apply_one_put_and_close(dir: &std::path::Path) {
    let (db, mut sm) = open(dir, Arc::new(NoopObserver));
    sm.apply_entries(vec![membership_entry(1), put(2, "k", "v")])
        .await
        .unwrap();
    db.flush().unwrap();
}

/// What openraft gets to send from `sm`, its rows in a file as a receiver would hold them.
async fn to_send(sm: &mut StateMachine) -> Snapshot {
    let s = sm.get_current_snapshot().await.unwrap().unwrap();
    let snapshot = s
        .snapshot
        .into_file(&sm.shared.snapshots, &s.meta)
        .await
        .unwrap();
    Snapshot {
        meta: s.meta,
        snapshot,
    }
}

/// openraft's periodic snapshot of `sm`.
async fn build(sm: &mut StateMachine) -> Snapshot {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

fn membership_entry(index: u64) -> Entry {
    let nodes = BTreeMap::from([(1u64, MemberNode::default())]);
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Membership(
            Membership::new(vec![BTreeSet::from([1u64])], nodes).unwrap(),
        ),
    }
}

use std::collections::{BTreeMap, BTreeSet};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), openraft::StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = Arc::new(MvccStore::open(&db).unwrap());
        // The suite installs what a build returns into another state machine: builds write
        // their rows out here (the markers are tested below).
        let sm = StateMachine::open(&dir.path().join("snap"), store, Arc::new(NoopObserver))
            .unwrap()
            .with_builds_written_out();
        let log = LogStore::open(
            &dir.path().join("wal"),
            crate::raft::log_store::tests::small(),
        );
        Ok((dir, log.unwrap(), sm))
    }
}

#[tokio::test]
async fn conformance_suite_real_log_store_and_state_machine() {
    Suite::test_all(Builder).await.unwrap();
}

#[tokio::test]
async fn writes_notify_the_observer_and_answer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::default());
    let (_db, mut sm) = open(dir.path(), rec.clone());
    let replies = sm
        .apply_entries(vec![
            membership_entry(1),
            put(2, "a", "1"),
            put(3, "b", "2"),
            put(4, "a", "3"),
        ])
        .await
        .unwrap();
    assert_eq!(replies.len(), 4);
    assert!(replies[0].0.is_empty(), "a membership entry has no writes");
    let revs: Vec<i64> = replies
        .iter()
        .flat_map(|r| r.0.iter().map(|w| w.revision))
        .collect();
    assert_eq!(revs, [2, 3, 4]);
    let notified = rec.notified.lock().unwrap().clone();
    assert_eq!(
        notified.iter().map(|n| n.0).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(notified[2].1.len(), 1);
    assert_eq!(notified[2].1[0].kv.as_ref().unwrap().value, b"3");
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 4)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 1)));
}

#[tokio::test]
async fn applied_state_and_data_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    apply_one_put_and_close(dir.path()).await;
    let (_db, mut sm) = open(dir.path(), Arc::new(NoopObserver));
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 2)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 1)));
    assert_eq!(get(sm.store(), "k"), Some(b"v".to_vec()));
}

#[tokio::test]
async fn snapshot_moves_data_and_survives_restart() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_ldb, mut leader) = open(leader_dir.path(), Arc::new(NoopObserver));
    let mut entries = vec![membership_entry(1)];
    entries.extend((2..50).map(|i| put(i, &format!("k{i}"), &format!("v{i}"))));
    leader.apply_entries(entries).await.unwrap();
    let marker = build(&mut leader).await;
    assert_eq!(marker.meta.last_log_id, Some(log_id(1, 1, 49)));
    assert!(
        marker.snapshot.is_marker(),
        "the periodic snapshot copies no rows"
    );
    leader.serve_snapshots().start();
    let streamed = leader.get_current_snapshot().await.unwrap().unwrap();
    assert!(
        streamed.snapshot.is_streamed(),
        "the rows are read from the store as they are sent"
    );
    let snap = Snapshot {
        snapshot: streamed
            .snapshot
            .into_file(&leader.shared.snapshots, &streamed.meta)
            .await
            .unwrap(),
        meta: streamed.meta,
    };
    assert!(!snap.snapshot.is_marker());
    assert_eq!(snap.meta, marker.meta, "read at the same position");
    // Nothing is kept but the marker; asked for again, the store is read again, to the
    // same rows (nothing was applied meanwhile).
    let kept = leader.shared.current_snapshot().unwrap().unwrap();
    assert!(kept.snapshot.is_marker());
    let again = to_send(&mut leader).await;
    assert_eq!(again.meta, snap.meta);
    assert_eq!(bytes(&again.snapshot), bytes(&snap.snapshot));

    let rec = Arc::new(Recorder::default());
    {
        let (fdb, mut follower) = open(follower_dir.path(), rec.clone());
        follower
            .apply_entries(vec![put(1, "stale", "x")])
            .await
            .unwrap();
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(rec.restored.lock().unwrap().as_slice(), &[49]);
        assert_eq!(get(follower.store(), "k30"), Some(b"v30".to_vec()));
        assert_eq!(get(follower.store(), "stale"), None);
        fdb.flush().unwrap();
    }
    let (_fdb, mut follower) = open(follower_dir.path(), Arc::new(NoopObserver));
    assert_eq!(
        follower.applied_state().await.unwrap().0,
        Some(log_id(1, 1, 49))
    );
    let current = follower
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("kept snapshot");
    assert_eq!(current.meta.last_log_id, snap.meta.last_log_id);
    assert_eq!(get(follower.store(), "k49"), Some(b"v49".to_vec()));
}

/// The writes of one entry are applied in order, each its own revision with its own
/// notification, and answered in order.
#[tokio::test]
async fn an_entry_of_several_writes_gives_each_its_own_revision() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::default());
    let (_db, mut sm) = open(dir.path(), rec.clone());
    let replies = sm
        .apply_entries(vec![
            group(
                1,
                vec![put_req("a", "1"), put_req("b", "2"), put_req("a", "3")],
            ),
            group(2, vec![put_req("c", "4")]),
            group(3, vec![]),
        ])
        .await
        .unwrap();
    let revs: Vec<Vec<i64>> = replies
        .iter()
        .map(|r| r.0.iter().map(|w| w.revision).collect())
        .collect();
    assert_eq!(revs, vec![vec![2, 3, 4], vec![5], vec![]]);
    let notified = rec.notified.lock().unwrap().clone();
    let values: Vec<(i64, Vec<u8>)> = notified
        .iter()
        .map(|(rev, evs)| (*rev, evs[0].kv.as_ref().unwrap().value.clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            (2, b"1".to_vec()),
            (3, b"2".to_vec()),
            (4, b"3".to_vec()),
            (5, b"4".to_vec())
        ]
    );
    assert_eq!(get(sm.store(), "a"), Some(b"3".to_vec()));
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 3)));
}

/// A node that stopped between two writes of an entry (emulated by writing exactly what
/// the state machine writes after the first of them) reports the previous entry as applied;
/// when openraft applies the entry again, the write that took effect is not repeated and the
/// others follow it.
#[tokio::test]
async fn a_half_applied_entry_completes_without_repeating_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_db, mut sm) = open(dir.path(), Arc::new(NoopObserver));
        sm.apply_entries(vec![membership_entry(1)]).await.unwrap();
        let (last_applied, last_membership) = sm.applied_state().await.unwrap();
        let partial = AppliedState {
            last_applied,
            last_membership,
            in_progress: Some(EntryProgress {
                log_id: log_id(1, 1, 2),
                done: 1,
            }),
        };
        let blob = codec::encode("applied state", &partial).unwrap();
        let out = sm.store().apply(&put_req("a", "1"), &blob).unwrap();
        assert_eq!(out.revision, 2);
    }
    let rec = Arc::new(Recorder::default());
    let (_db, mut sm) = open(dir.path(), rec.clone());
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(
        applied,
        Some(log_id(1, 1, 1)),
        "the half-applied entry is not applied"
    );
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 1)));
    let replies = sm
        .apply_entries(vec![group(
            2,
            vec![put_req("a", "1"), put_req("b", "2"), put_req("c", "3")],
        )])
        .await
        .unwrap();
    let revs: Vec<i64> = replies[0].0.iter().map(|w| w.revision).collect();
    assert_eq!(
        revs,
        [0, 3, 4],
        "the first write is skipped, the others follow"
    );
    assert_eq!(sm.store().current_revision(), 4);
    let notified: Vec<i64> = rec.notified.lock().unwrap().iter().map(|n| n.0).collect();
    assert_eq!(notified, [3, 4]);
    let a = sm
        .store()
        .range(&RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(a.kvs[0].version, 1, "a was written once");
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 2)));
}

fn grant_req(ttl: i64) -> InternalRequest {
    InternalRequest {
        caller: None,
        request: Some(Request::LeaseGrant(
            crate::pb::etcdserverpb::LeaseGrantRequest { ttl, id: 0 },
        )),
    }
}

fn compact_req(revision: i64) -> InternalRequest {
    InternalRequest {
        caller: None,
        request: Some(Request::Compaction(
            crate::pb::etcdserverpb::CompactionRequest {
                revision,
                physical: false,
            },
        )),
    }
}

/// The revisions and lease ids of every write, in order.
fn answers(replies: &[CommandResponse]) -> Vec<(i64, i64)> {
    replies
        .iter()
        .flat_map(|r| r.0.iter())
        .map(|w| {
            let lease = match &w.response {
                Some(crate::pb::minietcdpb::internal_response::Response::LeaseGrant(g)) => g.id,
                _ => 0,
            };
            (w.revision, lease)
        })
        .collect()
}

/// Members hand entries to apply in different groupings (a leader may apply many at once, a
/// follower one by one): the outcome, derived lease ids included, must not depend on it.
#[tokio::test]
async fn grouping_of_entries_does_not_change_the_outcome() {
    let entries = || {
        vec![
            membership_entry(1),
            group(2, vec![put_req("a", "1"), grant_req(60), put_req("b", "2")]),
            group(3, vec![grant_req(30), put_req("a", "3")]),
            put(4, "c", "4"),
        ]
    };
    let one_dir = tempfile::tempdir().unwrap();
    let (_db, mut one) = open(one_dir.path(), Arc::new(NoopObserver));
    let together = answers(&one.apply_entries(entries()).await.unwrap());
    let each_dir = tempfile::tempdir().unwrap();
    let (_db2, mut each) = open(each_dir.path(), Arc::new(NoopObserver));
    let mut apart = Vec::new();
    for e in entries() {
        apart.extend(answers(&each.apply_entries(vec![e]).await.unwrap()));
    }
    assert_eq!(together, apart);
    assert_eq!(together.len(), 6);
    assert!(
        together.iter().filter(|(_, l)| *l != 0).count() == 2,
        "{together:?}"
    );
    // Lease grants take no revision (as in etcd): four puts after revision 1.
    assert_eq!(one.store().current_revision(), 5);
    assert_eq!(get(one.store(), "a"), Some(b"3".to_vec()));
}

/// A compaction in the middle of an entry splits the group; a restart at that point (its
/// blob says how far into the entry the store got) finishes the entry without repeating.
#[tokio::test]
async fn a_compaction_inside_a_group_splits_it_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_db, mut sm) = open(dir.path(), Arc::new(NoopObserver));
        let replies = sm
            .apply_entries(vec![
                membership_entry(1),
                group(2, vec![put_req("a", "1"), put_req("a", "2")]),
                group(
                    3,
                    vec![put_req("b", "1"), compact_req(3), put_req("c", "1")],
                ),
            ])
            .await
            .unwrap();
        let revs: Vec<i64> = answers(&replies).iter().map(|a| a.0).collect();
        assert_eq!(revs, [2, 3, 4, 4, 5]);
        assert_eq!(sm.store().compact_revision(), 3);
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 3)));
    }
    // Restart: everything is there once.
    let (_db, mut sm) = open(dir.path(), Arc::new(NoopObserver));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 3)));
    assert_eq!(sm.store().current_revision(), 5);
    assert_eq!(get(sm.store(), "c"), Some(b"1".to_vec()));
    // Emulate a stop right after the compaction: its blob records 2 writes of entry 3 done.
    drop(sm);
    drop(_db);
    let dir2 = tempfile::tempdir().unwrap();
    {
        let (_db, mut sm) = open(dir2.path(), Arc::new(NoopObserver));
        sm.apply_entries(vec![
            membership_entry(1),
            group(2, vec![put_req("a", "1"), put_req("a", "2")]),
        ])
        .await
        .unwrap();
        let (last_applied, last_membership) = sm.applied_state().await.unwrap();
        let partial = AppliedState {
            last_applied,
            last_membership,
            in_progress: Some(EntryProgress {
                log_id: log_id(1, 1, 3),
                done: 2,
            }),
        };
        let blob = codec::encode("applied state", &partial).unwrap();
        sm.store().apply(&put_req("b", "1"), &blob).unwrap();
        sm.store().apply(&compact_req(3), &blob).unwrap();
    }
    let (_db, mut sm) = open(dir2.path(), Arc::new(NoopObserver));
    let replies = sm
        .apply_entries(vec![group(
            3,
            vec![put_req("b", "1"), compact_req(3), put_req("c", "1")],
        )])
        .await
        .unwrap();
    let revs: Vec<i64> = answers(&replies).iter().map(|a| a.0).collect();
    assert_eq!(revs, [0, 0, 5], "the first two writes are not repeated");
    assert_eq!(sm.store().current_revision(), 5);
    assert_eq!(sm.store().compact_revision(), 3);
}

/// `--snapshot-count`'s snapshot is a marker: the store made durable, no rows copied. Before
/// openraft has started it is answered as it is (openraft only reads its position then);
/// afterwards, asked for it (to send it), the store as it is then is read out as it is sent,
/// and the marker stays the kept snapshot.
#[tokio::test]
async fn a_marker_is_read_out_only_when_a_snapshot_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut sm) = open(dir.path(), Arc::new(NoopObserver));
    let mut entries = vec![membership_entry(1)];
    entries.extend((2..20).map(|i| put(i, &format!("k{i}"), "v")));
    sm.apply_entries(entries).await.unwrap();
    let marker = build(&mut sm).await;
    assert!(marker.snapshot.is_marker());
    assert_eq!(marker.meta.last_log_id, Some(log_id(1, 1, 19)));
    // Not serving yet: the marker itself.
    let at_start = sm.get_current_snapshot().await.unwrap().unwrap();
    assert!(at_start.snapshot.is_marker());
    assert_eq!(at_start.meta, marker.meta);
    // Writes after the marker are in the snapshot that is sent: it is the store as it is.
    sm.apply_entries((20..25).map(|i| put(i, &format!("k{i}"), "w")).collect())
        .await
        .unwrap();
    sm.serve_snapshots().start();
    let sent = to_send(&mut sm).await;
    assert!(!sent.snapshot.is_marker());
    assert_eq!(sent.meta.last_log_id, Some(log_id(1, 1, 24)));
    let follower_dir = tempfile::tempdir().unwrap();
    let (_fdb, mut follower) = open(follower_dir.path(), Arc::new(NoopObserver));
    follower
        .install_snapshot(&sent.meta, sent.snapshot)
        .await
        .unwrap();
    assert_eq!(get(follower.store(), "k24"), Some(b"w".to_vec()));
    assert_eq!(get(follower.store(), "k3"), Some(b"v".to_vec()));
    let kept = sm.shared.current_snapshot().unwrap().unwrap();
    assert!(kept.snapshot.is_marker(), "nothing but the marker is kept");
    assert_eq!(kept.meta, marker.meta);
    // The next periodic snapshot is a marker again.
    sm.apply_entries(vec![put(25, "k25", "x")]).await.unwrap();
    let next = build(&mut sm).await;
    assert!(next.snapshot.is_marker());
    assert_eq!(next.meta.last_log_id, Some(log_id(1, 1, 25)));
    // A restart reads the marker's position and installs nothing.
    db.flush().unwrap();
    drop(sm);
    drop(db);
    let rec = Arc::new(Recorder::default());
    let (_db, mut sm) = open(dir.path(), rec.clone());
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 25)));
    let kept = sm.get_current_snapshot().await.unwrap().unwrap();
    assert!(kept.snapshot.is_marker());
    assert_eq!(kept.meta, next.meta);
    assert!(
        rec.restored.lock().unwrap().is_empty(),
        "nothing was installed"
    );
}

/// A marker ahead of the store cannot happen (it is kept only once the store is durable up
/// to it): a store found behind one has lost data, and the member refuses to start.
#[tokio::test]
async fn a_store_behind_its_marker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    apply_one_put_and_close(dir.path()).await;
    let snaps = SnapshotDir::open(&dir.path().join("snap")).unwrap();
    snaps
        .keep_marker(&SnapshotMeta {
            last_log_id: Some(log_id(1, 1, 9)),
            ..SnapshotMeta::default()
        })
        .unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let store = Arc::new(MvccStore::open(&db).unwrap());
    let err = StateMachine::open(&dir.path().join("snap"), store, Arc::new(NoopObserver))
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("behind the snapshot marker"),
        "{err}"
    );
}

/// A snapshot sent from a marker is read from a view while applies go on: the receiver gets
/// the store at the view's position, not the writes applied while the rows were on their
/// way. A receiver that goes away part-way (here: after the first blocks, with the reader
/// waiting for room) closes the view, so compaction's deletion, which waits for open views,
/// is not held back by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_snapshot_holds_the_store_still_only_for_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut sm) = open(dir.path(), Arc::new(NoopObserver));
    // Well over the blocks the stream holds, so that its reader must wait for the network.
    let big = "x".repeat(4096);
    let mut entries = vec![membership_entry(1)];
    entries.extend((2..3000).map(|i| put(i, &format!("k{i:05}"), &big)));
    sm.apply_entries(entries).await.unwrap();
    build(&mut sm).await;
    sm.serve_snapshots().start();

    let streamed = sm.get_current_snapshot().await.unwrap().unwrap();
    assert!(streamed.snapshot.is_streamed());
    assert_eq!(streamed.meta.last_log_id, Some(log_id(1, 1, 2999)));
    // Applies are not held up by the open view.
    sm.apply_entries(vec![put(3000, "k00002", "changed"), put(3001, "late", "y")])
        .await
        .unwrap();
    let file = streamed
        .snapshot
        .into_file(&sm.shared.snapshots, &streamed.meta)
        .await
        .unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_fdb, mut follower) = open(follower_dir.path(), Arc::new(NoopObserver));
    follower
        .install_snapshot(&streamed.meta, file)
        .await
        .unwrap();
    assert_eq!(
        get(follower.store(), "k00002"),
        Some(big.clone().into_bytes())
    );
    assert_eq!(
        get(follower.store(), "k02999"),
        Some(big.clone().into_bytes())
    );
    assert_eq!(get(follower.store(), "late"), None);

    // A receiver that reads a little and goes away.
    let mut abandoned = sm.get_current_snapshot().await.unwrap().unwrap();
    let mut blocks = abandoned.snapshot.take_stream().expect("streamed");
    assert!(matches!(
        blocks.recv().await,
        Some(Ok(crate::raft::snapshot::Block::Bytes(_)))
    ));
    drop(blocks);
    drop(abandoned);
    let rev = sm.store().current_revision();
    let compacted = async {
        sm.apply_entries(vec![group(3002, vec![compact_req(rev)])])
            .await
            .unwrap();
        sm.store().removed_compacted(rev).await
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), compacted)
        .await
        .expect("the compaction's deletion was not held back")
        .unwrap();
}

/// A short apply never waits for the store's apply lock on the runtime's thread: while
/// something holds it (here Maintenance.Snapshot's read of every row), the apply moves to the
/// blocking pool, the runtime's other tasks keep running (this test's runtime has one
/// thread), and the write lands once the lock is free.
#[tokio::test]
async fn a_short_apply_waits_for_the_store_off_the_runtime_thread() {
    use crate::storage::StorageError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut sm) = open(dir.path(), Arc::new(NoopObserver));
    sm.apply_entries(vec![membership_entry(1)]).await.unwrap();
    let store = sm.store().clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        store
            .with_rows(|_rows| -> Result<(), StorageError> {
                held_tx.send(()).unwrap();
                // Let go after a while even if never told (an apply that blocked the
                // runtime's thread would keep this test from telling it).
                let _ = release_rx.recv_timeout(Duration::from_secs(5));
                Ok(())
            })
            .unwrap();
    });
    held_rx.recv().unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let apply = tokio::spawn(async move {
        let replies = sm.apply_entries(vec![put(2, "k", "v")]).await;
        (sm, replies)
    });
    while ticks.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        !apply.is_finished(),
        "the apply blocked the runtime's thread, or went ahead while the store's apply lock was held"
    );
    release_tx.send(()).unwrap();
    let (sm, replies) = apply.await.unwrap();
    assert_eq!(replies.unwrap()[0].0[0].revision, 2);
    assert_eq!(get(sm.store(), "k"), Some(b"v".to_vec()));
    holder.join().unwrap();
    ticker.abort();
}
