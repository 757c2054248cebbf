//! TLS on the client port, against real etcd 3.4 and minietcd started with the same
//! certificates (made at run time, see `certs`): etcdctl and minietcdctl with
//! `--cacert/--cert/--key`, the `etcd-client` crate, curl on `/health`, auto TLS, and the
//! refusals (a plaintext client, a client certificate from another CA, bad files and flags).
//! Peer TLS is in `tls_peers`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::certs::{CertFiles, TestCa};
use crate::etcd_cluster::{Cluster, ClusterConfig, ClusterTls, ServerKind};
use crate::support::{
    free_port, minietcd_bin, output_within, require_program, wait_until, workspace_bin, ChildGuard,
};

/// Bound on one etcdctl or curl run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on each test's async part.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a refused start may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A CA, a server certificate and a client certificate (CN `alice`) in a temp dir, and a
/// client certificate of another CA (CN `mallory`).
pub(crate) struct Certs {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server: CertFiles,
    pub client: CertFiles,
    pub untrusted: CertFiles,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("tls-certs-")
            .tempdir()
            .unwrap();
        let ca = TestCa::new(dir.path(), "test");
        let other = TestCa::new(dir.path(), "other");
        Certs {
            server: ca.leaf("server"),
            client: ca.leaf("alice"),
            untrusted: other.leaf("mallory"),
            ca: ca.ca.clone(),
            dir,
        }
    }

    /// Client and peer TLS, client certificates required.
    pub fn cluster_tls(&self, clients: bool, peers: bool) -> ClusterTls {
        ClusterTls {
            ca: self.ca.clone(),
            server: self.server.clone(),
            client: self.client.clone(),
            clients,
            peers,
            client_cert_auth: true,
            auto: false,
        }
    }
}

/// Runs `program` with `args`, killed after [`TOOL_TIMEOUT`].
fn run(program: &Path, env: &[(&str, &str)], args: &[String]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_within(&mut cmd, "", TOOL_TIMEOUT)
}

/// etcdctl against `endpoint` with `tls` flags, then `args`.
fn etcdctl(endpoint: &str, tls: &[String], args: &[&str]) -> Output {
    let mut all = vec![
        format!("--endpoints={endpoint}"),
        "--dial-timeout=2s".to_string(),
        "--command-timeout=4s".to_string(),
    ];
    all.extend(tls.iter().cloned());
    all.extend(args.iter().map(|a| a.to_string()));
    run(&require_program("etcdctl"), &[("ETCDCTL_API", "3")], &all)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {:?}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// etcdctl that must succeed: its stdout.
pub(crate) fn ctl_ok(endpoint: &str, tls: &[String], args: &[&str]) -> String {
    let out = etcdctl(endpoint, tls, args);
    assert!(out.status.success(), "etcdctl {args:?}: {}", describe(&out));
    stdout(&out)
}

/// curl on `https://.../health` with `args`: (exit success, body).
fn curl_health(port: u16, args: &[String]) -> (bool, String) {
    let mut all = vec!["-sS".to_string(), "--max-time".to_string(), "5".to_string()];
    all.extend(args.iter().cloned());
    all.push(format!("https://127.0.0.1:{port}/health"));
    let out = run(&require_program("curl"), &[], &all);
    (out.status.success(), stdout(&out))
}

/// What one server answers to the TLS session below.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    session: Vec<String>,
    health: String,
}

/// etcdctl and curl with client certificates on a one-member cluster with client TLS and
/// `--client-cert-auth`; refused clients must fail.
async fn tls_session(kind: ServerKind, certs: &Certs) -> Observed {
    let cluster = Cluster::start(ClusterConfig::new(kind, 1).tls(certs.cluster_tls(true, false)));
    cluster.wait_ready().await;
    let url = cluster.members[0].client_url();
    assert!(url.starts_with("https://"), "{url}");
    let tls = cluster.tls.as_ref().unwrap().etcdctl_flags();
    let mut session = Vec::new();
    for args in [
        vec!["put", "tls/a", "1"],
        vec!["put", "tls/b", "2"],
        vec!["get", "tls/a"],
        vec!["get", "tls/", "--prefix", "--keys-only"],
        vec!["del", "tls/a"],
        vec!["get", "tls/", "--prefix"],
        vec!["endpoint", "health", "-w", "json"],
    ] {
        let out = ctl_ok(&url, &tls, &args);
        // `endpoint health` reports how long its proposal took: keep the verdict only.
        let out = if args[0] == "endpoint" {
            out.contains("\"health\":true").to_string()
        } else {
            out
        };
        session.push(out);
    }

    // A bare host:port with certificates is dialled with TLS too.
    let bare = url.trim_start_matches("https://").to_string();
    assert_eq!(
        ctl_ok(&bare, &tls, &["get", "tls/b", "--print-value-only"]),
        "2\n"
    );

    // minietcdctl takes etcdctl's TLS flags and answers the same.
    let mut args = vec![format!("--endpoints={url}")];
    args.extend(tls.iter().cloned());
    args.extend(["get", "tls/", "--prefix"].map(String::from));
    let ours = run(&workspace_bin("minietcdctl"), &[], &args);
    assert!(ours.status.success(), "minietcdctl: {}", describe(&ours));
    assert_eq!(
        stdout(&ours),
        ctl_ok(&url, &tls, &["get", "tls/", "--prefix"])
    );
    let skip = ["--insecure-transport=false", "--insecure-skip-tls-verify"].map(String::from);
    let mut args = vec![format!("--endpoints={url}")];
    args.extend(skip.iter().cloned());
    args.extend(tls[1..].iter().cloned());
    args.extend(["get", "tls/b", "--print-value-only"].map(String::from));
    let ours = run(&workspace_bin("minietcdctl"), &[], &args);
    assert_eq!(stdout(&ours), "2\n", "minietcdctl: {}", describe(&ours));

    // Refused: plaintext to the TLS port; no client certificate; one from another CA.
    let plain = url.replace("https://", "http://");
    let refused = etcdctl(&plain, &[], &["get", "tls/b"]);
    assert!(
        !refused.status.success(),
        "plaintext: {}",
        describe(&refused)
    );
    let no_cert = vec![format!("--cacert={}", certs.ca.display())];
    let refused = etcdctl(&url, &no_cert, &["get", "tls/b"]);
    assert!(
        !refused.status.success(),
        "no client cert: {}",
        describe(&refused)
    );
    let untrusted = vec![
        format!("--cacert={}", certs.ca.display()),
        format!("--cert={}", certs.untrusted.cert.display()),
        format!("--key={}", certs.untrusted.key.display()),
    ];
    let refused = etcdctl(&url, &untrusted, &["get", "tls/b"]);
    assert!(
        !refused.status.success(),
        "untrusted cert: {}",
        describe(&refused)
    );

    // /health over TLS on the client port, with the client certificate; refused without.
    let port = cluster.client_port(0);
    let with_cert = vec![
        "--cacert".to_string(),
        certs.ca.display().to_string(),
        "--cert".to_string(),
        certs.client.cert.display().to_string(),
        "--key".to_string(),
        certs.client.key.display().to_string(),
    ];
    let (ok, health) = curl_health(port, &with_cert);
    assert!(ok, "curl /health: {health}");
    let (ok, body) = curl_health(port, &with_cert[..2]);
    assert!(
        !ok,
        "curl /health without a client certificate answered {body:?}"
    );
    Observed { session, health }
}

#[tokio::test]
async fn etcdctl_and_curl_with_client_certificates_match_etcd() {
    let certs = Certs::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let etcd = tls_session(ServerKind::Etcd, &certs).await;
        let ours = tls_session(ServerKind::Minietcd, &certs).await;
        assert_eq!(etcd.health, "{\"health\":\"true\"}");
        assert_eq!(
            etcd.session[2], "tls/a\n1\n",
            "etcd's own answer: {:?}",
            etcd.session
        );
        assert_eq!(ours, etcd);
    })
    .await
    .expect("test timed out");
}

/// The `etcd-client` crate (tonic's TLS) with a client certificate, against both servers.
#[tokio::test]
async fn etcd_client_crate_over_tls() {
    let certs = Certs::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
            let cluster =
                Cluster::start(ClusterConfig::new(kind, 1).tls(certs.cluster_tls(true, false)));
            cluster.wait_ready().await;
            let read = |p: &Path| std::fs::read(p).unwrap();
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&certs.ca)))
                .identity(etcd_client::Identity::from_pem(
                    read(&certs.client.cert),
                    read(&certs.client.key),
                ));
            let opts = etcd_client::ConnectOptions::new()
                .with_tls(tls)
                .with_connect_timeout(Duration::from_secs(5));
            let mut client =
                etcd_client::Client::connect([cluster.members[0].client_url()], Some(opts))
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            client.put("crate", "tls", None).await.unwrap();
            let resp = client.get("crate", None).await.unwrap();
            assert_eq!(resp.kvs()[0].value(), b"tls", "{kind:?}");

            // Without a client certificate the server refuses the handshake.
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&certs.ca)));
            let opts = etcd_client::ConnectOptions::new()
                .with_tls(tls)
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(2));
            let refused =
                match etcd_client::Client::connect([cluster.members[0].client_url()], Some(opts))
                    .await
                {
                    Err(_) => true,
                    Ok(mut c) => c.get("crate", None).await.is_err(),
                };
            assert!(refused, "{kind:?} served a client without a certificate");
        }
    })
    .await
    .expect("test timed out");
}

/// `--auto-tls` and `--peer-auto-tls`: etcdctl with `--insecure-skip-tls-verify` works
/// against both servers, and refuses to trust the self-signed certificate without it.
#[tokio::test]
async fn auto_tls_serves_self_signed_certificates() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut answers = Vec::new();
        for kind in [ServerKind::Etcd, ServerKind::Minietcd] {
            let dir = tempfile::tempdir().unwrap();
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("https://127.0.0.1:{}", client.port);
            let peer_url = format!("https://127.0.0.1:{}", peer.port);
            let mut cmd = Command::new(match kind {
                ServerKind::Etcd => require_program("etcd"),
                ServerKind::Minietcd => minietcd_bin(),
            });
            cmd.arg("--name=auto")
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=auto={peer_url}"))
                .arg("--auto-tls")
                .arg("--peer-auto-tls")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _guard = ChildGuard::spawn("auto-tls", &mut cmd);
            // etcdctl 3.4 dials TLS without certificate flags only with
            // --insecure-transport=false.
            let skip = vec![
                "--insecure-transport=false".to_string(),
                "--insecure-skip-tls-verify".to_string(),
            ];
            let out = wait_until("auto TLS member to answer", Duration::from_secs(30), || {
                let out = etcdctl(&client_url, &skip, &["put", "auto", "tls"]);
                out.status.success().then_some(out)
            });
            let got = ctl_ok(&client_url, &skip, &["get", "auto"]);
            answers.push((stdout(&out), got));
            let refused = etcdctl(&client_url, &skip[..1], &["get", "auto"]);
            assert!(
                !refused.status.success(),
                "{kind:?}: {}",
                describe(&refused)
            );
        }
        assert_eq!(answers[0], ("OK\n".to_string(), "auto\ntls\n".to_string()));
        assert_eq!(answers[1], answers[0]);
    })
    .await
    .expect("test timed out");
}

/// Runs minietcd with `args` (and an https client URL unless given), which must refuse to
/// start: (exit code, stderr); nothing may be left in the data dir's place.
fn refused_start(args: &[String]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("err.log");
    let mut cmd = Command::new(minietcd_bin());
    cmd.arg(format!("--data-dir={}", data.display()))
        .arg(format!(
            "--listen-peer-urls=http://127.0.0.1:{}",
            free_port().port
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut guard = ChildGuard::spawn("refused", &mut cmd);
    let status = wait_until("minietcd to refuse", EXIT_TIMEOUT, || guard.try_wait());
    assert!(!data.exists(), "{args:?} left a data dir");
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

/// Bad certificate flags and files: one line (etcd's words where etcd has them) and a
/// non-zero exit, before anything is created.
#[test]
fn bad_certificates_and_flags_are_one_line_errors() {
    let certs = Certs::new();
    let not_pem = certs.dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let https = |port: u16| {
        vec![
            format!("--listen-client-urls=https://127.0.0.1:{port}"),
            format!("--advertise-client-urls=https://127.0.0.1:{port}"),
        ]
    };
    let with = |mut base: Vec<String>, more: &[String]| {
        base.extend(more.iter().cloned());
        base
    };
    let cert = |c: &Path| format!("--cert-file={}", c.display());
    let key = |k: &Path| format!("--key-file={}", k.display());
    let port = free_port().port;
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            https(port),
            format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url \
                 https://127.0.0.1:{port} with HTTPS scheme"
            ),
        ),
        (
            with(
                https(port),
                &[cert(Path::new("/nonexistent.pem")), key(&certs.server.key)],
            ),
            "--cert-file: cannot read certificate /nonexistent.pem: No such file".into(),
        ),
        (
            with(https(port), &[cert(&not_pem), key(&certs.server.key)]),
            format!(
                "--cert-file: certificate {}: no PEM certificate found",
                not_pem.display()
            ),
        ),
        (
            with(https(port), &[cert(&certs.server.cert), key(&not_pem)]),
            format!(
                "--key-file: key {}: no PEM private key found",
                not_pem.display()
            ),
        ),
        (
            with(
                https(port),
                &[cert(&certs.server.cert), key(&certs.client.key)],
            ),
            "--cert-file and --key-file: the key does not match the certificate".into(),
        ),
        (
            with(
                https(port),
                &[
                    cert(&certs.server.cert),
                    key(&certs.server.key),
                    "--client-cert-auth".into(),
                ],
            ),
            "--client-cert-auth needs --trusted-ca-file".into(),
        ),
        (
            with(
                https(port),
                &[
                    cert(&certs.server.cert),
                    key(&certs.server.key),
                    format!("--trusted-ca-file={}", not_pem.display()),
                ],
            ),
            "--trusted-ca-file: CA".into(),
        ),
        (
            vec![
                format!("--listen-peer-urls=https://127.0.0.1:{port}"),
                format!("--initial-advertise-peer-urls=https://127.0.0.1:{port}"),
                format!("--initial-cluster=default=https://127.0.0.1:{port}"),
            ],
            format!(
                "cannot listen on TLS for 127.0.0.1:{port}: KeyFile and CertFile are not presented"
            ),
        ),
        (
            vec!["--client-crl-file=/crl.pem".into()],
            "revocation lists are not supported yet".into(),
        ),
    ];
    for (args, want) in cases {
        let (code, err) = refused_start(&args);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{args:?}: exit {code:?}: {err}"
        );
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("minietcd: ") && last.contains(&want),
            "{args:?}: want {want:?}, got {err}"
        );
        // The error is one line; nothing but the configuration notices precedes it.
        let errors = err.lines().filter(|l| l.starts_with("minietcd: ")).count();
        assert_eq!(errors, 1, "{args:?}: {err}");
    }
}

/// With auth on, a request without a token is made as the user its client certificate names
/// (CN `alice`), as etcd's `AuthInfoFromTLS`; what alice's role does not cover is denied.
async fn cert_user_session(kind: ServerKind, certs: &Certs) -> Vec<String> {
    let cluster = Cluster::start(ClusterConfig::new(kind, 1).tls(certs.cluster_tls(true, false)));
    cluster.wait_ready().await;
    let url = cluster.members[0].client_url();
    let tls = cluster.tls.as_ref().unwrap().etcdctl_flags();
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "grant-role", "root", "root"],
        vec!["user", "add", "alice:alicepw"],
        vec!["role", "add", "cn"],
        vec![
            "role",
            "grant-permission",
            "cn",
            "readwrite",
            "cn/",
            "--prefix",
        ],
        vec!["user", "grant-role", "alice", "cn"],
        vec!["auth", "enable"],
    ] {
        ctl_ok(&url, &tls, &args);
    }
    let mut seen = Vec::new();
    for args in [
        vec!["put", "cn/x", "1"],
        vec!["get", "cn/x"],
        vec!["put", "other", "1"],
        vec!["get", "other"],
        vec!["user", "list"],
    ] {
        let out = etcdctl(&url, &tls, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        seen.push(format!(
            "{} {:?} {}",
            out.status.success(),
            stdout(&out),
            last
        ));
    }
    seen
}

#[tokio::test]
async fn the_client_certificate_names_the_user_when_auth_is_on() {
    let certs = Certs::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let etcd = cert_user_session(ServerKind::Etcd, &certs).await;
        let ours = cert_user_session(ServerKind::Minietcd, &certs).await;
        assert!(etcd[0].starts_with("true"), "etcd: {etcd:?}");
        assert!(etcd[2].contains("permission denied"), "etcd: {etcd:?}");
        assert_eq!(ours, etcd);
    })
    .await
    .expect("test timed out");
}
