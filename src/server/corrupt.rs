//! etcd's initial corruption check (`--experimental-initial-corrupt-check`): before a member
//! serves clients, it compares its HashKV with every peer's at its own current revision, and
//! refuses to start when a peer with the same compaction revision hashes the same history
//! differently (etcd 3.4 `etcdserver/corrupt.go` `CheckInitialHashKV`).
//!
//! As in etcd, a peer that cannot answer (down, behind, compacted past the revision) is only
//! logged: the check cannot tell anything from it. etcd asks its peers over the peer port;
//! minietcd asks the Maintenance service at their published client URLs.

use std::time::Duration;

use tonic::transport::Endpoint;

use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::{HashKvRequest, Member};
use crate::storage::{KvHash, MvccStore};

/// How long one peer may take to answer (connect and HashKV).
const PEER_HASH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the check refuses to start the member.
#[derive(Debug, thiserror::Error)]
pub enum CorruptError {
    /// etcd's wording: "<id> found data inconsistency with peers".
    #[error("{member:x} found data inconsistency with peers ({details})")]
    Mismatch { member: u64, details: String },
    #[error("cannot hash the local store: {0}")]
    Local(#[from] crate::storage::StorageError),
}

/// Compares this member's HashKV at its current revision with every peer's.
pub async fn check_initial(
    store: &MvccStore,
    member_id: u64,
    peers: &[Member],
) -> Result<(), CorruptError> {
    let local = store.hash_kv(0)?;
    tracing::info!(
        member = %format!("{member_id:x}"),
        revision = local.current,
        compact_revision = local.compacted,
        hash = local.hash,
        "starting initial corruption check"
    );
    let mut mismatches = Vec::new();
    for peer in peers.iter().filter(|m| m.id != member_id) {
        match peer_hash(peer, local.current).await {
            Ok(theirs) => {
                if let Some(m) = mismatch(&local, &theirs) {
                    tracing::error!(
                        peer = %format!("{:x}", peer.id),
                        local_hash = local.hash,
                        peer_hash = theirs.hash,
                        revision = local.current,
                        compact_revision = local.compacted,
                        "found different hash values from a peer"
                    );
                    mismatches.push(format!("peer {:x}: {m}", peer.id));
                }
            }
            Err(why) => tracing::warn!(
                peer = %format!("{:x}", peer.id),
                error = %why,
                "cannot fetch hash from peer"
            ),
        }
    }
    if !mismatches.is_empty() {
        return Err(CorruptError::Mismatch {
            member: member_id,
            details: mismatches.join("; "),
        });
    }
    tracing::info!(
        member = %format!("{member_id:x}"),
        "initial corruption checking passed; no corruption was detected"
    );
    Ok(())
}

/// etcd's rule: hashes compare only between stores compacted at the same revision.
fn mismatch(local: &KvHash, theirs: &KvHash) -> Option<String> {
    (theirs.compacted == local.compacted && theirs.hash != local.hash).then(|| {
        format!(
            "hash {} against local {} at revision {}",
            theirs.hash, local.hash, local.current
        )
    })
}

/// The peer's HashKV at `rev`, from the first of its client URLs that answers.
async fn peer_hash(peer: &Member, rev: i64) -> Result<KvHash, String> {
    if peer.client_ur_ls.is_empty() {
        return Err("the peer has not published its client URLs".into());
    }
    let mut last = String::new();
    for url in &peer.client_ur_ls {
        match tokio::time::timeout(PEER_HASH_TIMEOUT, ask(url, rev)).await {
            Ok(Ok(h)) => return Ok(h),
            Ok(Err(e)) => last = format!("{url}: {e}"),
            Err(_) => last = format!("{url}: no answer within {PEER_HASH_TIMEOUT:?}"),
        }
    }
    Err(last)
}

async fn ask(url: &str, rev: i64) -> Result<KvHash, String> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let resp = MaintenanceClient::new(channel)
        .hash_kv(HashKvRequest { revision: rev })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    Ok(KvHash {
        hash: resp.hash,
        current: resp.header.map_or(0, |h| h.revision),
        compacted: resp.compact_revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hash: u32, compacted: i64) -> KvHash {
        KvHash {
            hash,
            current: 10,
            compacted,
        }
    }

    #[test]
    fn only_equal_compactions_are_compared() {
        assert!(mismatch(&h(1, 5), &h(1, 5)).is_none());
        assert!(mismatch(&h(1, 5), &h(2, 5)).is_some());
        // Compacted at another revision: the hashes cover different rows.
        assert!(mismatch(&h(1, 5), &h(2, 7)).is_none());
    }
}
