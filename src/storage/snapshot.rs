//! The snapshot format: every row of the mvcc tree, behind a versioned header.
//!
//! ```text
//! magic "MINIETCD-MVCC-SNAP" | format version u32 BE | row count u64 BE
//! then per row: key length u32 BE | key | value length u32 BE | value
//! ```
//!
//! Carrying the raw rows (kv history since the last compaction, leases, meta with the
//! `applied` blob) means a restored member replays exactly the history the sender had, and
//! install validates them with the same code that validates the tree at open.

use super::backend::META_INSTALLING;
use super::error::StorageError;

/// Identifies a minietcd MVCC snapshot.
pub(crate) const MAGIC: &[u8] = b"MINIETCD-MVCC-SNAP";
/// The format this code writes and reads.
const FORMAT_VERSION: u32 = 1;

/// Serialises every row of `tree` (except an install marker).
pub(crate) fn encode(tree: &sled::Tree) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(MAGIC.len() + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_be_bytes());
    let mut count: u64 = 0;
    for row in tree.iter() {
        let (k, v) = row?;
        if k.as_ref() == META_INSTALLING {
            continue;
        }
        put_chunk(&mut out, &k)?;
        put_chunk(&mut out, &v)?;
        count += 1;
    }
    if let Some(slot) = out.get_mut(count_at..count_at + 8) {
        slot.copy_from_slice(&count.to_be_bytes());
    }
    Ok(out)
}

fn put_chunk(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StorageError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| StorageError::Corrupt("row larger than 4 GiB in snapshot".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Parses a snapshot back into its rows, in key order.
pub(crate) fn decode(data: &[u8]) -> Result<Vec<(sled::IVec, sled::IVec)>, StorageError> {
    let bad = |what: &str| StorageError::Corrupt(format!("snapshot: {what}"));
    let mut r = Reader { data, pos: 0 };
    if r.take(MAGIC.len()).ok_or_else(|| bad("too short"))? != MAGIC {
        return Err(bad("not a minietcd MVCC snapshot"));
    }
    let version = r.u32().ok_or_else(|| bad("truncated header"))?;
    if version != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let count = r.u64().ok_or_else(|| bad("truncated header"))?;
    let mut rows = Vec::new();
    let mut last: Option<sled::IVec> = None;
    for _ in 0..count {
        let k = r.chunk().ok_or_else(|| bad("truncated row"))?;
        let v = r.chunk().ok_or_else(|| bad("truncated row"))?;
        let k = sled::IVec::from(k);
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(bad("rows out of order"));
        }
        last = Some(k.clone());
        rows.push((k, sled::IVec::from(v)));
    }
    if r.pos != data.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(rows)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn chunk(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
}
