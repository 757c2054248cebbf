//! The file layer under the WAL: the handful of file-system operations it needs, behind a
//! trait so that tests can put a layer underneath that forgets every unsynced byte at a
//! simulated power cut (`tests::CrashFs`). [`StdFs`] is the real one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open file of the WAL.
pub trait WalFile: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` from `offset`; an error if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// The directory of the WAL.
pub trait WalFs: Send + Sync {
    /// Names of the files in the directory (not paths).
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn WalFile>>;
    /// Creates (or truncates) `name` with `len` zero bytes written out and synced, so that
    /// later overwrites never grow the file and `fdatasync` has no metadata to commit.
    fn create_zeroed(&self, name: &str, len: u64) -> io::Result<Arc<dyn WalFile>>;
    /// Renames `from` to `to` (atomically replacing `to`).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// The real file system, rooted at one directory.
pub struct StdFs {
    dir: PathBuf,
}

impl StdFs {
    /// The WAL directory `dir`, created if missing.
    pub fn new(dir: &Path) -> io::Result<StdFs> {
        fs::create_dir_all(dir)?;
        Ok(StdFs {
            dir: dir.to_path_buf(),
        })
    }
}

/// How much is written per call while zero-filling a new segment.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

impl WalFile for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl WalFs for StdFs {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn WalFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(f))
    }

    fn create_zeroed(&self, name: &str, len: u64) -> io::Result<Arc<dyn WalFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(name))?;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut off = 0u64;
        while off < len {
            let n =
                usize::try_from(len - off).map_or(ZERO_CHUNK_BYTES, |r| r.min(ZERO_CHUNK_BYTES));
            FileExt::write_all_at(&f, &zeros[..n], off)?;
            off += n as u64;
        }
        f.sync_all()?;
        Ok(Arc::new(f))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}
