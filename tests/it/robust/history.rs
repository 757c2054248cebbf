//! What the workload records and the checkers read: client operations with invoke and return
//! times, and watch sessions with every response they received. Nothing here talks to a
//! server; the checkers see only these values.

use std::collections::BTreeMap;

/// A key's state as a read or a watch event reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kv {
    /// The value (values are unique per write in the workload).
    pub value: String,
    /// Revision of the write that produced this value.
    pub mod_rev: i64,
    /// Revision of the put that created this generation of the key.
    pub create_rev: i64,
    /// Number of puts in this generation (1 on create).
    pub version: i64,
}

/// What a client asked for. Every operation touches one key, so histories can be checked
/// key by key; a multi-key txn is recorded as one [`Op`] per key, sharing a [`Op::txn`] id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Put `value`.
    Put { value: String },
    /// Get the key, linearizable or serializable.
    Get { serializable: bool },
    /// Delete the key.
    Delete,
    /// Txn: if the value equals `expect` then put `value`, else get the key.
    Cas { expect: String, value: String },
    /// Revoke lease `lease`, recorded on the one key the workload attached to it (a put of a
    /// value ending in [`lease_suffix`]): it deletes the key if that value is still there.
    /// `expiry`: not a request but the lease's expiry, recorded as an unknown revoke invoked
    /// at the lease's grant plus its TTL (it may not take effect earlier).
    Revoke { lease: i64, expiry: bool },
}

/// The end of every value the workload puts with lease `lease` attached.
pub fn lease_suffix(lease: i64) -> String {
    format!("@L{lease:x}")
}

/// What the server answered. `Unknown` is a timeout or any error for a write: the write may
/// or may not have happened. A read that failed changes nothing and is not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Put done at revision `rev`.
    Put { rev: i64 },
    /// The key's state (`None`: absent) at header revision `rev`.
    Get { kv: Option<Kv>, rev: i64 },
    /// `deleted` keys (0 or 1) deleted; header revision `rev`.
    Delete { deleted: i64, rev: i64 },
    /// Txn outcome; `current` is the else branch's read when it did not succeed.
    Cas {
        succeeded: bool,
        rev: i64,
        current: Option<Kv>,
    },
    /// The lease was revoked; header revision `rev`.
    Revoke { rev: i64 },
    /// Outcome unknown.
    Unknown,
}

/// One client operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which client (for reports).
    pub client: usize,
    /// Which member the client talked to (serializable reads are checked per member).
    pub member: usize,
    pub key: String,
    pub input: Input,
    pub output: Output,
    /// Invocation time, nanoseconds since the history began.
    pub invoke_ns: u64,
    /// Return time; `u64::MAX` when the outcome is unknown (it may take effect any time
    /// after its invocation).
    pub return_ns: u64,
    /// For one key's part of a multi-key txn: the txn's id, the same in every part. The
    /// parts take effect together at one revision, or none does.
    pub txn: Option<u64>,
}

impl Op {
    /// Whether the op is a write whose effect the client saw acknowledged with a revision:
    /// `(key, Some(value) for a put / None for a delete, revision)`.
    pub fn acked_write(&self) -> Option<(Option<&str>, i64)> {
        match (&self.input, &self.output) {
            (Input::Put { value }, Output::Put { rev }) => Some((Some(value.as_str()), *rev)),
            (
                Input::Cas { value, .. },
                Output::Cas {
                    succeeded: true,
                    rev,
                    ..
                },
            ) => Some((Some(value.as_str()), *rev)),
            (Input::Delete, Output::Delete { deleted: 1, rev }) => Some((None, *rev)),
            _ => None,
        }
    }

    /// The header revision of a completed op, if it has one.
    pub fn header_rev(&self) -> Option<i64> {
        match &self.output {
            Output::Put { rev }
            | Output::Get { rev, .. }
            | Output::Delete { rev, .. }
            | Output::Cas { rev, .. }
            | Output::Revoke { rev } => Some(*rev),
            Output::Unknown => None,
        }
    }
}

/// A watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// true: PUT, false: DELETE.
    pub put: bool,
    pub key: String,
    /// For a PUT the new state; for a DELETE `value` is empty and `mod_rev` the revision.
    pub kv: Kv,
    /// The state before, when the watch asked for prev_kv.
    pub prev: Option<Kv>,
}

impl Event {
    /// The revision the event belongs to.
    pub fn rev(&self) -> i64 {
        self.kv.mod_rev
    }
}

/// One watch response that carried events, or a progress notification (no events: every
/// event up to `header_rev` has been sent).
#[derive(Debug, Clone)]
pub struct WatchResponse {
    pub header_rev: i64,
    pub events: Vec<Event>,
}

/// One watch, from its creation until its stream ended (a member killed, a stream error) or
/// the test stopped it. A watcher that breaks is re-created from the revision after the last
/// one it saw, as a new session: resuming is checked that way.
#[derive(Debug, Clone)]
pub struct WatchSession {
    /// Which member served it.
    pub member: usize,
    /// `start_revision` it was created with.
    pub start_rev: i64,
    /// Whether it asked for prev_kv.
    pub prev_kv: bool,
    /// Whether it filtered DELETE events out (etcd's NODELETE filter).
    pub no_delete: bool,
    /// Whether it filtered PUT events out (etcd's NOPUT filter).
    pub no_put: bool,
    pub responses: Vec<WatchResponse>,
    /// Why it ended (`None`: stopped by the test after it saw everything).
    pub ended: Option<String>,
}

impl WatchSession {
    /// Every event of the session, in order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.responses.iter().flat_map(|r| r.events.iter())
    }

    /// The highest revision it has seen.
    pub fn last_rev(&self) -> Option<i64> {
        self.events().map(Event::rev).max()
    }
}

/// Everything one run recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub watches: Vec<WatchSession>,
}

/// Groups operations by key, keeping their order.
pub fn by_key(ops: &[Op]) -> BTreeMap<&str, Vec<&Op>> {
    let mut m: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        m.entry(op.key.as_str()).or_default().push(op);
    }
    m
}
