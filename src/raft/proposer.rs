//! PLACEHOLDER until the raft branch lands: the agreed Proposer API.
use crate::pb::minietcdpb::{InternalRequest, InternalResponse};

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader")]
    NoLeader,
    #[error("timeout")]
    Timeout,
    #[error("leader changed")]
    LeaderChanged,
    #[error("fatal: {0}")]
    Fatal(String),
}

#[derive(Clone)]
pub struct Proposer {}

impl Proposer {
    pub async fn write(&self, _req: InternalRequest) -> Result<InternalResponse, ProposeError> {
        Err(ProposeError::Fatal("placeholder".into()))
    }
    pub async fn read_index(&self) -> Result<(), ProposeError> {
        Err(ProposeError::Fatal("placeholder".into()))
    }
}
