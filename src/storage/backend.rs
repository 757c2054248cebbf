//! The sled layout and recovery of the in-memory state from it.
//!
//! Everything lives in ONE sled tree because a sled `Batch` is atomic only within a tree:
//! the kv rows of a revision, the meta counters, the `applied` blob and lease rows must land
//! together. Keys are prefixed:
//!
//! - `k | main BE | sub BE [| t]`: a revision's KeyValue (protobuf); `t` marks a tombstone,
//!   whose KeyValue holds only the key and the delete revision.
//! - `l | id BE`: a lease, value = granted TTL in seconds (i64 BE).
//! - `a | member id BE | alarm type BE`: an active alarm (see [`super::alarm`]).
//! - `A/...`: users, roles and the auth flags (see [`super::auth`]).
//! - `m/...`: meta: schema marker, current and compacted revision, the `applied` blob, and
//!   the marker of a snapshot install in progress.

use std::collections::{BTreeMap, HashMap};

use prost::Message;

use super::error::StorageError;
use super::key_index::KeyIndex;
use super::lease::{parse_lease_row, Lease, LEASE_PREFIX};
use super::revision::{parse_row_key, read_i64, KV_PREFIX};
use crate::pb::mvccpb::KeyValue;

/// The sled tree holding the whole MVCC state.
pub(crate) const TREE_NAME: &str = "mvcc";
/// First byte of meta keys.
const META_PREFIX: u8 = b'm';
/// Schema marker: written on creation, checked on open.
pub(crate) const META_SCHEMA: &[u8] = b"m/schema";
/// The commit record: the latest revision (i64 BE), then 1 and the raft layer's opaque
/// `applied` blob, or 0 when none was ever given. One row, so every apply adds exactly one
/// meta write to its batch (sled's cost is per row). The revision is kept apart from the kv
/// rows because compaction can delete the row of the latest revision (a tombstone).
pub(crate) const META_COMMIT: &[u8] = b"m/commit";
/// The last compaction revision (i64 BE).
pub(crate) const META_COMPACTED: &[u8] = b"m/compacted";
/// Present while a snapshot install rewrites the tree.
pub(crate) const META_INSTALLING: &[u8] = b"m/installing";
/// The schema this code writes.
pub(crate) const SCHEMA_VERSION: &[u8] = b"minietcd-mvcc-v1";
/// etcd's first revision: a fresh store is at 1 and its first write gets 2.
pub(crate) const FIRST_REVISION: i64 = 1;
/// sled's page cache of the store's live database, in sled's measure (the pages' encoded
/// bytes; decoded in memory they take about 1.5-2x that). Measured at a million keys (256-byte
/// values, a fifth overwritten; three members; 1000 puts/s on random keys), once a put no
/// longer read its key's old row and `--snapshot-count` no longer copied the whole store
/// through the cache: 256 MiB gave the largest member an RSS of 607 MiB (etcd 3.4: 734) with a
/// quiet put p50 / p99 of 1.16 / 5.09 ms (etcd about 1.05 / 14); 384 MiB 677-731 MiB and
/// 1.14-1.24 / 2.9-3.4 ms; sled's default of 1 GiB 798 MiB and 0.99 / 2.15 ms. Before those
/// two changes 256 MiB cost a 5 ms put p50: a put read an evicted page back for every write.
pub(crate) const STORE_CACHE_BYTES: u64 = 256 << 20;
/// sled's page cache of a database being filled (a snapshot install's or a defragment's
/// copy, see `defrag`): rows only go in, and a small cache makes the copy faster as well as
/// lighter (a million-key install alone: 12.5 s with 1 GiB, 7.5 s with this, peak RSS 790 ->
/// 525 MB).
pub(crate) const COPY_CACHE_BYTES: u64 = 256 << 20;

/// How the store's own sled database is opened (its page cache bounded by
/// [`STORE_CACHE_BYTES`]).
pub(crate) fn store_db_config(dir: &std::path::Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(STORE_CACHE_BYTES)
}

/// How a copy of the store being filled is opened (see [`COPY_CACHE_BYTES`]): its IO
/// threads write one buffer at a time (the vendored sled's `serialize_writes`: a copy's writes
/// come in bursts of whole segments, and concurrent writers spun on the file's lock).
pub(crate) fn copy_db_config(dir: &std::path::Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(COPY_CACHE_BYTES)
        .serialize_writes(true)
}

/// The in-memory state: what reads need besides the kv rows.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// key -> its generations of revisions.
    pub index: BTreeMap<Vec<u8>, KeyIndex>,
    /// lease id -> lease.
    pub leases: BTreeMap<i64, Lease>,
    /// live key -> the lease it is attached to (the reverse of `Lease::keys`), so that a
    /// put learns its key's lease without reading the key's row.
    pub key_leases: HashMap<Vec<u8>, i64>,
    /// The latest revision.
    pub current: i64,
    /// The last compaction revision (0 when never compacted).
    pub compacted: i64,
    /// The active alarms.
    pub alarms: super::alarm::Alarms,
    /// Users, roles and permissions.
    pub auth: super::auth::AuthState,
}

/// What recovery found.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The rebuilt state.
    pub state: State,
    /// The stored `applied` blob.
    pub applied: Option<Vec<u8>>,
    /// Whether a snapshot install was interrupted.
    pub installing: bool,
    /// Whether any row at all was seen (an empty tree is a fresh store).
    pub empty: bool,
    /// The bytes of the kv rows seen (keys and values).
    pub kv_bytes: u64,
}

/// The fields of a kv row's `KeyValue` that recovery reads: decoding the whole message would
/// copy every value only to drop it (prost skips the fields a message does not declare).
#[derive(Clone, PartialEq, prost::Message)]
struct KvHead {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "3")]
    mod_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(int64, tag = "6")]
    lease: i64,
}

/// Rebuilds the state from rows in key order (the tree's or a snapshot's). Every row is
/// validated: anything minietcd would not have written is `Corrupt`.
pub(crate) fn recover<I>(rows: I) -> Result<Recovered, StorageError>
where
    I: IntoIterator<Item = Result<(sled::IVec, sled::IVec), StorageError>>,
{
    let mut rec = Recovered {
        empty: true,
        ..Recovered::default()
    };
    let mut schema: Option<sled::IVec> = None;
    let mut current = None;
    let mut compacted = 0;
    let mut max_row_main = 0;
    // The newest tombstone of a key that was not live (0: none).
    let mut lone_tombstones = 0;
    // Latest lease id per key, to re-attach keys once all leases are known.
    let mut key_lease: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for row in rows {
        let (k, v) = row?;
        rec.empty = false;
        match k.first() {
            Some(&KV_PREFIX) => {
                let (rev, tombstone) = parse_row_key(&k)?;
                let kv = KvHead::decode(v.as_ref()).map_err(|e| {
                    StorageError::Corrupt(format!("undecodable kv row at {rev:?}: {e}"))
                })?;
                if kv.key.is_empty() || kv.mod_revision != rev.main {
                    return Err(StorageError::Corrupt(format!(
                        "kv row at {rev:?} holds mod_revision {} for key {:?}",
                        kv.mod_revision, kv.key
                    )));
                }
                max_row_main = max_row_main.max(rev.main);
                rec.kv_bytes += (k.len() + v.len()) as u64;
                // The key's lease first: the index then takes the decoded key itself (one
                // walk of the index per row; a key seen before drops its copy).
                if tombstone || kv.lease == 0 {
                    if !key_lease.is_empty() {
                        key_lease.remove(&kv.key);
                    }
                } else {
                    key_lease.insert(kv.key.clone(), kv.lease);
                }
                let ki = rec.state.index.entry(kv.key).or_default();
                if tombstone {
                    if !ki.tombstone(rev) {
                        // Left by a compaction interrupted between a generation's put rows
                        // and its tombstone row; the next compaction removes it.
                        tracing::debug!(?rev, "tombstone of a key that is not live");
                        lone_tombstones = lone_tombstones.max(rev.main);
                        ki.restore_lone_tombstone(rev, kv.create_revision, kv.version);
                    }
                } else {
                    ki.restore_put(rev, kv.create_revision, kv.version);
                }
            }
            Some(&LEASE_PREFIX) => {
                let (id, ttl_secs) = parse_lease_row(&k, &v)?;
                rec.state.leases.insert(
                    id,
                    Lease {
                        ttl_secs,
                        ..Lease::default()
                    },
                );
            }
            Some(&super::alarm::ALARM_PREFIX) => {
                rec.state.alarms.insert(super::alarm::parse_alarm_key(&k)?);
            }
            Some(&super::auth::AUTH_PREFIX) => {
                super::auth::recover_row(&mut rec.state.auth, &k, &v)?;
            }
            Some(&META_PREFIX) => match k.as_ref() {
                META_SCHEMA => schema = Some(v),
                META_COMMIT => {
                    let (cur, applied) = parse_commit_row(&v)?;
                    current = Some(cur);
                    rec.applied = applied;
                }
                META_COMPACTED => compacted = read_i64(Some(&v))?,
                META_INSTALLING => rec.installing = true,
                other => {
                    return Err(StorageError::Corrupt(format!("unknown meta key {other:?}")));
                }
            },
            _ => return Err(StorageError::Corrupt(format!("unknown row key {k:?}"))),
        }
    }
    if rec.empty || rec.installing {
        return Ok(rec);
    }
    match schema {
        Some(s) if s.as_ref() == SCHEMA_VERSION => {}
        Some(s) => {
            return Err(StorageError::Corrupt(format!(
                "unknown schema {:?} (this build reads {:?})",
                String::from_utf8_lossy(&s),
                String::from_utf8_lossy(SCHEMA_VERSION)
            )))
        }
        None => {
            return Err(StorageError::Corrupt(
                "the mvcc tree has no schema marker".into(),
            ))
        }
    }
    let current = current
        .ok_or_else(|| StorageError::Corrupt("the mvcc tree has no current revision".into()))?;
    if current < max_row_main || current < FIRST_REVISION || compacted > current {
        return Err(StorageError::Corrupt(format!(
            "current revision {current} is behind the rows ({max_row_main}) or the compaction ({compacted})"
        )));
    }
    if lone_tombstones > compacted {
        // Only a compaction leaves a tombstone without its puts, and only at or below its
        // revision.
        return Err(StorageError::Corrupt(format!(
            "a tombstone at revision {lone_tombstones} has no put before it (compacted at {compacted})"
        )));
    }
    for (key, id) in key_lease {
        match rec.state.leases.get_mut(&id) {
            Some(l) => {
                l.keys.insert(key.clone());
                rec.state.key_leases.insert(key, id);
            }
            None => tracing::warn!(lease = id, "live key attached to a missing lease; detached"),
        }
    }
    rec.state.current = current;
    rec.state.compacted = compacted;
    Ok(rec)
}

/// Rows written by the earlier writes of a group whose sled batch is not applied yet: row
/// key -> value. Reads inside the group look here before the tree.
pub(crate) type Overlay = std::collections::HashMap<Vec<u8>, sled::IVec>;

/// The row changes of one write, in order (a group of writes gathers them, see
/// `GroupRows`).
#[derive(Debug, Default)]
pub(crate) struct RowOps(Vec<(Vec<u8>, Option<sled::IVec>)>);

impl RowOps {
    /// Sets a row.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0
            .push((key.into(), Some(sled::IVec::from(value.into()))));
    }

    /// Removes a row.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.0.push((key.into(), None));
    }

    /// The changes, in order.
    pub fn into_inner(self) -> Vec<(Vec<u8>, Option<sled::IVec>)> {
        self.0
    }
}

/// Reads the KeyValue of a live row (never a tombstone: the index never points reads at
/// one), from `overlay` first. A missing row means the index and the tree disagree.
pub(crate) fn load_kv(
    tree: &sled::Tree,
    overlay: Option<&Overlay>,
    rev: super::revision::Revision,
) -> Result<KeyValue, StorageError> {
    let key = super::revision::row_key(rev, false);
    if let Some(bytes) = overlay.and_then(|o| o.get(key.as_ref() as &[u8])) {
        return decode_kv(bytes, rev);
    }
    find_kv(tree, rev)?.ok_or_else(|| StorageError::Corrupt(format!("kv row {rev:?} missing")))
}

fn decode_kv(bytes: &[u8], rev: super::revision::Revision) -> Result<KeyValue, StorageError> {
    KeyValue::decode(bytes)
        .map_err(|e| StorageError::Corrupt(format!("undecodable kv row at {rev:?}: {e}")))
}

/// The kv row of revision `rev` from the tree; `None` when it is not there (compacted).
pub(crate) fn find_kv(
    tree: &sled::Tree,
    rev: super::revision::Revision,
) -> Result<Option<KeyValue>, StorageError> {
    let Some(bytes) = tree.get(super::revision::row_key(rev, false))? else {
        return Ok(None);
    };
    decode_kv(&bytes, rev).map(Some)
}

/// Encodes a counter for a meta row.
pub(crate) fn i64_bytes(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Encodes the commit record (see [`META_COMMIT`]).
pub(crate) fn commit_row(current: i64, applied: Option<&[u8]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + applied.map_or(0, <[u8]>::len));
    v.extend_from_slice(&current.to_be_bytes());
    match applied {
        Some(a) => {
            v.push(1);
            v.extend_from_slice(a);
        }
        None => v.push(0),
    }
    v
}

/// Decodes the commit record.
pub(crate) fn parse_commit_row(v: &[u8]) -> Result<(i64, Option<Vec<u8>>), StorageError> {
    let current = read_i64(v.get(..8))?;
    match v.get(8) {
        Some(0) if v.len() == 9 => Ok((current, None)),
        Some(1) => Ok((current, Some(v.get(9..).unwrap_or_default().to_vec()))),
        _ => Err(StorageError::Corrupt("garbled commit record".into())),
    }
}
