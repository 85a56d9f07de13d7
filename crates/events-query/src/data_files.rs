//! The lake as a query sees it: read-only, and strict about the data files
//! the snapshot names.
//!
//! DataFusion treats a listed file it cannot find as an empty folder, so a
//! data file deleted behind the catalog's back would silently count as no
//! rows. [`DataFiles`] wraps the lake store: a read of one of the query's
//! data files that finds nothing fails with [`MissingDataFile`], which
//! [`crate::datafusion_error`] turns into `DATA_FILE_MISSING`. Writes,
//! copies and deletes are refused.

use std::collections::HashSet;
use std::sync::Arc;

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// A data file of a query's snapshot is absent from the lake.
#[derive(Debug, thiserror::Error)]
#[error("data file {0} is named by the table's snapshot but missing from the lake")]
pub struct MissingDataFile(pub String);

/// The lake store of one query, knowing the keys of its data files.
#[derive(Debug)]
pub struct DataFiles {
    inner: Arc<dyn ObjectStore>,
    keys: HashSet<Path>,
}

impl DataFiles {
    /// Wraps `inner`; `keys` are the data files the query's tables name.
    pub fn new(inner: Arc<dyn ObjectStore>, keys: impl IntoIterator<Item = String>) -> Self {
        DataFiles { inner, keys: keys.into_iter().map(Path::from).collect() }
    }

    fn read_only() -> object_store::Error {
        object_store::Error::NotSupported { source: "queries do not write to the lake".into() }
    }
}

impl std::fmt::Display for DataFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataFiles({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for DataFiles {
    async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(Self::read_only())
    }

    async fn put_multipart_opts(&self, _: &Path, _: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        Err(Self::read_only())
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.inner.get_opts(location, options).await {
            Err(object_store::Error::NotFound { .. }) if self.keys.contains(location) => {
                Err(object_store::Error::Generic {
                    store: "lake",
                    source: Box::new(MissingDataFile(location.to_string())),
                })
            }
            other => other,
        }
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        use futures::StreamExt;
        locations.map(|_| Err(Self::read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> Result<()> {
        Err(Self::read_only())
    }
}

/// The missing data file behind `error`, if any: the first [`MissingDataFile`]
/// in its chain of sources.
pub fn missing_data_file(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(m) = e.downcast_ref::<MissingDataFile>() {
            return Some(m.0.clone());
        }
        cur = e.source();
    }
    None
}
