//! The client's one error type, and the one table that turns a gRPC status into it.
//!
//! etcd clients decide what to do from an error's meaning (retry on another member, report a
//! compaction, give up on a lease), and etcd carries that meaning in the status message
//! (`etcdserver: ...`) more than in the code. Mapping happens in [`ClientError::from_status`]
//! only, so every service sees the same classification.

use std::time::Duration;

/// Everything a client call can fail with, keeping etcd's meaning.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// The requested revision has been compacted. Watches report the compacted revision the
    /// server sent; unary reads get no revision from etcd, so it is 0 there.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The revision the store is compacted at (0 when the server did not say).
        compact_revision: i64,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The member has no leader (also what a RequireLeader request gets while electing).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The leader changed while the request was in flight; it may or may not have applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The server gave up waiting for the request to commit; it may or may not have applied.
    #[error("etcdserver: request timed out")]
    ServerTimeout,
    /// The lease does not exist (expired, revoked or never granted).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The request was malformed, in etcd's words.
    #[error("{0}")]
    InvalidArgument(String),
    /// No member could be reached, or the one in use went away.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The client-side deadline for the request passed.
    #[error("context deadline exceeded (after {0:?})")]
    Timeout(Duration),
    /// The server canceled a watch for a reason other than compaction.
    #[error("watch canceled by the server: {reason}")]
    WatchCanceled {
        /// The server's cancel reason, possibly empty.
        reason: String,
    },
    /// The TLS options cannot be used (a missing, unreadable or mismatched certificate or
    /// key file).
    #[error("TLS: {0}")]
    Tls(String),
    /// An endpoint string that is not a usable URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// The client (or the watch stream behind a watcher) has shut down.
    #[error("client closed")]
    Closed,
    /// Any other status, kept verbatim.
    #[error("{message} (code {code:?})")]
    Server {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
}

/// etcd's status messages that carry a meaning of their own (see its `rpctypes` package).
const MSG_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const MSG_FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
const MSG_NO_LEADER: &str = "etcdserver: no leader";
const MSG_LEADER_CHANGED: &str = "etcdserver: leader changed";
const MSG_REQUEST_TIMEOUT: &str = "etcdserver: request timed out";
const MSG_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

impl ClientError {
    /// The one status -> error table.
    ///
    /// ```
    /// use minietcd_client::ClientError;
    ///
    /// let status = tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
    /// assert!(matches!(ClientError::from_status(&status), ClientError::Compacted { .. }));
    /// let status = tonic::Status::unavailable("etcdserver: no leader");
    /// assert!(matches!(ClientError::from_status(&status), ClientError::NoLeader));
    /// ```
    pub fn from_status(status: &tonic::Status) -> ClientError {
        let message = status.message();
        match message {
            MSG_COMPACTED => {
                return ClientError::Compacted {
                    compact_revision: 0,
                }
            }
            MSG_FUTURE_REV => return ClientError::FutureRevision,
            MSG_NO_LEADER => return ClientError::NoLeader,
            MSG_LEADER_CHANGED => return ClientError::LeaderChanged,
            MSG_REQUEST_TIMEOUT => return ClientError::ServerTimeout,
            MSG_LEASE_NOT_FOUND => return ClientError::LeaseNotFound,
            _ => {}
        }
        match status.code() {
            tonic::Code::InvalidArgument => ClientError::InvalidArgument(message.to_string()),
            tonic::Code::Unavailable => ClientError::Unavailable(describe_status(status)),
            tonic::Code::DeadlineExceeded => ClientError::Server {
                code: tonic::Code::DeadlineExceeded,
                message: message.to_string(),
            },
            code => ClientError::Server {
                code,
                message: message.to_string(),
            },
        }
    }

    /// Whether another member may answer where this one failed: the error says the member
    /// (or the connection to it) is unusable, not that the request is wrong.
    pub fn is_endpoint_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable(_)
                | ClientError::NoLeader
                | ClientError::Server {
                    code: tonic::Code::Unknown | tonic::Code::Internal,
                    ..
                }
        )
    }
}

/// A status message with its transport cause, so "connection refused" is not lost behind
/// tonic's generic "transport error".
fn describe_status(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut text = status.message().to_string();
    let mut source = status.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a status says the request never reached a server (the connection could not be
/// made), so that even a write can be sent to another member without applying twice.
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let text = describe_status(status).to_ascii_lowercase();
    text.contains("connect") || text.contains("refused") || text.contains("dns error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_etcd_messages_to_meanings() {
        let cases = [
            (
                tonic::Code::OutOfRange,
                MSG_COMPACTED,
                ClientError::Compacted {
                    compact_revision: 0,
                },
            ),
            (
                tonic::Code::OutOfRange,
                MSG_FUTURE_REV,
                ClientError::FutureRevision,
            ),
            (
                tonic::Code::Unavailable,
                MSG_NO_LEADER,
                ClientError::NoLeader,
            ),
            (
                tonic::Code::NotFound,
                MSG_LEASE_NOT_FOUND,
                ClientError::LeaseNotFound,
            ),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: key is not provided",
                ClientError::InvalidArgument("etcdserver: key is not provided".into()),
            ),
        ];
        for (code, msg, want) in cases {
            assert_eq!(
                ClientError::from_status(&tonic::Status::new(code, msg)),
                want,
                "{msg}"
            );
        }
    }

    #[test]
    fn endpoint_failures_are_told_apart_from_request_errors() {
        let unavailable = ClientError::from_status(&tonic::Status::unavailable("gone"));
        assert!(unavailable.is_endpoint_failure());
        assert!(ClientError::NoLeader.is_endpoint_failure());
        assert!(!ClientError::LeaseNotFound.is_endpoint_failure());
        assert!(!ClientError::InvalidArgument("x".into()).is_endpoint_failure());
        assert!(never_sent(&tonic::Status::unavailable("tcp connect error")));
        assert!(!never_sent(&tonic::Status::unavailable(
            "etcdserver: leader changed"
        )));
    }
}
