//! The snapshot format: every row of the mvcc tree, behind a versioned header.
//!
//! ```text
//! magic "MINIETCD-MVCC-SNAP" | format version u32 BE (2)
//! then per row: key length u32 BE | key | value length u32 BE | value
//! then the end: u32::MAX BE | row count u64 BE
//! ```
//!
//! Version 1, which earlier builds wrote (and which kept snapshot files may still hold), has
//! the row count in the header instead (`... | 1 | row count u64 BE | rows`, no end mark);
//! both are read. Version 2 is written from the first byte to the last without going back, so
//! a snapshot can be sent while it is being read from the store.
//!
//! Carrying the raw rows (kv history since the last compaction, leases, meta with the
//! `applied` blob) means a restored member replays exactly the history the sender had, and
//! install validates them with the same code that validates the tree at open.
//!
//! Both directions stream: [`Encoder`] writes rows one at a time to any writer, and
//! [`RowReader`] reads them back one at a time from any reader, so neither side ever holds
//! the whole snapshot.

use std::io::{self, Read, Write};

use super::error::StorageError;

/// Identifies a minietcd MVCC snapshot.
pub(crate) const MAGIC: &[u8] = b"MINIETCD-MVCC-SNAP";
/// The format this code writes.
const FORMAT_VERSION: u32 = 2;
/// The format of earlier builds (row count in the header), still read.
const FORMAT_VERSION_COUNTED: u32 = 1;
/// In place of a key's length: the rows are over, the row count follows (version 2).
const END_MARK: u32 = u32::MAX;
/// The read buffer of a snapshot being read back row by row.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// Keys and values up to this size are read into a buffer of their stated length at once.
const DIRECT_READ_BYTES: usize = 1 << 20;

fn io_err(what: &str, e: io::Error) -> StorageError {
    StorageError::Corrupt(format!("snapshot: {what}: {e}"))
}

/// Writes a snapshot row by row, front to back.
pub(crate) struct Encoder<W: Write> {
    out: W,
    count: u64,
    /// Bytes written so far.
    bytes: u64,
}

impl<W: Write> Encoder<W> {
    /// Writes the header.
    pub fn new(mut out: W) -> Result<Self, StorageError> {
        out.write_all(MAGIC)
            .and_then(|()| out.write_all(&FORMAT_VERSION.to_be_bytes()))
            .map_err(|e| io_err("write header", e))?;
        Ok(Encoder {
            out,
            count: 0,
            bytes: MAGIC.len() as u64 + 4,
        })
    }

    /// Appends one row (rows must come in key order).
    pub fn row(&mut self, k: &[u8], v: &[u8]) -> Result<(), StorageError> {
        self.chunk(k)?;
        self.chunk(v)?;
        self.count += 1;
        Ok(())
    }

    fn chunk(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|l| *l != END_MARK)
            .ok_or_else(|| StorageError::Corrupt("row of 4 GiB or more in snapshot".into()))?;
        self.out
            .write_all(&len.to_be_bytes())
            .and_then(|()| self.out.write_all(bytes))
            .map_err(|e| io_err("write row", e))?;
        self.bytes += 4 + bytes.len() as u64;
        Ok(())
    }

    /// Writes the end mark and the row count; returns the writer (flushed) and the
    /// snapshot's size in bytes.
    pub fn finish(mut self) -> Result<(W, u64), StorageError> {
        self.out
            .write_all(&END_MARK.to_be_bytes())
            .and_then(|()| self.out.write_all(&self.count.to_be_bytes()))
            .and_then(|()| self.out.flush())
            .map_err(|e| io_err("write row count", e))?;
        Ok((self.out, self.bytes + 12))
    }
}

/// Reads a snapshot's rows one at a time, in key order, checking the order, the count and
/// that nothing follows the last row.
pub(crate) struct RowReader<R: Read> {
    r: R,
    /// The row count the header gave (version 1); `None` when an end mark closes the rows
    /// (version 2).
    count: Option<u64>,
    /// Rows read so far.
    read: u64,
    last: Option<sled::IVec>,
    /// Where a key or value is read before it is copied into its row.
    buf: Vec<u8>,
    /// Set after the end (or an error): the iterator is fused.
    finished: bool,
}

fn bad(what: &str) -> StorageError {
    StorageError::Corrupt(format!("snapshot: {what}"))
}

/// Reads the header from `r` and returns a reader of the rows after it.
pub(crate) fn rows<R: Read>(r: R) -> Result<RowReader<io::BufReader<R>>, StorageError> {
    // Rows are small: unbuffered, each would cost several reads of the file.
    let mut r = io::BufReader::with_capacity(READ_BUFFER_BYTES, r);
    let mut magic = vec![0u8; MAGIC.len()];
    read_exact(&mut r, &mut magic, "too short")?;
    if magic != MAGIC {
        return Err(bad("not a minietcd MVCC snapshot"));
    }
    let mut v = [0u8; 4];
    read_exact(&mut r, &mut v, "truncated header")?;
    let version = u32::from_be_bytes(v);
    let count = match version {
        FORMAT_VERSION => None,
        FORMAT_VERSION_COUNTED => {
            let mut c = [0u8; 8];
            read_exact(&mut r, &mut c, "truncated header")?;
            Some(u64::from_be_bytes(c))
        }
        _ => {
            return Err(bad(&format!(
                "format version {version}, this build reads {FORMAT_VERSION_COUNTED} and {FORMAT_VERSION}"
            )))
        }
    };
    Ok(RowReader {
        r,
        count,
        read: 0,
        last: None,
        buf: Vec::new(),
        finished: false,
    })
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), StorageError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => bad(what),
        _ => io_err("read", e),
    })
}

impl<R: Read> RowReader<R> {
    fn len(&mut self) -> Result<u32, StorageError> {
        let mut len = [0u8; 4];
        read_exact(&mut self.r, &mut len, "truncated row")?;
        Ok(u32::from_be_bytes(len))
    }

    fn chunk(&mut self, len: u32) -> Result<sled::IVec, StorageError> {
        let len = len as usize;
        // Read into the reused buffer, then copied once into the row. A length up to
        // `DIRECT_READ_BYTES` is read in one go; a longer one grows the buffer as bytes
        // arrive, so that a garbled length cannot make this allocate gigabytes.
        self.buf.clear();
        if len <= DIRECT_READ_BYTES {
            self.buf.resize(len, 0);
            read_exact(&mut self.r, &mut self.buf, "truncated row")?;
        } else {
            let got = (&mut self.r)
                .take(len as u64)
                .read_to_end(&mut self.buf)
                .map_err(|e| io_err("read", e))?;
            if got != len {
                return Err(bad("truncated row"));
            }
        }
        Ok(sled::IVec::from(&self.buf[..]))
    }

    /// After the last row: nothing may follow.
    fn at_end(&mut self) -> Result<Option<(sled::IVec, sled::IVec)>, StorageError> {
        let mut one = [0u8; 1];
        match self.r.read(&mut one).map_err(|e| io_err("read", e))? {
            0 => Ok(None),
            _ => Err(bad("trailing bytes")),
        }
    }

    fn next_row(&mut self) -> Result<Option<(sled::IVec, sled::IVec)>, StorageError> {
        if self.count == Some(self.read) {
            return self.at_end();
        }
        let key_len = self.len()?;
        if key_len == END_MARK && self.count.is_none() {
            let mut c = [0u8; 8];
            read_exact(&mut self.r, &mut c, "truncated end")?;
            let count = u64::from_be_bytes(c);
            if count != self.read {
                return Err(bad(&format!("{} rows, its end says {count}", self.read)));
            }
            return self.at_end();
        }
        let k = self.chunk(key_len)?;
        let value_len = self.len()?;
        let v = self.chunk(value_len)?;
        if self.last.as_ref().is_some_and(|l| *l >= k) {
            return Err(bad("rows out of order"));
        }
        self.last = Some(k.clone());
        self.read += 1;
        Ok(Some((k, v)))
    }
}

impl<R: Read> Iterator for RowReader<R> {
    type Item = Result<(sled::IVec, sled::IVec), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let row = self.next_row().transpose();
        if !matches!(row, Some(Ok(_))) {
            self.finished = true;
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(rows: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut enc = Encoder::new(io::Cursor::new(Vec::new())).unwrap();
        for (k, v) in rows {
            enc.row(k, v).unwrap();
        }
        let (out, bytes) = enc.finish().unwrap();
        let out = out.into_inner();
        assert_eq!(out.len() as u64, bytes);
        out
    }

    #[test]
    fn rows_round_trip_and_damage_is_refused() {
        let data = encode(&[(b"a", b"1"), (b"b", b""), (b"c", &[7u8; 1000])]);
        let back: Vec<_> = rows(&data[..]).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].1.as_ref(), &[7u8; 1000][..]);
        assert_cut_and_longer_are_refused(&data);
        let disordered = encode(&[(b"b", b"1"), (b"a", b"2")]);
        assert!(rows_of(&disordered).is_err(), "rows out of order");
        assert!(rows_of(b"nonsense").is_err());
        // The end mark's count must be the number of rows.
        let mut miscounted = data.clone();
        let n = miscounted.len();
        miscounted[n - 1] = 4;
        assert!(
            rows_of(&miscounted).is_err(),
            "a row count that is not the rows'"
        );
        // Cut right after a whole row: no end mark.
        let without_end = &data[..data.len() - 12];
        assert!(rows_of(without_end).is_err(), "rows without their end");
        let unknown = [MAGIC, &3u32.to_be_bytes()[..]].concat();
        let e = rows_of(&unknown).unwrap_err().to_string();
        assert!(e.contains("format version 3"), "{e}");
    }

    /// Version 1 (the row count in the header), as earlier builds wrote it.
    fn encode_counted(rows: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FORMAT_VERSION_COUNTED.to_be_bytes());
        out.extend_from_slice(&(rows.len() as u64).to_be_bytes());
        for (k, v) in rows {
            for part in [k, v] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }

    #[test]
    fn snapshots_of_earlier_builds_still_read() {
        let rows: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", &[9u8; 300])];
        let data = encode_counted(&rows);
        let back: Vec<_> = rows_of(&data).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].1.as_ref(), &[9u8; 300][..]);
        assert_cut_and_longer_are_refused(&data);
        // The same rows in this build's format: the same rows back.
        assert_eq!(rows_of(&encode(&rows)).unwrap(), back);
    }

    /// `data` cut by a byte, or with a byte more, is refused.
    fn assert_cut_and_longer_are_refused(data: &[u8]) {
        assert!(rows_of(&data[..data.len() - 1]).is_err(), "a cut snapshot");
        let mut longer = data.to_vec();
        longer.push(0);
        assert!(rows_of(&longer).is_err(), "trailing bytes");
    }

    fn rows_of(d: &[u8]) -> Result<Vec<(sled::IVec, sled::IVec)>, StorageError> {
        rows(d)?.collect()
    }
}
