//! `-w fields`: etcdctl's `"Name" : value` lines (`printer_fields.go`), one field a line.
//!
//! Values print as Go's `fmt.Println` prints them (numbers in decimal, `true`/`false`,
//! string slices as `[a b]`) and strings as Go's `%q` quotes them.

use minietcd_client::pb::authpb::permission::Type as PermType;
use minietcd_client::pb::etcdserverpb::{
    response_op, AlarmResponse, AuthRoleGetResponse, AuthRoleListResponse, DeleteRangeResponse,
    HashKvResponse, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseTimeToLiveResponse, MemberListResponse, PutResponse, RangeResponse, ResponseHeader,
    StatusResponse, TxnResponse,
};
use minietcd_client::pb::mvccpb::{event::EventType, KeyValue};
use minietcd_client::WatchBatch;

use crate::printer::{alarm_name, Health};

/// Go's `strconv.Quote` of a byte string: printable characters as they are, the rest escaped
/// (`\n`, `\x00`, `\u200b`), invalid UTF-8 byte by byte.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if printable(c) => out.push(c),
                c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push_str(&format!("\\U{:08x}", c as u32)),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// Close to Go's `unicode.IsPrint`: no control or format characters, no separators but the
/// ASCII space.
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'))
}

/// Lines under construction.
#[derive(Default)]
struct Lines(String);

impl Lines {
    /// `fmt.Println("\"name\" :", value)`.
    fn field(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        self.0.push_str(&format!("\"{name}\" : {value}\n"));
        self
    }
    /// `fmt.Printf("\"name\" : %q\n", value)`.
    fn quoted(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.field(name, quote(value))
    }
    fn blank(&mut self) -> &mut Self {
        self.0.push('\n');
        self
    }
    /// etcdctl's `hdr`. A missing header prints as zeros (etcdctl itself would crash).
    fn header(&mut self, h: Option<&ResponseHeader>) -> &mut Self {
        let h = h.copied().unwrap_or_default();
        self.field("ClusterID", h.cluster_id)
            .field("MemberID", h.member_id)
            .field("Revision", h.revision)
            .field("RaftTerm", h.raft_term)
    }
    fn kv(&mut self, prefix: &str, kv: &KeyValue) -> &mut Self {
        self.quoted(&format!("{prefix}Key"), &kv.key)
            .field(&format!("{prefix}CreateRevision"), kv.create_revision)
            .field(&format!("{prefix}ModRevision"), kv.mod_revision)
            .field(&format!("{prefix}Version"), kv.version)
            .quoted(&format!("{prefix}Value"), &kv.value)
            .field(&format!("{prefix}Lease"), kv.lease)
    }
}

/// Go's `fmt.Println` of a `[]string`: `[a b c]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

fn get_into(l: &mut Lines, r: &RangeResponse) {
    l.header(r.header.as_ref());
    for kv in &r.kvs {
        l.kv("", kv);
    }
    l.field("More", r.more).field("Count", r.count);
}

fn put_into(l: &mut Lines, r: &PutResponse) {
    l.header(r.header.as_ref());
    if let Some(prev) = &r.prev_kv {
        l.kv("Prev", prev);
    }
}

fn delete_into(l: &mut Lines, r: &DeleteRangeResponse) {
    l.header(r.header.as_ref()).field("Deleted", r.deleted);
    for kv in &r.prev_kvs {
        l.kv("Prev", kv);
    }
}

pub fn get(r: &RangeResponse) -> String {
    let mut l = Lines::default();
    get_into(&mut l, r);
    l.0
}

pub fn put(r: &PutResponse) -> String {
    let mut l = Lines::default();
    put_into(&mut l, r);
    l.0
}

pub fn delete(r: &DeleteRangeResponse) -> String {
    let mut l = Lines::default();
    delete_into(&mut l, r);
    l.0
}

pub fn txn(r: &TxnResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref()).field("Succeeded", r.succeeded);
    for op in &r.responses {
        match &op.response {
            Some(response_op::Response::ResponseRange(r)) => get_into(&mut l, r),
            Some(response_op::Response::ResponsePut(r)) => put_into(&mut l, r),
            Some(response_op::Response::ResponseDeleteRange(r)) => delete_into(&mut l, r),
            // etcdctl's txn command cannot nest a txn; print what its default case would.
            Some(response_op::Response::ResponseTxn(_)) | None => {
                l.field("Unknown", quote(b"<nil>"));
            }
        }
    }
    l.0
}

pub fn watch(b: &WatchBatch) -> String {
    let mut l = Lines::default();
    l.header(b.header.as_ref());
    for e in &b.events {
        let kind = if e.r#type == EventType::Delete as i32 {
            "DELETE"
        } else {
            "PUT"
        };
        l.field("Type", kind);
        if let Some(prev) = &e.prev_kv {
            l.kv("Prev", prev);
        }
        l.kv("", &e.kv.clone().unwrap_or_default());
    }
    l.0
}

pub fn lease_grant(r: &LeaseGrantResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref())
        .field("ID", r.id)
        .field("TTL", r.ttl);
    l.0
}

pub fn header_only(h: Option<&ResponseHeader>) -> String {
    let mut l = Lines::default();
    l.header(h);
    l.0
}

pub fn lease_keep_alive(r: &LeaseKeepAliveResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref())
        .field("ID", r.id)
        .field("TTL", r.ttl);
    l.0
}

pub fn lease_time_to_live(r: &LeaseTimeToLiveResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref())
        .field("ID", r.id)
        .field("TTL", r.ttl)
        .field("GrantedTTL", r.granted_ttl);
    for k in &r.keys {
        l.quoted("Key", k);
    }
    l.0
}

pub fn lease_list(r: &LeaseLeasesResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref());
    for lease in &r.leases {
        l.field("ID", lease.id);
    }
    l.0
}

pub fn member_list(r: &MemberListResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref());
    for m in &r.members {
        l.field("ID", m.id).quoted("Name", m.name.as_bytes());
        for u in &m.peer_ur_ls {
            l.quoted("PeerURL", u.as_bytes());
        }
        for u in &m.client_ur_ls {
            l.quoted("ClientURL", u.as_bytes());
        }
        l.field("IsLearner", m.is_learner).blank();
    }
    l.0
}

pub fn endpoint_health(results: &[Health]) -> String {
    let mut l = Lines::default();
    for h in results {
        l.quoted("Endpoint", h.endpoint.as_bytes())
            .field("Health", h.healthy)
            .field("Took", h.took_text())
            .field("Error", h.error.as_deref().unwrap_or(""))
            .blank();
    }
    l.0
}

pub fn endpoint_status(statuses: &[(String, StatusResponse)]) -> String {
    let mut l = Lines::default();
    for (ep, st) in statuses {
        l.header(st.header.as_ref())
            .quoted("Version", st.version.as_bytes())
            .field("DBSize", st.db_size)
            .field("Leader", st.leader)
            .field("IsLearner", st.is_learner)
            .field("RaftIndex", st.raft_index)
            .field("RaftTerm", st.raft_term)
            .field("RaftAppliedIndex", st.raft_applied_index)
            .field("Errors", go_list(&st.errors))
            .quoted("Endpoint", ep.as_bytes())
            .blank();
    }
    l.0
}

pub fn endpoint_hashkv(hashes: &[(String, HashKvResponse)]) -> String {
    let mut l = Lines::default();
    for (ep, h) in hashes {
        l.header(h.header.as_ref())
            .quoted("Endpoint", ep.as_bytes())
            .field("Hash", h.hash)
            .blank();
    }
    l.0
}

pub fn alarm(r: &AlarmResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref());
    for a in &r.alarms {
        l.field("MemberID", a.member_id)
            .field("AlarmType", alarm_name(a.alarm))
            .blank();
    }
    l.0
}

pub fn snapshot_status(st: &minietcd::storage::snapshot_file::SnapshotStatus) -> String {
    let mut l = Lines::default();
    l.field("Hash", st.hash)
        .field("Revision", st.revision)
        .field("Keys", st.total_keys)
        .field("Size", st.total_size);
    l.0
}

pub fn role_get(r: &AuthRoleGetResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref());
    for p in &r.perm {
        let t = PermType::try_from(p.perm_type).map_or("READ", |t| t.as_str_name());
        // etcdctl's Println gets "\"PermType\" : " and the name: two spaces.
        l.field("PermType", format!(" {t}"))
            .quoted("Key", &p.key)
            .quoted("RangeEnd", &p.range_end);
    }
    l.0
}

pub fn role_list(r: &AuthRoleListResponse) -> String {
    let mut l = Lines::default();
    l.header(r.header.as_ref());
    let mut line = String::from("\"Roles\" :");
    for role in &r.roles {
        line.push(' ');
        line.push_str(&quote(role.as_bytes()));
    }
    l.0.push_str(&line);
    l.0.push('\n');
    l.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_quote_like_go() {
        assert_eq!(quote(b"foo"), "\"foo\"");
        assert_eq!(quote(b"a\"b\\c\n\t\x00"), "\"a\\\"b\\\\c\\n\\t\\x00\"");
        assert_eq!(quote(b"\xff\xfeok"), "\"\\xff\\xfeok\"");
        assert_eq!(quote("héllo µs".as_bytes()), "\"héllo µs\"");
        assert_eq!(quote("\u{200b}".as_bytes()), "\"\\u200b\"");
    }

    #[test]
    fn a_put_prints_its_header_and_previous_value() {
        let r = PutResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 6,
                raft_term: 2,
            }),
            prev_kv: Some(KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 5,
                version: 4,
                value: b"bar".to_vec(),
                lease: 0,
            }),
        };
        assert_eq!(
            put(&r),
            "\"ClusterID\" : 1\n\"MemberID\" : 2\n\"Revision\" : 6\n\"RaftTerm\" : 2\n\
             \"PrevKey\" : \"foo\"\n\"PrevCreateRevision\" : 2\n\"PrevModRevision\" : 5\n\
             \"PrevVersion\" : 4\n\"PrevValue\" : \"bar\"\n\"PrevLease\" : 0\n"
        );
    }
}
