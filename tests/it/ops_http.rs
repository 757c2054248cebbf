//! What an operator runs besides KV, on minietcd and on real etcd 3.4 in the same test:
//! etcdctl with `http://` endpoints (Go's clientv3 puts the scheme into the HTTP/2
//! `:authority`), and plain HTTP/1.1 on the client port: `/health`, `/version`, `/metrics`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::require_program;

/// How long one etcdctl run may take before it is killed and the test fails.
const CTL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a whole scenario may take.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_http_endpoints_minietcd() {
    tokio::time::timeout(
        SCENARIO_TIMEOUT,
        etcdctl_with_http_endpoints(ServerKind::Minietcd),
    )
    .await
    .expect("scenario within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_http_endpoints_etcd() {
    tokio::time::timeout(
        SCENARIO_TIMEOUT,
        etcdctl_with_http_endpoints(ServerKind::Etcd),
    )
    .await
    .expect("scenario within its time limit");
}
