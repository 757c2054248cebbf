//! openraft glue, no etcd semantics: types, the sled log store, the state machine over the
//! MVCC store, the peer network (outbound) and service (inbound), and the proposer.
pub mod codec;
pub mod log_store;
pub mod network;
pub mod service;
pub mod state_machine;
pub mod types;
