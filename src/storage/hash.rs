//! etcd's consistency hashes: `HashKV` over the MVCC key space up to a revision, and `Hash`
//! over the whole store.
//!
//! `HashKV` follows etcd 3.4's `store.HashByRev` byte for byte: a CRC-32C (Castagnoli) fed
//! with the bucket name `key`, then, in revision order, every kv row's etcd key (main BE,
//! `_`, sub BE, `t` for a tombstone) and its value (the KeyValue protobuf; a tombstone's
//! holds the key alone). Rows above the revision are left out; rows at or below the
//! compaction revision count only if a compaction at the hashed revision would keep them
//! (etcd's `kvindex.Keep`). So two members that applied the same history answer the same
//! hash, and the same writes on real etcd hash to the same number.

use std::collections::HashSet;

use prost::Message;

use super::backend::{State, META_COMMIT};
use super::error::StorageError;
use super::revision::{parse_row_key, Revision, KV_PREFIX};
use crate::pb::mvccpb::KeyValue;

/// etcd's name of the bucket holding the kv rows; HashKV starts with it.
const KEY_BUCKET: &[u8] = b"key";

/// What HashKV answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    /// The CRC-32C of the key space at the revision.
    pub hash: u32,
    /// The store's current revision when hashed.
    pub current: i64,
    /// The store's compaction revision when hashed; -1 when the store was never compacted
    /// (etcd's `compactMainRev` starts at -1 and HashKV reports it as is).
    pub compacted: i64,
}

/// etcd's row key for a revision: 8 bytes main BE, `_`, 8 bytes sub BE, `t` if a tombstone.
fn etcd_row_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&rev.main.to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// HashKV at `rev` (0: the current revision), with etcd's compacted and future errors.
pub(crate) fn hash_kv(st: &State, tree: &sled::Tree, rev: i64) -> Result<KvHash, StorageError> {
    let (current, compacted) = (st.current, st.compacted);
    if rev > 0 && rev <= compacted {
        return Err(StorageError::Compacted);
    }
    if rev > current {
        return Err(StorageError::FutureRevision);
    }
    let rev = if rev == 0 { current } else { rev };
    // Only rows at or below the compaction revision are filtered by the keep set, so it is
    // not worth building when nothing was ever compacted.
    let keep: HashSet<Revision> = if compacted > 0 {
        st.index.values().filter_map(|ki| ki.keep(rev)).collect()
    } else {
        HashSet::new()
    };
    let mut h = crc32c::crc32c(KEY_BUCKET);
    for row in tree.scan_prefix([KV_PREFIX]) {
        let (k, v) = row?;
        let (r, tombstone) = parse_row_key(&k)?;
        if r.main > rev {
            break;
        }
        if r.main <= compacted && !keep.is_empty() && !keep.contains(&r) {
            continue;
        }
        h = crc32c::crc32c_append(h, &etcd_row_key(r, tombstone));
        if tombstone {
            // minietcd's tombstone rows also carry the delete revision; etcd's hold the key.
            let kv = KeyValue::decode(v.as_ref()).map_err(|e| {
                StorageError::Corrupt(format!("undecodable tombstone at {r:?}: {e}"))
            })?;
            let etcd = KeyValue {
                key: kv.key,
                ..KeyValue::default()
            };
            h = crc32c::crc32c_append(h, &etcd.encode_to_vec());
        } else {
            h = crc32c::crc32c_append(h, &v);
        }
    }
    Ok(KvHash {
        hash: h,
        current,
        compacted: if compacted == 0 { -1 } else { compacted },
    })
}

/// Hash: a CRC-32C of every row of the store (kv rows, leases, counters) except the commit
/// record's raft bookkeeping, which stands for the current revision alone. Equal on members
/// at the same revision with the same history.
pub(crate) fn hash_all(st: &State, tree: &sled::Tree) -> Result<u32, StorageError> {
    let mut h = 0u32;
    for row in tree.iter() {
        let (k, v) = row?;
        h = crc32c::crc32c_append(h, &k);
        if k.as_ref() == META_COMMIT {
            h = crc32c::crc32c_append(h, &st.current.to_be_bytes());
        } else if k.as_ref() != super::backend::META_INSTALLING {
            h = crc32c::crc32c_append(h, &v);
        }
    }
    Ok(h)
}
