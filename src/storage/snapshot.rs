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
//!
//! Both directions stream: [`Encoder`] writes rows one at a time to any seekable writer (the
//! row count is patched into the header at the end), and [`RowReader`] reads them back one
//! at a time from any reader, so neither side ever holds the whole snapshot.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::error::StorageError;

/// Identifies a minietcd MVCC snapshot.
pub(crate) const MAGIC: &[u8] = b"MINIETCD-MVCC-SNAP";
/// The format this code writes and reads.
const FORMAT_VERSION: u32 = 1;
/// The read buffer of a snapshot being read back row by row.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// Keys and values up to this size are read into a buffer of their stated length at once.
const DIRECT_READ_BYTES: usize = 1 << 20;

fn io_err(what: &str, e: io::Error) -> StorageError {
    StorageError::Corrupt(format!("snapshot: {what}: {e}"))
}

/// Writes a snapshot row by row.
pub(crate) struct Encoder<W: Write + Seek> {
    out: W,
    /// Where the row count sits.
    count_at: u64,
    count: u64,
    /// Bytes written so far.
    bytes: u64,
}

impl<W: Write + Seek> Encoder<W> {
    /// Writes the header at the writer's position.
    pub fn new(mut out: W) -> Result<Self, StorageError> {
        let start = out
            .stream_position()
            .map_err(|e| io_err("write header", e))?;
        out.write_all(MAGIC)
            .and_then(|()| out.write_all(&FORMAT_VERSION.to_be_bytes()))
            .and_then(|()| out.write_all(&0u64.to_be_bytes()))
            .map_err(|e| io_err("write header", e))?;
        Ok(Encoder {
            out,
            count_at: start + MAGIC.len() as u64 + 4,
            count: 0,
            bytes: MAGIC.len() as u64 + 12,
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
            .map_err(|_| StorageError::Corrupt("row larger than 4 GiB in snapshot".into()))?;
        self.out
            .write_all(&len.to_be_bytes())
            .and_then(|()| self.out.write_all(bytes))
            .map_err(|e| io_err("write row", e))?;
        self.bytes += 4 + bytes.len() as u64;
        Ok(())
    }

    /// Patches the row count into the header; returns the writer (positioned after the last
    /// row) and the snapshot's size in bytes.
    pub fn finish(mut self) -> Result<(W, u64), StorageError> {
        let end = self.out.stream_position().map_err(|e| io_err("write", e))?;
        self.out
            .seek(SeekFrom::Start(self.count_at))
            .and_then(|_| self.out.write_all(&self.count.to_be_bytes()))
            .and_then(|()| self.out.seek(SeekFrom::Start(end)))
            .and_then(|_| self.out.flush())
            .map_err(|e| io_err("write row count", e))?;
        Ok((self.out, self.bytes))
    }
}

/// Reads a snapshot's rows one at a time, in key order, checking the order, the count and
/// that nothing follows the last row.
pub(crate) struct RowReader<R: Read> {
    r: R,
    remaining: u64,
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
    if version != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let mut c = [0u8; 8];
    read_exact(&mut r, &mut c, "truncated header")?;
    Ok(RowReader {
        r,
        remaining: u64::from_be_bytes(c),
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
    fn chunk(&mut self) -> Result<sled::IVec, StorageError> {
        let mut len = [0u8; 4];
        read_exact(&mut self.r, &mut len, "truncated row")?;
        let len = u32::from_be_bytes(len) as usize;
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

    fn next_row(&mut self) -> Result<Option<(sled::IVec, sled::IVec)>, StorageError> {
        if self.remaining == 0 {
            let mut one = [0u8; 1];
            return match self.r.read(&mut one).map_err(|e| io_err("read", e))? {
                0 => Ok(None),
                _ => Err(bad("trailing bytes")),
            };
        }
        let k = self.chunk()?;
        let v = self.chunk()?;
        if self.last.as_ref().is_some_and(|l| *l >= k) {
            return Err(bad("rows out of order"));
        }
        self.last = Some(k.clone());
        self.remaining -= 1;
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
        let all = |d: &[u8]| -> Result<Vec<_>, StorageError> { rows(d)?.collect() };
        assert!(all(&data[..data.len() - 1]).is_err(), "a cut snapshot");
        let mut longer = data.clone();
        longer.push(0);
        assert!(all(&longer).is_err(), "trailing bytes");
        let disordered = encode(&[(b"b", b"1"), (b"a", b"2")]);
        assert!(all(&disordered).is_err(), "rows out of order");
        assert!(all(b"nonsense").is_err());
    }
}
