//! `minietcd`: one member of an etcd-compatible cluster. With no flags, a one-node cluster on
//! 127.0.0.1:2379 (peers 2380) keeping its data in `default.minietcd/`.

use std::process::ExitCode;

use clap::Parser;
use minietcd::config::{Config, Flags};

/// mimalloc instead of glibc's malloc: a member allocates and frees small buffers on many
/// threads at once (gRPC frames, log entries, sled nodes), where glibc's arenas spent a tenth
/// of the CPU of a put-heavy run in `malloc`/`free` and their consolidation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let flags = match Flags::try_parse() {
        Ok(f) => f,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line names the problem ("error: unexpected argument ...").
            let msg = e.render().to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!("minietcd: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let cfg = match Config::from_flags(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("minietcd: {e}");
            return ExitCode::from(2);
        }
    };
    // openraft reports every vote and membership step at info; keep it at warn unless asked.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = cfg.log_level.directive();
        let raft = if level == "debug" { "debug" } else { "warn" };
        tracing_subscriber::EnvFilter::new(format!("{level},openraft={raft}"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("minietcd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(minietcd::node::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minietcd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
