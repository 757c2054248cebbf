//! Leases as the store keeps them: id, granted TTL and the keys attached.
//!
//! Storage only records leases; expiry is the leader's business (it proposes revokes).
//! Attachments are not persisted separately: a live key's KeyValue carries its lease id, so
//! they are rebuilt from the kv rows at open, exactly as etcd's lessor recovers them.

use std::collections::BTreeSet;

use super::error::StorageError;
use super::revision::read_i64;

/// First byte of every lease row key (`b'l' | id BE`), value = granted TTL (i64 BE).
pub(crate) const LEASE_PREFIX: u8 = b'l';

/// etcd's `MaxLeaseTTL` (seconds): larger grants fail with "too large lease TTL".
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// One lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lease {
    /// TTL in seconds as granted.
    pub ttl_secs: i64,
    /// Keys attached (live keys whose KeyValue.lease is this lease).
    pub keys: BTreeSet<Vec<u8>>,
    /// The remaining TTL the leader last checkpointed (etcd's `remainingTTL`); 0 when none.
    /// Kept in memory only, as etcd 3.4 does: a restart forgets it.
    pub remaining_ttl_secs: i64,
}

/// What the lease service needs to answer LeaseTimeToLive and LeaseLeases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// TTL in seconds as granted.
    pub granted_ttl_secs: i64,
    /// Attached keys, ascending.
    pub keys: Vec<Vec<u8>>,
}

/// The sled key of lease `id`.
pub(crate) fn lease_key(id: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LEASE_PREFIX;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Decodes a lease row.
pub(crate) fn parse_lease_row(k: &[u8], v: &[u8]) -> Result<(i64, i64), StorageError> {
    if k.len() != 9 || v.len() != 8 {
        return Err(StorageError::Corrupt(format!(
            "bad lease row {k:?} ({} value bytes)",
            v.len()
        )));
    }
    Ok((read_i64(k.get(1..))?, read_i64(Some(v))?))
}

/// Picks the id of a LeaseGrant that asked for id 0. Every member applies the same entry
/// with the same `applied` blob at the same revision, so deriving the id from those two
/// keeps members in agreement without a random source. (etcd picks the id on the proposing
/// server before proposing; a server that does the same never reaches this.)
pub(crate) fn derive_lease_id(applied: &[u8], revision: i64, attempt: u64) -> i64 {
    // FNV-1a over the inputs, then a splitmix64 finaliser to spread the bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = applied
        .iter()
        .copied()
        .chain(revision.to_be_bytes())
        .chain(attempt.to_be_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // Positive and non-zero, like etcd's ids.
    let id = i64::try_from(h >> 1).unwrap_or(i64::MAX);
    id.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_positive_deterministic_and_vary() {
        let a = derive_lease_id(b"log-7", 12, 0);
        assert_eq!(a, derive_lease_id(b"log-7", 12, 0));
        assert!(a > 0);
        assert_ne!(a, derive_lease_id(b"log-8", 12, 0));
        assert_ne!(a, derive_lease_id(b"log-7", 12, 1));
    }

    #[test]
    fn lease_rows_roundtrip_and_reject_garbage() {
        let k = lease_key(42);
        assert_eq!(parse_lease_row(&k, &7i64.to_be_bytes()).unwrap(), (42, 7));
        assert!(parse_lease_row(&k, b"short").is_err());
        assert!(parse_lease_row(b"l1", &7i64.to_be_bytes()).is_err());
    }
}
