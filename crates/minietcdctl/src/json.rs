//! JSON as etcdctl writes it: Go's `encoding/json` applied to etcd's Go structs.
//!
//! Byte-for-byte compatibility needs Go's conventions, which serde's do not match: fields in
//! struct order (not sorted), `omitempty` on protobuf fields, byte slices as standard base64,
//! `<`, `>` and `&` escaped as `\u003c` and friends. So objects are written by hand here.

use minietcd_client::pb::etcdserverpb::{Member, ResponseHeader, StatusResponse};
use minietcd_client::pb::mvccpb::{Event, KeyValue};

/// An object under construction; fields are added in Go struct order.
#[derive(Default)]
pub struct Obj {
    fields: Vec<(String, String)>,
}

impl Obj {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a field unconditionally (no `omitempty`).
    pub fn raw(mut self, name: &str, json: String) -> Self {
        self.fields.push((name.to_string(), json));
        self
    }
    /// Adds an integer field, left out when zero (`omitempty`).
    pub fn int<T: Into<i128> + Copy>(self, name: &str, v: T) -> Self {
        if v.into() == 0 {
            self
        } else {
            self.raw(name, v.into().to_string())
        }
    }
    /// Adds a bool field, left out when false.
    pub fn boolean(self, name: &str, v: bool) -> Self {
        if v {
            self.raw(name, "true".into())
        } else {
            self
        }
    }
    /// Adds a byte field as base64, left out when empty.
    pub fn bytes(self, name: &str, v: &[u8]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, string(&base64(v)))
        }
    }
    /// Adds a string field, left out when empty.
    pub fn str(self, name: &str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, string(v))
        }
    }
    /// Adds an optional object, left out when absent.
    pub fn opt(self, name: &str, v: Option<String>) -> Self {
        match v {
            Some(json) => self.raw(name, json),
            None => self,
        }
    }
    /// Adds an array, left out when empty.
    pub fn list(self, name: &str, items: Vec<String>) -> Self {
        if items.is_empty() {
            self
        } else {
            self.raw(name, array(items))
        }
    }
    pub fn build(self) -> String {
        let body: Vec<String> = self
            .fields
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", string(&k)))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

pub fn array(items: Vec<String>) -> String {
    format!("[{}]", items.join(","))
}

/// A JSON string with Go's escaping.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Standard base64 with padding, as Go encodes `[]byte`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The fields of a response header (also embedded flat in clientv3's lease responses).
pub fn header_fields(h: Option<&ResponseHeader>) -> Obj {
    let h = h.copied().unwrap_or_default();
    Obj::new()
        .int("cluster_id", h.cluster_id)
        .int("member_id", h.member_id)
        .int("revision", h.revision)
        .int("raft_term", h.raft_term)
}

pub fn header(h: Option<&ResponseHeader>) -> Option<String> {
    h.map(|h| header_fields(Some(h)).build())
}

pub fn kv(kv: &KeyValue) -> String {
    Obj::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .build()
}

pub fn kvs(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(kv).collect()
}

pub fn event(e: &Event) -> String {
    Obj::new()
        .int("type", e.r#type)
        .opt("kv", e.kv.as_ref().map(kv))
        .opt("prev_kv", e.prev_kv.as_ref().map(kv))
        .build()
}

pub fn member(m: &Member) -> String {
    Obj::new()
        .int("ID", m.id)
        .str("name", &m.name)
        .list("peerURLs", m.peer_ur_ls.iter().map(|u| string(u)).collect())
        .list(
            "clientURLs",
            m.client_ur_ls.iter().map(|u| string(u)).collect(),
        )
        .boolean("isLearner", m.is_learner)
        .build()
}

pub fn status(s: &StatusResponse) -> String {
    Obj::new()
        .opt("header", header(s.header.as_ref()))
        .str("version", &s.version)
        .int("dbSize", s.db_size)
        .int("leader", s.leader)
        .int("raftIndex", s.raft_index)
        .int("raftTerm", s.raft_term)
        .int("raftAppliedIndex", s.raft_applied_index)
        .list("errors", s.errors.iter().map(|e| string(e)).collect())
        .int("dbSizeInUse", s.db_size_in_use)
        .boolean("isLearner", s.is_learner)
        .build()
}

/// Go's `time.Duration.String()`: `925.605µs`, `1.452345ms`, `2.5s`.
pub fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    let (value, unit) = if nanos < 1_000 {
        return format!("{nanos}ns");
    } else if nanos < 1_000_000 {
        (nanos as f64 / 1e3, "µs")
    } else if nanos < 1_000_000_000 {
        (nanos as f64 / 1e6, "ms")
    } else {
        (nanos as f64 / 1e9, "s")
    };
    let mut text = format!("{value:.9}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    format!("{text}{unit}")
}

/// go-humanize's `Bytes`: SI units, one decimal below 10 (`20 kB`, `1.5 MB`).
pub fn human_bytes(n: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let exp = exp.min(SIZES.len() - 1);
    let val = ((n as f64 / 1000f64.powi(exp as i32)) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", SIZES[exp])
    } else {
        format!("{val:.0} {}", SIZES[exp])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foo2"), "Zm9vMg==");
        assert_eq!(base64(b"bar 2"), "YmFyIDI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn strings_escape_like_go() {
        assert_eq!(string("a<b>&\"\n"), "\"a\\u003cb\\u003e\\u0026\\\"\\n\"");
    }

    #[test]
    fn sizes_and_durations_print_like_go() {
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(
            go_duration(std::time::Duration::from_nanos(925_605)),
            "925.605µs"
        );
        assert_eq!(go_duration(std::time::Duration::from_millis(1500)), "1.5s");
    }
}
