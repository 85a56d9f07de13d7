//! [`ObjectStoreBlobs`]: the lakehouse bucket through the `object_store` crate.

use std::sync::Arc;

use events_core::{ApiError, ErrorCode, Timestamp};
use events_runtime::{BlobMeta, BlobStore, ObjectResult};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::config::HostConfig;

/// A bucket: a local folder by default, or S3 / R2 / GCS by URL.
#[derive(Clone)]
pub struct ObjectStoreBlobs {
    store: Arc<dyn ObjectStore>,
    url: String,
}

fn blob_error(e: object_store::Error) -> ApiError {
    ApiError::new(ErrorCode::StorageError, format!("object store: {e}"))
}

impl ObjectStoreBlobs {
    /// The bucket named by the host configuration: `lake_url` (with
    /// `lake_options`), or the folder `<data>/lake`.
    pub fn from_config(config: &HostConfig) -> ObjectResult<Self> {
        match &config.lake_url {
            None => {
                let dir = config.data_dir.join("lake");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| ApiError::new(ErrorCode::StorageError, format!("create {}: {e}", dir.display())))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(blob_error)?;
                Ok(ObjectStoreBlobs { store: Arc::new(store), url: format!("file://{}", dir.display()) })
            }
            Some(url) => Self::from_url(url, &config.lake_options),
        }
    }

    /// A bucket from a URL such as `s3://bucket/prefix`, `gs://bucket` or
    /// `file:///abs/path`, with options such as `aws_endpoint`,
    /// `aws_access_key_id`, `aws_allow_http` (also read from `AWS_*` variables).
    pub fn from_url(url: &str, options: &[(String, String)]) -> ObjectResult<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, format!("lake URL {url:?}: {e}")))?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                for (k, v) in options {
                    let key = k
                        .parse()
                        .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, format!("lake option {k}: {e}")))?;
                    builder = builder.with_config(key, v);
                }
                let bucket: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(blob_error)?);
                // The URL's path (`s3://bucket/prefix`) is the lake's folder in the bucket.
                match parsed.path().trim_matches('/') {
                    "" => bucket,
                    prefix => Arc::new(object_store::prefix::PrefixStore::new(bucket, prefix)),
                }
            }
            "file" => {
                let path =
                    parsed.to_file_path().map_err(|_| ApiError::new(ErrorCode::InvalidConfig, "bad file URL"))?;
                std::fs::create_dir_all(&path).map_err(|e| ApiError::new(ErrorCode::StorageError, format!("{e}")))?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(path).map_err(blob_error)?)
            }
            other => {
                return Err(ApiError::new(ErrorCode::InvalidConfig, format!("unsupported lake URL scheme {other:?}")));
            }
        };
        Ok(ObjectStoreBlobs { store, url: url.to_string() })
    }

    /// The underlying store (for readers such as a query engine).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL this bucket was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl BlobStore for ObjectStoreBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<()> {
        self.store.put(&StorePath::from(key), PutPayload::from(bytes)).await.map(drop).map_err(blob_error)
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<bool> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&StorePath::from(key), PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(blob_error(e)),
        }
    }

    async fn get(&self, key: &str) -> ObjectResult<Option<Vec<u8>>> {
        match self.store.get(&StorePath::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(blob_error)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(blob_error(e)),
        }
    }

    async fn delete(&self, key: &str) -> ObjectResult<()> {
        match self.store.delete(&StorePath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(blob_error(e)),
        }
    }

    async fn list(&self, prefix: &str) -> ObjectResult<Vec<BlobMeta>> {
        // object_store lists by folder; narrow to the exact string prefix.
        let folder = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let folder = (!folder.is_empty()).then(|| StorePath::from(folder));
        let mut out: Vec<BlobMeta> = self
            .store
            .list(folder.as_ref())
            .try_filter(|m| futures::future::ready(m.location.as_ref().starts_with(prefix)))
            .map_ok(|m| BlobMeta {
                key: m.location.to_string(),
                size: m.size,
                last_modified: Timestamp(m.last_modified.timestamp_millis()),
            })
            .try_collect()
            .await
            .map_err(blob_error)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
