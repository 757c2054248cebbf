//! The flag table: every flag of `etcd --help` (3.4.23), with etcd's name, type, default and
//! help grouping, plus minietcd's own `--experimental-snapshot-catchup-entries` and
//! `--experimental-lease-checkpoint-interval`. This is the
//! one place a flag is declared; [`STATUS`] beside it says what minietcd does with each one
//! (a unit test checks that both lists name the same flags, and that `docs/flags.md` does).
//!
//! Environment variables (`ETCD_NAME`, ...) and the YAML config file are turned into
//! arguments of this same table (see `config::sources`), so that types, defaults and errors
//! are the same whichever way a value arrives.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::parse_go_duration;

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster that already runs (the member was added with MemberAdd).
    Existing,
}

/// `--log-level`, with etcd's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Panic,
    Fatal,
}

impl LogLevel {
    /// The tracing filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => "error",
        }
    }
}

/// `--logger`: etcd 3.4's two log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Logger {
    /// `2006-01-02 15:04:05.000000 I | package: message` lines (etcd 3.4's default).
    Capnslog,
    /// One JSON object a line: `level`, `ts`, `caller`, `msg`, then fields.
    Zap,
}

/// `--auto-compaction-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AutoCompactionMode {
    Periodic,
    Revision,
}

/// `--proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    Off,
    Readonly,
    On,
}

/// `--discovery-fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryFallback {
    Exit,
    Proxy,
}

/// `--metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsLevel {
    Basic,
    Extensive,
}

/// `--experimental-backend-bbolt-freelist-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FreelistType {
    Array,
    Map,
}

const MEMBER: &str = "Member";
const CLUSTERING: &str = "Clustering";
const SECURITY: &str = "Security";
const AUTH: &str = "Auth";
const MONITORING: &str = "Profiling and Monitoring";
const LOGGING: &str = "Logging";
const PROXY: &str = "v2 Proxy (to be deprecated in v4)";
const EXPERIMENTAL: &str = "Experimental feature";
const UNSAFE: &str = "Unsafe feature";
const DEPRECATED: &str = "TO BE DEPRECATED";

/// minietcd's flags: etcd 3.4's names, types and defaults, except that the data dir is
/// `NAME.minietcd` (so that an etcd data dir is never mistaken for ours).
///
/// Booleans take Go's syntax (`--enable-v2`, `--enable-v2=false`; never `--enable-v2 false`):
/// `config::sources::command` rewrites every `bool` field's argument so.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "minietcd",
    version,
    about = "An etcd-compatible, Raft-replicated key-value store",
    long_about = None,
    args_override_self = true
)]
pub struct Flags {
    /// Path to the server configuration file (YAML, etcd's keys). When given, other command
    /// line flags and environment variables are ignored, as in etcd 3.4.
    #[arg(long)]
    pub config_file: Option<PathBuf>,

    // ---- Member ----
    /// Human-readable name for this member.
    #[arg(long, default_value = "default", help_heading = MEMBER)]
    pub name: String,
    /// Path to the data directory (default: NAME.minietcd).
    #[arg(long, help_heading = MEMBER)]
    pub data_dir: Option<PathBuf>,
    /// Path to the dedicated wal directory (the Raft log's segments).
    #[arg(long, help_heading = MEMBER)]
    pub wal_dir: Option<PathBuf>,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value_t = 100_000, help_heading = MEMBER)]
    pub snapshot_count: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100, help_heading = MEMBER)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000, help_heading = MEMBER)]
    pub election_timeout: u64,
    /// Whether to fast-forward initial election ticks on boot for faster election.
    #[arg(long, default_value = "true", help_heading = MEMBER)]
    pub initial_election_tick_advance: bool,
    /// List of URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380", help_heading = MEMBER)]
    pub listen_peer_urls: String,
    /// List of URLs to listen on for client traffic.
    #[arg(long, default_value = "http://localhost:2379", help_heading = MEMBER)]
    pub listen_client_urls: String,
    /// Maximum number of snapshot files to retain (0 is unlimited).
    #[arg(long, default_value_t = 5, help_heading = MEMBER)]
    pub max_snapshots: u32,
    /// Maximum number of wal files to retain (0 is unlimited).
    #[arg(long, default_value_t = 5, help_heading = MEMBER)]
    pub max_wals: u32,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
    #[arg(long, default_value_t = 0, help_heading = MEMBER)]
    pub quota_backend_bytes: i64,
    /// The maximum time before committing the backend transaction.
    #[arg(long, value_parser = parse_go_duration, help_heading = MEMBER)]
    pub backend_batch_interval: Option<Duration>,
    /// The maximum operations before committing the backend transaction.
    #[arg(long, default_value_t = 0, help_heading = MEMBER)]
    pub backend_batch_limit: i64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128, help_heading = MEMBER)]
    pub max_txn_ops: usize,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024, help_heading = MEMBER)]
    pub max_request_bytes: usize,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, default_value_t = u32::MAX, help_heading = MEMBER)]
    pub max_concurrent_streams: u32,
    /// Minimum duration interval that a client should wait before pinging server.
    #[arg(long, default_value = "5s", value_parser = parse_go_duration, help_heading = MEMBER)]
    pub grpc_keepalive_min_time: Duration,
    /// Frequency duration of server-to-client ping to check if a connection is alive (0 to
    /// disable).
    #[arg(long, default_value = "2h", value_parser = parse_go_duration, help_heading = MEMBER)]
    pub grpc_keepalive_interval: Duration,
    /// Additional duration of wait before closing a non-responsive connection (0 to disable).
    #[arg(long, default_value = "20s", value_parser = parse_go_duration, help_heading = MEMBER)]
    pub grpc_keepalive_timeout: Duration,

    // ---- Clustering ----
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380", help_heading = CLUSTERING)]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping: name=peerURL,...
    /// (default: NAME=INITIAL-ADVERTISE-PEER-URLS).
    #[arg(long, help_heading = CLUSTERING)]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, value_enum, default_value = "new", help_heading = CLUSTERING)]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token, mixed into member ids so that clusters do not mistake each other.
    #[arg(long, default_value = "etcd-cluster", help_heading = CLUSTERING)]
    pub initial_cluster_token: String,
    /// List of this member's client URLs to advertise to the public.
    #[arg(long, default_value = "http://localhost:2379", help_heading = CLUSTERING)]
    pub advertise_client_urls: String,
    /// Discovery URL used to bootstrap the cluster (not supported: refused when set).
    #[arg(long, default_value = "", help_heading = CLUSTERING)]
    pub discovery: String,
    /// Expected behavior ('exit' or 'proxy') when discovery services fails.
    #[arg(long, value_enum, default_value = "proxy", help_heading = CLUSTERING)]
    pub discovery_fallback: DiscoveryFallback,
    /// HTTP proxy to use for traffic to discovery service.
    #[arg(long, default_value = "", help_heading = CLUSTERING)]
    pub discovery_proxy: String,
    /// DNS srv domain used to bootstrap the cluster (not supported: refused when set).
    #[arg(long, default_value = "", help_heading = CLUSTERING)]
    pub discovery_srv: String,
    /// Suffix to the dns srv name queried when bootstrapping.
    #[arg(long, default_value = "", help_heading = CLUSTERING)]
    pub discovery_srv_name: String,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, default_value = "true", help_heading = CLUSTERING)]
    pub strict_reconfig_check: bool,
    /// Enable to run an additional Raft election phase.
    #[arg(long, help_heading = CLUSTERING)]
    pub pre_vote: bool,
    /// Auto compaction retention length. 0 means disable auto compaction.
    #[arg(long, default_value = "0", help_heading = CLUSTERING)]
    pub auto_compaction_retention: String,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(long, value_enum, default_value = "periodic", help_heading = CLUSTERING)]
    pub auto_compaction_mode: AutoCompactionMode,
    /// Accept etcd V2 client requests (not served: refused when true).
    #[arg(long, help_heading = CLUSTERING)]
    pub enable_v2: bool,

    // ---- Security ----
    /// Path to the client server TLS cert file.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub cert_file: String,
    /// Path to the client server TLS key file.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub key_file: String,
    /// Enable client cert authentication.
    #[arg(long, help_heading = SECURITY)]
    pub client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub client_crl_file: String,
    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub client_cert_allowed_hostname: String,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub trusted_ca_file: String,
    /// Client TLS using generated certificates.
    #[arg(long, help_heading = SECURITY)]
    pub auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub peer_cert_file: String,
    /// Path to the peer server TLS key file.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub peer_key_file: String,
    /// Enable peer client cert authentication.
    #[arg(long, help_heading = SECURITY)]
    pub peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub peer_trusted_ca_file: String,
    /// Required CN for client certs connecting to the peer endpoint.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub peer_cert_allowed_cn: String,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub peer_cert_allowed_hostname: String,
    /// Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are
    /// not provided.
    #[arg(long, help_heading = SECURITY)]
    pub peer_auto_tls: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub peer_crl_file: String,
    /// Comma-separated list of supported TLS cipher suites between client/server and peers.
    #[arg(long, default_value = "", help_heading = SECURITY)]
    pub cipher_suites: String,
    /// Comma-separated whitelist of origins for CORS (empty or * means allow all).
    #[arg(long, default_value = "*", help_heading = SECURITY)]
    pub cors: String,
    /// Acceptable hostnames from HTTP client requests, if server is not secure (empty or *
    /// means allow all).
    #[arg(long, default_value = "*", help_heading = SECURITY)]
    pub host_whitelist: String,

    // ---- Auth ----
    /// Specify a v3 authentication token type and its options ('simple' or 'jwt').
    #[arg(long, default_value = "simple", help_heading = AUTH)]
    pub auth_token: String,
    /// Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. Valid
    /// values are between 4 and 31.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31), help_heading = AUTH)]
    pub bcrypt_cost: u32,
    /// Time (in seconds) of the auth-token-ttl.
    #[arg(long, default_value_t = 300, help_heading = AUTH)]
    pub auth_token_ttl: u32,

    // ---- Profiling and Monitoring ----
    /// Enable runtime profiling data via HTTP server.
    #[arg(long, help_heading = MONITORING)]
    pub enable_pprof: bool,
    /// Set level of detail for exported metrics, specify 'extensive' to include histogram
    /// metrics.
    #[arg(long, value_enum, default_value = "basic", help_heading = MONITORING)]
    pub metrics: MetricsLevel,
    /// List of URLs to listen on for the metrics and health endpoints.
    #[arg(long, default_value = "", help_heading = MONITORING)]
    pub listen_metrics_urls: String,

    // ---- Logging ----
    /// Specify 'zap' for structured logging or 'capnslog'.
    #[arg(long, value_enum, default_value = "capnslog", help_heading = LOGGING)]
    pub logger: Logger,
    /// Specify 'stdout' or 'stderr', or a comma-separated list of output targets ('default'
    /// is stderr; anything else is a file path, appended to).
    #[arg(long, default_value = "default", help_heading = LOGGING)]
    pub log_outputs: String,
    /// Configures log level. Only supports debug, info, warn, error, panic, or fatal.
    #[arg(long, value_enum, default_value = "info", help_heading = LOGGING)]
    pub log_level: LogLevel,

    // ---- v2 Proxy ----
    /// Proxy mode setting ('off', 'readonly' or 'on'); only 'off' is supported.
    #[arg(long, value_enum, default_value = "off", help_heading = PROXY)]
    pub proxy: ProxyMode,
    /// Time (in milliseconds) an endpoint will be held in a failed state.
    #[arg(long, default_value_t = 5000, help_heading = PROXY)]
    pub proxy_failure_wait: u64,
    /// Time (in milliseconds) of the endpoints refresh interval.
    #[arg(long, default_value_t = 30000, help_heading = PROXY)]
    pub proxy_refresh_interval: u64,
    /// Time (in milliseconds) for a dial to timeout.
    #[arg(long, default_value_t = 1000, help_heading = PROXY)]
    pub proxy_dial_timeout: u64,
    /// Time (in milliseconds) for a write to timeout.
    #[arg(long, default_value_t = 5000, help_heading = PROXY)]
    pub proxy_write_timeout: u64,
    /// Time (in milliseconds) for a read to timeout.
    #[arg(long, default_value_t = 0, help_heading = PROXY)]
    pub proxy_read_timeout: u64,

    // ---- Experimental ----
    /// Enable to check data corruption before serving any client/peer traffic.
    #[arg(long, help_heading = EXPERIMENTAL)]
    pub experimental_initial_corrupt_check: bool,
    /// Duration of time between cluster corruption check passes.
    #[arg(long, default_value = "0s", value_parser = parse_go_duration, help_heading = EXPERIMENTAL)]
    pub experimental_corrupt_check_time: Duration,
    /// Serve v2 requests through the v3 backend under a given prefix (refused when set).
    #[arg(long, default_value = "", help_heading = EXPERIMENTAL)]
    pub experimental_enable_v2v3: String,
    /// The type of freelist that boltdb backend uses (array and map are supported types).
    #[arg(long, value_enum, default_value = "array", help_heading = EXPERIMENTAL)]
    pub experimental_backend_bbolt_freelist_type: FreelistType,
    /// Enables the primary lessor to persist lease remainingTTL to prevent indefinite
    /// auto-renewal of long lived leases.
    #[arg(long, help_heading = EXPERIMENTAL)]
    pub experimental_enable_lease_checkpoint: bool,
    /// How often the leader checkpoints the remaining TTL of long leases (minietcd's own;
    /// etcd 3.4 fixes it at 5m).
    #[arg(long, default_value = "5m", value_parser = parse_go_duration, help_heading = EXPERIMENTAL)]
    pub experimental_lease_checkpoint_interval: Duration,
    /// Sets the maximum revisions deleted in each compaction batch.
    #[arg(long, default_value_t = 1000, help_heading = EXPERIMENTAL)]
    pub experimental_compaction_batch_limit: i64,
    /// Skip verification of SAN field in client certificate for peer connections.
    #[arg(long, help_heading = EXPERIMENTAL)]
    pub experimental_peer_skip_client_san_verification: bool,
    /// Duration of periodic watch progress notifications (Go syntax: 10m, 1s, 200ms).
    #[arg(long, default_value = "10m", value_parser = parse_go_duration, help_heading = EXPERIMENTAL)]
    pub experimental_watch_progress_notify_interval: Duration,
    /// Warning is generated if requests take more than this duration.
    #[arg(long, default_value = "100ms", value_parser = parse_go_duration, help_heading = EXPERIMENTAL)]
    pub experimental_warning_apply_duration: Duration,
    /// Entries kept in the log after a snapshot so that a slow follower catches up from the
    /// log (etcd 3.5's flag of the same name; etcd 3.4 fixes it at 5000).
    #[arg(long, default_value_t = 5000, help_heading = EXPERIMENTAL)]
    pub experimental_snapshot_catchup_entries: u64,

    // ---- Unsafe ----
    /// Force to create a new one-member cluster.
    #[arg(long, help_heading = UNSAFE)]
    pub force_new_cluster: bool,

    // ---- To be deprecated ----
    /// Enable debug-level logging. Use '--log-level=debug' instead.
    #[arg(long, help_heading = DEPRECATED)]
    pub debug: bool,
    /// Specify a particular log level for each etcd package (eg:
    /// 'etcdmain=CRITICAL,etcdserver=DEBUG').
    #[arg(long, default_value = "", help_heading = DEPRECATED)]
    pub log_package_levels: String,
}

/// What minietcd does with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Behaves as etcd's flag.
    Implemented,
    /// Accepted and parsed; a value other than the default has no effect and logs a warning.
    NoEffect,
    /// Accepted at its default (or harmless) values; a value that would change what clients
    /// see is refused with one line and a non-zero exit.
    Refused,
}

/// Every flag's status and the reason, in `etcd --help` order; `docs/flags.md` says the same.
pub const STATUS: &[(&str, Status, &str)] = {
    use Status::*;
    &[
        (
            "config-file",
            Implemented,
            "etcd's YAML keys; other flags and ETCD_* variables are then ignored, as in etcd 3.4",
        ),
        ("name", Implemented, ""),
        (
            "data-dir",
            Implemented,
            "default NAME.minietcd (etcd: NAME.etcd); the layout is minietcd's own",
        ),
        (
            "wal-dir",
            Implemented,
            "the Raft log's segments go there instead of DATA-DIR/wal",
        ),
        ("snapshot-count", Implemented, ""),
        ("heartbeat-interval", Implemented, ""),
        ("election-timeout", Implemented, ""),
        (
            "initial-election-tick-advance",
            NoEffect,
            "openraft has no election ticks to fast-forward: a starting member campaigns after one randomized election timeout (a one-member cluster at once); campaigning earlier would raise its term and could depose a live leader",
        ),
        ("listen-peer-urls", Implemented, "http only"),
        ("listen-client-urls", Implemented, "http only"),
        (
            "max-snapshots",
            NoEffect,
            "minietcd keeps no snapshot files: snapshots are built from sled on demand",
        ),
        (
            "max-wals",
            NoEffect,
            "the Raft log drops whole segments once they are covered by the state machine",
        ),
        (
            "quota-backend-bytes",
            Implemented,
            "measured on the sled database's size on disk",
        ),
        (
            "backend-batch-interval",
            NoEffect,
            "sled batches each applied entry; there is no bbolt transaction to tune",
        ),
        (
            "backend-batch-limit",
            NoEffect,
            "sled batches each applied entry; there is no bbolt transaction to tune",
        ),
        ("max-txn-ops", Implemented, ""),
        ("max-request-bytes", Implemented, ""),
        (
            "max-concurrent-streams",
            Implemented,
            "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS of the client listeners",
        ),
        (
            "grpc-keepalive-min-time",
            NoEffect,
            "the HTTP/2 server (hyper) has no keepalive enforcement policy to set",
        ),
        (
            "grpc-keepalive-interval",
            Implemented,
            "server-to-client HTTP/2 pings (0 disables)",
        ),
        (
            "grpc-keepalive-timeout",
            Implemented,
            "wait for a ping's answer before closing the connection",
        ),
        ("initial-advertise-peer-urls", Implemented, ""),
        ("initial-cluster", Implemented, ""),
        ("initial-cluster-state", Implemented, ""),
        ("initial-cluster-token", Implemented, ""),
        ("advertise-client-urls", Implemented, ""),
        (
            "discovery",
            Refused,
            "discovery is not supported: use --initial-cluster",
        ),
        (
            "discovery-fallback",
            NoEffect,
            "only matters with --discovery, which is refused",
        ),
        (
            "discovery-proxy",
            NoEffect,
            "only matters with --discovery, which is refused",
        ),
        (
            "discovery-srv",
            Refused,
            "DNS discovery is not supported: use --initial-cluster",
        ),
        (
            "discovery-srv-name",
            NoEffect,
            "only matters with --discovery-srv, which is refused",
        ),
        ("strict-reconfig-check", Implemented, "a member remove that would leave too few started or active members is refused, with etcd's errors"),
        ("pre-vote", Implemented, "openraft's Pre-Vote phase before each election"),
        (
            "auto-compaction-retention",
            Implemented,
            "the leader proposes each compaction through Raft, as etcd's compactor",
        ),
        ("auto-compaction-mode", Implemented, ""),
        (
            "enable-v2",
            Refused,
            "the v2 API is not served: only --enable-v2=false is accepted",
        ),
        ("cert-file", Implemented, "served on https:// client URLs"),
        ("key-file", Implemented, ""),
        (
            "client-cert-auth",
            Implemented,
            "clients must present a certificate signed by --trusted-ca-file",
        ),
        (
            "client-crl-file",
            Refused,
            "revocation lists are not supported yet: refused rather than accepting revoked certificates",
        ),
        (
            "client-cert-allowed-hostname",
            Refused,
            "not supported yet: refused rather than accepting certificates etcd would refuse",
        ),
        (
            "trusted-ca-file",
            Implemented,
            "as in etcd, also requires client certificates signed by it",
        ),
        (
            "auto-tls",
            Implemented,
            "a self-signed certificate made at start, kept in memory",
        ),
        ("peer-cert-file", Implemented, "served on https:// peer URLs, and presented when dialling peers"),
        ("peer-key-file", Implemented, ""),
        ("peer-client-cert-auth", Implemented, ""),
        ("peer-trusted-ca-file", Implemented, ""),
        (
            "peer-cert-allowed-cn",
            Refused,
            "not supported yet: refused rather than accepting certificates etcd would refuse",
        ),
        (
            "peer-cert-allowed-hostname",
            Refused,
            "not supported yet: refused rather than accepting certificates etcd would refuse",
        ),
        (
            "peer-auto-tls",
            Implemented,
            "a self-signed certificate made at start; peers skip verifying it, as in etcd",
        ),
        (
            "peer-crl-file",
            Refused,
            "revocation lists are not supported yet: refused rather than accepting revoked certificates",
        ),
        (
            "cipher-suites",
            NoEffect,
            "TLS uses rustls' safe default cipher suites",
        ),
        ("cors", Implemented, "on the client port's HTTP answers (health, version, metrics, JSON gateway); gRPC is not affected, as in etcd"),
        ("host-whitelist", Implemented, "plaintext HTTP requests naming another Host get etcd's 421 answer; gRPC and TLS listeners are not affected, as in etcd"),
        (
            "auth-token",
            Implemented,
            "etcd's simple tokens; jwt is refused",
        ),
        ("bcrypt-cost", Implemented, "the cost of new password hashes"),
        (
            "auth-token-ttl",
            Implemented,
            "a simple token expires after this long without use",
        ),
        ("enable-pprof", NoEffect, "no Go runtime to profile"),
        (
            "metrics",
            NoEffect,
            "/metrics always serves the same set (histograms included)",
        ),
        (
            "listen-metrics-urls",
            Implemented,
            "serves /metrics and /health on extra URLs (the client URLs serve them too)",
        ),
        (
            "logger",
            Implemented,
            "capnslog (default) or zap JSON lines",
        ),
        (
            "log-outputs",
            Implemented,
            "stderr, stdout, default (= stderr) or file paths; no journald",
        ),
        ("log-level", Implemented, ""),
        (
            "proxy",
            Refused,
            "the v2 proxy is not supported: only --proxy=off is accepted",
        ),
        (
            "proxy-failure-wait",
            NoEffect,
            "only matters with --proxy, which is refused",
        ),
        (
            "proxy-refresh-interval",
            NoEffect,
            "only matters with --proxy, which is refused",
        ),
        (
            "proxy-dial-timeout",
            NoEffect,
            "only matters with --proxy, which is refused",
        ),
        (
            "proxy-write-timeout",
            NoEffect,
            "only matters with --proxy, which is refused",
        ),
        (
            "proxy-read-timeout",
            NoEffect,
            "only matters with --proxy, which is refused",
        ),
        (
            "experimental-initial-corrupt-check",
            Implemented,
            "before serving clients, HashKV is compared with every peer's; a mismatch at the same compaction stops the member",
        ),
        (
            "experimental-corrupt-check-time",
            Implemented,
            "the leader compares every member's HashKV at its revision; a mismatch raises the CORRUPT alarm, and writes then fail with \"etcdserver: corrupt cluster\"",
        ),
        (
            "experimental-enable-v2v3",
            Refused,
            "the v2 API is not served",
        ),
        (
            "experimental-backend-bbolt-freelist-type",
            NoEffect,
            "there is no bbolt: the store is sled",
        ),
        (
            "experimental-enable-lease-checkpoint",
            Implemented,
            "the leader proposes each long lease's remaining TTL through Raft; a new leader resumes from it instead of the full TTL",
        ),
        (
            "experimental-lease-checkpoint-interval",
            Implemented,
            "minietcd's own: etcd 3.4 fixes it at 5m",
        ),
        (
            "experimental-compaction-batch-limit",
            Implemented,
            "compaction removes history in the background in steps of at most this many keys or dropped revisions, 10 ms apart",
        ),
        (
            "experimental-peer-skip-client-san-verification",
            NoEffect,
            "minietcd never checks a peer client certificate's SANs against its address",
        ),
        (
            "experimental-watch-progress-notify-interval",
            Implemented,
            "",
        ),
        (
            "experimental-warning-apply-duration",
            NoEffect,
            "no slow-apply warning yet",
        ),
        (
            "experimental-snapshot-catchup-entries",
            Implemented,
            "etcd 3.5's flag; etcd 3.4 fixes it at 5000",
        ),
        (
            "force-new-cluster",
            Implemented,
            "the member restarts from its data as the only voter of its cluster (a membership entry appended to its Raft log); other members can then be added",
        ),
        ("debug", Implemented, "same as --log-level=debug"),
        (
            "log-package-levels",
            NoEffect,
            "minietcd has no per-package levels (RUST_LOG does that)",
        ),
    ]
};

/// The status of flag `name` (without dashes), if it is in the table.
pub fn status(name: &str) -> Option<(Status, &'static str)> {
    STATUS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, s, why)| (*s, *why))
}
