//! The file `etcdctl snapshot save` writes from a minietcd member, shaped as etcd's stream
//! so that etcdctl accepts it unchanged: a body whose length is a multiple of 512 (etcdctl
//! checks `size % 512 == 32`), then the SHA-256 of the body (32 bytes), as etcd appends to
//! its bbolt file. The body is the store's snapshot (see [`super::snapshot`]: every row of the
//! MVCC tree, leases, alarms and counters included), zero padding, and the snapshot's length
//! (u64 BE) in its last 8 bytes. Reading one checks the checksum, then the rows, with the
//! code that checks the store at open.
//!
//! ```text
//! | store snapshot | zeros | snapshot length u64 BE | sha256(everything before) |
//! |<------------- a multiple of 512 bytes ---------->|<------- 32 bytes -------->|
//! ```
//!
//! etcd's own snapshot files (bbolt databases) are not read by this format.

use super::backend::recover;
use super::error::StorageError;
use super::revision::KV_PREFIX;
use super::snapshot;

use sha2::{Digest, Sha256};

/// Length of the checksum trailer.
const SUM_BYTES: usize = 32;
/// The body's length is a multiple of this (etcd's snapshot files are, being bbolt files).
const BODY_ALIGN: usize = 512;
/// The body's last bytes: the store snapshot's length.
const LEN_BYTES: usize = 8;

/// Why a snapshot file cannot be used, one line each.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("not a whole snapshot ({0} bytes): truncated?")]
    TooShort(usize),
    #[error("sha256 checksum mismatch: the file is damaged or truncated")]
    Checksum,
    #[error("not a minietcd snapshot (etcd's bbolt snapshots are not readable yet)")]
    Foreign,
    #[error("{0}")]
    Invalid(StorageError),
}

/// Pads a store snapshot into a body and appends its checksum.
pub fn seal(mut data: Vec<u8>) -> Vec<u8> {
    let len = data.len() as u64;
    let body = (data.len() + LEN_BYTES).div_ceil(BODY_ALIGN) * BODY_ALIGN;
    data.resize(body - LEN_BYTES, 0);
    data.extend_from_slice(&len.to_be_bytes());
    let sum = Sha256::digest(&data);
    data.extend_from_slice(&sum);
    data
}

/// What `snapshot status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// The CRC-32C of the store snapshot inside the file.
    pub hash: u32,
    /// The store revision the snapshot was taken at.
    pub revision: i64,
    /// Rows in the snapshot (kv revisions, leases, alarms, counters), as etcd counts every
    /// key of every bucket.
    pub total_keys: u64,
    /// The file's size in bytes.
    pub total_size: u64,
    /// Keys live at `revision`.
    pub live_keys: u64,
}

/// A verified snapshot file: the store snapshot inside it, and its status.
#[derive(Debug)]
pub struct SnapshotFile<'a> {
    /// The store snapshot ([`crate::storage::MvccStore::install_snapshot`] takes it).
    pub data: &'a [u8],
    pub status: SnapshotStatus,
}

/// Checks a snapshot file's checksum and contents.
pub fn open(bytes: &[u8]) -> Result<SnapshotFile<'_>, SnapshotFileError> {
    if bytes.len() < SUM_BYTES + LEN_BYTES || !(bytes.len() - SUM_BYTES).is_multiple_of(BODY_ALIGN)
    {
        if !bytes.starts_with(snapshot::MAGIC) {
            return Err(SnapshotFileError::Foreign);
        }
        return Err(SnapshotFileError::TooShort(bytes.len()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - SUM_BYTES);
    if !body.starts_with(snapshot::MAGIC) {
        return Err(SnapshotFileError::Foreign);
    }
    if Sha256::digest(body).as_slice() != trailer {
        return Err(SnapshotFileError::Checksum);
    }
    let (padded, len) = body.split_at(body.len() - LEN_BYTES);
    let mut len_be = [0u8; LEN_BYTES];
    len_be.copy_from_slice(len);
    let data = usize::try_from(u64::from_be_bytes(len_be))
        .ok()
        .and_then(|n| padded.get(..n))
        .ok_or_else(|| {
            SnapshotFileError::Invalid(StorageError::Corrupt(
                "snapshot length beyond the file".into(),
            ))
        })?;
    let rows = snapshot::decode(data).map_err(SnapshotFileError::Invalid)?;
    let total_keys = rows.len() as u64;
    let kv_rows = rows
        .iter()
        .filter(|(k, _)| k.first() == Some(&KV_PREFIX))
        .count();
    let rec = recover(rows.into_iter().map(Ok)).map_err(SnapshotFileError::Invalid)?;
    if rec.empty || rec.installing {
        return Err(SnapshotFileError::Invalid(StorageError::Corrupt(
            "the snapshot holds no store".into(),
        )));
    }
    let state = rec.state;
    let live_keys = state
        .index
        .values()
        .filter(|ki| ki.get(state.current).is_some())
        .count() as u64;
    tracing::debug!(kv_rows, "snapshot file checked");
    Ok(SnapshotFile {
        data,
        status: SnapshotStatus {
            hash: crc32c::crc32c(data),
            revision: state.current,
            total_keys,
            total_size: bytes.len() as u64,
            live_keys,
        },
    })
}
