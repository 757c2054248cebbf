//! The gRPC JSON gateway (`/v3/...`, `/v3beta/...`) against real etcd 3.4: the same curl
//! requests on a one-member etcd and a one-member minietcd give the same HTTP status and the
//! same JSON, once the values that legitimately differ (ids, terms, URLs, sizes) are masked.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::{require_program, ChildGuard};

/// How long the whole scenario may take on one server.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one curl request may take.
const CURL_MAX_SECS: &str = "10";
/// How long a stream's next line may take.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Fields whose values differ between two clusters for reasons that are not behaviour:
/// random ids, the Raft term of a fresh cluster, ports, database sizes and Raft indexes.
const MASKED: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "ID",
    "leader",
    "peerURLs",
    "clientURLs",
    "dbSize",
    "dbSizeInUse",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "lease",
];

/// Replaces the values of [`MASKED`] fields (and of `extra`) anywhere in `v`.
fn mask(v: &mut Value, extra: &[&str]) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if MASKED.contains(&k.as_str()) || extra.contains(&k.as_str()) {
                    *val = Value::String("<masked>".into());
                } else {
                    mask(val, extra);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask(x, extra)),
        _ => {}
    }
}

/// One POST through curl: (HTTP status, body).
fn post(base: &str, path: &str, body: &str) -> (u16, String) {
    let out = Command::new(require_program("curl"))
        .args([
            "-s",
            "--max-time",
            CURL_MAX_SECS,
            "-w",
            "\n%{http_code}",
            "-X",
        ])
        .arg("POST")
        .arg(format!("{base}{path}"))
        .args(["-d", body])
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A POST whose JSON answer is masked; `(status, masked JSON)` as text.
fn post_json(base: &str, path: &str, body: &str, extra: &[&str]) -> String {
    let (code, text) = post(base, path, body);
    let mut v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    mask(&mut v, extra);
    format!("{path} {code} {v}")
}

/// A streaming POST (watch, keepalive, observe): lines arrive on a channel.
struct LiveCurl {
    _guard: ChildGuard,
    lines: mpsc::Receiver<String>,
}

impl LiveCurl {
    fn spawn(base: &str, path: &str, body: &str) -> LiveCurl {
        let mut cmd = Command::new(require_program("curl"));
        cmd.args(["-s", "-N", "--max-time", "30", "-X", "POST"])
            .arg(format!("{base}{path}"))
            .args(["-d", body])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut guard = ChildGuard::spawn("curl", &mut cmd);
        let stdout = guard
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("curl stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !line.trim().is_empty() && tx.send(line).is_err() {
                    break;
                }
            }
        });
        LiveCurl {
            _guard: guard,
            lines,
        }
    }

    /// The next line, masked (and its `extra` fields).
    fn next(&self, what: &str, extra: &[&str]) -> String {
        let line = self
            .lines
            .recv_timeout(LINE_TIMEOUT)
            .unwrap_or_else(|_| panic!("no line from the stream: {what}"));
        let mut v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
        mask(&mut v, extra);
        format!("{what} {v}")
    }
}

/// The lease id a grant answered.
fn lease_id(base: &str) -> String {
    let (_, text) = post(base, "/v3/lease/grant", r#"{"TTL":30}"#);
    let v: Value = serde_json::from_str(&text).expect("grant JSON");
    v["ID"].as_str().expect("lease ID").to_string()
}

/// What one server answered to the scenario, masked.
fn scenario(base: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut json = |path: &str, body: &str| seen.push(post_json(base, path, body, &[]));
    // KV: put, range (also under /v3beta), txn, delete with prev_kv, compaction.
    json("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    json(
        "/v3/kv/put",
        r#"{"key":"Zm9vMg==","value":"YmF6","prev_kv":true}"#,
    );
    json("/v3/kv/range", r#"{"key":"Zm9v"}"#);
    json(
        "/v3beta/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sortTarget":"KEY","limit":"5"}"#,
    );
    json(
        "/v3/kv/range",
        r#"{"key":"Zm9v","count_only":true,"unknown":1}"#,
    );
    json(
        "/v3/kv/txn",
        r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"0"}],
            "success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}],
            "failure":[{"request_range":{"key":"Zm9v"}},{"requestDeleteRange":{"key":"Zm9vMg=="}}]}"#,
    );
    json("/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#);
    json("/v3/kv/compaction", r#"{"revision":"2"}"#);
    // Errors: etcd's error object and HTTP status.
    json("/v3/kv/put", r#"{"value":"YmFy"}"#);
    json("/v3/kv/range", "");
    json("/v3/kv/range", r#"{"key":"Zm9v","revision":"1"}"#);
    json("/v3/lease/revoke", r#"{"ID":"5"}"#);
    json("/v3/election/leader", r#"{"name":"ZQ=="}"#);
    // Leases.
    json("/v3/lease/grant", r#"{"TTL":30}"#);
    let id = lease_id(base);
    let mut ttl = |path: &str, body: &str| seen.push(post_json(base, path, body, &["TTL"]));
    ttl(
        "/v3/lease/timetolive",
        &format!(r#"{{"ID":"{id}","keys":true}}"#),
    );
    ttl("/v3/kv/lease/timetolive", &format!(r#"{{"ID":{id}}}"#));
    let mut json = |path: &str, body: &str| seen.push(post_json(base, path, body, &[]));
    json("/v3/lease/revoke", &format!(r#"{{"ID":"{id}"}}"#));
    // Cluster and maintenance.
    json("/v3/cluster/member/list", "{}");
    json("/v3/maintenance/status", "{}");
    // Lock and election.
    let id = lease_id(base);
    seen.push(post_json(
        base,
        "/v3/lock/lock",
        &format!(r#"{{"name":"bA==","lease":"{id}"}}"#),
        &["key"],
    ));
    let campaign = post(
        base,
        "/v3/election/campaign",
        &format!(r#"{{"name":"ZQ==","value":"djE=","lease":"{id}"}}"#),
    );
    let leader: Value = serde_json::from_str(&campaign.1).expect("campaign JSON");
    let leader_key = leader["leader"].to_string();
    let mut v = leader.clone();
    mask(&mut v, &["key"]);
    seen.push(format!("campaign {} {v}", campaign.0));
    let observe = LiveCurl::spawn(base, "/v3/election/observe", r#"{"name":"ZQ=="}"#);
    // The current leader comes first, once the stream is open: the proclamations below must
    // not race with curl starting up.
    seen.push(observe.next("observe 1", &["key"]));
    let mut json = |path: &str, body: &str| seen.push(post_json(base, path, body, &["key"]));
    json("/v3/election/leader", r#"{"name":"ZQ=="}"#);
    json(
        "/v3/election/proclaim",
        &format!(r#"{{"leader":{leader_key},"value":"djI="}}"#),
    );
    json(
        "/v3/election/resign",
        &format!(r#"{{"leader":{leader_key}}}"#),
    );
    json(
        "/v3/election/proclaim",
        &format!(r#"{{"leader":{leader_key},"value":"djM="}}"#),
    );
    json("/v3/election/resign", "{}");
    seen.push(observe.next("observe 2", &["key"]));
    seen
}

/// Watch and keep-alive streams, masked.
fn streams(base: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let watch = LiveCurl::spawn(
        base,
        "/v3/watch",
        r#"{"create_request":{"key":"dw==","prev_kv":true}}"#,
    );
    seen.push(watch.next("watch created", &[]));
    post(base, "/v3/kv/put", r#"{"key":"dw==","value":"MQ=="}"#);
    post(base, "/v3/kv/put", r#"{"key":"dw==","value":"Mg=="}"#);
    post(base, "/v3/kv/deleterange", r#"{"key":"dw=="}"#);
    for i in 0..3 {
        seen.push(watch.next(&format!("watch event {i}"), &[]));
    }
    let id = lease_id(base);
    let keepalive = LiveCurl::spawn(base, "/v3/lease/keepalive", &format!(r#"{{"ID":"{id}"}}"#));
    seen.push(keepalive.next("keepalive", &[]));
    let missing = LiveCurl::spawn(base, "/v3/lease/keepalive", r#"{"ID":"7"}"#);
    seen.push(missing.next("keepalive of a missing lease", &[]));
    seen
}

/// What one server answers to bad requests: (status, JSON keys, code) only, since the parse
/// error messages are Go's on etcd.
fn bad_requests(base: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for (path, body) in [
        ("/v3/kv/put", "{bad"),
        ("/v3/kv/range", "[1]"),
        ("/v3/kv/range", r#"{"key":5}"#),
    ] {
        let (code, text) = post(base, path, body);
        let v: Value = serde_json::from_str(&text).expect("error JSON");
        let keys: Vec<&String> = v
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        seen.push(format!("{path} {body} {code} {keys:?} {}", v["code"]));
    }
    // Paths and methods the gateway does not serve: Go's plain-text answers.
    let get = Command::new(require_program("curl"))
        .args(["-s", "-w", " %{http_code}", "--max-time", CURL_MAX_SECS])
        .arg(format!("{base}/v3/kv/range"))
        .output()
        .expect("curl");
    seen.push(String::from_utf8_lossy(&get.stdout).into_owned());
    let (code, text) = post(base, "/v3/nope", "{}");
    seen.push(format!("{code} {text}"));
    // A CORS preflight: 200, empty, with etcd's CORS headers.
    let preflight = Command::new(require_program("curl"))
        .args(["-s", "-i", "-X", "OPTIONS", "--max-time", CURL_MAX_SECS])
        .arg(format!("{base}/v3/kv/range"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&preflight.stdout).to_lowercase();
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http/") || l.starts_with("access-control-"))
        .map(str::trim)
        .collect();
    lines.sort_unstable();
    seen.push(lines.join("|"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_as_etcd() {
    let mut outputs = Vec::new();
    for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
        let c = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
        let base = format!("http://{}", c.endpoint(0));
        let seen = tokio::time::timeout(
            SCENARIO_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                let mut seen = scenario(&base);
                seen.extend(streams(&base));
                seen.extend(bad_requests(&base));
                seen
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: scenario timed out"))
        .expect("scenario");
        drop(c);
        tracing::info!(?kind, ?seen, "gateway answers");
        outputs.push(seen);
    }
    for (e, m) in outputs[0].iter().zip(&outputs[1]) {
        assert_eq!(m, e, "minietcd (left) differs from etcd (right)");
    }
    assert_eq!(outputs[0].len(), outputs[1].len());
}
