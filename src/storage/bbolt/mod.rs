//! bbolt's file format, read and written by the project's own code (no Rust crate reads or
//! writes real bbolt files; jammdb and nut have formats of their own). etcd keeps its backend
//! in a bbolt file and `Maintenance.Snapshot` streams that file, so minietcd's snapshots are
//! bbolt files too, and etcd's snapshots are read through [`BoltReader`].
//!
//! The layout (little-endian, as bbolt writes it on the machines etcd runs on):
//!
//! ```text
//! page 0, 1   meta pages: magic, version 2, page size, root bucket, freelist page,
//!             high-water page id, txid, FNV-1a 64 checksum. The valid one with the higher
//!             txid is current.
//! page 2..    freelist, branch and leaf pages of the buckets, in any order.
//!
//! every page: | id u64 | flags u16 | count u16 | overflow u32 | elements ... |
//!             a page spanning several pages has `overflow` = extra pages.
//! leaf element:   | flags u32 | pos u32 | ksize u32 | vsize u32 |  (pos: from the element)
//! branch element: | pos u32 | ksize u32 | child page id u64 |
//! ```
//!
//! Buckets are leaf elements with flag 1 in their parent (the root bucket for top-level
//! buckets, whose page the meta names). A bucket's value is its header (root page id u64,
//! sequence u64); a small bucket is *inline*: root page id 0, and its one leaf page follows
//! the header inside the value, so it takes no page of its own.
//!
//! [`BoltWriter`] builds a fresh, compact file from buckets given in key order (the way
//! `bbolt compact` would); [`BoltReader`] reads any file bbolt wrote, checking every page it
//! visits against the meta page's bounds.

mod page;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::{BoltReader, Bucket, PageSource};
pub use writer::BoltWriter;

/// The page size minietcd writes (bbolt's default on Linux).
pub const PAGE_SIZE: usize = 4096;

/// Why a bbolt file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    /// Neither meta page is valid (bbolt's `errInvalid`, etcdctl's wording).
    #[error("invalid database")]
    Invalid,
    /// A page the meta page points at is damaged or missing.
    #[error("{0}")]
    Corrupt(String),
    /// Keys given to the writer out of order.
    #[error("bucket {bucket:?}: keys out of order")]
    Unsorted {
        /// The bucket being written.
        bucket: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
