//! Turning command flags into client requests, and failures into etcdctl's exit codes.

use std::io::Read;

use clap::Parser;
use minietcd_client::{
    ClientError, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, TxnOp,
};

use crate::args::{DelArgs, GetArgs, PutArgs, TxnOpLine};
use crate::printer::Format;
use crate::txn_input;

/// etcdctl's exit codes.
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_INVALID_INPUT: u8 = 3;
pub const EXIT_BAD_FEATURE: u8 = 4;
pub const EXIT_INTERRUPTED: u8 = 5;
pub const EXIT_IO: u8 = 6;
pub const EXIT_BAD_ARGS: u8 = 128;

/// A failed command: what to print after `Error: ` (nothing when empty: the command reported
/// its failures itself, as etcdctl's plain `os.Exit` does) and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code,
        }
    }

    /// A failure whose details were already printed.
    pub fn silent(code: u8) -> Self {
        Failure::new(code, "")
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Timeout(_) => Failure::new(EXIT_ERROR, "context deadline exceeded"),
            // etcdctl prints a server's error as its message alone.
            ClientError::Server { message, .. } => Failure::new(EXIT_ERROR, message),
            e => Failure::new(EXIT_ERROR, e.to_string()),
        }
    }
}

pub fn parse_lease_id(s: &str) -> Result<i64, Failure> {
    u64::from_str_radix(s, 16).map(|v| v as i64).map_err(|e| {
        Failure::new(
            EXIT_BAD_ARGS,
            format!("bad lease ID arg ({e}), expecting ID in Hex"),
        )
    })
}

pub fn put_op(a: &PutArgs) -> Result<(String, Vec<u8>, PutOptions), Failure> {
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

pub fn get_op(a: &GetArgs, format: Format) -> Result<(String, GetOptions), Failure> {
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

pub fn del_op(a: &DelArgs) -> Result<(String, DeleteOptions), Failure> {
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

pub fn txn_op(line: &str, format: Format) -> Result<TxnOp, Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn get_args(words: &[&str]) -> GetArgs {
        let mut all = vec!["get"];
        all.extend_from_slice(words);
        match TxnOpLine::try_parse_from(all).unwrap() {
            TxnOpLine::Get(a) => a,
            _ => unreachable!("parsed a get line"),
        }
    }

    #[test]
    fn prefix_with_empty_key_means_every_key() {
        let (key, opts) = get_op(&get_args(&["", "--prefix"]), Format::Simple).unwrap();
        let req = opts.to_request(key);
        assert_eq!((req.key, req.range_end), (vec![0], vec![0]));
    }

    #[test]
    fn ascending_by_key_asks_for_no_sort() {
        let (key, opts) = get_op(
            &get_args(&["a", "--sort-by=KEY", "--order=ASCEND"]),
            Format::Simple,
        )
        .unwrap();
        assert_eq!(opts.to_request(key).sort_order, SortOrder::None as i32);
    }
}
