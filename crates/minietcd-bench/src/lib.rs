//! minietcd-bench: a load generator for etcd v3 servers, modelled on etcd's `tools/benchmark`
//! (same subcommands, flag names and defaults) so that minietcd and etcd can be measured with
//! one tool in one run.
//!
//! It speaks raw gRPC through the generated `etcdserverpb` clients (no client library in the
//! way): `--conns` HTTP/2 channels ([`conn`]) shared round-robin by `--clients` workers
//! ([`runner`]); latencies go into per-worker HDR histograms merged at the end ([`report`]);
//! the client's own CPU is measured ([`cpu`]) to show it was not the bottleneck.
//!
//! Workloads: [`kv`] (put, range, txn-put), [`lease`] (lease-keepalive), [`watch_latency`] and
//! [`watch`] (both built on [`watchers`]).

pub mod cli;
pub mod conn;
pub mod cpu;
pub mod error;
pub mod keys;
pub mod kv;
pub mod lease;
pub mod limiter;
pub mod progress;
pub mod report;
pub mod runner;
pub mod watch;
pub mod watch_latency;
pub mod watchers;

pub use cli::Cli;
pub use error::{BenchError, Result};
pub use report::RunReport;

use cli::Command;
use conn::Connections;
use cpu::CpuSample;
use minietcd_client::pb;
use std::time::Duration;

/// Client CPU, in percent of the client's threads, above which the report warns that the
/// client itself may have limited the figures.
const CLIENT_SATURATED_PERCENT: f64 = 80.0;

/// Connects, runs the workload `cli` names and returns its report.
pub async fn run(cli: &Cli) -> Result<RunReport> {
    if cli.clients == 0 {
        return Err(BenchError::InvalidArgs(
            "--clients must be at least 1".into(),
        ));
    }
    let conns = Connections::open(
        &cli.endpoints,
        cli.conns,
        cli.target_leader,
        Duration::from_millis(cli.dial_timeout_ms),
    )
    .await?;
    runner::report_every(Duration::from_millis(cli.interval_ms));
    let cpu_start = CpuSample::now();
    let (phases, mut notes) = match &cli.command {
        Command::Put(a) => (vec![kv::put(&conns, cli.clients, a).await?], Vec::new()),
        Command::Range(a) => kv::range(&conns, cli.clients, cli.consistency, a).await?,
        Command::TxnPut(a) => (vec![kv::txn_put(&conns, cli.clients, a).await?], Vec::new()),
        Command::LeaseKeepalive(a) => (
            vec![lease::lease_keepalive(&conns, cli.clients, a).await?],
            Vec::new(),
        ),
        Command::WatchLatency(a) => watch_latency::watch_latency(&conns, a).await?,
        Command::Watch(a) => watch::watch(&conns, cli.clients, a).await?,
    };
    let client_cpu = CpuSample::now().since(&cpu_start);
    if runner::interrupted() {
        notes.push(format!(
            "stopped early by SIGINT: {} requests sent",
            phases.iter().map(|p| p.total).sum::<u64>()
        ));
    }
    let threads = f64::from(cli.client_threads);
    if client_cpu.percent_of_one_core > CLIENT_SATURATED_PERCENT * threads {
        notes.push(format!(
            "the client used {:.0}% of one core with {} runtime thread(s): it may have been the bottleneck; \
             rerun with more --client-threads",
            client_cpu.percent_of_one_core, cli.client_threads
        ));
    }
    Ok(RunReport {
        command: cli.command.name().to_string(),
        endpoints: conns.endpoints().to_vec(),
        conns: conns.len(),
        clients: cli.clients,
        phases,
        client_cpu,
        notes,
    })
}
