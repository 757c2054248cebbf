//! Transactions: guards ([`Compare`]) and the ops of each branch ([`TxnOp`]).

use crate::pb::etcdserverpb::{compare, request_op, RequestOp, TxnRequest};

use super::kv::{prefix_range_end, DeleteOptions, GetOptions, PutOptions};
use super::{call_overrides, CallOverrides};

/// A comparison operator of a txn compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

impl CompareOp {
    fn to_pb(self) -> compare::CompareResult {
        match self {
            CompareOp::Equal => compare::CompareResult::Equal,
            CompareOp::NotEqual => compare::CompareResult::NotEqual,
            CompareOp::Greater => compare::CompareResult::Greater,
            CompareOp::Less => compare::CompareResult::Less,
        }
    }
}

/// One guard of a txn.
#[derive(Debug, Clone)]
pub struct Compare(crate::pb::etcdserverpb::Compare);

impl Compare {
    fn new(
        key: impl Into<Vec<u8>>,
        op: CompareOp,
        target: compare::CompareTarget,
        union: compare::TargetUnion,
    ) -> Self {
        Compare(crate::pb::etcdserverpb::Compare {
            result: op.to_pb() as i32,
            target: target as i32,
            key: key.into(),
            range_end: Vec::new(),
            target_union: Some(union),
        })
    }
    /// Compares the key's value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(value.into()),
        )
    }
    /// Compares the key's version.
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(version),
        )
    }
    /// Compares the key's create revision.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, rev: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(rev),
        )
    }
    /// Compares the key's mod revision.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, rev: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(rev),
        )
    }
    /// Compares the key's lease.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Lease,
            compare::TargetUnion::Lease(lease),
        )
    }
    /// Applies the comparison to every key in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.0.range_end = end.into();
        self
    }
    /// Applies the comparison to every key with the key as prefix.
    pub fn with_prefix(mut self) -> Self {
        self.0.range_end = prefix_range_end(&self.0.key);
        self
    }
    /// The protobuf compare.
    pub fn into_pb(self) -> crate::pb::etcdserverpb::Compare {
        self.0
    }
}

/// One operation of a txn branch.
#[derive(Debug, Clone)]
pub struct TxnOp(RequestOp);

impl TxnOp {
    /// A get.
    pub fn get(key: impl Into<Vec<u8>>, opts: GetOptions) -> Self {
        TxnOp(RequestOp {
            request: Some(request_op::Request::RequestRange(opts.to_request(key))),
        })
    }
    /// A put.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, opts: PutOptions) -> Self {
        TxnOp(RequestOp {
            request: Some(request_op::Request::RequestPut(opts.to_request(key, value))),
        })
    }
    /// A delete.
    pub fn delete(key: impl Into<Vec<u8>>, opts: DeleteOptions) -> Self {
        TxnOp(RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                opts.to_request(key),
            )),
        })
    }
    /// A nested txn.
    pub fn txn(txn: Txn) -> Self {
        TxnOp(RequestOp {
            request: Some(request_op::Request::RequestTxn(txn.into_request())),
        })
    }
    /// The protobuf op.
    pub fn into_pb(self) -> RequestOp {
        self.0
    }
}

/// A transaction: if every compare holds, the success ops run, otherwise the failure ops.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    compare: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
    pub(crate) call: CallOverrides,
}

call_overrides!(Txn);

impl Txn {
    /// An empty txn (always succeeds, does nothing).
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds guards.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compare.extend(compares);
        self
    }
    /// Adds ops run when every guard holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }
    /// Adds ops run otherwise.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
    /// Whether the txn only reads (so it may be retried on another member).
    pub(crate) fn read_only(&self) -> bool {
        fn op_read_only(op: &RequestOp) -> bool {
            match &op.request {
                Some(request_op::Request::RequestRange(_)) | None => true,
                Some(request_op::Request::RequestTxn(t)) => {
                    t.success.iter().chain(t.failure.iter()).all(op_read_only)
                }
                Some(_) => false,
            }
        }
        self.success
            .iter()
            .chain(self.failure.iter())
            .all(|op| op_read_only(&op.0))
    }
    /// The protobuf request.
    ///
    /// ```
    /// use minietcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
    ///
    /// // Create "lock" only if it does not exist yet (version 0), else read it.
    /// let txn = Txn::new()
    ///     .when([Compare::version("lock", CompareOp::Equal, 0)])
    ///     .and_then([TxnOp::put("lock", "me", PutOptions::new())])
    ///     .or_else([TxnOp::get("lock", GetOptions::new())]);
    /// let request = txn.into_request();
    /// assert_eq!(request.compare.len(), 1);
    /// assert_eq!(request.compare[0].key, b"lock");
    /// assert_eq!((request.success.len(), request.failure.len()), (1, 1));
    /// ```
    pub fn into_request(self) -> TxnRequest {
        TxnRequest {
            compare: self.compare.into_iter().map(Compare::into_pb).collect(),
            success: self.success.into_iter().map(TxnOp::into_pb).collect(),
            failure: self.failure.into_iter().map(TxnOp::into_pb).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_read_only_detection() {
        let read = Txn::new().and_then([TxnOp::get("a", GetOptions::new())]);
        assert!(read.read_only());
        let write = Txn::new()
            .and_then([TxnOp::get("a", GetOptions::new())])
            .or_else([TxnOp::txn(Txn::new().and_then([TxnOp::put(
                "a",
                "b",
                PutOptions::new(),
            )]))]);
        assert!(!write.read_only());
    }
}
