//! Compaction, leases, history, restart, snapshots and damaged data.

use super::*;

#[test]
fn compaction_rules_match_etcd() {
    // etcd 3.4: after `compact 5`, `get --rev=5` works, `--rev=4` is compacted and
    // `--rev=-1` reads the current revision.
    let f = fixture();
    for i in 0..6 {
        put(&f.store, &format!("k{i}"), "v"); // 2..=7
    }
    put(&f.store, "k0", "again"); // 8
    let out = apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        }),
    );
    assert_eq!(out.response.error, ApplyError::ApplyOk as i32);
    assert_eq!(f.store.compact_revision(), 5);
    assert_eq!(out.revision, 8, "compaction takes no revision");
    assert_eq!(get(&f.store, "k0", 5).unwrap().unwrap().value, b"v");
    assert!(matches!(
        get(&f.store, "k0", 4),
        Err(StorageError::Compacted)
    ));
    assert_eq!(get(&f.store, "k0", -1).unwrap().unwrap().value, b"again");
    assert!(matches!(
        get(&f.store, "k0", 9),
        Err(StorageError::FutureRevision)
    ));
    let again = apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        }),
    );
    assert_eq!(again.response.error, ApplyError::Compacted as i32);
    let future = apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 9,
            physical: false,
        }),
    );
    assert_eq!(future.response.error, ApplyError::FutureRevision as i32);
}

#[test]
fn compaction_deletes_rows_and_tombstones() {
    let f = fixture();
    put(&f.store, "a", "1"); // 2
    put(&f.store, "a", "2"); // 3
    put(&f.store, "b", "1"); // 4
    del(&f.store, "b", ""); // 5
    put(&f.store, "c", "1"); // 6
    let rows = |f: &Fixture| f.store.tree().scan_prefix([revision::KV_PREFIX]).count();
    assert_eq!(rows(&f), 5);
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 5,
            physical: true,
        }),
    );
    // a@3 stays (latest), a@2 goes; b's generation ends in a tombstone at 5: all gone.
    assert_eq!(rows(&f), 2);
    assert_eq!(keys(&range(&f.store, "\0", "\0")), ["a", "c"]);
    let f = f.restart();
    assert_eq!(f.store.compact_revision(), 5);
    assert_eq!(f.store.current_revision(), 6);
    assert_eq!(get(&f.store, "a", 5).unwrap().unwrap().version, 2);
}

#[test]
fn compaction_of_a_trailing_tombstone_keeps_the_current_revision_on_restart() {
    let f = fixture();
    put(&f.store, "a", "1"); // 2
    del(&f.store, "a", ""); // 3
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }),
    );
    let f = f.restart();
    assert_eq!(f.store.current_revision(), 3);
    assert_eq!(put(&f.store, "a", "2").revision, 4);
}

#[test]
fn lease_checkpoints_record_the_remaining_ttl_in_memory_without_a_revision() {
    use crate::pb::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest};
    let f = fixture();
    apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 9 }),
    );
    let cp = |id, remaining_ttl| {
        Request::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![LeaseCheckpoint { id, remaining_ttl }],
        })
    };
    // An unknown lease is skipped; no revision is taken.
    let out = apply(&f.store, cp(9, 42));
    apply(&f.store, cp(10, 5));
    assert_eq!((out.revision, out.response.error), (1, 0));
    assert_eq!(f.store.lease_checkpoint(9).unwrap(), 42);
    assert_eq!(f.store.lease_checkpoints().unwrap(), vec![(9, 42)]);
    // A checkpoint of 0 clears it.
    apply(&f.store, cp(9, 0));
    assert!(f.store.lease_checkpoints().unwrap().is_empty());
    // In memory only, as etcd 3.4: a restart forgets it.
    apply(&f.store, cp(9, 42));
    let f = f.restart();
    assert_eq!(f.store.lease_checkpoint(9).unwrap(), 0);
}

#[test]
fn leases_attach_detach_and_revoke() {
    let f = fixture();
    let g = apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 9 }),
    );
    assert_eq!(g.revision, 1, "a grant takes no revision");
    let dup = apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 9 }),
    );
    assert_eq!(dup.response.error, ApplyError::LeaseExists as i32);
    let missing = put_lease(&f.store, "x", "1", 10);
    assert_eq!(missing.response.error, ApplyError::LeaseNotFound as i32);
    put_lease(&f.store, "b", "1", 9); // 2
    put_lease(&f.store, "a", "1", 9); // 3
    put_lease(&f.store, "c", "1", 9); // 4
    put(&f.store, "c", "2"); // 5: detaches c
    let info = f.store.lease_info(9).unwrap().unwrap();
    assert_eq!(
        (info.granted_ttl_secs, info.keys),
        (30, vec![b"a".to_vec(), b"b".to_vec()])
    );
    let f = f.restart();
    assert_eq!(f.store.lease_info(9).unwrap().unwrap().keys.len(), 2);
    let out = apply(&f.store, Request::LeaseRevoke(LeaseRevokeRequest { id: 9 }));
    assert_eq!(out.revision, 6, "one revision for all attached keys");
    let deleted: Vec<_> = out
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.clone())
        .collect();
    assert_eq!(deleted, [b"a".to_vec(), b"b".to_vec()]);
    assert!(!f.store.lease_exists(9));
    assert_eq!(keys(&range(&f.store, "\0", "\0")), ["c"]);
    let again = apply(&f.store, Request::LeaseRevoke(LeaseRevokeRequest { id: 9 }));
    assert_eq!(again.response.error, ApplyError::LeaseNotFound as i32);
    assert_eq!(f.store.events(6, 6, 10).unwrap(), vec![(6, out.events)]);
}

#[test]
fn lease_id_zero_is_derived_deterministically() {
    let a = fixture();
    let b = fixture();
    let grant =
        |s: &MvccStore| match apply(s, Request::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 0 }))
            .response
            .response
        {
            Some(Response::LeaseGrant(g)) => g.id,
            other => panic!("unexpected {other:?}"),
        };
    let id = grant(&a.store);
    assert!(id > 0);
    assert_eq!(id, grant(&b.store), "members applying the same entry agree");
    let too_long = apply(
        &a.store,
        Request::LeaseGrant(LeaseGrantRequest {
            ttl: MAX_LEASE_TTL_SECS + 1,
            id: 1,
        }),
    );
    assert_eq!(too_long.response.error, ApplyError::LeaseTtlTooLarge as i32);
}

#[test]
fn events_match_apply_outcomes_with_prev_kv() {
    let f = fixture();
    let mut outcomes = vec![
        put(&f.store, "a", "1"),
        put(&f.store, "a", "2"),
        del(&f.store, "a", ""),
    ];
    let (out, _) = txn(
        &f.store,
        TxnRequest {
            success: vec![op_put("b", "1"), op_put("b", "2")],
            ..Default::default()
        },
    );
    outcomes.push(out);
    let hist = f.store.events(2, 100, 100).unwrap();
    let want: Vec<_> = outcomes
        .iter()
        .map(|o| (o.revision, o.events.clone()))
        .collect();
    assert_eq!(hist, want);
    // prev_kv: none for a create, the previous value otherwise; the delete event carries
    // the key and the delete revision only.
    assert_eq!(hist[0].1[0].prev_kv, None);
    assert_eq!(hist[1].1[0].prev_kv.as_ref().unwrap().value, b"1");
    let tomb = hist[2].1[0].kv.as_ref().unwrap();
    assert_eq!(
        (tomb.mod_revision, tomb.version, tomb.create_revision),
        (4, 0, 0)
    );
    assert_eq!(hist[2].1[0].prev_kv.as_ref().unwrap().value, b"2");
    assert_eq!(f.store.events(2, 100, 2).unwrap().len(), 2);
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }),
    );
    assert!(matches!(
        f.store.events(2, 5, 10),
        Err(StorageError::Compacted)
    ));
    // History from the compaction revision itself is served, as etcd serves a watch there.
    assert_eq!(f.store.events(3, 5, 10).unwrap()[0].0, 3);
    assert_eq!(f.store.events(4, 5, 10).unwrap(), want[2..].to_vec());
}

#[test]
fn restart_restores_everything() {
    let f = fixture();
    put(&f.store, "a", "1");
    put(&f.store, "b", "1");
    del(&f.store, "a", "");
    put(&f.store, "a", "2");
    let before = range(&f.store, "\0", "\0");
    let f = f.restart();
    assert_eq!(f.store.current_revision(), 5);
    assert_eq!(range(&f.store, "\0", "\0"), before);
    assert_eq!(get(&f.store, "a", 3).unwrap().unwrap().value, b"1");
    assert_eq!(put(&f.store, "a", "3").revision, 6);
    assert_eq!(get(&f.store, "a", 0).unwrap().unwrap().version, 2);
}

#[test]
fn snapshot_installs_into_a_fresh_store() {
    let f = fixture();
    apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 3 }),
    );
    put_lease(&f.store, "a", "1", 3);
    put(&f.store, "b", "1");
    put(&f.store, "b", "2");
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }),
    );
    let snap = f.store.snapshot().unwrap();
    let g = fixture();
    put(&g.store, "junk", "x");
    g.store.install_snapshot(&snap).unwrap();
    assert_eq!(g.store.current_revision(), 4);
    assert_eq!(g.store.compact_revision(), 3);
    assert_eq!(g.store.applied().unwrap().as_deref(), Some(&b"applied"[..]));
    assert_eq!(range(&g.store, "\0", "\0"), range(&f.store, "\0", "\0"));
    assert_eq!(
        g.store.lease_info(3).unwrap().unwrap().keys,
        vec![b"a".to_vec()]
    );
    assert_eq!(
        g.store.events(4, 4, 1).unwrap(),
        f.store.events(4, 4, 1).unwrap()
    );
    let g = g.restart();
    assert_eq!(range(&g.store, "\0", "\0"), range(&f.store, "\0", "\0"));
    // Garbage is refused before anything is touched.
    assert!(matches!(
        g.store.install_snapshot(b"nonsense"),
        Err(StorageError::Corrupt(_))
    ));
    let mut cut = snap.clone();
    cut.truncate(snap.len() - 3);
    assert!(matches!(
        g.store.install_snapshot(&cut),
        Err(StorageError::Corrupt(_))
    ));
    assert_eq!(g.store.current_revision(), 4);
}

#[test]
fn garbled_tree_is_corrupt_not_a_panic() {
    let f = fixture();
    put(&f.store, "a", "1");
    f.store
        .tree()
        .insert(
            revision::row_key(Revision::new(2, 0), false),
            &b"\xff\xff\xff"[..],
        )
        .unwrap();
    let Fixture { dir, db, store } = f;
    drop(store);
    assert!(matches!(
        MvccStore::open(&db),
        Err(StorageError::Corrupt(_))
    ));
    db.open_tree(backend::TREE_NAME)
        .unwrap()
        .insert(b"zzz", &b"?"[..])
        .unwrap();
    let err = MvccStore::open(&db).err().unwrap();
    assert!(err.to_string().contains("corrupt"), "{err}");
    drop(dir);
}

#[test]
fn interrupted_install_is_detected_on_open() {
    let f = fixture();
    put(&f.store, "a", "1");
    f.store
        .tree()
        .insert(backend::META_INSTALLING, &[][..])
        .unwrap();
    let f = {
        let Fixture { dir, db, store } = f;
        drop(store);
        let store = MvccStore::open(&db).unwrap();
        Fixture { dir, db, store }
    };
    assert!(f.store.interrupted_install());
    assert_eq!(f.store.current_revision(), 1);
    assert_eq!(f.store.applied().unwrap(), None);
}

#[test]
fn compaction_of_a_long_history_of_one_key_deletes_every_superseded_row() {
    let f = fixture();
    let n = 5000;
    for i in 0..n {
        put(&f.store, "hot", &i.to_string());
    }
    let cur = f.store.current_revision();
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: cur,
            physical: true,
        }),
    );
    let rows = f.store.tree().scan_prefix([revision::KV_PREFIX]).count();
    assert_eq!(rows, 1, "only the latest revision of the key survives");
    assert_eq!(get(&f.store, "hot", 0).unwrap().unwrap().version, n as i64);
}

/// Readers racing with applies see every txn entirely or not at all: each txn writes the
/// same value to "x" and "y", so any read of both must agree.
#[test]
fn concurrent_readers_never_see_half_a_txn() {
    const TXNS: usize = 300;
    let f = fixture();
    let store = &f.store;
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            while store.current_revision() < 1 + TXNS as i64 {
                let r = store
                    .range(&RangeRequest {
                        key: b"x".to_vec(),
                        range_end: b"z".to_vec(),
                        ..Default::default()
                    })
                    .unwrap();
                let values: Vec<_> = r.kvs.iter().map(|kv| kv.value.clone()).collect();
                assert!(
                    values.is_empty() || (values.len() == 2 && values[0] == values[1]),
                    "half-applied txn seen: {values:?}"
                );
                reads += 1;
            }
            reads
        });
        for i in 0..TXNS {
            let v = i.to_string();
            txn(
                store,
                TxnRequest {
                    success: vec![op_put("x", &v), op_put("y", &v)],
                    ..Default::default()
                },
            );
        }
        assert!(reader.join().unwrap() > 0);
    });
}

/// Reads racing with snapshot installs answer the old or the new state, never an error
/// (the rows a reader loads must not vanish under it).
#[test]
fn reads_during_snapshot_install_never_fail() {
    const INSTALLS: usize = 20;
    let src = fixture();
    for i in 0..50 {
        put(&src.store, &format!("k{i:02}"), "new");
    }
    let snap = src.store.snapshot().unwrap();
    let f = fixture();
    for i in 0..50 {
        put(&f.store, &format!("k{i:02}"), "old");
    }
    let store = &f.store;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let r = store
                    .range(&RangeRequest {
                        key: b"k".to_vec(),
                        range_end: b"l".to_vec(),
                        ..Default::default()
                    })
                    .unwrap();
                assert_eq!(r.kvs.len(), 50);
                reads += 1;
            }
            reads
        });
        for _ in 0..INSTALLS {
            store.install_snapshot(&snap).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        assert!(reader.join().unwrap() > 0);
    });
}

/// Child side of the crash test below: installs the snapshot in the file named by
/// `MINIETCD_TEST_INSTALL_SNAPSHOT` into the store in `MINIETCD_TEST_INSTALL_DIR`, over and
/// over, until it is killed.
fn install_forever(dir: &str, snapshot: &str) -> ! {
    // sled writes what it has every millisecond, so that any intermediate state of the
    // install can be what the kill leaves on disk.
    let db = sled::Config::new()
        .path(dir)
        .flush_every_ms(Some(1))
        .open()
        .unwrap();
    let store = MvccStore::open(&db).unwrap();
    let snap = std::fs::read(snapshot).unwrap();
    println!("installing");
    loop {
        store.install_snapshot(&snap).unwrap();
    }
}

/// A member killed (SIGKILL, a real process) at a random point of a snapshot install opens to
/// one of: the old store untouched, the new store whole, or an interrupted install (empty, no
/// applied blob, so the Raft layer restores its kept snapshot). Never a half-rewritten store
/// that looks complete.
#[test]
fn a_kill_inside_a_snapshot_install_never_leaves_a_trusted_half_store() {
    const CHILD_DIR: &str = "MINIETCD_TEST_INSTALL_DIR";
    const CHILD_SNAPSHOT: &str = "MINIETCD_TEST_INSTALL_SNAPSHOT";
    if let (Ok(dir), Ok(snap)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SNAPSHOT)) {
        install_forever(&dir, &snap);
    }
    let src = fixture();
    for i in 0..4000 {
        put(&src.store, &format!("new-{i:05}"), &"v".repeat(100));
    }
    let new_rows = range(&src.store, "\0", "\0").kvs;
    let snap_file = src.dir.path().join("snapshot.bin");
    std::fs::write(&snap_file, src.store.snapshot().unwrap()).unwrap();
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for attempt in 0..8u64 {
        let f = fixture();
        for i in 0..3000 {
            put(&f.store, &format!("old-{i:05}"), "o");
        }
        let old_rows = range(&f.store, "\0", "\0").kvs;
        let Fixture { dir, db, store } = f;
        drop(store);
        db.flush().unwrap();
        drop(db);
        kill_child_while_installing(
            "storage::tests::lifecycle::a_kill_inside_a_snapshot_install_never_leaves_a_trusted_half_store",
            [(CHILD_DIR, dir.path()), (CHILD_SNAPSHOT, &snap_file)],
            attempt,
        );
        let db = open_db(dir.path());
        let store = MvccStore::open(&db).unwrap();
        let rows = range(&store, "\0", "\0").kvs;
        let outcome = if store.interrupted_install() {
            assert_eq!(
                store.current_revision(),
                1,
                "an interrupted install starts empty"
            );
            assert_eq!(store.applied().unwrap(), None);
            assert!(rows.is_empty());
            "interrupted"
        } else if rows == new_rows {
            "new"
        } else if rows == old_rows {
            "old"
        } else {
            panic!(
                "attempt {attempt}: a half-installed store was trusted: {} rows",
                rows.len()
            );
        };
        *outcomes.entry(outcome).or_default() += 1;
        drop(store);
        drop(db);
        drop(dir);
    }
    eprintln!("outcomes: {outcomes:?}");
}

#[test]
fn the_store_database_and_its_copies_have_their_page_cache_bounds() {
    // The live database gets the bound reads need; a copy being filled no more.
    let dir = tempfile::tempdir().unwrap();
    let cfg = backend::store_db_config(dir.path());
    assert_eq!(cfg.cache_capacity, backend::STORE_CACHE_BYTES);
    assert_eq!(cfg.path, dir.path());
    let copy = backend::copy_db_config(dir.path());
    assert_eq!(copy.cache_capacity, backend::COPY_CACHE_BYTES);
    assert!(copy.cache_capacity <= cfg.cache_capacity);
    // Only a copy's IO threads write one buffer at a time (a lone put pays for the parking).
    assert!(copy.serialize_writes && !cfg.serialize_writes);
    // And a store opened through it keeps what it wrote across a reopen.
    let shared = sled::open(dir.path().join("db")).unwrap();
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    apply(
        &s,
        Request::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }),
    );
    drop(s);
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    let kvs = s
        .range(&RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .unwrap()
        .kvs;
    assert_eq!(kvs.len(), 1);
    assert_eq!(kvs[0].value, b"v");
}
