//! Request validation done before anything is proposed, as etcd's v3rpc/key.go does it:
//! empty keys, put flags, the txn size limit and the duplicate-key check.

use std::collections::HashSet;

use crate::pb::etcdserverpb::range_request::SortTarget;
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::ApiError;

/// A sort target outside its enum is refused as etcd 3.5 does (etcd 3.4 dereferences a nil
/// sorter and crashes); a sort order outside its enum means no sorting, as in etcd 3.4.
pub fn check_range(r: &RangeRequest) -> Result<(), ApiError> {
    if r.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    if SortTarget::try_from(r.sort_target).is_err() {
        return Err(ApiError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), ApiError> {
    if r.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(ApiError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(ApiError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), ApiError> {
    if r.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    Ok(())
}

/// etcd's checkTxnRequest followed by checkIntervals on both branches.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), ApiError> {
    check_txn_ops(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_txn_ops: usize) -> Result<(), ApiError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(ApiError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(ApiError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Request::RequestRange(q)) => check_range(q)?,
            Some(Request::RequestPut(q)) => check_put(q)?,
            Some(Request::RequestDeleteRange(q)) => check_delete(q)?,
            Some(Request::RequestTxn(q)) => check_txn_ops(q, max_txn_ops)?,
            // etcd's checkRequestOp: an op without a request is "key not found".
            None => return Err(ApiError::KeyNotFound),
        }
    }
    Ok(())
}

/// A deleted key range: `[start, end)` compared as plain byte strings, as etcd's checkIntervals
/// does (so a from-key range, end `"\0"`, holds nothing); a single key is `[key, key+"\0")`.
#[derive(Debug, Clone)]
struct Span {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Span {
    fn of(key: &[u8], range_end: &[u8]) -> Span {
        let end = match range_end {
            [] => {
                let mut k = key.to_vec();
                k.push(0);
                Some(k)
            }
            // etcd compares range ends as plain strings here: a from-key ("\0") or reversed
            // range is an empty interval that conflicts with nothing.
            e => Some(e.to_vec()),
        };
        Span {
            start: key.to_vec(),
            end,
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }
}

/// etcd's checkIntervals: within one branch, no key is put twice and no put key lies in a
/// deleted range, looking through nested txns (whose two branches exclude each other, so a
/// key put in both the success and the failure branch of a nested txn is fine).
fn check_intervals(reqs: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Span>), ApiError> {
    let mut dels: Vec<Span> = reqs
        .iter()
        .filter_map(|r| match &r.request {
            Some(Request::RequestDeleteRange(d)) => Some(Span::of(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    let deleted = |dels: &[Span], k: &[u8]| dels.iter().any(|s| s.contains(k));
    for r in reqs {
        let Some(Request::RequestTxn(t)) = &r.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(ApiError::DuplicateKey);
            }
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(ApiError::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for r in reqs {
        let Some(Request::RequestPut(p)) = &r.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(ApiError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_puts_and_put_in_deleted_range() {
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")], vec![]), 128),
            Err(ApiError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), put("b")], vec![]), 128),
            Err(ApiError::DuplicateKey)
        );
        // etcd compares range ends as strings: a from-key or reversed delete conflicts with
        // nothing (differential::regression_from_key_delete_and_put_in_one_txn).
        assert!(check_txn(&txn(vec![del("a", "\0"), put("z")], vec![]), 128).is_ok());
        assert!(check_txn(&txn(vec![del("c", "a"), put("b")], vec![]), 128).is_ok());
        // Different branches never conflict.
        assert!(check_txn(&txn(vec![put("a")], vec![put("a")]), 128).is_ok());
        assert!(check_txn(&txn(vec![del("a", "c"), put("c")], vec![]), 128).is_ok());
    }

    #[test]
    fn nested_txn_branches() {
        let inner = RequestOp {
            request: Some(Request::RequestTxn(txn(vec![put("k")], vec![put("k")]))),
        };
        assert!(check_txn(&txn(vec![inner.clone()], vec![]), 128).is_ok());
        assert_eq!(
            check_txn(&txn(vec![inner, put("k")], vec![]), 128),
            Err(ApiError::DuplicateKey)
        );
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let ops: Vec<RequestOp> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check_txn(&txn(ops, vec![]), 128), Err(ApiError::TooManyOps));
        assert_eq!(
            check_txn(&txn(vec![put("")], vec![]), 128),
            Err(ApiError::EmptyKey)
        );
    }
}
