//! CdcProcessor behaviour on the native host (real SQLite, real local
//! bucket, manual clock), including the property that every read path —
//! the object's state, pending changes, delta files, the compacted table,
//! snapshots plus deltas — gives the state a plain replay gives.

use std::sync::Arc;

use events_core::cdc::{Change, ChangeOp};
use events_core::{ErrorCode, Timestamp};
use events_host_native::{Clock, HostConfig, ManualClock, NativeHost};
use events_objects::cdc::{CdcRequest, CdcResponse, DocView, FileBase, SnapshotKind};
use events_objects::{Catalog, CdcCollections, CdcProcessor};
use events_runtime::BlobStore;
use events_runtime::context::Host;
use proptest::prelude::*;
use serde_json::{Value, json};

mod cdc_support;
use cdc_support::{Expected, call, catalog_files, live, replay, stats, wait_for};

const T0: i64 = 1_800_000_000_000; // 2027-01-15T08:00:00Z
const DAY: i64 = 86_400_000;
/// History retention of the property test: the shortest allowed.
const HISTORY_KEEP_MS: i64 = 3_600_000;

fn host(dir: &std::path::Path, clock: Arc<ManualClock>) -> NativeHost {
    host_with(dir, clock, &[])
}

fn host_with(dir: &std::path::Path, clock: Arc<ManualClock>, vars: &[(&str, &str)]) -> NativeHost {
    let mut config = HostConfig::new(dir);
    config.vars.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    config.threads = 1;
    config.clock = clock;
    let host = NativeHost::start(config).unwrap();
    host.register::<CdcProcessor>().register::<CdcCollections>();
    host
}

fn change(event_id: &str, doc: &str, op: ChangeOp, ts: i64, after: Option<Value>) -> Change {
    Change {
        event_id: event_id.into(),
        collection: "users".into(),
        doc_id: doc.into(),
        op,
        ts: Timestamp(ts),
        before: None,
        after,
        bookmark: Some(format!("bm-{event_id}")),
    }
}

/// Every document at `at` (default now) from the object's state.
async fn read_all(host: &NativeHost, at: Option<i64>, include_deleted: bool) -> Expected {
    try_read_all(host, at, include_deleted).await.unwrap()
}

async fn try_read_all(
    host: &NativeHost,
    at: Option<i64>,
    include_deleted: bool,
) -> Result<Expected, events_core::ApiError> {
    cdc_support::read_state(host, at, include_deleted, 3).await
}

/// Every live document at `at` rebuilt from the lake files.
async fn read_files(host: &NativeHost, at: i64, base: FileBase) -> Result<Expected, events_core::ApiError> {
    cdc_support::read_files(host, at, base, 4).await
}

/// The event time from which the object's history is complete (`None`: nothing trimmed).
async fn history_from(host: &NativeHost) -> Option<i64> {
    stats(host).await.history_from.map(|t| Timestamp::parse_iso(&t).unwrap().as_millis())
}

/// One step of a generated scenario.
#[derive(Debug, Clone)]
enum Step {
    /// Apply a batch: (doc, op 0..3, ts offset) per change; `redeliver` re-sends the previous batch too.
    Batch {
        changes: Vec<(u8, u8, i64)>,
        redeliver: bool,
    },
    Flush,
    Compact,
    /// Advance the clock a day and take a daily snapshot.
    Snapshot,
    /// Advance the clock past the history retention, flush and trim the history.
    Trim,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (prop::collection::vec((0u8..6, 0u8..3, 0i64..40), 1..8), any::<bool>())
            .prop_map(|(changes, redeliver)| Step::Batch { changes, redeliver }),
        1 => Just(Step::Flush),
        1 => Just(Step::Compact),
        1 => Just(Step::Snapshot),
        1 => Just(Step::Trim),
    ]
}

/// Runs `steps`, with the unfolded tail folded into the state at
/// `fold_max_changes` (1: every apply folds; large: only reads, compactions
/// and the alarm fold), then checks every read path at every time.
/// State files hold at most `state_file_rows` documents each. The history
/// is kept [`HISTORY_KEEP_MS`]: reads at times before the trimmed part come
/// from the lake, and may only fail where the lake no longer holds them.
async fn run_scenario(steps: Vec<Step>, fold_max_changes: i64, state_file_rows: i64) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let (fold, rows, keep) = (fold_max_changes.to_string(), state_file_rows.to_string(), HISTORY_KEEP_MS.to_string());
    let host = host_with(
        dir.path(),
        clock.clone(),
        &[("cdc.fold_max_changes", &fold), ("cdc.state_file_rows", &rows), ("cdc.history_keep_ms", &keep)],
    );
    let mut applied: Vec<Change> = Vec::new();
    let mut previous: Vec<Change> = Vec::new();
    let mut n = 0;
    let mut snapshots: Vec<String> = Vec::new();
    for s in steps {
        match s {
            Step::Batch { changes, redeliver } => {
                let mut batch: Vec<Change> = Vec::new();
                for (doc, op, offset) in changes {
                    n += 1;
                    let op = [ChangeOp::Insert, ChangeOp::Update, ChangeOp::Delete][op as usize];
                    let after = (op != ChangeOp::Delete).then(|| json!({"n": n, "doc": doc}));
                    // Event times wander back and forth: many changes arrive late.
                    batch.push(change(&format!("e{n}"), &format!("d{doc}"), op, T0 + offset * 10, after));
                }
                let mut sent = batch.clone();
                if redeliver {
                    sent.splice(0..0, previous.clone());
                }
                let CdcResponse::Applied(a) = call(&host, CdcRequest::Apply { changes: sent }).await.unwrap() else {
                    panic!()
                };
                assert_eq!(a.applied, batch.len(), "redelivered changes are applied once");
                assert_eq!(a.duplicates, if redeliver { previous.len() } else { 0 });
                applied.extend(batch.clone());
                previous = batch;
            }
            Step::Flush => {
                call(&host, CdcRequest::Flush).await.unwrap();
            }
            Step::Compact => {
                call(&host, CdcRequest::Compact).await.unwrap();
            }
            Step::Snapshot => {
                clock.advance(DAY);
                previous.clear(); // a day later, beyond the retention (see Step::Trim)
                let label = Timestamp(clock.now().as_millis()).to_datetime().format("%Y-%m-%d").to_string();
                let CdcResponse::Snapshot(key) =
                    call(&host, CdcRequest::Snapshot { kind: SnapshotKind::Daily }).await.unwrap()
                else {
                    panic!()
                };
                if key.is_some() {
                    snapshots.push(label);
                }
            }
            Step::Trim => {
                clock.advance(HISTORY_KEEP_MS + 1);
                // Redelivery happens within the retention: the event ids of
                // trimmed changes no longer deduplicate.
                previous.clear();
                call(&host, CdcRequest::Flush).await.unwrap();
                let CdcResponse::Trimmed(_) = call(&host, CdcRequest::TrimHistory).await.unwrap() else { panic!() };
                assert!(stats(&host).await.history_from.is_some() || applied.is_empty(), "every change was due");
            }
        }
    }

    let max_ts = applied.iter().map(|c| c.ts.as_millis()).max().unwrap_or(T0);
    let mut times: Vec<i64> = applied.iter().map(|c| c.ts.as_millis()).collect();
    times.extend([T0 - 1, max_ts + 1]);
    times.sort();
    times.dedup();
    let compacted = stats(&host).await.compactions > 0;
    let trimmed_before = history_from(&host).await;
    for &at in &times {
        let expected = replay(&applied, at);
        // Before the trimmed history's end the state is rebuilt from the lake,
        // which fails only where compaction removed the deltas it needs.
        let lake_may_fail = |e: &events_core::ApiError| {
            e.code == ErrorCode::InvalidQuery && compacted && trimmed_before.is_some_and(|h| at < h)
        };
        match try_read_all(&host, Some(at), true).await {
            Ok(got) => {
                assert_eq!(got, expected, "object state at {at}");
                assert_eq!(read_all(&host, Some(at), false).await, live(&expected), "live documents at {at}");
            }
            Err(e) => assert!(lake_may_fail(&e), "{e:?} at {at}"),
        }
        for (id, want) in &expected {
            match call(&host, CdcRequest::ReadDoc { id: id.clone(), at: Some(Timestamp(at)) }).await {
                Ok(CdcResponse::Doc(Some(DocView { data, version, deleted, .. }))) => {
                    assert_eq!(&(data, version, deleted), want, "{id} at {at}")
                }
                Ok(other) => panic!("{id} at {at}: {other:?}"),
                Err(e) => assert!(lake_may_fail(&e), "{e:?}: {id} at {at}"),
            }
        }
        // The lake paths: deltas from the start, the newest usable base, and each base explicitly.
        match read_files(&host, at, FileBase::DeltasOnly).await {
            Ok(got) => assert_eq!(got, live(&expected), "deltas (and pending changes) at {at}"),
            Err(e) => assert!(compacted && e.code == ErrorCode::InvalidQuery, "{e:?}"),
        }
        match read_files(&host, at, FileBase::Auto).await {
            Ok(got) => assert_eq!(got, live(&expected), "newest usable base + deltas at {at}"),
            // Before every retained base, once compaction removed the first deltas.
            Err(e) => assert!(compacted && e.code == ErrorCode::InvalidQuery, "{e:?}"),
        }
        if at >= max_ts {
            match read_files(&host, at, FileBase::Current).await {
                Ok(got) => assert_eq!(got, live(&expected), "current table + deltas at {at}"),
                Err(e) => assert!(!compacted && e.code == ErrorCode::NotFound, "{e:?}"),
            }
        }
        for label in &snapshots {
            let base = FileBase::Snapshot { kind: SnapshotKind::Daily, label: label.clone() };
            match read_files(&host, at, base).await {
                Ok(got) => assert_eq!(got, live(&expected), "snapshot {label} + deltas at {at}"),
                // A snapshot is a base only for times at or after its newest change;
                // one dropped by retention is gone.
                Err(e) => assert!(matches!(e.code, ErrorCode::InvalidQuery | ErrorCode::NotFound), "{e:?}"),
            }
        }
    }
    // The current state equals the replay of everything, and the counters agree.
    let now = replay(&applied, i64::MAX);
    assert_eq!(read_all(&host, None, true).await, now);
    let s = stats(&host).await;
    assert_eq!(s.documents, now.values().filter(|v| !v.2).count() as i64);
    assert_eq!(s.deleted, now.values().filter(|v| v.2).count() as i64);
    assert_eq!(s.changes, applied.len() as i64);
    host.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_read_path_equals_a_plain_replay(
        steps in prop::collection::vec(step(), 1..14),
        fold_max_changes in prop_oneof![Just(1i64), 2i64..12, Just(100_000i64)],
        state_file_rows in prop_oneof![1i64..4, Just(100_000i64)],
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_scenario(steps, fold_max_changes, state_file_rows));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_late_changes_ties_and_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Arc::new(ManualClock::new(Timestamp(T0))));
    let changes = vec![
        change("a1", "a", ChangeOp::Insert, T0 + 10, Some(json!({"v": 1}))),
        change("a2", "a", ChangeOp::Update, T0 + 30, Some(json!({"v": 3}))),
        change("a3", "a", ChangeOp::Update, T0 + 20, Some(json!({"v": 2}))), // late
        change("b1", "b", ChangeOp::Insert, T0 + 10, Some(json!({"v": "b"}))),
        change("b2", "b", ChangeOp::Delete, T0 + 10, None), // same time: the later arrival wins
    ];
    let CdcResponse::Applied(a) = call(&host, CdcRequest::Apply { changes }).await.unwrap() else { panic!() };
    assert_eq!(a.applied, 5);
    assert_eq!(stats(&host).await.late, 1, "a3 arrived after a2, with an older event time");
    let CdcResponse::Doc(Some(doc)) = call(&host, CdcRequest::ReadDoc { id: "a".into(), at: None }).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((doc.data, doc.version), (Some(json!({"v": 3})), 3), "the late change does not overwrite newer state");
    let CdcResponse::Doc(Some(b)) = call(&host, CdcRequest::ReadDoc { id: "b".into(), at: None }).await.unwrap() else {
        panic!()
    };
    assert!(b.deleted, "a tombstone is kept");
    let CdcResponse::History { changes, next, .. } =
        call(&host, CdcRequest::History { id: "a".into(), after: None, limit: 2 }).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(changes.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(), ["a1", "a3"], "event-time order");
    let CdcResponse::History { changes, next, .. } =
        call(&host, CdcRequest::History { id: "a".into(), after: next, limit: 2 }).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(changes.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(), ["a2"]);
    assert_eq!(next, None);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_writes_new_changes_that_bring_back_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0 + 1_000)));
    let host = host(dir.path(), clock.clone());
    let changes = vec![
        change("1", "a", ChangeOp::Insert, T0 + 10, Some(json!({"v": 1}))),
        change("2", "b", ChangeOp::Insert, T0 + 10, Some(json!({"v": 1}))),
        change("3", "a", ChangeOp::Update, T0 + 50, Some(json!({"v": 2}))),
        change("4", "b", ChangeOp::Delete, T0 + 50, None),
        change("5", "c", ChangeOp::Insert, T0 + 50, Some(json!({"v": 1}))),
    ];
    call(&host, CdcRequest::Apply { changes }).await.unwrap();
    let before = read_all(&host, Some(T0 + 20), false).await;
    let CdcResponse::Restored { changes, next, .. } =
        call(&host, CdcRequest::Restore { at: Timestamp(T0 + 20), restore_id: "r1".into(), after: None })
            .await
            .unwrap()
    else {
        panic!()
    };
    assert_eq!((changes, next), (3, None), "a updated back, b re-inserted, c deleted");
    let now = read_all(&host, None, false).await;
    assert_eq!(
        now.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect::<Vec<_>>(),
        before.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect::<Vec<_>>()
    );
    // The restore is itself history: the state just before it is still readable.
    assert_eq!(read_all(&host, Some(T0 + 60), false).await.len(), 2);
    // Running it again changes nothing (same restore id: its changes are already applied).
    let CdcResponse::Restored { changes, .. } =
        call(&host, CdcRequest::Restore { at: Timestamp(T0 + 20), restore_id: "r2".into(), after: None })
            .await
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(changes, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_flush_compact_snapshot_and_collect_obsolete_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let mut config = HostConfig::new(dir.path());
    config.threads = 1;
    config.clock = clock.clone();
    config.vars = [("cdc.flush_max_changes", "5"), ("cdc.compact_min_deltas", "3"), ("cdc.keep_daily", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let host = NativeHost::start(config).unwrap();
    host.register::<CdcProcessor>().register::<CdcCollections>();
    for round in 0..4 {
        let changes: Vec<Change> = (0..5)
            .map(|i| {
                change(
                    &format!("r{round}-{i}"),
                    &format!("d{i}"),
                    ChangeOp::Update,
                    T0 + round,
                    Some(json!({"round": round})),
                )
            })
            .collect();
        call(&host, CdcRequest::Apply { changes }).await.unwrap();
        // The flush threshold is reached: the alarm writes a delta file.
        wait_for(&host, |s| s.pending == 0).await;
    }
    // Three deltas triggered a compaction; the fourth followed it.
    wait_for(&host, |s| s.compactions >= 1).await;
    // The deltas folded into the current table are deleted by a later alarm; the fourth stays.
    let mut deltas = Vec::new();
    for _ in 0..500 {
        deltas = host.blobs().list("cdc/ns=acme/collection=users/deltas/").await.unwrap();
        if deltas.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    // A day later the daily snapshot of the ended day is taken.
    clock.advance(DAY);
    wait_for(&host, |s| s.snapshots == 1).await;
    let snaps = host.blobs().list("cdc/ns=acme/collection=users/snapshots/daily/").await.unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps[0].key.contains("2027-01-15"), "{snaps:?}");
    let manifest = host.blobs().get("cdc/ns=acme/collection=users/manifest.json").await.unwrap().unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["snapshots"][0]["label"], "2027-01-15");
    assert_eq!(read_files(&host, T0 + 10, FileBase::Auto).await.unwrap(), live(&read_all(&host, None, false).await));
    host.shutdown().await;
}

/// A collection larger than one state file's bound is compacted (and
/// snapshotted) into several files, each within the bound, published to the
/// catalog in one snapshot; it reads back the same from every path, and the
/// files of a replaced state are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_larger_than_one_file_is_written_as_several() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let host = host_with(dir.path(), clock.clone(), &[("cdc.state_file_rows", "4")]);
    host.register::<Catalog>();
    let mut changes: Vec<Change> = (0..11)
        .map(|i| change(&format!("i{i}"), &format!("d{i:02}"), ChangeOp::Insert, T0 + i, Some(json!({"i": i}))))
        .collect();
    changes.extend((0..5).map(|i| change(&format!("x{i}"), &format!("d{i:02}"), ChangeOp::Delete, T0 + 20 + i, None)));
    call(&host, CdcRequest::Apply { changes: changes.clone() }).await.unwrap();
    call(&host, CdcRequest::Compact).await.unwrap();
    clock.advance(DAY);
    call(&host, CdcRequest::Snapshot { kind: SnapshotKind::Daily }).await.unwrap();

    let CdcResponse::Manifest(manifest) = call(&host, CdcRequest::Manifest).await.unwrap() else { panic!() };
    let current = manifest.current.clone().unwrap();
    // 6 live documents in files of at most 4, 5 tombstones likewise.
    assert_eq!((current.rows, current.tombstones), (6, 5));
    assert_eq!(current.files.len(), 2, "{current:?}");
    assert_eq!(current.tombstone_files.len(), 2, "{current:?}");
    assert_eq!(current.files[0], current.key);
    let snapshot = &manifest.snapshots[0];
    assert_eq!((snapshot.files.len(), snapshot.tombstone_files.len()), (2, 2), "{snapshot:?}");
    let mut rows_per_file = Vec::new();
    for key in current.files.iter().chain(&current.tombstone_files).chain(&snapshot.files) {
        let bytes = host.blobs().get(key).await.unwrap().unwrap();
        let n = events_lake::cdc::StateReader::new(bytes::Bytes::from(bytes)).unwrap().count();
        rows_per_file.push(n);
    }
    assert_eq!(rows_per_file, [4, 2, 4, 1, 4, 2]);

    // Every read path gives the replay: the object's state before the
    // deletes and now; the lake (the several files of each base) now.
    for at in [T0 + 15, T0 + 100] {
        let expected = replay(&changes, at);
        assert_eq!(read_all(&host, Some(at), true).await, expected, "object state at {at}");
    }
    assert_eq!(read_files(&host, T0 + 100, FileBase::Auto).await.unwrap(), live(&replay(&changes, T0 + 100)));
    let now = live(&replay(&changes, i64::MAX));
    assert_eq!(read_files(&host, T0 + 100, FileBase::Current).await.unwrap(), now);
    // The snapshot's own label: the midnight alarm may have taken it (for
    // the day that ended) before the explicit request, which then skips.
    let base = FileBase::Snapshot { kind: SnapshotKind::Daily, label: snapshot.label.clone() };
    assert_eq!(read_files(&host, T0 + 100, base).await.unwrap(), now);

    // The catalog's table holds every live file of the state, in one snapshot.
    let (keys, rows) = catalog_files(&host).await;
    let mut want = current.files.clone();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(rows, 6);
    assert_eq!(stats(&host).await.catalog_error, None);

    // A new compaction replaces the state: the old tombstone files are
    // deleted by a later alarm (the live ones are the catalog's to expire).
    let more = vec![change("u1", "d09", ChangeOp::Update, T0 + 200, Some(json!({"i": 99})))];
    call(&host, CdcRequest::Apply { changes: more }).await.unwrap();
    call(&host, CdcRequest::Compact).await.unwrap();
    let host = &host;
    let gone = |keys: Vec<String>| async move {
        for _ in 0..500 {
            let mut left = 0;
            for k in &keys {
                left += usize::from(host.blobs().get(k).await.unwrap().is_some());
            }
            if left == 0 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    };
    assert!(gone(current.tombstone_files.clone()).await, "old tombstone files are deleted");
    let (keys, _) = catalog_files(host).await;
    let CdcResponse::Manifest(manifest) = call(host, CdcRequest::Manifest).await.unwrap() else { panic!() };
    let mut want = manifest.current.unwrap().files;
    want.sort();
    assert_eq!(keys, want, "the catalog replaced every old file by the new ones");
    // By the Iceberg spec's meaning: the first state adds rows (`append`), the
    // next one adds and removes rows (`overwrite`), never a `replace`, which
    // would tell incremental readers that the data did not change.
    let t = match host
        .call_object::<Catalog>(
            "acme",
            events_objects::catalog::CatalogRequest::LoadTable { table: "cdc_users".into() },
        )
        .await
        .unwrap()
    {
        events_objects::catalog::CatalogResponse::Table(t) => t,
        other => panic!("{other:?}"),
    };
    let mut snaps = t.metadata.snapshots.clone();
    snaps.sort_by_key(|s| s.sequence_number);
    let ops: Vec<&str> = snaps.iter().map(|s| s.operation()).collect();
    assert_eq!(ops, ["append", "overwrite"]);
    let last = &snaps[1].summary;
    assert_eq!((last["added-records"].as_str(), last["deleted-records"].as_str()), ("6", "6"), "{last:?}");
    host.shutdown().await;
}

/// Changes older than the history retention are trimmed by the alarm to each
/// document's winning one; reads at later times stay exact from the object,
/// reads at earlier times come from the lake, and what neither holds any
/// more is refused with a clear error, never answered wrongly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_after_its_retention_and_older_times_read_from_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0 + 1_000)));
    let host = host_with(dir.path(), clock.clone(), &[("cdc.history_keep_ms", "3600000")]);
    let old = vec![
        change("a1", "a", ChangeOp::Insert, T0 + 10, Some(json!({"v": 1}))),
        change("a2", "a", ChangeOp::Update, T0 + 20, Some(json!({"v": 2}))),
        change("b1", "b", ChangeOp::Insert, T0 + 10, Some(json!({"v": "b"}))),
        change("a3", "a", ChangeOp::Update, T0 + 15, Some(json!({"v": 3}))), // late
    ];
    call(&host, CdcRequest::Apply { changes: old }).await.unwrap();
    call(&host, CdcRequest::Flush).await.unwrap();
    clock.advance(3_600_001);
    let recent = vec![change("a4", "a", ChangeOp::Update, T0 + 30, Some(json!({"v": 4})))];
    call(&host, CdcRequest::Apply { changes: recent.clone() }).await.unwrap();
    // The alarm trims the four old changes (in a delta file, past the retention).
    wait_for(&host, |s| s.history_from.is_some()).await;
    let s = stats(&host).await;
    assert_eq!(s.history_from.as_deref(), Some(Timestamp(T0 + 20).to_iso().as_str()), "the newest trimmed event time");
    assert_eq!((s.documents, s.changes), (2, 5), "statistics count every change applied");

    // a's history: the kept winner of its trimmed changes (standing for a1 and a3), then a4.
    let CdcResponse::History { changes, next, history_from } =
        call(&host, CdcRequest::History { id: "a".into(), after: None, limit: 10 }).await.unwrap()
    else {
        panic!()
    };
    let entries: Vec<(&str, i64)> = changes.iter().map(|c| (c.event_id.as_str(), c.trimmed_before)).collect();
    assert_eq!(entries, [("a2", 2), ("a4", 0)]);
    assert_eq!((next, history_from), (None, s.history_from.clone()));

    let doc_at = async |id: &str, at: i64| {
        let req = CdcRequest::ReadDoc { id: id.into(), at: Some(Timestamp(at)) };
        match call(&host, req).await {
            Ok(CdcResponse::Doc(d)) => Ok(d.map(|d| (d.data.unwrap(), d.version))),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    // From the history (at or after its trimmed end): the kept row counts for three changes.
    assert_eq!(doc_at("a", T0 + 25).await.unwrap(), Some((json!({"v": 2}), 3)));
    assert_eq!(doc_at("a", T0 + 30).await.unwrap(), Some((json!({"v": 4}), 4)));
    // Before it, from the delta file (plus the pending change, later than both times).
    assert_eq!(doc_at("a", T0 + 12).await.unwrap(), Some((json!({"v": 1}), 1)));
    assert_eq!(doc_at("a", T0 + 17).await.unwrap(), Some((json!({"v": 3}), 2)), "the late change, at its time");
    assert_eq!(doc_at("b", T0 + 5).await.unwrap(), None);
    let then = read_all(&host, Some(T0 + 12), true).await;
    assert_eq!(then.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(then["a"], (Some(json!({"v": 1})), 1, false));

    // A restore must start from an exact state: not before the trimmed history's end.
    let e = call(&host, CdcRequest::Restore { at: Timestamp(T0 + 12), restore_id: "r1".into(), after: None })
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidQuery);
    assert!(e.message.contains("trimmed"), "{}", e.message);

    // Compaction retires the delta files (no snapshot keeps them): times
    // before the trimmed history's end are now held by nothing, and refused.
    call(&host, CdcRequest::Compact).await.unwrap();
    let e = doc_at("a", T0 + 12).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidQuery);
    assert!(e.message.contains("trimmed") && e.message.contains("compacted away"), "{}", e.message);
    assert_eq!(try_read_all(&host, Some(T0 + 12), true).await.unwrap_err().code, ErrorCode::InvalidQuery);
    // Later times and the present are unaffected; a redelivered recent change is still recognised.
    assert_eq!(doc_at("a", T0 + 25).await.unwrap(), Some((json!({"v": 2}), 3)));
    let CdcResponse::Applied(a) = call(&host, CdcRequest::Apply { changes: recent }).await.unwrap() else { panic!() };
    assert_eq!((a.applied, a.duplicates), (0, 1));
    let now = read_all(&host, None, false).await;
    assert_eq!(now["a"], (Some(json!({"v": 4})), 4, false));
    host.shutdown().await;
}

/// A page read from the lake loads only the state files its ids fall in:
/// with the first file of the current table gone from the bucket, pages
/// after it still read correctly (with a later change merged in), and only
/// a read that needs the file fails, with a clear storage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_read_loads_only_the_state_files_of_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let host =
        host_with(dir.path(), Arc::new(ManualClock::new(Timestamp(T0 + 1_000))), &[("cdc.state_file_rows", "4")]);
    let mut changes: Vec<Change> = (0..12)
        .map(|i| change(&format!("i{i}"), &format!("d{i:02}"), ChangeOp::Insert, T0 + i, Some(json!({"i": i}))))
        .collect();
    call(&host, CdcRequest::Apply { changes: changes.clone() }).await.unwrap();
    call(&host, CdcRequest::Compact).await.unwrap();
    let update = change("u5", "d05", ChangeOp::Update, T0 + 50, Some(json!({"i": 55})));
    call(&host, CdcRequest::Apply { changes: vec![update.clone()] }).await.unwrap();
    changes.push(update);
    let CdcResponse::Manifest(manifest) = call(&host, CdcRequest::Manifest).await.unwrap() else { panic!() };
    let files = manifest.current.unwrap().files;
    assert_eq!(files.len(), 3, "d00-d03, d04-d07, d08-d11: {files:?}");
    host.blobs().delete(&files[0]).await.unwrap();

    let page = async |after: Option<&str>| {
        let req = CdcRequest::ReadFiles {
            at: Timestamp(T0 + 100),
            base: FileBase::Current,
            after: after.map(String::from),
            limit: 4,
        };
        match call(&host, req).await? {
            CdcResponse::Docs { docs, next } => Ok::<_, events_core::ApiError>((docs, next)),
            other => panic!("{other:?}"),
        }
    };
    let expected = replay(&changes, T0 + 100);
    let (docs, next) = page(Some("d03")).await.unwrap();
    let got: Vec<(String, Option<Value>)> = docs.into_iter().map(|d| (d.id, d.data)).collect();
    let want: Vec<(String, Option<Value>)> =
        expected.range("d04".to_string()..="d07".to_string()).map(|(k, v)| (k.clone(), v.0.clone())).collect();
    assert_eq!(got, want);
    assert_eq!(got[1].1, Some(json!({"i": 55})), "the pending change is merged in");
    let (docs, next) = page(next.as_deref()).await.unwrap();
    assert_eq!(docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d08", "d09", "d10", "d11"]);
    assert_eq!(next, None);
    // The first page needs the deleted file.
    let e = page(None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::StorageError);
    assert!(e.message.contains(&files[0]), "{}", e.message);
    host.shutdown().await;
}

/// The alarm compacts once enough delta files hold changes the current
/// table lacks *and* those changes are a tenth of the documents (a
/// compaction rewrites them all); delta files kept only for an older
/// snapshot do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_waits_for_changes_worth_a_share_of_the_documents() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let vars = [("cdc.flush_max_changes", "4"), ("cdc.compact_min_deltas", "2"), ("cdc.keep_daily", "3")];
    let host = host_with(dir.path(), clock.clone(), &vars);
    let inserts: Vec<Change> = (0..100)
        .map(|i| change(&format!("i{i}"), &format!("d{i:03}"), ChangeOp::Insert, T0, Some(json!({"v": 0}))))
        .collect();
    call(&host, CdcRequest::Apply { changes: inserts }).await.unwrap();
    call(&host, CdcRequest::Compact).await.unwrap();
    let mut round = 0;
    // One delta file of 4 updates per round, written by the alarm.
    let mut delta = async || {
        round += 1;
        let changes: Vec<Change> = (0..4)
            .map(|i| {
                change(
                    &format!("r{round}-{i}"),
                    &format!("d{i:03}"),
                    ChangeOp::Update,
                    T0 + round,
                    Some(json!({"v": round})),
                )
            })
            .collect();
        call(&host, CdcRequest::Apply { changes }).await.unwrap();
        wait_for(&host, |s| s.pending == 0).await;
        stats(&host).await
    };
    assert_eq!(delta().await.compactions, 1, "1 delta file");
    assert_eq!(delta().await.compactions, 1, "2 files, but 8 changes are less than a tenth of 100 documents");
    let s = delta().await;
    assert_eq!((s.compactions, s.delta_files), (2, 0), "12 changes: compacted, the deltas retired");

    // A snapshot, then deltas after it that a later compaction folds in:
    // they stay for reads from the snapshot, but do not call for compactions.
    clock.advance(DAY);
    call(&host, CdcRequest::Snapshot { kind: SnapshotKind::Daily }).await.unwrap();
    let compacted = stats(&host).await.compactions;
    for _ in 0..3 {
        delta().await;
    }
    let s = stats(&host).await;
    assert_eq!((s.compactions, s.delta_files), (compacted + 1, 3), "kept for the snapshot");
    let s = delta().await;
    assert_eq!((s.compactions, s.delta_files), (compacted + 1, 4), "one new delta file is not enough");
    host.shutdown().await;
}
