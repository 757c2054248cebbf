//! minietcdctl's maintenance commands against etcdctl 3.4 on minietcd: `--cluster` endpoint
//! commands, defrag, move-leader, a dead endpoint's health, the space alarm (its lines and
//! the wrapped status table), `check perf`; and the peer round-trip histogram those
//! members export.

use std::time::Duration;

use minietcd_client::{ClientError, PutOptions};

use crate::ctl_etcdctl::mask_after;
use crate::ctl_formats::{
    assert_same, assert_same_read, last_line, mask, mask_table_timing, member_id, with_format,
    Tools, FORMATS,
};
use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::wait_until;

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

/// The leader's index in `members`, once every member names the same leader (right after a
/// transfer the old leader may still believe it leads for a moment).
fn leader_of(tools: &Tools, all: &str, members: &[(String, String)]) -> usize {
    wait_until(
        "one leader for every member",
        Duration::from_secs(10),
        || {
            let out = tools.ours(
                all,
                &["endpoint", "status", "--cluster", "-w", "json"],
                None,
            );
            let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).ok()?;
            let leaders: Vec<u64> = v
                .as_array()?
                .iter()
                .map(|e| e["Status"]["leader"].as_u64().unwrap_or(0))
                .collect();
            let first = *leaders.first()?;
            if leaders.len() != members.len() || first == 0 || leaders.iter().any(|l| *l != first) {
                return None;
            }
            members
                .iter()
                .position(|(id, _)| *id == format!("{first:x}"))
        },
    )
}

/// Waits until every member names member `expected` as leader.
fn wait_for_leader(tools: &Tools, all: &str, members: &[(String, String)], expected: usize) {
    wait_until(
        &format!("{} to lead", members[expected].0),
        Duration::from_secs(10),
        || (leader_of(tools, all, members) == expected).then_some(()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_cluster_maintenance_like_etcdctl() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
    let tools = Tools::new();
    let all = c.endpoints().join(",");
    let same = |args: &[&str], norm: &dyn Fn(&str) -> String| {
        let run = |etcdctl: bool| {
            if etcdctl {
                tools.etcdctl(&all, args, None)
            } else {
                tools.ours(&all, args, None)
            }
        };
        assert_same_read(args, run, norm);
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
    // The other per-endpoint commands report the dead endpoint and exit with 1.
    for cmd in [
        &["endpoint", "status"][..],
        &["endpoint", "hashkv"],
        &["defrag"],
    ] {
        let args = [&["--command-timeout=1s"][..], cmd].concat();
        let theirs = tools.etcdctl(&with_dead, &args, None);
        let ours = tools.ours(&with_dead, &args, None);
        assert_same(&args, &theirs, &ours, str::to_string);
        let errors = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with('{'))
                .collect::<Vec<_>>()
                .join("\n")
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
    wait_for_leader(&tools, &all, &ms, follower);
    let out = tools.ours(&all, &["move-leader", &ms[leader].0], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "Leadership transferred from {} to {}\n",
            ms[follower].0, ms[leader].0
        )
    );
    wait_for_leader(&tools, &all, &ms, leader);
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
        wait_for_leader(&tools, &all, &ms, target);
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
            for line in [
                "# HELP etcd_network_peer_round_trip_time_seconds Round-Trip-Time histogram between peers",
                "# TYPE etcd_network_peer_round_trip_time_seconds histogram",
            ] {
                assert!(text.lines().any(|l| l == line), "{line} missing");
            }
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
    // The two tools read the status one after the other, and sled may write in between:
    // the database size is the one value that may differ.
    let same = |args: &[&str]| {
        let theirs = tools.etcdctl(&ep, args, None);
        let ours = tools.ours(&ep, args, None);
        assert_same(args, &theirs, &ours, mask_db_size);
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
    // The two tools read the status one after the other, and sled may write in between:
    // the database size is the one value that may differ.
    let same = |args: &[&str]| {
        let theirs = tools.etcdctl(&ep, args, None);
        let ours = tools.ours(&ep, args, None);
        assert_same(args, &theirs, &ours, mask_db_size);
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

/// Masks the database size in every format of `endpoint status`: the number in JSON and
/// fields, the digits of the humanized size ("3.3 MB") in simple and table, kept as wide.
fn mask_db_size(s: &str) -> String {
    let s = mask_after(s, "\"dbSize\":", "<SIZE>");
    let s = mask_after(&s, "\"DBSize\" : ", "<SIZE>");
    let mut out: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < out.len() {
        let unit_follows = [" MB", " kB", " B"]
            .iter()
            .any(|u| out[i..].iter().take(u.len()).copied().eq(u.chars()));
        if unit_follows {
            let mut j = i;
            while j > 0 && (out[j - 1].is_ascii_digit() || out[j - 1] == '.') {
                out[j - 1] = '#';
                j -= 1;
            }
        }
        i += 1;
    }
    out.into_iter().collect()
}
