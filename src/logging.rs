//! The member's log in etcd 3.4's two formats, so that tools written for etcd's log read
//! ours: `--logger=capnslog` (etcd 3.4's default: `2006-01-02 15:04:05.000000 I | package:
//! message`) and `--logger=zap` (one JSON object a line: `level`, `ts`, `caller`, `msg`, then
//! the event's fields, with `_` in field names written as `-` as etcd names them), written to
//! every `--log-outputs` target.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Config, LogOutput, Logger};

/// A `--log-outputs` file that cannot be opened: one line, before the member starts.
#[derive(Debug, thiserror::Error)]
#[error("--log-outputs: cannot open {path}: {source}")]
pub struct LogError {
    path: String,
    source: io::Error,
}

/// Sets up the global subscriber from the flags, then logs the configuration's notices.
pub fn init(cfg: &Config) -> Result<(), LogError> {
    let outputs = Outputs::open(&cfg.log_outputs)?;
    // openraft reports every vote and membership step at info; keep it at warn unless asked.
    // A failed heartbeat is warned about every heartbeat interval while a peer is down; the
    // replication warnings (spaced by the backoff) already say so. A membership change that
    // openraft refuses is logged there as an error although it is returned to the caller,
    // which retries it (a member publishing its attributes while another change commits).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = cfg.log_level.directive();
        let directives = if level == "debug" {
            format!("{level},openraft=debug")
        } else {
            format!(
                "{level},openraft=warn,openraft::core::heartbeat=error,\
                 openraft::raft::api::management=off"
            )
        };
        tracing_subscriber::EnvFilter::new(directives)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(EtcdFormat { logger: cfg.logger })
        .with_writer(outputs)
        .init();
    for n in &cfg.notices {
        if n.warn {
            tracing::warn!(target: "minietcd::flags", "{}", n.message);
        } else {
            tracing::info!(target: "minietcd::flags", "{}", n.message);
        }
    }
    Ok(())
}

/// One formatter for both of etcd's formats.
struct EtcdFormat {
    logger: Logger,
}

impl<S, N> FormatEvent<S, N> for EtcdFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        match self.logger {
            Logger::Zap => {
                // etcd's key order: level, ts, caller, msg, then the fields.
                let file = meta.file().unwrap_or("?");
                let file = file.strip_prefix("src/").unwrap_or(file);
                let caller = format!("{file}:{}", meta.line().unwrap_or(0));
                let head: [(&str, serde_json::Value); 4] = [
                    ("level", zap_level(*meta.level()).into()),
                    ("ts", utc(now, true).into()),
                    ("caller", caller.into()),
                    ("msg", fields.message.into()),
                ];
                let rest = fields
                    .rest
                    .into_iter()
                    .map(|(k, v)| (k.replace('_', "-"), v));
                let mut line = String::from("{");
                for (i, (k, v)) in head
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .chain(rest)
                    .enumerate()
                {
                    if i > 0 {
                        line.push(',');
                    }
                    let _ = write!(line, "{}:{v}", serde_json::Value::String(k));
                }
                line.push('}');
                writeln!(w, "{line}")
            }
            Logger::Capnslog => {
                let target = meta.target();
                let package = target
                    .strip_prefix("minietcd::")
                    .unwrap_or(target)
                    .replace("::", "/");
                write!(
                    w,
                    "{} {} | {package}: {}",
                    utc(now, false),
                    capnslog_level(*meta.level()),
                    fields.message
                )?;
                for (k, v) in fields.rest {
                    match v {
                        serde_json::Value::String(s) => write!(w, ", {k}: {s}")?,
                        other => write!(w, ", {k}: {other}")?,
                    }
                }
                writeln!(w)
            }
        }
    }
}

fn zap_level(l: Level) -> &'static str {
    match l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

fn capnslog_level(l: Level) -> char {
    match l {
        Level::ERROR => 'E',
        Level::WARN => 'W',
        Level::INFO => 'I',
        Level::DEBUG | Level::TRACE => 'D',
    }
}

/// UTC time as zap writes it (`2006-01-02T15:04:05.000Z`) or capnslog does
/// (`2006-01-02 15:04:05.000000`).
fn utc(since_epoch: std::time::Duration, zap: bool) -> String {
    let secs = since_epoch.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let mut s = String::with_capacity(27);
    if zap {
        let ms = since_epoch.subsec_millis();
        let _ = write!(s, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z");
    } else {
        let us = since_epoch.subsec_micros();
        let _ = write!(s, "{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{us:06}");
    }
    s
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An event's message and other fields, in order.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.put(f, v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.put(f, v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.put(f, v.into());
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.put(f, v.into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.put(f, format!("{v:?}").into());
    }
}

impl Fields {
    fn put(&mut self, f: &Field, v: serde_json::Value) {
        if f.name() == "message" {
            self.message = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.rest.push((f.name().to_string(), v));
        }
    }
}

/// Every `--log-outputs` target; each formatted line is written to all of them.
#[derive(Clone)]
struct Outputs {
    targets: Arc<Vec<Target>>,
}

enum Target {
    Stderr,
    Stdout,
    File(Mutex<File>),
}

impl Outputs {
    fn open(outputs: &[LogOutput]) -> Result<Outputs, LogError> {
        let mut targets = Vec::new();
        for o in outputs {
            targets.push(match o {
                LogOutput::Stderr => Target::Stderr,
                LogOutput::Stdout => Target::Stdout,
                LogOutput::File(path) => {
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|source| LogError {
                            path: path.display().to_string(),
                            source,
                        })?;
                    Target::File(Mutex::new(f))
                }
            });
        }
        Ok(Outputs {
            targets: Arc::new(targets),
        })
    }
}

impl<'a> MakeWriter<'a> for Outputs {
    type Writer = Outputs;
    fn make_writer(&'a self) -> Outputs {
        self.clone()
    }
}

impl Write for Outputs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for t in self.targets.iter() {
            match t {
                Target::Stderr => io::stderr().write_all(buf)?,
                Target::Stdout => io::stdout().write_all(buf)?,
                Target::File(f) => {
                    let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                    f.write_all(buf)?;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_etcds_formats() {
        // 2026-11-30 19:56:03.568767 UTC
        let t = std::time::Duration::from_micros(1_796_068_563_568_767);
        assert_eq!(utc(t, true), "2026-11-30T19:56:03.568Z");
        assert_eq!(utc(t, false), "2026-11-30 19:56:03.568767");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}

/// etcd's wording for the member's lifecycle events, in the format `--logger` chose, so that
/// scripts waiting on etcd's lines ("ready to serve client requests", ...) work unchanged.
pub mod lifecycle {
    use std::net::SocketAddr;

    /// etcd's package for these lines (capnslog prints it; zap's caller is ours).
    const PACKAGE: &str = "embed";

    macro_rules! info {
        ($($t:tt)*) => { tracing::info!(target: PACKAGE, $($t)*) };
    }

    use crate::config::Logger;

    /// The member's attributes are part of the cluster's membership; the cluster speaks 3.4.
    pub fn published(
        logger: Logger,
        name: &str,
        client_urls: &[String],
        member_id: u64,
        cluster_id: u64,
    ) {
        let attrs = format!("{{Name:{name} ClientURLs:[{}]}}", client_urls.join(" "));
        match logger {
            Logger::Zap => {
                info!(
                    local_member_id = %format!("{member_id:x}"),
                    local_member_attributes = %attrs,
                    cluster_id = %format!("{cluster_id:x}"),
                    "published local member to cluster through raft"
                );
                info!(cluster_version = "3.4", "enabled capabilities for version");
            }
            Logger::Capnslog => {
                info!("published {attrs} to cluster {cluster_id:x}");
                info!("enabled capabilities for version 3.4");
            }
        }
    }

    /// A client listener is about to accept connections.
    pub fn serving_clients(logger: Logger, addr: Option<SocketAddr>) {
        let addr = addr.map(|a| a.to_string()).unwrap_or_default();
        info!("ready to serve client requests");
        match logger {
            Logger::Zap => info!(
                address = %addr,
                "serving client traffic insecurely; this is strongly discouraged!"
            ),
            Logger::Capnslog => {
                info!("serving insecure client requests on {addr}, this is strongly discouraged!")
            }
        }
    }

    /// A peer listener is about to accept connections.
    pub fn serving_peers(logger: Logger, addr: Option<SocketAddr>) {
        let addr = addr.map(|a| a.to_string()).unwrap_or_default();
        match logger {
            Logger::Zap => info!(address = %addr, "serving peer traffic"),
            Logger::Capnslog => info!("listening for peers on {addr}"),
        }
    }

    /// A listener has stopped (`what`: "client" or "peer").
    pub fn stopped_serving(logger: Logger, what: &str, addr: Option<SocketAddr>) {
        let addr = addr.map(|a| a.to_string()).unwrap_or_default();
        match logger {
            Logger::Zap => info!(address = %addr, "stopped serving {what} traffic"),
            Logger::Capnslog => info!("stopped serving {what} traffic on {addr}"),
        }
    }

    /// The leader this member knows of changed (raft's `raft.node:` lines).
    pub fn leader_changed(me: u64, from: Option<u64>, to: Option<u64>, term: u64) {
        match (from, to) {
            (None, Some(l)) => info!("raft.node: {me:x} elected leader {l:x} at term {term}"),
            (Some(old), Some(l)) => {
                info!("raft.node: {me:x} changed leader from {old:x} to {l:x} at term {term}")
            }
            (Some(old), None) => info!("raft.node: {me:x} lost leader {old:x} at term {term}"),
            (None, None) => {}
        }
    }
}
