//! The Maintenance service against real etcd 3.4, through etcdctl: hashes (HashKV equal to
//! etcd's for the same history, equal on every member), alarms and the space quota,
//! defragment, snapshots (save, status, restore into a new cluster).
//!
//! Each scenario drives the same etcdctl commands at a one-member etcd and a one-member
//! minietcd (or a three-member minietcd), then compares what etcdctl printed. When a test
//! fails the member logs are printed (the cluster's temp dir goes with it).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::{output_within, require_program, wait_until};

/// How long one etcdctl command may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs etcdctl against `endpoints`, bounded by [`CTL_TIMEOUT`].
pub(crate) fn ctl_out(endpoints: &str, args: &[&str]) -> Output {
    output_within(
        Command::new(require_program("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=10s")
            .args(args),
        "",
        CTL_TIMEOUT,
    )
}

/// etcdctl that must succeed; its stdout.
pub(crate) fn ctl(endpoints: &str, args: &[&str]) -> String {
    let out = ctl_out(endpoints, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// etcdctl that must fail; its stderr.
pub(crate) fn ctl_err(endpoints: &str, args: &[&str]) -> String {
    let out = ctl_out(endpoints, args);
    assert!(
        !out.status.success(),
        "etcdctl {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line of etcdctl's error output with the timestamp prefix removed
/// (`{"level":...}` lines and dates vary between runs).
pub(crate) fn error_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    match line.find("Error: ") {
        Some(p) => line[p..].to_string(),
        None => line.to_string(),
    }
}

pub(crate) fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// `(hash, compact_revision, header revision)` from `endpoint hashkv -w json`.
pub(crate) fn hashkv(endpoint: &str, rev: i64) -> (u64, i64, i64) {
    let out = ctl(
        endpoint,
        &["endpoint", "hashkv", "-w", "json", &format!("--rev={rev}")],
    );
    let v = json(&out);
    let h = &v[0]["HashKV"];
    (
        h["hash"].as_u64().unwrap_or(0),
        h["compact_revision"].as_i64().unwrap_or(0),
        h["header"]["revision"].as_i64().unwrap_or(0),
    )
}

/// The same writes on both servers: puts, overwrites, deletes, a multi-key delete, a txn.
fn same_history(endpoint: &str) {
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("d", "5")] {
        ctl(endpoint, &["put", k, v]);
    }
    ctl(endpoint, &["del", "b"]);
    ctl(endpoint, &["put", "b", "6"]);
    ctl(endpoint, &["del", "c", "e"]);
    ctl(endpoint, &["put", "a", "7"]);
}

#[tokio::test]
async fn maint_hashkv_matches_etcd_for_the_same_history() {
    let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1)).await;
    let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let (e, o) = (etcd.endpoint(0), ours.endpoint(0));
    same_history(&e);
    same_history(&o);
    // Revisions 1..=10 exist on both; 0 is the current one.
    for rev in [0, 1, 2, 4, 7, 9, 10] {
        assert_eq!(hashkv(&e, rev), hashkv(&o, rev), "hashkv --rev={rev}");
    }
    let (h_now, _, _) = hashkv(&o, 0);
    let (h_before, _, _) = hashkv(&o, 9);
    assert_ne!(h_now, h_before, "different data, different hash");
    // After a compaction the hash at a kept revision is unchanged, and the errors agree.
    for ep in [&e, &o] {
        ctl(ep, &["compact", "6"]);
    }
    for rev in [0, 7, 9, 10] {
        assert_eq!(
            hashkv(&e, rev),
            hashkv(&o, rev),
            "hashkv --rev={rev} after compact"
        );
    }
    for rev in ["5", "6", "11"] {
        let args = ["endpoint", "hashkv", "--rev", rev];
        assert_eq!(
            error_line(&ctl_err(&e, &args)),
            error_line(&ctl_err(&o, &args)),
            "hashkv --rev={rev} error"
        );
    }
    // The table output has the same shape (endpoints and hashes aside, same columns).
    let t = ctl(&o, &["endpoint", "hashkv", "-w", "table"]);
    assert!(t.contains("ENDPOINT") && t.contains("HASH"), "{t}");
}

#[tokio::test]
async fn maint_hash_and_hashkv_agree_on_every_member() {
    let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let all = ours.endpoints().join(",");
    same_history(&ours.endpoint(0));
    ctl(&ours.endpoint(1), &["compact", "5"]);
    ctl(&ours.endpoint(2), &["put", "z", "last"]);
    // Every member applies the same entries; poll until they all report the same revision.
    let rev = hashkv(&ours.endpoint(0), 0).2;
    wait_until(
        "every member at the same revision",
        Duration::from_secs(10),
        || {
            (0..3)
                .all(|i| hashkv(&ours.endpoint(i), 0).2 == rev)
                .then_some(())
        },
    );
    let out = json(&ctl(&all, &["endpoint", "hashkv", "-w", "json"]));
    let hashes: Vec<u64> = (0..3)
        .map(|i| out[i]["HashKV"]["hash"].as_u64().unwrap())
        .collect();
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{out}");
    assert_eq!(out[0]["HashKV"]["compact_revision"], 5, "{out}");
    // Hash (the whole store) through the client library.
    let mut whole = Vec::new();
    for i in 0..3 {
        let mut c = etcd_client::Client::connect([ours.endpoint(i)], None)
            .await
            .unwrap();
        whole.push(c.hash().await.unwrap().hash());
    }
    assert!(whole.iter().all(|h| *h == whole[0]), "{whole:?}");
}

/// Whether `path` exists and is a non-empty file.
fn non_empty(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}

/// Replaces every member id (decimal, as alarms print them) with `<ID>`.
fn mask_ids(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(p) = rest.find("memberID:") {
        out.push_str(&rest[..p + 9]);
        rest = &rest[p + 9..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push_str("<ID>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Fills the store with 20 KB values until a put fails; returns how many succeeded and the
/// error line of the failed put.
fn fill_until_refused(endpoint: &str) -> (usize, String) {
    let value = "x".repeat(20_000);
    for i in 0..400 {
        // A put that fails for another reason than the quota (a timeout on a loaded machine)
        // is tried again; the quota's refusal ends the fill.
        let mut last = String::new();
        for _attempt in 0..3 {
            let out = ctl_out(endpoint, &["put", &format!("fill/{i:04}"), &value]);
            if out.status.success() {
                last.clear();
                break;
            }
            last = error_line(&String::from_utf8_lossy(&out.stderr));
            if last.contains("database space exceeded") {
                return (i, last);
            }
        }
        assert!(last.is_empty(), "put {i} failed three times: {last}");
    }
    panic!("400 puts of 20 KB never hit the quota");
}

/// The quota scenario: what etcdctl prints at each step, member ids masked.
fn quota_transcript(endpoint: &str) -> Vec<String> {
    let mut t = Vec::new();
    let (n, refused) = fill_until_refused(endpoint);
    assert!(n > 10, "the quota refused writes too early ({n} puts)");
    t.push(refused);
    t.push(mask_ids(&ctl(endpoint, &["alarm", "list"])));
    // Writes that grow the store fail; reads and deletes work.
    t.push(error_line(&ctl_err(endpoint, &["put", "k", "v"])));
    t.push(error_line(&ctl_err(endpoint, &["lease", "grant", "100"])));
    t.push(
        ctl(endpoint, &["get", "fill/0000", "--print-value-only"])
            .len()
            .to_string(),
    );
    t.push(ctl(endpoint, &["del", "fill/0001"]));
    let status = ctl(endpoint, &["endpoint", "status", "-w", "json"]);
    t.push(mask_ids(&json(&status)[0]["Status"]["errors"].to_string()));
    t
}

#[tokio::test]
async fn maint_quota_raises_nospace_like_etcd() {
    let quota = "--quota-backend-bytes=3000000";
    let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1).arg(quota)).await;
    let mut ours =
        Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1).arg(quota)).await;
    let (e, o) = (etcd.endpoint(0), ours.endpoint(0));
    {
        let theirs = quota_transcript(&e);
        let mine = quota_transcript(&o);
        assert_eq!(theirs, mine);
        assert_eq!(
            mine[0], "Error: etcdserver: mvcc: database space exceeded",
            "{mine:?}"
        );
        assert!(
            mine[1].starts_with("memberID:<ID> alarm:NOSPACE"),
            "{mine:?}"
        );
    }
    // Disarm answers the cleared alarm, on both servers.
    for ep in [&e, &o] {
        let disarmed = mask_ids(&ctl(ep, &["alarm", "disarm"]));
        assert_eq!(disarmed, "memberID:<ID> alarm:NOSPACE \n", "{ep}");
        assert_eq!(ctl(ep, &["alarm", "list"]), "", "{ep}");
    }
    // The space is still near the quota, so writing on raises the alarm again. How many puts
    // that takes is not fixed on either server: bbolt grows its file in steps, and sled
    // reclaims segments freed by the delete above and may shrink its file.
    for ep in [&e, &o] {
        let (_, refused) = fill_until_refused(ep);
        assert_eq!(
            refused, "Error: etcdserver: mvcc: database space exceeded",
            "{ep}"
        );
        assert!(
            ctl(ep, &["alarm", "list"]).contains("alarm:NOSPACE"),
            "{ep}"
        );
    }
    // The alarm is kept across a restart.
    ours.restart(0);
    ours.wait_ready().await;
    assert!(ctl(&o, &["alarm", "list"]).contains("alarm:NOSPACE"));
    assert_eq!(
        error_line(&ctl_err(&o, &["put", "k", "v"])),
        "Error: etcdserver: mvcc: database space exceeded"
    );
}

#[tokio::test]
async fn maint_alarm_is_replicated_to_every_member() {
    let ours = Cluster::start_ready(
        ClusterConfig::new(ServerKind::Minietcd, 3).arg("--quota-backend-bytes=2000000"),
    )
    .await;
    let (n, refused) = fill_until_refused(&ours.endpoint(1));
    assert!(n > 0);
    assert_eq!(refused, "Error: etcdserver: mvcc: database space exceeded");
    // Every member refuses growing writes, whichever member raised the alarm.
    for i in 0..3 {
        let ep = ours.endpoint(i);
        wait_until(
            "the alarm reaches every member",
            Duration::from_secs(10),
            || {
                ctl(&ep, &["alarm", "list"])
                    .contains("alarm:NOSPACE")
                    .then_some(())
            },
        );
        assert_eq!(
            error_line(&ctl_err(&ep, &["put", "small", "v"])),
            "Error: etcdserver: mvcc: database space exceeded"
        );
    }
    // A client's ACTIVATE and DEACTIVATE work as on etcd (here through etcd-client).
    let mut c = etcd_client::Client::connect([ours.endpoint(0)], None)
        .await
        .unwrap();
    let list = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    // Each member whose own quota check failed raised its own alarm, as etcd members do.
    let before = list.alarms().len();
    assert!(before >= 1, "no alarm listed");
    let id = list.alarms()[0].member_id();
    let off = c
        .alarm(
            etcd_client::AlarmAction::Deactivate,
            etcd_client::AlarmType::Nospace,
            Some(alarm_member(id)),
        )
        .await
        .unwrap();
    assert_eq!(off.alarms().len(), 1);
    let after = ctl(&ours.endpoint(2), &["alarm", "list"]);
    assert_eq!(after.lines().count(), before - 1, "{after}");
    let raised = c
        .alarm(
            etcd_client::AlarmAction::Activate,
            etcd_client::AlarmType::Corrupt,
            Some(alarm_member(7)),
        )
        .await
        .unwrap();
    assert_eq!(raised.alarms()[0].member_id(), 7);
    assert!(ctl(&ours.endpoint(2), &["alarm", "list"]).contains("memberID:7 alarm:CORRUPT"));
}

fn alarm_member(id: u64) -> etcd_client::AlarmOptions {
    let mut o = etcd_client::AlarmOptions::new();
    o.with_member(id);
    o
}

/// Runs minietcdctl (no endpoint needed for the snapshot file commands).
pub(crate) fn minietcdctl(args: &[&str]) -> Output {
    Command::new(crate::support::workspace_bin("minietcdctl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run minietcdctl")
}

/// Every key with its revisions, from `get --prefix -w json` (header and ids dropped).
fn all_keys(endpoint: &str) -> (i64, serde_json::Value) {
    let v = json(&ctl(endpoint, &["get", "", "--prefix", "-w", "json"]));
    (v["header"]["revision"].as_i64().unwrap(), v["kvs"].clone())
}

#[tokio::test]
async fn maint_snapshot_save_status_restore_into_a_new_cluster() {
    let src = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let mut dst = Cluster::reserve(ClusterConfig::new(ServerKind::Minietcd, 3));
    let ep = src.endpoint(0);
    for i in 0..50 {
        ctl(&ep, &["put", &format!("k/{i:02}"), &format!("v{i}")]);
    }
    ctl(&ep, &["del", "k/1", "k/2"]);
    ctl(&ep, &["compact", "30"]);
    for i in 0..5 {
        ctl(&ep, &["put", &format!("k/{i:02}"), "again"]);
    }
    let (rev, kvs) = all_keys(&ep);
    let (hash, compacted, _) = hashkv(&ep, 0);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("snap.db");
    let file_s = file.to_str().unwrap();

    // etcdctl's save, unchanged.
    let saved = ctl(&ep, &["snapshot", "save", file_s]);
    assert_eq!(saved, format!("Snapshot saved at {file_s}\n"));
    assert!(non_empty(&file));
    let st = minietcdctl(&["snapshot", "status", file_s, "-w", "json"]);
    assert!(st.status.success(), "{st:?}");
    let st = json(&String::from_utf8_lossy(&st.stdout));
    assert_eq!(st["revision"], rev, "{st}");
    // The database's size: the file less etcd's sha256 trailer.
    assert_eq!(
        st["totalSize"],
        std::fs::metadata(&file).unwrap().len() - 32,
        "{st}"
    );
    let simple = minietcdctl(&["snapshot", "status", file_s]);
    let simple = String::from_utf8_lossy(&simple.stdout).into_owned();
    assert_eq!(simple.split(", ").count(), 4, "{simple}");

    // A damaged copy is refused with one line (etcdctl's), and no data dir is left behind.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let bad = work.path().join("bad.db");
    std::fs::write(&bad, &bytes).unwrap();
    let dir = work.path().join("never");
    let out = minietcdctl(&[
        "snapshot",
        "restore",
        bad.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a damaged file was accepted");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("Error: expected sha256 ["), "{err}");
    assert!(!dir.exists());

    // Restore one data dir per member of a new cluster, then start it.
    let token = Cluster::token();
    for i in 0..3 {
        let m = &dst.members[i];
        let out = minietcdctl(&[
            "snapshot",
            "restore",
            file_s,
            "--name",
            &m.name,
            "--initial-cluster",
            dst.initial_cluster(),
            "--initial-cluster-token",
            &token,
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{}", m.peer_port.port),
            "--data-dir",
            m.data_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "restore {i}: {out:?}");
    }
    // Restoring over an existing dir is refused, as with etcd.
    let again = minietcdctl(&[
        "snapshot",
        "restore",
        file_s,
        "--data-dir",
        dst.members[0].data_dir.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    dst.start_reserved();
    dst.wait_ready().await;
    for i in 0..3 {
        let e = dst.endpoint(i);
        assert_eq!(all_keys(&e), (rev, kvs.clone()), "member {i}");
        assert_eq!(hashkv(&e, 0), (hash, compacted, rev), "member {i}");
    }
    // The new cluster goes on from the snapshot's revision, with its own members.
    ctl(&dst.endpoint(1), &["put", "after", "restore"]);
    let members = ctl(&dst.endpoint(2), &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for i in 0..3 {
        let e = dst.endpoint(i);
        wait_until(
            "the new write on every member",
            Duration::from_secs(10),
            || (all_keys(&e).0 == rev + 1).then_some(()),
        );
    }
}

#[tokio::test]
async fn maint_snapshot_save_prints_like_etcd() {
    let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1)).await;
    let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let work = tempfile::tempdir().unwrap();
    for (c, name) in [(&etcd, "etcd.db"), (&ours, "ours.db")] {
        ctl(&c.endpoint(0), &["put", "k", "v"]);
        let f = work.path().join(name);
        let f_s = f.to_str().unwrap();
        assert_eq!(
            ctl(&c.endpoint(0), &["snapshot", "save", f_s]),
            format!("Snapshot saved at {f_s}\n")
        );
        assert!(non_empty(&f));
    }
    // etcdctl refuses more than one endpoint for both, before any request.
    let two = format!("{},{}", ours.endpoint(0), etcd.endpoint(0));
    let f = work.path().join("two.db");
    let err = ctl_err(&two, &["snapshot", "save", f.to_str().unwrap()]);
    assert!(
        err.contains("snapshot must be requested to one selected node"),
        "{err}"
    );
}

/// `endpoint status -w json`'s dbSize.
fn db_size(endpoint: &str) -> u64 {
    let v = json(&ctl(endpoint, &["endpoint", "status", "-w", "json"]));
    v[0]["Status"]["dbSize"].as_u64().unwrap()
}

/// etcd's documented way out of NOSPACE: compact, defragment, disarm; then writes work.
/// `in_use_drops`: the size in use must fall after the compaction already (etcd 3.4 frees
/// bbolt's pages later, so this is checked on minietcd only).
fn recover_from_nospace(endpoint: &str, in_use_drops: bool) -> Vec<String> {
    let mut t = Vec::new();
    let (n, refused) = fill_until_refused(endpoint);
    assert!(n > 10, "{n}");
    t.push(refused);
    // How many keys fit differs (bbolt and sled store them differently): not compared.
    let deleted = ctl(endpoint, &["del", "fill/", "--prefix"]);
    // One more when the refused put had been tried before and timed out on a loaded machine
    // after it took effect (an unknown outcome is retried).
    let deleted: usize = deleted.trim().parse().unwrap();
    assert!(
        deleted == n || deleted == n + 1,
        "{deleted} keys deleted, {n} put"
    );
    let v = json(&ctl(endpoint, &["endpoint", "status", "-w", "json"]));
    let rev = v[0]["Status"]["header"]["revision"].as_i64().unwrap();
    ctl(endpoint, &["compact", &rev.to_string()]);
    let full = db_size(endpoint);
    let v = json(&ctl(endpoint, &["endpoint", "status", "-w", "json"]));
    let in_use = v[0]["Status"]["dbSizeInUse"].as_u64().unwrap();
    assert!(
        !in_use_drops || in_use < full / 2,
        "{endpoint}: {in_use} bytes in use of {full} after deleting and compacting"
    );
    let out = ctl(endpoint, &["defrag"]);
    t.push(out.replace(endpoint, "<EP>"));
    let after = db_size(endpoint);
    assert!(
        after < full / 2,
        "{endpoint}: db size {full} -> {after} after deleting, compacting and defragmenting"
    );
    t.push(mask_ids(&ctl(endpoint, &["alarm", "disarm"])));
    t.push(ctl(endpoint, &["put", "k", "v"]));
    t.push(ctl(endpoint, &["alarm", "list"]));
    t
}

#[tokio::test]
async fn maint_defrag_gives_space_back_like_etcd() {
    let quota = "--quota-backend-bytes=3000000";
    let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1).arg(quota)).await;
    let mut ours =
        Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1).arg(quota)).await;
    let (e, o) = (etcd.endpoint(0), ours.endpoint(0));
    {
        assert_eq!(
            recover_from_nospace(&e, false),
            recover_from_nospace(&o, true)
        );
        // The data survive the switch of database, and a restart after it.
        assert_eq!(ctl(&o, &["get", "k", "--print-value-only"]), "v\n");
    }
    ours.restart(0);
    ours.wait_ready().await;
    assert_eq!(ctl(&o, &["get", "k", "--print-value-only"]), "v\n");
    ctl(&o, &["put", "k2", "v2"]);
    // A second defragment replaces the store's own database.
    assert!(ctl(&o, &["defrag"]).starts_with("Finished defragmenting etcd member["));
    assert_eq!(ctl(&o, &["get", "k2", "--print-value-only"]), "v2\n");
}

/// Member ids (hex, as etcdctl takes them) and the leader's index, from `endpoint status`,
/// polled until the first member knows a leader (it may not yet, just after an election).
fn ids_and_leader(c: &Cluster) -> (Vec<String>, usize) {
    wait_until(
        "a leader in endpoint status",
        Duration::from_secs(10),
        || {
            let out = json(&ctl(
                &c.endpoints().join(","),
                &["endpoint", "status", "-w", "json"],
            ));
            let ids: Vec<u64> = (0..c.members.len())
                .map(|i| out[i]["Status"]["header"]["member_id"].as_u64().unwrap())
                .collect();
            // No leader yet: etcdctl's JSON leaves the zero out.
            let leader = out[0]["Status"]["leader"].as_u64()?;
            let li = ids.iter().position(|id| *id == leader)?;
            Some((ids.iter().map(|id| format!("{id:x}")).collect(), li))
        },
    )
}

/// move-leader's answers on one cluster: to a follower, to an unknown member, and a direct
/// MoveLeader call on a follower; ids masked.
async fn move_leader_transcript(c: &Cluster) -> Vec<String> {
    let all = c.endpoints().join(",");
    let (ids, leader) = ids_and_leader(c);
    let target = (leader + 1) % ids.len();
    let mut t = Vec::new();
    let out = ctl(&all, &["move-leader", &ids[target]]);
    assert_eq!(
        out,
        format!(
            "Leadership transferred from {} to {}\n",
            ids[leader], ids[target]
        )
    );
    t.push(
        out.replace(&ids[leader], "<FROM>")
            .replace(&ids[target], "<TO>"),
    );
    wait_until("the transferee leads", Duration::from_secs(10), || {
        (ids_and_leader(c).1 == target).then_some(())
    });
    t.push(error_line(&ctl_err(&all, &["move-leader", "1234"])));
    // Straight to a follower, past etcdctl's search for the leader.
    let follower = (target + 1) % ids.len();
    let mut client = etcd_client::Client::connect([c.endpoint(follower)], None)
        .await
        .unwrap();
    let target_id = u64::from_str_radix(&ids[leader], 16).unwrap();
    match client.move_leader(target_id).await {
        Ok(_) => panic!("a follower moved the leadership"),
        Err(etcd_client::Error::GRpcStatus(s)) => {
            t.push(format!("{:?}: {}", s.code(), s.message()))
        }
        Err(e) => panic!("{e}"),
    }
    // Writes go on under the new leader.
    ctl(&all, &["put", "after", "move"]);
    t
}

#[tokio::test]
async fn maint_move_leader_like_etcd() {
    let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 3)).await;
    let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let theirs = move_leader_transcript(&etcd).await;
    let mine = move_leader_transcript(&ours).await;
    assert_eq!(theirs, mine);
}

/// A client raises CORRUPT: what etcdctl then gets for writes and reads, and after disarm.
async fn corrupt_transcript(c: &Cluster) -> Vec<String> {
    let ep = c.endpoint(0);
    ctl(&ep, &["put", "k", "v"]);
    let mut client = etcd_client::Client::connect([ep.clone()], None)
        .await
        .unwrap();
    let raised = client
        .alarm(
            etcd_client::AlarmAction::Activate,
            etcd_client::AlarmType::Corrupt,
            Some(alarm_member(42)),
        )
        .await
        .unwrap();
    let mut t = vec![format!("{:?}", raised.alarms().len())];
    t.push(ctl(&ep, &["alarm", "list"]));
    for args in [
        vec!["put", "k", "v2"],
        vec!["del", "k"],
        vec!["lease", "grant", "10"],
        vec!["compact", "2"],
    ] {
        let out = ctl_out(&ep, &args);
        t.push(format!(
            "{args:?}: {} {}",
            out.status.success(),
            error_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    t.push(ctl(&ep, &["get", "k", "--print-value-only"]));
    t.push(ctl(&ep, &["alarm", "disarm"]));
    t.push(ctl(&ep, &["put", "k", "v3"]));
    t
}

#[tokio::test]
async fn maint_corrupt_alarm_stops_writes_like_etcd() {
    let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1)).await;
    let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let theirs = corrupt_transcript(&etcd).await;
    let mine = corrupt_transcript(&ours).await;
    assert_eq!(theirs, mine);
    assert!(
        mine[2].contains("Error: etcdserver: corrupt cluster"),
        "{mine:?}"
    );
}
