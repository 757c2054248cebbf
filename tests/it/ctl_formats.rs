//! minietcdctl's output formats (`-w simple|json|fields|table`) and maintenance commands
//! (endpoint hashkv, defrag, alarm, move-leader, check perf) against etcdctl 3.4: the same
//! commands print the same bytes and exit with the same codes.
//!
//! Mutations change the server, so each tool gets its own one-member server with the same
//! command sequence, and only what legitimately differs between two servers is masked
//! (cluster, member and lease ids, ports, timings). Read-only commands run with both tools on
//! one server, unmasked. The matrix runs on minietcd and on etcd 3.4; the cluster scenarios
//! (leadership transfer, `--cluster`, the peer round-trip metric) and the space alarm on
//! minietcd.

use std::path::PathBuf;
use std::time::Duration;

use minietcd_client::{ClientError, PutOptions};

use crate::ctl_etcdctl::{mask_after, run, watch_output, Run};
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::{require_program, wait_until};

const FORMATS: [&str; 4] = ["simple", "json", "fields", "table"];

/// Masks what differs between two servers with the same history.
fn mask(s: &str) -> String {
    let mut s = s.to_string();
    for field in [
        "\"cluster_id\":",
        "\"member_id\":",
        "\"ID\":",
        "\"id\":",
        "\"leader\":",
        "\"memberID\":",
        "\"ClusterID\" : ",
        "\"MemberID\" : ",
        "\"ID\" : ",
        "\"Leader\" : ",
        "\"lease\":",
        "\"Lease\" : ",
        "\"PrevLease\" : ",
    ] {
        s = mask_after(&s, field, "<ID>");
    }
    for field in [
        "\"ttl\":",
        "\"TTL\" : ",
        "remaining(",
        "\"Took\" : ",
        "took = ",
    ] {
        s = mask_after(&s, field, "<T>");
    }
    s = mask_after(&s, "\"took\":\"", "<T>");
    s = mask_after(&s, "lease ", "<LEASE>");
    s = mask_after(&s, "Leadership transferred from ", "<ID>");
    s = mask_after(&s, " to ", "<ID>");
    s = mask_after(&s, "127.0.0.1:", "<PORT>");
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

/// Tables with a timing cell: the cell's width changes the rules, so runs of `-` and spaces
/// are collapsed and durations masked.
fn mask_table_timing(s: &str) -> String {
    let mut out = String::new();
    let mut last = '\0';
    for c in s.chars() {
        if (c == '-' || c == ' ') && c == last {
            continue;
        }
        out.push(c);
        last = c;
    }
    out.split(' ')
        .map(|w| {
            // Go durations: 925.605µs, 1.452345ms, 1.000230816s.
            if w.ends_with('s') && w.starts_with(|c: char| c.is_ascii_digit()) {
                "<T>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Tools {
    etcdctl: PathBuf,
    ours: PathBuf,
    dir: tempfile::TempDir,
}

impl Tools {
    fn new() -> Tools {
        Tools {
            etcdctl: require_program("etcdctl"),
            ours: crate::support::workspace_bin("minietcdctl"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn etcdctl(&self, endpoint: &str, args: &[&str], stdin: Option<&str>) -> Run {
        run(&self.etcdctl, endpoint, self.dir.path(), args, stdin)
    }

    fn ours(&self, endpoint: &str, args: &[&str], stdin: Option<&str>) -> Run {
        run(&self.ours, endpoint, self.dir.path(), args, stdin)
    }
}

/// The last line etcdctl writes to stderr (clientv3's JSON warnings come before it).
fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// Asserts the same stdout (after `norm`), exit code and, for failures, error line.
fn assert_same(args: &[&str], theirs: &Run, ours: &Run, norm: impl Fn(&str) -> String) {
    assert_eq!(
        norm(&ours.stdout),
        norm(&theirs.stdout),
        "stdout of {args:?} differs\netcdctl stderr: {}\nminietcdctl stderr: {}",
        theirs.stderr,
        ours.stderr
    );
    assert_eq!(
        ours.code, theirs.code,
        "exit code of {args:?} differs; ours said {}, etcdctl said {}",
        ours.stderr, theirs.stderr
    );
    if theirs.code != Some(0) {
        assert_eq!(
            norm(last_line(&ours.stderr)),
            norm(last_line(&theirs.stderr)),
            "error of {args:?} differs"
        );
    }
}

/// etcdctl drives server `a`, minietcdctl server `b` (same history).
struct Pair<'t> {
    tools: &'t Tools,
    a: String,
    b: String,
}

impl Pair<'_> {
    fn check_in(&self, args: &[&str], stdin: Option<&str>) -> (Run, Run) {
        let theirs = self.tools.etcdctl(&self.a, args, stdin);
        let ours = self.tools.ours(&self.b, args, stdin);
        assert_same(args, &theirs, &ours, mask);
        (theirs, ours)
    }

    fn check(&self, args: &[&str]) -> (Run, Run) {
        self.check_in(args, None)
    }

    fn check_with(&self, args: &[&str], norm: impl Fn(&str) -> String) {
        let theirs = self.tools.etcdctl(&self.a, args, None);
        let ours = self.tools.ours(&self.b, args, None);
        assert_same(args, &theirs, &ours, norm);
    }

    /// Both tools on server `a`: a read-only command, compared unmasked.
    fn check_same_server(&self, args: &[&str]) {
        let theirs = self.tools.etcdctl(&self.a, args, None);
        let ours = self.tools.ours(&self.a, args, None);
        assert_same(args, &theirs, &ours, str::to_string);
    }
}

fn with_format<'a>(w: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-w", w];
    all.extend_from_slice(args);
    all
}

fn lease_id(grant_output: &str) -> String {
    grant_output
        .split_whitespace()
        .nth(1)
        .expect("lease id in grant output")
        .to_string()
}

/// The member id (hex) of a one-member server, from `member list`.
fn member_id(tools: &Tools, endpoint: &str) -> String {
    let out = tools.etcdctl(endpoint, &["member", "list"], None);
    out.stdout.split(',').next().unwrap().trim().to_string()
}

/// Every command in every format, both tools, on two one-member servers of `kind`.
async fn format_matrix(kind: ServerKind) {
    let (a, b) = tokio::join!(
        Cluster::start_ready(ClusterConfig::new(kind, 1)),
        Cluster::start_ready(ClusterConfig::new(kind, 1))
    );
    let tools = Tools::new();
    let p = Pair {
        tools: &tools,
        a: a.endpoint(0),
        b: b.endpoint(0),
    };
    // Leases first: the per-lease commands need each server's own ids.
    let mut leases = Vec::new();
    for _ in FORMATS {
        let (theirs, ours) = p.check(&["lease", "grant", "600"]);
        leases.push((lease_id(&theirs.stdout), lease_id(&ours.stdout)));
    }
    // A key on the last lease (each server's own), revoked last.
    let theirs = tools.etcdctl(&p.a, &["put", "lk", "lv", "--lease", &leases[3].0], None);
    let ours = tools.ours(&p.b, &["put", "lk", "lv", "--lease", &leases[3].1], None);
    assert_same(&["put", "--lease"], &theirs, &ours, mask);

    // Watch: one past event in the fields format (header, type, key-value: 11 lines); the
    // table format fails at the first event.
    p.check(&["put", "wf", "v"]);
    let (theirs, _) = p.check(&["-w", "fields", "get", "wf"]);
    let rev = theirs
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("\"ModRevision\" : "))
        .unwrap()
        .to_string();
    let args = ["-w", "fields", "watch", "wf", "--rev", rev.as_str()];
    assert_eq!(
        mask(&watch_output(&tools.ours, &p.b, &args, 11)),
        mask(&watch_output(&tools.etcdctl, &p.a, &args, 11)),
        "watch -w fields"
    );
    p.check(&["-w", "table", "watch", "wf", "--rev", &rev]);

    for (i, w) in FORMATS.into_iter().enumerate() {
        let f = |args: &[&'static str]| with_format(w, args);
        // key-value
        p.check(&f(&["put", "foo", "bar"]));
        p.check(&f(&["put", "foo", "baz", "--prev-kv"]));
        p.check(&f(&["put", "odd\"key", "tab\tand <html> & \u{7}bell"]));
        p.check(&f(&["get", "foo"]));
        p.check(&f(&["get", "", "--prefix"]));
        p.check(&f(&["get", "", "--prefix", "--keys-only", "--limit", "2"]));
        p.check(&f(&["get", "nothing"]));
        p.check(&f(&["del", "nothing"]));
        p.check(&f(&["del", "odd\"key", "--prev-kv"]));
        p.check_in(
            &f(&["txn"]),
            Some("value(\"foo\") = \"baz\"\n\nget foo\nput t1 v\ndel t1 --prev-kv\n\nput t2 v\n\n"),
        );
        p.check_in(
            &f(&["txn"]),
            Some("version(\"foo\") = \"99\"\n\nput no v\n\nget lk\n\n"),
        );
        // leases: each format gets its own lease to revoke
        let per_lease = |args: &[&str], id: usize| {
            let with = |lease: &str| {
                args.iter()
                    .map(|x| {
                        if *x == "ID" {
                            lease.to_string()
                        } else {
                            x.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
            };
            let (ta, tb) = (with(&leases[id].0), with(&leases[id].1));
            let ta: Vec<&str> = ta.iter().map(String::as_str).collect();
            let tb: Vec<&str> = tb.iter().map(String::as_str).collect();
            let theirs = tools.etcdctl(&p.a, &ta, None);
            let ours = tools.ours(&p.b, &tb, None);
            assert_same(args, &theirs, &ours, mask);
        };
        per_lease(&["-w", w, "lease", "timetolive", "ID", "--keys"], 3);
        per_lease(&["-w", w, "lease", "timetolive", "ID"], i);
        per_lease(&["-w", w, "lease", "keep-alive", "--once", "ID"], i);
        if w == "table" {
            // Without --once too: refused at the first answer.
            per_lease(&["-w", w, "lease", "keep-alive", "ID"], i);
        }
        p.check(&f(&["lease", "list"]));
        p.check(&f(&["lease", "grant", "60"]));
        per_lease(&["-w", w, "lease", "revoke", "ID"], i);
        per_lease(&["-w", w, "lease", "revoke", "ID"], i);
        per_lease(&["-w", w, "lease", "timetolive", "ID"], i);
        // users and roles
        let (role, user) = (format!("r{i}"), format!("u{i}"));
        let user_pw = format!("{user}:pw");
        let r = role.as_str();
        let u = user.as_str();
        p.check(&with_format(w, &["role", "add", r]));
        p.check(&with_format(
            w,
            &["role", "grant-permission", r, "readwrite", "a", "z"],
        ));
        p.check(&with_format(
            w,
            &["role", "grant-permission", r, "read", "p/", "--prefix"],
        ));
        p.check(&with_format(w, &["role", "get", r]));
        p.check(&with_format(w, &["role", "list"]));
        p.check(&with_format(w, &["user", "add", &user_pw]));
        p.check(&with_format(w, &["user", "grant-role", u, r]));
        p.check(&with_format(w, &["user", "get", u]));
        p.check(&with_format(w, &["user", "get", u, "--detail"]));
        p.check(&with_format(w, &["user", "list"]));
        p.check(&with_format(w, &["user", "revoke-role", u, r]));
        p.check(&with_format(w, &["role", "revoke-permission", r, "a", "z"]));
        p.check(&with_format(w, &["role", "delete", r]));
        p.check(&with_format(w, &["user", "delete", u]));
        // maintenance
        // etcdctl 3.4's fields printer crashes on the header-less alarm answer; minietcdctl
        // prints zeros there (checked below).
        if w != "fields" {
            p.check(&f(&["alarm", "list"]));
            p.check(&f(&["alarm", "disarm"]));
        }
        p.check(&f(&["defrag"]));
        p.check_with(&f(&["endpoint", "health"]), |s| mask_table_timing(&mask(s)));
        p.check(&f(&["move-leader", "zz"]));
        p.check(&f(&["compaction", "2"]));
        // Read-only, both tools on one server.
        p.check_same_server(&f(&["member", "list"]));
        p.check_same_server(&f(&["endpoint", "status"]));
        // Hashes cover lease ids, which differ between the two servers: one server here.
        p.check_same_server(&f(&["endpoint", "hashkv"]));
        p.check_same_server(&f(&["endpoint", "hashkv", "--rev", "3"]));
        p.check_same_server(&f(&["endpoint", "hashkv", "--rev", "1"]));
        p.check_same_server(&f(&["get", "", "--prefix"]));
        // Leadership "transferred" to the leader itself.
        let (ma, mb) = (member_id(&tools, &p.a), member_id(&tools, &p.b));
        let theirs = tools.etcdctl(&p.a, &["-w", w, "move-leader", &ma], None);
        let ours = tools.ours(&p.b, &["-w", w, "move-leader", &mb], None);
        assert_same(&["move-leader", "<self>"], &theirs, &ours, mask);
    }
    // No alarm, no header: the fields of an empty answer.
    for args in [["alarm", "list"], ["alarm", "disarm"]] {
        let r = tools.ours(&p.b, &with_format("fields", &args), None);
        assert_eq!(
            (r.stdout.as_str(), r.code),
            (
                "\"ClusterID\" : 0\n\"MemberID\" : 0\n\"Revision\" : 0\n\"RaftTerm\" : 0\n",
                Some(0)
            ),
            "{}",
            r.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_formats_match_etcdctl_on_minietcd() {
    format_matrix(ServerKind::Minietcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_formats_match_etcdctl_on_etcd() {
    format_matrix(ServerKind::Etcd).await;
}

/// Member `i`'s `/metrics` text.
fn metrics_text(c: &Cluster, i: usize) -> String {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", c.client_port(i))) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body
}

/// (id in hex, client URL) of every member, in member list order.
fn members(tools: &Tools, endpoint: &str) -> Vec<(String, String)> {
    let out = tools.ours(endpoint, &["member", "list"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(", ").collect();
            (cells[0].to_string(), cells[4].to_string())
        })
        .collect()
}

/// The leader's index in `members`, from `endpoint status`.
fn leader_of(tools: &Tools, all: &str, members: &[(String, String)]) -> usize {
    wait_until("a leader", Duration::from_secs(10), || {
        let out = tools.ours(all, &["endpoint", "status", "--cluster"], None);
        // endpoint, id, version, size, is leader, ...
        out.stdout.lines().find_map(|l| {
            let cells: Vec<&str> = l.split(", ").collect();
            (cells.get(4) == Some(&"true"))
                .then(|| members.iter().position(|(id, _)| id == cells[1]))
                .flatten()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_cluster_maintenance_like_etcdctl() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let tools = Tools::new();
    let all = c.endpoints().join(",");
    let same = |args: &[&str], norm: &dyn Fn(&str) -> String| {
        let theirs = tools.etcdctl(&all, args, None);
        let ours = tools.ours(&all, args, None);
        assert_same(args, &theirs, &ours, norm);
    };
    let plain = |s: &str| s.to_string();
    tools.ours(&all, &["put", "k", "v"], None);
    for w in FORMATS {
        same(
            &with_format(w, &["endpoint", "status", "--cluster"]),
            &plain,
        );
        same(
            &with_format(w, &["endpoint", "hashkv", "--cluster"]),
            &plain,
        );
        // (Through one endpoint: the answering member is in the header.)
        let args = with_format(w, &["member", "list"]);
        let one = c.endpoint(0);
        let theirs = tools.etcdctl(&one, &args, None);
        assert_same(&args, &theirs, &tools.ours(&one, &args, None), plain);
        same(&with_format(w, &["defrag", "--cluster"]), &plain);
        same(&with_format(w, &["defrag"]), &plain);
    }
    // Health answers come in any order from etcdctl: compare the sorted lines.
    let sorted = |s: &str| {
        let mut lines: Vec<String> = mask_table_timing(&mask(s))
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines.join("\n")
    };
    for w in ["json", "table"] {
        same(
            &with_format(w, &["endpoint", "health", "--cluster"]),
            &sorted,
        );
    }
    // An endpoint that does not answer: unhealthy, exit code 1.
    let with_dead = format!("{},127.0.0.1:1", c.endpoint(0));
    for w in ["simple", "table", "fields"] {
        let args = with_format(w, &["--command-timeout=1s", "endpoint", "health"]);
        let theirs = tools.etcdctl(&with_dead, &args, None);
        let ours = tools.ours(&with_dead, &args, None);
        assert_same(&args, &theirs, &ours, sorted);
        let errors = |s: &str| {
            sorted(
                &s.lines()
                    .filter(|l| !l.starts_with('{'))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        };
        assert_eq!(
            errors(&ours.stderr),
            errors(&theirs.stderr),
            "stderr of {args:?}"
        );
        assert_eq!(ours.code, Some(1));
    }

    // Leadership moves to a follower with etcdctl, back with minietcdctl.
    let ms = members(&tools, &all);
    let leader = leader_of(&tools, &all, &ms);
    let follower = (leader + 1) % ms.len();
    let out = tools.etcdctl(&all, &["move-leader", &ms[follower].0], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "Leadership transferred from {} to {}\n",
            ms[leader].0, ms[follower].0
        )
    );
    assert_eq!(leader_of(&tools, &all, &ms), follower);
    let out = tools.ours(&all, &["move-leader", &ms[leader].0], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "Leadership transferred from {} to {}\n",
            ms[follower].0, ms[leader].0
        )
    );
    assert_eq!(leader_of(&tools, &all, &ms), leader);
    // JSON: the header-less answer; fields: moved, then refused for the format.
    for (w, target) in [("json", follower), ("fields", leader)] {
        let current = leader_of(&tools, &all, &ms);
        let ours = tools.ours(&all, &["-w", w, "move-leader", &ms[target].0], None);
        let expected = if w == "json" {
            ("{}\n", Some(0))
        } else {
            ("", Some(4))
        };
        assert_eq!(
            (ours.stdout.as_str(), ours.code),
            expected,
            "{}",
            ours.stderr
        );
        if w == "fields" {
            assert_eq!(
                last_line(&ours.stderr),
                "Error: fields not supported as output format"
            );
        }
        assert_ne!(
            current, target,
            "moving to the leader itself proves nothing"
        );
        assert_eq!(leader_of(&tools, &all, &ms), target);
    }
    // Only followers given: no leader to ask.
    let leader = leader_of(&tools, &all, &ms);
    let followers: Vec<String> = (0..ms.len())
        .filter(|i| *i != leader)
        .map(|i| ms[i].1.clone())
        .collect();
    let followers = followers.join(",");
    let args = ["move-leader", ms[leader].0.as_str()];
    let theirs = tools.etcdctl(&followers, &args, None);
    let ours = tools.ours(&followers, &args, None);
    assert_same(&args, &theirs, &ours, str::to_string);
    assert_eq!(ours.code, Some(128));

    // Every member measures the round trip to each peer, etcd's buckets, labelled in hex.
    let buckets = [
        "0.0001", "0.0002", "0.0004", "0.0008", "0.0016", "0.0032", "0.0064", "0.0128", "0.0256",
        "0.0512", "0.1024", "0.2048", "0.4096", "0.8192", "1.6384", "3.2768", "+Inf",
    ];
    for (i, (me, _)) in ms.iter().enumerate() {
        let member = (0..ms.len())
            .find(|j| c.endpoint(*j) == ms[i].1.trim_start_matches("http://"))
            .expect("member's endpoint");
        for (peer, _) in ms.iter().filter(|(id, _)| id != me) {
            let text = wait_until(
                &format!("round trips from {me} to {peer}"),
                Duration::from_secs(15),
                || {
                    let t = metrics_text(&c, member);
                    let count =
                        format!("etcd_network_peer_round_trip_time_seconds_count{{To=\"{peer}\"}}");
                    t.lines()
                        .find_map(|l| l.strip_prefix(&count))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .filter(|n| *n > 0)
                        .map(|_| t.clone())
                },
            );
            let les: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("etcd_network_peer_round_trip_time_seconds_bucket")
                        && l.contains(&format!("To=\"{peer}\""))
                })
                .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
                .collect();
            assert_eq!(les, buckets, "buckets of the round trips to {peer}");
        }
    }
}

/// Writes 20 KB values until the space quota refuses one.
async fn fill_until_nospace(c: &Cluster) {
    let client = c.client().await;
    let value = vec![b'x'; 20_000];
    for i in 0..400 {
        match client
            .kv()
            .put(format!("fill/{i:04}"), value.clone(), PutOptions::new())
            .await
        {
            Ok(_) => {}
            Err(ClientError::Server { message, .. }) if message.contains("space exceeded") => {
                return
            }
            Err(e) => panic!("put {i}: {e}"),
        }
    }
    panic!("400 puts of 20 KB never hit the quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_space_alarm_prints_like_etcdctl() {
    let c = Cluster::start_ready(
        ClusterConfig::new(ServerKind::Minietcd, 1).arg("--quota-backend-bytes=3000000"),
    )
    .await;
    let tools = Tools::new();
    let ep = c.endpoint(0);
    fill_until_nospace(&c).await;
    let id = member_id(&tools, &ep);
    let decimal = u64::from_str_radix(&id, 16).unwrap();
    let same = |args: &[&str]| {
        let theirs = tools.etcdctl(&ep, args, None);
        let ours = tools.ours(&ep, args, None);
        assert_same(args, &theirs, &ours, str::to_string);
        ours
    };
    for w in ["simple", "json", "table"] {
        same(&with_format(w, &["alarm", "list"]));
        // The alarm is one of the status errors: the table wraps it within its column.
        same(&with_format(w, &["endpoint", "status"]));
    }
    same(&with_format("fields", &["endpoint", "status"]));
    let listed = tools.ours(&ep, &["alarm", "list"], None);
    assert_eq!(
        listed.stdout,
        format!("memberID:{decimal} alarm:NOSPACE \n")
    );
    let table = tools.ours(&ep, &["endpoint", "status", "-w", "table"], None);
    assert!(
        table.stdout.contains(&format!(" memberID:{decimal} |\n")),
        "{}",
        table.stdout
    );
    let fields = tools.ours(&ep, &["alarm", "list", "-w", "fields"], None);
    assert!(
        fields.stdout.ends_with(&format!(
            "\"MemberID\" : {decimal}\n\"AlarmType\" : NOSPACE\n\n"
        )),
        "{}",
        fields.stdout
    );
    // Disarm answers the alarms it cleared; writing on raises the alarm again.
    for (w, tool) in [
        ("simple", "etcdctl"),
        ("simple", "ours"),
        ("json", "etcdctl"),
        ("json", "ours"),
    ] {
        let args = with_format(w, &["alarm", "disarm"]);
        let out = if tool == "etcdctl" {
            tools.etcdctl(&ep, &args, None)
        } else {
            tools.ours(&ep, &args, None)
        };
        let expected = if w == "simple" {
            format!("memberID:{decimal} alarm:NOSPACE \n")
        } else {
            format!("{{\"alarms\":[{{\"memberID\":{decimal},\"alarm\":1}}]}}\n")
        };
        assert_eq!(
            (out.stdout, out.code),
            (expected, Some(0)),
            "{tool} {w}: {}",
            out.stderr
        );
        assert_eq!(tools.ours(&ep, &["alarm", "list"], None).stdout, "");
        fill_until_nospace(&c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_check_perf_judges_like_etcdctl() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let tools = Tools::new();
    let ep = c.endpoint(0);
    // Refusals: an unknown load, a prefix already in use (before any load is sent).
    let same = |args: &[&str]| {
        let theirs = tools.etcdctl(&ep, args, None);
        let ours = tools.ours(&ep, args, None);
        assert_same(args, &theirs, &ours, str::to_string);
        ours
    };
    assert_eq!(same(&["check", "perf", "--load", "huge"]).code, Some(4));
    tools.ours(&ep, &["put", "/perf-test/x", "1"], None);
    assert_eq!(
        same(&["check", "perf", "--prefix", "/perf-test/"]).code,
        Some(3)
    );
    tools.ours(&ep, &["del", "/perf-test/x"], None);

    // A short run of the small load, then compaction and defragmentation.
    let out = tools.ours(
        &ep,
        &[
            "check",
            "perf",
            "--load",
            "s",
            "--prefix",
            "/perf-test/",
            "--auto-compact",
            "--auto-defrag",
            "--duration",
            "3s",
        ],
        None,
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{}\n{}", out.stdout, out.stderr);
    let rev = lines[0]
        .strip_prefix("Compacting with revision ")
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(lines[1], format!("Compacted with revision {rev}"));
    assert_eq!(lines[2], format!("Defragmenting \"{ep}\""));
    assert_eq!(lines[3], format!("Defragmented \"{ep}\""));
    let writes: u64 = lines[4]
        .strip_prefix("PASS: Throughput is ")
        .or_else(|| lines[4].strip_prefix("FAIL: Throughput too low: "))
        .and_then(|s| s.strip_suffix(" writes/s"))
        .unwrap_or_else(|| panic!("{}", out.stdout))
        .parse()
        .unwrap();
    // 150 writes/s for 3 s, each at most once.
    assert!((1..=151).contains(&writes), "{writes} writes/s");
    assert!(
        lines[5].starts_with("PASS: Slowest request took ")
            || lines[5].starts_with("Slowest request took too long: "),
        "{}",
        out.stdout
    );
    assert!(
        lines[6].starts_with("PASS: Stddev is ") || lines[6].starts_with("Stddev too high: "),
        "{}",
        out.stdout
    );
    let passed = lines[4..7].iter().all(|l| l.starts_with("PASS: "));
    assert_eq!(lines[7], if passed { "PASS" } else { "FAIL" });
    assert_eq!(out.code, Some(if passed { 0 } else { 1 }), "{}", out.stderr);
    // The keys are gone and the history compacted.
    let left = tools.ours(
        &ep,
        &["get", "/perf-test/", "--prefix", "--keys-only"],
        None,
    );
    assert_eq!((left.stdout.as_str(), left.code), ("", Some(0)));
    let old = tools.ours(&ep, &["get", "x", "--rev", "1"], None);
    assert_eq!(
        last_line(&old.stderr),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
}
