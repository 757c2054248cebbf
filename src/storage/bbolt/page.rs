//! Page headers, elements and meta pages: the fixed-size pieces of a bbolt file.

/// bbolt's magic number, first field of a meta page.
pub(super) const MAGIC: u32 = 0xED0C_DAED;
/// The data file format version bbolt writes and reads.
pub(super) const VERSION: u32 = 2;

/// Page flags.
pub(super) const BRANCH_PAGE: u16 = 0x01;
pub(super) const LEAF_PAGE: u16 = 0x02;
pub(super) const META_PAGE: u16 = 0x04;
pub(super) const FREELIST_PAGE: u16 = 0x10;

/// Leaf element flag: the element is a bucket.
pub(super) const BUCKET_LEAF_FLAG: u32 = 0x01;

/// The page header: id u64, flags u16, count u16, overflow u32.
pub(super) const PAGE_HEADER_SIZE: usize = 16;
/// A leaf element: flags, pos, ksize, vsize (u32 each).
pub(super) const LEAF_ELEMENT_SIZE: usize = 16;
/// A branch element: pos u32, ksize u32, page id u64.
pub(super) const BRANCH_ELEMENT_SIZE: usize = 16;
/// A bucket's header: root page id u64, sequence u64.
pub(super) const BUCKET_HEADER_SIZE: usize = 16;
/// The meta fields before the checksum, which the checksum covers.
const META_SUMMED: usize = 56;
/// The meta fields, checksum included.
pub(super) const META_SIZE: usize = 64;

/// A page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn parse(b: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: u64_at(b, 0)?,
            flags: u16::from_le_bytes(b.get(8..10)?.try_into().ok()?),
            count: u16::from_le_bytes(b.get(10..12)?.try_into().ok()?),
            overflow: u32_at(b, 12)?,
        })
    }

    pub fn write(&self, out: &mut [u8]) {
        if let Some(h) = out.get_mut(..PAGE_HEADER_SIZE) {
            h[..8].copy_from_slice(&self.id.to_le_bytes());
            h[8..10].copy_from_slice(&self.flags.to_le_bytes());
            h[10..12].copy_from_slice(&self.count.to_le_bytes());
            h[12..16].copy_from_slice(&self.overflow.to_le_bytes());
        }
    }
}

/// A meta page's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    pub page_size: u32,
    pub flags: u32,
    /// The root bucket's root page.
    pub root: u64,
    /// The root bucket's sequence.
    pub sequence: u64,
    pub freelist: u64,
    /// The high-water mark: pages at and above it are not part of the database.
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    /// Decodes the meta fields (after the page header) and checks magic, version and
    /// checksum, as bbolt's `meta.validate` does.
    pub fn parse(b: &[u8]) -> Option<Meta> {
        if u32_at(b, 0)? != MAGIC || u32_at(b, 4)? != VERSION {
            return None;
        }
        let sum = u64_at(b, META_SUMMED)?;
        if sum != 0 && sum != fnv1a64(b.get(..META_SUMMED)?) {
            return None;
        }
        Some(Meta {
            page_size: u32_at(b, 8)?,
            flags: u32_at(b, 12)?,
            root: u64_at(b, 16)?,
            sequence: u64_at(b, 24)?,
            freelist: u64_at(b, 32)?,
            pgid: u64_at(b, 40)?,
            txid: u64_at(b, 48)?,
        })
    }

    /// Encodes the fields and their checksum.
    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut b = [0u8; META_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.root.to_le_bytes());
        b[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        b[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        b[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        b[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&b[..META_SUMMED]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }
}

/// FNV-1a, 64 bits (Go's `hash/fnv.New64a`), bbolt's meta checksum.
pub(super) fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_go() {
        // Go: fnv.New64a() of "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn meta_roundtrips_and_a_flipped_bit_fails_its_checksum() {
        let m = Meta {
            page_size: 4096,
            flags: 0,
            root: 7,
            sequence: 0,
            freelist: 2,
            pgid: 9,
            txid: 3,
        };
        let mut b = m.encode();
        assert_eq!(Meta::parse(&b), Some(m));
        b[20] ^= 1;
        assert_eq!(Meta::parse(&b), None);
    }
}
