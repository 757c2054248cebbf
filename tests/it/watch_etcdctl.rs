//! etcdctl (Debian's 3.4) watching the in-process Watch service: `watch --prefix`, `--rev`,
//! `--prev-kv`, deletes and a key range; every event it prints (`-w json`) is checked against
//! the write history.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use minietcd::pb::mvccpb::{Event, KeyValue};
use minietcd::server::watch::WatchConfig;
use minietcd::watch::checker::WatchSpec;
use minietcd::watch::WatchTarget;

use super::support::{require_program, ChildGuard};
use super::watch_node::{delete, txn_puts, Node};

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(val).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn kv(j: &serde_json::Value) -> KeyValue {
    let num = |f: &str| j[f].as_i64().unwrap_or(0);
    let bytes = |f: &str| j[f].as_str().map(b64).unwrap_or_default();
    KeyValue {
        key: bytes("key"),
        create_revision: num("create_revision"),
        mod_revision: num("mod_revision"),
        version: num("version"),
        value: bytes("value"),
        lease: num("lease"),
    }
}

fn event(j: &serde_json::Value) -> Event {
    Event {
        r#type: j["type"].as_i64().unwrap_or(0) as i32,
        kv: Some(kv(&j["kv"])),
        prev_kv: j.get("prev_kv").map(kv),
    }
}

/// Runs `etcdctl watch <args> -w json` and streams its responses' event lists.
pub(crate) fn etcdctl_watch(
    endpoint: &str,
    args: &[&str],
) -> (ChildGuard, mpsc::Receiver<Vec<Event>>) {
    let etcdctl = require_program("etcdctl");
    let mut cmd = Command::new(etcdctl);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints={}",
            endpoint.trim_start_matches("http://")
        ))
        .arg("watch")
        .args(args)
        .args(["-w", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = ChildGuard::spawn("etcdctl watch", &mut cmd);
    let stdout = child.child.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let Ok(j) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let evs: Vec<Event> = j["Events"]
                .as_array()
                .map(|a| a.iter().map(event).collect())
                .unwrap_or_default();
            if !evs.is_empty() && tx.send(evs).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

pub(crate) fn collect_until(rx: &mpsc::Receiver<Vec<Event>>, until: i64) -> Vec<Vec<Event>> {
    let mut got: Vec<Vec<Event>> = Vec::new();
    while !got
        .iter()
        .flatten()
        .any(|e| e.kv.as_ref().is_some_and(|k| k.mod_revision >= until))
    {
        got.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("etcdctl printed nothing in time"),
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_prefix_rev_prev_kv_range_and_deletes() {
    let node = Node::start(WatchConfig::default()).await;
    node.put("pre/0", "x");
    node.put("pre/1", "x");
    let start = node.rev(); // a past revision: --rev replays from it
    node.put("pre/0", "y");
    node.apply(delete("pre/1", ""));
    let start_s = start.to_string();
    let (_prefix, prefix_rx) = etcdctl_watch(
        &node.endpoint,
        &["--prefix", "pre/", "--rev", &start_s, "--prev-kv"],
    );
    let (_range, range_rx) = etcdctl_watch(&node.endpoint, &["r1", "r5", "--rev", &start_s]);
    for i in 0..10 {
        node.put(&format!("pre/{}", i % 3), &i.to_string());
        node.put(&format!("r{}", i % 7), "v");
        if i % 4 == 0 {
            node.apply(delete("pre/", "pre0"));
            node.apply(delete("r1", "r3"));
        }
    }
    let end = node.apply(txn_puts(&[("pre/end", "e".into()), ("r2", "e".into())]));
    let got = tokio::task::spawn_blocking(move || {
        (
            collect_until(&prefix_rx, end),
            collect_until(&range_rx, end),
        )
    })
    .await
    .unwrap();
    node.check(
        &WatchSpec {
            target: WatchTarget::new(b"pre/", b"pre0"),
            start_rev: start,
        },
        &got.0,
        true,
    );
    node.check(
        &WatchSpec {
            target: WatchTarget::new(b"r1", b"r5"),
            start_rev: start,
        },
        &got.1,
        false,
    );
    assert!(
        got.0.iter().flatten().any(|e| e.r#type == 1),
        "deletes seen"
    );
}
