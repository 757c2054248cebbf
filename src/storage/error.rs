//! Storage errors: expected ones (an etcd API error) apart from fatal ones (I/O, corruption).

/// An error of the MVCC store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The requested revision is at or below the compaction revision.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// sled failed: fatal for the node.
    #[error("storage I/O: {0}")]
    Sled(#[from] sled::Error),
    /// A thread panicked while holding the store's lock: the in-memory state may be
    /// half-updated, so the node must stop.
    #[error("mvcc state lock poisoned by a panic")]
    Poisoned,
    /// The data on disk is not what minietcd wrote: fatal for the node.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}
