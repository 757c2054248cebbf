//! Installing a snapshot into a store with its own database (a member's): built in a copy
//! beside the live database in one pass, then switched in (see `snapshot_view`).

use super::*;

/// A store in its own database inside a data dir, as a member opens it.
struct DirStore {
    dir: tempfile::TempDir,
    shared: sled::Db,
    store: MvccStore,
}

fn dir_store() -> DirStore {
    let dir = tempfile::tempdir().unwrap();
    let shared = open_db(&dir.path().join("db"));
    let store = MvccStore::open_dir(dir.path(), &shared).unwrap();
    DirStore { dir, shared, store }
}

impl DirStore {
    fn reopen(self) -> DirStore {
        let DirStore { dir, shared, store } = self;
        drop(store);
        DirStore {
            store: MvccStore::open_dir(dir.path(), &shared).unwrap(),
            dir,
            shared,
        }
    }

    fn copy_left(&self) -> bool {
        self.dir.path().join("mvcc.defrag").exists()
    }
}

/// What a reader can see of a store at its head: the revisions, every key, the leases with
/// their keys.
fn contents(s: &MvccStore) -> String {
    let mut out = format!(
        "rev {} compacted {}\n",
        s.current_revision(),
        s.compact_revision()
    );
    out += &format!("{:?}\n", range(s, "\0", "\0").kvs);
    for id in s.lease_ids().unwrap() {
        let info = s.lease_info(id).unwrap();
        out += &format!("lease {id}: {info:?}\n");
    }
    out
}

/// [`contents`] and every revision since the compaction.
fn history(s: &MvccStore) -> String {
    let mut out = contents(s);
    for rev in s.compact_revision().max(1)..=s.current_revision() {
        let kvs = s
            .range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: rev,
                ..Default::default()
            })
            .unwrap()
            .kvs;
        out += &format!("@{rev}: {kvs:?}\n");
    }
    out
}

/// `snap` with the value of its middle kv row replaced by bytes that are no KeyValue.
fn garbled_in_the_middle(snap: &[u8]) -> Vec<u8> {
    let rows: Vec<Row> = snapshot::rows(snap).unwrap().map(Result::unwrap).collect();
    let kv_rows: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].0.first() == Some(&revision::KV_PREFIX))
        .collect();
    let mid = kv_rows[kv_rows.len() / 2];
    let mut enc = snapshot::Encoder::new(std::io::Cursor::new(Vec::new())).unwrap();
    for (i, (k, v)) in rows.iter().enumerate() {
        let v: &[u8] = if i == mid { &[0xff; 8] } else { v };
        enc.row(k, v).unwrap();
    }
    enc.finish().unwrap().0.into_inner()
}

/// A store with history, deletes, a lease with keys and a compaction.
fn source_snapshot() -> (Vec<u8>, String) {
    let f = fixture();
    apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }),
    );
    for i in 0..300 {
        put(&f.store, &format!("k{:03}", i % 120), &format!("v{i}"));
    }
    put_lease(&f.store, "leased/a", "1", 7);
    put_lease(&f.store, "leased/b", "2", 7);
    apply(
        &f.store,
        Request::DeleteRange(DeleteRangeRequest {
            key: b"k01".to_vec(),
            range_end: b"k02".to_vec(),
            ..Default::default()
        }),
    );
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 150,
            physical: true,
        }),
    );
    put(&f.store, "after", "compaction");
    (f.store.snapshot().unwrap(), history(&f.store))
}

#[test]
fn a_snapshot_installs_into_a_store_with_its_own_database() {
    let (snap, want) = source_snapshot();
    let d = dir_store();
    for i in 0..500 {
        put(&d.store, &format!("old/{i:04}"), "x");
    }
    d.store.install_snapshot(&snap).unwrap();
    assert_eq!(history(&d.store), want);
    // The installed rows are counted as in use, the old ones no longer.
    let in_use = d.store.size_in_use().unwrap();
    assert_eq!(in_use, d.store.size_in_use_read().unwrap());
    assert!(!d.copy_left(), "the copy was moved into place");
    assert!(!d.dir.path().join("mvcc.old").exists());
    // Writes go on from the snapshot's revision, into the new database.
    let next = put(&d.store, "new", "1").revision;
    let want_after = history(&d.store);
    assert_eq!(next, d.store.current_revision());
    let d = d.reopen();
    assert_eq!(history(&d.store), want_after);
}

#[test]
fn a_bad_snapshot_leaves_the_store_whole_and_no_copy_behind() {
    let (snap, _) = source_snapshot();
    let d = dir_store();
    for i in 0..200 {
        put(&d.store, &format!("old/{i:04}"), "x");
    }
    let before = contents(&d.store);
    // Damage found only at the end of the rows (the row count after the end mark is one
    // too many), after every row was written into the copy; and a row in the middle that is
    // no kv.
    let mut short = snap.clone();
    let count_at = snap.len() - 8;
    let count = u64::from_be_bytes(short[count_at..].try_into().unwrap());
    short[count_at..].copy_from_slice(&(count + 1).to_be_bytes());
    let garbled = garbled_in_the_middle(&snap);
    for bad in [short, garbled, snap[..snap.len() - 3].to_vec()] {
        let err = d.store.install_snapshot(&bad).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
        assert_eq!(contents(&d.store), before);
        assert!(!d.copy_left(), "the unfinished copy was removed");
    }
    // Still the same store, with working writes, after a restart.
    let d = d.reopen();
    assert_eq!(contents(&d.store), before);
    put(&d.store, "still", "writable");
}

/// Child side of the crash test below: installs the snapshot in the file named by
/// `MINIETCD_TEST_COPY_INSTALL_SNAPSHOT` into the store of the data dir
/// `MINIETCD_TEST_COPY_INSTALL_DIR`, over and over, until it is killed.
fn install_forever(dir: &str, snapshot: &str) -> ! {
    let dir = std::path::Path::new(dir);
    let shared = open_db(&dir.join("db"));
    let store = MvccStore::open_dir(dir, &shared).unwrap();
    let snap = std::fs::read(snapshot).unwrap();
    println!("installing");
    loop {
        store.install_snapshot(&snap).unwrap();
    }
}

/// A member killed (SIGKILL, a real process) at a random point of a snapshot install opens to
/// the old store untouched or the new store whole: never a mix, never an empty store.
#[test]
fn a_kill_inside_an_install_by_copy_leaves_the_old_store_or_the_new_one() {
    const CHILD_DIR: &str = "MINIETCD_TEST_COPY_INSTALL_DIR";
    const CHILD_SNAPSHOT: &str = "MINIETCD_TEST_COPY_INSTALL_SNAPSHOT";
    if let (Ok(dir), Ok(snap)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SNAPSHOT)) {
        install_forever(&dir, &snap);
    }
    let src = fixture();
    for i in 0..4000 {
        put(&src.store, &format!("new-{i:05}"), &"v".repeat(100));
    }
    let new_rows = contents(&src.store);
    let work = tempfile::tempdir().unwrap();
    let snap_file = work.path().join("snapshot.bin");
    std::fs::write(&snap_file, src.store.snapshot().unwrap()).unwrap();
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for attempt in 0..8u64 {
        let d = dir_store();
        for i in 0..3000 {
            put(&d.store, &format!("old-{i:05}"), "o");
        }
        let old_rows = contents(&d.store);
        let DirStore { dir, shared, store } = d;
        drop(store);
        shared.flush().unwrap();
        drop(shared);
        kill_child_while_installing(
            "storage::tests::install::a_kill_inside_an_install_by_copy_leaves_the_old_store_or_the_new_one",
            [(CHILD_DIR, dir.path()), (CHILD_SNAPSHOT, &snap_file)],
            attempt,
        );
        let shared = open_db(&dir.path().join("db"));
        let store = MvccStore::open_dir(dir.path(), &shared).unwrap();
        let rows = contents(&store);
        let outcome = if rows == new_rows {
            "new"
        } else if rows == old_rows {
            "old"
        } else {
            panic!("attempt {attempt}: a half-installed store was opened: {rows:.300}");
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("outcomes: {outcomes:?}");
}

/// A background compaction deletes the rows its index steps drop later, in revision order:
/// a defragment and an install (of a snapshot at the compaction, as a leader sends) may come
/// in between. Neither may lose a row a read still needs, and the count of bytes in use must
/// stay that of the rows.
#[test]
fn a_defragment_and_an_install_during_a_background_compaction_keep_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let shared = open_db(&dir.path().join("db"));
    let store = std::sync::Arc::new(MvccStore::open_dir(dir.path(), &shared).unwrap());
    // Many small index steps, each followed by a pause: the removal takes a while.
    store.set_compaction_batch_limit(10);
    MvccStore::spawn_compactor(&store).unwrap();
    for i in 0..300 {
        put(&store, &format!("k{i:03}"), "1");
        put(&store, &format!("k{i:03}"), "2");
    }
    del(&store, "k000", "k010");
    let at = store.current_revision();
    apply(
        &store,
        Request::Compaction(CompactionRequest {
            revision: at,
            physical: false,
        }),
    );
    put(&store, "after", "compaction");
    let want = history(&store);
    let snap = store.snapshot().unwrap();
    store.defragment().unwrap();
    assert_eq!(history(&store), want, "after the defragment");
    store.install_snapshot(&snap).unwrap();
    assert_eq!(history(&store), want, "after the install");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            store.removed_compacted(at),
        )
        .await
        .expect("compacted history removed in time")
        .expect("removal succeeded");
    });
    assert_eq!(history(&store), want, "after the removal");
    assert_eq!(
        store.size_in_use().unwrap(),
        store.size_in_use_read().unwrap()
    );
    // Only each key's last row (and the later put) is left.
    let kv_rows = store.tree().scan_prefix([revision::KV_PREFIX]).count();
    assert_eq!(kv_rows, 290 + 1, "rows left");
    drop(store);
    let store = MvccStore::open_dir(dir.path(), &shared).unwrap();
    assert_eq!(history(&store), want, "after a restart");
}
