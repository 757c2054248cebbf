//! The one place where errors become `tonic::Status`: etcd's exact message strings and gRPC
//! codes (clients match on both), from etcd's api/v3rpc/rpctypes/error.go.

use tonic::{Code, Status};

use crate::pb::minietcdpb::ApplyError;
use crate::raft::proposer::ProposeError;
use crate::storage::{AuthCheckError, StorageError};

/// An error of the etcd API, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// An error etcd passes to the client unconverted (code Unknown): the maintenance
    /// service's root check answers the auth store's own errors ("auth: permission denied").
    #[error("{0}")]
    Unknown(String),
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl ApiError {
    /// The gRPC code etcd answers this error with.
    pub fn code(&self) -> Code {
        use ApiError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | RequestTooLarge | InvalidSortOption | PermissionNotGiven => Code::InvalidArgument,
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists | NotLeader | BadLeaderTransferee => Code::FailedPrecondition,
            NoSpace => Code::ResourceExhausted,
            Corrupt => Code::DataLoss,
            NoLeader | Timeout | LeaderChanged | Stopped | LeaderTransferTimeout => {
                Code::Unavailable
            }
            RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
            | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
            UserEmpty | RoleEmpty | AuthFailed | InvalidAuthMgmt | AuthOldRevision => {
                Code::InvalidArgument
            }
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            Unknown(_) => Code::Unknown,
            Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::Compacted => ApiError::Compacted,
            StorageError::FutureRevision => ApiError::FutureRevision,
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::Internal(other.to_string())
            }
        }
    }
}

impl From<AuthCheckError> for ApiError {
    fn from(e: AuthCheckError) -> ApiError {
        match e {
            AuthCheckError::InvalidToken => ApiError::InvalidAuthToken,
            AuthCheckError::Denied(code) => ApiError::from_apply(code as i32)
                .unwrap_or_else(|| ApiError::Internal("auth check without an error".into())),
            AuthCheckError::Storage(e) => e.into(),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> ApiError {
        match e {
            ProposeError::NoLeader => ApiError::NoLeader,
            ProposeError::Timeout => ApiError::Timeout,
            ProposeError::LeaderChanged => ApiError::LeaderChanged,
            other => {
                tracing::error!(error = %other, "raft failure");
                ApiError::Stopped
            }
        }
    }
}

impl ApiError {
    /// The API error for an apply-time error code, `None` when the apply succeeded.
    pub fn from_apply(code: i32) -> Option<ApiError> {
        match ApplyError::try_from(code) {
            Ok(ApplyError::ApplyOk) => None,
            Ok(ApplyError::LeaseNotFound) => Some(ApiError::LeaseNotFound),
            Ok(ApplyError::Compacted) => Some(ApiError::Compacted),
            Ok(ApplyError::FutureRevision) => Some(ApiError::FutureRevision),
            Ok(ApplyError::LeaseExists) => Some(ApiError::LeaseExists),
            Ok(ApplyError::KeyNotFound) => Some(ApiError::KeyNotFound),
            Ok(ApplyError::LeaseTtlTooLarge) => Some(ApiError::LeaseTtlTooLarge),
            Ok(ApplyError::NoSpace) => Some(ApiError::NoSpace),
            Ok(ApplyError::Corrupt) => Some(ApiError::Corrupt),
            Ok(ApplyError::AuthNotEnabled) => Some(ApiError::AuthNotEnabled),
            Ok(ApplyError::RootUserNotExist) => Some(ApiError::RootUserNotExist),
            Ok(ApplyError::RootRoleNotExist) => Some(ApiError::RootRoleNotExist),
            Ok(ApplyError::UserAlreadyExist) => Some(ApiError::UserAlreadyExist),
            Ok(ApplyError::UserEmpty) => Some(ApiError::UserEmpty),
            Ok(ApplyError::UserNotFound) => Some(ApiError::UserNotFound),
            Ok(ApplyError::RoleAlreadyExist) => Some(ApiError::RoleAlreadyExist),
            Ok(ApplyError::RoleNotFound) => Some(ApiError::RoleNotFound),
            Ok(ApplyError::RoleEmpty) => Some(ApiError::RoleEmpty),
            Ok(ApplyError::AuthFailed) => Some(ApiError::AuthFailed),
            Ok(ApplyError::PermissionDenied) => Some(ApiError::PermissionDenied),
            Ok(ApplyError::RoleNotGranted) => Some(ApiError::RoleNotGranted),
            Ok(ApplyError::PermissionNotGranted) => Some(ApiError::PermissionNotGranted),
            Ok(ApplyError::InvalidAuthMgmt) => Some(ApiError::InvalidAuthMgmt),
            Ok(ApplyError::AuthOldRevision) => Some(ApiError::AuthOldRevision),
            Err(_) => Some(ApiError::Internal(format!("unknown apply error {code}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_codes_are_etcds() {
        let s = Status::from(ApiError::Compacted);
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s = Status::from(ApiError::NoLeader);
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "etcdserver: no leader");
        assert_eq!(ApiError::from_apply(0), None);
        assert_eq!(ApiError::from_apply(1), Some(ApiError::LeaseNotFound));
    }

    /// etcd 3.4's rpctypes for the Auth service's errors.
    #[test]
    fn auth_strings_and_codes_are_etcds() {
        for (e, code, msg) in [
            (
                ApplyError::RootUserNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not exist",
            ),
            (
                ApplyError::UserEmpty,
                Code::InvalidArgument,
                "etcdserver: user name is empty",
            ),
            (
                ApplyError::AuthFailed,
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            (
                ApplyError::PermissionDenied,
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                ApplyError::AuthOldRevision,
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
        ] {
            let s = Status::from(ApiError::from_apply(e as i32).unwrap());
            assert_eq!((s.code(), s.message()), (code, msg));
        }
        let s = Status::from(ApiError::InvalidAuthToken);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unauthenticated, "etcdserver: invalid auth token")
        );
    }
}
