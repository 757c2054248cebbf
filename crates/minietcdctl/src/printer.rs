//! etcdctl's output formats, `simple` and `json`, for each command. Every function returns
//! the exact text etcdctl writes to stdout (trailing newline included).

use minietcd_client::pb::etcdserverpb::ResponseHeader;
use minietcd_client::pb::etcdserverpb::{
    response_op, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    MemberListResponse, PutResponse, RangeResponse, ResponseOp, StatusResponse, TxnResponse,
};
use minietcd_client::pb::mvccpb::{event::EventType, KeyValue};
use minietcd_client::WatchBatch;

use crate::json::{self, Obj};

/// The `-w` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// etcdctl's human-readable lines.
    Simple,
    /// Go's JSON of the response structs.
    Json,
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

fn json_line(s: String) -> String {
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

pub fn get(format: Format, r: &RangeResponse, style: KvStyle, count_only: bool) -> String {
    match format {
        Format::Json => json_line(range_json(r)),
        Format::Simple if count_only => format!("{}\n", r.count),
        Format::Simple => {
            let mut out = String::new();
            for kv in &r.kvs {
                simple_kv(&mut out, kv, style);
            }
            out
        }
    }
}

pub fn put(format: Format, r: &PutResponse) -> String {
    match format {
        Format::Json => json_line(put_json(r)),
        Format::Simple => {
            let mut out = String::from("OK\n");
            if let Some(prev) = &r.prev_kv {
                simple_kv(&mut out, prev, KvStyle::default());
            }
            out
        }
    }
}

pub fn delete(format: Format, r: &DeleteRangeResponse) -> String {
    match format {
        Format::Json => json_line(delete_json(r)),
        Format::Simple => {
            let mut out = format!("{}\n", r.deleted);
            for kv in &r.prev_kvs {
                simple_kv(&mut out, kv, KvStyle::default());
            }
            out
        }
    }
}

pub fn txn(format: Format, r: &TxnResponse) -> String {
    match format {
        Format::Json => json_line(txn_json(r)),
        Format::Simple => {
            let mut out = String::from(if r.succeeded {
                "SUCCESS\n"
            } else {
                "FAILURE\n"
            });
            for op in &r.responses {
                out.push('\n');
                match &op.response {
                    Some(response_op::Response::ResponseRange(r)) => {
                        out.push_str(&get(Format::Simple, r, KvStyle::default(), false))
                    }
                    Some(response_op::Response::ResponsePut(r)) => {
                        out.push_str(&put(Format::Simple, r))
                    }
                    Some(response_op::Response::ResponseDeleteRange(r)) => {
                        out.push_str(&delete(Format::Simple, r))
                    }
                    Some(response_op::Response::ResponseTxn(r)) => {
                        out.push_str(&txn(Format::Simple, r))
                    }
                    None => out.push_str("unexpected response\n"),
                }
            }
            out
        }
    }
}

pub fn watch(format: Format, b: &WatchBatch, style: KvStyle) -> String {
    match format {
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
    }
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
    // etcdctl prints the same line in both formats.
    format!("compacted revision {rev}\n")
}

pub fn lease_grant(format: Format, r: &LeaseGrantResponse) -> String {
    match format {
        Format::Json => json_line(
            json::header_fields(r.header.as_ref())
                .raw("ID", r.id.to_string())
                .raw("TTL", r.ttl.to_string())
                .raw("Error", json::string(&r.error))
                .build(),
        ),
        Format::Simple => format!("lease {:016x} granted with TTL({}s)\n", r.id, r.ttl),
    }
}

pub fn lease_revoke(format: Format, id: i64, r: &LeaseRevokeResponse) -> String {
    match format {
        Format::Json => json_line(
            Obj::new()
                .opt("header", json::header(r.header.as_ref()))
                .build(),
        ),
        Format::Simple => format!("lease {id:016x} revoked\n"),
    }
}

pub fn lease_keep_alive(format: Format, r: &LeaseKeepAliveResponse) -> String {
    match format {
        Format::Json => json_line(
            json::header_fields(r.header.as_ref())
                .raw("ID", r.id.to_string())
                .raw("TTL", r.ttl.to_string())
                .build(),
        ),
        Format::Simple => format!("lease {:016x} keepalived with TTL({})\n", r.id, r.ttl),
    }
}

pub fn lease_time_to_live(format: Format, r: &LeaseTimeToLiveResponse, with_keys: bool) -> String {
    match format {
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
    }
}

pub fn lease_list(format: Format, r: &LeaseLeasesResponse) -> String {
    match format {
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
        Format::Simple => {
            let mut out = format!("found {} leases\n", r.leases.len());
            for l in &r.leases {
                out.push_str(&format!("{:016x}\n", l.id));
            }
            out
        }
    }
}

pub fn member_list(format: Format, r: &MemberListResponse) -> String {
    match format {
        Format::Json => json_line(
            Obj::new()
                .opt("header", json::header(r.header.as_ref()))
                .list("members", r.members.iter().map(json::member).collect())
                .build(),
        ),
        Format::Simple => {
            let mut out = String::new();
            for m in &r.members {
                let status = if m.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                };
                out.push_str(&format!(
                    "{:x}, {status}, {}, {}, {}, {}\n",
                    m.id,
                    m.name,
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    m.is_learner
                ));
            }
            out
        }
    }
}

pub fn endpoint_status(format: Format, statuses: &[(String, StatusResponse)]) -> String {
    match format {
        Format::Json => {
            let items = statuses
                .iter()
                .map(|(ep, st)| {
                    Obj::new()
                        .raw("Endpoint", json::string(ep))
                        .raw("Status", json::status(st))
                        .build()
                })
                .collect();
            json_line(json::array(items))
        }
        Format::Simple => {
            let mut out = String::new();
            for (ep, st) in statuses {
                let id = st.header.as_ref().map_or(0, |h| h.member_id);
                out.push_str(&format!(
                    "{ep}, {id:x}, {}, {}, {}, {}, {}, {}, {}, {}\n",
                    st.version,
                    json::human_bytes(u64::try_from(st.db_size).unwrap_or(0)),
                    st.leader == id,
                    st.is_learner,
                    st.raft_term,
                    st.raft_index,
                    st.raft_applied_index,
                    st.errors.join(", ")
                ));
            }
            out
        }
    }
}

/// One endpoint's health check.
pub struct Health {
    pub endpoint: String,
    pub healthy: bool,
    pub took: std::time::Duration,
    pub error: Option<String>,
}

/// Returns (stdout, stderr): etcdctl writes the simple health lines to stderr.
pub fn endpoint_health(format: Format, results: &[Health]) -> (String, String) {
    match format {
        Format::Json => {
            let items = results
                .iter()
                .map(|h| {
                    let obj = Obj::new()
                        .raw("endpoint", json::string(&h.endpoint))
                        .raw("health", h.healthy.to_string())
                        .raw("took", json::string(&json::go_duration(h.took)));
                    match &h.error {
                        Some(e) => obj.raw("error", json::string(e)).build(),
                        None => obj.build(),
                    }
                })
                .collect();
            (json_line(json::array(items)), String::new())
        }
        Format::Simple => {
            let mut err = String::new();
            for h in results {
                if h.healthy {
                    err.push_str(&format!(
                        "{} is healthy: successfully committed proposal: took = {}\n",
                        h.endpoint,
                        json::go_duration(h.took)
                    ));
                } else {
                    err.push_str(&format!(
                        "{} is unhealthy: failed to commit proposal: {}\n",
                        h.endpoint,
                        h.error.as_deref().unwrap_or("unknown error")
                    ));
                }
            }
            (String::new(), err)
        }
    }
}

/// etcdctl's `snapshot status`: hash (hex in simple), revision, total keys, total size.
pub fn snapshot_status(
    format: Format,
    st: &minietcd::storage::snapshot_file::SnapshotStatus,
) -> String {
    match format {
        Format::Json => json_line(
            json::Obj::new()
                .raw("hash", st.hash.to_string())
                .raw("revision", st.revision.to_string())
                .raw("totalKey", st.total_keys.to_string())
                .raw("totalSize", st.total_size.to_string())
                .build(),
        ),
        Format::Simple => format!(
            "{:x}, {}, {}, {}\n",
            st.hash,
            st.revision,
            st.total_keys,
            json::human_bytes(st.total_size)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            get(Format::Json, &r, KvStyle::default(), false),
            "{\"header\":{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":5,\"raft_term\":2},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":5,\"version\":3,\"value\":\"YmF6\"}],\"count\":1}\n"
        );
        assert_eq!(
            get(Format::Simple, &r, KvStyle::default(), false),
            "foo\nbaz\n"
        );
        assert_eq!(
            get(Format::Simple, &r, KvStyle { value_only: true }, false),
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
            lease_grant(Format::Simple, &r),
            "lease 2040a1fd53e4c921 granted with TTL(100s)\n"
        );
        assert_eq!(
            lease_grant(Format::Json, &r),
            "{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":5,\"raft_term\":2,\"ID\":2324035517129476385,\"TTL\":100,\"Error\":\"\"}\n"
        );
    }
}
