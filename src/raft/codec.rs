//! How openraft's values travel and rest: postcard (compact, not self-describing) for log
//! entries, votes, log ids, memberships, snapshot metadata and the peer RPC payloads.
//!
//! Every openraft type stored or sent here roundtrips through postcard, errors carrying
//! `AnyError` included (the tests below check each one), so no type needs the serde_json
//! fallback. A peer on an incompatible version fails to decode with [`CodecError::Decode`]
//! instead of misreading.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Serialization failed (a type postcard cannot represent).
    #[error("encode {what}: {source}")]
    Encode {
        /// The kind of value being encoded, for the log.
        what: &'static str,
        /// The underlying postcard error.
        source: postcard::Error,
    },
    /// The bytes are not a valid encoding (corruption, or a peer on another version).
    #[error("decode {what}: {source}")]
    Decode {
        /// The kind of value being decoded, for the log.
        what: &'static str,
        /// The underlying postcard error.
        source: postcard::Error,
    },
}

/// Encodes `value`; `what` names it in the error.
pub fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_allocvec(value).map_err(|source| CodecError::Encode { what, source })
}

/// Decodes a value encoded by [`encode`].
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(|source| CodecError::Decode { what, source })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Debug;

    use openraft::error::{Fatal, RaftError};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError,
        StreamAppendResult, VoteRequest, VoteResponse,
    };
    use openraft::EntryPayload;

    use super::*;
    use crate::pb::etcdserverpb::PutRequest;
    use crate::pb::minietcdpb::internal_request::Request;
    use crate::pb::minietcdpb::InternalRequest;
    use crate::raft::types::{
        Command, Entry, LogId, MemberNode, Membership, NodeId, SnapshotMeta, StoredMembership,
        TypeConfig, Vote,
    };

    fn roundtrip<T: Serialize + DeserializeOwned + Debug + PartialEq>(v: &T) {
        let bytes = encode("test", v).unwrap();
        let back: T = decode("test", &bytes).unwrap();
        assert_eq!(&back, v);
    }

    /// Like [`roundtrip`] for types without `PartialEq`: compares the debug rendering.
    fn roundtrip_dbg<T: Serialize + DeserializeOwned + Debug>(v: &T) {
        let bytes = encode("test", v).unwrap();
        let back: T = decode("test", &bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{v:?}"));
    }

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, node, index)
    }

    fn membership() -> Membership {
        let mut nodes = BTreeMap::new();
        for id in [1u64, 2, 3] {
            nodes.insert(
                id,
                MemberNode {
                    name: format!("n{id}"),
                    peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
                    client_urls: vec![],
                },
            );
        }
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap()
    }

    fn entries() -> Vec<Entry> {
        let put = Command(vec![InternalRequest {
            caller: None,
            request: Some(Request::Put(PutRequest {
                key: b"key".to_vec(),
                value: vec![0, 1, 255],
                lease: 7,
                ..Default::default()
            })),
        }]);
        vec![
            Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Normal(put),
            },
            Entry {
                log_id: log_id(2, 3, 3),
                payload: EntryPayload::Membership(membership()),
            },
        ]
    }

    #[test]
    fn entries_roundtrip() {
        for e in entries() {
            roundtrip(&e);
        }
    }

    #[test]
    fn vote_log_id_membership_roundtrip() {
        roundtrip(&Vote::new(3, 2));
        roundtrip(&Vote::new_committed(4, 1));
        roundtrip(&log_id(9, 2, 1234567));
        roundtrip(&Some(log_id(1, 1, 0)));
        roundtrip(&None::<LogId>);
        roundtrip(&membership());
        roundtrip(&StoredMembership::new(Some(log_id(1, 1, 5)), membership()));
        roundtrip(&StoredMembership::default());
        roundtrip(&SnapshotMeta {
            last_log_id: Some(log_id(2, 1, 10)),
            last_membership: StoredMembership::new(Some(log_id(1, 1, 5)), membership()),
        });
    }

    #[test]
    fn rpc_payloads_roundtrip() {
        roundtrip_dbg(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 1, 1)),
            entries: entries(),
            leader_commit: Some(log_id(1, 1, 1)),
        });
        type AppendResult = Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>;
        roundtrip(&AppendResult::Ok(AppendEntriesResponse::Success));
        roundtrip(&AppendResult::Ok(AppendEntriesResponse::PartialSuccess(
            Some(log_id(1, 1, 3)),
        )));
        roundtrip(&AppendResult::Ok(AppendEntriesResponse::Conflict));
        roundtrip(&AppendResult::Ok(AppendEntriesResponse::HigherVote(
            Vote::new(5, 2),
        )));
        roundtrip(&AppendResult::Err(RaftError::Fatal(Fatal::Stopped)));
        roundtrip(&AppendResult::Err(RaftError::Fatal(Fatal::Panicked)));
        let io = std::io::Error::other("disk on fire");
        let storage = openraft::StorageError::<TypeConfig>::from_io_error(
            openraft::ErrorSubject::Log(log_id(1, 2, 3)),
            openraft::ErrorVerb::Write,
            io,
        );
        roundtrip_dbg(&AppendResult::Err(RaftError::Fatal(Fatal::StorageError(
            storage,
        ))));
        type StreamAnswer = Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>;
        roundtrip(&StreamAnswer::Ok(Ok(Some(log_id(1, 1, 3)))));
        roundtrip(&StreamAnswer::Ok(Err(StreamAppendError::Conflict(log_id(
            1, 1, 2,
        )))));
        roundtrip(&StreamAnswer::Ok(Err(StreamAppendError::HigherVote(
            Vote::new(5, 2),
        ))));
        roundtrip(&StreamAnswer::Err(Fatal::Stopped));
        roundtrip_dbg(&VoteRequest::<TypeConfig>::new(
            Vote::new(3, 1),
            Some(log_id(2, 1, 9)),
        ));
        type VoteResult = Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>;
        roundtrip(&VoteResult::Ok(VoteResponse::new(
            Vote::new(3, 1),
            None,
            true,
        )));
        roundtrip(&SnapshotResponse::<TypeConfig>::new(Vote::new_committed(
            3, 1,
        )));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = decode::<Entry>("entry", &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(
            matches!(err, CodecError::Decode { what: "entry", .. }),
            "{err}"
        );
    }
}
