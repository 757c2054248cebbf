//! Revisions and the on-disk encoding of the rows that hold them.
//!
//! A revision is etcd's `(main, sub)` pair: `main` is the store revision of one write
//! transaction, `sub` numbers the changes inside it (0, 1, ...). A kv row's sled key is
//! `b'k' | main (8 bytes BE) | sub (8 bytes BE)`, followed by `b't'` when the row is a
//! tombstone. Big-endian keeps sled's byte order equal to revision order, so history scans
//! are plain range scans; the tombstone mark never affects order because no two rows share
//! a `(main, sub)`.

use super::error::StorageError;

/// First byte of every kv row key.
pub(crate) const KV_PREFIX: u8 = b'k';
/// Trailing byte of a tombstone row key.
const TOMBSTONE_MARK: u8 = b't';
/// Length of a live row key: prefix + main + sub.
const ROW_KEY_LEN: usize = 17;

/// One change's position in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// The store revision of the write transaction.
    pub main: i64,
    /// The change's index inside that transaction.
    pub sub: i64,
}

impl Revision {
    /// A revision from its parts.
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

/// The sled key of the row holding revision `rev` (with the tombstone mark if `tombstone`).
pub(crate) fn row_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(ROW_KEY_LEN + 1);
    k.push(KV_PREFIX);
    k.extend_from_slice(&rev.main.to_be_bytes());
    k.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        k.push(TOMBSTONE_MARK);
    }
    k
}

/// The smallest row key of main revision `main` (scan bound).
pub(crate) fn main_lower_bound(main: i64) -> Vec<u8> {
    row_key(Revision::new(main, 0), false)
}

/// Decodes a row key back into its revision and tombstone mark.
pub(crate) fn parse_row_key(k: &[u8]) -> Result<(Revision, bool), StorageError> {
    let tombstone = match k.len() {
        ROW_KEY_LEN => false,
        n if n == ROW_KEY_LEN + 1 && k.get(ROW_KEY_LEN) == Some(&TOMBSTONE_MARK) => true,
        _ => return Err(StorageError::Corrupt(format!("bad kv row key {k:?}"))),
    };
    if k.first() != Some(&KV_PREFIX) {
        return Err(StorageError::Corrupt(format!("bad kv row key {k:?}")));
    }
    let main = read_i64(k.get(1..9))?;
    let sub = read_i64(k.get(9..17))?;
    if main < 1 || sub < 0 {
        return Err(StorageError::Corrupt(format!(
            "kv row key with impossible revision ({main}, {sub})"
        )));
    }
    Ok((Revision::new(main, sub), tombstone))
}

/// Reads a big-endian i64 from an exactly-8-byte slice.
pub(crate) fn read_i64(b: Option<&[u8]>) -> Result<i64, StorageError> {
    let arr: [u8; 8] = b
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StorageError::Corrupt("expected an 8-byte integer".into()))?;
    Ok(i64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_sort_like_revisions_and_roundtrip() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(256, 3),
            Revision::new(257, 0),
        ];
        let keys: Vec<_> = revs
            .iter()
            .enumerate()
            .map(|(i, r)| row_key(*r, i % 2 == 1))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(parse_row_key(k).unwrap(), (revs[i], i % 2 == 1));
        }
    }

    #[test]
    fn garbled_row_keys_are_corrupt() {
        assert!(parse_row_key(b"kshort").is_err());
        let mut k = row_key(Revision::new(3, 0), false);
        k.push(b'x');
        assert!(parse_row_key(&k).is_err());
        let mut k = row_key(Revision::new(3, 0), false);
        k[0] = b'z';
        assert!(parse_row_key(&k).is_err());
    }
}
