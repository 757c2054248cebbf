//! The openraft type configuration: what a log entry carries and what applying it returns.
//!
//! A log entry's payload is a group of etcd writes ([`Command`], a list of `InternalRequest`s
//! the leader gathered while the previous entries were being flushed); it is serialized as
//! the protobuf encoding of `InternalRequestBatch` so that every serde format stores it
//! compactly.

use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pb::minietcdpb::{
    InternalRequest, InternalRequestBatch, InternalResponse, InternalResponseBatch,
};

/// A member id, stable for the life of a cluster (etcd's `types.ID`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// minietcd's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = MemberNode,
);

/// What a snapshot carries between the state machine and the network: a file holding the
/// encoded state, read in chunks (see [`crate::raft::snapshot`]).
pub type SnapshotData = crate::raft::snapshot::SnapshotData;
/// A log position: the leader that proposed it (term, member) and its index.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A member's vote (term, candidate, committed).
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// One Raft log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A membership config with the log id that introduced it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A membership config (voters and nodes).
pub type Membership = openraft::Membership<NodeId, MemberNode>;
/// What a snapshot covers: last log id and membership.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// Where openraft publishes this member's Raft metrics.
pub type MetricsReceiver =
    openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>;
/// Where openraft publishes the part of the metrics that changes only with this member's
/// role: vote, state, leader, membership. Unlike [`MetricsReceiver`], which is sent at every
/// log append, flush, commit and apply, it wakes its waiters only when one of those changes,
/// so long-lived waiters use it and cost nothing per write.
pub type ServerMetricsReceiver = openraft::type_config::alias::WatchReceiverOf<
    TypeConfig,
    openraft::metrics::RaftServerMetrics<TypeConfig>,
>;

/// The term of a server metrics' vote (what [`openraft::RaftMetrics::current_term`] says).
pub fn term_of(m: &openraft::metrics::RaftServerMetrics<TypeConfig>) -> u64 {
    m.vote.leader_id().term
}
/// A snapshot with its data.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// What the cluster knows of a member besides its id: kept in Raft membership so that every
/// member can answer MemberList and reach its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// etcd's `--name`; empty until a member added by MemberAdd has started.
    pub name: String,
    /// Where peers reach this member (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
    /// Where clients reach this member (`--advertise-client-urls`).
    pub client_urls: Vec<String>,
}

/// The etcd writes of one Raft log entry, applied in order, each its own revision. Grouping
/// them lets one log flush (and one replication round) commit many writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command(pub Vec<InternalRequest>);

impl Command {
    /// The size of the entry's encoded writes (what it costs on the wire and on disk).
    pub fn encoded_len(&self) -> usize {
        self.0
            .iter()
            .map(|m| prost::encoding::message::encoded_len(1, m))
            .sum()
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} writes", self.0.len())
    }
}

/// The answers of the state machine to one [`Command`], one per request, in order (empty for
/// blank and membership entries).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandResponse(pub Vec<InternalResponse>);

/// Encodes `items` exactly as a message whose field 1 is `repeated M` (the
/// `Internal*Batch` messages), without first cloning them into such a message.
fn ser_repeated<M: Message, S: Serializer>(items: &[M], s: S) -> Result<S::Ok, S::Error> {
    let len: usize = items
        .iter()
        .map(|m| prost::encoding::message::encoded_len(1, m))
        .sum();
    let mut buf = Vec::with_capacity(len);
    for m in items {
        prost::encoding::message::encode(1, m, &mut buf);
    }
    s.serialize_bytes(&buf)
}

fn de_proto<'de, M: Message + Default, D: Deserializer<'de>>(d: D) -> Result<M, D::Error> {
    let bytes: serde_bytes_buf::Buf = Deserialize::deserialize(d)?;
    M::decode(bytes.0.as_slice()).map_err(serde::de::Error::custom)
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_repeated(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_proto(d).map(|b: InternalRequestBatch| Command(b.requests))
    }
}

impl Serialize for CommandResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_repeated(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for CommandResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_proto(d).map(|b: InternalResponseBatch| CommandResponse(b.responses))
    }
}

/// A byte buffer that deserializes from either serde bytes or a sequence of u8 (what
/// self-describing formats such as JSON produce for bytes).
mod serde_bytes_buf {
    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
    use std::fmt;

    pub struct Buf(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Buf, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Buf(out))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

/// Told by the state machine about every applied write, after its sled batch is written and
/// before the proposer is answered (etcd's watchableStore.notify). The watch layer implements
/// it; the state machine never calls watch code directly.
pub trait ApplyObserver: Send + Sync + 'static {
    /// `events` are the events of revision `revision` (one write), in sub-revision order,
    /// prev_kv filled.
    fn notify(&self, revision: i64, events: &[crate::pb::mvccpb::Event]);
    /// The whole state was replaced (snapshot install): every watcher must catch up again.
    fn restored(&self, revision: i64);
}

/// An observer that ignores everything (a node without watchers, tests).
pub struct NoopObserver;

impl ApplyObserver for NoopObserver {
    fn notify(&self, _revision: i64, _events: &[crate::pb::mvccpb::Event]) {}
    fn restored(&self, _revision: i64) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::PutRequest;
    use crate::pb::minietcdpb::internal_request::Request;

    #[test]
    fn command_roundtrips_through_postcard_and_json() {
        let put = |key: &[u8]| InternalRequest {
            caller: None,
            request: Some(Request::Put(PutRequest {
                key: key.to_vec(),
                value: vec![0, 255, 7],
                ..Default::default()
            })),
        };
        let cmd = Command(vec![put(b"k"), InternalRequest::default(), put(b"k2")]);
        let bin = postcard::to_allocvec(&cmd).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&bin).unwrap(), cmd);
        let json = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), cmd);
    }
}
