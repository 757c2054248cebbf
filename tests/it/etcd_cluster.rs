//! A cluster of real server processes for tests: etcd 3.4 (the reference) or minietcd, one or
//! three members on reserved loopback ports, each in its own temp data dir, each process
//! killed by its [`ChildGuard`] when the cluster (or the member) is dropped.
//!
//! Both servers take etcd's flags, so a scenario written against [`ServerKind::Etcd`] runs
//! unchanged against [`ServerKind::Minietcd`]. Server logs go to `<member dir>/server.log`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use minietcd_client::{Client, ClientOptions, MaintenanceOptions};

use crate::certs::CertFiles;
use crate::support::{free_port, minietcd_bin, require_program, ChildGuard, Port};

/// Which server implementation a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Real etcd 3.4 (`/usr/bin/etcd`).
    Etcd,
    /// This crate's `minietcd` binary.
    Minietcd,
}

impl ServerKind {
    fn program(self) -> PathBuf {
        match self {
            ServerKind::Etcd => require_program("etcd"),
            ServerKind::Minietcd => minietcd_bin(),
        }
    }
}

/// Heartbeat interval used in tests (etcd's default is 100 ms): quick failure detection.
pub const TEST_HEARTBEAT_MS: u64 = 50;

/// Election timeout used in tests (etcd's default is 1000 ms).
pub const TEST_ELECTION_TIMEOUT_MS: u64 = 500;

/// How long a cluster may take to elect a leader and answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends tracing output to the test's captured output (shown when a test fails);
/// `RUST_LOG` picks the level, `info` by default.
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Server implementation.
    pub kind: ServerKind,
    /// Number of members.
    pub size: usize,
    /// Extra flags for every member (e.g. `--max-request-bytes=1024`).
    pub extra_args: Vec<String>,
    /// Whether each member advertises a peer port of its own besides the one it listens on,
    /// for a proxy in between (see `robust::proxy`); nothing listens there until one starts.
    pub proxied_peers: bool,
    /// TLS on the client and/or peer URLs; plaintext when `None`.
    pub tls: Option<ClusterTls>,
}

/// TLS for a test cluster (see `certs`): one certificate for every member, both sides.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The CA (`--trusted-ca-file`, `--peer-trusted-ca-file`, the clients' `--cacert`).
    pub ca: PathBuf,
    /// Every member's certificate, client and peer side.
    pub server: CertFiles,
    /// The certificate the harness's own clients present.
    pub client: CertFiles,
    /// `https://` client URLs.
    pub clients: bool,
    /// `https://` peer URLs (with `--peer-client-cert-auth`).
    pub peers: bool,
    /// `--client-cert-auth` on the client URLs.
    pub client_cert_auth: bool,
    /// `--auto-tls` / `--peer-auto-tls` instead of the certificate files: self-signed
    /// certificates nobody verifies.
    pub auto: bool,
}

impl ClusterTls {
    /// The member flags for this TLS setup.
    fn flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.auto {
            f.push(format!("--auto-tls={}", self.clients));
            f.push(format!("--peer-auto-tls={}", self.peers));
            return f;
        }
        if self.clients {
            f.push(format!("--cert-file={}", self.server.cert.display()));
            f.push(format!("--key-file={}", self.server.key.display()));
            if self.client_cert_auth {
                f.push(format!("--trusted-ca-file={}", self.ca.display()));
                f.push("--client-cert-auth".into());
            }
        }
        if self.peers {
            f.push(format!("--peer-cert-file={}", self.server.cert.display()));
            f.push(format!("--peer-key-file={}", self.server.key.display()));
            f.push(format!("--peer-trusted-ca-file={}", self.ca.display()));
            f.push("--peer-client-cert-auth".into());
        }
        f
    }

    /// The minietcd client's TLS options (etcdctl's `--cacert --cert --key`).
    pub fn client_options(&self) -> minietcd_client::tls::TlsOptions {
        if self.auto {
            return minietcd_client::tls::TlsOptions {
                insecure_skip_verify: true,
                ..Default::default()
            };
        }
        minietcd_client::tls::TlsOptions {
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.client.cert.clone()),
            key_file: Some(self.client.key.clone()),
            insecure_skip_verify: false,
        }
    }

    /// etcdctl's flags for the client side.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.client.cert.display()),
            format!("--key={}", self.client.key.display()),
        ]
    }
}

impl ClusterConfig {
    /// `size` members of `kind`.
    pub fn new(kind: ServerKind, size: usize) -> Self {
        ClusterConfig {
            kind,
            size,
            extra_args: Vec::new(),
            proxied_peers: false,
            tls: None,
        }
    }
    /// Serves TLS as `tls` says (see [`ClusterTls`]).
    pub fn tls(mut self, tls: ClusterTls) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Members advertise proxy ports to each other (see [`ClusterConfig::proxied_peers`]).
    pub fn proxied_peers(mut self) -> Self {
        self.proxied_peers = true;
        self
    }
    /// Adds a flag for every member.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }
}

/// One member: its ports stay reserved for the cluster's lifetime so that it can restart on
/// the same addresses.
pub struct Member {
    /// Member name (`m0`, `m1`, ...).
    pub name: String,
    /// Client port (gRPC and HTTP /metrics /health).
    pub client_port: Port,
    /// Peer port (the member listens on it).
    pub peer_port: Port,
    /// The peer port other members are told to dial, when it is not `peer_port`: a proxy's.
    pub advertised_peer_port: Option<Port>,
    /// Data dir.
    pub data_dir: PathBuf,
    /// `http` or `https` (client URLs).
    pub client_scheme: &'static str,
    /// `http` or `https` (peer URLs).
    pub peer_scheme: &'static str,
    /// The running process, if any.
    guard: Option<ChildGuard>,
}

impl Member {
    /// `127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port.port)
    }
    /// The peer URL other members dial.
    pub fn advertised_peer_url(&self) -> String {
        let port = self
            .advertised_peer_port
            .as_ref()
            .unwrap_or(&self.peer_port);
        format!("{}://127.0.0.1:{}", self.peer_scheme, port.port)
    }
    /// The client URL (`http://` or `https://`).
    pub fn client_url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.client_scheme, self.client_port.port
        )
    }
    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.guard.is_some()
    }
}

/// A running cluster.
pub struct Cluster {
    /// Server implementation.
    pub kind: ServerKind,
    /// Members, in `--initial-cluster` order.
    pub members: Vec<Member>,
    /// `m0=http://...,m1=...`.
    initial_cluster: String,
    /// Flags for every member.
    extra_args: Vec<String>,
    /// The cluster's TLS, if any.
    pub tls: Option<ClusterTls>,
    /// Root of the data dirs; removed on drop (after the processes are killed).
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts every member (does not wait for them; see [`Cluster::wait_ready`]).
    pub fn start(config: ClusterConfig) -> Cluster {
        let mut cluster = Cluster::reserve(config);
        cluster.start_reserved();
        cluster
    }

    /// Reserves ports and data dirs for every member without starting any (a test may lay
    /// out their data dirs first, e.g. by restoring a snapshot); see
    /// [`Cluster::start_reserved`].
    pub fn reserve(config: ClusterConfig) -> Cluster {
        init_test_logging();
        assert!(config.size > 0, "a cluster needs at least one member");
        let dir = tempfile::Builder::new()
            .prefix("etcd-cluster-")
            .tempdir()
            .expect("temp dir");
        let (client_scheme, peer_scheme) = schemes(config.tls.as_ref());
        let members: Vec<Member> = (0..config.size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                advertised_peer_port: config.proxied_peers.then(free_port),
                data_dir: dir.path().join(format!("m{i}")),
                client_scheme,
                peer_scheme,
                guard: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertised_peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            kind: config.kind,
            members,
            initial_cluster,
            extra_args: config.extra_args,
            tls: config.tls,
            dir,
        }
    }

    /// Starts every member of a reserved cluster.
    pub fn start_reserved(&mut self) {
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        tracing::info!(kind = ?self.kind, endpoints = ?self.endpoints(), "cluster started");
    }

    /// `--initial-cluster` of every member.
    pub fn initial_cluster(&self) -> &str {
        &self.initial_cluster
    }

    /// `--initial-cluster-token` of every member.
    pub fn token() -> String {
        format!("test-{}", std::process::id())
    }

    /// Starts and waits until every member answers and knows a leader.
    pub async fn start_ready(config: ClusterConfig) -> Cluster {
        let cluster = Cluster::start(config);
        cluster.wait_ready().await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster.clone();
        self.spawn_with(i, &initial, "new");
    }

    /// Reserves ports and a data dir for one more member (`m<N>`) without starting it, and
    /// returns its index and peer URL (what `member add` needs).
    pub fn reserve_member(&mut self) -> (usize, String) {
        let i = self.members.len();
        let (client_scheme, peer_scheme) = schemes(self.tls.as_ref());
        let m = Member {
            name: format!("m{i}"),
            client_port: free_port(),
            peer_port: free_port(),
            advertised_peer_port: None,
            data_dir: self.dir.path().join(format!("m{i}")),
            client_scheme,
            peer_scheme,
            guard: None,
        };
        let url = m.advertised_peer_url();
        self.members.push(m);
        (i, url)
    }

    /// Starts reserved member `i` as etcd starts a member added at run time:
    /// `--initial-cluster-state existing` with an `--initial-cluster` of every member.
    pub fn spawn_joining(&mut self, i: usize) {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.spawn_joining_with(i, &all);
    }

    /// [`Cluster::spawn_joining`] with an `--initial-cluster` of `members` alone (the members
    /// the cluster has now, e.g. after `--force-new-cluster`), `i` among them.
    pub fn spawn_joining_with(&mut self, i: usize, members: &[usize]) {
        let initial = members
            .iter()
            .map(|&j| &self.members[j])
            .map(|m| format!("{}={}", m.name, m.advertised_peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(member = i, "starting a joining member");
        self.spawn_with(i, &initial, "existing");
    }

    fn spawn_with(&mut self, i: usize, initial_cluster: &str, state: &str) {
        let program = self.kind.program();
        let m = &self.members[i];
        std::fs::create_dir_all(self.dir.path()).expect("cluster dir");
        let log_path = self.dir.path().join(format!("{}.log", m.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("server log file");
        let mut cmd = Command::new(program);
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.data_dir.display()))
            .arg(format!("--listen-client-urls={}", m.client_url()))
            .arg(format!("--advertise-client-urls={}", m.client_url()))
            .arg(format!(
                "--listen-peer-urls={}://127.0.0.1:{}",
                m.peer_scheme, m.peer_port.port
            ))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                m.advertised_peer_url()
            ))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--initial-cluster-state={state}"))
            .arg(format!("--initial-cluster-token={}", Cluster::token()))
            .arg(format!("--heartbeat-interval={TEST_HEARTBEAT_MS}"))
            .arg(format!("--election-timeout={TEST_ELECTION_TIMEOUT_MS}"));
        if self.kind == ServerKind::Etcd {
            cmd.arg("--logger=zap").arg("--log-outputs=stderr");
        }
        if let Some(tls) = &self.tls {
            cmd.args(tls.flags());
        }
        cmd.args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let name = format!("{:?}-{}", self.kind, m.name);
        self.members[i].guard = Some(ChildGuard::spawn(&name, &mut cmd));
    }

    /// Client endpoints of every member (running or not), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Client endpoint of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// Client port of member `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port.port
    }

    /// Member `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].guard.as_ref()?.pid()
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        tracing::info!(member = i, "killing member");
        if let Some(mut g) = self.members[i].guard.take() {
            g.kill();
        }
    }

    /// SIGTERM member `i` (SIGKILL after a grace period).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut g) = self.members[i].guard.take() {
            g.stop(Duration::from_secs(5));
        }
    }

    /// SIGTERM member `i` and wait up to `grace`: its exit status if it stopped by itself
    /// in time, `None` if it had to be killed.
    pub fn terminate(&mut self, i: usize, grace: Duration) -> Option<std::process::ExitStatus> {
        tracing::info!(member = i, "SIGTERM");
        self.members[i].guard.take()?.terminate(grace)
    }

    /// Member `i`'s exit status, once its process has ended by itself.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.members[i].guard.as_mut()?.try_wait()
    }

    /// Member `i`'s log (stdout and stderr).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }

    /// Starts member `i` again on its ports and data dir (kills it first if running).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        tracing::info!(member = i, "restarting member");
        self.spawn(i);
    }

    /// Starts member `i` again with `args` added to its flags (kills it first if running).
    pub fn restart_with(&mut self, i: usize, args: &[&str]) {
        self.kill(i);
        tracing::info!(member = i, ?args, "restarting member with extra flags");
        let saved = self.extra_args.clone();
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self.spawn(i);
        self.extra_args = saved;
    }

    /// Indices of running members.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].is_running())
            .collect()
    }

    /// A client on member `i` alone.
    pub async fn client_for(&self, i: usize) -> Option<Client> {
        let opts = self
            .client_options()
            .dial_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(2));
        Client::connect([self.endpoint(i)], opts).await.ok()
    }

    /// A client configured with every member's endpoint.
    pub async fn client(&self) -> Client {
        Client::connect(self.endpoints(), self.client_options())
            .await
            .expect("connect to the cluster")
    }

    /// Client options that match the cluster's client URLs (TLS with the harness's client
    /// certificate when they are `https://`).
    pub fn client_options(&self) -> ClientOptions {
        match &self.tls {
            Some(tls) if tls.clients => ClientOptions::new().tls(tls.client_options()),
            _ => ClientOptions::new(),
        }
    }

    /// Member `i`'s (member id, leader id) from its status, if it answers.
    pub async fn status(&self, i: usize) -> Option<(u64, u64)> {
        let client = self.client_for(i).await?;
        let st = client
            .maintenance()
            .status(MaintenanceOptions::new())
            .await
            .ok()?;
        Some((st.header.as_ref()?.member_id, st.leader))
    }

    /// The index of the running member that is leader, agreed on by every running member.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for i in self.running() {
            let (id, lead) = self.status(i).await?;
            if lead == 0 || leader.is_some_and(|l| l != lead) {
                return None;
            }
            leader = Some(lead);
            ids.push((i, id));
        }
        let leader = leader?;
        ids.into_iter()
            .find(|(_, id)| *id == leader)
            .map(|(i, _)| i)
    }

    /// Waits until every running member answers and they agree on a running leader.
    pub async fn wait_ready(&self) -> usize {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(i) = self.leader().await {
                return i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cluster not ready after {READY_TIMEOUT:?}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fetches `/metrics` from member `i` and returns the value of a metric without labels.
    pub fn metric(&self, i: usize, name: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.client_port(i))).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        conn.read_to_string(&mut body).ok()?;
        body.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    }

    /// Where the members' data dirs and logs are.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Leaves the data dirs and logs on disk when the cluster is dropped (for a failed test to
    /// point at) and returns where they are.
    pub fn keep_dir(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }
}

/// How many of the last lines of each member's log a failed test prints.
const FAILED_LOG_TAIL_LINES: usize = 80;

impl Drop for Cluster {
    /// A test that failed keeps its members' data dirs and logs on disk, says where they are
    /// and prints the end of each log (the members are killed after this, when the fields
    /// drop).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = self.keep_dir();
        eprintln!(
            "===== {:?} cluster of a failed test: data dirs and logs kept in {} =====",
            self.kind,
            dir.display()
        );
        for (i, m) in self.members.iter().enumerate() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(FAILED_LOG_TAIL_LINES)..];
            eprintln!(
                "===== {:?} member {} log, last {} of {} lines =====\n{}",
                self.kind,
                m.name,
                tail.len(),
                lines.len(),
                tail.join("\n")
            );
        }
    }
}

/// The (client, peer) URL schemes of a cluster with `tls`.
fn schemes(tls: Option<&ClusterTls>) -> (&'static str, &'static str) {
    let scheme = |on: bool| if on { "https" } else { "http" };
    match tls {
        Some(t) => (scheme(t.clients), scheme(t.peers)),
        None => ("http", "http"),
    }
}

#[tokio::test]
async fn harness_starts_three_etcd_members_and_finds_the_leader() {
    let mut cluster = Cluster::start_ready(ClusterConfig::new(ServerKind::Etcd, 3)).await;
    let leader = cluster.wait_ready().await;
    let (leader_id, _) = cluster.status(leader).await.expect("leader status");
    cluster.kill(leader);
    let next = cluster.wait_ready().await;
    assert_ne!(next, leader, "a killed member cannot be leader");
    let (next_id, _) = cluster.status(next).await.expect("new leader status");
    assert_ne!(next_id, leader_id);
    cluster.restart(leader);
    cluster.wait_ready().await;
    assert_eq!(cluster.running().len(), 3);
}
