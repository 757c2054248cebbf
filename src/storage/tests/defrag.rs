//! Defragment and the repair of an interrupted one (see `storage::defrag`).

use super::*;

fn put_n(s: &MvccStore, prefix: &str, n: usize, value_len: usize) {
    for i in 0..n {
        apply(
            s,
            Request::Put(PutRequest {
                key: format!("{prefix}{i:05}").into_bytes(),
                value: vec![b'x'; value_len],
                ..Default::default()
            }),
        );
    }
}

fn get(s: &MvccStore, key: &str) -> Option<KeyValue> {
    s.range(&RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    })
    .unwrap()
    .kvs
    .into_iter()
    .next()
}

#[test]
fn defragment_gives_space_back_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let shared = sled::open(dir.path().join("db")).unwrap();
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    put_n(&s, "big/", 2000, 1000);
    put_n(&s, "keep/", 10, 10);
    apply(
        &s,
        Request::DeleteRange(DeleteRangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        }),
    );
    let rev = s.current_revision();
    apply(
        &s,
        Request::Compaction(CompactionRequest {
            revision: rev,
            physical: false,
        }),
    );
    s.flush().unwrap();
    let hash = s.hash_kv(0).unwrap();
    let d = s.defragment().unwrap();
    assert!(d.after_bytes < d.before_bytes / 2, "{d:?}");
    assert_eq!(s.size_on_disk().unwrap(), d.after_bytes);
    assert_eq!(s.hash_kv(0).unwrap(), hash);
    assert!(get(&s, "keep/00003").is_some());
    assert_eq!(s.size_in_use().unwrap(), s.size_in_use_read().unwrap());
    // Writes go to the new database, and a second defragment replaces it again.
    put_n(&s, "after/", 3, 10);
    s.defragment().unwrap();
    drop(s);
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    assert_eq!(s.current_revision(), rev + 3);
    assert!(get(&s, "after/00002").is_some());
    assert!(!dir.path().join("mvcc.old").exists());
}

#[test]
fn interrupted_defragments_are_repaired_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let shared = sled::open(dir.path().join("db")).unwrap();
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    put_n(&s, "k/", 5, 10);
    s.flush().unwrap();
    drop(s);
    let (live, copy, old) = (
        dir.path().join("mvcc"),
        dir.path().join("mvcc.defrag"),
        dir.path().join("mvcc.old"),
    );
    // An unfinished copy beside the live database: dropped.
    std::fs::create_dir(&copy).unwrap();
    std::fs::write(copy.join("db"), b"partial").unwrap();
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    assert!(!copy.exists());
    assert!(get(&s, "k/00004").is_some());
    drop(s);
    // A finished copy between the two renames: moved into place, the old one removed.
    std::fs::rename(&live, &copy).unwrap();
    std::fs::create_dir(&old).unwrap();
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    assert!(live.exists() && !copy.exists() && !old.exists());
    assert!(get(&s, "k/00004").is_some());
}

#[test]
fn an_emptied_store_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = sled::open(dir.path().join("db")).unwrap();
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    drop(s);
    let mvcc = dir.path().join("mvcc");
    std::fs::remove_dir_all(&mvcc).unwrap();
    std::fs::create_dir(&mvcc).unwrap();
    let err = MvccStore::open_dir(dir.path(), &shared).err().unwrap();
    assert!(err.to_string().contains("lost its contents"), "{err}");
}

#[test]
fn an_older_data_dir_keeps_its_store_until_a_defragment_moves_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let shared = sled::open(dir.path().join("db")).unwrap();
    // A data dir made before the store had its own database: the tree is in `db/`.
    let s = MvccStore::open(&shared).unwrap();
    put_n(&s, "k/", 5, 10);
    drop(s);
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    assert!(!dir.path().join("mvcc").exists());
    assert!(get(&s, "k/00004").is_some());
    let rev = s.current_revision();
    s.defragment().unwrap();
    assert!(dir.path().join("mvcc").exists());
    assert!(shared.open_tree(backend::TREE_NAME).unwrap().is_empty());
    drop(s);
    let s = MvccStore::open_dir(dir.path(), &shared).unwrap();
    assert_eq!(s.current_revision(), rev);
    assert!(get(&s, "k/00004").is_some());
}
