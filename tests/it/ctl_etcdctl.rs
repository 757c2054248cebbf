//! minietcdctl against etcdctl: the same commands must print the same bytes and exit with the
//! same code.
//!
//! Mutations change the server, so each tool gets its own one-member etcd and both receive the
//! same command sequence: histories (revisions, versions, values) stay identical, and only what
//! legitimately differs between two servers is masked (cluster and member ids, lease ids, ports,
//! timings). Read-only commands are also compared on one server, unmasked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::require_program;

/// One command's result.
#[derive(Debug)]
pub(crate) struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

pub(crate) fn run(
    program: &Path,
    endpoint: &str,
    cwd: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Run {
    let mut child = Command::new(program)
        .env("ETCDCTL_API", "3")
        .current_dir(cwd)
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// Replaces the token after every `marker` (up to a delimiter) with `with`.
pub(crate) fn mask_after(s: &str, marker: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find(marker) {
        out.push_str(&rest[..pos + marker.len()]);
        rest = &rest[pos + marker.len()..];
        let end = rest
            .find([',', '}', ']', ' ', ')', '"', '\n'])
            .unwrap_or(rest.len());
        out.push_str(with);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Masks what differs between two servers with the same history.
fn mask(s: &str) -> String {
    let mut s = s.to_string();
    for field in [
        "\"cluster_id\":",
        "\"member_id\":",
        "\"ID\":",
        "\"id\":",
        "\"leader\":",
    ] {
        s = mask_after(&s, field, "<ID>");
    }
    s = mask_after(&s, "lease ", "<LEASE>");
    s = mask_after(&s, "remaining(", "<TTL>s");
    s = mask_after(&s, "\"ttl\":", "<TTL>");
    s = mask_after(&s, "\"took\":\"", "<TOOK>");
    s = mask_after(&s, "127.0.0.1:", "<PORT>");
    mask_lease_lines(&s)
}

/// Masks lines that are a lease id alone (what `lease grant`'s and `lease list`'s ids print).
pub(crate) fn mask_lease_lines(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.len() == 16 && l.chars().all(|c| c.is_ascii_hexdigit()) {
                "<LEASE>"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two identical one-member etcds: etcdctl drives `a`, minietcdctl drives `b`.
struct Pair {
    a: Cluster,
    b: Cluster,
    etcdctl: PathBuf,
    ours: PathBuf,
    dir_a: tempfile::TempDir,
    dir_b: tempfile::TempDir,
}

impl Pair {
    /// Runs `args` with both tools, each on its own server.
    fn both(&self, args: &[&str], stdin: Option<&str>) -> (Run, Run) {
        let theirs = run(
            &self.etcdctl,
            &self.a.endpoint(0),
            self.dir_a.path(),
            args,
            stdin,
        );
        let ours = run(
            &self.ours,
            &self.b.endpoint(0),
            self.dir_b.path(),
            args,
            stdin,
        );
        (theirs, ours)
    }

    /// Runs `args` with both tools and asserts the same (masked) stdout and exit code.
    fn check(&self, args: &[&str], stdin: Option<&str>) -> (Run, Run) {
        let (theirs, ours) = self.both(args, stdin);
        assert_eq!(
            mask(&ours.stdout),
            mask(&theirs.stdout),
            "stdout of {args:?} differs\netcdctl stderr: {}\nminietcdctl stderr: {}",
            theirs.stderr,
            ours.stderr
        );
        assert_eq!(
            ours.code, theirs.code,
            "exit code of {args:?} differs; ours said {}",
            ours.stderr
        );
        (theirs, ours)
    }

    /// Runs `args` with both tools on server `a` (read-only commands) and asserts identical
    /// output, unmasked.
    fn check_same_server(&self, args: &[&str]) {
        let theirs = run(
            &self.etcdctl,
            &self.a.endpoint(0),
            self.dir_a.path(),
            args,
            None,
        );
        let ours = run(
            &self.ours,
            &self.a.endpoint(0),
            self.dir_a.path(),
            args,
            None,
        );
        assert_eq!(
            ours.stdout, theirs.stdout,
            "stdout of {args:?} differs on the same server"
        );
        assert_eq!(
            ours.code, theirs.code,
            "exit code of {args:?} differs; ours said {}",
            ours.stderr
        );
    }
}

pub(crate) fn lease_id(grant_output: &str) -> String {
    grant_output
        .split_whitespace()
        .nth(1)
        .expect("lease id in grant output")
        .to_string()
}

/// Spawns a watch, waits until it printed `lines` lines, kills it, returns the output.
pub(crate) fn watch_output(program: &Path, endpoint: &str, args: &[&str], lines: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut cmd = Command::new(program);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null());
    let _guard = crate::support::ChildGuard::spawn("watch", &mut cmd);
    crate::support::wait_until(
        &format!("{lines} lines of watch output"),
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&out_path).ok()?;
            (text.lines().count() >= lines).then_some(text)
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minietcdctl_prints_what_etcdctl_prints() {
    let (a, b) = tokio::join!(
        Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1)),
        Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1))
    );
    let p = Pair {
        a,
        b,
        etcdctl: require_program("etcdctl"),
        ours: crate::support::workspace_bin("minietcdctl"),
        dir_a: tempfile::tempdir().unwrap(),
        dir_b: tempfile::tempdir().unwrap(),
    };
    let version = Command::new(&p.ours).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("minietcdctl"),
        "{} is not this crate's minietcdctl (overwritten by another build in a shared target dir?)",
        p.ours.display()
    );

    // put / get / del
    p.check(&["put", "foo", "bar"], None);
    p.check(&["-w", "json", "put", "foo", "bar"], None);
    p.check(&["put", "foo2", "bar 2", "--prev-kv"], None);
    p.check(&["put", "--prev-kv", "foo", "baz"], None);
    p.check(&["put", "--prev-kv", "foo", "qux", "-w", "json"], None);
    p.check(&["put", "fromstdin"], Some("line one\nline <two> & more\n"));
    for format in ["simple", "json"] {
        let w = ["-w", format];
        let with = |args: &[&'static str]| [&w[..], args].concat();
        p.check(&with(&["get", "foo"]), None);
        p.check(&with(&["get", "fo", "--prefix"]), None);
        p.check(&with(&["get", "fo", "--prefix", "--keys-only"]), None);
        p.check(&with(&["get", "foo", "--rev", "2"]), None);
        p.check(
            &with(&[
                "get",
                "",
                "--from-key",
                "--limit",
                "2",
                "--sort-by=MODIFY",
                "--order=DESCEND",
            ]),
            None,
        );
        p.check(&with(&["get", "", "--prefix", "--sort-by=VALUE"]), None);
        p.check(&with(&["get", "fo", "foz"]), None);
        p.check(&with(&["get", "fromstdin"]), None);
        p.check(&with(&["get", "nothing"]), None);
    }
    p.check(&["get", "fo", "--prefix", "--print-value-only"], None);
    p.check(&["put", "a", "1"], None);
    p.check(&["put", "b", "2"], None);
    p.check(&["put", "b2", "3"], None);
    p.check(&["del", "a", "--prev-kv"], None);
    p.check(&["del", "--prefix", "b", "--prev-kv", "-w", "json"], None);
    p.check(&["del", "zz", "-w", "json"], None);
    p.check(&["del", "zz"], None);

    // txn, as etcdctl reads it from stdin
    p.check(&["txn"], Some("value(\"foo\") = \"qux\"\nmod(\"foo\") > \"0\"\n\nput foo quux\nget foo\ndel nokey\n\nput x y\n\n"));
    p.check(
        &["txn", "-w", "json"],
        Some("value(\"foo\") = \"zzz\"\n\nput foo no\n\nput x \"y z\"\nget fo --prefix\ndel x --prev-kv\n\n"),
    );
    p.check(
        &["txn", "-i"],
        Some("version(\"foo\") = \"4\"\n\nput v1 1\n\n\n"),
    );
    p.check(&["txn"], Some("create(\"foo\") > \"0\"\n\n"));

    // leases
    let (theirs, ours) = p.check(&["lease", "grant", "1000"], None);
    let (lease_a, lease_b) = (lease_id(&theirs.stdout), lease_id(&ours.stdout));
    p.check(&["lease", "grant", "900", "-w", "json"], None);
    let theirs = run(
        &p.etcdctl,
        &p.a.endpoint(0),
        p.dir_a.path(),
        &["put", "--lease", &lease_a, "lk", "lv"],
        None,
    );
    let ours = run(
        &p.ours,
        &p.b.endpoint(0),
        p.dir_b.path(),
        &["put", "--lease", &lease_b, "lk", "lv"],
        None,
    );
    assert_eq!((ours.stdout, ours.code), (theirs.stdout, theirs.code));
    let per_lease = |args: &[&str]| {
        let with_id = |id: &str| {
            args.iter()
                .map(|a| {
                    if *a == "ID" {
                        id.to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect::<Vec<_>>()
        };
        let ta = with_id(&lease_a);
        let tb = with_id(&lease_b);
        let theirs = run(
            &p.etcdctl,
            &p.a.endpoint(0),
            p.dir_a.path(),
            &ta.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        );
        let ours = run(
            &p.ours,
            &p.b.endpoint(0),
            p.dir_b.path(),
            &tb.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        );
        assert_eq!(
            mask(&ours.stdout),
            mask(&theirs.stdout),
            "stdout of {args:?} differs; ours said {}",
            ours.stderr
        );
        assert_eq!(ours.code, theirs.code, "exit code of {args:?} differs");
    };
    per_lease(&["lease", "timetolive", "ID"]);
    per_lease(&["lease", "timetolive", "ID", "--keys"]);
    per_lease(&["lease", "timetolive", "ID", "--keys", "-w", "json"]);
    per_lease(&["lease", "keep-alive", "--once", "ID"]);
    per_lease(&["lease", "keep-alive", "--once", "ID", "-w", "json"]);
    p.check(&["lease", "list"], None);
    p.check(&["lease", "list", "-w", "json"], None);
    per_lease(&["lease", "revoke", "ID"]);
    per_lease(&["lease", "revoke", "ID"]);
    per_lease(&["lease", "timetolive", "ID"]);
    p.check(&["get", "lk"], None);

    // watch: a past range of history, then a compacted start
    p.check(&["put", "w/1", "a"], None);
    p.check(&["put", "w/2", "b"], None);
    p.check(&["del", "w/1"], None);
    let rev = {
        let r = run(
            &p.etcdctl,
            &p.a.endpoint(0),
            p.dir_a.path(),
            &["get", "w/2", "-w", "json"],
            None,
        );
        let at = r.stdout.find("\"mod_revision\":").unwrap() + "\"mod_revision\":".len();
        r.stdout[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .to_string()
    };
    for (args, lines) in [
        (vec!["watch", "w/", "--prefix", "--rev", &rev], 6),
        (
            vec!["watch", "w/", "--prefix", "--rev", &rev, "--prev-kv"],
            8,
        ),
        (
            vec!["watch", "w/", "--prefix", "--rev", &rev, "-w", "json"],
            1,
        ),
        (vec!["watch", "w/2", "--rev", "1"], 3),
    ] {
        let theirs = watch_output(&p.etcdctl, &p.a.endpoint(0), &args, lines);
        let ours = watch_output(&p.ours, &p.b.endpoint(0), &args, lines);
        assert_eq!(
            mask(&ours),
            mask(&theirs),
            "watch output of {args:?} differs"
        );
    }
    p.check(&["compaction", "3"], None);
    p.check(&["compaction", "4", "-w", "json"], None);
    p.check(&["compaction", "--physical", "5"], None);
    p.check(&["get", "foo", "--rev", "2"], None);
    p.check(&["watch", "foo", "--rev", "2"], None);
    p.check(&["watch", "foo", "--rev", "2", "-w", "json"], None);

    // maintenance
    p.check(&["snapshot", "save", "snap.db"], None);
    let status = |dir: &Path| {
        let r = run(
            &p.etcdctl,
            &p.a.endpoint(0),
            dir,
            &["snapshot", "status", "snap.db", "-w", "json"],
            None,
        );
        assert_eq!(r.code, Some(0), "snapshot status: {}", r.stderr);
        // {"hash":..,"revision":..,"totalKey":..,"totalSize":..}: the hash covers member ids
        // and totalSize is bbolt's page allocation, which differs between two servers.
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("json status");
        (v["revision"].clone(), v["totalKey"].clone())
    };
    assert_eq!(
        status(p.dir_b.path()),
        status(p.dir_a.path()),
        "snapshots differ"
    );
    p.check(&["endpoint", "health", "-w", "json"], None);
    p.check(&["endpoint", "health"], None);
    for format in ["simple", "json"] {
        p.check_same_server(&["member", "list", "-w", format]);
        p.check_same_server(&["endpoint", "status", "-w", format]);
        p.check_same_server(&["get", "", "--prefix", "-w", format]);
    }
}

#[test]
fn minietcdctl_fails_clearly_when_no_endpoint_answers() {
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let ours = run(
        &crate::support::workspace_bin("minietcdctl"),
        &format!("127.0.0.1:{}", port.port),
        dir.path(),
        &["--dial-timeout", "300ms", "get", "foo"],
        None,
    );
    assert_eq!(ours.code, Some(1));
    assert!(ours.stdout.is_empty());
    assert!(
        ours.stderr.starts_with("Error: context deadline exceeded")
            && ours.stderr.contains(&port.port.to_string()),
        "unclear error: {}",
        ours.stderr
    );
}
