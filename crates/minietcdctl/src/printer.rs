//! etcdctl's output formats (`simple`, `json`, `fields`, `table`) for each command. Every
//! function returns the exact text etcdctl writes to stdout (trailing newline included), or
//! etcdctl's "not supported as output format" failure where etcdctl 3.4 has no printer for
//! that format and command; callers print after the request, as etcdctl fails only then.

use minietcd_client::pb::etcdserverpb::ResponseHeader;
use minietcd_client::pb::etcdserverpb::{
    response_op, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    PutResponse, RangeResponse, ResponseOp, TxnResponse,
};
use minietcd_client::pb::mvccpb::{event::EventType, KeyValue};
use minietcd_client::WatchBatch;

use crate::fields;
use crate::json::{self, Obj};
use crate::ops::{Failure, EXIT_BAD_FEATURE};

// Membership, endpoint, alarm, leadership and snapshot output.
pub use crate::cluster_printer::*;

/// The `-w` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// etcdctl's human-readable lines.
    Simple,
    /// Go's JSON of the response structs.
    Json,
    /// One `"Field" : value` line per field.
    Fields,
    /// Boxed tables (member list, endpoint and snapshot status, health, hashes).
    Table,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Table => "table",
        }
    }
}

/// What etcdctl prints, or its failure, for a format it has no printer for.
pub type Printed = Result<String, Failure>;

/// etcdctl's error for a command the format cannot print (exit code 4).
pub fn unsupported(format: Format) -> Failure {
    Failure::new(
        EXIT_BAD_FEATURE,
        format!("{} not supported as output format", format.name()),
    )
}

/// Simple-format switches that change how a key-value prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvStyle {
    /// `--print-value-only`.
    pub value_only: bool,
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// etcdctl's `printKV`: the key (unless value-only), then the value, one line each.
fn simple_kv(out: &mut String, kv: &KeyValue, style: KvStyle) {
    if !style.value_only {
        out.push_str(&lossy(&kv.key));
        out.push('\n');
    }
    out.push_str(&lossy(&kv.value));
    out.push('\n');
}

pub(crate) fn json_line(s: String) -> String {
    s + "\n"
}

fn range_json(r: &RangeResponse) -> String {
    Obj::new()
        .opt("header", json::header(r.header.as_ref()))
        .list("kvs", json::kvs(&r.kvs))
        .boolean("more", r.more)
        .int("count", r.count)
        .build()
}

fn put_json(r: &PutResponse) -> String {
    Obj::new()
        .opt("header", json::header(r.header.as_ref()))
        .opt("prev_kv", r.prev_kv.as_ref().map(json::kv))
        .build()
}

fn delete_json(r: &DeleteRangeResponse) -> String {
    Obj::new()
        .opt("header", json::header(r.header.as_ref()))
        .int("deleted", r.deleted)
        .list("prev_kvs", json::kvs(&r.prev_kvs))
        .build()
}

fn txn_json(r: &TxnResponse) -> String {
    let responses = r.responses.iter().map(response_op_json).collect();
    Obj::new()
        .opt("header", json::header(r.header.as_ref()))
        .boolean("succeeded", r.succeeded)
        .list("responses", responses)
        .build()
}

/// A txn op response: Go marshals the oneof wrapper struct, field names and all.
fn response_op_json(op: &ResponseOp) -> String {
    let inner = match &op.response {
        Some(response_op::Response::ResponseRange(r)) => {
            Obj::new().raw("ResponseRange", range_json(r))
        }
        Some(response_op::Response::ResponsePut(r)) => Obj::new().raw("ResponsePut", put_json(r)),
        Some(response_op::Response::ResponseDeleteRange(r)) => {
            Obj::new().raw("ResponseDeleteRange", delete_json(r))
        }
        Some(response_op::Response::ResponseTxn(r)) => Obj::new().raw("ResponseTxn", txn_json(r)),
        None => return "{}".into(),
    };
    Obj::new().raw("Response", inner.build()).build()
}

pub fn get(format: Format, r: &RangeResponse, style: KvStyle, count_only: bool) -> Printed {
    Ok(match format {
        Format::Json => json_line(range_json(r)),
        Format::Fields => fields::get(r),
        Format::Table => return Err(unsupported(format)),
        Format::Simple if count_only => format!("{}\n", r.count),
        Format::Simple => {
            let mut out = String::new();
            for kv in &r.kvs {
                simple_kv(&mut out, kv, style);
            }
            out
        }
    })
}

pub fn put(format: Format, r: &PutResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(put_json(r)),
        Format::Fields => fields::put(r),
        Format::Table => return Err(unsupported(format)),
        Format::Simple => {
            let mut out = String::from("OK\n");
            if let Some(prev) = &r.prev_kv {
                simple_kv(&mut out, prev, KvStyle::default());
            }
            out
        }
    })
}

pub fn delete(format: Format, r: &DeleteRangeResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(delete_json(r)),
        Format::Fields => fields::delete(r),
        Format::Table => return Err(unsupported(format)),
        Format::Simple => {
            let mut out = format!("{}\n", r.deleted);
            for kv in &r.prev_kvs {
                simple_kv(&mut out, kv, KvStyle::default());
            }
            out
        }
    })
}

pub fn txn(format: Format, r: &TxnResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(txn_json(r)),
        Format::Fields => fields::txn(r),
        Format::Table => return Err(unsupported(format)),
        Format::Simple => txn_simple(r),
    })
}

fn txn_simple(r: &TxnResponse) -> String {
    let mut out = String::from(if r.succeeded {
        "SUCCESS\n"
    } else {
        "FAILURE\n"
    });
    for op in &r.responses {
        out.push('\n');
        match &op.response {
            Some(response_op::Response::ResponseRange(r)) => {
                for kv in &r.kvs {
                    simple_kv(&mut out, kv, KvStyle::default());
                }
            }
            Some(response_op::Response::ResponsePut(r)) => {
                out.push_str("OK\n");
                if let Some(prev) = &r.prev_kv {
                    simple_kv(&mut out, prev, KvStyle::default());
                }
            }
            Some(response_op::Response::ResponseDeleteRange(r)) => {
                out.push_str(&format!("{}\n", r.deleted));
                for kv in &r.prev_kvs {
                    simple_kv(&mut out, kv, KvStyle::default());
                }
            }
            Some(response_op::Response::ResponseTxn(r)) => out.push_str(&txn_simple(r)),
            None => out.push_str("unexpected response\n"),
        }
    }
    out
}

pub fn watch(format: Format, b: &WatchBatch, style: KvStyle) -> Printed {
    Ok(match format {
        Format::Json => {
            let events: Vec<String> = b.events.iter().map(json::event).collect();
            let header = json::header_fields(b.header.as_ref()).build();
            json_line(
                Obj::new()
                    .raw("Header", header)
                    .raw("Events", json::array(events))
                    .raw("CompactRevision", "0".into())
                    .raw("Canceled", "false".into())
                    .raw("Created", "false".into())
                    .build(),
            )
        }
        Format::Fields => fields::watch(b),
        Format::Table => return Err(unsupported(format)),
        Format::Simple if b.is_progress_notify() => format!("progress notify: {}\n", b.revision()),
        Format::Simple => {
            let mut out = String::new();
            for e in &b.events {
                let kind = if e.r#type == EventType::Delete as i32 {
                    "DELETE"
                } else {
                    "PUT"
                };
                out.push_str(kind);
                out.push('\n');
                if let Some(prev) = &e.prev_kv {
                    simple_kv(&mut out, prev, style);
                }
                if let Some(kv) = &e.kv {
                    simple_kv(&mut out, kv, style);
                }
            }
            out
        }
    })
}

/// The JSON etcdctl prints for a watch the server canceled because of compaction.
pub fn watch_compacted_json(header: Option<&ResponseHeader>, compact_revision: i64) -> String {
    json_line(
        Obj::new()
            .raw("Header", json::header_fields(header).build())
            .raw("Events", "[]".into())
            .raw("CompactRevision", compact_revision.to_string())
            .raw("Canceled", "true".into())
            .raw("Created", "false".into())
            .build(),
    )
}

pub fn compaction(_format: Format, _r: &CompactionResponse, rev: i64) -> String {
    // etcdctl prints the same line in every format.
    format!("compacted revision {rev}\n")
}

pub fn lease_grant(format: Format, r: &LeaseGrantResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(
            json::header_fields(r.header.as_ref())
                .raw("ID", r.id.to_string())
                .raw("TTL", r.ttl.to_string())
                .raw("Error", json::string(&r.error))
                .build(),
        ),
        Format::Fields => fields::lease_grant(r),
        Format::Table => return Err(unsupported(format)),
        Format::Simple => format!("lease {:016x} granted with TTL({}s)\n", r.id, r.ttl),
    })
}

pub fn lease_revoke(format: Format, id: i64, r: &LeaseRevokeResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(
            Obj::new()
                .opt("header", json::header(r.header.as_ref()))
                .build(),
        ),
        Format::Fields => fields::header_only(r.header.as_ref()),
        Format::Table => return Err(unsupported(format)),
        Format::Simple => format!("lease {id:016x} revoked\n"),
    })
}

pub fn lease_keep_alive(format: Format, r: &LeaseKeepAliveResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(
            json::header_fields(r.header.as_ref())
                .raw("ID", r.id.to_string())
                .raw("TTL", r.ttl.to_string())
                .build(),
        ),
        Format::Fields => fields::lease_keep_alive(r),
        Format::Table => return Err(unsupported(format)),
        Format::Simple => format!("lease {:016x} keepalived with TTL({})\n", r.id, r.ttl),
    })
}

pub fn lease_time_to_live(format: Format, r: &LeaseTimeToLiveResponse, with_keys: bool) -> Printed {
    Ok(match format {
        Format::Json => {
            let keys = if r.keys.is_empty() {
                "null".to_string()
            } else {
                json::array(
                    r.keys
                        .iter()
                        .map(|k| json::string(&json::base64(k)))
                        .collect(),
                )
            };
            json_line(
                json::header_fields(r.header.as_ref())
                    .raw("id", r.id.to_string())
                    .raw("ttl", r.ttl.to_string())
                    .raw("granted-ttl", r.granted_ttl.to_string())
                    .raw("keys", keys)
                    .build(),
            )
        }
        Format::Fields => fields::lease_time_to_live(r),
        Format::Table => return Err(unsupported(format)),
        Format::Simple if r.granted_ttl == 0 && r.ttl == -1 => {
            format!("lease {:016x} already expired\n", r.id)
        }
        Format::Simple => {
            let mut line = format!(
                "lease {:016x} granted with TTL({}s), remaining({}s)",
                r.id, r.granted_ttl, r.ttl
            );
            if with_keys {
                let keys: Vec<String> = r.keys.iter().map(|k| lossy(k).into_owned()).collect();
                line.push_str(&format!(", attached keys([{}])", keys.join(" ")));
            }
            line + "\n"
        }
    })
}

pub fn lease_list(format: Format, r: &LeaseLeasesResponse) -> Printed {
    Ok(match format {
        Format::Json => {
            let leases = json::array(
                r.leases
                    .iter()
                    .map(|l| Obj::new().raw("id", l.id.to_string()).build())
                    .collect(),
            );
            json_line(
                json::header_fields(r.header.as_ref())
                    .raw("leases", leases)
                    .build(),
            )
        }
        Format::Fields => fields::lease_list(r),
        Format::Table => return Err(unsupported(format)),
        Format::Simple => {
            let mut out = format!("found {} leases\n", r.leases.len());
            for l in &r.leases {
                out.push_str(&format!("{:016x}\n", l.id));
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use minietcd_client::pb::etcdserverpb::MemberRemoveResponse;

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 324952591200643719,
            member_id: 3319814642761637952,
            revision: 5,
            raft_term: 2,
        })
    }

    #[test]
    fn get_json_matches_etcdctl() {
        let r = RangeResponse {
            header: header(),
            kvs: vec![KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 5,
                version: 3,
                value: b"baz".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            get(Format::Json, &r, KvStyle::default(), false).unwrap(),
            "{\"header\":{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":5,\"raft_term\":2},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":5,\"version\":3,\"value\":\"YmF6\"}],\"count\":1}\n"
        );
        assert_eq!(
            get(Format::Simple, &r, KvStyle::default(), false).unwrap(),
            "foo\nbaz\n"
        );
        assert_eq!(
            get(Format::Simple, &r, KvStyle { value_only: true }, false).unwrap(),
            "baz\n"
        );
    }

    #[test]
    fn lease_lines_match_etcdctl() {
        let r = LeaseGrantResponse {
            header: header(),
            id: 0x2040a1fd53e4c921,
            ttl: 100,
            error: String::new(),
        };
        assert_eq!(
            lease_grant(Format::Simple, &r).unwrap(),
            "lease 2040a1fd53e4c921 granted with TTL(100s)\n"
        );
        assert_eq!(
            lease_grant(Format::Json, &r).unwrap(),
            "{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":5,\"raft_term\":2,\"ID\":2324035517129476385,\"TTL\":100,\"Error\":\"\"}\n"
        );
    }

    #[test]
    fn snapshot_status_prints_like_etcdctl_in_every_format() {
        // What etcdctl 3.4.23 printed for a snapshot of hash 157208308 (0x95ecef4).
        let st = minietcd::storage::snapshot_file::SnapshotStatus {
            hash: 157_208_308,
            revision: 10,
            total_keys: 14,
            total_size: 20480,
        };
        assert_eq!(
            snapshot_status(Format::Table, &st).unwrap(),
            "+---------+----------+------------+------------+\n\
             |  HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +---------+----------+------------+------------+\n\
             | 95ecef4 |       10 |         14 |      20 kB |\n\
             +---------+----------+------------+------------+\n"
        );
        assert_eq!(
            snapshot_status(Format::Fields, &st).unwrap(),
            "\"Hash\" : 157208308\n\"Revision\" : 10\n\"Keys\" : 14\n\"Size\" : 20480\n"
        );
        assert_eq!(
            snapshot_status(Format::Simple, &st).unwrap(),
            "95ecef4, 10, 14, 20 kB\n"
        );
        assert_eq!(
            snapshot_status(Format::Json, &st).unwrap(),
            "{\"hash\":157208308,\"revision\":10,\"totalKey\":14,\"totalSize\":20480}\n"
        );
    }

    #[test]
    fn formats_without_a_printer_fail_like_etcdctl() {
        let r = PutResponse::default();
        let f = put(Format::Table, &r).unwrap_err();
        assert_eq!(
            (f.message.as_str(), f.code),
            ("table not supported as output format", 4)
        );
        let m = MemberRemoveResponse::default();
        let f = member_remove(Format::Fields, 1, &m).unwrap_err();
        assert_eq!(f.message, "fields not supported as output format");
    }
}
