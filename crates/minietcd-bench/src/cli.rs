//! Command-line flags, named and defaulted as in etcd's `tools/benchmark` so that a command
//! line written for one tool runs with the other.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A low-level benchmark for etcd v3 servers (etcd or minietcd); it speaks raw gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "minietcd-bench", version, about)]
pub struct Cli {
    /// gRPC endpoints, comma separated (`host:port` or `http://host:port`).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Total number of gRPC connections (HTTP/2 channels), spread over the endpoints.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Total number of concurrent workers, sharing the connections round-robin.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Connect only to the leader (found with Maintenance.Status on every endpoint).
    #[arg(long, global = true)]
    pub target_leader: bool,
    /// Read consistency for `range`: l (linearizable) or s (serializable).
    #[arg(long, global = true, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Connection timeout in milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    pub dial_timeout_ms: u64,
    /// Threads of the client's async runtime. One (the default) costs the least CPU per request
    /// (no cross-thread wake-ups); the report says when that thread was nearly saturated.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub client_threads: u16,
    /// Print the report as JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Also print, every this many milliseconds of a request loop, one JSON line on stderr
    /// with that interval's requests and latency percentiles: a timeline of a load while
    /// something else happens on the servers (0: none).
    #[arg(long, global = true, default_value_t = 0)]
    pub interval_ms: u64,
    /// Output format, as etcd's benchmark spells it (`--output json` = `--json`).
    #[arg(long, global = true, value_enum)]
    pub output: Option<OutputFormat>,
    /// The workload.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether the report goes out as JSON.
    pub fn wants_json(&self) -> bool {
        self.json || self.output == Some(OutputFormat::Json)
    }
}

/// Machine-readable output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The report as one JSON document.
    Json,
}

/// Read consistency of a range request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable: the server confirms leadership (read index) before reading.
    L,
    /// Serializable: the member answers from its local store.
    S,
}

/// The workloads.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Put keys: write throughput and latency.
    Put(PutArgs),
    /// Range requests on KEY (or [KEY, END)): read throughput and latency.
    Range(RangeArgs),
    /// Txn requests of --txn-ops puts each.
    TxnPut(TxnPutArgs),
    /// Time from a put's acknowledgement to the arrival of its event at every watcher.
    WatchLatency(WatchLatencyArgs),
    /// Many watchers: creation rate, then event fan-out throughput.
    Watch(WatchArgs),
    /// LeaseKeepAlive round trips on one stream per client.
    LeaseKeepalive(LeaseKeepaliveArgs),
}

impl Command {
    /// The subcommand's name as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put(_) => "put",
            Command::Range(_) => "range",
            Command::TxnPut(_) => "txn-put",
            Command::WatchLatency(_) => "watch-latency",
            Command::Watch(_) => "watch",
            Command::LeaseKeepalive(_) => "lease-keepalive",
        }
    }
}

/// Flags of `put`.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Total number of put requests.
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Use sequential keys (0, 1, 2, ... modulo the key space) instead of random ones.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Maximum requests per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// Flags of `range`.
#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    /// The key to read (with --from-key, an empty key starts at the first key).
    pub key: String,
    /// End of the range (exclusive); absent reads the single key.
    pub end: Option<String>,
    /// Total number of range requests.
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum requests per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Maximum number of key-values in each response (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Ask only for the number of matching keys, not the key-values.
    #[arg(long)]
    pub count_only: bool,
    /// Read every key from KEY on (etcdctl's `get --from-key`); END must then be absent.
    #[arg(long, conflicts_with = "end")]
    pub from_key: bool,
}

/// Flags of `txn-put`.
#[derive(Debug, Clone, Args)]
pub struct TxnPutArgs {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Total number of txn requests.
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Puts per txn (distinct keys).
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Maximum requests per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// Flags of `watch-latency`.
#[derive(Debug, Clone, Args)]
pub struct WatchLatencyArgs {
    /// Watch streams (spread over the connections).
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers on each stream, all on the same key.
    #[arg(long, default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// Puts to the watched key.
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Puts per second (0 = unlimited).
    #[arg(long, default_value_t = 100)]
    pub put_rate: u64,
    /// Key size in bytes.
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Value size in bytes (at least 8: the value carries the put's sequence number).
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
    /// Ask for the previous key-value in every event.
    #[arg(long)]
    pub prevkv: bool,
}

/// Flags of `watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Watch streams (spread over the connections).
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers created on each stream.
    #[arg(long, default_value_t = 100)]
    pub watch_per_stream: usize,
    /// Distinct watched keys; watcher i watches key i modulo this.
    #[arg(long, default_value_t = 1)]
    pub watched_key_total: usize,
    /// Puts spread over the watched keys (by --clients workers).
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Puts per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub put_rate: u64,
    /// Key size in bytes.
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Value size in bytes (at least 8: the value carries the put's sequence number).
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
}

/// Flags of `lease-keepalive`.
#[derive(Debug, Clone, Args)]
pub struct LeaseKeepaliveArgs {
    /// Total number of keep-alive round trips.
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum keep-alives per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_style_command_line_parses() {
        let cli = Cli::try_parse_from([
            "minietcd-bench",
            "--endpoints=127.0.0.1:2379,127.0.0.1:22379",
            "--conns=10",
            "--clients=100",
            "put",
            "--key-size=8",
            "--sequential-keys",
            "--total=100000",
            "--val-size=256",
            "--key-space-size=1000",
        ])
        .expect("parses");
        assert_eq!(cli.endpoints.len(), 2);
        assert_eq!((cli.conns, cli.clients), (10, 100));
        let Command::Put(p) = cli.command else {
            panic!("not put")
        };
        assert_eq!((p.val_size, p.total, p.key_space_size), (256, 100000, 1000));
        assert!(p.sequential_keys);
    }

    #[test]
    fn consistency_is_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "minietcd-bench",
            "range",
            "foo",
            "--consistency=s",
            "--total=5",
        ])
        .expect("parses");
        assert_eq!(cli.consistency, Consistency::S);
        let Command::Range(r) = cli.command else {
            panic!("not range")
        };
        assert_eq!((r.key.as_str(), r.end, r.total), ("foo", None, 5));
        assert_eq!((r.limit, r.count_only, r.from_key), (0, false, false));
    }

    #[test]
    fn range_takes_limit_count_only_and_from_key() {
        let cli = Cli::try_parse_from([
            "minietcd-bench",
            "range",
            "",
            "--from-key",
            "--limit=10000",
            "--count-only",
        ])
        .expect("parses");
        let Command::Range(r) = cli.command else {
            panic!("not range")
        };
        assert_eq!((r.limit, r.count_only, r.from_key), (10000, true, true));
        assert!(
            Cli::try_parse_from(["minietcd-bench", "range", "a", "b", "--from-key"]).is_err(),
            "--from-key with an END is ambiguous"
        );
    }

    #[test]
    fn json_is_asked_for_either_way() {
        let plain = Cli::try_parse_from(["minietcd-bench", "put"]).expect("parses");
        let short = Cli::try_parse_from(["minietcd-bench", "--json", "put"]).expect("parses");
        let etcd = Cli::try_parse_from(["minietcd-bench", "put", "--output=json"]).expect("parses");
        assert!(!plain.wants_json());
        assert!(short.wants_json());
        assert!(etcd.wants_json());
    }

    #[test]
    fn unknown_consistency_is_rejected() {
        assert!(Cli::try_parse_from(["minietcd-bench", "--consistency=x", "range", "k"]).is_err());
    }
}
