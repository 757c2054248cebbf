//! Generated protobuf and gRPC code: etcd's v3 API and minietcd's internal messages.
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

/// minietcdpb: Raft commands and the peer service.
pub mod minietcdpb {
    tonic::include_proto!("minietcdpb");
}
