//! minietcd-bench: measures an etcd v3 server (minietcd or etcd) with etcd's benchmark
//! workloads. See this crate's library (`minietcd_bench`) for how it works and
//! docs/benchmarks.md for how to use it.

use clap::Parser;
use minietcd_bench::{self as bench, Cli};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(bench::run(&cli)).and_then(|report| {
        let mut out = std::io::stdout().lock();
        if cli.wants_json() {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", report.to_text())?;
        }
        out.flush()?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "minietcd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
