//! minietcdctl: etcdctl's command line (v3 API) on minietcd's own client, so scripts written
//! for etcdctl move over unchanged: same command names, flags, output (`-w simple|json`) and
//! exit codes.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod args;
mod auth_cmd;
mod check_perf;
mod cluster_printer;
mod fields;
mod json;
mod maint_cmd;
mod ops;
mod printer;
mod table;
mod txn_input;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use minietcd_client::{
    Client, ClientError, ClientOptions, CompactOptions, GetOptions, LeaseOptions,
    MaintenanceOptions, MemberAddOptions, Txn, WatchOptions,
};

use args::{
    AlarmCommand, CheckCommand, Cli, Command, EndpointArgs, EndpointCommand, LeaseCommand,
    MemberCommand, RestoreArgs, SnapshotCommand, TxnArgs, WatchArgs,
};
use minietcd::data_dir::restore;
use minietcd_client::pb::etcdserverpb::AlarmMember;
use ops::{
    del_op, get_op, parse_lease_id, put_op, txn_op, Failure, EXIT_BAD_ARGS, EXIT_ERROR,
    EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_IO,
};
use printer::{Format, KvStyle};

/// Writes to stdout and flushes (watch and keep-alive print as they go).
pub(crate) fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Failure::new(EXIT_IO, e.to_string()))
}

pub(crate) fn emit_err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

pub(crate) struct Ctx {
    endpoints: Vec<String>,
    options: ClientOptions,
    format: Format,
}

impl Ctx {
    pub(crate) async fn client(&self) -> Result<Client, Failure> {
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
    emit(&printer::txn(ctx.format, &resp)?)
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
                emit(&printer::watch_compacted_json(None, compact_revision))?;
            }
            return Err(canceled(
                &ClientError::Compacted { compact_revision }.to_string(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    loop {
        match watcher.recv().await {
            Some(Ok(batch)) => emit(&printer::watch(ctx.format, &batch, KvStyle::default())?)?,
            Some(Err(ClientError::Compacted { compact_revision })) => {
                if ctx.format == Format::Json {
                    emit(&printer::watch_compacted_json(
                        watcher.end_header(),
                        compact_revision,
                    ))?;
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
            emit(&printer::lease_grant(ctx.format, &r)?)
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_lease_id(id)?;
            let r = lease
                .revoke(id, LeaseOptions::new())
                .await
                .map_err(|e| Failure::new(EXIT_ERROR, format!("failed to revoke lease ({e})")))?;
            emit(&printer::lease_revoke(ctx.format, id, &r)?)
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = parse_lease_id(id)?;
            let opts = if *keys {
                LeaseOptions::new().with_keys()
            } else {
                LeaseOptions::new()
            };
            let r = lease.time_to_live(id, opts).await?;
            emit(&printer::lease_time_to_live(ctx.format, &r, *keys)?)
        }
        LeaseCommand::List => {
            let r = lease
                .leases(LeaseOptions::new())
                .await
                .map_err(|e| Failure::new(EXIT_ERROR, format!("failed to list leases ({e})")))?;
            emit(&printer::lease_list(ctx.format, &r)?)
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = parse_lease_id(id)?;
            let (keeper, mut stream) = lease.keep_alive(id).await?;
            loop {
                match stream.message().await? {
                    Some(r) if r.ttl > 0 => {
                        emit(&printer::lease_keep_alive(ctx.format, &r)?)?;
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
            emit(&printer::member_list(ctx.format, &r)?)
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
            let env = format!(
                "\nETCD_NAME=\"{name}\"\nETCD_INITIAL_CLUSTER=\"{}\"\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
                initial.join(","),
                peer_urls.join(",")
            );
            emit(&printer::member_add(ctx.format, &r, &env)?)
        }
        MemberCommand::Remove { id } => {
            let id = u64::from_str_radix(id, 16).map_err(|e| {
                Failure::new(
                    EXIT_BAD_ARGS,
                    format!("bad member ID arg ({e}), expecting ID in Hex"),
                )
            })?;
            let r = client.cluster().member_remove(id).await?;
            emit(&printer::member_remove(ctx.format, id, &r)?)
        }
    }
}

/// The endpoints an endpoint command covers: the flag's, or every member's with --cluster.
pub(crate) async fn endpoint_targets(ctx: &Ctx, cluster: bool) -> Result<Vec<String>, Failure> {
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

/// etcdctl's health check of one endpoint: a linearizable get of the key `health` (a
/// permission error counts as healthy: the request went through consensus). The time covers
/// dialling too, as etcdctl's lazily dialling client's get does.
async fn health(ctx: &Ctx, endpoint: String) -> printer::Health {
    let start = Instant::now();
    let outcome = match single(ctx, &endpoint).await {
        Ok(client) => client
            .kv()
            .get("health", GetOptions::new())
            .await
            .map(|_| ())
            .map_err(|e| Failure::from(e).message),
        Err(f) => Err(f.message),
    };
    let error = outcome.err().filter(|m| m != MSG_PERMISSION_DENIED);
    printer::Health {
        endpoint,
        healthy: error.is_none(),
        took: start.elapsed(),
        error,
    }
}

/// What etcdctl's get says when its endpoint cannot be reached in time.
const MSG_DEADLINE: &str = "context deadline exceeded";
/// etcd's permission error, which a health check counts as a success.
const MSG_PERMISSION_DENIED: &str = "etcdserver: permission denied";

/// A client on one endpoint only (endpoint commands report on each member separately).
pub(crate) async fn single(ctx: &Ctx, endpoint: &str) -> Result<Client, Failure> {
    Client::connect([endpoint], ctx.options.clone())
        .await
        .map_err(|e| match e {
            // etcdctl's client dials lazily: its request runs out of time instead.
            ClientError::Unavailable(_) => Failure::new(EXIT_ERROR, MSG_DEADLINE),
            e => Failure::from(e),
        })
}

async fn run_endpoint(ctx: &Ctx, args: &EndpointArgs) -> Result<(), Failure> {
    let cluster = &args.cluster;
    match &args.command {
        EndpointCommand::Status => {
            let mut statuses = Vec::new();
            let mut failed = false;
            for ep in endpoint_targets(ctx, *cluster).await? {
                let status = match single(ctx, &ep).await {
                    Ok(c) => c
                        .maintenance()
                        .status(MaintenanceOptions::new())
                        .await
                        .map_err(Failure::from),
                    Err(f) => Err(f),
                };
                match status {
                    Ok(st) => statuses.push((ep, st)),
                    Err(f) => {
                        failed = true;
                        emit_err(&format!(
                            "Failed to get the status of endpoint {ep} ({})\n",
                            f.message
                        ));
                    }
                }
            }
            emit(&printer::endpoint_status(ctx.format, &statuses)?)?;
            if failed {
                // etcdctl exits without an error line: each failure was reported above.
                return Err(Failure::silent(EXIT_ERROR));
            }
            Ok(())
        }
        EndpointCommand::Health => {
            // Every endpoint at once, as etcdctl checks them; results in endpoint order.
            let checks = endpoint_targets(ctx, *cluster)
                .await?
                .into_iter()
                .map(|ep| health(ctx, ep));
            let results = futures::future::join_all(checks).await;
            let (out, err) = printer::endpoint_health(ctx.format, &results)?;
            emit_err(&err);
            emit(&out)?;
            if results.iter().any(|h| !h.healthy) {
                return Err(Failure::new(EXIT_ERROR, "unhealthy cluster"));
            }
            Ok(())
        }
        EndpointCommand::Hashkv { rev } => {
            let mut hashes = Vec::new();
            let mut last_error = None;
            for ep in endpoint_targets(ctx, *cluster).await? {
                let hash = match single(ctx, &ep).await {
                    Ok(c) => c
                        .maintenance()
                        .hash_kv(*rev, MaintenanceOptions::new())
                        .await
                        .map_err(Failure::from),
                    Err(f) => Err(f),
                };
                match hash {
                    Ok(h) => hashes.push((ep, h)),
                    Err(f) => {
                        emit_err(&format!(
                            "Failed to get the hash of endpoint {ep} ({})\n",
                            f.message
                        ));
                        last_error = Some(f);
                    }
                }
            }
            emit(&printer::endpoint_hashkv(ctx.format, &hashes)?)?;
            match last_error {
                Some(f) => Err(f),
                None => Ok(()),
            }
        }
    }
}

/// etcdctl's `snapshot restore`: a new member's data dir from a snapshot file.
fn run_snapshot_restore(a: &RestoreArgs) -> Result<(), Failure> {
    // etcd's default data dir is `<name>.etcd`; minietcd's is `<name>.minietcd`.
    let data_dir = if a.data_dir.is_empty() {
        format!("{}.minietcd", a.name)
    } else {
        a.data_dir.clone()
    };
    let opts = restore::RestoreOptions {
        name: a.name.clone(),
        initial_cluster: a.initial_cluster.clone(),
        initial_cluster_token: a.initial_cluster_token.clone(),
        initial_advertise_peer_urls: a.initial_advertise_peer_urls.clone(),
        data_dir: data_dir.clone().into(),
        wal_dir: (!a.wal_dir.is_empty()).then(|| a.wal_dir.clone().into()),
        skip_hash_check: a.skip_hash_check,
    };
    let st = restore::restore(std::path::Path::new(&a.filename), &opts)
        .map_err(|e| Failure::new(EXIT_ERROR, e.to_string()))?;
    emit_err(&format!(
        "restored snapshot {} (revision {}) into {data_dir}\n",
        a.filename, st.revision
    ));
    Ok(())
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
    let mut options = ClientOptions::new()
        .dial_timeout(cli.dial_timeout)
        .request_timeout(cli.command_timeout);
    if let Some(tls) = cli.tls() {
        options = options.tls(tls);
    }
    if let Some(user) = &cli.user {
        // etcdctl's `--user name:password`; a missing password would be prompted for.
        let Some((name, password)) = user.split_once(':') else {
            return Err(Failure::new(
                ops::EXIT_BAD_ARGS,
                "reading the password from a terminal is not supported; use --user name:password",
            ));
        };
        options = options.user(name, password);
    }
    let ctx = Ctx {
        endpoints: cli.endpoints.clone(),
        options,
        format: cli.write_out,
    };
    match &cli.command {
        Command::Put(a) => {
            let (k, v, o) = put_op(a)?;
            let r = ctx.client().await?.kv().put(k, v, o).await?;
            emit(&printer::put(ctx.format, &r)?)
        }
        Command::Get(a) => {
            let (k, o) = get_op(a, ctx.format)?;
            let r = ctx.client().await?.kv().get(k, o).await?;
            let style = KvStyle {
                value_only: a.print_value_only,
            };
            emit(&printer::get(ctx.format, &r, style, a.count_only)?)
        }
        Command::Del(a) => {
            let (k, o) = del_op(a)?;
            let r = ctx.client().await?.kv().delete(k, o).await?;
            emit(&printer::delete(ctx.format, &r)?)
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
        Command::Snapshot(SnapshotCommand::Status { filename }) => {
            let st = restore::snapshot_status(std::path::Path::new(filename))
                .map_err(|e| Failure::new(EXIT_ERROR, e.to_string()))?;
            emit(&printer::snapshot_status(ctx.format, &st)?)
        }
        Command::Snapshot(SnapshotCommand::Restore(a)) => run_snapshot_restore(a),
        Command::User(c) => emit(&auth_cmd::run_user(&ctx.client().await?, c, ctx.format).await?),
        Command::Role(c) => emit(&auth_cmd::run_role(&ctx.client().await?, c, ctx.format).await?),
        Command::Auth(c) => emit(&auth_cmd::run_auth(&ctx.client().await?, c).await?),
        Command::Alarm(c) => {
            let m = ctx.client().await?.maintenance();
            let r = match c {
                AlarmCommand::List => m.alarm_list(MaintenanceOptions::new()).await?,
                AlarmCommand::Disarm => {
                    m.alarm_disarm(AlarmMember::default(), MaintenanceOptions::new())
                        .await?
                }
            };
            emit(&printer::alarm(ctx.format, &r)?)
        }
        Command::Defrag(a) => maint_cmd::defrag(&ctx, a.cluster).await,
        Command::MoveLeader { target } => maint_cmd::move_leader(&ctx, target).await,
        Command::Check(CheckCommand::Perf(a)) => check_perf::run(&ctx, a).await,
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
            if !f.message.is_empty() {
                emit_err(&format!("Error: {}\n", f.message));
            }
            ExitCode::from(f.code)
        }
    }
}
