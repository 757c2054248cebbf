//! KV requests: range (get), put, delete range, txn and compaction, with every option etcd has.

use std::sync::Arc;

use crate::pb::etcdserverpb::{
    kv_client::KvClient as PbKvClient, range_request, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnResponse,
};

use super::endpoints::{request, MAX_RECV_MSG_BYTES};
use super::txn::Txn;
use super::{call_overrides, range_setters, CallOverrides, ClientError, ClientInner};

pub use range_request::{SortOrder, SortTarget};

/// The range end that makes a range cover every key with `key` as prefix (etcd's
/// `GetPrefixRangeEnd`): the key with its last byte below 0xff incremented and the rest cut.
/// A key of only 0xff bytes (or empty) has no such end, so the range runs to the end
/// (`"\0"`).
///
/// ```
/// use minietcd_client::prefix_range_end;
///
/// assert_eq!(prefix_range_end(b"app/"), b"app0");
/// assert_eq!(prefix_range_end(b"a\xff"), b"b");
/// assert_eq!(prefix_range_end(b""), b"\0");
/// ```
pub fn prefix_range_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// How a request's key is widened into a range.
#[derive(Debug, Clone, Default)]
pub(crate) enum RangeSpec {
    /// The key alone.
    #[default]
    Key,
    /// Every key with the key as prefix.
    Prefix,
    /// Every key >= the key.
    FromKey,
    /// `[key, end)`.
    End(Vec<u8>),
}

impl RangeSpec {
    pub(crate) fn range_end(&self, key: &[u8]) -> Vec<u8> {
        match self {
            RangeSpec::Key => Vec::new(),
            RangeSpec::Prefix => prefix_range_end(key),
            RangeSpec::FromKey => vec![0],
            RangeSpec::End(end) => end.clone(),
        }
    }
}

/// Options of a get (etcd Range).
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    range: RangeSpec,
    revision: i64,
    limit: i64,
    sort_order: SortOrder,
    sort_target: SortTarget,
    serializable: bool,
    keys_only: bool,
    count_only: bool,
    min_mod_revision: i64,
    max_mod_revision: i64,
    min_create_revision: i64,
    max_create_revision: i64,
    call: CallOverrides,
}

call_overrides!(GetOptions);
range_setters!(GetOptions);

impl GetOptions {
    /// Default options: the key alone, latest revision, linearizable.
    pub fn new() -> Self {
        Self::default()
    }
    /// Reads at a past revision.
    pub fn revision(mut self, rev: i64) -> Self {
        self.revision = rev;
        self
    }
    /// At most this many keys.
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }
    /// Sort order and target.
    pub fn sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort_target = target;
        self.sort_order = order;
        self
    }
    /// Serves the read from the member's local state, without a leader round trip.
    pub fn serializable(mut self) -> Self {
        self.serializable = true;
        self
    }
    /// Keys without values.
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
    /// Only the count.
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
    /// Keys whose mod revision is in `[min, max]` (0 = unbounded).
    pub fn mod_revision_range(mut self, min: i64, max: i64) -> Self {
        self.min_mod_revision = min;
        self.max_mod_revision = max;
        self
    }
    /// Keys whose create revision is in `[min, max]` (0 = unbounded).
    pub fn create_revision_range(mut self, min: i64, max: i64) -> Self {
        self.min_create_revision = min;
        self.max_create_revision = max;
        self
    }

    /// The protobuf request for `key`.
    pub fn to_request(&self, key: impl Into<Vec<u8>>) -> RangeRequest {
        let key = key.into();
        RangeRequest {
            range_end: self.range.range_end(&key),
            key,
            limit: self.limit,
            revision: self.revision,
            sort_order: self.sort_order as i32,
            sort_target: self.sort_target as i32,
            serializable: self.serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_revision,
            max_mod_revision: self.max_mod_revision,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        }
    }
}

/// Options of a put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    lease: i64,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
    call: CallOverrides,
}

call_overrides!(PutOptions);

impl PutOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Attaches the key to a lease.
    pub fn lease(mut self, id: i64) -> Self {
        self.lease = id;
        self
    }
    /// Returns the previous key-value.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    /// Keeps the current value (updates the lease only).
    pub fn ignore_value(mut self) -> Self {
        self.ignore_value = true;
        self
    }
    /// Keeps the current lease.
    pub fn ignore_lease(mut self) -> Self {
        self.ignore_lease = true;
        self
    }
    /// The protobuf request.
    pub fn to_request(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: value.into(),
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        }
    }
}

/// Options of a delete (etcd DeleteRange).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    range: RangeSpec,
    prev_kv: bool,
    call: CallOverrides,
}

call_overrides!(DeleteOptions);
range_setters!(DeleteOptions);

impl DeleteOptions {
    /// Default options: the key alone.
    pub fn new() -> Self {
        Self::default()
    }
    /// Returns the deleted key-values.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    /// The protobuf request.
    pub fn to_request(&self, key: impl Into<Vec<u8>>) -> DeleteRangeRequest {
        let key = key.into();
        DeleteRangeRequest {
            range_end: self.range.range_end(&key),
            key,
            prev_kv: self.prev_kv,
        }
    }
}

/// Options of a compaction.
#[derive(Debug, Clone, Default)]
pub struct CompactOptions {
    physical: bool,
    call: CallOverrides,
}

call_overrides!(CompactOptions);

impl CompactOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }
    /// Waits until the compaction is physically applied.
    pub fn physical(mut self) -> Self {
        self.physical = true;
        self
    }
}

/// KV requests of a [`super::Client`].
#[derive(Clone)]
pub struct KvClient {
    inner: Arc<ClientInner>,
}

fn pb(channel: tonic::transport::Channel) -> PbKvClient<tonic::transport::Channel> {
    PbKvClient::new(channel).max_decoding_message_size(MAX_RECV_MSG_BYTES)
}

impl KvClient {
    pub(crate) fn new(inner: Arc<ClientInner>) -> Self {
        KvClient { inner }
    }

    /// Reads a key or range.
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        opts: GetOptions,
    ) -> Result<RangeResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let req = opts.to_request(key);
        self.inner
            .endpoints
            .call(&call, true, |ch| {
                let req = request(req.clone(), &call);
                async move { pb(ch).range(req).await }
            })
            .await
    }

    /// Writes a key.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        opts: PutOptions,
    ) -> Result<PutResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let req = opts.to_request(key, value);
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(req.clone(), &call);
                async move { pb(ch).put(req).await }
            })
            .await
    }

    /// Deletes a key or range.
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        opts: DeleteOptions,
    ) -> Result<DeleteRangeResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let req = opts.to_request(key);
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(req.clone(), &call);
                async move { pb(ch).delete_range(req).await }
            })
            .await
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, ClientError> {
        let call = self.inner.call_options(txn.call);
        let idempotent = txn.read_only();
        let req = txn.into_request();
        self.inner
            .endpoints
            .call(&call, idempotent, |ch| {
                let req = request(req.clone(), &call);
                async move { pb(ch).txn(req).await }
            })
            .await
    }

    /// Compacts the key space's history up to `revision`.
    pub async fn compact(
        &self,
        revision: i64,
        opts: CompactOptions,
    ) -> Result<CompactionResponse, ClientError> {
        let call = self.inner.call_options(opts.call);
        let req = CompactionRequest {
            revision,
            physical: opts.physical,
        };
        // Not retried once sent: a second compaction at the same revision answers
        // "compacted", which would hide that the first one succeeded.
        self.inner
            .endpoints
            .call(&call, false, |ch| {
                let req = request(req, &call);
                async move { pb(ch).compact(req).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_range_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }
}
