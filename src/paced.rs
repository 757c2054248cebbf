//! Bulk disk writes kept out of the way of the requests being served.
//!
//! A snapshot received from the leader (or written for a test) is hundreds of MiB.
//! Left to the page cache and made durable by one `fsync` at its end, all of it goes to disk
//! at once, and every Raft log `fdatasync` on the machine waits behind it for a tenth of a
//! second or more. A [`PacedFile`] writes its bytes back as they come, a few MiB at a time
//! (RocksDB's `bytes_per_sync` does the same for its files), so that the final `fsync` has
//! little left to do. sled writes its own log buffers back the same way.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// Bytes a [`PacedFile`] leaves to the page cache before it starts writing them back.
pub const WRITEBACK_BYTES: u64 = 4 << 20;

/// A file written in bulk whose bytes go to disk in steps of [`WRITEBACK_BYTES`] as they are
/// written: each step's writeback is started (`sync_file_range`, data only) when the step is
/// complete and waited for when the next one is, so at most two steps are ever in flight.
/// Durability still comes from the final `fsync` alone.
#[derive(Debug)]
pub struct PacedFile {
    file: File,
    /// The position of the next write.
    pos: u64,
    /// Where the step being written back starts; everything below it is on disk (or was
    /// rewritten after a seek back, left to the final fsync).
    written_back: u64,
    /// Where the step being written back ends (the next step starts there).
    started: u64,
    /// A writeback that failed after its bytes were accepted: reported by the next call.
    failed: Option<io::Error>,
}

impl PacedFile {
    /// Wraps `file`, whose position is its start.
    pub fn new(file: File) -> PacedFile {
        PacedFile {
            file,
            pos: 0,
            written_back: 0,
            started: 0,
            failed: None,
        }
    }

    /// The file (its bytes written back so far or not, none of them fsynced).
    pub fn into_inner(self) -> File {
        self.file
    }

    fn pace(&mut self) -> io::Result<()> {
        if self.pos < self.started + WRITEBACK_BYTES {
            return Ok(());
        }
        // The previous step is on its way since the last call: wait for it, start this one.
        write_back(&self.file, self.written_back, self.started, true)?;
        write_back(&self.file, self.started, self.pos, false)?;
        self.written_back = self.started;
        self.started = self.pos;
        Ok(())
    }

    fn take_failure(&mut self) -> io::Result<()> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.take_failure()?;
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        // The bytes are written: a failed writeback is the next call's error, not this one's
        // (the caller would write them again).
        if let Err(e) = self.pace() {
            self.failed = Some(e);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.take_failure()?;
        self.file.flush()
    }
}

impl Seek for PacedFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.take_failure()?;
        self.pos = self.file.seek(to)?;
        // Writeback goes on from the furthest point written; bytes rewritten below it are
        // left to the final fsync.
        self.started = self.started.max(self.pos);
        Ok(self.pos)
    }
}

/// Starts writing `from..to` of `file` back to disk, or with `wait`, waits until it is
/// (data only: no metadata, no disk cache flush). Where the call is not supported the bytes
/// are left to the final fsync.
fn write_back(file: &File, from: u64, to: u64, wait: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to.saturating_sub(from)))
        else {
            return Ok(());
        };
        if len == 0 {
            return Ok(());
        }
        let flags = if wait {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER
        } else {
            libc::SYNC_FILE_RANGE_WRITE
        };
        // SAFETY: the descriptor stays open while `file` is borrowed; the call reads no
        // memory of ours.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EINVAL | libc::ESPIPE)
            ) {
                return Err(e);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to, wait);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::{PacedFile, WRITEBACK_BYTES};

    /// Whatever is written, sought and rewritten reads back the same as through a plain
    /// file, across several writeback steps.
    #[test]
    fn a_paced_file_holds_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = PacedFile::new(std::fs::File::create(&path).unwrap());
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1_000_003).collect();
        let mut expected = Vec::new();
        while (expected.len() as u64) < 4 * WRITEBACK_BYTES {
            w.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        // Steps of at least WRITEBACK_BYTES: two complete ones waited for, one started.
        assert!(w.written_back >= 2 * WRITEBACK_BYTES, "{}", w.written_back);
        assert!(w.started > w.written_back, "{w:?}");
        w.seek(SeekFrom::Start(10)).unwrap();
        w.write_all(b"header").unwrap();
        expected[10..16].copy_from_slice(b"header");
        w.seek(SeekFrom::End(0)).unwrap();
        w.write_all(b"tail").unwrap();
        expected.extend_from_slice(b"tail");
        w.flush().unwrap();
        let f = w.into_inner();
        f.sync_all().unwrap();
        let mut got = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(
            got == expected,
            "{} bytes read, {} written",
            got.len(),
            expected.len()
        );
    }
}
