//! Permission to watch (etcd's `serverWatchStream.isWatchPermitted`): a watch on keys the
//! caller may not read is answered "created" and "canceled" at once, with the reason as its
//! cancel reason ("rpc error: code = PermissionDenied desc = etcdserver: permission
//! denied"), and no watcher is made. The token is read from the stream's metadata and
//! looked up at each create, as etcd does, so an expired token refuses new watches only.

use std::sync::Arc;

use tonic::metadata::MetadataMap;

use super::auth_check::TOKEN_METADATA;
use super::ApiError;
use crate::pb::etcdserverpb::WatchCreateRequest;
use crate::storage::{AuthInfo, MvccStore, Need};

/// What a watch stream needs to check its creates.
#[derive(Clone)]
pub struct WatchAuth {
    /// The auth store.
    store: Arc<MvccStore>,
    /// The stream's token, if it came with one.
    token: Option<String>,
}

impl WatchAuth {
    /// The checker of a stream opened with `md`.
    pub fn new(store: Arc<MvccStore>, md: &MetadataMap) -> Self {
        let token = md
            .get(TOKEN_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        WatchAuth { store, token }
    }

    /// The cancel reason of a refused create, `None` when it may go on: etcd writes the
    /// gRPC error as Go prints it, `rpc error: code = <code> desc = <message>`.
    pub fn refusal(&self, c: &WatchCreateRequest) -> Option<String> {
        self.check(c).err().map(|e| {
            let (code, e) = match e {
                ApiError::InvalidAuthToken => ("Unauthenticated", e),
                ApiError::AuthOldRevision | ApiError::UserEmpty => ("InvalidArgument", e),
                _ => ("PermissionDenied", ApiError::PermissionDenied),
            };
            format!("rpc error: code = {code} desc = {e}")
        })
    }

    fn check(&self, c: &WatchCreateRequest) -> Result<(), ApiError> {
        let ai = match &self.token {
            Some(t) => self.store.auth_info(t)?,
            None => AuthInfo::default(),
        };
        if !self.store.auth_enabled() {
            return Ok(());
        }
        // etcd's key normalisation: no key is "\0"; a range end of "\0" becomes empty, which
        // the permission check then takes for a single key.
        let key: &[u8] = if c.key.is_empty() { &[0] } else { &c.key };
        let end: &[u8] = if c.range_end == [0] {
            &[]
        } else {
            &c.range_end
        };
        Ok(self.store.auth_permitted(&ai, key, end, Need::Read)?)
    }
}
