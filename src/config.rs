//! Command-line flags (etcd's names) and their validation into a [`Config`], done once at
//! start so that the rest of the node never sees a malformed value.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::FromArgMatches;
use sha1::{Digest, Sha1};

pub mod flags;
pub mod sources;

pub use flags::{ClusterState, Flags, LogLevel, Logger, Status};
pub use sources::SourceError;

use crate::tls::TlsFlags;

/// A problem with the flags, reported as one line before the node starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL flag holds something that is not `http://host:port`.
    #[error("--{flag}: invalid URL {url:?}: {reason}")]
    BadUrl {
        flag: &'static str,
        url: String,
        reason: String,
    },
    /// `--initial-cluster` is malformed or does not name this member.
    #[error("--initial-cluster: {0}")]
    BadInitialCluster(String),
    /// Another flag holds a value out of range, or one minietcd refuses (see `flags::STATUS`).
    #[error("--{flag}: {reason}")]
    BadValue { flag: &'static str, reason: String },
    /// A flag set to a value minietcd refuses (see `flags::STATUS`).
    #[error("--{flag}={value} is refused: {why}")]
    Refused {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
    /// An `ETCD_*` variable and its flag are both given (etcd refuses this too).
    #[error(
        "conflicting environment variable {0:?} is shadowed by corresponding command-line flag \
         (either unset environment variable or disable flag)"
    )]
    EnvConflict(String),
    /// TLS flags that do not fit the URLs (etcd's own wording).
    #[error("{0}")]
    Tls(String),
    /// `--config-file` cannot be read or is not etcd's YAML.
    #[error("--config-file {path}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },
}

/// Something to log about the configuration once logging is set up (the flags decide how
/// logging is set up, so it cannot happen while they are read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// True for a warning, false for an info line.
    pub warn: bool,
    pub message: String,
}

impl Notice {
    pub fn info(message: String) -> Notice {
        Notice {
            warn: false,
            message,
        }
    }

    pub fn warn(message: String) -> Notice {
        Notice {
            warn: true,
            message,
        }
    }
}

/// One `--log-outputs` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// `--name` of the member.
    pub name: String,
    /// Its peer URLs, normalised (`http://host:port`).
    pub peer_urls: Vec<String>,
}

/// etcd's default space quota (`DefaultQuotaBytes`): 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Validated configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    /// Addresses to bind for clients.
    pub listen_client_addrs: Vec<SocketAddr>,
    pub advertise_client_urls: Vec<String>,
    /// Addresses to bind for `/metrics` and `/health` alone (`--listen-metrics-urls`).
    pub listen_metrics_addrs: Vec<SocketAddr>,
    /// Addresses to bind for peers.
    pub listen_peer_addrs: Vec<SocketAddr>,
    /// For each of `listen_client_addrs`: whether its URL is `https://`.
    pub listen_client_secure: Vec<bool>,
    /// For each of `listen_peer_addrs`: whether its URL is `https://`.
    pub listen_peer_secure: Vec<bool>,
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, `--auto-tls`.
    pub client_tls: TlsFlags,
    /// Their `--peer-` twins.
    pub peer_tls: TlsFlags,
    pub advertise_peer_urls: Vec<String>,
    /// The initial cluster by member id (etcd's ids, derived from peer URLs and token).
    pub initial_cluster: BTreeMap<u64, InitialMember>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// This member's id within `initial_cluster`.
    pub member_id: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// `--quota-backend-bytes`: past it a write raises NOSPACE; `None`: no quota (a negative
    /// flag, as in etcd); 0 means etcd's default, [`DEFAULT_QUOTA_BACKEND_BYTES`].
    pub quota_backend_bytes: Option<u64>,
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`.
    pub snapshot_catchup_entries: u64,
    pub progress_notify_interval_ms: u64,
    /// `--strict-reconfig-check`: refuse a member remove that would lose quorum.
    pub strict_reconfig_check: bool,
    /// `--pre-vote`: a member that lost its leader asks whether it would win before it
    /// starts an election with a higher term (Raft thesis 9.6), so a partitioned member
    /// rejoining does not depose a healthy leader.
    pub pre_vote: bool,
    /// `--experimental-initial-corrupt-check`: compare HashKV with the peers before serving.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: how often the leader compares the members'
    /// HashKV; `None`: never (0).
    pub corrupt_check_time: Option<Duration>,
    /// `--cors`: origins the client port's HTTP answers allow (empty or `*`: all).
    pub cors: Vec<String>,
    /// `--host-whitelist`: Host names plaintext HTTP requests may name (empty or `*`: all).
    pub host_whitelist: Vec<String>,
    /// `--experimental-enable-lease-checkpoint` with
    /// `--experimental-lease-checkpoint-interval`: how often the leader checkpoints the
    /// remaining TTL of leases; `None`: off.
    pub lease_checkpoint_interval: Option<Duration>,
    /// `--experimental-compaction-batch-limit`: the bound of one compaction step.
    pub compaction_batch_limit: i64,
    /// `--force-new-cluster`: restart as the only member of this member's cluster.
    pub force_new_cluster: bool,
    /// `--wal-dir`: the Raft log's segments outside the data dir.
    pub wal_dir: Option<PathBuf>,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`; None: off (retention 0).
    pub auto_compaction: Option<AutoCompaction>,
    /// HTTP/2 concurrent streams per client connection.
    pub max_concurrent_streams: u32,
    /// Server-to-client pings; `None` disables them.
    pub grpc_keepalive_interval: Option<Duration>,
    pub grpc_keepalive_timeout: Duration,
    pub log_level: LogLevel,
    pub logger: Logger,
    pub log_outputs: Vec<LogOutput>,
    /// What to log about the flags once logging is up (no-effect flags, env variables).
    pub notices: Vec<Notice>,
    /// `--auth-token-ttl`: how long a simple token lives without use.
    pub auth_token_ttl: Duration,
    /// `--bcrypt-cost`: the cost of new password hashes.
    pub bcrypt_cost: u32,
}

impl Config {
    /// Reads the flags from the command line `args` (program name first), `ETCD_*`
    /// variables in `env`, or `--config-file`, then validates them; flags minietcd refuses
    /// are errors, flags without effect become warnings in [`Config::notices`].
    pub fn load(
        args: impl IntoIterator<Item = OsString>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, SourceError> {
        let parsed = sources::parse(args, env)?;
        let mut notices = parsed.notices;
        check_status(&parsed.matches, &mut notices)?;
        let flags = Flags::from_arg_matches(&parsed.matches)?;
        let mut cfg = Config::from_flags(flags)?;
        cfg.notices.splice(0..0, notices);
        Ok(cfg)
    }

    /// Validates flags into a configuration.
    pub fn from_flags(f: Flags) -> Result<Config, ConfigError> {
        let listen_client = parse_urls("listen-client-urls", &f.listen_client_urls)?;
        let advertise_client = parse_urls("advertise-client-urls", &f.advertise_client_urls)?;
        let listen_peer = parse_urls("listen-peer-urls", &f.listen_peer_urls)?;
        let listen_metrics = if f.listen_metrics_urls.trim().is_empty() {
            Vec::new()
        } else {
            parse_urls("listen-metrics-urls", &f.listen_metrics_urls)?
        };
        let advertise_peer = parse_urls(
            "initial-advertise-peer-urls",
            &f.initial_advertise_peer_urls,
        )?;
        if f.name.is_empty() {
            return Err(ConfigError::BadValue {
                flag: "name",
                reason: "must not be empty".into(),
            });
        }
        if f.heartbeat_interval == 0 || f.election_timeout < 5 * f.heartbeat_interval {
            return Err(ConfigError::BadValue {
                flag: "election-timeout",
                reason: format!(
                    "{} ms must be at least 5 times --heartbeat-interval ({} ms)",
                    f.election_timeout, f.heartbeat_interval
                ),
            });
        }
        if f.max_request_bytes == 0 {
            return Err(ConfigError::BadValue {
                flag: "max-request-bytes",
                reason: "must be positive".into(),
            });
        }
        if f.max_txn_ops == 0 {
            return Err(ConfigError::BadValue {
                flag: "max-txn-ops",
                reason: "must be positive".into(),
            });
        }
        if f.max_concurrent_streams == 0 {
            return Err(ConfigError::BadValue {
                flag: "max-concurrent-streams",
                reason: "must be positive".into(),
            });
        }
        let log_outputs = parse_log_outputs(&f.log_outputs)?;
        let (client_tls, peer_tls) = tls_flags(&f);
        check_tls(
            &listen_client,
            &client_tls,
            &listen_peer,
            &peer_tls,
            &listen_metrics,
        )?;
        let mut notices = tls_notices(&listen_client, &client_tls, false);
        notices.extend(tls_notices(&listen_peer, &peer_tls, true));
        check_auth_token(&f.auth_token)?;
        let initial = match &f.initial_cluster {
            Some(s) => s.clone(),
            None => advertise_peer
                .iter()
                .map(|u| format!("{}={}", f.name, u.0))
                .collect::<Vec<_>>()
                .join(","),
        };
        let initial_cluster = parse_initial_cluster(&initial, &f.initial_cluster_token)?;
        let mine: Vec<String> = advertise_peer.iter().map(|u| u.0.clone()).collect();
        let data_dir = f
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.minietcd", f.name)));
        // A member whose data dir is already initialized is the member its data says it is:
        // etcd ignores --initial-cluster then (a member added at run time is restarted with
        // the first start's flags, which may not name it). An unreadable dir is checked
        // like a new one; opening it reports the problem.
        let initialized = !crate::data_dir::DataDir::is_new(&data_dir).unwrap_or(true);
        let member_id = match initial_cluster.iter().find(|(_, m)| m.name == f.name) {
            None if initialized => 0,
            None => {
                return Err(ConfigError::BadInitialCluster(format!(
                    "does not name this member {:?}",
                    f.name
                )))
            }
            Some((id, m)) => {
                let (mut a, mut b) = (m.peer_urls.clone(), mine.clone());
                a.sort();
                b.sort();
                if a != b && !initialized {
                    return Err(ConfigError::BadInitialCluster(format!(
                        "{:?} has peer URLs {} but --initial-advertise-peer-urls is {}",
                        f.name,
                        a.join(","),
                        b.join(",")
                    )));
                }
                *id
            }
        };
        Ok(Config {
            data_dir,
            name: f.name,
            listen_client_addrs: listen_client.iter().map(|u| u.1).collect(),
            advertise_client_urls: advertise_client.into_iter().map(|u| u.0).collect(),
            listen_peer_addrs: listen_peer.iter().map(|u| u.1).collect(),
            listen_client_secure: listen_client.iter().map(|u| is_https(&u.0)).collect(),
            listen_peer_secure: listen_peer.iter().map(|u| is_https(&u.0)).collect(),
            client_tls,
            peer_tls,
            listen_metrics_addrs: listen_metrics.iter().map(|u| u.1).collect(),
            advertise_peer_urls: mine,
            initial_cluster,
            initial_cluster_state: f.initial_cluster_state,
            initial_cluster_token: f.initial_cluster_token,
            member_id,
            heartbeat_interval_ms: f.heartbeat_interval,
            election_timeout_ms: f.election_timeout,
            max_request_bytes: f.max_request_bytes,
            max_txn_ops: f.max_txn_ops,
            quota_backend_bytes: match f.quota_backend_bytes {
                q if q < 0 => None,
                0 => Some(DEFAULT_QUOTA_BACKEND_BYTES),
                q => Some(q.unsigned_abs()),
            },
            snapshot_count: f.snapshot_count,
            snapshot_catchup_entries: f.experimental_snapshot_catchup_entries,
            progress_notify_interval_ms: f.experimental_watch_progress_notify_interval.as_millis()
                as u64,
            strict_reconfig_check: f.strict_reconfig_check,
            pre_vote: f.pre_vote,
            initial_corrupt_check: f.experimental_initial_corrupt_check,
            force_new_cluster: f.force_new_cluster,
            lease_checkpoint_interval: lease_checkpoint_interval(
                f.experimental_enable_lease_checkpoint,
                f.experimental_lease_checkpoint_interval,
            )?,
            cors: parse_cors(&f.cors)?,
            host_whitelist: split_list(&f.host_whitelist),
            compaction_batch_limit: f.experimental_compaction_batch_limit,
            corrupt_check_time: Some(f.experimental_corrupt_check_time).filter(|d| !d.is_zero()),
            wal_dir: f.wal_dir.filter(|p| !p.as_os_str().is_empty()),
            auto_compaction: auto_compaction(f.auto_compaction_mode, &f.auto_compaction_retention)?,
            max_concurrent_streams: f.max_concurrent_streams,
            grpc_keepalive_interval: Some(f.grpc_keepalive_interval).filter(|d| !d.is_zero()),
            grpc_keepalive_timeout: f.grpc_keepalive_timeout,
            log_level: if f.debug {
                LogLevel::Debug
            } else {
                f.log_level
            },
            logger: f.logger,
            log_outputs,
            notices,
            auth_token_ttl: Duration::from_secs(u64::from(f.auth_token_ttl)),
            bcrypt_cost: f.bcrypt_cost,
        })
    }

    /// etcd's cluster id: the first 8 bytes of the SHA-1 of the sorted member ids.
    pub fn cluster_id(&self) -> u64 {
        cluster_id(self.initial_cluster.keys().copied())
    }
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// Both sides' TLS flags; an empty path is no path.
fn tls_flags(f: &Flags) -> (TlsFlags, TlsFlags) {
    let path = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s));
    let client = TlsFlags {
        cert_file: path(&f.cert_file),
        key_file: path(&f.key_file),
        trusted_ca_file: path(&f.trusted_ca_file),
        client_cert_auth: f.client_cert_auth,
        auto_tls: f.auto_tls,
    };
    let peer = TlsFlags {
        cert_file: path(&f.peer_cert_file),
        key_file: path(&f.peer_key_file),
        trusted_ca_file: path(&f.peer_trusted_ca_file),
        client_cert_auth: f.peer_client_cert_auth,
        auto_tls: f.peer_auto_tls,
    };
    (client, peer)
}

/// etcd's refusals of `https://` listeners without certificates, in its words.
fn check_tls(
    listen_client: &[(String, SocketAddr)],
    client: &TlsFlags,
    listen_peer: &[(String, SocketAddr)],
    peer: &TlsFlags,
    listen_metrics: &[(String, SocketAddr)],
) -> Result<(), ConfigError> {
    for (url, _) in listen_client {
        if is_https(url) && !client.has_certificate() {
            return Err(ConfigError::Tls(format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
            )));
        }
    }
    for (url, addr) in listen_peer {
        if is_https(url) && !peer.has_certificate() {
            return Err(ConfigError::Tls(format!(
                "cannot listen on TLS for {addr}: KeyFile and CertFile are not presented"
            )));
        }
    }
    if let Some((url, _)) = listen_metrics.iter().find(|(u, _)| is_https(u)) {
        return Err(ConfigError::BadUrl {
            flag: "listen-metrics-urls",
            url: url.clone(),
            reason: "TLS is not supported on the metrics URLs; use http".into(),
        });
    }
    Ok(())
}

/// etcd's warnings for TLS flags that an `http://` URL ignores, and for auto TLS beside
/// given certificates.
fn tls_notices(urls: &[(String, SocketAddr)], tls: &TlsFlags, peer: bool) -> Vec<Notice> {
    let side = if peer { "peer" } else { "client" };
    let auth_flag = if peer {
        "--peer-client-cert-auth"
    } else {
        "--client-cert-auth"
    };
    let mut out = Vec::new();
    for (url, _) in urls.iter().filter(|(u, _)| !is_https(u)) {
        if !tls.is_empty() {
            out.push(Notice::warn(format!(
                "scheme is HTTP while key and cert files are present; ignoring key and cert files ({side}-url {url})"
            )));
        }
        if tls.client_cert_auth {
            out.push(Notice::warn(format!(
                "scheme is HTTP while {auth_flag} is enabled; ignoring client cert auth for this URL ({side}-url {url})"
            )));
        }
    }
    if tls.auto_tls && !tls.is_empty() {
        out.push(Notice::warn(format!(
            "ignoring {side} auto TLS since certs given"
        )));
    }
    out
}

/// `--auth-token`: etcd's `type[,option=value...]`. minietcd serves etcd's "simple" tokens;
/// JWT tokens are refused with one line, anything else as etcd refuses it.
fn check_auth_token(opts: &str) -> Result<(), ConfigError> {
    let kind = opts.split(',').next().unwrap_or_default();
    match kind {
        "simple" => Ok(()),
        "jwt" => Err(ConfigError::BadValue {
            flag: "auth-token",
            reason: "jwt tokens are not supported by minietcd; use 'simple'".into(),
        }),
        other => Err(ConfigError::BadValue {
            flag: "auth-token",
            reason: format!("unknown token type {other:?} (etcd's: simple, jwt)"),
        }),
    }
}

/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep the history of the last duration.
    Periodic(Duration),
    /// Keep the last N revisions.
    Revision(i64),
}

/// etcd 3.4's `parseCompactionRetention`: a non-negative integer is hours (periodic) or
/// revisions (revision); anything else is a Go duration (which revision mode then reads as a
/// count of nanoseconds, as etcd does). Zero turns auto compaction off.
fn auto_compaction(
    mode: flags::AutoCompactionMode,
    retention: &str,
) -> Result<Option<AutoCompaction>, ConfigError> {
    let periodic = mode == flags::AutoCompactionMode::Periodic;
    let parsed = match retention.parse::<i64>() {
        Ok(n) if n >= 0 && periodic => {
            AutoCompaction::Periodic(Duration::from_secs(n.unsigned_abs().saturating_mul(3600)))
        }
        Ok(n) if n >= 0 => AutoCompaction::Revision(n),
        _ => {
            let d = parse_go_duration(retention).map_err(|e| ConfigError::BadValue {
                flag: "auto-compaction-retention",
                reason: format!("error parsing CompactionRetention: {e}"),
            })?;
            if periodic {
                AutoCompaction::Periodic(d)
            } else {
                AutoCompaction::Revision(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            }
        }
    };
    Ok(match parsed {
        AutoCompaction::Periodic(d) if d.is_zero() => None,
        AutoCompaction::Revision(0) => None,
        a => Some(a),
    })
}

/// Applies `flags::STATUS` to the values given: a refused flag set to anything but its
/// default is an error; a flag without effect set so is a warning.
fn check_status(m: &clap::ArgMatches, notices: &mut Vec<Notice>) -> Result<(), ConfigError> {
    let cmd = sources::command();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let Some(&(name, status, why)) = flags::STATUS.iter().find(|(n, _, _)| *n == long) else {
            continue;
        };
        let id = arg.get_id().as_str();
        if !matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let join = |v: Vec<&std::ffi::OsStr>| {
            v.iter()
                .map(|s| s.to_string_lossy())
                .collect::<Vec<_>>()
                .join(",")
        };
        let given = join(m.get_raw(id).map(|r| r.collect()).unwrap_or_default());
        let default = join(
            arg.get_default_values()
                .iter()
                .map(|v| v.as_os_str())
                .collect(),
        );
        if given == default {
            continue;
        }
        match status {
            Status::Implemented => {}
            Status::NoEffect => notices.push(Notice::warn(format!(
                "--{name}={given} has no effect: {why}"
            ))),
            Status::Refused => {
                return Err(ConfigError::Refused {
                    flag: name,
                    value: given,
                    why,
                })
            }
        }
    }
    Ok(())
}

/// The lease checkpoint interval when checkpoints are on.
fn lease_checkpoint_interval(on: bool, every: Duration) -> Result<Option<Duration>, ConfigError> {
    if on && every.is_zero() {
        return Err(ConfigError::BadValue {
            flag: "experimental-lease-checkpoint-interval",
            reason: "must be positive".into(),
        });
    }
    Ok(on.then_some(every))
}

/// A comma-separated flag's values, blanks dropped.
fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// `--cors`: `*` or URLs with a host and port, as etcd's flag checks them.
fn parse_cors(s: &str) -> Result<Vec<String>, ConfigError> {
    let list = split_list(s);
    for v in list.iter().filter(|v| *v != "*") {
        let bad = |why: &str| ConfigError::BadValue {
            flag: "cors",
            reason: format!("invalid value {s:?}: {why}: {v}"),
        };
        let u = url::Url::parse(v)
            .map_err(|_| bad("URL address does not have the form \"host:port\""))?;
        if !matches!(u.scheme(), "http" | "https" | "unix" | "unixs") {
            return Err(bad("URL scheme must be http, https, unix, or unixs"));
        }
        if !matches!(u.path(), "" | "/") || v.ends_with('/') {
            return Err(bad("URL must not contain a path"));
        }
        let authority = v.split_once("://").map_or("", |(_, rest)| rest);
        if u.host_str().is_none() || !authority.contains(':') {
            return Err(bad("URL address does not have the form \"host:port\""));
        }
    }
    Ok(list)
}

/// `--log-outputs`: comma-separated stderr, stdout, default (stderr) or file paths.
fn parse_log_outputs(s: &str) -> Result<Vec<LogOutput>, ConfigError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let o = match part {
            "default" | "stderr" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            path => LogOutput::File(PathBuf::from(path)),
        };
        if !out.contains(&o) {
            out.push(o);
        }
    }
    if out.is_empty() {
        return Err(ConfigError::BadValue {
            flag: "log-outputs",
            reason: "no output given".into(),
        });
    }
    Ok(out)
}

/// Go durations as etcd's flags take them; shared with minietcdctl through the client crate.
pub use minietcd_client::parse_go_duration;

/// etcd's member id: the first 8 bytes of SHA-1(sorted peer URLs joined, then the token).
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

/// etcd's cluster id derived from its member ids.
pub fn cluster_id(ids: impl IntoIterator<Item = u64>) -> u64 {
    let mut ids: Vec<u64> = ids.into_iter().collect();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// Parses a comma-separated list of `http(s)://host:port` URLs into (normalised URL,
/// address).
fn parse_urls(flag: &'static str, s: &str) -> Result<Vec<(String, SocketAddr)>, ConfigError> {
    let mut out = Vec::new();
    for raw in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let bad = |reason: &str| ConfigError::BadUrl {
            flag,
            url: raw.to_string(),
            reason: reason.to_string(),
        };
        let u = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        match u.scheme() {
            "http" | "https" => {}
            other => {
                return Err(bad(&format!(
                    "unsupported scheme {other:?}; use http or https"
                )))
            }
        }
        if u.path() != "/" && !u.path().is_empty() {
            return Err(bad("a URL must not have a path"));
        }
        let host = u.host_str().ok_or_else(|| bad("missing host"))?;
        let port = u.port().ok_or_else(|| bad("missing port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = if host == "localhost" {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            host.parse()
                .map_err(|_| bad("host must be an IP address or localhost"))?
        };
        out.push((
            format!("{}://{}", u.scheme(), host_port(&u, port)),
            SocketAddr::new(ip, port),
        ));
    }
    if out.is_empty() {
        return Err(ConfigError::BadUrl {
            flag,
            url: s.to_string(),
            reason: "no URL given".into(),
        });
    }
    Ok(out)
}

fn host_port(u: &url::Url, port: u16) -> String {
    match u.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]:{port}"),
        Some(h) => format!("{h}:{port}"),
        None => format!(":{port}"),
    }
}

/// Parses `name=url,name=url,...`; a name may appear several times (several peer URLs).
/// The initial cluster a restored snapshot starts (`snapshot restore`'s flags, as the
/// member's own flags give it on start): member id -> member, and this member's id. The same
/// parsing and checks as a member's start, so the ids agree with the ones it will compute.
pub fn restore_membership(
    name: &str,
    initial_cluster: &str,
    advertise_peer_urls: &str,
    token: &str,
) -> Result<(u64, BTreeMap<u64, InitialMember>), ConfigError> {
    let mut mine: Vec<String> = parse_urls("initial-advertise-peer-urls", advertise_peer_urls)?
        .into_iter()
        .map(|u| u.0)
        .collect();
    mine.sort();
    let members = parse_initial_cluster(initial_cluster, token)?;
    let (id, m) = members
        .iter()
        .find(|(_, m)| m.name == name)
        .ok_or_else(|| {
            ConfigError::BadInitialCluster(format!("does not name this member {name:?}"))
        })?;
    let mut theirs = m.peer_urls.clone();
    theirs.sort();
    if theirs != mine {
        return Err(ConfigError::BadInitialCluster(format!(
            "{name:?} has peer URLs {} but --initial-advertise-peer-urls is {}",
            theirs.join(","),
            mine.join(",")
        )));
    }
    Ok((*id, members))
}

fn parse_initial_cluster(
    s: &str,
    token: &str,
) -> Result<BTreeMap<u64, InitialMember>, ConfigError> {
    let mut by_name: Vec<InitialMember> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            ConfigError::BadInitialCluster(format!("{part:?} is not name=peerURL"))
        })?;
        if name.is_empty() {
            return Err(ConfigError::BadInitialCluster(format!(
                "{part:?} has an empty name"
            )));
        }
        let urls = parse_urls("initial-cluster", url)?;
        match by_name.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.extend(urls.into_iter().map(|u| u.0)),
            None => by_name.push(InitialMember {
                name: name.to_string(),
                peer_urls: urls.into_iter().map(|u| u.0).collect(),
            }),
        }
    }
    if by_name.is_empty() {
        return Err(ConfigError::BadInitialCluster("no member given".into()));
    }
    let mut out = BTreeMap::new();
    for m in by_name {
        let id = member_id(&m.peer_urls, token);
        if let Some(other) = out.insert(id, m.clone()) {
            return Err(ConfigError::BadInitialCluster(format!(
                "members {:?} and {:?} have the same peer URLs",
                other.name, m.name
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let m = sources::command()
            .try_get_matches_from(std::iter::once("minietcd").chain(args.iter().copied()))
            .unwrap();
        Flags::from_arg_matches(&m).unwrap()
    }

    #[test]
    fn default_ids_match_etcd() {
        // A default `etcd` (name "default", peer http://localhost:2380, token etcd-cluster)
        // reports member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let id = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id([id])), "cdf818194e3a8c32");
    }

    #[test]
    fn defaults_make_a_one_node_cluster() {
        let c = Config::from_flags(flags(&[])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("default.minietcd"));
        assert_eq!(
            c.listen_client_addrs,
            vec!["127.0.0.1:2379".parse().unwrap()]
        );
        assert_eq!(c.initial_cluster.len(), 1);
        assert_eq!(c.initial_cluster[&c.member_id].name, "default");
    }

    #[test]
    fn three_member_cluster() {
        let c = Config::from_flags(flags(&[
            "--name",
            "infra2",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:22380",
            "--initial-cluster",
            "infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380",
        ]))
        .unwrap();
        assert_eq!(c.initial_cluster.len(), 3);
        assert_eq!(c.initial_cluster[&c.member_id].name, "infra2");
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for (args, want) in [
            (
                vec!["--listen-client-urls", "localhost:2379"],
                "listen-client-urls",
            ),
            (
                vec!["--listen-client-urls", "https://127.0.0.1:2379"],
                "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme",
            ),
            (
                vec![
                    "--listen-peer-urls",
                    "https://127.0.0.1:2380",
                    "--initial-advertise-peer-urls",
                    "https://127.0.0.1:2380",
                ],
                "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented",
            ),
            (
                vec!["--listen-client-urls", "unix://a:1"],
                "unsupported scheme",
            ),
            (
                vec!["--listen-peer-urls", "http://127.0.0.1"],
                "missing port",
            ),
            (
                vec!["--initial-cluster", "other=http://127.0.0.1:2380"],
                "does not name",
            ),
            (vec!["--initial-cluster", "garbage"], "name=peerURL"),
            (vec!["--election-timeout", "100"], "election-timeout"),
        ] {
            let e = Config::from_flags(flags(&args)).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, SourceError> {
        Config::load(
            std::iter::once("minietcd")
                .chain(args.iter().copied())
                .map(OsString::from),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn err(args: &[&str], env: &[(&str, &str)]) -> String {
        match load(args, env) {
            Ok(_) => panic!("{args:?} {env:?} should fail"),
            Err(SourceError::Clap(e)) => e.to_string(),
            Err(SourceError::Config(e)) => e.to_string(),
        }
    }

    #[test]
    fn every_flag_has_a_status_and_etcds_flags_are_all_there() {
        let cmd = sources::command();
        let longs: Vec<&str> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !matches!(*l, "help" | "version"))
            .collect();
        for l in &longs {
            assert!(flags::status(l).is_some(), "--{l} has no entry in STATUS");
        }
        for (name, _, _) in flags::STATUS {
            assert!(
                longs.contains(name),
                "STATUS names --{name}, which is no flag"
            );
        }
        // `etcd --help` (3.4.23) lists 80 flags besides --config-file; minietcd adds two.
        assert_eq!(longs.len(), 1 + 80 + 2);
    }

    #[test]
    fn cors_takes_urls_with_a_port_or_star() {
        let c = load(
            &[
                "--cors=http://a.example:80, https://b:443",
                "--host-whitelist=localhost,*",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.cors, vec!["http://a.example:80", "https://b:443"]);
        assert_eq!(c.host_whitelist, vec!["localhost", "*"]);
        assert!(c.notices.is_empty(), "{:?}", c.notices);
        assert!(load(&["--cors=*"], &[]).is_ok());
        for (v, want) in [
            ("http://a.example", "does not have the form \"host:port\""),
            ("ftp://a:1", "URL scheme must be http"),
            ("http://a:1/x", "must not contain a path"),
        ] {
            let e = err(&[&format!("--cors={v}")], &[]);
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn docs_list_every_flag() {
        let docs = include_str!("../docs/flags.md");
        for (name, _, _) in flags::STATUS {
            assert!(
                docs.contains(&format!("`--{name}`")),
                "docs/flags.md misses --{name}"
            );
        }
    }

    #[test]
    fn env_variables_set_flags_and_conflicts_are_refused() {
        let c = load(
            &["--initial-advertise-peer-urls", "http://127.0.0.1:22380"],
            &[
                ("ETCD_NAME", "infra2"),
                ("ETCD_DATA_DIR", "/tmp/x"),
                ("ETCD_INITIAL_CLUSTER", "infra2=http://127.0.0.1:22380"),
                ("ETCD_ENABLE_V2", "false"),
                ("ETCD_NO_SUCH", "1"),
                ("ETCDCTL_API", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.name, "infra2");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert!(c
            .notices
            .iter()
            .any(|n| n.warn && n.message == "unrecognized environment variable ETCD_NO_SUCH=1"));
        assert!(!c.notices.iter().any(|n| n.message.contains("ETCDCTL")));
        let e = err(&["--name", "a"], &[("ETCD_NAME", "b")]);
        assert!(
            e.contains("conflicting environment variable \"ETCD_NAME\""),
            "{e}"
        );
    }

    #[test]
    fn booleans_take_gos_syntax_and_single_dashes_work() {
        let c = load(&["-name=x", "--enable-v2=false", "--debug"], &[]).unwrap();
        assert_eq!(c.name, "x");
        assert_eq!(c.log_level, LogLevel::Debug);
        let e = err(&["--enable-v2", "false"], &[]);
        assert!(e.contains("unexpected argument 'false'"), "{e}");
        let e = err(&["--enable-v2"], &[]);
        assert!(e.contains("--enable-v2=true is refused: the v2 API"), "{e}");
        let e = err(&["--strict-reconfig-check=maybe"], &[]);
        assert!(e.contains("invalid boolean"), "{e}");
    }

    #[test]
    fn each_class_of_flag() {
        // Implemented.
        let c = load(
            &[
                "--max-concurrent-streams=10",
                "--grpc-keepalive-interval=0",
                "--grpc-keepalive-timeout=3s",
                "--wal-dir=/tmp/w",
                "--logger=zap",
                "--log-outputs=stdout,stderr,/tmp/log",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.max_concurrent_streams, 10);
        assert_eq!(c.grpc_keepalive_interval, None);
        assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(3));
        assert_eq!(c.wal_dir, Some(PathBuf::from("/tmp/w")));
        assert_eq!(c.logger, Logger::Zap);
        assert_eq!(
            c.log_outputs,
            vec![
                LogOutput::Stdout,
                LogOutput::Stderr,
                LogOutput::File("/tmp/log".into())
            ]
        );
        assert!(c.notices.is_empty(), "{:?}", c.notices);
        // No effect: a warning each, not at their defaults.
        let c = load(
            &[
                "--max-wals=3",
                "--max-snapshots=5",
                "--backend-batch-limit=10",
                "--experimental-backend-bbolt-freelist-type=map",
                "--log-package-levels=etcdserver=DEBUG",
                "--enable-pprof",
            ],
            &[],
        )
        .unwrap();
        let warned: Vec<&str> = c.notices.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(warned.len(), 5, "{warned:?}");
        assert!(
            warned[0].starts_with("--max-wals=3 has no effect: "),
            "{warned:?}"
        );
        // Refused, one line each; their defaults are fine.
        for (args, want) in [
            (vec!["--proxy=on"], "--proxy=on is refused"),
            (vec!["--proxy", "readonly"], "--proxy=readonly is refused"),
            (
                vec!["--discovery=https://discovery.etcd.io/x"],
                "--discovery=",
            ),
            (vec!["--discovery-srv=example.com"], "--discovery-srv="),
            (vec!["--peer-crl-file=/c.pem"], "revocation lists"),
            (vec!["--experimental-enable-v2v3=/v2"], "v2 API"),
        ] {
            let e = err(&args, &[]);
            assert!(e.contains(want), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        load(
            &[
                "--proxy=off",
                "--enable-v2=false",
                "--cert-file=",
                "--discovery=",
            ],
            &[],
        )
        .unwrap();
    }

    #[test]
    fn tls_flags_on_http_urls_are_ignored_with_etcds_warnings() {
        let c = load(
            &[
                "--cert-file=/a.pem",
                "--key-file=/a-key.pem",
                "--client-cert-auth",
                "--peer-auto-tls",
            ],
            &[],
        )
        .unwrap();
        let warned: Vec<&str> = c.notices.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(warned[0].starts_with("scheme is HTTP while key and cert files are present"));
        assert!(
            warned[1].contains("--client-cert-auth is enabled"),
            "{warned:?}"
        );
        assert_eq!(c.client_tls.cert_file, Some(PathBuf::from("/a.pem")));
        assert!(c.peer_tls.auto_tls);
        assert_eq!(c.listen_client_secure, vec![false]);
        // https URLs with certificates (or auto TLS) are accepted.
        let c = load(
            &[
                "--listen-client-urls=https://127.0.0.1:2379",
                "--advertise-client-urls=https://127.0.0.1:2379",
                "--auto-tls",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.listen_client_secure, vec![true]);
        assert_eq!(c.advertise_client_urls, vec!["https://127.0.0.1:2379"]);
    }

    #[test]
    fn config_file_wins_over_flags_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.yml");
        std::fs::write(
            &path,
            "name: fromfile\n\
             data-dir: /tmp/fromfile\n\
             listen-client-urls: http://127.0.0.1:41379\n\
             initial-advertise-peer-urls: http://127.0.0.1:41380\n\
             initial-cluster: fromfile=http://127.0.0.1:41380\n\
             heartbeat-interval: 50\n\
             election-timeout: 500\n\
             enable-v2: false\n\
             grpc-keepalive-timeout: 3000000000\n\
             log-outputs: [stdout]\n\
             wal-dir:\n\
             strange-key: 1\n\
             client-transport-security:\n  cert-file:\n  client-cert-auth: false\n\
             peer-transport-security:\n  auto-tls: false\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = load(
            &["--config-file", file, "--name", "other"],
            &[("ETCD_ELECTION_TIMEOUT", "5000")],
        )
        .unwrap();
        assert_eq!(c.name, "fromfile");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/fromfile"));
        assert_eq!((c.heartbeat_interval_ms, c.election_timeout_ms), (50, 500));
        assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(3));
        assert_eq!(c.log_outputs, vec![LogOutput::Stdout]);
        assert_eq!(c.wal_dir, None);
        assert!(c.notices.iter().any(|n| n.message.contains("strange-key")));
        // ETCD_CONFIG_FILE too.
        let c = load(&[], &[("ETCD_CONFIG_FILE", file)]).unwrap();
        assert_eq!(c.name, "fromfile");
        // Nested TLS keys are the flags they stand for.
        std::fs::write(
            &path,
            "peer-transport-security:\n  cert-file: /p.pem\n  key-file: /k.pem\n",
        )
        .unwrap();
        let c = load(&["--config-file", file], &[]).unwrap();
        assert_eq!(c.peer_tls.cert_file, Some(PathBuf::from("/p.pem")));
        assert_eq!(c.peer_tls.key_file, Some(PathBuf::from("/k.pem")));
        assert_eq!(c.client_tls, TlsFlags::default());
        std::fs::write(&path, "name: [unclosed\n").unwrap();
        let e = err(&["--config-file", file], &[]);
        assert!(e.starts_with(&format!("--config-file {file}: ")), "{e}");
    }

    #[test]
    fn auto_compaction_retention_as_etcd_parses_it() {
        let mode = |args: &[&str]| load(args, &[]).unwrap().auto_compaction;
        assert_eq!(mode(&[]), None);
        assert_eq!(
            mode(&["--auto-compaction-retention=2"]),
            Some(AutoCompaction::Periodic(Duration::from_secs(7200)))
        );
        assert_eq!(
            mode(&["--auto-compaction-retention=90s"]),
            Some(AutoCompaction::Periodic(Duration::from_secs(90)))
        );
        assert_eq!(
            mode(&[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=1000"
            ]),
            Some(AutoCompaction::Revision(1000))
        );
        assert_eq!(
            mode(&[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=0"
            ]),
            None
        );
        let e = err(&["--auto-compaction-retention=soon"], &[]);
        assert!(e.contains("error parsing CompactionRetention"), "{e}");
        let e = err(&["--auto-compaction-mode=weekly"], &[]);
        assert!(e.contains("weekly"), "{e}");
    }
}
