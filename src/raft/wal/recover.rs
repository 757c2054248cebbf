//! Recovery: replaying the segments into the in-memory index and state.

use super::fs::WalFs;
use super::record::{self, Kind, Parsed};
use super::{io_err, segment_name, Inner, Loc, Segment, WalError, SEGMENT_MAGIC};

/// Replays segment `seq` into `inner`; the last segment may end in a torn write, which is
/// cut off and zeroed.
pub(super) fn replay_segment(
    fs: &dyn WalFs,
    inner: &mut Inner,
    seq: u64,
    last: bool,
) -> Result<(), WalError> {
    let name = segment_name(seq);
    let file = fs.open(&name).map_err(io_err(format!("open {name}")))?;
    let len = file.size().map_err(io_err(format!("stat {name}")))?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut buf, 0)
        .map_err(io_err(format!("read {name}")))?;
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        file: name.clone(),
        offset: offset as u64,
        reason,
    };
    let foreign = |reason: &str| WalError::Foreign {
        file: name.clone(),
        format: "minietcd-wal-v1",
        reason: reason.to_string(),
    };
    // The header: magic and sequence number.
    let mut off = match record::parse(seq, &buf, 0) {
        Parsed::Record {
            kind: Kind::SegmentHeader,
            payload,
            next,
        } => {
            let (magic, rest) = payload.split_at(payload.len().min(SEGMENT_MAGIC.len()));
            if magic != SEGMENT_MAGIC {
                return Err(foreign("unknown magic"));
            }
            if record::read_u64(rest) != Some(seq) {
                return Err(corrupt(0, "header names another segment".into()));
            }
            next
        }
        Parsed::End if last => {
            // Created but never written (a crash right after the rename): start it anew.
            fs.remove(&name).map_err(io_err(format!("remove {name}")))?;
            tracing::warn!(segment = %name, "removed an empty wal segment");
            return Ok(());
        }
        Parsed::Torn if last => {
            fs.remove(&name).map_err(io_err(format!("remove {name}")))?;
            tracing::warn!(segment = %name, "removed a wal segment whose header was torn");
            return Ok(());
        }
        _ => return Err(foreign("no valid segment header")),
    };
    inner.segments.insert(
        seq,
        Segment {
            file: Some(file.clone()),
            last_index: None,
        },
    );
    loop {
        match record::parse(seq, &buf, off) {
            Parsed::Record {
                kind,
                payload,
                next,
            } => {
                apply_record(inner, seq, off, kind, payload).map_err(|r| corrupt(off, r))?;
                off = next;
            }
            Parsed::End => break,
            Parsed::Torn if last => {
                tracing::warn!(segment = %name, offset = off, "cut a torn write off the wal");
                break;
            }
            Parsed::Torn => return Err(corrupt(off, "torn write in an older segment".into())),
            Parsed::Corrupt(reason) => return Err(corrupt(off, reason)),
        }
    }
    if last {
        // Zero whatever follows the end, so that later records never meet leftovers.
        if let Some(pos) = buf[off..].iter().rposition(|&b| b != 0) {
            let zeros = vec![0u8; pos + 1];
            file.write_all_at(&zeros, off as u64)
                .and_then(|()| file.sync_data())
                .map_err(io_err(format!("zero the tail of {name}")))?;
        }
        inner.cur_seq = seq;
        inner.cur_off = off as u64;
        inner.cur_size = len;
    }
    Ok(())
}

fn apply_record(
    inner: &mut Inner,
    seq: u64,
    off: usize,
    kind: Kind,
    payload: &[u8],
) -> Result<(), String> {
    let index = || record::read_u64(payload).ok_or_else(|| format!("short {kind:?} record"));
    match kind {
        Kind::SegmentHeader => return Err("a second segment header".into()),
        Kind::State => inner
            .apply_state(payload)
            .ok_or_else(|| "garbled state record".to_string())?,
        Kind::Entry => {
            let loc = Loc {
                seq,
                off: (off + record::HEADER_BYTES + 1 + 8) as u64,
                len: payload.len().saturating_sub(8),
            };
            inner.add_entry(index()?, loc)?;
        }
        Kind::Vote => inner.vote = Some(payload.to_vec()),
        Kind::Committed => inner.committed = Some(payload.to_vec()),
        Kind::Truncate => inner.cut_from(index()?),
        Kind::Purge => {
            let i = index()?;
            inner.purge_to(i, payload[8..].to_vec());
        }
    }
    Ok(())
}
