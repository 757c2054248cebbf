//! Reads a bbolt file page by page (positioned reads, nothing mapped), visiting buckets and
//! their keys in order. Every page id is checked against the meta page's high-water mark and
//! every element against its page's bounds, so a damaged file is an error, never a panic or
//! a read of something else.

use std::io;

use super::page::{
    u32_at, u64_at, Meta, PageHeader, BRANCH_ELEMENT_SIZE, BRANCH_PAGE, BUCKET_HEADER_SIZE,
    BUCKET_LEAF_FLAG, LEAF_ELEMENT_SIZE, LEAF_PAGE, META_SIZE, PAGE_HEADER_SIZE,
};
use super::{BoltError, PAGE_SIZE};

/// How deep a bucket's tree may be: bbolt's trees are a few levels deep; a deeper one is a
/// loop in a damaged file.
const MAX_DEPTH: usize = 64;
/// The page sizes bbolt can have written.
const PAGE_SIZES: std::ops::RangeInclusive<u32> = 512..=(1 << 20);

/// Where pages are read from.
pub trait PageSource {
    /// Fills `buf` from `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The source's length in bytes.
    fn size_bytes(&self) -> io::Result<u64>;
}

impl PageSource for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl PageSource for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|at| self.get(at..at.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
}

/// A bucket's contents: its root page, or its inline leaf page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bucket {
    /// Root page id.
    Page(u64),
    /// The leaf page stored in the parent's value.
    Inline(Vec<u8>),
}

impl Bucket {
    /// Decodes a bucket value (header, then the inline page when the root is 0).
    fn parse(value: &[u8]) -> Option<Bucket> {
        let root = u64_at(value, 0)?;
        if root == 0 {
            Some(Bucket::Inline(value.get(BUCKET_HEADER_SIZE..)?.to_vec()))
        } else {
            Some(Bucket::Page(root))
        }
    }
}

/// An open bbolt file.
pub struct BoltReader<S: PageSource + ?Sized> {
    page_size: usize,
    meta: Meta,
    src: Box<S>,
}

impl<S: PageSource + ?Sized> BoltReader<S> {
    /// Reads the meta pages (as bbolt's Open: the valid one with the higher txid wins; no
    /// valid one is "invalid database").
    pub fn open(src: Box<S>) -> Result<Self, BoltError> {
        let len = src.size_bytes()?;
        let read_meta = |at: u64| -> Option<Meta> {
            let mut b = [0u8; PAGE_HEADER_SIZE + META_SIZE];
            if at + b.len() as u64 > len {
                return None;
            }
            src.read_exact_at(&mut b, at).ok()?;
            Meta::parse(b.get(PAGE_HEADER_SIZE..)?)
                .filter(|m| PAGE_SIZES.contains(&m.page_size) && m.page_size.is_power_of_two())
        };
        let meta0 = read_meta(0);
        // bbolt takes the page size from meta 0, or the OS's when meta 0 is damaged.
        let page_size = meta0.map_or(PAGE_SIZE as u32, |m| m.page_size);
        let meta1 = read_meta(u64::from(page_size)).filter(|m| m.page_size == page_size);
        let meta = match (meta0, meta1) {
            (Some(a), Some(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => return Err(BoltError::Invalid),
        };
        Ok(BoltReader {
            page_size: page_size as usize,
            meta,
            src,
        })
    }

    /// The database's size: every page below the high-water mark (bbolt's `Tx.Size`).
    pub fn size(&self) -> u64 {
        self.meta.pgid.saturating_mul(self.page_size as u64)
    }

    /// The page size.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Checks that the source holds every page the meta page counts.
    pub fn check_length(&self) -> Result<(), BoltError> {
        let len = self.src.size_bytes()?;
        if len < self.size() {
            return Err(BoltError::Corrupt(format!(
                "truncated: {len} bytes, the database needs {}",
                self.size()
            )));
        }
        Ok(())
    }

    /// Reads page `id` with its overflow pages.
    pub(super) fn page(&self, id: u64) -> Result<Vec<u8>, BoltError> {
        let bad = |what: String| BoltError::Corrupt(format!("page {id}: {what}"));
        if id < 2 || id >= self.meta.pgid {
            return Err(bad(format!(
                "out of bounds (high-water mark {})",
                self.meta.pgid
            )));
        }
        let at = id * self.page_size as u64;
        let mut b = vec![0u8; self.page_size];
        self.src
            .read_exact_at(&mut b, at)
            .map_err(|_| bad("beyond the end of the file: truncated".into()))?;
        let h = PageHeader::parse(&b).ok_or_else(|| bad("no header".into()))?;
        if h.id != id {
            return Err(bad(format!("header names page {}", h.id)));
        }
        let extra = u64::from(h.overflow);
        if extra > 0 {
            if id + extra >= self.meta.pgid {
                return Err(bad(format!(
                    "{extra} overflow pages beyond the high-water mark"
                )));
            }
            let total = usize::try_from((extra + 1) * self.page_size as u64)
                .map_err(|_| bad("too large".into()))?;
            b.resize(total, 0);
            let rest = b.get_mut(self.page_size..).unwrap_or_default();
            self.src
                .read_exact_at(rest, at + self.page_size as u64)
                .map_err(|_| bad("beyond the end of the file: truncated".into()))?;
        }
        Ok(b)
    }

    /// The top-level buckets, in name order.
    pub fn buckets(&self) -> Result<Vec<(Vec<u8>, Bucket)>, BoltError> {
        let mut out = Vec::new();
        let root = Bucket::Page(self.meta.root);
        self.for_each(&root, &mut |k: &[u8], v: &[u8], is_bucket: bool| {
            let bucket = Bucket::parse(v).filter(|_| is_bucket).ok_or_else(|| {
                BoltError::Corrupt(format!(
                    "root entry {:?} is not a bucket",
                    String::from_utf8_lossy(k)
                ))
            })?;
            out.push((k.to_vec(), bucket));
            Ok::<(), BoltError>(())
        })?;
        Ok(out)
    }

    /// The bucket named `name` at the top level, if any.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        Ok(self
            .buckets()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b))
    }

    /// Calls `f(key, value, is_bucket)` for every element of `bucket`, in key order.
    pub fn for_each<E, F>(&self, bucket: &Bucket, f: &mut F) -> Result<(), E>
    where
        E: From<BoltError>,
        F: FnMut(&[u8], &[u8], bool) -> Result<(), E>,
    {
        match bucket {
            Bucket::Page(id) => {
                let page = self.page(*id)?;
                self.walk(*id, &page, 0, f)
            }
            Bucket::Inline(page) => self.walk(0, page, 0, f),
        }
    }

    fn walk<E, F>(&self, id: u64, page: &[u8], depth: usize, f: &mut F) -> Result<(), E>
    where
        E: From<BoltError>,
        F: FnMut(&[u8], &[u8], bool) -> Result<(), E>,
    {
        let bad = |what: &str| BoltError::Corrupt(format!("page {id}: {what}"));
        if depth > MAX_DEPTH {
            return Err(bad("the tree is deeper than any bbolt writes (a loop?)").into());
        }
        let h = PageHeader::parse(page).ok_or_else(|| bad("no header"))?;
        let slice = |at: usize, len: usize| -> Result<&[u8], BoltError> {
            at.checked_add(len)
                .and_then(|end| page.get(at..end))
                .ok_or_else(|| bad("element beyond the page"))
        };
        match h.flags {
            LEAF_PAGE => {
                for i in 0..usize::from(h.count) {
                    let at = PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE;
                    let e = slice(at, LEAF_ELEMENT_SIZE)?;
                    let field = |n: usize| u32_at(e, n * 4).map(|x| x as usize).unwrap_or(0);
                    let (flags, pos, ksize, vsize) = (field(0), field(1), field(2), field(3));
                    let key = slice(at + pos, ksize)?;
                    let value = slice(at + pos + ksize, vsize)?;
                    f(key, value, flags as u32 & BUCKET_LEAF_FLAG != 0)?;
                }
                Ok(())
            }
            BRANCH_PAGE => {
                for i in 0..usize::from(h.count) {
                    let at = PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE;
                    let e = slice(at, BRANCH_ELEMENT_SIZE)?;
                    let child = u64_at(e, 8).unwrap_or(0);
                    let page = self.page(child)?;
                    self.walk(child, &page, depth + 1, f)?;
                }
                Ok(())
            }
            other => Err(bad(&format!("invalid type {other:#x}")).into()),
        }
    }
}
