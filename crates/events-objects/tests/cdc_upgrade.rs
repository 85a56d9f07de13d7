//! A CdcProcessor upgrades a data directory written by version 1 of its
//! schema and keeps working.
//!
//! Version 1 folded every change into `docs` when it was applied, wrote each
//! current table and snapshot as exactly one live file and one tombstones
//! file, and kept no history index. This test builds, on disk, what that
//! version left behind for a small collection — the object's SQLite file at
//! the path the native host opens (schema from
//! `fixtures/cdc_processor_v1.sql`, rows written by the statements version 1
//! ran), its Parquet files in the host's local bucket (written with the
//! public `events_lake::cdc` encoders), the manifest, and the Iceberg table
//! it had committed — then starts the current code on it and checks what a
//! user relies on: the state now and in the past, a document's history, the
//! statistics, reads from the lake files, new changes (and redeliveries of
//! old ones), and a compaction into the new multi-part layout.
//!
//! Nothing here depends on how many migrations the current code has: only
//! that it brings a version-1 database to its newest version.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use events_core::cdc::{Change, ChangeOp};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_host_native::{Clock, HostConfig, ManualClock, NativeHost};
use events_lake::cdc::{CdcManifest, current_keys, decode_state_file, manifest_key, part_key, state_schema};
use events_objects::catalog::{CatalogRequest, ScanFile, cdc_table_name, iceberg_schema};
use events_objects::cdc::{
    CDC_COLLECTION_PROPERTY, CdcRequest, CdcResponse, CollectionsRequest, FileBase, SnapshotKind, processor_name,
};
use events_objects::{Catalog, CdcCollections, CdcProcessor};
use events_runtime::{BlobStore, context::Host};
use rusqlite::Connection;
use serde_json::json;

mod cdc_support;
mod cdc_v1;
use cdc_support::{COLLECTION, Expected, NS, call, catalog_files, catalog_scan, live, replay, stats};
use cdc_v1::{
    CatalogCommit, HOUR, T0, V1_FLUSH_MAX_AGE_MS, V1_SNAPSHOT_LABEL, build_v1_data_dir, change, doc, lake_dir,
    object_db_path,
};

/// Documents per state file after the upgrade: small, so that a compaction
/// of this collection writes several files.
const STATE_FILE_ROWS: i64 = 2;

// ---------------------------------------------------------------- expectations

/// Every event time of `changes`, and a moment before and after all of them.
fn times(changes: &[Change]) -> Vec<i64> {
    let mut times: Vec<i64> = changes.iter().map(|c| c.ts.as_millis()).collect();
    times.extend([T0 - 1, i64::from(i32::MAX) * 1_000]);
    times.sort();
    times.dedup();
    times
}

// ---------------------------------------------------------------- calls

fn start_host(data: &Path, clock: Arc<ManualClock>) -> NativeHost {
    let mut config = HostConfig::new(data);
    config.vars.insert("cdc.state_file_rows".into(), STATE_FILE_ROWS.to_string());
    config.threads = 1;
    config.clock = clock;
    let host = NativeHost::start(config).unwrap();
    host.register::<CdcProcessor>().register::<CdcCollections>().register::<Catalog>();
    host
}

async fn manifest(host: &NativeHost) -> CdcManifest {
    let CdcResponse::Manifest(m) = call(host, CdcRequest::Manifest).await.unwrap() else { panic!() };
    m
}

/// Every document at `at` (default now), tombstones included, from the object's state.
async fn read_state(host: &NativeHost, at: Option<i64>) -> Expected {
    cdc_support::read_state(host, at, true, 2).await.unwrap()
}

/// Every live document at `at` rebuilt from the lake files.
async fn read_files(host: &NativeHost, at: i64, base: FileBase) -> Result<Expected, ApiError> {
    cdc_support::read_files(host, at, base, 2).await
}

async fn history_ids(host: &NativeHost, id: &str) -> Vec<(String, ChangeOp, i64)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let req = CdcRequest::History { id: id.into(), after, limit: 2 };
        let CdcResponse::History { changes, next, history_from } = call(host, req).await.unwrap() else { panic!() };
        assert_eq!(history_from, None, "the whole history is kept: nothing was trimmed");
        for c in changes {
            out.push((c.event_id, c.op, Timestamp::parse_iso(&c.ts).unwrap().as_millis()));
        }
        match next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// Replays version 1's catalog commits and its registration of the
/// collection: the state of the other objects it talked to.
async fn restore_v1_neighbours(host: &NativeHost, commits: Vec<CatalogCommit>) {
    let table = cdc_table_name(COLLECTION);
    for commit in commits {
        let properties = BTreeMap::from([(CDC_COLLECTION_PROPERTY.to_string(), COLLECTION.to_string())]);
        let schema = iceberg_schema(&state_schema());
        let req = CatalogRequest::EnsureManagedTable { table: table.clone(), schema, properties };
        host.call_object::<Catalog>(NS, req).await.unwrap();
        let req =
            CatalogRequest::CommitFiles { table: table.clone(), added: vec![commit.added], removed: commit.removed };
        host.call_object::<Catalog>(NS, req).await.unwrap();
    }
    let req = CollectionsRequest::Register { collection: COLLECTION.into() };
    host.call_object::<CdcCollections>(NS, req).await.unwrap();
}

async fn wait_until_gone(host: &NativeHost, key: &str) {
    for _ in 0..500 {
        if host.blobs().get(key).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{key} was not deleted");
}

/// Every read path of the object's state equals the replay of `changes`, at every time.
async fn assert_state_reads(host: &NativeHost, changes: &[Change], context: &str) {
    assert_eq!(read_state(host, None).await, replay(changes, i64::MAX), "{context}: state now");
    for at in times(changes) {
        let expected = replay(changes, at);
        assert_eq!(read_state(host, Some(at)).await, expected, "{context}: state at {at}");
        for (id, want) in &expected {
            let req = CdcRequest::ReadDoc { id: id.clone(), at: Some(Timestamp(at)) };
            let CdcResponse::Doc(Some(d)) = call(host, req).await.unwrap() else { panic!("{context}: {id} at {at}") };
            assert_eq!(&(d.data, d.version, d.deleted), want, "{context}: {id} at {at}");
        }
    }
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_collection_is_upgraded_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (history, commits) = build_v1_data_dir(data, false);
    let mut changes = history.changes();
    let noon = T0 + 28 * HOUR;
    let (v1_live, v1_tombstones) = current_keys(NS, COLLECTION, 9);
    assert!(lake_dir(data).join(&v1_live).exists() && !lake_dir(data).join(current_keys(NS, COLLECTION, 5).1).exists());

    // The new version starts a second after the last changes arrived (before
    // the flush alarm version 1 set for them is due).
    let clock = Arc::new(ManualClock::new(Timestamp(noon + 1_000)));
    let host = start_host(data, clock.clone());
    restore_v1_neighbours(&host, commits).await;

    // ---- Statistics carry over.
    let s = stats(&host).await;
    assert_eq!((s.documents, s.deleted), (4, 2), "live: b, c, e, f; tombstones: a, d");
    assert_eq!((s.changes, s.pending), (16, 5), "e12..e16 were never flushed");
    assert_eq!(s.late, 2, "e9 and e13 arrived after changes of their documents with later event times");
    assert_eq!((s.delta_files, s.compactions, s.snapshots), (2, 2, 1));
    assert_eq!(s.last_change, Some(Timestamp(noon + 20).to_iso()));
    assert_eq!(s.last_compaction, Some(Timestamp(T0 + 26 * HOUR + 60_000).to_iso()));
    assert_eq!(s.catalog_error, None);

    // ---- The state now and at every past time, from the object.
    let now = replay(&changes, i64::MAX);
    assert_eq!(now["a"], (doc("Ann", json!(3)), 5, true), "a tombstone keeps the delete's before");
    assert_eq!(now["b"], (doc("Bob", json!(2)), 3, false), "the late e13 does not overwrite e6");
    assert_eq!(now["c"], (doc("Cy", json!(2)), 3, false), "re-inserted after its delete");
    assert_eq!(now["e"], (doc("Eve", json!("tie")), 2, false), "of two changes at one time, the later arrival wins");
    assert_state_reads(&host, &changes, "after the upgrade").await;

    // ---- One document's history: event-time order, the late change in place, the tombstone last.
    let a: Vec<(String, ChangeOp, i64)> = history_ids(&host, "a").await;
    let day2 = T0 + 26 * HOUR;
    assert_eq!(
        a,
        [
            ("e1".to_string(), ChangeOp::Insert, T0 + 10),
            ("e4".to_string(), ChangeOp::Update, T0 + 30),
            ("e9".to_string(), ChangeOp::Update, day2 + 150),
            ("e8".to_string(), ChangeOp::Update, day2 + 300),
            ("e15".to_string(), ChangeOp::Delete, noon + 20),
        ]
    );

    // ---- Reads from the lake files version 1 wrote (plus the pending changes).
    let current_max_ts = day2 + 300; // the newest change the current table (up to seq 9) folds
    let snapshot_max_ts = T0 + 40;
    let v1_snapshot = FileBase::Snapshot { kind: SnapshotKind::Daily, label: V1_SNAPSHOT_LABEL.into() };
    for at in times(&changes) {
        let expected = live(&replay(&changes, at));
        if at >= current_max_ts {
            let got = read_files(&host, at, FileBase::Current).await.unwrap();
            assert_eq!(got, expected, "current table + deltas + pending at {at}");
        } else {
            let e = read_files(&host, at, FileBase::Current).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidQuery, "the current table is no base before its newest change");
        }
        if at >= snapshot_max_ts {
            let got = read_files(&host, at, v1_snapshot.clone()).await.unwrap();
            assert_eq!(got, expected, "snapshot + deltas + pending at {at}");
            assert_eq!(read_files(&host, at, FileBase::Auto).await.unwrap(), expected, "newest usable base at {at}");
        } else {
            // The delta of seq 1..5 was deleted after the first compaction.
            let e = read_files(&host, at, FileBase::Auto).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidQuery, "{e:?}");
        }
    }
    let e = read_files(&host, noon + 1_000, FileBase::DeltasOnly).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidQuery, "{e:?}");
    let m = manifest(&host).await;
    let current = m.current.as_ref().unwrap();
    assert_eq!(
        (current.files.clone(), current.tombstone_files.clone()),
        (vec![v1_live.clone()], vec![v1_tombstones.clone()])
    );
    assert_eq!((current.upto_seq, current.rows, current.tombstones), (9, 3, 1));

    // ---- New changes apply on top; redelivered old events are recognised.
    let hour13 = T0 + 29 * HOUR;
    let redelivered = [changes[2].clone(), changes[12].clone()]; // e3 (compacted), e13 (was pending)
    assert_eq!((redelivered[0].event_id.as_str(), redelivered[1].event_id.as_str()), ("e3", "e13"));
    let fresh = vec![
        change("e17", "e", ChangeOp::Update, hour13, doc("Eve", json!("tie")), doc("Eve", json!(2))),
        change("e18", "g", ChangeOp::Insert, hour13 + 1, None, doc("Gus", json!(1))),
        change("e19", "f", ChangeOp::Update, T0 + 27 * HOUR, None, doc("Fay", json!("late"))),
    ];
    let mut batch = redelivered.to_vec();
    batch.extend(fresh.clone());
    let CdcResponse::Applied(applied) = call(&host, CdcRequest::Apply { changes: batch }).await.unwrap() else {
        panic!()
    };
    assert_eq!((applied.applied, applied.duplicates), (3, 2));
    changes.extend(fresh);
    let s = stats(&host).await;
    assert_eq!((s.documents, s.deleted, s.changes, s.pending, s.late), (5, 2, 19, 8, 3));
    assert_state_reads(&host, &changes, "after new changes").await;

    // ---- A compaction writes the new layout: several files per state.
    clock.advance(HOUR);
    call(&host, CdcRequest::Compact).await.unwrap();
    let m = manifest(&host).await;
    let current = m.current.clone().unwrap();
    let (live_key, tomb_key) = current_keys(NS, COLLECTION, 19);
    assert_eq!((current.upto_seq, current.rows, current.tombstones), (19, 5, 2));
    assert_eq!(current.files, (0..3).map(|p| part_key(&live_key, p)).collect::<Vec<_>>(), "5 documents, 2 per file");
    assert_eq!(current.tombstone_files, [part_key(&tomb_key, 0)]);
    let mut rows_per_file = Vec::new();
    for key in current.files.iter().chain(&current.tombstone_files) {
        rows_per_file.push(decode_state_file(&host.blobs().get(key).await.unwrap().unwrap()).unwrap().len());
    }
    assert_eq!(rows_per_file, [2, 2, 1, 2]);
    let at = clock.now().as_millis();
    let expected = live(&replay(&changes, at));
    assert_eq!(read_files(&host, at, FileBase::Current).await.unwrap(), expected, "the new current table");
    assert_eq!(read_files(&host, at, FileBase::Auto).await.unwrap(), expected);
    assert_eq!(read_files(&host, at, v1_snapshot.clone()).await.unwrap(), expected, "version 1's snapshot + deltas");
    assert_state_reads(&host, &changes, "after compacting").await;
    let s = stats(&host).await;
    assert_eq!((s.pending, s.compactions, s.catalog_error), (0, 3, None));

    // The catalog's table now holds the new files instead of version 1's;
    // version 1's tombstones file is deleted, its live file stays (the
    // catalog's, expired with its snapshots).
    let mut want = current.files.clone();
    want.sort();
    assert_eq!(catalog_files(&host).await, (want, 5));
    wait_until_gone(&host, &v1_tombstones).await;
    assert!(host.blobs().get(&v1_live).await.unwrap().is_some());
    // The manifest in the bucket lists the parts.
    let json = host.blobs().get(&manifest_key(NS, COLLECTION)).await.unwrap().unwrap();
    let written: CdcManifest = serde_json::from_slice(&json).unwrap();
    assert_eq!(written.current.unwrap().files, current.files);

    // ---- A snapshot after the upgrade is multi-part too, and reads back the same.
    let CdcResponse::Snapshot(Some(_)) = call(&host, CdcRequest::Snapshot { kind: SnapshotKind::Daily }).await.unwrap()
    else {
        panic!("the collection changed since the last snapshot")
    };
    let label = clock.now().to_datetime().format("%Y-%m-%d").to_string();
    let m = manifest(&host).await;
    assert_eq!(m.snapshots.len(), 2);
    let snapshot = m.snapshots.iter().find(|s| s.label == label).unwrap();
    assert_eq!((snapshot.files.len(), snapshot.tombstone_files.len()), (3, 1));
    let base = FileBase::Snapshot { kind: SnapshotKind::Daily, label };
    assert_eq!(read_files(&host, at, base).await.unwrap(), expected);
    let before_restart = stats(&host).await;
    host.shutdown().await;

    // ---- The database records every migration once, in order; version 1's record is kept.
    let db = Connection::open(object_db_path::<CdcProcessor>(data, &processor_name(NS, COLLECTION))).unwrap();
    let versions: Vec<(i64, i64)> = db
        .prepare("SELECT version, applied_at FROM _migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(versions.len() >= 3, "{versions:?}");
    assert_eq!(versions.iter().map(|v| v.0).collect::<Vec<_>>(), (1..=versions.len() as i64).collect::<Vec<_>>());
    assert_eq!(versions[0].1, T0, "migration 1 was not applied again");
    assert!(versions[1..].iter().all(|v| v.1 == noon + 1_000), "the rest were applied at the upgrade: {versions:?}");
    drop(db);

    // ---- A restart of the upgraded data directory migrates nothing more and reads the same.
    let host = start_host(data, clock.clone());
    assert_eq!(stats(&host).await, before_restart);
    assert_eq!(read_files(&host, at, FileBase::Current).await.unwrap(), expected);
    assert_eq!(history_ids(&host, "a").await, a);
    host.shutdown().await;
}

/// Version 1's last commit to the catalog failed. After the upgrade, the
/// flush alarm it had set flushes the pending changes and retries that
/// commit from the migrated record of the current table (one live file, its
/// size not recorded then), and the next compaction replaces it in the
/// catalog by the new files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_commit_version_1_left_failed_is_retried_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (history, commits) = build_v1_data_dir(data, true);
    let changes = history.changes();
    let noon = T0 + 28 * HOUR;
    let clock = Arc::new(ManualClock::new(Timestamp(noon + 1_000)));
    let host = start_host(data, clock.clone());
    restore_v1_neighbours(&host, commits).await;
    let (v1_first, _) = current_keys(NS, COLLECTION, 5);
    let (v1_live, _) = current_keys(NS, COLLECTION, 9);
    assert_eq!(catalog_files(&host).await, (vec![v1_first.clone()], 4), "the catalog still has the first table");
    assert_eq!(stats(&host).await.pending, 5);

    // Version 1's alarm comes due: the pending changes are flushed and the
    // current table (up to seq 9) is committed.
    clock.advance(V1_FLUSH_MAX_AGE_MS);
    cdc_support::wait_for(&host, |s| s.pending == 0).await;
    let mut files = Vec::new();
    for _ in 0..500 {
        files = catalog_scan(&host).await;
        if files.iter().any(|f| f.key == v1_live) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let size = std::fs::metadata(lake_dir(data).join(&v1_live)).unwrap().len() as i64;
    assert_eq!(files, [ScanFile { key: v1_live.clone(), rows: 3, bytes: size }]);
    assert_eq!(stats(&host).await.catalog_error, None);
    // The first table's live file left the catalog's current snapshot; the
    // catalog, not the processor, deletes it when that snapshot expires.
    assert!(host.blobs().get(&v1_first).await.unwrap().is_some());

    // The flushed changes read back from the lake.
    let at = clock.now().as_millis();
    assert_eq!(read_files(&host, at, FileBase::Current).await.unwrap(), live(&replay(&changes, at)));

    // A compaction after the upgrade replaces version 1's file in the catalog by its parts.
    call(&host, CdcRequest::Compact).await.unwrap();
    let current = manifest(&host).await.current.unwrap();
    assert_eq!((current.upto_seq, current.files.len()), (16, 2), "4 documents, 2 per file");
    let mut want = current.files.clone();
    want.sort();
    assert_eq!(catalog_files(&host).await, (want, 4));
    assert_eq!(read_files(&host, at, FileBase::Current).await.unwrap(), live(&replay(&changes, at)));
    host.shutdown().await;
}
