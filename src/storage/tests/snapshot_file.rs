//! Snapshot files in etcd's format: the store written out and read back, and a snapshot real
//! etcd 3.4.23 wrote read into a store.

use std::path::{Path, PathBuf};

use super::*;
use crate::storage::snapshot_file::{self, ExportInfo, ExportMember, SnapshotFileError};

/// The file `etcdctl snapshot save` wrote from etcd 3.4.23 (see `bbolt/tests.rs`): keys a
/// (put at 2 and 4), b (put at 3, deleted at 5), compacted at 3, `leased` on lease
/// 0x390da23116ea3b0a (TTL 100) at 6, many/1..many/300 at 7..306, `big` (10000 x) at 307,
/// user u1 with role r1 (read /foo).
fn etcd_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/storage/bbolt/testdata/etcd-3.4.23.db")
}

fn info() -> ExportInfo {
    ExportInfo {
        members: vec![ExportMember {
            id: 0x8e9e_05c5_2164_694d,
            name: "m1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
        }],
        applied_index: |blob| blob.len() as u64,
    }
}

fn export(store: &MvccStore, dir: &Path) -> PathBuf {
    let path = dir.join("snap.db");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let size = store
        .with_rows(|rows| snapshot_file::write_etcd(&mut file, rows, &info()))
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert_eq!(size % 512, 32, "etcdctl's test for the hash trailer");
    path
}

/// Every row but the commit record (which carries the source's `applied` blob).
fn rows(store: &MvccStore) -> Vec<(sled::IVec, sled::IVec)> {
    store
        .tree()
        .iter()
        .map(Result::unwrap)
        .filter(|(k, _)| k.as_ref() != backend::META_COMMIT)
        .collect()
}

#[test]
fn the_store_roundtrips_through_an_etcd_snapshot_file() {
    let f = fixture();
    super::auth::setup_root(&f.store);
    apply(
        &f.store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 9 }),
    );
    for i in 0..400 {
        put(&f.store, &format!("k/{i:03}"), &"v".repeat(i % 50));
    }
    put_lease(&f.store, "leased", "x", 9);
    del(&f.store, "k/001", "k/005");
    apply(
        &f.store,
        Request::Compaction(CompactionRequest {
            revision: 100,
            physical: true,
        }),
    );
    put(&f.store, "big", &"x".repeat(20_000));
    let rev = f.store.current_revision();

    let work = tempfile::tempdir().unwrap();
    let path = export(&f.store, work.path());
    let st = snapshot_file::status(&path).unwrap();
    assert_eq!(st.revision, rev);
    let imported = snapshot_file::read_etcd(&path, false).unwrap();
    assert_eq!(imported.status, st);

    let g = fixture();
    g.store.install_rows(imported.rows).unwrap();
    assert_eq!(g.store.current_revision(), rev);
    assert_eq!(g.store.compact_revision(), 100);
    assert_eq!(rows(&g.store), rows(&f.store));
    assert_eq!(
        g.store.lease_info(9).unwrap().unwrap().keys,
        vec![b"leased".to_vec()]
    );
    assert_eq!(
        g.store.auth_status().unwrap(),
        f.store.auth_status().unwrap()
    );
}

#[test]
fn an_etcd_snapshot_restores_keys_history_leases_and_auth() {
    let imported = snapshot_file::read_etcd(&etcd_fixture(), false).unwrap();
    // What etcdctl 3.4.23's `snapshot status -w json` printed for this file.
    assert_eq!(imported.status.hash, 3_255_341_517);
    assert_eq!(imported.status.revision, 307);
    assert_eq!(imported.status.total_keys, 315);
    assert_eq!(imported.status.total_size, 65536);
    let f = fixture();
    f.store.install_rows(imported.rows).unwrap();
    let s = &f.store;
    assert_eq!((s.current_revision(), s.compact_revision()), (307, 3));
    let value = |k: &str, rev: i64| get(s, k, rev).unwrap().map(|kv| kv.value);
    assert_eq!(value("a", 3), Some(b"1".to_vec()));
    assert_eq!(value("a", 4), Some(b"3".to_vec()));
    assert_eq!(value("b", 4), Some(b"2".to_vec()));
    assert_eq!(value("b", 5), None);
    assert!(matches!(get(s, "a", 2), Err(StorageError::Compacted)));
    assert_eq!(value("big", 0), Some(vec![b'x'; 10_000]));
    assert_eq!(range(s, "many/", "many0").kvs.len(), 300);
    let kv = get(s, "a", 0).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 2));
    let lease = s.lease_info(0x390d_a231_16ea_3b0a).unwrap().unwrap();
    assert_eq!(lease.granted_ttl_secs, 100);
    assert_eq!(lease.keys, vec![b"leased".to_vec()]);
    assert_eq!(s.auth_status().unwrap(), (false, 5));
    let tree = s.tree();
    assert!(tree.get(b"A/u/u1").unwrap().is_some());
    assert!(tree.get(b"A/r/r1").unwrap().is_some());
}

#[test]
fn damaged_files_are_refused_with_etcdctls_words() {
    let work = tempfile::tempdir().unwrap();
    let good = std::fs::read(etcd_fixture()).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = work.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let err = |p: &Path, skip: bool| snapshot_file::read_etcd(p, skip).unwrap_err().to_string();

    let truncated = write("truncated.db", &good[..good.len() / 2]);
    assert_eq!(
        err(&truncated, false),
        "snapshot missing hash but --skip-hash-check=false"
    );
    let e = snapshot_file::status(&truncated).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");

    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x55;
    let flipped = write("flipped.db", &flipped);
    let e = err(&flipped, false);
    assert!(e.starts_with("expected sha256 [44 2 118 62 "), "{e}");
    assert!(e.contains("], got ["), "{e}");

    // Without its hash the database is accepted only when told to skip the check.
    let bare = write("bare.db", &good[..good.len() - 32]);
    assert_eq!(
        err(&bare, false),
        "snapshot missing hash but --skip-hash-check=false"
    );
    assert_eq!(
        snapshot_file::read_etcd(&bare, true)
            .unwrap()
            .status
            .revision,
        307
    );

    // Both meta pages garbled, hash recomputed: bbolt's "invalid database".
    let mut db = good[..good.len() - 32].to_vec();
    db[16] ^= 0x55;
    db[4096 + 16] ^= 0x55;
    let sum = <sha2::Sha256 as sha2::Digest>::digest(&db);
    db.extend_from_slice(&sum);
    let invalid = write("invalid.db", &db);
    assert_eq!(err(&invalid, false), "invalid database");
    assert_eq!(
        snapshot_file::status(&invalid).unwrap_err().to_string(),
        "invalid database"
    );

    let missing = work.path().join("missing.db");
    let e = snapshot_file::read_etcd(&missing, false).unwrap_err();
    assert!(matches!(e, SnapshotFileError::Open { .. }));
    assert_eq!(
        e.to_string(),
        format!("open {}: no such file or directory", missing.display())
    );
}
