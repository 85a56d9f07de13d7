//! Object storage (a local folder, S3, R2, GCS), as objects see it.

use std::future::Future;

use crate::{ObjectResult, Timestamp};

/// What a listing says of one stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// The full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: Timestamp,
}

/// A bucket of immutable blobs addressed by `/`-separated keys.
pub trait BlobStore {
    /// Writes `bytes` under `key`, replacing any previous blob atomically.
    fn put(&self, key: &str, bytes: Vec<u8>) -> impl Future<Output = ObjectResult<()>>;
    /// Writes `bytes` under `key` only if no blob is there; returns whether it wrote.
    fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> impl Future<Output = ObjectResult<bool>>;
    /// The blob under `key`, if any.
    fn get(&self, key: &str) -> impl Future<Output = ObjectResult<Option<Vec<u8>>>>;
    /// Removes `key` (no error if absent).
    fn delete(&self, key: &str) -> impl Future<Output = ObjectResult<()>>;
    /// Every blob whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> impl Future<Output = ObjectResult<Vec<BlobMeta>>>;
}
