//! minietcd-bench against a real one-node etcd with tiny totals: the tool runs end to end and
//! its report adds up. Performance is never asserted here.

use crate::support::{free_port, require_program, wait_until, ChildGuard, Port};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A single-member etcd on free loopback ports in a temp dir, killed on drop.
struct Etcd {
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
    _ports: (Port, Port),
    endpoint: String,
}

fn start_etcd() -> Etcd {
    let etcd = require_program("etcd");
    let etcdctl = require_program("etcdctl");
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let curl = format!("http://127.0.0.1:{}", client.port);
    let purl = format!("http://127.0.0.1:{}", peer.port);
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let guard = ChildGuard::spawn(
        "etcd",
        Command::new(etcd)
            .args(["--name", "bench-smoke", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &curl,
                "--advertise-client-urls",
                &curl,
            ])
            .args([
                "--listen-peer-urls",
                &purl,
                "--initial-advertise-peer-urls",
                &purl,
            ])
            .args([
                "--initial-cluster",
                &format!("bench-smoke={purl}"),
                "--initial-cluster-state",
                "new",
            ])
            .stdout(Stdio::null())
            .stderr(log),
    );
    wait_until("etcd healthy", Duration::from_secs(30), || {
        let out = Command::new(&etcdctl)
            .args([
                "--endpoints",
                &curl,
                "--command-timeout=1s",
                "endpoint",
                "health",
            ])
            .env("ETCDCTL_API", "3")
            .output()
            .ok()?;
        out.status.success().then_some(())
    });
    Etcd {
        _guard: guard,
        _dir: dir,
        _ports: (client, peer),
        endpoint: curl,
    }
}

/// Runs the bench binary with `args`, asserting success, and returns its stdout.
fn bench(endpoint: &str, args: &[&str]) -> String {
    bench_output(endpoint, args).0
}

/// Runs the bench binary with `args`, asserting success, and returns its stdout and stderr.
fn bench_output(endpoint: &str, args: &[&str]) -> (String, String) {
    let bin = &crate::support::workspace_bin("minietcd-bench");
    let out = Command::new(bin)
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "minietcd-bench {args:?} failed: {stderr}"
    );
    assert!(
        !out.stdout.is_empty(),
        "{} {args:?} printed no report; stderr: {stderr}",
        bin.display()
    );
    (String::from_utf8(out.stdout).unwrap(), stderr.into_owned())
}

fn phase<'a>(report: &'a Value, name_prefix: &str) -> &'a Value {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap().starts_with(name_prefix))
        .unwrap_or_else(|| panic!("no phase {name_prefix} in {report}"))
}

/// Checks that a phase's counts add up: `ok` successes, no errors, percentiles in order and a
/// histogram holding every sample.
fn assert_phase_adds_up(p: &Value, ok: u64) {
    assert_eq!(p["ok"].as_u64(), Some(ok), "{p}");
    assert_eq!(p["errors"].as_u64(), Some(0), "{p}");
    assert_eq!(p["total"].as_u64(), Some(ok), "{p}");
    assert!(p["errors_by_kind"].as_object().unwrap().is_empty(), "{p}");
    assert!(p["duration_secs"].as_f64().unwrap() > 0.0, "{p}");
    assert!(p["per_sec"].as_f64().unwrap() > 0.0, "{p}");
    let l = &p["latency_ms"];
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{l}");
    assert!(l["p90"].is_f64() && l["p999"].is_f64(), "{l}");
    let hist_total: u64 = p["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(hist_total, ok, "{p}");
}

#[test]
fn bench_runs_against_real_etcd_and_reports_add_up() {
    let etcd = start_etcd();

    // put, JSON: every request accounted for, over 2 connections and 4 workers.
    let out = bench(
        &etcd.endpoint,
        &[
            "--json",
            "--conns=2",
            "--clients=4",
            "put",
            "--total=40",
            "--val-size=16",
            "--key-space-size=10",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["command"], "put");
    assert_eq!(
        (report["conns"].as_u64(), report["clients"].as_u64()),
        (Some(2), Some(4))
    );
    assert_phase_adds_up(phase(&report, "put"), 40);
    let cpu = &report["client_cpu"];
    assert!(cpu["wall_secs"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(cpu["percent_of_one_core"].is_f64(), "{cpu}");

    // put with a timeline: one JSON line per 50 ms on stderr, which together hold every
    // request of the report (120 puts at 400/s: about 300 ms).
    let (out, err) = bench_output(
        &etcd.endpoint,
        &[
            "--json",
            "--interval-ms=50",
            "--clients=2",
            "put",
            "--total=120",
            "--rate=400",
            "--key-space-size=10",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_phase_adds_up(phase(&report, "put"), 120);
    let lines: Vec<Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 4, "timeline of {} lines: {err}", lines.len());
    assert_eq!(
        lines.iter().map(|l| l["ok"].as_u64().unwrap()).sum::<u64>(),
        120,
        "{err}"
    );
    let mut last_t = 0.0;
    for l in &lines {
        assert_eq!(l["phase"], "put", "{l}");
        assert_eq!(l["errors"].as_u64(), Some(0), "{l}");
        let t = l["t_secs"].as_f64().unwrap();
        assert!(t > last_t, "times out of order: {err}");
        last_t = t;
        if l["ok"].as_u64().unwrap() > 0 {
            let (p50, p99, max) = (
                l["p50_ms"].as_f64().unwrap(),
                l["p99_ms"].as_f64().unwrap(),
                l["max_ms"].as_f64().unwrap(),
            );
            assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{l}");
        }
    }

    // range, text output, serializable.
    let text = bench(
        &etcd.endpoint,
        &[
            "--clients=2",
            "range",
            "a",
            "b",
            "--total=20",
            "--consistency=s",
        ],
    );
    assert!(text.contains("range summary:"), "{text}");
    assert!(text.contains("20 requests (20 ok, 0 failed)"), "{text}");
    assert!(text.contains("Client CPU:"), "{text}");

    // watch-latency: 2 streams x 3 watchers see each of 5 puts.
    let out = bench(
        &etcd.endpoint,
        &[
            "--json",
            "--conns=2",
            "watch-latency",
            "--streams=2",
            "--watchers-per-stream=3",
            "--put-total=5",
            "--put-rate=0",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_phase_adds_up(phase(&report, "watch-create"), 6);
    assert_phase_adds_up(phase(&report, "put"), 5);
    assert_phase_adds_up(phase(&report, "watch-latency (event after put sent)"), 30);
    assert_eq!(
        phase(&report, "watch-latency (event after put ack)")["ok"].as_u64(),
        Some(30)
    );

    // lease-keepalive and txn-put complete without errors.
    let out = bench(
        &etcd.endpoint,
        &["--json", "--clients=2", "lease-keepalive", "--total=10"],
    );
    assert_phase_adds_up(
        phase(&serde_json::from_str(&out).unwrap(), "lease-keepalive"),
        10,
    );
    let out = bench(
        &etcd.endpoint,
        &[
            "--json",
            "--clients=2",
            "txn-put",
            "--total=10",
            "--txn-ops=3",
            "--key-space-size=10",
        ],
    );
    assert_phase_adds_up(phase(&serde_json::from_str(&out).unwrap(), "txn-put"), 10);
}

#[test]
fn bench_fails_cleanly_when_nothing_listens() {
    let port = free_port();
    let bin = &crate::support::workspace_bin("minietcd-bench");
    let out = Command::new(bin)
        .args([
            "--endpoints",
            &format!("127.0.0.1:{}", port.port),
            "--dial-timeout-ms=500",
            "put",
            "--total=1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no report for a run that never started"
    );
}

/// The notes of a JSON report.
fn notes(report: &Value) -> Vec<String> {
    report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        // On a loaded machine the tool also notes that it may have been the bottleneck.
        .filter(|n| !n.starts_with("the client used "))
        .collect()
}

/// The revision etcd reports for itself.
fn revision(endpoint: &str) -> i64 {
    let out = Command::new(require_program("etcdctl"))
        .args(["--endpoints", endpoint, "endpoint", "status", "-w", "json"])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    status[0]["Status"]["header"]["revision"].as_i64().unwrap()
}

#[test]
fn bench_range_limit_count_only_and_from_key_read_what_was_written() {
    let etcd = start_etcd();
    // 30 distinct keys (sequential keys 0..29 of the key space).
    let out = bench(
        &etcd.endpoint,
        &[
            "--json",
            "--clients=3",
            "put",
            "--sequential-keys",
            "--key-space-size=30",
            "--total=30",
            "--val-size=16",
        ],
    );
    assert_phase_adds_up(phase(&serde_json::from_str(&out).unwrap(), "put"), 30);

    // From the first key on, at most 10 key-values per response: 10 of 30, more to come.
    let out = bench(
        &etcd.endpoint,
        &[
            "--json",
            "range",
            "",
            "--from-key",
            "--limit=10",
            "--total=3",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_phase_adds_up(phase(&report, "range"), 3);
    assert_eq!(
        notes(&report),
        ["each range response: 10 key-values, count 30, more true"]
    );

    // A count alone carries no key-values; serializable reads see the same count.
    let out = bench(
        &etcd.endpoint,
        &[
            "--json",
            "--consistency=s",
            "range",
            "",
            "--from-key",
            "--count-only",
            "--total=2",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_phase_adds_up(phase(&report, "range"), 2);
    assert_eq!(
        notes(&report),
        ["each range response: 0 key-values, count 30, more false"]
    );
}

#[test]
fn bench_stopped_by_sigint_reports_the_requests_it_sent() {
    let etcd = start_etcd();
    let start = revision(&etcd.endpoint);
    let bin = crate::support::workspace_bin("minietcd-bench");
    let child = Command::new(bin)
        .args(["--endpoints", &etcd.endpoint, "--json", "--clients=2"])
        .args([
            "put",
            "--rate=200",
            "--total=1000000",
            "--key-space-size=100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Puts are arriving, so the loop (and its SIGINT handler) runs.
    wait_until("puts arrive", Duration::from_secs(20), || {
        (revision(&etcd.endpoint) >= start + 20).then_some(())
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let put = phase(&report, "put");
    let ok = put["ok"].as_u64().unwrap();
    assert!((20..1_000_000).contains(&ok), "{put}");
    assert_phase_adds_up(put, ok);
    assert_eq!(
        notes(&report),
        [format!("stopped early by SIGINT: {ok} requests sent")]
    );
    // Every put the report counts reached the server.
    assert!(revision(&etcd.endpoint) >= start + ok as i64);
}
