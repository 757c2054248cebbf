//! Authentication and authorization against real etcd 3.4: etcdctl's `user`, `role` and
//! `auth` commands and `--user` logins run the same script at a one-member etcd and a
//! one-member minietcd, whose outputs must be equal (addresses masked); the `etcd-client`
//! crate logs in with user and password and meets the same refusals (Txn compares, Watch,
//! LeaseRevoke, maintenance) on both; a three-member minietcd holds the same auth state on
//! every member, also after a restart of every member.

use std::process::{Command, Stdio};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

use crate::etcd_cluster::{Cluster, ClusterConfig, ServerKind};
use crate::support::{output_within, require_program};

/// How long one etcdctl command may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(20);
/// bcrypt's lowest cost, for the scripted tests.
const TEST_BCRYPT_COST: u32 = 4;
/// How long a whole scenario may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// What one etcdctl command did: success, stdout, and its error line (the last line of
/// stderr from "Error: " on, addresses masked).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    ok: bool,
    stdout: String,
    error: String,
}

/// Replaces `127.0.0.1:<port>` with `ADDR` (the two servers listen on different ports).
fn mask(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(p) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..p]);
        out.push_str("ADDR");
        rest = rest[p + "127.0.0.1:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Runs etcdctl against `endpoint` with `stdin`, bounded by [`CTL_TIMEOUT`].
fn ctl(endpoint: &str, args: &[&str], stdin: &str) -> Outcome {
    run_ctl(require_program("etcdctl"), endpoint, args, stdin)
}

/// Runs `program` (etcdctl or minietcdctl) like [`ctl`].
fn run_ctl(program: std::path::PathBuf, endpoint: &str, args: &[&str], stdin: &str) -> Outcome {
    let out = output_within(
        Command::new(program)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("--command-timeout=10s")
            .args(args),
        stdin,
        CTL_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let error = match line.find("Error: ") {
        Some(p) => line[p..].to_string(),
        None => String::new(),
    };
    Outcome {
        ok: out.status.success(),
        stdout: mask(&String::from_utf8_lossy(&out.stdout)),
        error: mask(&error),
    }
}

/// The script: each step is (args, stdin).
fn script() -> Vec<(Vec<&'static str>, &'static str)> {
    let root = "--user=root:pw";
    let u = "--user=u:up";
    let steps: Vec<(Vec<&str>, &str)> = vec![
        (vec!["auth", "enable"], ""),
        (vec!["user", "add", "root:pw"], ""),
        (vec!["role", "list"], ""),
        (vec!["auth", "enable"], ""),
        (vec!["role", "list"], ""),
        (vec!["user", "add", "u:up"], ""),
        (vec!["get", "foo"], ""),
        (vec![root, "user", "add", "u:up"], ""),
        (vec![root, "user", "add", "u:again"], ""),
        (vec![root, "role", "add", "r1"], ""),
        (vec![root, "role", "add", "r1"], ""),
        (
            vec![root, "role", "grant-permission", "r1", "readwrite", "foo"],
            "",
        ),
        (
            vec![
                root,
                "role",
                "grant-permission",
                "r1",
                "--prefix",
                "read",
                "pre/",
            ],
            "",
        ),
        (
            vec![root, "role", "grant-permission", "r1", "write", "a", "c"],
            "",
        ),
        (
            vec![root, "role", "grant-permission", "r9", "read", "x"],
            "",
        ),
        (vec![root, "user", "grant-role", "u", "r1"], ""),
        (vec![root, "user", "grant-role", "u", "r9"], ""),
        (vec![root, "user", "grant-role", "nobody", "r1"], ""),
        (vec![root, "role", "get", "r1"], ""),
        (vec![root, "role", "get", "r9"], ""),
        (vec![root, "role", "list"], ""),
        (vec![root, "user", "list"], ""),
        (vec![root, "user", "get", "u"], ""),
        (vec![root, "user", "get", "root"], ""),
        (vec![root, "user", "get", "nobody"], ""),
        (vec![root, "put", "pre/a", "1"], ""),
        (vec![u, "put", "foo", "bar"], ""),
        (vec![u, "get", "foo"], ""),
        (vec![u, "put", "pre/b", "1"], ""),
        (vec![u, "get", "pre/", "--prefix"], ""),
        (vec![u, "get", "pre", "--prefix"], ""),
        (vec![u, "put", "b", "2"], ""),
        (vec![u, "get", "b"], ""),
        (vec![u, "put", "b", "3", "--prev-kv"], ""),
        (vec![u, "del", "a", "c"], ""),
        (vec![u, "del", "pre/", "--prefix"], ""),
        (vec![u, "del", "foo", "--prev-kv"], ""),
        (vec![u, "put", "foo", "again"], ""),
        (vec!["--user=u:wrong", "get", "foo"], ""),
        (vec!["--user=nobody:x", "get", "foo"], ""),
        (vec![u, "user", "list"], ""),
        (vec![u, "role", "list"], ""),
        (vec![u, "user", "get", "u"], ""),
        (vec![u, "user", "get", "root"], ""),
        (vec![u, "role", "get", "r1"], ""),
        (vec![u, "role", "add", "r2"], ""),
        (vec![u, "auth", "disable"], ""),
        (vec![u, "defrag"], ""),
        (vec![u, "endpoint", "hashkv"], ""),
        (vec![root, "role", "revoke-permission", "r1", "foo"], ""),
        (vec![root, "role", "revoke-permission", "r1", "foo"], ""),
        (vec![root, "role", "revoke-permission", "r9", "foo"], ""),
        (vec![u, "get", "foo"], ""),
        (
            vec![root, "role", "revoke-permission", "r1", "pre/", "--prefix"],
            "",
        ),
        (vec![root, "role", "get", "r1"], ""),
        (
            vec![root, "user", "passwd", "u", "--interactive=false"],
            "newpw\n",
        ),
        (vec![u, "get", "foo"], ""),
        (vec!["--user=u:newpw", "put", "a", "1"], ""),
        (vec![root, "user", "revoke-role", "u", "r1"], ""),
        (vec![root, "user", "revoke-role", "u", "r1"], ""),
        (vec![root, "user", "revoke-role", "nobody", "r1"], ""),
        (vec!["--user=u:newpw", "put", "a", "1"], ""),
        (vec![root, "user", "delete", "root"], ""),
        (vec![root, "user", "revoke-role", "root", "root"], ""),
        (vec![root, "role", "delete", "root"], ""),
        (vec![root, "user", "grant-role", "u", "r1"], ""),
        (vec![root, "role", "delete", "r1"], ""),
        (vec![root, "role", "delete", "r1"], ""),
        (vec![root, "user", "get", "u"], ""),
        (vec![root, "user", "delete", "u"], ""),
        (vec![root, "user", "delete", "u"], ""),
        (vec!["--user=u:newpw", "get", "foo"], ""),
        (vec![root, "get", "", "--prefix", "--keys-only"], ""),
        (vec![root, "auth", "disable"], ""),
        (vec!["get", "foo"], ""),
        (vec![root, "get", "foo"], ""),
        (vec!["role", "list"], ""),
        (vec!["user", "list"], ""),
        (vec!["user", "delete", "root"], ""),
        (vec!["auth", "enable"], ""),
    ];
    steps
}

/// A one-member etcd and a one-member minietcd for the etcdctl script. Every etcdctl
/// --user logs in once: a cheap hash cost keeps the script fast.
async fn script_clusters() -> (Cluster, Cluster) {
    let start = |kind| {
        Cluster::start_ready(
            ClusterConfig::new(kind, 1).arg(format!("--bcrypt-cost={TEST_BCRYPT_COST}")),
        )
    };
    (
        start(ServerKind::Etcd).await,
        start(ServerKind::Minietcd).await,
    )
}

#[tokio::test]
async fn auth_etcdctl_matches_etcd() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (etcd, ours) = script_clusters().await;
        let (e, o) = (etcd.endpoint(0), ours.endpoint(0));
        let (e2, o2) = (e.clone(), o.clone());
        tokio::task::spawn_blocking(move || {
            for (args, stdin) in script() {
                let want = ctl(&e2, &args, stdin);
                let got = ctl(&o2, &args, stdin);
                tracing::info!(?args, ?want, "step");
                assert_eq!(got, want, "etcdctl {args:?}");
            }
        })
        .await
        .unwrap();
    })
    .await
    .expect("test timed out");
}

/// Sets up root and a user `u` with READWRITE on `k`..`m` and READ on `r`, then enables
/// auth, through a root client.
async fn setup(endpoint: &str) {
    let mut c = Client::connect([endpoint], None).await.unwrap();
    let mut a = c.auth_client();
    a.user_add("root", "pw", None).await.unwrap();
    a.user_grant_role("root", "root").await.unwrap();
    a.role_add("r").await.unwrap();
    a.role_grant_permission(
        "r",
        etcd_client::Permission::read_write("k").with_range_end("m"),
    )
    .await
    .unwrap();
    a.role_grant_permission("r", etcd_client::Permission::read("r"))
        .await
        .unwrap();
    a.user_add("u", "up", None).await.unwrap();
    a.user_grant_role("u", "r").await.unwrap();
    a.auth_enable().await.unwrap();
    c.put("k1", "v", None).await.ok();
}

/// The gRPC code and message of a failed call.
fn status_of<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>) -> (i32, String) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => (s.code() as i32, s.message().to_string()),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

/// What the `etcd-client` crate sees on one server: logins, denials, a denied watch.
async fn client_view(endpoint: &str) -> Vec<String> {
    setup(endpoint).await;
    let mut seen = Vec::new();
    let root = Client::connect(
        [endpoint],
        Some(ConnectOptions::new().with_user("root", "pw")),
    )
    .await
    .unwrap();
    let mut root_kv = root.kv_client();
    root_kv.put("k2", "v", None).await.unwrap();
    root_kv.put("z", "v", None).await.unwrap();
    let bad = Client::connect(
        [endpoint],
        Some(ConnectOptions::new().with_user("u", "nope")),
    )
    .await;
    seen.push(format!("wrong password: {:?}", status_of(bad.map(|_| ()))));
    let mut u = Client::connect([endpoint], Some(ConnectOptions::new().with_user("u", "up")))
        .await
        .unwrap();
    let got = u.get("k1", None).await.unwrap();
    seen.push(format!("get k1: {} kvs", got.kvs().len()));
    seen.push(format!("get z: {:?}", status_of(u.get("z", None).await)));
    seen.push(format!(
        "put r: {:?}",
        status_of(u.put("r", "x", None).await)
    ));
    // A txn whose compare reads a key the user may not read.
    let txn = Txn::new()
        .when([Compare::value("z", CompareOp::Equal, "v")])
        .and_then([TxnOp::put("k3", "v", None)]);
    seen.push(format!("txn compare z: {:?}", status_of(u.txn(txn).await)));
    let txn = Txn::new()
        .when([Compare::value("k1", CompareOp::Equal, "v")])
        .and_then([TxnOp::put("k3", "v", None)])
        .or_else([TxnOp::get("r", None)]);
    seen.push(format!("txn ok: {}", u.txn(txn).await.unwrap().succeeded()));
    let txn = Txn::new().and_then([TxnOp::delete("z", None)]);
    seen.push(format!("txn delete z: {:?}", status_of(u.txn(txn).await)));
    // A lease with a key the user may not write cannot be revoked by the user.
    let lease = root.lease_client().grant(60, None).await.unwrap().id();
    root_kv
        .put("z2", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    seen.push(format!(
        "revoke: {:?}",
        status_of(u.lease_revoke(lease).await)
    ));
    // Maintenance and member changes are root's.
    seen.push(format!(
        "hashkv: {:?}",
        status_of(u.maintenance_client().hash_kv(0).await)
    ));
    seen.push(format!(
        "user list: {:?}",
        status_of(u.auth_client().user_list().await)
    ));
    // A denied watch is created and canceled at once.
    let mut w = u.watch("z", None).await.unwrap();
    let resp = w.message().await.unwrap().unwrap();
    seen.push(format!(
        "watch z: created={} canceled={} id={} reason={:?}",
        resp.created(),
        resp.canceled(),
        resp.watch_id(),
        resp.cancel_reason()
    ));
    let mut w = u
        .watch("k", Some(WatchOptions::new().with_range("m")))
        .await
        .unwrap();
    let resp = w.message().await.unwrap().unwrap();
    seen.push(format!(
        "watch k..m: created={} canceled={}",
        resp.created(),
        resp.canceled()
    ));
    // No token at all.
    let mut anon = Client::connect([endpoint], None).await.unwrap();
    seen.push(format!(
        "anonymous get: {:?}",
        status_of(anon.get("k1", None).await)
    ));
    seen
}

#[tokio::test]
async fn auth_client_crate_sees_etcds_answers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1)).await;
        let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
        let want = client_view(&etcd.endpoint(0)).await;
        let got = client_view(&ours.endpoint(0)).await;
        assert_eq!(got, want);
    })
    .await
    .expect("test timed out");
}

/// `user list`, `role get r` and a login's read as etcdctl prints them on member `i`.
fn auth_view(c: &Cluster, i: usize) -> Vec<Outcome> {
    let ep = c.endpoint(i);
    vec![
        ctl(&ep, &["--user=root:pw", "user", "list"], ""),
        ctl(&ep, &["--user=root:pw", "role", "get", "r"], ""),
        ctl(&ep, &["--user=u:up", "get", "k1"], ""),
        ctl(&ep, &["--user=u:up", "get", "z"], ""),
        ctl(&ep, &["get", "k1"], ""),
    ]
}

#[tokio::test]
async fn auth_state_is_replicated_and_survives_restart() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 3)).await;
        setup(&ours.endpoint(0)).await;
        let views: Vec<_> = (0..3).map(|i| auth_view(&ours, i)).collect();
        assert!(views[0][0].stdout.contains("root\nu"), "{:?}", views[0]);
        assert_eq!(views[0][4].error, "Error: etcdserver: user name is empty");
        assert!(views[0][3].error.contains("permission denied"));
        assert_eq!(views[1], views[0]);
        assert_eq!(views[2], views[0]);
        for i in 0..3 {
            ours.stop(i);
        }
        for i in 0..3 {
            ours.restart(i);
        }
        ours.wait_ready().await;
        for i in 0..3 {
            // A member just restarted may time out a first login while it catches up (a
            // loaded machine); what it answers once it does must be the same.
            let after = crate::support::wait_until(
                "a restarted member to answer logins",
                std::time::Duration::from_secs(60),
                || {
                    let v = auth_view(&ours, i);
                    (!v.iter().any(|o| o.error.contains("deadline exceeded"))).then_some(v)
                },
            );
            assert_eq!(after, views[0], "member {i} after the restart");
        }
    })
    .await
    .expect("test timed out");
}

/// Logs `name` in with raw gRPC; the token.
async fn raw_login(endpoint: &str, name: &str, password: &str) -> String {
    use minietcd::pb::etcdserverpb::auth_client::AuthClient;
    use minietcd::pb::etcdserverpb::AuthenticateRequest;
    let mut a = AuthClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap();
    a.authenticate(AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .token
}

/// A raw Range of `k1` with `token` in the metadata: Ok or (code, message).
async fn raw_get(endpoint: &str, token: &str) -> Result<(), (i32, String)> {
    use minietcd::pb::etcdserverpb::kv_client::KvClient;
    use minietcd::pb::etcdserverpb::RangeRequest;
    let mut kv = KvClient::connect(format!("http://{endpoint}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(RangeRequest {
        key: b"k1".to_vec(),
        ..Default::default()
    });
    req.metadata_mut().insert("token", token.parse().unwrap());
    kv.range(req)
        .await
        .map(|_| ())
        .map_err(|s| (s.code() as i32, s.message().to_string()))
}

/// What a token does over its life on one server: valid, then expired after
/// `--auth-token-ttl=1` without use, and a made-up token.
async fn token_life(endpoint: &str) -> Vec<String> {
    setup(endpoint).await;
    let token = raw_login(endpoint, "u", "up").await;
    let mut seen = vec![format!("fresh: {:?}", raw_get(endpoint, &token).await)];
    seen.push(format!(
        "made up: {:?}",
        raw_get(endpoint, "abcdefghijklmnop.1").await
    ));
    // Unused for longer than the TTL (and etcd's 1 s sweep), the token is gone.
    let expired = crate::support::wait_until_async("the token to expire", CTL_TIMEOUT, || {
        let token = token.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            raw_get(endpoint, &token).await.err()
        }
    })
    .await;
    seen.push(format!("expired: {expired:?}"));
    seen
}

#[tokio::test]
async fn auth_tokens_expire_after_the_ttl() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let etcd =
            Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1).arg("--auth-token-ttl=1"))
                .await;
        let ours = Cluster::start_ready(
            ClusterConfig::new(ServerKind::Minietcd, 1).arg("--auth-token-ttl=1"),
        )
        .await;
        let want = token_life(&etcd.endpoint(0)).await;
        let got = token_life(&ours.endpoint(0)).await;
        assert_eq!(got, want);
        assert!(want[2].contains("invalid auth token"), "{want:?}");
    })
    .await
    .expect("test timed out");
}

/// `--auth-token jwt` is refused with one line; an unknown token type too.
#[test]
fn auth_token_jwt_is_refused_with_one_line() {
    for (flag, want) in [
        (
            "--auth-token=jwt,pub-key=a.pub,priv-key=a,sign-method=RS256",
            "jwt tokens are not supported",
        ),
        ("--auth-token=magic", "unknown token type"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = Command::new(crate::support::minietcd_bin())
            .arg(flag)
            .arg(format!("--data-dir={}", tmp.path().join("d").display()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flag}: {err}");
        assert!(err.contains(want), "{flag}: {err}");
        assert!(!tmp.path().join("d").exists());
    }
}

/// Commands of the script minietcdctl does not have.
const NOT_IN_MINIETCDCTL: &[&str] = &["defrag", "hashkv"];

#[tokio::test]
async fn auth_minietcdctl_prints_what_etcdctl_prints() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (etcd, ours) = script_clusters().await;
        let (e, o) = (etcd.endpoint(0), ours.endpoint(0));
        let mine = crate::support::workspace_bin("minietcdctl");
        tokio::task::spawn_blocking(move || {
            for (args, stdin) in script() {
                if args.iter().any(|a| NOT_IN_MINIETCDCTL.contains(a)) {
                    continue;
                }
                let want = ctl(&e, &args, stdin);
                let got = run_ctl(mine.clone(), &o, &args, stdin);
                assert_eq!(got, want, "minietcdctl {args:?}");
            }
        })
        .await
        .unwrap();
    })
    .await
    .expect("test timed out");
}

/// The project's client logs in with a user and password, and logs in again by itself when
/// its token expires.
#[tokio::test]
async fn auth_client_library_logs_in_again_after_the_token_expires() {
    use minietcd_client::{Client as OurClient, ClientOptions, GetOptions, PutOptions};
    tokio::time::timeout(TEST_TIMEOUT, async {
        let ours = Cluster::start_ready(
            ClusterConfig::new(ServerKind::Minietcd, 1).arg("--auth-token-ttl=1"),
        )
        .await;
        let ep = ours.endpoint(0);
        setup(&ep).await;
        let wrong = OurClient::connect([&ep], ClientOptions::new().user("u", "nope")).await;
        let err = wrong
            .err()
            .expect("a wrong password is refused")
            .to_string();
        assert!(err.contains("authentication failed"), "{err}");
        let c = OurClient::connect([&ep], ClientOptions::new().user("u", "up"))
            .await
            .unwrap();
        c.kv().put("k5", "v", PutOptions::new()).await.unwrap();
        // Longer than the TTL without a request: the token is gone on the server.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let r = c.kv().get("k5", GetOptions::new()).await.unwrap();
        assert_eq!(r.kvs.len(), 1);
        let denied = c.kv().get("z", GetOptions::new()).await.unwrap_err();
        assert!(denied.to_string().contains("permission denied"), "{denied}");
        // A watch opened with an expired token: the client logs in again and the watch works.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let mut w = c
            .watch()
            .watch("k6", minietcd_client::WatchOptions::new())
            .await
            .unwrap();
        c.kv().put("k6", "v", PutOptions::new()).await.unwrap();
        let batch = w.recv().await.expect("a batch").unwrap();
        assert_eq!(batch.events.len(), 1, "{batch:?}");
        let root = OurClient::connect([&ep], ClientOptions::new().user("root", "pw"))
            .await
            .unwrap();
        let users = root.auth().user_list().await.unwrap().users;
        assert_eq!(users, vec!["root".to_string(), "u".to_string()]);
    })
    .await
    .expect("test timed out");
}

/// Replaces each `"header":{...}` of etcdctl's JSON with `"header":H` (ids and revisions
/// differ between two clusters).
fn mask_header(json: &str) -> String {
    let mut out = String::new();
    let mut rest = json;
    while let Some(at) = rest.find("\"header\":{") {
        out.push_str(&rest[..at]);
        out.push_str("\"header\":H");
        let after = &rest[at + "\"header\":{".len()..];
        rest = after.find('}').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// `-w json` of the user and role commands: minietcdctl on minietcd prints what etcdctl
/// prints on etcd 3.4 (headers masked).
#[tokio::test]
async fn auth_commands_in_json_match_etcdctl() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let etcd = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 1)).await;
        let ours = Cluster::start_ready(ClusterConfig::new(ServerKind::Minietcd, 1)).await;
        let (e, o) = (etcd.endpoint(0), ours.endpoint(0));
        let mine = crate::support::workspace_bin("minietcdctl");
        tokio::task::spawn_blocking(move || {
            let steps: Vec<Vec<&str>> = vec![
                vec!["user", "add", "alice:pw"],
                vec!["role", "add", "r"],
                vec!["role", "grant-permission", "r", "readwrite", "k", "m"],
                vec!["role", "grant-permission", "r", "read", "p", "--prefix"],
                vec!["role", "grant-permission", "r", "write", "w"],
                vec!["role", "get", "r"],
                vec!["user", "grant-role", "alice", "r"],
                vec!["user", "get", "alice"],
                vec!["user", "get", "alice", "--detail"],
                vec!["user", "list"],
                vec!["role", "list"],
                vec!["user", "passwd", "alice", "--interactive=false"],
                vec!["role", "revoke-permission", "r", "k", "m"],
                vec!["user", "revoke-role", "alice", "r"],
                vec!["user", "delete", "alice"],
                vec!["role", "delete", "r"],
            ];
            for step in steps {
                let mut args = vec!["-w", "json"];
                args.extend(step.iter().copied());
                let stdin = if step.contains(&"passwd") {
                    "pw2\n"
                } else {
                    ""
                };
                let mut want = ctl(&e, &args, stdin);
                let mut got = run_ctl(mine.clone(), &o, &args, stdin);
                assert!(want.ok, "etcdctl {args:?}: {want:?}");
                want.stdout = mask_header(&want.stdout);
                got.stdout = mask_header(&got.stdout);
                assert_eq!(got, want, "minietcdctl {args:?}");
            }
        })
        .await
        .unwrap();
    })
    .await
    .expect("test timed out");
}
