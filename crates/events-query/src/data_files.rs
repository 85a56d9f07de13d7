//! The lake as a query sees it: read-only, and strict about the data files
//! the snapshot names.
//!
//! DataFusion treats a listed file it cannot find as an empty folder, so a
//! data file deleted behind the catalog's back would silently count as no
//! rows. [`DataFiles`] wraps the lake store: a read of one of the query's
//! data files that finds nothing fails with [`MissingDataFile`], which
//! [`crate::datafusion_error`] turns into `DATA_FILE_MISSING`. Writes,
//! copies and deletes are refused.
//!
//! Planning checks each data file with a `head` (it must exist, and its size
//! and modification time validate the cached footer and statistics). For a
//! table of many files, [`DataFiles`] answers those from one listing of the
//! table's folder instead of one request per file: a file the listing lacks
//! is missing, exactly as a failed `head` would say.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// A data file of a query's snapshot is absent from the lake.
#[derive(Debug, thiserror::Error)]
#[error("data file {0} is named by the table's snapshot but missing from the lake")]
pub struct MissingDataFile(pub String);

/// Tables with at least this many data files are checked by one listing of
/// their folder rather than a `head` per file.
pub const LIST_FROM_FILES: usize = 16;
/// Listings deeper than the lake's top folders only: a table folder is at
/// least `<kind>/ns=<ns>`, so a listing never walks other tables' files.
const MIN_LISTING_DEPTH: usize = 2;

/// The lake store of one query, knowing the keys of its data files.
#[derive(Debug)]
pub struct DataFiles {
    inner: Arc<dyn ObjectStore>,
    keys: HashSet<Path>,
    /// Folders listed instead of a `head` per file, and which folder each
    /// of their files is in.
    listings: Vec<Listing>,
    listing_of: HashMap<Path, usize>,
}

/// One table folder, listed at most once per query.
#[derive(Debug)]
struct Listing {
    prefix: Path,
    found: tokio::sync::OnceCell<std::result::Result<HashMap<Path, ObjectMeta>, String>>,
}

impl DataFiles {
    /// Wraps `inner`; `tables` are the data files of each table of the query.
    pub fn new<'a>(inner: Arc<dyn ObjectStore>, tables: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut keys = HashSet::new();
        let mut listings = Vec::new();
        let mut listing_of = HashMap::new();
        for files in tables {
            let paths: Vec<Path> = files.iter().map(|k| Path::from(k.as_str())).collect();
            let prefix = common_folder(&paths);
            if paths.len() >= LIST_FROM_FILES && prefix.parts().count() >= MIN_LISTING_DEPTH {
                listing_of.extend(paths.iter().map(|p| (p.clone(), listings.len())));
                listings.push(Listing { prefix, found: tokio::sync::OnceCell::new() });
            }
            keys.extend(paths);
        }
        DataFiles { inner, keys, listings, listing_of }
    }

    /// The metadata of `location`, a file of a listed folder, from the
    /// folder's listing (made on first use): `None` if it is absent.
    async fn listed(&self, listing: &Listing, location: &Path) -> Result<Option<ObjectMeta>> {
        let found = listing
            .found
            .get_or_init(|| async {
                let mut found = HashMap::new();
                let mut stream = self.inner.list(Some(&listing.prefix));
                while let Some(meta) = stream.next().await {
                    let meta = meta.map_err(|e| e.to_string())?;
                    if self.listing_of.contains_key(&meta.location) {
                        found.insert(meta.location.clone(), meta);
                    }
                }
                Ok(found)
            })
            .await;
        match found {
            Ok(found) => Ok(found.get(location).cloned()),
            Err(e) => Err(object_store::Error::Generic { store: "lake", source: e.clone().into() }),
        }
    }

    fn missing(location: &Path) -> object_store::Error {
        object_store::Error::Generic { store: "lake", source: Box::new(MissingDataFile(location.to_string())) }
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
        if options.head
            && let Some(&i) = self.listing_of.get(location)
        {
            let meta = self.listed(&self.listings[i], location).await?.ok_or_else(|| Self::missing(location))?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Default::default(),
            });
        }
        match self.inner.get_opts(location, options).await {
            Err(object_store::Error::NotFound { .. }) if self.keys.contains(location) => Err(Self::missing(location)),
            other => other,
        }
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
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

/// The deepest folder holding every one of `paths`.
fn common_folder(paths: &[Path]) -> Path {
    let Some(first) = paths.first() else { return Path::default() };
    let mut common: Vec<_> = first.parts().collect();
    common.pop(); // the file name
    for path in &paths[1..] {
        let same = common.iter().zip(path.parts()).take_while(|(a, b)| **a == *b).count();
        common.truncate(same.min(path.parts().count().saturating_sub(1)));
    }
    Path::from_iter(common)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    /// The in-memory store, counting `head`s and listings.
    #[derive(Debug, Default)]
    struct Counting {
        inner: InMemory,
        heads: AtomicUsize,
        lists: AtomicUsize,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Counting")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(&self, p: &Path, payload: PutPayload, o: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(p, payload, o).await
        }
        async fn put_multipart_opts(&self, p: &Path, o: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(p, o).await
        }
        async fn get_opts(&self, p: &Path, o: GetOptions) -> Result<GetResult> {
            if o.head {
                self.heads.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.get_opts(p, o).await
        }
        fn delete_stream(&self, l: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.lists.fetch_add(1, Ordering::Relaxed);
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(from, to, o).await
        }
    }

    async fn lake(files: &[String]) -> Arc<Counting> {
        let store = Arc::new(Counting::default());
        for (i, key) in files.iter().enumerate() {
            store.put(&Path::from(key.as_str()), PutPayload::from(vec![0u8; i + 1])).await.unwrap();
        }
        // Another table's file under the same namespace, and another namespace's.
        store.put(&Path::from("cdc/ns=acme/users/x.parquet"), PutPayload::from_static(b"x")).await.unwrap();
        store.put(&Path::from("events/ns=globex/h0/x.parquet"), PutPayload::from_static(b"x")).await.unwrap();
        store
    }

    fn hourly(n: usize) -> Vec<String> {
        (0..n).map(|h| format!("events/ns=acme/2026-01-01/h{h:02}/part-{h}.parquet")).collect()
    }

    #[test]
    fn the_common_folder_stops_at_the_first_difference_and_never_includes_a_file_name() {
        let paths = |keys: &[&str]| keys.iter().map(|k| Path::from(*k)).collect::<Vec<_>>();
        assert_eq!(common_folder(&paths(&["a/b/c/f1", "a/b/d/f2"])), Path::from("a/b"));
        assert_eq!(common_folder(&paths(&["a/b/f1", "a/b/f2"])), Path::from("a/b"));
        assert_eq!(common_folder(&paths(&["a/b/f1"])), Path::from("a/b"));
        assert_eq!(common_folder(&paths(&["a/b/f1", "a/b"])), Path::from("a"));
        assert_eq!(common_folder(&paths(&["a/f1", "b/f2"])), Path::default());
        assert_eq!(common_folder(&[]), Path::default());
    }

    #[tokio::test]
    async fn many_files_are_checked_by_one_listing_and_a_missing_one_is_named() {
        let files = hourly(LIST_FROM_FILES + 4);
        let store = lake(&files).await;
        let gone = Path::from(files[3].as_str());
        store.delete(&gone).await.unwrap();
        let data = DataFiles::new(store.clone(), [files.as_slice()]);
        for (i, key) in files.iter().enumerate() {
            let head = data.head(&Path::from(key.as_str())).await;
            if i == 3 {
                let e = head.expect_err("a missing file is an error, not an empty one");
                assert_eq!(missing_data_file(&e), Some(files[3].clone()));
            } else {
                assert_eq!(head.unwrap().size, i as u64 + 1, "{key}");
            }
        }
        assert_eq!((store.lists.load(Ordering::Relaxed), store.heads.load(Ordering::Relaxed)), (1, 0));
    }

    #[tokio::test]
    async fn few_files_are_checked_one_by_one() {
        let files = hourly(3);
        let store = lake(&files).await;
        store.delete(&Path::from(files[1].as_str())).await.unwrap();
        let data = DataFiles::new(store.clone(), [files.as_slice()]);
        assert_eq!(data.head(&Path::from(files[0].as_str())).await.unwrap().size, 1);
        let e = data.head(&Path::from(files[1].as_str())).await.expect_err("missing");
        assert_eq!(missing_data_file(&e), Some(files[1].clone()));
        assert_eq!((store.lists.load(Ordering::Relaxed), store.heads.load(Ordering::Relaxed)), (0, 2));
    }
}
