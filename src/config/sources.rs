//! Where flag values come from, all turned into arguments of the one flag table
//! ([`super::flags::Flags`]): the command line, `ETCD_*` environment variables, or etcd's
//! YAML config file. The rules are etcd 3.4's (checked against `/usr/bin/etcd`):
//!
//! - `--config-file` (or `ETCD_CONFIG_FILE`): only the file counts; other flags and
//!   environment variables are ignored (the command line must still parse).
//! - otherwise `ETCD_NAME` sets `--name`, ...; a variable whose flag is also on the command
//!   line is an error ("conflicting environment variable ... is shadowed ..."), and an
//!   unknown `ETCD_*` variable is logged as unrecognized.
//! - `-name` works as `--name` (Go's flag package takes both).

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory};
use serde_yaml_ng::Value;

use super::flags::Flags;
use super::{ConfigError, Notice};

/// Prefix of etcd's environment variables.
const ENV_PREFIX: &str = "ETCD_";

/// Flags whose YAML value may be a number of nanoseconds (etcd's config file holds Go
/// `time.Duration`s, which JSON/YAML decoding reads as integers).
const DURATION_FLAGS: &[&str] = &[
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "backend-batch-interval",
    "experimental-corrupt-check-time",
    "experimental-lease-checkpoint-interval",
    "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration",
];

/// The flag table as a clap command, with Go's boolean syntax: `--flag` is true,
/// `--flag=false` sets it, a separate `false` argument is not its value.
pub fn command() -> clap::Command {
    Flags::command().mut_args(|a| {
        if !matches!(a.get_action(), ArgAction::SetTrue) {
            return a;
        }
        let default_true = a
            .get_default_values()
            .first()
            .is_some_and(|v| v.to_str() == Some("true"));
        a.action(ArgAction::Set)
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .default_value(if default_true { "true" } else { "false" })
            .value_name("BOOL")
            .value_parser(parse_go_bool)
    })
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?} (true or false)")),
    }
}

/// Why the flags could not be read: clap's own error (including --help and --version,
/// which the caller prints), or ours.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The parsed flags with where each value came from, and what to log about them once
/// logging is set up.
pub struct Parsed {
    pub matches: ArgMatches,
    pub notices: Vec<Notice>,
}

/// Reads the flags from the command line `args` (program name first) and `env`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Parsed, SourceError> {
    let cmd = command();
    let args = go_style_dashes(&cmd, args);
    let cli = cmd.clone().try_get_matches_from(&args)?;
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    let config_file = cli
        .get_one::<std::path::PathBuf>("config_file")
        .cloned()
        .or_else(|| {
            env.iter()
                .find(|(k, _)| k == "ETCD_CONFIG_FILE")
                .map(|(_, v)| v.into())
        });
    let mut notices = Vec::new();
    let matches = if let Some(path) = config_file {
        notices.push(Notice::info(format!(
            "Loading server configuration from {:?}. Other configuration command line flags \
             and environment variables will be ignored if provided.",
            path.display()
        )));
        let mut file_args = vec![OsString::from("minietcd")];
        file_args.extend(yaml_args(&cmd, &path, &mut notices)?);
        cmd.try_get_matches_from(file_args)?
    } else {
        let mut all = args;
        for (key, value) in &env {
            let flag = key[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace('_', "-");
            let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(&flag)) else {
                notices.push(Notice::warn(format!(
                    "unrecognized environment variable {key}={value}"
                )));
                continue;
            };
            if cli.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
                return Err(ConfigError::EnvConflict(key.clone()).into());
            }
            notices.push(Notice::info(format!(
                "recognized and used environment variable {key}={value}"
            )));
            all.push(format!("--{flag}={value}").into());
        }
        cmd.try_get_matches_from(all)?
    };
    Ok(Parsed { matches, notices })
}

/// `-name` -> `--name` for the table's long flags, as Go's flag package reads them.
fn go_style_dashes(cmd: &clap::Command, args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let Some(s) = a.to_str().filter(|_| i > 0) else {
                return a;
            };
            let single = s.len() > 2 && s.starts_with('-') && !s.starts_with("--");
            let name = s.trim_start_matches('-').split('=').next().unwrap_or("");
            if single && cmd.get_arguments().any(|x| x.get_long() == Some(name)) {
                format!("-{s}").into()
            } else {
                a
            }
        })
        .collect()
}

/// etcd's config file as `--key=value` arguments.
fn yaml_args(
    cmd: &clap::Command,
    path: &Path,
    notices: &mut Vec<Notice>,
) -> Result<Vec<OsString>, ConfigError> {
    let bad = |reason: String| ConfigError::ConfigFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = match doc {
        Value::Mapping(m) => m,
        Value::Null => Default::default(),
        _ => return Err(bad("expected a mapping of etcd's keys".into())),
    };
    let mut pairs: Vec<(String, Value)> = Vec::new();
    for (k, v) in map {
        let key = yaml_scalar(&k).ok_or_else(|| bad("a key is not a string".into()))?;
        match key.as_str() {
            "client-transport-security" | "peer-transport-security" => {
                let peer = key.starts_with("peer");
                let Value::Mapping(inner) = v else {
                    if v.is_null() {
                        continue;
                    }
                    return Err(bad(format!("{key}: expected a mapping")));
                };
                for (ik, iv) in inner {
                    let ik = yaml_scalar(&ik).ok_or_else(|| bad(format!("{key}: bad key")))?;
                    match security_flag(peer, &ik) {
                        Some(flag) => pairs.push((flag, iv)),
                        None => notices.push(Notice::warn(format!(
                            "config file: unrecognized key {key}.{ik}"
                        ))),
                    }
                }
            }
            _ => pairs.push((key, v)),
        }
    }
    let mut out = Vec::new();
    for (key, v) in pairs {
        if key == "config-file" || v.is_null() {
            continue;
        }
        if !cmd.get_arguments().any(|a| a.get_long() == Some(&key)) {
            notices.push(Notice::warn(format!("config file: unrecognized key {key}")));
            continue;
        }
        let value = match v {
            Value::Number(n) if DURATION_FLAGS.contains(&key.as_str()) => format!("{n}ns"),
            Value::Sequence(items) => items
                .iter()
                .map(|x| {
                    yaml_scalar(x).ok_or_else(|| bad(format!("{key}: expected a list of values")))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => yaml_scalar(&other).ok_or_else(|| bad(format!("{key}: expected a value")))?,
        };
        out.push(format!("--{key}={value}").into());
    }
    Ok(out)
}

/// The flag a key of a `*-transport-security` section stands for.
fn security_flag(peer: bool, key: &str) -> Option<String> {
    let client = match key {
        "cert-file" | "key-file" | "client-cert-auth" | "trusted-ca-file" | "auto-tls" => key,
        "crl-file" => "client-crl-file",
        "allowed-hostname" => "client-cert-allowed-hostname",
        "allowed-cn" if peer => "cert-allowed-cn",
        _ => return None,
    };
    Some(match (peer, key) {
        (false, _) => client.to_string(),
        (true, "crl-file") => "peer-crl-file".into(),
        (true, "allowed-hostname") => "peer-cert-allowed-hostname".into(),
        (true, _) => format!("peer-{client}"),
    })
}

fn yaml_scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
