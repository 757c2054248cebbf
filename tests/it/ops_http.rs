//! What an operator runs besides KV, on minietcd and on real etcd 3.4 in the same test:
//! etcdctl with `http://` endpoints (Go's clientv3 puts the scheme into the HTTP/2
//! `:authority`), and plain HTTP/1.1 on the client port: `/health`, `/version`, `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::require_program;

/// How long one etcdctl run may take before it is killed and the test fails.
const CTL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a whole scenario may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// Two tests of one scenario, on minietcd and on etcd 3.4, each within [`SCENARIO_TIMEOUT`].
macro_rules! on_both {
    ($scenario:ident, $minietcd:ident, $etcd:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $minietcd() {
            tokio::time::timeout(SCENARIO_TIMEOUT, $scenario(ServerKind::Minietcd))
                .await
                .expect("scenario within its time limit");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $etcd() {
            tokio::time::timeout(SCENARIO_TIMEOUT, $scenario(ServerKind::Etcd))
                .await
                .expect("scenario within its time limit");
        }
    };
}

/// Runs etcdctl (API v3) with `--endpoints=<endpoints>` and `args`, killed after
/// [`CTL_TIMEOUT`].
fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    let mut child = Command::new(require_program("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    let deadline = Instant::now() + CTL_TIMEOUT;
    while child.try_wait().expect("wait for etcdctl").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("etcdctl output");
            panic!(
                "etcdctl {args:?} did not finish within {CTL_TIMEOUT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("etcdctl output")
}

/// Runs etcdctl; it must succeed; returns stdout.
fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args);
    assert!(
        out.status.success(),
        "etcdctl --endpoints={endpoints} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Every endpoint of `c` written as etcd's documentation writes them: `http://host:port`.
fn http_endpoints(c: &Cluster) -> String {
    c.endpoints()
        .iter()
        .map(|e| format!("http://{e}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn etcdctl_with_http_endpoints(kind: ServerKind) {
    let c = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    let eps = http_endpoints(&c);
    tokio::task::spawn_blocking(move || {
        let status = etcdctl_ok(&eps, &["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
        let members = status.as_array().expect("one status per endpoint");
        assert_eq!(members.len(), 3, "{status}");
        for m in members {
            assert!(
                m["Endpoint"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("http://")),
                "{m}"
            );
            assert!(
                m["Status"]["leader"].as_u64().is_some_and(|l| l != 0),
                "{m}"
            );
        }
        let health = etcdctl(&eps, &["endpoint", "health"]);
        let text = String::from_utf8_lossy(&health.stderr).into_owned()
            + &String::from_utf8_lossy(&health.stdout);
        assert!(health.status.success(), "endpoint health: {text}");
        assert_eq!(text.matches("is healthy").count(), 3, "{text}");
        assert_eq!(etcdctl_ok(&eps, &["put", "scheme", "http"]).trim(), "OK");
        assert_eq!(
            etcdctl_ok(&eps, &["get", "scheme", "--print-value-only"]).trim(),
            "http"
        );
        // One endpoint alone, and every member on its own: each answers.
        for ep in eps.split(',') {
            let v = etcdctl_ok(ep, &["get", "scheme", "--print-value-only"]);
            assert_eq!(v.trim(), "http", "{ep}");
        }
    })
    .await
    .expect("etcdctl scenario");
}

on_both!(
    etcdctl_with_http_endpoints,
    etcdctl_http_endpoints_minietcd,
    etcdctl_http_endpoints_etcd
);

/// How long one plain HTTP request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer: status code, header lines (lowercased names), body.
struct HttpAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET <path>` on 127.0.0.1:`port` as curl sends it, over HTTP/1.0 so that the body is
/// neither chunked nor kept alive: it ends when the server closes.
fn http_get(port: u16, path: &str) -> std::io::Result<HttpAnswer> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(HTTP_TIMEOUT))?;
    conn.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no end of headers in {text:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `http_get` in a blocking task.
async fn get(port: u16, path: &'static str) -> HttpAnswer {
    tokio::task::spawn_blocking(move || http_get(port, path))
        .await
        .expect("http task")
        .unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

/// The value of `series` (a metric name, with its labels as Prometheus prints them) in a
/// `/metrics` body.
fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The metrics both servers must export (etcd's names).
const METRIC_NAMES: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_disk_wal_fsync_duration_seconds_count",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_count",
    "etcd_debugging_mvcc_watcher_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
];

const PUT_STARTED: &str = r#"grpc_server_started_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#;
const PUT_HANDLED_OK: &str = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#;

/// The keys of a JSON object body, sorted.
fn json_keys(body: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body {body:?}: {e}"));
    let mut keys: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("a JSON object: {body}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

async fn health_version_metrics(kind: ServerKind) {
    let metrics_port = crate::support::free_port();
    let c = Cluster::start_ready(ClusterConfig::new(kind, 1).arg(format!(
        "--listen-metrics-urls=http://127.0.0.1:{}",
        metrics_port.port
    )))
    .await;
    let port = c.client_port(0);

    tracing::info!(?kind, "phase: /health");
    let h = get(port, "/health").await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body.trim(), r#"{"health":"true"}"#);
    assert_eq!(json_keys(&h.body), ["health"]);

    tracing::info!(?kind, "phase: /version");
    let v = get(port, "/version").await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.header("content-type"), Some("application/json"));
    assert_eq!(json_keys(&v.body), ["etcdcluster", "etcdserver"]);
    let v: serde_json::Value = serde_json::from_str(&v.body).expect("version JSON");
    assert_eq!(v["etcdserver"], "3.4.23");
    assert_eq!(v["etcdcluster"], "3.4.0");

    tracing::info!(?kind, "phase: /metrics before and after puts");
    let before = get(port, "/metrics").await;
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        before.headers
    );
    for name in METRIC_NAMES {
        assert!(
            before.body.lines().any(|l| l.starts_with(name)),
            "{kind:?} /metrics lacks {name}"
        );
    }
    assert_eq!(metric(&before.body, "etcd_server_has_leader"), Some(1.0));
    assert!(metric(&before.body, "etcd_server_leader_changes_seen_total") >= Some(1.0));
    let committed = |b: &str| metric(b, "etcd_server_proposals_committed_total").unwrap();
    let applied = |b: &str| metric(b, "etcd_server_proposals_applied_total").unwrap();
    let fsyncs = |b: &str| metric(b, "etcd_disk_wal_fsync_duration_seconds_count").unwrap();

    const PUTS: usize = 10;
    let mut kv = etcd_client::Client::connect([c.endpoint(0)], None)
        .await
        .expect("connect");
    for i in 0..PUTS {
        kv.put(format!("metrics/{i}"), "v", None)
            .await
            .expect("put");
    }
    let mut watch = etcd_client::Client::connect([c.endpoint(0)], None)
        .await
        .expect("connect");
    let _watch_stream = watch.watch("metrics/", None).await.expect("watch");

    let after = get(port, "/metrics").await;
    let puts = PUTS as f64;
    assert!(
        committed(&after.body) >= committed(&before.body) + puts,
        "committed did not move"
    );
    assert!(
        applied(&after.body) >= applied(&before.body) + puts,
        "applied did not move"
    );
    assert!(
        fsyncs(&after.body) > fsyncs(&before.body),
        "no WAL fsync seen"
    );
    assert_eq!(
        metric(&after.body, "etcd_server_proposals_pending"),
        Some(0.0)
    );
    assert_eq!(
        metric(&after.body, "etcd_server_proposals_failed_total"),
        Some(0.0)
    );
    assert!(metric(&after.body, "etcd_mvcc_db_total_size_in_bytes") > Some(0.0));
    // The watch stream is open; its watcher is counted once the server has registered it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = get(port, "/metrics").await;
        if metric(&now.body, "etcd_debugging_mvcc_watcher_total") >= Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd_debugging_mvcc_watcher_total stayed below 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metric(&after.body, PUT_STARTED) >= Some(puts),
        "{PUT_STARTED}"
    );
    assert!(
        metric(&after.body, PUT_HANDLED_OK) >= Some(puts),
        "{PUT_HANDLED_OK}"
    );

    tracing::info!(?kind, "phase: --listen-metrics-urls");
    let m = get(metrics_port.port, "/metrics").await;
    assert_eq!(m.status, 200);
    assert_eq!(metric(&m.body, "etcd_server_has_leader"), Some(1.0));
    let h = get(metrics_port.port, "/health").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body.trim(), r#"{"health":"true"}"#);
}

on_both!(
    health_version_metrics,
    http_health_version_metrics_minietcd,
    http_health_version_metrics_etcd
);

/// A member that lost its quorum: `/health` answers 503 `{"health":"false"}` and
/// `etcd_server_has_leader` drops to 0.
async fn health_without_leader(kind: ServerKind) {
    let mut c = Cluster::start_ready(ClusterConfig::new(kind, 3)).await;
    let port = c.client_port(0);
    assert_eq!(get(port, "/health").await.status, 200);
    c.kill(1);
    c.kill(2);
    tracing::info!(?kind, "phase: quorum lost, polling /health");
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let h = get(port, "/health").await;
        if h.status != 200 {
            break h;
        }
        assert!(Instant::now() < deadline, "still healthy: {}", h.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(last.status, 503, "{}", last.body);
    assert_eq!(last.body, "{\"health\":\"false\"}\n");
    assert_eq!(json_keys(&last.body), ["health"]);
    loop {
        let m = get(port, "/metrics").await;
        if metric(&m.body, "etcd_server_has_leader") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "has_leader still 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both!(
    health_without_leader,
    http_health_without_leader_minietcd,
    http_health_without_leader_etcd
);

/// How long a member may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a restarted member may take to serve again.
const RESTART_WITHIN: Duration = Duration::from_secs(10);

/// SIGTERM while puts are in flight and a watch stream is open: the member exits by itself,
/// soon, with success; the watch stream ends; after a restart every acknowledged put is there.
async fn sigterm_stops_cleanly(kind: ServerKind) {
    let mut c = Cluster::start_ready(ClusterConfig::new(kind, 1)).await;
    let ep = c.endpoint(0);
    let mut watcher_client = etcd_client::Client::connect([ep.clone()], None)
        .await
        .expect("connect");
    let mut events = watcher_client
        .watch(
            "stop/",
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await
        .expect("watch");

    const BEFORE_STOP: usize = 200;
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(async move {
        let mut kv = etcd_client::Client::connect([ep], None)
            .await
            .expect("connect");
        for i in 0.. {
            let key = format!("stop/{i:06}");
            match tokio::time::timeout(Duration::from_secs(5), kv.put(key.clone(), "v", None)).await
            {
                Ok(Ok(_)) => {
                    if acked_tx.send(key).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < BEFORE_STOP {
        let key = acked_rx.recv().await.expect("writer stopped early");
        acked.push(key);
    }

    tracing::info!(?kind, "phase: SIGTERM with puts in flight");
    let started = Instant::now();
    let status = tokio::task::block_in_place(|| c.terminate(0, STOP_GRACE));
    let took = started.elapsed();
    let status = status.unwrap_or_else(|| panic!("{kind:?} ignored SIGTERM for {STOP_GRACE:?}"));
    // etcd re-raises the signal once it has cleaned up (Go's osutil.HandleInterrupts);
    // minietcd exits with 0. Either way the process ended by itself, in time.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(libc::SIGTERM),
        "{kind:?} exited with {status}"
    );
    tracing::info!(?kind, ?took, "stopped");
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    while let Ok(key) = acked_rx.try_recv() {
        acked.push(key);
    }
    // The watch stream does not outlive the member: it ends or fails.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.message().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "{kind:?}: the watch stream outlived the member"
    );

    tracing::info!(?kind, acked = acked.len(), "phase: restart");
    let started = Instant::now();
    c.restart(0);
    let mut kv = crate::support::wait_until_async("restarted member", RESTART_WITHIN, || {
        let ep = c.endpoint(0);
        async move {
            let mut kv = etcd_client::Client::connect([ep], None).await.ok()?;
            kv.get("stop/", None).await.ok()?;
            Some(kv)
        }
    })
    .await;
    tracing::info!(?kind, took = ?started.elapsed(), "serving again");
    let got = kv
        .get(
            "stop/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("range");
    let have: std::collections::HashSet<Vec<u8>> =
        got.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    for key in &acked {
        assert!(
            have.contains(key.as_bytes()),
            "{kind:?} lost acknowledged put {key}"
        );
    }
}

on_both!(
    sigterm_stops_cleanly,
    sigterm_stops_cleanly_minietcd,
    sigterm_stops_cleanly_etcd
);
