//! How a WAL record sits in a segment file.
//!
//! ```text
//!  0        4        8    9
//!  | len u32 | crc u32 | kind | payload ... | zero padding to 8 bytes |
//! ```
//!
//! `len` counts `kind` and the payload; `crc` is the CRC-32 (IEEE, `crc32fast`) of `kind` and
//! the payload, seeded with the segment's sequence number, so that a record copied
//! or left from another segment never checks out. Records start at multiples of 8, so a
//! record header never straddles a 512-byte sector: after a power cut a header is either
//! entirely there or entirely zero.
//!
//! Segments are zero-filled before use, which gives the reader three cases at an offset:
//! - an all-zero header: the end of the log in this segment;
//! - a record that checks out;
//! - a bad record. It is a *torn* write if some part of it is still zero at sector
//!   granularity (the write never reached the disk whole: a power cut during a write that was
//!   never acknowledged, since acknowledgement follows the sync); anything else is corruption.

/// Records start at multiples of this.
pub const ALIGN: usize = 8;
/// Bytes of `len` and `crc`.
pub const HEADER_BYTES: usize = 8;
/// The unit a disk writes atomically (or loses whole) at a power cut.
const SECTOR_BYTES: usize = 512;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// First record of every segment: the format magic and the segment's sequence number.
    SegmentHeader = 1,
    /// Second record of every segment: vote, committed and purge point as they stood when the
    /// segment was started, so that older segments hold nothing but entries.
    State = 2,
    /// A log entry: index (u64 LE), then the entry's bytes.
    Entry = 3,
    /// The vote.
    Vote = 4,
    /// The committed log id.
    Committed = 5,
    /// Entries from this index (u64 LE) on are gone.
    Truncate = 6,
    /// Entries up to this index (u64 LE) are gone; then the purged log id's bytes.
    Purge = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::SegmentHeader,
            2 => Kind::State,
            3 => Kind::Entry,
            4 => Kind::Vote,
            5 => Kind::Committed,
            6 => Kind::Truncate,
            7 => Kind::Purge,
            _ => return None,
        })
    }
}

/// The framed size of a record whose payload parts add up to `payload` bytes.
pub fn framed_len(payload: usize) -> usize {
    (HEADER_BYTES + 1 + payload).div_ceil(ALIGN) * ALIGN
}

fn crc(seq: u64, kind: u8, parts: &[&[u8]]) -> u32 {
    let seed = (seq as u32) ^ ((seq >> 32) as u32);
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(&[kind]);
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Appends one framed record of segment `seq` to `out`; the payload is `parts` concatenated.
pub fn encode(seq: u64, kind: Kind, parts: &[&[u8]], out: &mut Vec<u8>) {
    let payload: usize = parts.iter().map(|p| p.len()).sum();
    let start = out.len();
    let len = u32::try_from(1 + payload).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc(seq, kind as u8, parts).to_le_bytes());
    out.push(kind as u8);
    for p in parts {
        out.extend_from_slice(p);
    }
    out.resize(start + framed_len(payload), 0);
}

/// What the reader found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A good record; the next one starts at `next`.
    Record {
        kind: Kind,
        payload: &'a [u8],
        next: usize,
    },
    /// Zeros: nothing was ever written here.
    End,
    /// A write that never reached the disk whole.
    Torn,
    /// Bytes that are neither a record nor a torn write.
    Corrupt(String),
}

/// Reads the record of segment `seq` at `off` in `buf` (the whole segment).
pub fn parse(seq: u64, buf: &[u8], off: usize) -> Parsed<'_> {
    let Some(header) = buf.get(off..off + HEADER_BYTES) else {
        return Parsed::End;
    };
    if header.iter().all(|&b| b == 0) {
        return Parsed::End;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let body_start = off + HEADER_BYTES;
    let Some(body) = buf.get(body_start..body_start.saturating_add(len)) else {
        return Parsed::Corrupt(format!("record length {len} runs past the segment"));
    };
    if len == 0 {
        return Parsed::Corrupt("record of length 0".into());
    }
    if crc(seq, body[0], &[&body[1..]]) != stored {
        return if has_unwritten_sector(buf, body_start, body_start + len) {
            Parsed::Torn
        } else {
            Parsed::Corrupt("checksum mismatch".into())
        };
    }
    let Some(kind) = Kind::from_u8(body[0]) else {
        return Parsed::Corrupt(format!("unknown record kind {}", body[0]));
    };
    Parsed::Record {
        kind,
        payload: &body[1..],
        next: off + framed_len(len - 1),
    }
}

/// Whether some sector's part of `buf[start..end]` is all zeros (never written).
fn has_unwritten_sector(buf: &[u8], start: usize, end: usize) -> bool {
    let mut s = start;
    while s < end {
        let sector_end = ((s / SECTOR_BYTES) + 1) * SECTOR_BYTES;
        let e = sector_end.min(end);
        if buf[s..e].iter().all(|&b| b == 0) {
            return true;
        }
        s = e;
    }
    false
}

/// Reads a little-endian u64 at the start of `p`.
pub fn read_u64(p: &[u8]) -> Option<u64> {
    p.get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(Kind, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, p) in records {
            encode(7, *k, &[p], &mut out);
        }
        out.resize(4096, 0);
        out
    }

    #[test]
    fn records_roundtrip_and_end_at_zeros() {
        let buf = segment(&[(Kind::Vote, b"abc"), (Kind::Entry, &[9u8; 1000])]);
        let Parsed::Record {
            kind,
            payload,
            next,
        } = parse(7, &buf, 0)
        else {
            panic!("first record")
        };
        assert_eq!((kind, payload), (Kind::Vote, &b"abc"[..]));
        assert_eq!(next % ALIGN, 0);
        let Parsed::Record { kind, next, .. } = parse(7, &buf, next) else {
            panic!("second record")
        };
        assert_eq!(kind, Kind::Entry);
        assert_eq!(parse(7, &buf, next), Parsed::End);
    }

    #[test]
    fn another_segments_record_does_not_check_out() {
        let buf = segment(&[(Kind::Vote, b"abc")]);
        assert!(matches!(parse(8, &buf, 0), Parsed::Corrupt(_)));
    }

    #[test]
    fn a_lost_sector_is_torn_a_flipped_bit_is_corrupt() {
        let buf = segment(&[(Kind::Entry, &[5u8; 2000])]);
        let mut torn = buf.clone();
        torn[1024..1536].fill(0);
        assert_eq!(parse(7, &torn, 0), Parsed::Torn);
        let mut flipped = buf.clone();
        flipped[700] ^= 1;
        assert!(matches!(parse(7, &flipped, 0), Parsed::Corrupt(_)));
        let mut long = buf;
        long[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(7, &long, 0), Parsed::Corrupt(_)));
    }
}
