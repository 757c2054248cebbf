//! Write groups of key-space rows are written row by row with the commit record last (see
//! `GroupRows`): a crash may leave some rows of a group without its record, and open drops
//! them, since the Raft log applies the group again.

use super::*;

fn group_puts(s: &MvccStore, group: u64, n: usize, value_len: usize) -> Vec<ApplyOutcome> {
    let reqs: Vec<InternalRequest> = (0..n)
        .map(|i| InternalRequest {
            caller: None,
            request: Some(Request::Put(PutRequest {
                key: format!("g{group:06}-{i}").into_bytes(),
                value: vec![b'v'; value_len],
                ..Default::default()
            })),
        })
        .collect();
    apply_reqs(s, &reqs, b"", &group.to_be_bytes())
}

/// Applies `reqs` as one group with `applied` as the blob.
fn apply_reqs(
    s: &MvccStore,
    reqs: &[InternalRequest],
    seed: &[u8],
    applied: &[u8],
) -> Vec<ApplyOutcome> {
    let writes: Vec<GroupWrite<'_>> = reqs
        .iter()
        .map(|r| GroupWrite {
            request: r,
            lease_seed: seed,
        })
        .collect();
    s.apply_group(&writes, applied).unwrap()
}

/// The kv rows of the tree: how many, and the highest main revision.
fn kv_rows(s: &MvccStore) -> (usize, i64) {
    let tree = s.tree();
    let mut n = 0;
    let mut max = 0;
    for row in tree.range(vec![revision::KV_PREFIX]..vec![revision::KV_PREFIX + 1]) {
        let (k, _) = row.unwrap();
        let (rev, _) = revision::parse_row_key(&k).unwrap();
        n += 1;
        max = max.max(rev.main);
    }
    (n, max)
}

#[test]
fn rows_of_an_unfinished_group_are_dropped_at_open() {
    let f = fixture();
    group_puts(&f.store, 0, 3, 10);
    let cur = f.store.current_revision();
    assert_eq!(kv_rows(&f.store), (3, cur));
    // What a crash can leave: the first rows of the next group, without its commit record.
    for (sub, rev) in [(0, cur + 1), (0, cur + 2)] {
        let kv = KeyValue {
            key: format!("torn-{rev}").into_bytes(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            value: b"x".to_vec(),
            lease: 0,
        };
        f.store
            .tree()
            .insert(
                revision::row_key(Revision::new(rev, sub), false),
                prost::Message::encode_to_vec(&kv),
            )
            .unwrap();
    }
    let f = f.restart();
    assert_eq!(f.store.current_revision(), cur);
    assert_eq!(kv_rows(&f.store), (3, cur), "the unfinished rows are gone");
    assert!(keys(&range(&f.store, "torn", "tornz")).is_empty());
    // The group applied again takes the same revisions.
    let again = group_puts(&f.store, 1, 2, 10);
    let revs: Vec<i64> = again.iter().map(|o| o.revision).collect();
    assert_eq!(revs, vec![cur + 1, cur + 2]);
    assert_eq!(keys(&range(&f.store, "g", "h")).len(), 5);
}

/// A group with a lease row is written in one batch (a replay could not tell a lease row of
/// an unfinished group apart), and still applies as before.
#[test]
fn a_group_with_a_lease_grant_is_one_batch_and_applies() {
    let f = fixture();
    let reqs = [
        InternalRequest {
            caller: None,
            request: Some(Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 })),
        },
        InternalRequest {
            caller: None,
            request: Some(Request::Put(PutRequest {
                key: b"leased".to_vec(),
                value: b"v".to_vec(),
                lease: 7,
                ..Default::default()
            })),
        },
    ];
    let out = apply_reqs(&f.store, &reqs, b"seed", b"applied");
    assert_eq!(out.len(), 2);
    let f = f.restart();
    let info = f.store.lease_info(7).unwrap().unwrap();
    assert_eq!(info.keys, vec![b"leased".to_vec()]);
}

/// Child side of the crash test below: applies groups of puts into the store in the sled
/// database at `MINIETCD_TEST_GROUPS_DIR` until it is killed.
fn apply_groups_forever(dir: &str) -> ! {
    let db = open_db(std::path::Path::new(dir));
    let store = MvccStore::open(&db).unwrap();
    let first = store
        .applied()
        .unwrap()
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()) + 1);
    println!("applying");
    for group in first.. {
        group_puts(&store, group, GROUP_WRITES, 700);
    }
    unreachable!()
}

const GROUP_WRITES: usize = 7;

/// A real process applying groups of writes, SIGKILLed at random points (sled loses what it
/// had not handed to the OS, which may end inside a group): it reopens with whole groups
/// only, the last one its applied blob names, and goes on from there.
#[test]
fn a_kill_while_applying_leaves_whole_groups() {
    const CHILD_DIR: &str = "MINIETCD_TEST_GROUPS_DIR";
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        apply_groups_forever(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    for attempt in 0..8u64 {
        kill_child_when(
            "storage::tests::groups::a_kill_while_applying_leaves_whole_groups",
            &[(CHILD_DIR, dir.path())],
            "applying",
            attempt,
        );
        let db = open_db(dir.path());
        let store = MvccStore::open(&db).unwrap();
        let cur = store.current_revision();
        let groups = store
            .applied()
            .unwrap()
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()) + 1);
        let writes = usize::try_from(groups).unwrap() * GROUP_WRITES;
        assert_eq!(
            cur,
            1 + i64::try_from(writes).unwrap(),
            "attempt {attempt}: the revision is the applied groups' writes"
        );
        let top = if writes == 0 { 0 } else { cur };
        assert_eq!(
            kv_rows(&store),
            (writes, top),
            "attempt {attempt}: a row per applied write, none above the current revision"
        );
        let count = store
            .range(&RangeRequest {
                key: b"g".to_vec(),
                range_end: b"h".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .unwrap()
            .count;
        assert_eq!(count, i64::try_from(writes).unwrap(), "attempt {attempt}");
        eprintln!("attempt {attempt}: {groups} whole groups");
        drop(store);
        db.flush().unwrap();
        drop(db);
    }
}
