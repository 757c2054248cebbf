//! etcd's v3 API as generated Rust: the messages, and the tonic clients and servers of the KV,
//! Watch, Lease, Cluster, Maintenance and Auth services and of the Lock and Election
//! services. The minietcd server implements the servers; `minietcd-client` and the tools call
//! the clients. The `.proto` files are the workspace's top-level `proto/` (kv.proto,
//! auth.proto, rpc.proto, v3lock.proto, v3election.proto).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// mvccpb: KeyValue and Event.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// authpb: users, roles, permissions.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcdserverpb: the KV, Watch, Lease, Cluster, Maintenance and Auth services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// v3lockpb: the Lock service (distributed locks on leases and revisions).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// v3electionpb: the Election service (leader election on leases and revisions).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// The encoded `FileDescriptorSet` of every message and service above, for code that maps
/// messages by their descriptors (the server's JSON gateway).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptor.bin"));
