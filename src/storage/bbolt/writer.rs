//! Writes a fresh bbolt file from buckets given in key order.
//!
//! Pages are allocated one after another from page 3 as the buckets stream in: a leaf page
//! is written as soon as it is full, and only the first key of each page is kept to build
//! the branch pages above them once the bucket ends. Memory is bounded by one page plus a
//! key per page, whatever the bucket's size. `finish` then writes the root bucket's page,
//! an empty freelist (page 2: every page below the high-water mark is in use) and the two
//! meta pages (0 and 1) last.
//!
//! Leaves are filled completely (bbolt's compact does the same with a fill percent of 1);
//! an element larger than a page gets a page of its own that spans as many pages as it
//! needs (`overflow`). A bucket whose one leaf fits in a quarter page is written inline,
//! as bbolt does.

use std::io::{Seek, SeekFrom, Write};

use super::page::{
    Meta, PageHeader, BRANCH_ELEMENT_SIZE, BRANCH_PAGE, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG,
    FREELIST_PAGE, LEAF_ELEMENT_SIZE, LEAF_PAGE, META_PAGE, PAGE_HEADER_SIZE,
};
use super::{BoltError, PAGE_SIZE};

/// The first page a bucket's pages take (0 and 1 are metas, 2 the freelist).
const FIRST_DATA_PAGE: u64 = 3;
/// The freelist's page.
const FREELIST_PGID: u64 = 2;

/// One page's worth of elements being gathered.
#[derive(Default)]
struct Node {
    /// (flags, key, value) for a leaf; (0, key, child page id LE) for a branch.
    elems: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// The encoded size: page header plus every element and its bytes.
    size: usize,
}

impl Node {
    fn new() -> Node {
        Node {
            elems: Vec::new(),
            size: PAGE_HEADER_SIZE,
        }
    }

    /// Encodes the node as a leaf or branch page with id `id`, padded to `pad` bytes.
    fn encode(&self, id: u64, flags: u16, pad: usize) -> Result<Vec<u8>, BoltError> {
        let count = u16::try_from(self.elems.len())
            .map_err(|_| BoltError::Corrupt("more than 65535 elements in a page".into()))?;
        let len = self.size.max(pad);
        let mut b = vec![0u8; len];
        let overflow = u32::try_from(len.div_ceil(PAGE_SIZE).saturating_sub(1))
            .map_err(|_| BoltError::Corrupt("page larger than 16 TiB".into()))?;
        PageHeader {
            id,
            flags,
            count,
            overflow: if pad == 0 { 0 } else { overflow },
        }
        .write(&mut b);
        let elem_size = if flags == BRANCH_PAGE {
            BRANCH_ELEMENT_SIZE
        } else {
            LEAF_ELEMENT_SIZE
        };
        let mut data = PAGE_HEADER_SIZE + self.elems.len() * elem_size;
        for (i, (eflags, k, v)) in self.elems.iter().enumerate() {
            let at = PAGE_HEADER_SIZE + i * elem_size;
            let pos = u32::try_from(data - at)
                .map_err(|_| BoltError::Corrupt("element offset beyond 4 GiB".into()))?;
            let ksize = u32::try_from(k.len())
                .map_err(|_| BoltError::Corrupt("key larger than 4 GiB".into()))?;
            let e = b
                .get_mut(at..at + elem_size)
                .ok_or_else(|| BoltError::Corrupt("page buffer too small".into()))?;
            if flags == BRANCH_PAGE {
                e[0..4].copy_from_slice(&pos.to_le_bytes());
                e[4..8].copy_from_slice(&ksize.to_le_bytes());
                e[8..16].copy_from_slice(v);
                put(&mut b, data, k)?;
                data += k.len();
            } else {
                let vsize = u32::try_from(v.len())
                    .map_err(|_| BoltError::Corrupt("value larger than 4 GiB".into()))?;
                e[0..4].copy_from_slice(&eflags.to_le_bytes());
                e[4..8].copy_from_slice(&pos.to_le_bytes());
                e[8..12].copy_from_slice(&ksize.to_le_bytes());
                e[12..16].copy_from_slice(&vsize.to_le_bytes());
                put(&mut b, data, k)?;
                put(&mut b, data + k.len(), v)?;
                data += k.len() + v.len();
            }
        }
        Ok(b)
    }
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) -> Result<(), BoltError> {
    b.get_mut(at..at + bytes.len())
        .ok_or_else(|| BoltError::Corrupt("page buffer too small".into()))?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a bbolt file: buckets one after another with [`BoltWriter::bucket`], then
/// [`BoltWriter::finish`].
pub struct BoltWriter<W: Write + Seek> {
    out: W,
    /// The next free page id (the high-water mark once finished).
    next_pgid: u64,
    /// Top-level buckets written so far: name -> bucket value (header, inline page).
    root: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<W: Write + Seek> BoltWriter<W> {
    /// Starts a file at the beginning of `out`.
    pub fn new(mut out: W) -> Result<Self, BoltError> {
        out.seek(SeekFrom::Start(FIRST_DATA_PAGE * PAGE_SIZE as u64))?;
        Ok(BoltWriter {
            out,
            next_pgid: FIRST_DATA_PAGE,
            root: Vec::new(),
        })
    }

    /// Writes the top-level bucket `name` with `items` (ascending keys, each once); returns
    /// how many it held. Buckets may come in any order, each name once.
    pub fn bucket<I, E>(&mut self, name: &[u8], items: I) -> Result<u64, E>
    where
        I: IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
        E: From<BoltError>,
    {
        if self.root.iter().any(|(n, _)| n == name) {
            return Err(BoltError::Corrupt(format!(
                "bucket {:?} written twice",
                String::from_utf8_lossy(name)
            ))
            .into());
        }
        let unsorted = || BoltError::Unsorted {
            bucket: String::from_utf8_lossy(name).into_owned(),
        };
        let mut node = Node::new();
        let mut leaves: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut count: u64 = 0;
        for item in items {
            let (k, v) = item?;
            if node.elems.last().is_some_and(|(_, last, _)| *last >= k) {
                return Err(unsorted().into());
            }
            let elem = LEAF_ELEMENT_SIZE + k.len() + v.len();
            if !node.elems.is_empty() && node.size + elem > PAGE_SIZE {
                let full = std::mem::replace(&mut node, Node::new());
                leaves.push(self.write_node(full, LEAF_PAGE)?);
            }
            // Order across pages: the new page's first key follows the last page's keys.
            if node.elems.is_empty() && leaves.last().is_some_and(|(first, _)| *first >= k) {
                return Err(unsorted().into());
            }
            node.size += elem;
            node.elems.push((0, k, v));
            count += 1;
        }
        let mut value = Vec::with_capacity(BUCKET_HEADER_SIZE);
        if leaves.is_empty() && node.size <= PAGE_SIZE / 4 {
            value.extend_from_slice(&0u64.to_le_bytes());
            value.extend_from_slice(&0u64.to_le_bytes());
            value.extend_from_slice(&node.encode(0, LEAF_PAGE, 0)?);
        } else {
            if !node.elems.is_empty() {
                leaves.push(self.write_node(node, LEAF_PAGE)?);
            }
            let root = self.branches(leaves)?;
            value.extend_from_slice(&root.to_le_bytes());
            value.extend_from_slice(&0u64.to_le_bytes());
        }
        self.root.push((name.to_vec(), value));
        Ok(count)
    }

    /// Builds the branch pages above `level` (first key and page of each child, in order)
    /// up to one root; returns the root's page id.
    fn branches(&mut self, mut level: Vec<(Vec<u8>, u64)>) -> Result<u64, BoltError> {
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut node = Node::new();
            for (k, id) in level {
                let elem = BRANCH_ELEMENT_SIZE + k.len();
                if !node.elems.is_empty() && node.size + elem > PAGE_SIZE {
                    let full = std::mem::replace(&mut node, Node::new());
                    next.push(self.write_node(full, BRANCH_PAGE)?);
                }
                node.size += elem;
                node.elems.push((0, k, id.to_le_bytes().to_vec()));
            }
            next.push(self.write_node(node, BRANCH_PAGE)?);
            level = next;
        }
        level
            .first()
            .map(|(_, id)| *id)
            .ok_or_else(|| BoltError::Corrupt("a bucket without pages".into()))
    }

    /// Writes `node` at the next free page(s); returns its first key and page id.
    fn write_node(&mut self, node: Node, flags: u16) -> Result<(Vec<u8>, u64), BoltError> {
        let id = self.next_pgid;
        let pages = node.size.div_ceil(PAGE_SIZE).max(1);
        let bytes = node.encode(id, flags, pages * PAGE_SIZE)?;
        self.out.write_all(&bytes)?;
        self.next_pgid += pages as u64;
        let first = node
            .elems
            .into_iter()
            .next()
            .map(|(_, k, _)| k)
            .unwrap_or_default();
        Ok((first, id))
    }

    /// Writes the root bucket, the freelist and the meta pages; returns the output and the
    /// file's size (every page up to the high-water mark).
    pub fn finish(mut self) -> Result<(W, u64), BoltError> {
        let mut buckets = std::mem::take(&mut self.root);
        buckets.sort();
        let mut leaves = Vec::new();
        let mut node = Node::new();
        for (name, value) in buckets {
            let elem = LEAF_ELEMENT_SIZE + name.len() + value.len();
            if !node.elems.is_empty() && node.size + elem > PAGE_SIZE {
                let full = std::mem::replace(&mut node, Node::new());
                leaves.push(self.write_node(full, LEAF_PAGE)?);
            }
            node.size += elem;
            node.elems.push((BUCKET_LEAF_FLAG, name, value));
        }
        leaves.push(self.write_node(node, LEAF_PAGE)?);
        let root = self.branches(leaves)?;
        let hwm = self.next_pgid;
        let mut head = vec![0u8; FIRST_DATA_PAGE as usize * PAGE_SIZE];
        for txid in 0..2u64 {
            let at = txid as usize * PAGE_SIZE;
            let page = head
                .get_mut(at..at + PAGE_SIZE)
                .ok_or_else(|| BoltError::Corrupt("meta page buffer".into()))?;
            PageHeader {
                id: txid,
                flags: META_PAGE,
                count: 0,
                overflow: 0,
            }
            .write(page);
            let meta = Meta {
                page_size: PAGE_SIZE as u32,
                flags: 0,
                root,
                sequence: 0,
                freelist: FREELIST_PGID,
                pgid: hwm,
                txid,
            };
            put(page, PAGE_HEADER_SIZE, &meta.encode())?;
        }
        let free_at = FREELIST_PGID as usize * PAGE_SIZE;
        PageHeader {
            id: FREELIST_PGID,
            flags: FREELIST_PAGE,
            count: 0,
            overflow: 0,
        }
        .write(head.get_mut(free_at..).unwrap_or_default());
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&head)?;
        self.out.seek(SeekFrom::Start(hwm * PAGE_SIZE as u64))?;
        self.out.flush()?;
        Ok((self.out, hwm * PAGE_SIZE as u64))
    }
}
