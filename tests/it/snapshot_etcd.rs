//! Snapshot files in etcd's own format, both ways, against real etcd 3.4:
//! - a snapshot of etcd restored by `minietcdctl snapshot restore` into a three-member
//!   minietcd, which then answers like etcd (ranges at several revisions, leases, users,
//!   roles) on every member;
//! - a snapshot of minietcd read by etcdctl (`snapshot status`, `snapshot restore`) and
//!   served by a real etcd started from the restored dir;
//! - damaged files refused by minietcdctl with etcdctl's one line.

use std::path::Path;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::maint::{ctl, ctl_out, error_line, json, minietcdctl};

/// The lease's TTL: long enough not to expire during a test.
const LEASE_TTL_SECS: &str = "600";

/// Writes a history with overwrites, deletes, a compaction, a lease with two keys, a user and
/// a role (auth stays off); returns the lease id (hex) and the compaction revision.
fn fill(ep: &str) -> (String, i64) {
    for i in 0..40 {
        ctl(ep, &["put", &format!("k/{i:02}"), &format!("v{i}")]);
    }
    ctl(ep, &["del", "k/03"]);
    ctl(ep, &["del", "k/10", "k/15"]);
    for i in 0..5 {
        ctl(ep, &["put", &format!("k/{i:02}"), "again"]);
    }
    let compacted = json(&ctl(ep, &["get", "k/00", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .unwrap();
    ctl(ep, &["compact", &compacted.to_string()]);
    let granted = ctl(ep, &["lease", "grant", LEASE_TTL_SECS]);
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    ctl(ep, &["put", "leased/1", "x", "--lease", &lease]);
    ctl(ep, &["put", "leased/2", "y", "--lease", &lease]);
    ctl(ep, &["put", "big", &"z".repeat(9000)]);
    ctl(ep, &["del", "k/20"]);
    ctl(ep, &["user", "add", "alice:secret"]);
    ctl(ep, &["role", "add", "reader"]);
    ctl(
        ep,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "k/",
            "--prefix",
        ],
    );
    ctl(ep, &["user", "grant-role", "alice", "reader"]);
    (lease, compacted)
}

/// What a client sees: every key at several revisions (the header's ids masked), a revision
/// below the compaction, the lease (granted TTL and keys) and the users and roles.
fn answers(ep: &str, lease: &str, compacted: i64) -> Vec<String> {
    let current = json(&ctl(ep, &["get", "k/00", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .unwrap();
    let mut out = vec![format!("revision {current}")];
    for rev in [
        compacted,
        compacted + 1,
        compacted + 4,
        current - 1,
        current,
    ] {
        let mut v = json(&ctl(
            ep,
            &["get", "", "--prefix", "-w", "json", &format!("--rev={rev}")],
        ));
        v["header"] = v["header"]["revision"].clone();
        out.push(v.to_string());
    }
    let below = ctl_out(ep, &["get", "k/00", &format!("--rev={}", compacted - 1)]);
    out.push(error_line(&String::from_utf8_lossy(&below.stderr)));
    let ttl = ctl(ep, &["lease", "timetolive", lease, "--keys"]);
    // "lease X granted with TTL(600s), remaining(598s), attached keys([...])"
    let (granted, rest) = ttl.split_once(", remaining(").unwrap();
    // etcd 3.4 lists the attached keys in its map's (random) order: compared as a set.
    let attached = rest.split_once("attached keys([").unwrap().1;
    let mut keys: Vec<&str> = attached
        .trim_end()
        .trim_end_matches("])")
        .split(' ')
        .collect();
    keys.sort_unstable();
    out.push(format!("{granted} attached keys({keys:?})"));
    out.push(ctl(ep, &["lease", "list"]));
    for args in [
        &["user", "list"][..],
        &["user", "get", "alice"],
        &["role", "list"],
        &["role", "get", "reader"],
    ] {
        out.push(ctl(ep, args));
    }
    out
}

/// `snapshot status` by both tools in two formats: the same output.
fn same_status(file: &Path) -> serde_json::Value {
    let f = file.to_str().unwrap();
    for format in ["simple", "json", "table"] {
        let theirs = ctl("127.0.0.1:1", &["snapshot", "status", f, "-w", format]);
        let ours = minietcdctl(&["snapshot", "status", f, "-w", format]);
        assert!(ours.status.success(), "{ours:?}");
        assert_eq!(String::from_utf8_lossy(&ours.stdout), theirs, "-w {format}");
    }
    json(&ctl(
        "127.0.0.1:1",
        &["snapshot", "status", f, "-w", "json"],
    ))
}

#[tokio::test]
async fn snapshot_of_etcd_restores_into_a_three_member_minietcd() {
    let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1)).await;
    let (lease, compacted) = fill(&etcd.endpoint(0));
    let expected = answers(&etcd.endpoint(0), &lease, compacted);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("etcd.db");
    ctl(
        &etcd.endpoint(0),
        &["snapshot", "save", file.to_str().unwrap()],
    );
    let st = same_status(&file);
    assert_eq!(format!("revision {}", st["revision"]), expected[0]);

    let mut dst = Cluster::reserve(ClusterConfig::new(ServerKind::Minietcd, 3));
    let token = Cluster::token();
    for i in 0..3 {
        let m = &dst.members[i];
        let out = minietcdctl(&[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--name",
            &m.name,
            "--initial-cluster",
            dst.initial_cluster(),
            "--initial-cluster-token",
            &token,
            "--initial-advertise-peer-urls",
            &m.advertised_peer_url(),
            "--data-dir",
            m.data_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "restore {i}: {out:?}");
    }
    dst.start_reserved();
    dst.wait_ready().await;
    for i in 0..3 {
        assert_eq!(
            answers(&dst.endpoint(i), &lease, compacted),
            expected,
            "member {i}"
        );
    }
    // The members are the new cluster's, and it takes writes.
    let members = ctl(&dst.endpoint(0), &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    ctl(&dst.endpoint(2), &["put", "after", "restore"]);
}

#[tokio::test]
async fn snapshot_of_minietcd_restores_into_a_real_etcd() {
    let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let (lease, compacted) = fill(&ours.endpoint(0));
    let expected = answers(&ours.endpoint(0), &lease, compacted);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("minietcd.db");
    let f = file.to_str().unwrap();
    // etcdctl's save, status (which checks every page as bbolt) and restore, unchanged.
    ctl(&ours.endpoint(0), &["snapshot", "save", f]);
    assert_eq!(std::fs::metadata(&file).unwrap().len() % 512, 32);
    // The member's scratch file went with the stream.
    let scratch: Vec<_> = std::fs::read_dir(&ours.members[0].data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
    let st = same_status(&file);
    assert_eq!(format!("revision {}", st["revision"]), expected[0]);

    let mut etcd = Cluster::reserve(ClusterConfig::new(ServerKind::Etcd, 1));
    let m = &etcd.members[0];
    let out = ctl_out(
        "127.0.0.1:1",
        &[
            "snapshot",
            "restore",
            f,
            "--name",
            &m.name,
            "--initial-cluster",
            etcd.initial_cluster(),
            "--initial-cluster-token",
            &Cluster::token(),
            "--initial-advertise-peer-urls",
            &m.advertised_peer_url(),
            "--data-dir",
            m.data_dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "etcdctl restore: {out:?}");
    etcd.start_reserved();
    etcd.wait_ready().await;
    assert_eq!(answers(&etcd.endpoint(0), &lease, compacted), expected);
}

#[tokio::test]
async fn damaged_snapshots_are_refused_with_etcdctls_line() {
    let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    fill(&ours.endpoint(0));
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("good.db");
    ctl(
        &ours.endpoint(0),
        &["snapshot", "save", file.to_str().unwrap()],
    );
    let good = std::fs::read(&file).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x55;
    // Not a database, with a right hash.
    let mut garbage = b"not a database ".repeat(100);
    garbage.truncate(1024);
    let sum = <sha2::Sha256 as sha2::Digest>::digest(&garbage);
    garbage.extend_from_slice(&sum);
    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("flipped", flipped),
        ("no-hash", good[..good.len() - 32].to_vec()),
        ("garbage", garbage),
    ];
    for (name, bytes) in cases {
        let path = work.path().join(format!("{name}.db"));
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let dir = work.path().join(format!("{name}.restored"));
        let args = [
            "snapshot",
            "restore",
            p,
            "--data-dir",
            dir.to_str().unwrap(),
        ];
        let ours = minietcdctl(&args);
        let err = String::from_utf8_lossy(&ours.stderr).into_owned();
        assert!(!ours.status.success(), "{name} accepted");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(!dir.exists(), "{name}: a data dir was left");
        // etcdctl refuses the same file with the same line (it panics on a database whose
        // hash is right but whose meta pages are not; ours says bbolt's "invalid database").
        if name != "garbage" {
            let theirs = ctl_out("127.0.0.1:1", &args);
            assert!(!theirs.status.success(), "etcdctl accepted {name}");
            assert_eq!(
                err.trim_end(),
                error_line(&String::from_utf8_lossy(&theirs.stderr)),
                "{name}"
            );
        } else {
            assert_eq!(err, "Error: invalid database\n");
        }
    }
    // status reads the pages without the hash, as etcdctl: a truncated file is refused
    // (etcdctl dies of SIGBUS on it), a garbled one is not a database.
    let status = |name: &str| {
        let p = work.path().join(format!("{name}.db"));
        let out = minietcdctl(&["snapshot", "status", p.to_str().unwrap()]);
        assert!(!out.status.success(), "status of {name}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let t = status("truncated");
    assert!(
        t.starts_with("Error: truncated: ") && t.lines().count() == 1,
        "{t}"
    );
    let garbage_path = work.path().join("garbage.db");
    let theirs = ctl_out(
        "127.0.0.1:1",
        &["snapshot", "status", garbage_path.to_str().unwrap()],
    );
    assert_eq!(
        status("garbage").trim_end(),
        error_line(&String::from_utf8_lossy(&theirs.stderr))
    );
}
