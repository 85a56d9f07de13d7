//! Catalog behaviour on the native host (real SQLite, real local bucket):
//! writer flushes become Iceberg snapshots, concurrent commits, optimistic
//! REST commits, schema evolution, maintenance.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use events_core::{ErrorCode, Event, Timestamp};
use events_host_native::{HostConfig, ManualClock, NativeHost};
use events_iceberg::commit::{TableRequirement, TableUpdate};
use events_iceberg::manifest::{STATUS_DELETED, read_manifest, read_manifest_list};
use events_objects::catalog::{CatalogRequest, CatalogResponse, LoadedTable, MaintainOptions, RecordedChange, Scan};
use events_objects::event_writer::{WriterRequest, writer_name};
use events_objects::{Catalog, EventWriter, OutboxRelay};
use events_runtime::BlobStore;
use events_runtime::context::Host;
use serde_json::{Value, json};

const T0: i64 = 1_800_000_000_000; // 2027-01-15T08:00:00Z
const BASE: &str = "file:///lake-root";

fn event(id: &str, ts: i64, data: Value) -> Event {
    Event {
        id: id.into(),
        ns: "acme".into(),
        ts: Timestamp(ts),
        event_type: "order.placed".into(),
        source: None,
        data: data.as_object().unwrap().clone(),
    }
}

async fn host(dir: &std::path::Path) -> (NativeHost, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let mut config = HostConfig::new(dir);
    config.threads = 2;
    config.clock = clock.clone();
    // The writers' own compaction waits ten years, so it never races a test's maintenance.
    let vars = [("lake.base_uri", BASE), ("writer.compact_grace_ms", "315360000000")];
    config.vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let host = NativeHost::start(config).unwrap();
    host.register::<EventWriter>().register::<OutboxRelay>().register::<Catalog>();
    (host, clock)
}

async fn catalog(h: &NativeHost, req: CatalogRequest) -> CatalogResponse {
    h.call_object::<Catalog>("acme", req).await.unwrap()
}

async fn scan(h: &NativeHost) -> Scan {
    match catalog(h, CatalogRequest::Scan { table: "events".into(), snapshot_id: None, as_of_ms: None }).await {
        CatalogResponse::Scan(s) => s,
        other => panic!("{other:?}"),
    }
}

async fn load(h: &NativeHost) -> LoadedTable {
    match catalog(h, CatalogRequest::LoadTable { table: "events".into() }).await {
        CatalogResponse::Table(t) => *t,
        other => panic!("{other:?}"),
    }
}

async fn append_and_flush(h: &NativeHost, shard: u32, events: Vec<Event>) {
    let name = writer_name("acme", shard);
    h.call_object::<EventWriter>(&name, WriterRequest::append("acme", &events, &[], None)).await.unwrap();
    let files = events_objects::event_writer::flush_writer(h, &name).await.unwrap();
    assert!(!files.is_empty());
}

fn key_of(uri: &str) -> String {
    uri.strip_prefix(BASE).unwrap().trim_start_matches('/').to_string()
}

/// The live files of the current snapshot, as an external reader finds them:
/// metadata → manifest list → manifests.
async fn files_by_manifests(h: &NativeHost, table: &LoadedTable) -> BTreeMap<String, i64> {
    let snapshot = table.metadata.current_snapshot().expect("a current snapshot");
    let list = h.blobs().get(&key_of(&snapshot.manifest_list)).await.unwrap().expect("manifest list exists");
    let mut files = BTreeMap::new();
    for m in read_manifest_list(&list).unwrap() {
        let bytes = h.blobs().get(&key_of(&m.manifest_path)).await.unwrap().expect("manifest exists");
        assert_eq!(bytes.len() as i64, m.manifest_length);
        for e in read_manifest(&bytes).unwrap() {
            if e.status != STATUS_DELETED {
                assert!(files.insert(key_of(&e.file.path), e.file.record_count).is_none(), "file listed twice");
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_flushes_of_many_shards_all_become_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _clock) = host(dir.path()).await;
    const SHARDS: u32 = 4;
    const ROUNDS: u32 = 5;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for shard in 0..SHARDS {
            let h = h.clone();
            let events: Vec<Event> =
                (0..10).map(|i| event(&format!("r{round}s{shard}e{i}"), T0 + i64::from(i), json!({"n": i}))).collect();
            tasks.push(tokio::spawn(async move { append_and_flush(&h, shard, events).await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let s = scan(&h).await;
    assert_eq!(s.files.len(), (SHARDS * ROUNDS) as usize, "every flushed file is in the table");
    assert_eq!(s.files.iter().map(|f| f.rows).sum::<i64>(), i64::from(SHARDS * ROUNDS * 10));
    let t = load(&h).await;
    let meta = &t.metadata;
    assert_eq!(meta.snapshots.len(), (SHARDS * ROUNDS) as usize);
    // One linear history: sequence numbers 1..=n, each snapshot's parent the one before.
    let mut snaps = meta.snapshots.clone();
    snaps.sort_by_key(|s| s.sequence_number);
    for (i, s) in snaps.iter().enumerate() {
        assert_eq!(s.sequence_number, i as i64 + 1);
        assert_eq!(s.parent_snapshot_id, if i == 0 { None } else { Some(snaps[i - 1].snapshot_id) });
        assert_eq!(s.operation(), "append");
    }
    assert_eq!(meta.current_snapshot_id, Some(snaps.last().unwrap().snapshot_id));
    // The manifests written for external engines say the same as the catalog.
    let by_manifests = files_by_manifests(&h, &t).await;
    let by_catalog: BTreeMap<String, i64> = s.files.iter().map(|f| (f.key.clone(), f.rows)).collect();
    assert_eq!(by_manifests, by_catalog);
    // The metadata file the pointer names is the metadata served.
    let stored = h.blobs().get(&key_of(&t.metadata_location)).await.unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<events_iceberg::metadata::TableMetadata>(&stored).unwrap(), t.metadata);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_commit_conflicts_and_its_retry_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _clock) = host(dir.path()).await;
    append_and_flush(&h, 0, vec![event("a", T0, json!({}))]).await;
    let before = load(&h).await;
    let seen = before.metadata.current_snapshot_id;
    append_and_flush(&h, 0, vec![event("b", T0, json!({}))]).await;

    let set = |v: &str| TableUpdate::SetProperties { updates: BTreeMap::from([("owner".to_string(), v.to_string())]) };
    let stale = CatalogRequest::CommitTable {
        table: "events".into(),
        requirements: vec![TableRequirement::AssertRefSnapshotId { reference: "main".into(), snapshot_id: seen }],
        updates: vec![set("stale")],
    };
    let err = h.call_object::<Catalog>("acme", stale).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::CommitConflict, "{err}");
    assert!(!load(&h).await.metadata.properties.contains_key("owner"), "a refused commit changes nothing");

    let current = load(&h).await.metadata.current_snapshot_id;
    let retry = CatalogRequest::CommitTable {
        table: "events".into(),
        requirements: vec![TableRequirement::AssertRefSnapshotId { reference: "main".into(), snapshot_id: current }],
        updates: vec![set("retried")],
    };
    catalog(&h, retry).await;
    let after = load(&h).await;
    assert_eq!(after.metadata.properties["owner"], "retried");
    assert_eq!(after.metadata.snapshots.len(), 2, "a property commit adds no snapshot");

    // Snapshots of a managed table come from events.do only.
    let foreign = CatalogRequest::CommitTable {
        table: "events".into(),
        requirements: vec![],
        updates: vec![TableUpdate::RemoveSnapshotRef { ref_name: "main".into() }],
    };
    let err = h.call_object::<Catalog>("acme", foreign).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    assert_eq!(scan(&h).await.files.len(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_evolves_over_flushes_and_refusals_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _clock) = host(dir.path()).await;
    append_and_flush(&h, 0, vec![event("1", T0, json!({"amount": 1, "plan": "pro"}))]).await;
    append_and_flush(&h, 0, vec![event("2", T0, json!({"amount": 5_000_000_000_i64}))]).await;
    append_and_flush(&h, 0, vec![event("3", T0, json!({"amount": "ten"}))]).await;
    append_and_flush(&h, 0, vec![event("4", T0, json!({"amount": "ten", "vip": true}))]).await;

    let t = load(&h).await;
    let meta = &t.metadata;
    let schema = meta.current_schema();
    let amount = schema.field("amount").unwrap();
    assert_eq!(amount.primitive(), Some("long"), "int was promoted to long");
    assert!(!amount.required);
    let first_amount = meta.schemas.iter().find_map(|s| s.field("amount")).unwrap();
    assert_eq!(first_amount.id, amount.id, "promotion keeps the field id");
    assert_eq!(first_amount.primitive(), Some("int"));
    let vip = schema.field("vip").unwrap();
    assert_eq!(vip.primitive(), Some("boolean"));
    assert_eq!(vip.id, meta.last_column_id);
    assert!(vip.id > amount.id && amount.id > 14, "fresh ids after the 14 fixed columns");
    // Schemas: base, +amount/plan, amount long, +vip.
    assert_eq!(meta.schemas.len(), 4);
    let mapping: Value = serde_json::from_str(&meta.properties["schema.name-mapping.default"]).unwrap();
    assert!(mapping.as_array().unwrap().iter().any(|m| m["names"][0] == "vip" && m["field-id"] == vip.id));

    let CatalogResponse::SchemaHistory(changes) =
        catalog(&h, CatalogRequest::SchemaHistory { table: "events".into() }).await
    else {
        panic!()
    };
    let describe =
        |c: &RecordedChange| (c.change.column.clone(), c.change.from.clone(), c.change.to.clone(), c.change.applied);
    let got: Vec<_> = changes.iter().map(describe).collect();
    assert_eq!(
        got,
        vec![
            ("amount".into(), None, "int".into(), true),
            ("plan".into(), None, "string".into(), true),
            ("amount".into(), Some("int".into()), "long".into(), true),
            ("amount".into(), Some("long".into()), "string".into(), false),
            ("vip".into(), None, "boolean".into(), true),
        ],
        "the refused change is recorded once, not once per flush"
    );
    assert!(changes[3].change.reason.as_deref().unwrap().contains("cannot be promoted"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_expiry_and_orphan_cleanup_keep_every_row_and_only_referenced_files() {
    let dir = tempfile::tempdir().unwrap();
    let (h, clock) = host(dir.path()).await;
    let mut ids = BTreeSet::new();
    for round in 0..4 {
        let events: Vec<Event> = (0..5).map(|i| event(&format!("r{round}-{i}"), T0 + i, json!({"i": i}))).collect();
        ids.extend(events.iter().map(|e| e.id.clone()));
        append_and_flush(&h, 0, events).await;
    }
    let before = scan(&h).await;
    assert_eq!(before.files.len(), 4);
    let old_snapshot = load(&h).await.metadata.current_snapshot_id;

    // Strays: a data file and a manifest no snapshot references.
    let hour_folder = before.files[0].key.rsplit_once('/').unwrap().0.to_string();
    let stray_data = format!("{hour_folder}/stray.parquet");
    let stray_meta = "iceberg/ns=acme/events/metadata/stray-m0.avro".to_string();
    h.blobs().put(&stray_data, b"not referenced".to_vec()).await.unwrap();
    h.blobs().put(&stray_meta, b"not referenced".to_vec()).await.unwrap();

    clock.advance(3_600_000);
    let options = MaintainOptions {
        compact: true,
        expire: true,
        keep_last: Some(1),
        max_snapshot_age_ms: Some(0),
        remove_orphans: true,
        orphan_min_age_ms: Some(0),
        ..Default::default()
    };
    let CatalogResponse::Maintained(reports) = catalog(&h, CatalogRequest::Maintain { table: None, options }).await
    else {
        panic!()
    };
    let r = &reports[0];
    assert_eq!((r.compacted_inputs, r.compacted_files.len()), (4, 1), "{r:?}");
    assert_eq!(r.expired_snapshots, 4, "{r:?}");
    assert_eq!(r.deleted_files, 4, "the compacted inputs go with the snapshots that needed them");
    assert_eq!(
        BTreeSet::from_iter(r.orphans_deleted.iter().cloned()),
        BTreeSet::from([stray_data.clone(), stray_meta.clone()])
    );

    let after = scan(&h).await;
    assert_eq!(after.files.len(), 1);
    let bytes = h.blobs().get(&after.files[0].key).await.unwrap().unwrap();
    let read: BTreeSet<String> = events_lake::decode_events(&bytes).unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(read, ids, "every row is still readable, none twice");
    // Every file the table references is still there; nothing else under its folders.
    let t = load(&h).await;
    let referenced = files_by_manifests(&h, &t).await;
    let data: BTreeSet<String> = h.blobs().list("events/").await.unwrap().into_iter().map(|b| b.key).collect();
    assert_eq!(data, referenced.keys().cloned().collect::<BTreeSet<_>>());
    assert!(h.blobs().get(&key_of(&t.metadata_location)).await.unwrap().is_some());
    // The expired snapshot is gone from time travel, with a clear error.
    let err = h
        .call_object::<Catalog>(
            "acme",
            CatalogRequest::Scan { table: "events".into(), snapshot_id: old_snapshot, as_of_ms: None },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    h.shutdown().await;
}

async fn maintain(h: &NativeHost, options: MaintainOptions) -> events_objects::catalog::MaintainReport {
    match catalog(h, CatalogRequest::Maintain { table: Some("events".into()), options }).await {
        CatalogResponse::Maintained(mut reports) => reports.remove(0),
        other => panic!("{other:?}"),
    }
}

fn orphans_only(min_age_ms: i64) -> MaintainOptions {
    MaintainOptions { remove_orphans: true, orphan_min_age_ms: Some(min_age_ms), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_a_write_intent_survives_orphan_cleanup_until_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (h, clock) = host(dir.path()).await;
    append_and_flush(&h, 0, vec![event("first", T0, json!({}))]).await;

    // A flush in flight: its key is intended and put, not yet committed.
    let pending = [event("pending-1", T0 + 1, json!({})), event("pending-2", T0 + 2, json!({}))];
    let key = events_lake::event_file_key("events", "acme", Timestamp(T0), "9-0000000000000042");
    let r = catalog(&h, CatalogRequest::IntendFiles { table: "events".into(), keys: vec![key.clone()] }).await;
    assert!(matches!(r, CatalogResponse::Ok), "{r:?}");
    let parquet = events_lake::encode_events(&pending.iter().collect::<Vec<_>>()).unwrap();
    let bytes = parquet.len() as i64;
    h.blobs().put(&key, parquet).await.unwrap();
    // A stray nobody intends, in the same folder.
    let stray = key.replace("9-0000000000000042", "stray");
    h.blobs().put(&stray, b"not referenced".to_vec()).await.unwrap();

    clock.advance(3_600_000);
    let r = maintain(&h, orphans_only(0)).await;
    assert_eq!(r.orphans_deleted, vec![stray.clone()], "only the stray goes");
    assert!(h.blobs().get(&key).await.unwrap().is_some(), "the intended file is kept at min age 0");
    // Intents have no expiry: a day later, still kept.
    clock.advance(48 * 3_600_000);
    assert_eq!(maintain(&h, orphans_only(0)).await.orphans_deleted, Vec::<String>::new());

    // The commit makes the file part of the table and ends the intent.
    let added = vec![events_objects::catalog::NewFile { key: key.clone(), rows: 2, bytes }];
    let r = catalog(&h, CatalogRequest::CommitFiles { table: "events".into(), added, removed: vec![] }).await;
    assert!(matches!(r, CatalogResponse::Committed(Some(_))), "{r:?}");
    assert!(scan(&h).await.files.iter().any(|f| f.key == key));
    let r =
        catalog(&h, CatalogRequest::CommitFiles { table: "events".into(), added: vec![], removed: vec![key.clone()] })
            .await;
    assert!(matches!(r, CatalogResponse::Committed(Some(_))), "{r:?}");
    clock.advance(1);
    let expire =
        MaintainOptions { expire: true, keep_last: Some(1), max_snapshot_age_ms: Some(0), ..Default::default() };
    let r = maintain(&h, expire).await;
    assert_eq!(r.deleted_files, 1, "no intent holds the removed file any more: {r:?}");
    assert!(h.blobs().get(&key).await.unwrap().is_none());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_are_bounded_to_managed_tables_and_a_request_size() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _clock) = host(dir.path()).await;
    let err = h
        .call_object::<Catalog>("acme", CatalogRequest::IntendFiles { table: "notes".into(), keys: vec!["x".into()] })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    let keys = (0..=events_objects::catalog::MAX_FILES_PER_COMMIT).map(|i| format!("k{i}")).collect();
    let err = h
        .call_object::<Catalog>("acme", CatalogRequest::IntendFiles { table: "events".into(), keys })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);

    // Up to the namespace's bound, intents are taken; past it, refused whole.
    let per_request = events_objects::catalog::MAX_FILES_PER_COMMIT;
    let limit = events_objects::catalog::MAX_PENDING_INTENTS;
    for start in (0..limit).step_by(per_request) {
        let keys = (start..(start + per_request).min(limit)).map(|i| format!("k{i}")).collect();
        let r = catalog(&h, CatalogRequest::IntendFiles { table: "events".into(), keys }).await;
        assert!(matches!(r, CatalogResponse::Ok), "{r:?}");
    }
    let again = CatalogRequest::IntendFiles { table: "events".into(), keys: vec!["k0".into()] };
    assert!(matches!(catalog(&h, again).await, CatalogResponse::Ok), "repeating an intent takes no room");
    let over = CatalogRequest::IntendFiles { table: "events".into(), keys: vec!["k-last".into(), "k1".into()] };
    let err = h.call_object::<Catalog>("acme", over).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Overloaded);
    // A commit ends an intent and makes room again.
    let added = vec![events_objects::catalog::NewFile { key: "k1".into(), rows: 0, bytes: 0 }];
    catalog(&h, CatalogRequest::CommitFiles { table: "events".into(), added, removed: vec![] }).await;
    let after = CatalogRequest::IntendFiles { table: "events".into(), keys: vec!["k-last".into()] };
    assert!(matches!(catalog(&h, after).await, CatalogResponse::Ok));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_cleanup_deletes_only_event_files_in_the_events_folder() {
    // A prefix that overlaps the CDC folder: CDC files there are no orphans.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let mut config = HostConfig::new(dir.path());
    config.threads = 2;
    config.clock = clock.clone();
    config.vars = [("lake.base_uri", BASE), ("lake.events_prefix", "cdc")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let h = NativeHost::start(config).unwrap();
    h.register::<EventWriter>().register::<Catalog>();
    append_and_flush(&h, 0, vec![event("first", T0, json!({}))]).await;
    let delta = events_lake::cdc::delta_key("acme", "users", 1);
    h.blobs().put(&delta, b"a delta".to_vec()).await.unwrap();
    let stray = events_lake::event_file_key("cdc", "acme", Timestamp(T0), "stray");
    h.blobs().put(&stray, b"not referenced".to_vec()).await.unwrap();
    clock.advance(3_600_000);
    assert_eq!(maintain(&h, orphans_only(0)).await.orphans_deleted, vec![stray]);
    assert!(h.blobs().get(&delta).await.unwrap().is_some(), "the CDC delta file is kept");
    assert_eq!(scan(&h).await.files.len(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_keeps_a_key_a_retried_flush_committed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (h, clock) = host(dir.path()).await;
    append_and_flush(&h, 0, vec![event("first", T0, json!({}))]).await;
    // A flush committed, then (crash before it marked its rows) committed the same key again.
    let key = events_lake::event_file_key("events", "acme", Timestamp(T0), "9-0000000000000007");
    let parquet = events_lake::encode_events(&[&event("again", T0 + 1, json!({}))]).unwrap();
    let added = vec![events_objects::catalog::NewFile { key: key.clone(), rows: 1, bytes: parquet.len() as i64 }];
    h.blobs().put(&key, parquet).await.unwrap();
    for _ in 0..2 {
        let req = CatalogRequest::CommitFiles { table: "events".into(), added: added.clone(), removed: vec![] };
        assert!(matches!(catalog(&h, req).await, CatalogResponse::Committed(Some(_))));
        clock.advance(1);
    }
    append_and_flush(&h, 0, vec![event("later", T0 + 2, json!({}))]).await;
    clock.advance(3_600_000);
    let expire =
        MaintainOptions { expire: true, keep_last: Some(1), max_snapshot_age_ms: Some(0), ..Default::default() };
    let r = maintain(&h, expire).await;
    assert!(r.expired_snapshots > 0, "{r:?}");
    assert!(scan(&h).await.files.iter().any(|f| f.key == key), "the key is live");
    assert!(h.blobs().get(&key).await.unwrap().is_some(), "expiry kept the live version of the key");
    h.shutdown().await;
}

/// The ids of the events table's rows at `snapshot_id`, read from its files.
async fn ids_at(h: &NativeHost, snapshot_id: i64) -> Vec<String> {
    let req = CatalogRequest::Scan { table: "events".into(), snapshot_id: Some(snapshot_id), as_of_ms: None };
    let CatalogResponse::Scan(s) = catalog(h, req).await else { panic!() };
    let mut ids = Vec::new();
    for f in s.files {
        let bytes = h.blobs().get(&f.key).await.unwrap().unwrap();
        ids.extend(events_lake::decode_events(&bytes).unwrap().into_iter().map(|e| e.id));
    }
    ids.sort();
    ids
}

/// Checks each snapshot of `t` against what its operation means in the
/// Iceberg spec: `append` only adds files, `delete` only removes them,
/// `overwrite` adds and removes rows, `replace` leaves the rows as they were.
async fn check_operations(h: &NativeHost, t: &LoadedTable) -> Vec<String> {
    let mut snaps = t.metadata.snapshots.clone();
    snaps.sort_by_key(|s| s.sequence_number);
    let mut ops = Vec::new();
    for s in &snaps {
        let n = |k: &str| s.summary[k].parse::<i64>().unwrap();
        let (added, deleted) = (n("added-data-files"), n("deleted-data-files"));
        match s.operation() {
            "append" => assert!(added > 0 && deleted == 0, "{s:?}"),
            "delete" => assert!(added == 0 && deleted > 0, "{s:?}"),
            "overwrite" => assert!(added > 0 && deleted > 0, "{s:?}"),
            "replace" => {
                assert_eq!(n("added-records"), n("deleted-records"), "{s:?}");
                if t.metadata.location.ends_with("/events")
                    && let Some(parent) = s.parent_snapshot_id.filter(|p| t.metadata.snapshot(*p).is_some())
                {
                    assert_eq!(ids_at(h, s.snapshot_id).await, ids_at(h, parent).await, "a replace keeps the rows");
                }
            }
            other => panic!("unknown operation {other:?}"),
        }
        ops.push(s.operation().to_string());
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_commit_names_its_operation_as_the_iceberg_spec_means_it() {
    let dir = tempfile::tempdir().unwrap();
    let (h, clock) = host(dir.path()).await;
    // Flushes add rows: append.
    append_and_flush(&h, 0, vec![event("a", T0, json!({}))]).await;
    append_and_flush(&h, 0, vec![event("b", T0 + 1, json!({}))]).await;
    // A flush committed again (crash before it marked its rows): the same rows, replace.
    let live = scan(&h).await.files;
    let again =
        vec![events_objects::catalog::NewFile { key: live[0].key.clone(), rows: live[0].rows, bytes: live[0].bytes }];
    let r = catalog(&h, CatalogRequest::CommitFiles { table: "events".into(), added: again, removed: vec![] }).await;
    assert!(matches!(r, CatalogResponse::Committed(Some(_))), "{r:?}");
    // Compaction rewrites the same rows: replace.
    clock.advance(1);
    let r = maintain(&h, MaintainOptions { compact: true, ..Default::default() }).await;
    assert_eq!(r.compacted_inputs, 2, "{r:?}");
    let t = load(&h).await;
    assert_eq!(check_operations(&h, &t).await, ["append", "append", "replace", "replace"]);
    let current = t.metadata.current_snapshot_id.unwrap();
    assert_eq!(ids_at(&h, current).await, ["a", "b"]);

    // Expiry commits no snapshot: it removes old ones and keeps the current
    // one and the operations of those it keeps.
    clock.advance(3_600_000);
    let expire =
        MaintainOptions { expire: true, keep_last: Some(2), max_snapshot_age_ms: Some(0), ..Default::default() };
    assert_eq!(maintain(&h, expire).await.expired_snapshots, 2);
    let after = load(&h).await;
    assert_eq!(after.metadata.current_snapshot_id, Some(current));
    assert_eq!(after.metadata.last_sequence_number, t.metadata.last_sequence_number, "no new snapshot");
    assert_eq!(check_operations(&h, &after).await, ["replace", "replace"]);

    // A CDC table: each state replaces the previous one's rows.
    let table = "cdc_users".to_string();
    let schema = events_objects::catalog::iceberg_schema(&events_lake::cdc::state_schema());
    let ensure = CatalogRequest::EnsureManagedTable { table: table.clone(), schema, properties: BTreeMap::new() };
    assert!(matches!(catalog(&h, ensure).await, CatalogResponse::Table(_)));
    let file = |k: &str, rows| events_objects::catalog::NewFile {
        key: format!("cdc/ns=acme/collection=users/current/{k}.parquet"),
        rows,
        bytes: 10,
    };
    let commits = [
        (vec![file("1", 3)], vec![]),                                 // first state
        (vec![file("2", 4)], vec![file("1", 0).key]),                 // changed rows
        (vec![file("2", 4)], vec![file("1", 0).key]),                 // the same commit repeated
        (vec![file("3a", 2), file("3b", 2)], vec![file("2", 0).key]), // split into parts
        (vec![], vec![file("3a", 0).key, file("3b", 0).key]),         // emptied
    ];
    for (added, removed) in commits {
        let r = catalog(&h, CatalogRequest::CommitFiles { table: table.clone(), added, removed }).await;
        assert!(matches!(r, CatalogResponse::Committed(Some(_))), "{r:?}");
    }
    let CatalogResponse::Table(t) = catalog(&h, CatalogRequest::LoadTable { table }).await else { panic!() };
    assert_eq!(check_operations(&h, &t).await, ["append", "overwrite", "replace", "overwrite", "delete"]);
    h.shutdown().await;
}

#[test]
fn commit_operations_by_what_happens_to_the_files() {
    use events_objects::catalog::commit_operation;
    // (new keys, live keys added again, live keys dropped)
    assert_eq!(commit_operation(1, 0, 0), "append");
    assert_eq!(commit_operation(0, 1, 0), "replace");
    assert_eq!(commit_operation(0, 0, 0), "replace");
    assert_eq!(commit_operation(0, 0, 1), "delete");
    assert_eq!(commit_operation(1, 0, 1), "overwrite");
    assert_eq!(commit_operation(1, 1, 0), "overwrite");
    assert_eq!(commit_operation(0, 1, 1), "overwrite");
}

async fn changes(
    h: &NativeHost,
    table: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> events_objects::catalog::ChangeSet {
    let req = CatalogRequest::Changes { table: table.into(), from_snapshot: from, to_snapshot: to };
    match catalog(h, req).await {
        CatalogResponse::Changes(set) => *set,
        other => panic!("{other:?}"),
    }
}

/// The ids of the events in a change set's files.
async fn change_ids(h: &NativeHost, set: &events_objects::catalog::ChangeSet) -> Vec<String> {
    let mut ids = Vec::new();
    for f in &set.files {
        let bytes = h.blobs().get(&f.key).await.unwrap().unwrap();
        ids.extend(events_lake::decode_events(&bytes).unwrap().into_iter().map(|e| e.id));
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_snapshots_follow_the_operations() {
    let dir = tempfile::tempdir().unwrap();
    let (h, clock) = host(dir.path()).await;
    let none = CatalogRequest::Changes { table: "events".into(), from_snapshot: None, to_snapshot: None };
    assert_eq!(h_err(&h, none).await, ErrorCode::NotFound, "no table before the first flush");
    let current = |t: LoadedTable| t.metadata.current_snapshot_id.unwrap();
    append_and_flush(&h, 0, vec![event("a", T0, json!({}))]).await;
    let s1 = current(load(&h).await);
    append_and_flush(&h, 0, vec![event("b", T0 + 1, json!({}))]).await;
    // A retried flush (replace) and a compaction (replace) add no rows.
    let live = scan(&h).await.files;
    let again =
        vec![events_objects::catalog::NewFile { key: live[1].key.clone(), rows: live[1].rows, bytes: live[1].bytes }];
    catalog(&h, CatalogRequest::CommitFiles { table: "events".into(), added: again, removed: vec![] }).await;
    let s3 = current(load(&h).await);
    clock.advance(1);
    assert_eq!(maintain(&h, MaintainOptions { compact: true, ..Default::default() }).await.compacted_inputs, 2);
    let s4 = current(load(&h).await);
    append_and_flush(&h, 0, vec![event("c", T0 + 2, json!({}))]).await;
    let s5 = current(load(&h).await);

    let all = changes(&h, "events", None, None).await;
    assert_eq!(change_ids(&h, &all).await, ["a", "b", "c"], "every row once, none from the replaces");
    let ops: Vec<&str> = all.snapshots.iter().map(|s| s.operation.as_str()).collect();
    assert_eq!(ops, ["append", "append", "replace", "replace", "append"]);
    assert_eq!(all.snapshots.iter().map(|s| s.added_rows).collect::<Vec<_>>(), [1, 1, 0, 0, 1]);
    assert_eq!((all.from_snapshot_id, all.to_snapshot_id), (None, Some(s5)));

    let after_first = changes(&h, "events", Some(s1), None).await;
    assert_eq!(change_ids(&h, &after_first).await, ["b", "c"]);
    assert!(change_ids(&h, &changes(&h, "events", Some(s3), Some(s4)).await).await.is_empty());
    assert_eq!(change_ids(&h, &changes(&h, "events", Some(s1), Some(s3)).await).await, ["b"]);
    assert!(changes(&h, "events", Some(s5), Some(s5)).await.files.is_empty());
    // Consuming in steps gives each row once.
    let mut stepped = Vec::new();
    for (from, to) in [(None, Some(s1)), (Some(s1), Some(s3)), (Some(s3), Some(s5))] {
        stepped.extend(change_ids(&h, &changes(&h, "events", from, to).await).await);
    }
    assert_eq!(stepped, ["a", "b", "c"]);

    let hr = &h;
    let err = |from, to| async move {
        h_err(hr, CatalogRequest::Changes { table: "events".into(), from_snapshot: from, to_snapshot: to }).await
    };
    assert_eq!(err(Some(s5), Some(s1)).await, ErrorCode::InvalidQuery, "from after to");
    assert_eq!(err(Some(42), None).await, ErrorCode::NotFound);
    assert_eq!(err(None, Some(42)).await, ErrorCode::NotFound);

    // Once the first snapshots expired, changes start from a retained one.
    clock.advance(3_600_000);
    let expire =
        MaintainOptions { expire: true, keep_last: Some(2), max_snapshot_age_ms: Some(0), ..Default::default() };
    maintain(&h, expire).await;
    assert_eq!(err(None, None).await, ErrorCode::NotFound, "the history before the retained snapshots is gone");
    assert_eq!(err(Some(s1), None).await, ErrorCode::NotFound);
    assert_eq!(change_ids(&h, &changes(&h, "events", Some(s4), None).await).await, ["c"]);

    // A CDC table: each new state's rows are its changes; a repeated commit adds none.
    let table = "cdc_users".to_string();
    let schema = events_objects::catalog::iceberg_schema(&events_lake::cdc::state_schema());
    catalog(&h, CatalogRequest::EnsureManagedTable { table: table.clone(), schema, properties: BTreeMap::new() }).await;
    let file = |k: &str, rows| events_objects::catalog::NewFile {
        key: format!("cdc/ns=acme/collection=users/current/{k}.parquet"),
        rows,
        bytes: 10,
    };
    for (added, removed) in [
        (vec![file("1", 3)], vec![]),
        (vec![file("2", 4)], vec![file("1", 0).key]),
        (vec![file("2", 4)], vec![file("1", 0).key]),
    ] {
        catalog(&h, CatalogRequest::CommitFiles { table: table.clone(), added, removed }).await;
    }
    let set = changes(&h, &table, None, None).await;
    let ops: Vec<(&str, i64)> = set.snapshots.iter().map(|s| (s.operation.as_str(), s.added_rows)).collect();
    assert_eq!(ops, [("append", 3), ("overwrite", 4), ("replace", 0)]);
    let first = set.snapshots[0].snapshot_id;
    let keys: Vec<String> = changes(&h, &table, Some(first), None).await.files.into_iter().map(|f| f.key).collect();
    assert_eq!(keys, [file("2", 0).key]);
    h.shutdown().await;
}

async fn h_err(h: &NativeHost, req: CatalogRequest) -> ErrorCode {
    h.call_object::<Catalog>("acme", req).await.unwrap_err().code
}
