//! minietcdctl: etcdctl's command line (v3 API) on minietcd's own client, so scripts written
//! for etcdctl move over unchanged: same command names, flags, output (`-w simple|json`) and
//! exit codes.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[path = "minietcdctl/json.rs"]
mod json;
#[path = "minietcdctl/printer.rs"]
mod printer;
#[path = "minietcdctl/txn_input.rs"]
mod txn_input;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use minietcd::client::{
    Client, ClientError, ClientOptions, CompactOptions, DeleteOptions, GetOptions, LeaseOptions,
    MaintenanceOptions, MemberAddOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions,
};

use printer::{Format, KvStyle};

/// etcdctl's exit codes.
const EXIT_ERROR: u8 = 1;
const EXIT_INVALID_INPUT: u8 = 3;
const EXIT_BAD_FEATURE: u8 = 4;
const EXIT_INTERRUPTED: u8 = 5;
const EXIT_IO: u8 = 6;
const EXIT_BAD_ARGS: u8 = 128;

/// A failed command: what to print after `Error: ` and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Timeout(_) => Failure::new(EXIT_ERROR, "context deadline exceeded"),
            e => Failure::new(EXIT_ERROR, e.to_string()),
        }
    }
}

/// Parses Go durations as etcdctl's flags take them: `2s`, `500ms`, `1m30s`, `1.5s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(format!("missing unit in duration {s:?}"))?;
        let value: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[derive(Parser)]
#[command(
    name = "minietcdctl",
    version,
    about = "A simple command line client for etcd3 (etcdctl compatible)"
)]
struct Cli {
    /// gRPC endpoints
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        env = "ETCDCTL_ENDPOINTS"
    )]
    endpoints: Vec<String>,
    /// dial timeout for client connections
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration, env = "ETCDCTL_DIAL_TIMEOUT")]
    dial_timeout: Duration,
    /// timeout for short running command (excluding dial timeout)
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration, env = "ETCDCTL_COMMAND_TIMEOUT")]
    command_timeout: Duration,
    /// set the output format (simple, json)
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        value_enum,
        default_value = "simple",
        env = "ETCDCTL_WRITE_OUT"
    )]
    write_out: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Compacts the event history in etcd
    Compaction(CompactionArgs),
    /// Manages etcd node snapshots
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Args, Debug)]
struct PutArgs {
    key: String,
    /// The value; read from stdin when missing.
    value: Option<String>,
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    lease: String,
    /// return the previous key-value pair before modification
    #[arg(long)]
    prev_kv: bool,
    /// updates the key using its current value
    #[arg(long)]
    ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long)]
    ignore_lease: bool,
}

#[derive(Args, Debug)]
struct GetArgs {
    key: String,
    range_end: Option<String>,
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long, default_value = "")]
    sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0)]
    limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Get only the keys
    #[arg(long)]
    keys_only: bool,
    /// Get only the count
    #[arg(long)]
    count_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long)]
    print_value_only: bool,
}

#[derive(Args, Debug)]
struct DelArgs {
    key: String,
    range_end: Option<String>,
    /// delete keys with matching prefix
    #[arg(long)]
    prefix: bool,
    /// return deleted key-value pairs
    #[arg(long)]
    prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    from_key: bool,
}

/// A txn op line: the put/get/del commands with their flags.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
enum TxnOpLine {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

#[derive(Args, Debug)]
struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short, long)]
    interactive: bool,
}

#[derive(Args, Debug)]
struct WatchArgs {
    key: Option<String>,
    range_end: Option<String>,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    prev_kv: bool,
    /// get periodic watch progress notification from server
    #[arg(long)]
    progress_notify: bool,
}

#[derive(Subcommand)]
enum LeaseCommand {
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
enum MemberCommand {
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

#[derive(Subcommand)]
enum EndpointCommand {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health {
        /// use all endpoints from the cluster member list
        #[arg(long)]
        cluster: bool,
    },
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status {
        /// use all endpoints from the cluster member list
        #[arg(long)]
        cluster: bool,
    },
}

#[derive(Args, Debug)]
struct CompactionArgs {
    revision: i64,
    /// Wait for the compaction to be physically applied
    #[arg(long)]
    physical: bool,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file
    Save { filename: String },
}

/// Writes to stdout and flushes (watch and keep-alive print as they go).
fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Failure::new(EXIT_IO, e.to_string()))
}

fn emit_err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn parse_lease_id(s: &str) -> Result<i64, Failure> {
    u64::from_str_radix(s, 16).map(|v| v as i64).map_err(|e| {
        Failure::new(
            EXIT_BAD_ARGS,
            format!("bad lease ID arg ({e}), expecting ID in Hex"),
        )
    })
}

struct Ctx {
    endpoints: Vec<String>,
    options: ClientOptions,
    format: Format,
}

impl Ctx {
    async fn client(&self) -> Result<Client, Failure> {
        Client::connect(&self.endpoints, self.options.clone())
            .await
            .map_err(|e| match e {
                ClientError::Unavailable(msg) => {
                    Failure::new(EXIT_ERROR, format!("context deadline exceeded ({msg})"))
                }
                e => Failure::from(e),
            })
    }
}

fn put_op(a: &PutArgs) -> Result<(String, Vec<u8>, PutOptions), Failure> {
    let value = match &a.value {
        Some(v) => v.clone().into_bytes(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::new(EXIT_IO, e.to_string()))?;
            buf
        }
    };
    let mut opts = PutOptions::new();
    let lease = parse_lease_id(&a.lease)?;
    if lease != 0 {
        opts = opts.lease(lease);
    }
    if a.prev_kv {
        opts = opts.prev_kv();
    }
    if a.ignore_value {
        opts = opts.ignore_value();
    }
    if a.ignore_lease {
        opts = opts.ignore_lease();
    }
    Ok((a.key.clone(), value, opts))
}

fn get_op(a: &GetArgs, format: Format) -> Result<(String, GetOptions), Failure> {
    if a.print_value_only && format != Format::Simple {
        return Err(Failure::new(
            EXIT_BAD_ARGS,
            "print-value-only is only for `--write-out=simple`",
        ));
    }
    if a.prefix && a.from_key {
        return Err(Failure::new(
            EXIT_BAD_ARGS,
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut key = a.key.clone();
    let mut opts = GetOptions::new();
    match (&a.range_end, a.prefix, a.from_key) {
        (Some(_), true, _) => {
            return Err(Failure::new(
                EXIT_BAD_ARGS,
                "too many arguments, only accept one argument when `--prefix` is set.",
            ))
        }
        (Some(_), _, true) => {
            return Err(Failure::new(
                EXIT_BAD_ARGS,
                "too many arguments, only accept one argument when `--from-key` is set.",
            ))
        }
        (Some(end), false, false) => opts = opts.range_end(end.clone().into_bytes()),
        (None, true, _) | (None, _, true) if key.is_empty() => {
            key = "\0".into();
            opts = opts.from_key();
        }
        (None, true, _) => opts = opts.prefix(),
        (None, _, true) => opts = opts.from_key(),
        (None, false, false) => {}
    }
    match a.consistency.as_str() {
        "l" => {}
        "s" => opts = opts.serializable(),
        other => {
            return Err(Failure::new(
                EXIT_BAD_FEATURE,
                format!("unknown consistency flag {other:?}"),
            ))
        }
    }
    let order = match a.order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => {
            return Err(Failure::new(
                EXIT_BAD_FEATURE,
                format!("bad sort order {}", a.order),
            ))
        }
    };
    let target = match a.sort_by.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(Failure::new(
                EXIT_BAD_FEATURE,
                format!("bad sort target {}", a.sort_by),
            ))
        }
    };
    // clientv3's WithSort: ascending by key is the natural order, so it asks for no sort.
    let order = if target == SortTarget::Key && order == SortOrder::Ascend {
        SortOrder::None
    } else {
        order
    };
    opts = opts.sort(target, order).limit(a.limit).revision(a.rev);
    if a.keys_only {
        opts = opts.keys_only();
    }
    if a.count_only {
        opts = opts.count_only();
    }
    Ok((key, opts))
}

fn del_op(a: &DelArgs) -> Result<(String, DeleteOptions), Failure> {
    let mut key = a.key.clone();
    let mut opts = DeleteOptions::new();
    match (&a.range_end, a.prefix, a.from_key) {
        (Some(_), true, _) | (Some(_), _, true) => return Err(Failure::new(
            EXIT_BAD_ARGS,
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set.",
        )),
        (Some(end), false, false) => opts = opts.range_end(end.clone().into_bytes()),
        (None, true, _) | (None, _, true) if key.is_empty() => {
            key = "\0".into();
            opts = opts.from_key();
        }
        (None, true, _) => opts = opts.prefix(),
        (None, _, true) => opts = opts.from_key(),
        (None, false, false) => {}
    }
    if a.prev_kv {
        opts = opts.prev_kv();
    }
    Ok((key, opts))
}

fn txn_op(line: &str, format: Format) -> Result<TxnOp, Failure> {
    let invalid = || Failure::new(EXIT_INVALID_INPUT, format!("invalid txn request: {line}"));
    let words =
        txn_input::argify(line).map_err(|e| Failure::new(EXIT_INVALID_INPUT, e.to_string()))?;
    let parsed = TxnOpLine::try_parse_from(words).map_err(|_| invalid())?;
    Ok(match parsed {
        TxnOpLine::Put(a) => {
            if a.value.is_none() {
                return Err(invalid());
            }
            let (k, v, o) = put_op(&a)?;
            TxnOp::put(k, v, o)
        }
        TxnOpLine::Get(a) => {
            let (k, o) = get_op(&a, format)?;
            TxnOp::get(k, o)
        }
        TxnOpLine::Del(a) => {
            let (k, o) = del_op(&a)?;
            TxnOp::delete(k, o)
        }
    })
}

async fn run_txn(ctx: &Ctx, args: &TxnArgs) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let invalid = |e: txn_input::TxnInputError| Failure::new(EXIT_INVALID_INPUT, e.to_string());
    if args.interactive {
        emit("compares:\n")?;
    }
    let compares = txn_input::read_section(&mut input).map_err(invalid)?;
    let compares = compares
        .iter()
        .map(|l| txn_input::parse_compare(l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    if args.interactive {
        emit("success requests (get, put, del):\n")?;
    }
    let success = txn_input::read_section(&mut input).map_err(invalid)?;
    let success = success
        .iter()
        .map(|l| txn_op(l, ctx.format))
        .collect::<Result<Vec<_>, _>>()?;
    if args.interactive {
        emit("failure requests (get, put, del):\n")?;
    }
    let failure = txn_input::read_section(&mut input).map_err(invalid)?;
    let failure = failure
        .iter()
        .map(|l| txn_op(l, ctx.format))
        .collect::<Result<Vec<_>, _>>()?;
    let client = ctx.client().await?;
    let resp = client
        .kv()
        .txn(Txn::new().when(compares).and_then(success).or_else(failure))
        .await?;
    emit(&printer::txn(ctx.format, &resp))
}

async fn run_watch(ctx: &Ctx, a: &WatchArgs) -> Result<(), Failure> {
    let key = a.key.clone().unwrap_or_default();
    let mut opts = WatchOptions::new();
    match (&a.range_end, a.prefix) {
        (Some(_), true) => {
            return Err(Failure::new(
                EXIT_BAD_ARGS,
                "`range_end` and `--prefix` are mutually exclusive",
            ))
        }
        (Some(end), false) => opts = opts.range_end(end.clone().into_bytes()),
        (None, true) => opts = opts.prefix(),
        (None, false) => {}
    }
    if a.key.is_none() {
        return Err(Failure::new(EXIT_BAD_ARGS, "watch in non-interactive mode requires one or two arguments as key or prefix, with range end"));
    }
    if a.rev != 0 {
        opts = opts.start_revision(a.rev);
    }
    if a.prev_kv {
        opts = opts.prev_kv();
    }
    if a.progress_notify {
        opts = opts.progress_notify();
    }
    let client = ctx.client().await?;
    let canceled = |reason: &str| {
        emit_err(&format!("watch was canceled ({reason})\n"));
        Failure::new(EXIT_INTERRUPTED, "watch is canceled by the server")
    };
    let mut watcher = match client.watch().watch(key, opts).await {
        Ok(w) => w,
        Err(ClientError::Compacted { compact_revision }) => {
            if ctx.format == Format::Json {
                emit(&printer::watch_compacted_json(compact_revision))?;
            }
            return Err(canceled(
                &ClientError::Compacted { compact_revision }.to_string(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    loop {
        match watcher.recv().await {
            Some(Ok(batch)) => emit(&printer::watch(ctx.format, &batch, KvStyle::default()))?,
            Some(Err(ClientError::Compacted { compact_revision })) => {
                if ctx.format == Format::Json {
                    emit(&printer::watch_compacted_json(compact_revision))?;
                }
                return Err(canceled(
                    &ClientError::Compacted { compact_revision }.to_string(),
                ));
            }
            Some(Err(ClientError::WatchCanceled { reason })) => return Err(canceled(&reason)),
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(Failure::new(
                    EXIT_INTERRUPTED,
                    "watch is canceled by the server",
                ))
            }
        }
    }
}

async fn run_lease(ctx: &Ctx, cmd: &LeaseCommand) -> Result<(), Failure> {
    let client = ctx.client().await?;
    let lease = client.lease();
    match cmd {
        LeaseCommand::Grant { ttl } => {
            let r = lease
                .grant(*ttl, LeaseOptions::new())
                .await
                .map_err(|e| Failure::new(EXIT_ERROR, format!("failed to grant lease ({e})")))?;
            emit(&printer::lease_grant(ctx.format, &r))
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_lease_id(id)?;
            let r = lease
                .revoke(id, LeaseOptions::new())
                .await
                .map_err(|e| Failure::new(EXIT_ERROR, format!("failed to revoke lease ({e})")))?;
            emit(&printer::lease_revoke(ctx.format, id, &r))
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = parse_lease_id(id)?;
            let opts = if *keys {
                LeaseOptions::new().with_keys()
            } else {
                LeaseOptions::new()
            };
            let r = lease.time_to_live(id, opts).await?;
            emit(&printer::lease_time_to_live(ctx.format, &r, *keys))
        }
        LeaseCommand::List => {
            let r = lease
                .leases(LeaseOptions::new())
                .await
                .map_err(|e| Failure::new(EXIT_ERROR, format!("failed to list leases ({e})")))?;
            emit(&printer::lease_list(ctx.format, &r))
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = parse_lease_id(id)?;
            let (keeper, mut stream) = lease.keep_alive(id).await?;
            loop {
                match stream.message().await? {
                    Some(r) if r.ttl > 0 => {
                        emit(&printer::lease_keep_alive(ctx.format, &r))?;
                        if *once {
                            return Ok(());
                        }
                        // Renew at a third of the TTL, as clientv3's keep-alive loop does.
                        let wait = Duration::from_secs(u64::try_from(r.ttl).unwrap_or(1)) / 3;
                        tokio::time::sleep(wait.max(Duration::from_millis(500))).await;
                        keeper.keep_alive().await?;
                    }
                    Some(_) if *once => {
                        return Err(Failure::new(
                            EXIT_ERROR,
                            ClientError::LeaseNotFound.to_string(),
                        ))
                    }
                    Some(_) | None => {
                        emit(&format!("lease {id:016x} expired or revoked.\n"))?;
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn run_member(ctx: &Ctx, cmd: &MemberCommand) -> Result<(), Failure> {
    let client = ctx.client().await?;
    match cmd {
        MemberCommand::List => {
            let r = client.cluster().member_list().await?;
            emit(&printer::member_list(ctx.format, &r))
        }
        MemberCommand::Add {
            name,
            peer_urls,
            learner,
        } => {
            if peer_urls.is_empty() {
                return Err(Failure::new(EXIT_BAD_ARGS, "member peer urls not provided"));
            }
            let opts = if *learner {
                MemberAddOptions::new().learner()
            } else {
                MemberAddOptions::new()
            };
            let r = client.cluster().member_add(peer_urls.clone(), opts).await?;
            let id = r.member.as_ref().map_or(0, |m| m.id);
            let cluster_id = r.header.as_ref().map_or(0, |h| h.cluster_id);
            let mut initial = Vec::new();
            for m in &r.members {
                let member_name = if m.id == id {
                    name.as_str()
                } else {
                    m.name.as_str()
                };
                for u in &m.peer_ur_ls {
                    initial.push(format!("{member_name}={u}"));
                }
            }
            emit(&format!(
                "Member {id:16x} added to cluster {cluster_id:16x}\n\nETCD_NAME=\"{name}\"\nETCD_INITIAL_CLUSTER=\"{}\"\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
                initial.join(","),
                peer_urls.join(",")
            ))
        }
        MemberCommand::Remove { id } => {
            let id = u64::from_str_radix(id, 16).map_err(|e| {
                Failure::new(
                    EXIT_BAD_ARGS,
                    format!("bad member ID arg ({e}), expecting ID in Hex"),
                )
            })?;
            let r = client.cluster().member_remove(id).await?;
            let cluster_id = r.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&format!(
                "Member {id:16x} removed from cluster {cluster_id:16x}\n"
            ))
        }
    }
}

/// The endpoints an endpoint command covers: the flag's, or every member's with --cluster.
async fn endpoint_targets(ctx: &Ctx, cluster: bool) -> Result<Vec<String>, Failure> {
    if !cluster {
        return Ok(ctx.endpoints.clone());
    }
    let client = ctx.client().await?;
    let members = client.cluster().member_list().await?;
    Ok(members
        .members
        .iter()
        .flat_map(|m| m.client_ur_ls.iter().cloned())
        .collect())
}

/// A client on one endpoint only (endpoint commands report on each member separately).
async fn single(ctx: &Ctx, endpoint: &str) -> Result<Client, ClientError> {
    Client::connect([endpoint], ctx.options.clone()).await
}

async fn run_endpoint(ctx: &Ctx, cmd: &EndpointCommand) -> Result<(), Failure> {
    match cmd {
        EndpointCommand::Status { cluster } => {
            let mut statuses = Vec::new();
            let mut failed = false;
            for ep in endpoint_targets(ctx, *cluster).await? {
                let status = match single(ctx, &ep).await {
                    Ok(c) => c.maintenance().status(MaintenanceOptions::new()).await,
                    Err(e) => Err(e),
                };
                match status {
                    Ok(st) => statuses.push((ep, st)),
                    Err(e) => {
                        failed = true;
                        emit_err(&format!("Failed to get the status of endpoint {ep} (context deadline exceeded: {e})\n"));
                    }
                }
            }
            emit(&printer::endpoint_status(ctx.format, &statuses))?;
            if failed {
                return Err(Failure::new(
                    EXIT_ERROR,
                    "failed to get the status of some endpoints",
                ));
            }
            Ok(())
        }
        EndpointCommand::Health { cluster } => {
            let mut results = Vec::new();
            for ep in endpoint_targets(ctx, *cluster).await? {
                let start = Instant::now();
                let outcome = match single(ctx, &ep).await {
                    Ok(c) => c.kv().get("health", GetOptions::new()).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                results.push(printer::Health {
                    endpoint: ep,
                    healthy: outcome.is_ok(),
                    took: start.elapsed(),
                    error: outcome.err().map(|e| Failure::from(e).message),
                });
            }
            let (out, err) = printer::endpoint_health(ctx.format, &results);
            emit_err(&err);
            emit(&out)?;
            if results.iter().any(|h| !h.healthy) {
                return Err(Failure::new(EXIT_ERROR, "unhealthy cluster"));
            }
            Ok(())
        }
    }
}

async fn run_snapshot_save(ctx: &Ctx, filename: &str) -> Result<(), Failure> {
    if ctx.endpoints.len() != 1 {
        return Err(Failure::new(
            EXIT_BAD_ARGS,
            format!(
                "snapshot must be requested to one selected node, not multiple {:?}",
                ctx.endpoints
            ),
        ));
    }
    let client = ctx.client().await?;
    let part = format!("{filename}.part");
    let io =
        |e: std::io::Error| Failure::new(EXIT_IO, format!("could not write snapshot {part}: {e}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&part)
        .map_err(io)?;
    let mut stream = client
        .maintenance()
        .snapshot(MaintenanceOptions::new())
        .await?;
    while let Some(chunk) = stream.message().await? {
        file.write_all(&chunk.blob).map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&part, filename).map_err(io)?;
    emit(&format!("Snapshot saved at {filename}\n"))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let ctx = Ctx {
        endpoints: cli.endpoints.clone(),
        options: ClientOptions::new()
            .dial_timeout(cli.dial_timeout)
            .request_timeout(cli.command_timeout),
        format: cli.write_out,
    };
    match &cli.command {
        Command::Put(a) => {
            let (k, v, o) = put_op(a)?;
            let r = ctx.client().await?.kv().put(k, v, o).await?;
            emit(&printer::put(ctx.format, &r))
        }
        Command::Get(a) => {
            let (k, o) = get_op(a, ctx.format)?;
            let r = ctx.client().await?.kv().get(k, o).await?;
            let style = KvStyle {
                value_only: a.print_value_only,
            };
            emit(&printer::get(ctx.format, &r, style, a.count_only))
        }
        Command::Del(a) => {
            let (k, o) = del_op(a)?;
            let r = ctx.client().await?.kv().delete(k, o).await?;
            emit(&printer::delete(ctx.format, &r))
        }
        Command::Txn(a) => run_txn(&ctx, a).await,
        Command::Watch(a) => run_watch(&ctx, a).await,
        Command::Lease(c) => run_lease(&ctx, c).await,
        Command::Member(c) => run_member(&ctx, c).await,
        Command::Endpoint(c) => run_endpoint(&ctx, c).await,
        Command::Compaction(a) => {
            let opts = if a.physical {
                CompactOptions::new().physical()
            } else {
                CompactOptions::new()
            };
            let r = ctx.client().await?.kv().compact(a.revision, opts).await?;
            emit(&printer::compaction(ctx.format, &r, a.revision))
        }
        Command::Snapshot(SnapshotCommand::Save { filename }) => {
            run_snapshot_save(&ctx, filename).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            emit_err(&format!("Error: {e}\n"));
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            emit_err(&format!("Error: {}\n", f.message));
            ExitCode::from(f.code)
        }
    }
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

    #[test]
    fn prefix_with_empty_key_means_every_key() {
        let args = GetArgs::parse_from_words(&["", "--prefix"]);
        let (key, opts) = get_op(&args, Format::Simple).unwrap();
        let req = opts.to_request(key);
        assert_eq!((req.key, req.range_end), (vec![0], vec![0]));
    }

    impl GetArgs {
        fn parse_from_words(words: &[&str]) -> GetArgs {
            let mut all = vec!["get"];
            all.extend_from_slice(words);
            match TxnOpLine::try_parse_from(all).unwrap() {
                TxnOpLine::Get(a) => a,
                _ => unreachable!("parsed a get line"),
            }
        }
    }
}
