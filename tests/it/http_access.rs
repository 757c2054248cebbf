//! `--cors` and `--host-whitelist` on the client port's HTTP side: the same requests against
//! etcd 3.4 and minietcd get the same status, CORS headers and refusal text; gRPC is not
//! affected.

use std::process::Command;
use std::time::Duration;

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::{output_within, require_program};

const CORS: &str = "--cors=http://a.example:80,http://b.example:8080";
const HOSTS: &str = "--host-whitelist=localhost,foo.example";

/// One request with curl: the status line, the `access-control-*` headers (sorted) and, for a
/// refusal, the body.
fn request(port: u16, method: &str, path: &str, host: &str, origin: Option<&str>) -> String {
    let mut cmd = Command::new(require_program("curl"));
    cmd.args(["-s", "-i", "--max-time", "10", "-X", method])
        .arg("-H")
        .arg(format!("Host: {host}"));
    if let Some(o) = origin {
        cmd.arg("-H").arg(format!("Origin: {o}"));
    }
    if method == "POST" {
        cmd.args(["-d", r#"{"key":"YQ=="}"#]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = output_within(&mut cmd, "", Duration::from_secs(15));
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().trim().to_string();
    let mut cors: Vec<String> = lines
        .map(str::to_lowercase)
        .filter(|l| l.starts_with("access-control-"))
        .collect();
    cors.sort_unstable();
    let body = if status.contains("421") { body } else { "" };
    format!("{method} {path} host={host} origin={origin:?}: {status} {cors:?} {body:?}")
}

fn scenario(port: u16) -> Vec<String> {
    let local = format!("localhost:{port}");
    vec![
        // Not whitelisted: etcd's 421, whatever the path.
        request(
            port,
            "GET",
            "/health",
            &format!("127.0.0.1:{port}"),
            Some("http://a.example:80"),
        ),
        request(port, "GET", "/v3/kv/range", "evil.example", None),
        // Whitelisted, with an allowed origin, another origin, and none.
        request(port, "GET", "/health", &local, Some("http://a.example:80")),
        request(port, "GET", "/version", &local, Some("http://c.example:80")),
        request(port, "GET", "/version", "foo.example", None),
        request(
            port,
            "POST",
            "/v3/kv/range",
            &local,
            Some("http://b.example:8080"),
        ),
        request(port, "GET", "/nope", &local, Some("http://a.example:80")),
        // Preflights answer 200 on any path.
        request(
            port,
            "OPTIONS",
            "/v3/kv/put",
            &local,
            Some("http://b.example:8080"),
        ),
        request(port, "OPTIONS", "/anything", &local, None),
    ]
}

/// etcdctl over gRPC on the 127.0.0.1 endpoint, which the whitelist does not name.
fn grpc_put(endpoint: &str) -> bool {
    output_within(
        Command::new(require_program("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(["put", "grpc", "ok"]),
        "",
        Duration::from_secs(15),
    )
    .status
    .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_host_whitelist_answer_as_etcd() {
    let mut outputs = Vec::new();
    for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
        let c = Cluster::start_ready(ClusterConfig::new(kind, 1).arg(CORS).arg(HOSTS)).await;
        let (port, endpoint) = (c.client_port(0), c.endpoint(0));
        let seen = tokio::task::spawn_blocking(move || {
            let seen = scenario(port);
            assert!(grpc_put(&endpoint), "gRPC refused");
            seen
        })
        .await
        .unwrap();
        outputs.push(seen.join("\n").replace(&port.to_string(), "<PORT>"));
    }
    assert!(outputs[0].contains("421"), "{}", outputs[0]);
    assert!(
        outputs[0].contains("access-control-allow-origin: http://b.example:8080"),
        "{}",
        outputs[0]
    );
    assert_eq!(
        outputs[1], outputs[0],
        "minietcd (left) against etcd (right)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_cors_allows_every_origin_on_every_http_path() {
    let c = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
    let port = c.client_port(0);
    let seen = tokio::task::spawn_blocking(move || {
        request(
            port,
            "GET",
            "/health",
            "evil.example",
            Some("http://x.example:1"),
        )
    })
    .await
    .unwrap();
    assert!(seen.contains("200 OK"), "{seen}");
    assert!(seen.contains("access-control-allow-origin: *"), "{seen}");
}
