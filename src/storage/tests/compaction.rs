//! Compaction in the background: applying one only records its revision; the history goes
//! in steps afterwards, and a crash between steps leaves nothing that the next start cannot
//! finish.

use crate::storage::error::StorageError;
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn compact(s: &MvccStore, rev: i64) {
    let out = apply(
        s,
        Request::Compaction(CompactionRequest {
            revision: rev,
            physical: false,
        }),
    );
    assert_eq!(out.response.error, 0, "{out:?}");
}

fn kv_rows(s: &MvccStore) -> usize {
    s.tree().scan_prefix([revision::KV_PREFIX]).count()
}

#[test]
fn history_of_many_keys_goes_in_steps() {
    let f = fixture();
    let keys = compact::COMPACT_STEP_KEYS * 2 + 500;
    for i in 0..keys {
        put(&f.store, &format!("k{i:05}"), "1");
        put(&f.store, &format!("k{i:05}"), "2");
    }
    put(&f.store, "gone", "1");
    let r = del(&f.store, "gone", "").revision;
    assert_eq!(kv_rows(&f.store), keys * 2 + 2);
    // No compactor thread: apply removes the history itself, every step of it.
    compact(&f.store, r);
    assert_eq!(kv_rows(&f.store), keys);
    let all = range(&f.store, "\0", "\0");
    assert_eq!(all.count as usize, keys);
    assert!(all.kvs.iter().all(|kv| kv.value == b"2"));
}

#[test]
fn with_a_compactor_apply_returns_and_the_history_goes_after() {
    let f = fixture();
    let Fixture { dir, db, store } = f;
    let store = Arc::new(store);
    MvccStore::spawn_compactor(&store).unwrap();
    for i in 0..50 {
        put(&store, "a", &i.to_string());
    }
    let cur = store.current_revision();
    compact(&store, cur);
    // Reads below the compaction are refused at once.
    assert!(matches!(
        get(&store, "a", cur - 1),
        Err(StorageError::Compacted)
    ));
    assert_eq!(get(&store, "a", cur).unwrap().unwrap().value, b"49");
    // The rows go in the background; a physical Compact waits for exactly this.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), store.removed_compacted(cur))
            .await
            .expect("compacted history removed in time")
            .expect("removal succeeded");
        // A removal that fails answers whoever waits for it with the error, instead of
        // leaving a physical Compact waiting for ever.
        let later = cur + 5;
        store.mark_removal_failed(later, &StorageError::Corrupt("disk gone".into()));
        let r = tokio::time::timeout(Duration::from_secs(10), store.removed_compacted(later))
            .await
            .expect("answered at once");
        assert!(r.as_ref().is_err_and(|e| e.contains("disk gone")), "{r:?}");
        // Earlier compactions stay done.
        assert_eq!(store.removed_compacted(cur).await, Ok(()));
    });
    assert_eq!(kv_rows(&store), 1);
    // The background deletion kept the count of bytes in use.
    assert_eq!(
        store.size_in_use().unwrap(),
        store.size_in_use_read().unwrap()
    );
    drop((store, db, dir));
}

#[test]
fn a_tombstone_whose_puts_a_crash_already_removed_goes_at_the_next_start() {
    let f = fixture();
    put(&f.store, "a", "1");
    let put_rev = put(&f.store, "a", "2").revision;
    let del_rev = del(&f.store, "a", "").revision;
    put(&f.store, "b", "1");
    // A compaction that got as far as the generation's put rows, not its tombstone row.
    let tree = f.store.tree();
    tree.insert(backend::META_COMPACTED, &backend::i64_bytes(del_rev)[..])
        .unwrap();
    for main in [put_rev - 1, put_rev] {
        let rev = Revision { main, sub: 0 };
        tree.remove(revision::row_key(rev, false)).unwrap();
    }
    assert_eq!(kv_rows(&f.store), 2, "the tombstone and b");
    drop(tree);
    let f = f.restart();
    assert_eq!(kv_rows(&f.store), 1, "the tombstone is gone");
    assert_eq!(keys(&range(&f.store, "\0", "\0")), ["b"]);
    assert!(get(&f.store, "a", del_rev).unwrap().is_none());
}

/// A history where keys' rows interleave by revision: generations closed by tombstones,
/// keys deleted for good, keys overwritten. Returns the revision to compact at.
fn interleaved_history(s: &MvccStore) -> i64 {
    for round in 0..3 {
        for k in ["a", "b", "c", "d"] {
            put(s, k, &format!("{k}{round}"));
        }
        del(s, "b", "");
        if round == 1 {
            del(s, "a", "c");
        }
    }
    del(s, "d", "");
    let at = s.current_revision();
    put(s, "c", "after");
    at
}

/// Key, value, create revision and version of a key read.
type Read = (String, Vec<u8>, i64, i64);

/// What a store answers for every key at every revision from `at` on.
fn reads_from(s: &MvccStore, at: i64) -> Vec<(i64, Vec<Read>)> {
    (at..=s.current_revision())
        .map(|rev| {
            let r = s
                .range(&RangeRequest {
                    key: b"\0".to_vec(),
                    range_end: b"\0".to_vec(),
                    revision: rev,
                    ..Default::default()
                })
                .unwrap();
            let kvs = r
                .kvs
                .iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    (key, kv.value.clone(), kv.create_revision, kv.version)
                })
                .collect();
            (rev, kvs)
        })
        .collect()
}

#[test]
fn a_crash_anywhere_in_a_compactions_deletion_leaves_the_store_reading_the_same() {
    let whole = fixture();
    let at = interleaved_history(&whole.store);
    compact(&whole.store, at);
    let expected = reads_from(&whole.store, at);
    let rows = {
        let probe = fixture();
        interleaved_history(&probe.store);
        let mut st = probe.store.write_state().unwrap();
        let mut rows = compact::compact_index(&mut st, at);
        compact::removal_order(&mut rows);
        rows
    };
    assert!(rows.iter().filter(|(_, tombstone)| *tombstone).count() >= 3);
    // Every prefix of the deletion is something a crash may leave (sled keeps a prefix of
    // its log): the compaction's record, and the first `kept` rows gone.
    for kept in 0..=rows.len() {
        let f = fixture();
        interleaved_history(&f.store);
        let tree = f.store.tree();
        tree.insert(backend::META_COMPACTED, &backend::i64_bytes(at)[..])
            .unwrap();
        for (rev, tombstone) in &rows[..kept] {
            tree.remove(revision::row_key(*rev, *tombstone)).unwrap();
        }
        drop(tree);
        let f = f.restart();
        assert_eq!(reads_from(&f.store, at), expected, "{kept} rows deleted");
        assert_eq!(
            kv_rows(&f.store),
            kv_rows(&whole.store),
            "{kept} rows deleted"
        );
    }
}

#[test]
fn a_tombstone_without_puts_above_the_compaction_is_refused() {
    let f = fixture();
    put(&f.store, "a", "1");
    let put_rev = put(&f.store, "a", "2").revision;
    del(&f.store, "a", "");
    let tree = f.store.tree();
    for main in [put_rev - 1, put_rev] {
        tree.remove(revision::row_key(Revision { main, sub: 0 }, false))
            .unwrap();
    }
    drop(tree);
    let Fixture { dir, db, store } = f;
    drop(store);
    db.flush().unwrap();
    drop(db);
    let db = super::open_db(dir.path());
    match MvccStore::open(&db) {
        Err(StorageError::Corrupt(why)) => assert!(why.contains("no put before it"), "{why}"),
        other => panic!("opened: {:?}", other.map(|_| ())),
    }
}

#[test]
fn the_compaction_batch_limit_bounds_each_step() {
    // 95 keys with one superseded revision each: the default limit removes them in one
    // step, a limit of 10 in ten.
    for (limit, steps) in [(0, 1), (10, 10), (1000, 1)] {
        let f = fixture();
        for i in 0..95 {
            put(&f.store, &format!("k{i:03}"), "1");
            put(&f.store, &format!("k{i:03}"), "2");
        }
        f.store.set_compaction_batch_limit(limit);
        let done = f
            .store
            .remove_compacted(f.store.current_revision())
            .unwrap();
        assert_eq!(done, CompactedHistory { rows: 95, steps }, "limit {limit}");
        assert_eq!(kv_rows(&f.store), 95);
    }
}

/// The deletion rests twice as long as a batch worked, and at least etcd's pause between
/// steps.
#[test]
fn the_deletion_rests_in_proportion_to_its_work() {
    assert_eq!(
        compact::delete_pause(Duration::ZERO),
        compact::COMPACT_STEP_PAUSE
    );
    assert_eq!(
        compact::delete_pause(Duration::from_millis(30)),
        Duration::from_millis(30) * compact::COMPACT_DELETE_REST_PER_WORK
    );
    assert!(compact::delete_pause(Duration::from_millis(100)) > Duration::from_millis(100));
}
