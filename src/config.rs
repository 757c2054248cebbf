//! Command-line flags (etcd's names) and their validation into a [`Config`], done once at
//! start so that the rest of the node never sees a malformed value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use sha1::{Digest, Sha1};

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
    /// Another flag holds a value out of range.
    #[error("--{flag}: {reason}")]
    BadValue { flag: &'static str, reason: String },
}

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

/// minietcd's flags: etcd's names and defaults, except that the data dir is `NAME.minietcd`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "minietcd",
    version,
    about = "An etcd-compatible, Raft-replicated key-value store"
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: NAME.minietcd).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub listen_client_urls: String,
    /// This member's client URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub advertise_client_urls: String,
    /// Extra URLs to serve `/metrics` and `/health` on (comma-separated; etcd's flag of the
    /// same name). The client URLs serve them too.
    #[arg(long, default_value = "")]
    pub listen_metrics_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping: name=peerURL,...
    /// (default: NAME=INITIAL-ADVERTISE-PEER-URLS).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Initial cluster state.
    #[arg(long, value_enum, default_value = "new")]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token, mixed into member ids so that clusters do not mistake each other.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Entries kept in the log after a snapshot so that a slow follower catches up from the
    /// log (etcd 3.5's flag of the same name; etcd 3.4 fixes it at 5000).
    #[arg(long, default_value_t = 5000)]
    pub experimental_snapshot_catchup_entries: u64,
    /// Duration of periodic watch progress notifications (Go syntax: 10m, 1s, 200ms).
    #[arg(long, default_value = "10m", value_parser = parse_go_duration)]
    pub experimental_watch_progress_notify_interval: std::time::Duration,
    /// Log level.
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: LogLevel,
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// `--name` of the member.
    pub name: String,
    /// Its peer URLs, normalised (`http://host:port`).
    pub peer_urls: Vec<String>,
}

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
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`.
    pub snapshot_catchup_entries: u64,
    pub progress_notify_interval_ms: u64,
    pub log_level: LogLevel,
}

impl Config {
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
        let member_id = initial_cluster
            .iter()
            .find(|(_, m)| m.name == f.name)
            .map(|(id, m)| (*id, m))
            .ok_or_else(|| {
                ConfigError::BadInitialCluster(format!("does not name this member {:?}", f.name))
            })
            .and_then(|(id, m)| {
                let mut a = m.peer_urls.clone();
                let mut b = mine.clone();
                a.sort();
                b.sort();
                if a == b {
                    Ok(id)
                } else {
                    Err(ConfigError::BadInitialCluster(format!(
                        "{:?} has peer URLs {} but --initial-advertise-peer-urls is {}",
                        f.name,
                        a.join(","),
                        b.join(",")
                    )))
                }
            })?;
        Ok(Config {
            data_dir: f
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.minietcd", f.name))),
            name: f.name,
            listen_client_addrs: listen_client.iter().map(|u| u.1).collect(),
            advertise_client_urls: advertise_client.into_iter().map(|u| u.0).collect(),
            listen_peer_addrs: listen_peer.iter().map(|u| u.1).collect(),
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
            snapshot_count: f.snapshot_count,
            snapshot_catchup_entries: f.experimental_snapshot_catchup_entries,
            progress_notify_interval_ms: f.experimental_watch_progress_notify_interval.as_millis()
                as u64,
            log_level: f.log_level,
        })
    }

    /// etcd's cluster id: the first 8 bytes of the SHA-1 of the sorted member ids.
    pub fn cluster_id(&self) -> u64 {
        cluster_id(self.initial_cluster.keys().copied())
    }
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

/// Parses a comma-separated list of `http://host:port` URLs into (normalised URL, address).
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
            "http" => {}
            "https" | "unixs" => return Err(bad("TLS is not supported; use http")),
            other => return Err(bad(&format!("unsupported scheme {other:?}; use http"))),
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
            format!("http://{}", host_port(&u, port)),
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
        Flags::try_parse_from(std::iter::once("minietcd").chain(args.iter().copied())).unwrap()
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
                "TLS",
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
