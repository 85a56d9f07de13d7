//! Shared by the CDC tests: the replay oracle (what a reader should see of
//! a collection) and paged reads of the `acme/users` processor.

// Each test crate uses part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;

use events_core::cdc::{Change, ChangeOp};
use events_core::{ApiError, Timestamp};
use events_host_native::NativeHost;
use events_objects::catalog::{CatalogRequest, CatalogResponse, ScanFile, cdc_table_name};
use events_objects::cdc::{CdcRequest, CdcResponse, CdcStats, DocView, FileBase, processor_name};
use events_objects::{Catalog, CdcProcessor};
use serde_json::Value;

/// The namespace of the tests' collection.
pub const NS: &str = "acme";
/// The tests' collection.
pub const COLLECTION: &str = "users";

/// What a reader should see of one document: (data, version, deleted).
pub type Expected = BTreeMap<String, (Option<Value>, i64, bool)>;

/// The straightforward replay: changes (in arrival order, duplicates
/// removed) sorted by (event time, arrival), applied one by one up to `at`;
/// the version counts every change up to `at`.
pub fn replay(changes: &[Change], at: i64) -> Expected {
    let mut sorted: Vec<(usize, &Change)> =
        changes.iter().enumerate().filter(|(_, c)| c.ts.as_millis() <= at).collect();
    sorted.sort_by_key(|(i, c)| (c.ts, *i));
    let mut state = Expected::new();
    for (_, c) in sorted {
        let entry = state.entry(c.doc_id.clone()).or_insert((None, 0, false));
        entry.1 += 1;
        match c.op {
            ChangeOp::Delete => (entry.0, entry.2) = (c.before.clone(), true),
            _ => (entry.0, entry.2) = (c.after.clone(), false),
        }
    }
    state
}

/// The live documents of `e` (tombstones left out).
pub fn live(e: &Expected) -> Expected {
    e.iter().filter(|(_, v)| !v.2).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Sends `req` to the collection's processor.
pub async fn call(host: &NativeHost, req: CdcRequest) -> Result<CdcResponse, ApiError> {
    host.call_object::<CdcProcessor>(&processor_name(NS, COLLECTION), req).await
}

/// The collection's statistics.
pub async fn stats(host: &NativeHost) -> CdcStats {
    let CdcResponse::Stats(s) = call(host, CdcRequest::Stats).await.unwrap() else { panic!() };
    s
}

/// Polls the statistics until `done` holds (the alarm runs on its own); panics after 10 s.
pub async fn wait_for(host: &NativeHost, done: impl Fn(&CdcStats) -> bool) -> CdcStats {
    for _ in 0..500 {
        let s = stats(host).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("condition not reached: {:?}", stats(host).await);
}

/// Every document at `at` (default now) from the object's state, read in pages of `page`.
pub async fn read_state(
    host: &NativeHost,
    at: Option<i64>,
    include_deleted: bool,
    page: usize,
) -> Result<Expected, ApiError> {
    collect_pages(async |after| {
        call(host, CdcRequest::ReadState { at: at.map(Timestamp), after, limit: page, include_deleted }).await
    })
    .await
}

/// Every live document at `at` rebuilt from the lake files from `base`, read in pages of `page`.
pub async fn read_files(host: &NativeHost, at: i64, base: FileBase, page: usize) -> Result<Expected, ApiError> {
    collect_pages(async |after| {
        call(host, CdcRequest::ReadFiles { at: Timestamp(at), base: base.clone(), after, limit: page }).await
    })
    .await
}

async fn collect_pages(
    mut read: impl AsyncFnMut(Option<String>) -> Result<CdcResponse, ApiError>,
) -> Result<Expected, ApiError> {
    let mut out = Expected::new();
    let mut after = None;
    loop {
        let CdcResponse::Docs { docs, next } = read(after).await? else { panic!("not a page of documents") };
        for DocView { id, data, version, deleted, .. } in docs {
            out.insert(id, (data, version, deleted));
        }
        match next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// The current files of the collection's Iceberg table.
pub async fn catalog_scan(host: &NativeHost) -> Vec<ScanFile> {
    let req = CatalogRequest::Scan { table: cdc_table_name(COLLECTION), snapshot_id: None, as_of_ms: None };
    let CatalogResponse::Scan(scan) = host.call_object::<Catalog>(NS, req).await.unwrap() else { panic!() };
    scan.files
}

/// The keys (sorted) and summed rows of the collection's Iceberg table's current files.
pub async fn catalog_files(host: &NativeHost) -> (Vec<String>, i64) {
    let files = catalog_scan(host).await;
    let mut keys: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
    keys.sort();
    (keys, files.iter().map(|f| f.rows).sum())
}
