//! etcd's command line on minietcd: start commands written for etcd run unchanged, flags are
//! implemented, without effect (a warning) or refused (one line, exit 2), `ETCD_*` variables
//! and etcd's YAML config file set up members, `--wal-dir` moves the Raft log, and the log
//! carries etcd's lifecycle lines in etcd's formats.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{free_port, minietcd_bin, require_program, wait_until, ChildGuard, Port};

/// Bound on each phase of these tests.
const PHASE: Duration = Duration::from_secs(30);

/// A member started by a test, its log in a file.
struct Member {
    guard: ChildGuard,
    log: PathBuf,
}

impl Member {
    fn start(dir: &Path, label: &str, args: &[String], env: &[(String, String)]) -> Member {
        let log = dir.join(format!("{label}.log"));
        let err = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(minietcd_bin());
        cmd.current_dir(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Member {
            guard: ChildGuard::spawn(label, &mut cmd),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for etcd's line that scripts wait for.
    fn wait_ready(&self) {
        wait_until("ready to serve client requests", PHASE, || {
            self.log()
                .contains("ready to serve client requests")
                .then_some(())
        });
    }
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(require_program("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A put through one endpoint is read back through another.
fn put_and_read(write: &str, read: &str) {
    wait_until("a put to succeed", PHASE, || {
        etcdctl(write, &["put", "flag-key", "v1"])
    });
    let got = wait_until("a linearizable get", PHASE, || {
        etcdctl(read, &["get", "flag-key", "--print-value-only"])
    });
    assert_eq!(got.trim(), "v1");
}

struct Ports {
    client: Vec<Port>,
    peer: Vec<Port>,
}

impl Ports {
    fn new(n: usize) -> Ports {
        Ports {
            client: (0..n).map(|_| free_port()).collect(),
            peer: (0..n).map(|_| free_port()).collect(),
        }
    }
    fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client[i].port)
    }
    fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.peer[i].port)
    }
    fn initial_cluster(&self) -> String {
        (0..self.peer.len())
            .map(|i| format!("infra{}={}", i + 1, self.peer_url(i)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// etcd 3.4's Procfile (its documented local three-member cluster), ports aside, plus flags
/// that etcd-driven harnesses pass: every member starts and serves.
#[test]
fn etcd_procfile_start_command_runs_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Ports::new(3);
    let members: Vec<Member> = (0..3)
        .map(|i| {
            let name = format!("infra{}", i + 1);
            let mut args = vec![
                "--name".into(),
                name.clone(),
                "--listen-client-urls".into(),
                p.client_url(i),
                "--advertise-client-urls".into(),
                p.client_url(i),
                "--listen-peer-urls".into(),
                p.peer_url(i),
                "--initial-advertise-peer-urls".into(),
                p.peer_url(i),
                "--initial-cluster-token".into(),
                "etcd-cluster-1".into(),
                "--initial-cluster".into(),
                p.initial_cluster(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--enable-pprof".into(),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
            ];
            args.extend(strings(&[
                "--experimental-initial-corrupt-check=true",
                "--strict-reconfig-check",
                "--max-concurrent-streams=100",
                "--quota-backend-bytes=8589934592",
                "--auto-compaction-mode=periodic",
                "--auto-compaction-retention=1",
                "--enable-v2=false",
                "--snapshot-count=10000",
                "--max-wals=3",
                "--auth-token=simple",
            ]));
            Member::start(tmp.path(), &name, &args, &[])
        })
        .collect();
    for m in &members {
        m.wait_ready();
    }
    put_and_read(&p.client_url(0), &p.client_url(2));
    let log = members[0].log();
    for line in [
        "--enable-pprof=true has no effect",
        "--max-wals=3 has no effect",
    ] {
        assert!(log.contains(line), "{line}: {log}");
    }
}

/// Flags minietcd refuses: one line naming the flag, exit 2, nothing written.
#[test]
fn refused_flags_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, env, want) in [
        (
            vec!["--enable-v2=true"],
            vec![],
            "--enable-v2=true is refused",
        ),
        (vec!["--enable-v2"], vec![], "the v2 API is not served"),
        (vec!["--proxy", "on"], vec![], "--proxy=on is refused"),
        (
            vec!["--proxy=readonly"],
            vec![],
            "--proxy=readonly is refused",
        ),
        (
            vec!["--discovery", "https://discovery.etcd.io/abc"],
            vec![],
            "discovery is not supported",
        ),
        (
            vec!["--peer-cert-allowed-cn=etcd"],
            vec![],
            "--peer-cert-allowed-cn=etcd is refused: not supported yet",
        ),
        (
            vec![],
            vec![("ETCD_CLIENT_CRL_FILE", "/crl.pem")],
            "revocation lists are not supported yet",
        ),
        (
            vec!["--name", "a"],
            vec![("ETCD_NAME", "b")],
            "conflicting environment variable \"ETCD_NAME\"",
        ),
        (
            vec!["--enable-v2", "false"],
            vec![],
            "unexpected argument 'false'",
        ),
    ] {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut m = Member::start(tmp.path(), "refused", &strings(&args), &env);
        let status = wait_until("minietcd to exit", PHASE, || m.guard.try_wait());
        assert_eq!(status.code(), Some(2), "{args:?}");
        let err = m.log();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("minietcd: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("refused.log")]);
}

/// A three-member cluster set up by `ETCD_*` variables alone.
#[test]
fn etcd_env_variables_set_up_a_three_member_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Ports::new(3);
    let members: Vec<Member> = (0..3)
        .map(|i| {
            let name = format!("infra{}", i + 1);
            let env = [
                ("ETCD_NAME", name.clone()),
                ("ETCD_DATA_DIR", format!("{name}.data")),
                ("ETCD_LISTEN_CLIENT_URLS", p.client_url(i)),
                ("ETCD_ADVERTISE_CLIENT_URLS", p.client_url(i)),
                ("ETCD_LISTEN_PEER_URLS", p.peer_url(i)),
                ("ETCD_INITIAL_ADVERTISE_PEER_URLS", p.peer_url(i)),
                ("ETCD_INITIAL_CLUSTER", p.initial_cluster()),
                ("ETCD_INITIAL_CLUSTER_STATE", "new".into()),
                ("ETCD_INITIAL_CLUSTER_TOKEN", "env-cluster".into()),
                ("ETCD_HEARTBEAT_INTERVAL", "50".into()),
                ("ETCD_ELECTION_TIMEOUT", "500".into()),
                ("ETCD_NOT_A_FLAG", "x".into()),
            ]
            .map(|(k, v)| (k.to_string(), v));
            Member::start(tmp.path(), &name, &[], &env)
        })
        .collect();
    for m in &members {
        m.wait_ready();
    }
    put_and_read(&p.client_url(1), &p.client_url(0));
    let list = etcdctl(&p.client_url(2), &["member", "list"]).unwrap();
    for i in 1..=3 {
        assert!(list.contains(&format!("infra{i}")), "{list}");
    }
    assert!(tmp.path().join("infra2.data").join("member.json").exists());
    let log = members[0].log();
    assert!(
        log.contains("recognized and used environment variable ETCD_NAME=infra1"),
        "{log}"
    );
    assert!(
        log.contains("unrecognized environment variable ETCD_NOT_A_FLAG=x"),
        "{log}"
    );
}

/// A three-member cluster set up by etcd's YAML config file; the file wins over flags and
/// `ETCD_*` variables, as in etcd 3.4.
#[test]
fn etcd_config_file_sets_up_a_three_member_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Ports::new(3);
    let members: Vec<Member> = (0..3)
        .map(|i| {
            let name = format!("infra{}", i + 1);
            let file = tmp.path().join(format!("{name}.yml"));
            std::fs::write(
                &file,
                format!(
                    "# etcd.conf.yml\n\
                     name: '{name}'\n\
                     data-dir: {name}.data\n\
                     wal-dir:\n\
                     snapshot-count: 10000\n\
                     heartbeat-interval: 100\n\
                     election-timeout: 1000\n\
                     quota-backend-bytes: 0\n\
                     listen-peer-urls: {peer}\n\
                     listen-client-urls: {client}\n\
                     max-snapshots: 5\n\
                     max-wals: 5\n\
                     cors:\n\
                     initial-advertise-peer-urls: {peer}\n\
                     advertise-client-urls: {client}\n\
                     discovery:\n\
                     discovery-fallback: 'proxy'\n\
                     discovery-proxy:\n\
                     discovery-srv:\n\
                     initial-cluster: {cluster}\n\
                     initial-cluster-token: 'yaml-cluster'\n\
                     initial-cluster-state: 'new'\n\
                     strict-reconfig-check: false\n\
                     enable-v2: false\n\
                     enable-pprof: true\n\
                     proxy: 'off'\n\
                     proxy-failure-wait: 5000\n\
                     proxy-refresh-interval: 30000\n\
                     proxy-dial-timeout: 1000\n\
                     proxy-write-timeout: 5000\n\
                     proxy-read-timeout: 0\n\
                     client-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\n\
                     peer-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\n\
                     debug: false\n\
                     logger: zap\n\
                     log-outputs: [stderr]\n\
                     force-new-cluster: false\n\
                     auto-compaction-mode: periodic\n\
                     auto-compaction-retention: \"1\"\n",
                    peer = p.peer_url(i),
                    client = p.client_url(i),
                    cluster = p.initial_cluster(),
                ),
            )
            .unwrap();
            // Flags and variables beside the file are ignored, as etcd 3.4 does.
            let args = vec![
                "--config-file".to_string(),
                file.to_str().unwrap().to_string(),
                "--name".into(),
                "ignored".into(),
            ];
            let env = vec![("ETCD_ELECTION_TIMEOUT".to_string(), "7".to_string())];
            Member::start(tmp.path(), &name, &args, &env)
        })
        .collect();
    for m in &members {
        m.wait_ready();
    }
    put_and_read(&p.client_url(2), &p.client_url(1));
    let list = etcdctl(&p.client_url(0), &["member", "list"]).unwrap();
    for i in 1..=3 {
        assert!(list.contains(&format!("infra{i}")), "{list}");
    }
    assert!(!list.contains("ignored"), "{list}");
    assert!(tmp.path().join("infra3.data").join("member.json").exists());
}

/// `--wal-dir` elsewhere: the Raft log's segments are there (not in the data dir), the data
/// survives a restart, and a restart without `--wal-dir` is refused in one line.
#[test]
fn wal_dir_elsewhere_holds_the_log_and_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Ports::new(1);
    let data = tmp.path().join("data");
    let wal = tmp.path().join("elsewhere").join("wal");
    let base = vec![
        "--name".to_string(),
        "infra1".into(),
        "--data-dir".into(),
        data.to_str().unwrap().into(),
        "--listen-client-urls".into(),
        p.client_url(0),
        "--advertise-client-urls".into(),
        p.client_url(0),
        "--listen-peer-urls".into(),
        p.peer_url(0),
        "--initial-advertise-peer-urls".into(),
        p.peer_url(0),
        "--initial-cluster".into(),
        p.initial_cluster(),
    ];
    let mut with_wal = base.clone();
    with_wal.extend(["--wal-dir".to_string(), wal.to_str().unwrap().into()]);
    {
        let mut m = Member::start(tmp.path(), "first", &with_wal, &[]);
        m.wait_ready();
        put_and_read(&p.client_url(0), &p.client_url(0));
        m.guard.stop(Duration::from_secs(10));
    }
    let segments = |d: &Path| {
        std::fs::read_dir(d)
            .map(|r| {
                r.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                })
                .count()
            })
            .unwrap_or(0)
    };
    assert!(segments(&wal) > 0, "no segment in --wal-dir");
    assert!(!data.join("wal").exists(), "the data dir has its own wal/");

    let mut m = Member::start(tmp.path(), "second", &with_wal, &[]);
    m.wait_ready();
    let got = wait_until("the value after restart", PHASE, || {
        etcdctl(&p.client_url(0), &["get", "flag-key", "--print-value-only"])
    });
    assert_eq!(got.trim(), "v1");
    m.guard.stop(Duration::from_secs(10));

    let mut m = Member::start(tmp.path(), "third", &base, &[]);
    let status = wait_until("minietcd to exit", PHASE, || m.guard.try_wait());
    assert!(!status.success());
    let err = m.log();
    assert!(err.contains("its Raft log is in"), "{err}");
    assert!(err.contains("--wal-dir is not given"), "{err}");
}

/// `--logger=zap` to a `--log-outputs` file: one JSON object a line with etcd's keys, and
/// etcd's lifecycle messages; capnslog (the default) has etcd's line shape.
#[test]
fn zap_and_capnslog_logs_carry_etcds_lifecycle_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Ports::new(1);
    let file = tmp.path().join("zap-output.log");
    let args = |logger: &str, outputs: &str| {
        vec![
            "--name".to_string(),
            "infra1".into(),
            "--listen-client-urls".into(),
            p.client_url(0),
            "--advertise-client-urls".into(),
            p.client_url(0),
            "--listen-peer-urls".into(),
            p.peer_url(0),
            "--initial-advertise-peer-urls".into(),
            p.peer_url(0),
            "--initial-cluster".into(),
            p.initial_cluster(),
            format!("--logger={logger}"),
            format!("--log-outputs={outputs}"),
        ]
    };
    let mut m = Member::start(tmp.path(), "zap", &args("zap", file.to_str().unwrap()), &[]);
    wait_until("ready in the zap log", PHASE, || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|s| s.contains("ready to serve client requests"))
    });
    m.guard.stop(Duration::from_secs(10));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(m.log().is_empty(), "stderr is not an output: {}", m.log());
    let mut msgs = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect(line);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert!(keys.len() >= 4, "{line}");
        for k in ["level", "ts", "caller", "msg"] {
            assert!(v[k].is_string(), "{k} in {line}");
        }
        msgs.push(v["msg"].as_str().unwrap().to_string());
    }
    for want in [
        "published local member to cluster through raft",
        "enabled capabilities for version",
        "ready to serve client requests",
        "serving client traffic insecurely; this is strongly discouraged!",
        "stopped serving client traffic",
    ] {
        assert!(msgs.iter().any(|m| m == want), "{want}: {msgs:?}");
    }
    assert!(
        msgs.iter().any(|m| m.contains("elected leader")),
        "{msgs:?}"
    );

    let mut m = Member::start(tmp.path(), "capnslog", &args("capnslog", "stderr"), &[]);
    m.wait_ready();
    m.guard.stop(Duration::from_secs(10));
    let log = m.log();
    let want = format!(
        "serving insecure client requests on 127.0.0.1:{}, this is strongly discouraged!",
        p.client[0].port
    );
    assert!(log.contains(&want), "{log}");
    // `2006-01-02 15:04:05.000000 I | package: message`
    let first = log.lines().next().unwrap();
    assert_eq!(&first[26..30], " I |", "{first}");
}

/// `--max-concurrent-streams=1`: a second stream on one client connection waits until the
/// first ends, on etcd and on minietcd.
async fn one_stream_per_connection(kind: crate::etcd_cluster::ServerKind) {
    use crate::etcd_cluster::{Cluster, ClusterConfig};
    let c =
        Cluster::start_ready(ClusterConfig::new(kind, 1).arg("--max-concurrent-streams=1")).await;
    let mut cl = crate::cluster_basic::client_on(&c, 0).await;
    let first = tokio::time::timeout(Duration::from_secs(10), cl.watch("a", None))
        .await
        .expect("the first watch opens")
        .unwrap();
    let second = tokio::time::timeout(Duration::from_millis(1500), cl.watch("b", None)).await;
    assert!(
        second.is_err(),
        "{kind:?}: a second stream opened beside the first"
    );
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(10), cl.watch("c", None)).await;
    assert!(
        matches!(third, Ok(Ok(_))),
        "{kind:?}: no stream after the first ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_limits_streams_per_connection_etcd() {
    one_stream_per_connection(crate::etcd_cluster::ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_limits_streams_per_connection_minietcd() {
    one_stream_per_connection(crate::etcd_cluster::ServerKind::Minietcd).await;
}
