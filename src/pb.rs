//! Generated protobuf and gRPC code: etcd's v3 API (from the `minietcd-proto` crate, shared
//! with the client) and minietcd's internal messages (compiled by this crate's build.rs).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub use minietcd_proto::{authpb, etcdserverpb, mvccpb, v3electionpb, v3lockpb};

/// minietcdpb: Raft commands and the peer service.
pub mod minietcdpb {
    tonic::include_proto!("minietcdpb");
}
