//! etcdctl's command line: global flags, commands and their flags (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::printer::Format;

/// Go duration syntax, as etcdctl's flags take it (`2s`, `500ms`, `1m30s`).
pub use minietcd_client::parse_go_duration as parse_duration;

#[derive(Parser)]
#[command(
    name = "minietcdctl",
    version,
    about = "A simple command line client for etcd3 (etcdctl compatible)"
)]
pub struct Cli {
    /// gRPC endpoints
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        env = "ETCDCTL_ENDPOINTS"
    )]
    pub endpoints: Vec<String>,
    /// dial timeout for client connections
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration, env = "ETCDCTL_DIAL_TIMEOUT")]
    pub dial_timeout: Duration,
    /// timeout for short running command (excluding dial timeout)
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration, env = "ETCDCTL_COMMAND_TIMEOUT")]
    pub command_timeout: Duration,
    /// set the output format (fields, json, simple, table)
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        value_enum,
        default_value = "simple",
        env = "ETCDCTL_WRITE_OUT"
    )]
    pub write_out: Format,
    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(
        long = "cacert",
        id = "tls_cacert",
        global = true,
        env = "ETCDCTL_CACERT"
    )]
    pub cacert: Option<PathBuf>,
    /// identify secure client using this TLS certificate file
    #[arg(long = "cert", id = "tls_cert", global = true, env = "ETCDCTL_CERT")]
    pub cert: Option<PathBuf>,
    /// identify secure client using this TLS key file
    // Named apart from the commands' `key` argument (clap ids are shared with globals).
    #[arg(long = "key", id = "tls_key", global = true, env = "ETCDCTL_KEY")]
    pub key: Option<PathBuf>,
    /// skip server certificate verification (CAUTION: this option should be enabled only for
    /// testing purposes)
    #[arg(long, global = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false,
          action = clap::ArgAction::Set, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
    /// disable transport security for client connections
    #[arg(long, global = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = true,
          action = clap::ArgAction::Set, env = "ETCDCTL_INSECURE_TRANSPORT")]
    pub insecure_transport: bool,
    /// username[:password] for authentication (prompt if password is not supplied)
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    pub user: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// etcdctl's TLS set-up: TLS when a certificate flag is given or
    /// `--insecure-transport=false`; then `--insecure-skip-tls-verify` skips verification.
    /// `None`: plaintext, except for `https://` endpoints (verified with the system's roots).
    pub fn tls(&self) -> Option<minietcd_client::tls::TlsOptions> {
        let files = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        if !files && self.insecure_transport {
            return None;
        }
        Some(minietcd_client::tls::TlsOptions {
            ca_file: self.cacert.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            insecure_skip_verify: self.insecure_skip_tls_verify,
        })
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Puts the given key into the store
    Put(PutArgs),
    /// Gets the key or a range of keys
    Get(GetArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(DelArgs),
    /// Txn processes all the requests in one transaction (read from stdin)
    Txn(TxnArgs),
    /// Watches events stream on keys or prefixes
    Watch(WatchArgs),
    /// Lease related commands
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Membership related commands
    #[command(subcommand)]
    Member(MemberCommand),
    /// Endpoint related commands
    Endpoint(EndpointArgs),
    /// Compacts the event history in etcd
    Compaction(CompactionArgs),
    /// Manages etcd node snapshots
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// User related commands
    #[command(subcommand)]
    User(crate::auth_cmd::UserCommand),
    /// Role related commands
    #[command(subcommand)]
    Role(crate::auth_cmd::RoleCommand),
    /// Enable or disable authentication
    #[command(subcommand)]
    Auth(crate::auth_cmd::AuthCommand),
    /// Alarm related commands
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(DefragArgs),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader {
        /// the transferee's member id, in hex
        #[arg(value_name = "TRANSFEREE_MEMBER_ID")]
        target: String,
    },
    /// commands for checking properties of the etcd cluster
    #[command(subcommand)]
    Check(CheckCommand),
}

#[derive(Subcommand)]
pub enum AlarmCommand {
    /// Disarms all alarms
    Disarm,
    /// Lists all alarms
    List,
}

#[derive(Args, Debug)]
pub struct DefragArgs {
    /// use all endpoints from the cluster member list
    #[arg(long)]
    pub cluster: bool,
}

#[derive(Subcommand)]
pub enum CheckCommand {
    /// Check the performance of the etcd cluster
    Perf(CheckPerfArgs),
}

#[derive(Args, Debug)]
pub struct CheckPerfArgs {
    /// The performance check's workload model. Accepted workloads: s(small), m(medium),
    /// l(large), xl(xLarge)
    #[arg(long, default_value = "s")]
    pub load: String,
    /// The prefix for writing the performance check's keys.
    #[arg(long, default_value = "/etcdctl-check-perf/")]
    pub prefix: String,
    /// Compact storage with last revision after test is finished.
    #[arg(long)]
    pub auto_compact: bool,
    /// Defragment storage after test is finished.
    #[arg(long)]
    pub auto_defrag: bool,
    /// How long the load runs instead of the model's 60s (for tests; not an etcdctl flag).
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    pub key: String,
    /// The value; read from stdin when missing.
    pub value: Option<String>,
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// return the previous key-value pair before modification
    #[arg(long)]
    pub prev_kv: bool,
    /// updates the key using its current value
    #[arg(long)]
    pub ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long)]
    pub ignore_lease: bool,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    pub key: String,
    pub range_end: Option<String>,
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Get only the keys
    #[arg(long)]
    pub keys_only: bool,
    /// Get only the count
    #[arg(long)]
    pub count_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long)]
    pub print_value_only: bool,
}

#[derive(Args, Debug)]
pub struct DelArgs {
    pub key: String,
    pub range_end: Option<String>,
    /// delete keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// return deleted key-value pairs
    #[arg(long)]
    pub prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
}

/// A txn op line: the put/get/del commands with their flags.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
pub enum TxnOpLine {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short, long)]
    pub interactive: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    pub key: Option<String>,
    pub range_end: Option<String>,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    pub prev_kv: bool,
    /// get periodic watch progress notification from server
    #[arg(long)]
    pub progress_notify: bool,
}

#[derive(Subcommand)]
pub enum LeaseCommand {
    /// Creates leases
    Grant { ttl: i64 },
    /// Revokes leases
    Revoke { id: String },
    /// Get lease information
    Timetolive {
        id: String,
        /// Get keys attached to this lease
        #[arg(long)]
        keys: bool,
    },
    /// List all active leases
    List,
    /// Keeps leases alive (renew)
    KeepAlive {
        id: String,
        /// Resets the keep-alive time to its original value and exits immediately
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Lists all members in the cluster
    List,
    /// Adds a member into the cluster
    Add {
        name: String,
        /// comma separated peer URLs for the new member
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
        /// indicates if the new member is raft learner
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster
    Remove { id: String },
}

/// `endpoint`: `--cluster` goes before or after the subcommand, as etcdctl's persistent flag.
#[derive(Args)]
pub struct EndpointArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, global = true)]
    pub cluster: bool,
    #[command(subcommand)]
    pub command: EndpointCommand,
}

#[derive(Subcommand)]
pub enum EndpointCommand {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health,
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status,
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv {
        /// maximum revision to hash (default: all revisions)
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

#[derive(Args, Debug)]
pub struct CompactionArgs {
    pub revision: i64,
    /// Wait for the compaction to be physically applied
    #[arg(long)]
    pub physical: bool,
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file
    Save { filename: String },
    /// Gets backend snapshot status of a given file
    Status { filename: String },
    /// Restores an etcd member snapshot to an etcd directory
    Restore(RestoreArgs),
}

/// `snapshot restore`'s flags (etcd's names and defaults).
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub filename: String,
    /// Path to the data directory
    #[arg(long, default_value = "")]
    pub data_dir: String,
    /// Path to the WAL directory (use --data-dir if none given)
    #[arg(long, default_value = "")]
    pub wal_dir: String,
    /// Initial cluster configuration for restore bootstrap
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Human-readable name for this member
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Ignore snapshot integrity hash value (required if copied from data directory)
    #[arg(long)]
    pub skip_hash_check: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5").is_err());
    }
}
