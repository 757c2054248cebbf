//! Snapshot files in etcd 3.4's own format, both ways: what `Maintenance.Snapshot` streams
//! (so `etcdctl snapshot save|status|restore` and a real etcd work on it unchanged), and what
//! `snapshot status|restore` read (so a snapshot of a real etcd restores into minietcd).
//!
//! The file is etcd's backend: a bbolt database (see [`super::bbolt`]) with etcd's buckets,
//! then the SHA-256 of the database (32 bytes). bbolt files are whole pages, so a file whose
//! size is 32 more than a multiple of 512 carries the hash (etcdctl's test).
//!
//! ```text
//! | bbolt database: meta, meta, freelist, pages ...  | sha256(database) |
//! |<------------ pages of 4096 bytes -------------->|<--- 32 bytes --->|
//! ```
//!
//! Buckets and their rows, etcd's encodings on the left, the store's rows (see
//! [`super::backend`]) on the right:
//!
//! ```text
//! key      main BE | '_' | sub BE [| 't']     -> mvccpb.KeyValue   k | main | sub [| t]
//!          (a tombstone's KeyValue holds only the key; the store's also its revision)
//! meta     consistent_index -> u64 BE (the applied Raft index), finishedCompactRev and
//!          scheduledCompactRev -> main BE | '_' | sub BE              m/compacted
//! lease    id BE -> leasepb.Lease {ID, TTL}                           l | id -> TTL BE
//! auth     authEnabled -> 0|1, authRevision -> u64 BE                 A/enabled, A/revision
//! authUsers, authRoles  name -> authpb.User | authpb.Role             A/u/name, A/r/name
//! alarm    etcdserverpb.AlarmMember -> empty                          a | member | type
//! members  member id (hex) -> {"id","peerURLs","name","clientURLs"}   (Raft's membership)
//! members_removed (empty), cluster  clusterVersion -> "3.4.0"
//! ```
//!
//! The store's current revision is not a row of etcd's: it is the newest revision in `key`
//! (or the compaction's, when that is newer), as etcd recovers it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};

use super::alarm::{alarm_key, parse_alarm_key, ALARM_PREFIX};
use super::auth::{AUTH_PREFIX, ENABLED_KEY, REVISION_KEY, ROLE_PREFIX, USER_PREFIX};
use super::backend::{
    commit_row, parse_commit_row, FIRST_REVISION, META_COMMIT, META_COMPACTED, META_SCHEMA,
    SCHEMA_VERSION,
};
use super::bbolt::{BoltError, BoltReader, BoltWriter};
use super::error::StorageError;
use super::lease::{lease_key, parse_lease_row, LEASE_PREFIX};
use super::revision::{parse_row_key, read_i64, row_key, Revision, KV_PREFIX};
use super::Row;
use crate::pb::etcdserverpb::AlarmMember;
use crate::pb::mvccpb::KeyValue;

/// Length of the hash trailer.
const SUM_BYTES: u64 = 32;
/// A database's size is a multiple of this, so a file 32 bytes past it carries a hash.
const HASH_ALIGN: u64 = 512;
/// Bytes read at a time while hashing.
const HASH_CHUNK_BYTES: usize = 64 * 1024;

// etcd 3.4's buckets and keys.
const KEY_BUCKET: &[u8] = b"key";
const META_BUCKET: &[u8] = b"meta";
const LEASE_BUCKET: &[u8] = b"lease";
const ALARM_BUCKET: &[u8] = b"alarm";
const AUTH_BUCKET: &[u8] = b"auth";
const AUTH_USERS_BUCKET: &[u8] = b"authUsers";
const AUTH_ROLES_BUCKET: &[u8] = b"authRoles";
const MEMBERS_BUCKET: &[u8] = b"members";
const MEMBERS_REMOVED_BUCKET: &[u8] = b"members_removed";
const CLUSTER_BUCKET: &[u8] = b"cluster";
const CONSISTENT_INDEX: &[u8] = b"consistent_index";
const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
const AUTH_ENABLED: &[u8] = b"authEnabled";
const AUTH_REVISION: &[u8] = b"authRevision";
const CLUSTER_VERSION_KEY: &[u8] = b"clusterVersion";
/// The cluster version etcd 3.4 records.
const CLUSTER_VERSION: &[u8] = b"3.4.0";
/// etcd's revision key: main (8 bytes BE), '_', sub (8 bytes BE), then 't' for a tombstone.
const REV_KEY_LEN: usize = 17;
const REV_SEPARATOR: u8 = b'_';
const TOMBSTONE_MARK: u8 = b't';

/// etcd's `leasepb.Lease`, a lease's row in the `lease` bucket.
#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRow {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// Why a snapshot file cannot be used, one line each (etcdctl's wording where it has one).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    #[error("expected sha256 {}, got {}", go_bytes(.expected), go_bytes(.got))]
    HashMismatch { expected: Vec<u8>, got: Vec<u8> },
    #[error("{0}")]
    Bolt(#[from] BoltError),
    #[error("not an etcd backend: {0}")]
    Contents(String),
    #[error("{0}")]
    Store(#[from] StorageError),
    #[error("open {path}: {}", go_io_error(.source))]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn open(path: &Path) -> Result<File, SnapshotFileError> {
    File::open(path).map_err(|source| SnapshotFileError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// An I/O error as Go words it: `no such file or directory`, without Rust's `(os error 2)`.
fn go_io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(at) => text.get(..at).unwrap_or(&text).to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// A byte slice as Go's `%v` prints it: `[1 2 3]`.
fn go_bytes(b: &[u8]) -> String {
    let parts: Vec<String> = b.iter().map(u8::to_string).collect();
    format!("[{}]", parts.join(" "))
}

/// What `snapshot status` shows (etcdctl's `snapshot.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32C over every bucket's name, then its keys and values, in bbolt's order.
    pub hash: u32,
    /// The main revision of the last row of the `key` bucket.
    pub revision: i64,
    /// Keys in every bucket.
    pub total_keys: u64,
    /// The database's size: its pages, the hash trailer left out (bbolt's `Tx.Size`).
    pub total_size: u64,
}

/// Reads a snapshot's status as etcdctl does: the hash trailer is not checked (restore checks
/// it), the pages are.
pub fn status(path: &Path) -> Result<SnapshotStatus, SnapshotFileError> {
    let reader = BoltReader::open(Box::new(open(path)?))?;
    scan(&reader, |_, _, _| Ok(()))
}

/// Visits every row of every bucket, computing the status on the way.
fn scan(
    r: &BoltReader<File>,
    mut on_row: impl FnMut(&[u8], &[u8], &[u8]) -> Result<(), SnapshotFileError>,
) -> Result<SnapshotStatus, SnapshotFileError> {
    r.check_length()?;
    let mut st = SnapshotStatus {
        hash: 0,
        revision: 0,
        total_keys: 0,
        total_size: r.size(),
    };
    for (name, bucket) in r.buckets()? {
        st.hash = crc32c::crc32c_append(st.hash, &name);
        r.for_each(&bucket, &mut |k: &[u8], v: &[u8], _nested: bool| {
            st.hash = crc32c::crc32c_append(st.hash, k);
            st.hash = crc32c::crc32c_append(st.hash, v);
            if name == KEY_BUCKET {
                st.revision = read_i64(k.get(..8)).unwrap_or(st.revision);
            }
            st.total_keys += 1;
            on_row(&name, k, v)
        })?;
    }
    Ok(st)
}

/// Checks the hash trailer as etcdctl's restore does: a file without one is refused unless
/// `skip_hash_check`; a file with one must match it (even when `skip_hash_check`, the
/// trailer is never read as pages).
pub fn verify_hash(file: &mut File, skip_hash_check: bool) -> Result<(), SnapshotFileError> {
    let len = file.metadata()?.len();
    let has_hash = len % HASH_ALIGN == SUM_BYTES;
    if !has_hash {
        return if skip_hash_check {
            Ok(())
        } else {
            Err(SnapshotFileError::MissingHash)
        };
    }
    if skip_hash_check {
        return Ok(());
    }
    let db_len = len - SUM_BYTES;
    let got = sha256_of(file, db_len)?;
    let mut expected = vec![0u8; SUM_BYTES as usize];
    file.seek(SeekFrom::Start(db_len))?;
    file.read_exact(&mut expected)?;
    if got != expected {
        return Err(SnapshotFileError::HashMismatch { expected, got });
    }
    Ok(())
}

/// The SHA-256 of the first `len` bytes of `file`.
fn sha256_of(file: &mut File, len: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(HASH_CHUNK_BYTES as u64)).unwrap_or(HASH_CHUNK_BYTES);
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact(chunk)?;
        h.update(&*chunk);
        left -= n as u64;
    }
    Ok(h.finalize().to_vec())
}

/// An etcd snapshot converted into the store's rows.
#[derive(Debug)]
pub struct Imported {
    /// Every row, in key order ([`super::MvccStore::install_rows`] takes them).
    pub rows: Vec<Row>,
    pub status: SnapshotStatus,
}

/// Reads an etcd snapshot file (hash checked as [`verify_hash`] does) into the store's rows.
pub fn read_etcd(path: &Path, skip_hash_check: bool) -> Result<Imported, SnapshotFileError> {
    let mut file = open(path)?;
    verify_hash(&mut file, skip_hash_check)?;
    let reader = BoltReader::open(Box::new(file))?;
    let mut rows: Vec<Row> = Vec::new();
    let mut newest = 0;
    let (mut finished, mut scheduled) = (0, 0);
    let bad = |bucket: &[u8], what: String| {
        SnapshotFileError::Contents(format!(
            "bucket {}: {what}",
            String::from_utf8_lossy(bucket)
        ))
    };
    let status = scan(&reader, |bucket, k, v| {
        match bucket {
            KEY_BUCKET => {
                let (rev, tombstone) =
                    parse_etcd_rev(k).ok_or_else(|| bad(bucket, format!("bad revision {k:?}")))?;
                let value = if tombstone {
                    let kv = KeyValue::decode(v).map_err(|e| bad(bucket, e.to_string()))?;
                    KeyValue {
                        key: kv.key,
                        mod_revision: rev.main,
                        ..KeyValue::default()
                    }
                    .encode_to_vec()
                } else {
                    v.to_vec()
                };
                newest = newest.max(rev.main);
                rows.push((row_key(rev, tombstone).into(), value.into()));
            }
            META_BUCKET => match k {
                FINISHED_COMPACT => {
                    finished = read_i64(v.get(..8)).map_err(|e| bad(bucket, e.to_string()))?
                }
                SCHEDULED_COMPACT => {
                    scheduled = read_i64(v.get(..8)).map_err(|e| bad(bucket, e.to_string()))?
                }
                _ => {}
            },
            LEASE_BUCKET => {
                let l = LeaseRow::decode(v).map_err(|e| bad(bucket, e.to_string()))?;
                rows.push((
                    lease_key(l.id).to_vec().into(),
                    l.ttl.to_be_bytes().to_vec().into(),
                ));
            }
            AUTH_BUCKET => match k {
                AUTH_ENABLED => rows.push((ENABLED_KEY.into(), v.into())),
                AUTH_REVISION => rows.push((REVISION_KEY.into(), v.into())),
                _ => {}
            },
            AUTH_USERS_BUCKET => rows.push(([USER_PREFIX, k].concat().into(), v.into())),
            AUTH_ROLES_BUCKET => rows.push(([ROLE_PREFIX, k].concat().into(), v.into())),
            ALARM_BUCKET => {
                let a = AlarmMember::decode(k).map_err(|e| bad(bucket, e.to_string()))?;
                rows.push((
                    alarm_key(a.member_id, a.alarm).into(),
                    sled::IVec::default(),
                ));
            }
            // Membership is the new cluster's (restore's flags); the rest is not the store's.
            _ => {}
        }
        Ok(())
    })?;
    // etcd finishes a scheduled compaction when it starts; the store's install does too.
    let compacted = finished.max(scheduled);
    let current = newest.max(compacted).max(FIRST_REVISION);
    rows.push((META_SCHEMA.into(), SCHEMA_VERSION.into()));
    rows.push((META_COMMIT.into(), commit_row(current, None).into()));
    if compacted > 0 {
        rows.push((
            META_COMPACTED.into(),
            compacted.to_be_bytes().to_vec().into(),
        ));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if rows.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(SnapshotFileError::Contents("the same row twice".into()));
    }
    Ok(Imported { rows, status })
}

/// Parses etcd's revision key.
fn parse_etcd_rev(k: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match k.len() {
        REV_KEY_LEN => false,
        n if n == REV_KEY_LEN + 1 && k.get(REV_KEY_LEN) == Some(&TOMBSTONE_MARK) => true,
        _ => return None,
    };
    if k.get(8) != Some(&REV_SEPARATOR) {
        return None;
    }
    let main = read_i64(k.get(..8)).ok()?;
    let sub = read_i64(k.get(9..17)).ok()?;
    (main >= 1 && sub >= 0).then_some((Revision::new(main, sub), tombstone))
}

/// etcd's revision key of a revision.
fn etcd_rev(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(REV_KEY_LEN + 1);
    k.extend_from_slice(&rev.main.to_be_bytes());
    k.push(REV_SEPARATOR);
    k.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        k.push(TOMBSTONE_MARK);
    }
    k
}

/// A member as the `members` bucket records it.
#[derive(Debug, Clone)]
pub struct ExportMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// What a snapshot holds besides the store's rows.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    /// The cluster's members.
    pub members: Vec<ExportMember>,
    /// The Raft index the store's `applied` blob names (etcd's consistent index).
    pub applied_index: fn(&[u8]) -> u64,
}

/// Writes the store's `rows` (key order, one consistent state) into `file` as etcd's
/// database, then the hash trailer; returns the file's size.
pub fn write_etcd(
    file: &mut File,
    rows: &mut dyn Iterator<Item = Result<Row, StorageError>>,
    info: &ExportInfo,
) -> Result<u64, SnapshotFileError> {
    let mut rows = rows.peekable();
    let mut w = BoltWriter::new(&mut *file)?;
    // Rows sort as A (auth) < a (alarms) < k (kv) < l (leases) < m (meta): the small ones
    // before and after are kept, the kv rows and leases stream through.
    let mut small: Vec<Row> = Vec::new();
    while let Some(row) =
        rows.next_if(|r| !matches!(r, Ok((k, _)) if k.first().is_some_and(|b| *b >= KV_PREFIX)))
    {
        small.push(row?);
    }
    let kvs = std::iter::from_fn(|| next_with_prefix(&mut rows, KV_PREFIX)).map(|r| {
        let (k, v) = r?;
        let (rev, tombstone) = parse_row_key(&k)?;
        let value = if tombstone {
            // etcd's tombstone holds the key alone.
            let kv = KeyValue::decode(v.as_ref())
                .map_err(|e| StorageError::Corrupt(format!("undecodable tombstone: {e}")))?;
            KeyValue {
                key: kv.key,
                ..KeyValue::default()
            }
            .encode_to_vec()
        } else {
            v.to_vec()
        };
        Ok::<_, SnapshotFileError>((etcd_rev(rev, tombstone), value))
    });
    w.bucket(KEY_BUCKET, kvs)?;
    let leases = std::iter::from_fn(|| next_with_prefix(&mut rows, LEASE_PREFIX)).map(|r| {
        let (k, v) = r?;
        let (id, ttl) = parse_lease_row(&k, &v)?;
        let row = LeaseRow {
            id,
            ttl,
            remaining_ttl: 0,
        };
        Ok::<_, SnapshotFileError>((id.to_be_bytes().to_vec(), row.encode_to_vec()))
    });
    w.bucket(LEASE_BUCKET, leases)?;
    for row in rows {
        small.push(row?);
    }
    write_small_buckets(&mut w, &small, info)?;
    let (_, db_len) = w.finish()?;
    let sum = sha256_of(file, db_len)?;
    file.seek(SeekFrom::Start(db_len))?;
    file.write_all(&sum)?;
    file.flush()?;
    Ok(db_len + SUM_BYTES)
}

/// The next row when its key starts with `prefix` (errors pass through).
fn next_with_prefix(
    rows: &mut std::iter::Peekable<&mut dyn Iterator<Item = Result<Row, StorageError>>>,
    prefix: u8,
) -> Option<Result<Row, StorageError>> {
    match rows.peek()? {
        Ok((k, _)) if k.first() != Some(&prefix) => None,
        _ => rows.next(),
    }
}

type Items = Vec<Result<(Vec<u8>, Vec<u8>), SnapshotFileError>>;

/// The buckets of auth, alarms, meta, membership and cluster version, from the store's
/// small rows.
fn write_small_buckets(
    w: &mut BoltWriter<&mut File>,
    small: &[Row],
    info: &ExportInfo,
) -> Result<(), SnapshotFileError> {
    let mut auth_enabled = None;
    let mut auth_revision = 1u64.to_be_bytes().to_vec();
    let (mut users, mut roles, mut alarms): (Items, Items, Items) = Default::default();
    let mut consistent_index = 0;
    let mut compacted = 0;
    for (k, v) in small {
        let k = k.as_ref();
        match k.first() {
            Some(&AUTH_PREFIX) if k == ENABLED_KEY => auth_enabled = Some(v.to_vec()),
            Some(&AUTH_PREFIX) if k == REVISION_KEY => auth_revision = v.to_vec(),
            Some(&AUTH_PREFIX) => {
                if let Some(name) = k.strip_prefix(USER_PREFIX) {
                    users.push(Ok((name.to_vec(), v.to_vec())));
                } else if let Some(name) = k.strip_prefix(ROLE_PREFIX) {
                    roles.push(Ok((name.to_vec(), v.to_vec())));
                }
            }
            Some(&ALARM_PREFIX) => {
                let (member_id, alarm) = parse_alarm_key(k)?;
                let key = AlarmMember { member_id, alarm }.encode_to_vec();
                alarms.push(Ok((key, Vec::new())));
            }
            _ if k == META_COMMIT => {
                let (_, applied) = parse_commit_row(v)?;
                consistent_index = applied.map_or(0, |a| (info.applied_index)(&a));
            }
            _ if k == META_COMPACTED => compacted = read_i64(Some(v))?,
            _ => {}
        }
    }
    let mut auth: Items = Vec::new();
    if let Some(on) = auth_enabled {
        auth.push(Ok((AUTH_ENABLED.to_vec(), on)));
    }
    auth.push(Ok((AUTH_REVISION.to_vec(), auth_revision)));
    alarms.sort_by(|a, b| match (a, b) {
        (Ok(a), Ok(b)) => a.0.cmp(&b.0),
        _ => std::cmp::Ordering::Equal,
    });
    let mut meta: Items = vec![Ok((
        CONSISTENT_INDEX.to_vec(),
        consistent_index.to_be_bytes().to_vec(),
    ))];
    if compacted > 0 {
        let rev = etcd_rev(Revision::new(compacted, 0), false);
        meta.push(Ok((FINISHED_COMPACT.to_vec(), rev.clone())));
        meta.push(Ok((SCHEDULED_COMPACT.to_vec(), rev)));
    }
    let mut members: Vec<(Vec<u8>, Vec<u8>)> = info
        .members
        .iter()
        .map(|m| {
            (
                format!("{:x}", m.id).into_bytes(),
                member_json(m).into_bytes(),
            )
        })
        .collect();
    members.sort();
    w.bucket(AUTH_BUCKET, auth)?;
    w.bucket(AUTH_USERS_BUCKET, users)?;
    w.bucket(AUTH_ROLES_BUCKET, roles)?;
    w.bucket(ALARM_BUCKET, alarms)?;
    w.bucket(META_BUCKET, meta)?;
    w.bucket(
        MEMBERS_BUCKET,
        members.into_iter().map(Ok::<_, SnapshotFileError>),
    )?;
    w.bucket(MEMBERS_REMOVED_BUCKET, Items::new())?;
    w.bucket(
        CLUSTER_BUCKET,
        [Ok::<_, SnapshotFileError>((
            CLUSTER_VERSION_KEY.to_vec(),
            CLUSTER_VERSION.to_vec(),
        ))],
    )?;
    Ok(())
}

/// A member as etcd 3.4 stores it: Go's JSON of `membership.Member`, fields in its order.
fn member_json(m: &ExportMember) -> String {
    let strings = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    format!(
        "{{\"id\":{},\"peerURLs\":{},\"name\":{},\"clientURLs\":{}}}",
        m.id,
        strings(&m.peer_urls),
        serde_json::to_string(&m.name).unwrap_or_else(|_| "\"\"".into()),
        strings(&m.client_urls)
    )
}
