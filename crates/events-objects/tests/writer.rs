//! EventWriter behaviour on the native host, with real SQLite and a real local bucket.

use std::sync::Arc;

use events_core::{Event, Timestamp};
use events_host_native::{Clock, HostConfig, ManualClock, NativeHost};
use events_objects::catalog::{CatalogRequest, CatalogResponse, MaintainOptions};
use events_objects::event_writer::{Appended, ReadFilter, WriterRequest, WriterResponse, flush_writer, writer_name};
use events_objects::outbox::LAKE;
use events_objects::outbox_relay::{RelayRequest, RelayResponse, relay_name};
use events_objects::{Catalog, EventWriter, OutboxRelay};
use events_runtime::BlobStore;
use events_runtime::context::Host;

const T0: i64 = 1_800_000_000_000; // 2027-01-15T08:00:00Z

fn event(ns: &str, id: &str, ts: i64, ty: &str) -> Event {
    let mut data = serde_json::Map::new();
    data.insert("n".into(), serde_json::json!(id));
    Event { id: id.into(), ns: ns.into(), ts: Timestamp(ts), event_type: ty.into(), source: None, data }
}

async fn host(dir: &std::path::Path, clock: Arc<ManualClock>, vars: &[(&str, &str)]) -> NativeHost {
    let mut config = HostConfig::new(dir);
    config.threads = 1;
    config.clock = clock;
    config.vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let host = NativeHost::start(config).unwrap();
    host.register::<EventWriter>().register::<OutboxRelay>().register::<Catalog>();
    host
}

async fn call(host: &NativeHost, req: WriterRequest) -> WriterResponse {
    host.call_object::<EventWriter>(&writer_name("acme", 0), req).await.unwrap()
}

/// Flushes shard 0 through its lake relay.
async fn flush(host: &NativeHost) -> Vec<String> {
    flush_writer(host, &writer_name("acme", 0)).await.unwrap()
}

/// Compacts shard 0's closed hours through its lake relay.
async fn compact(host: &NativeHost) -> Vec<String> {
    let relay = relay_name(&writer_name("acme", 0), LAKE);
    match host.call_object::<OutboxRelay>(&relay, RelayRequest::Compact).await.unwrap() {
        RelayResponse::Files(files) => files,
        other => panic!("{other:?}"),
    }
}

async fn append(host: &NativeHost, events: Vec<Event>, batch: Option<&str>) -> Appended {
    match call(host, WriterRequest::append("acme", &events, &[], batch.map(str::to_string))).await {
        WriterResponse::Appended(a) => a,
        other => panic!("{other:?}"),
    }
}

async fn lake_ids(host: &NativeHost) -> Vec<String> {
    let mut ids = Vec::new();
    for blob in host.blobs().list("events/").await.unwrap() {
        let bytes = host.blobs().get(&blob.key).await.unwrap().unwrap();
        ids.extend(events_lake::decode_events(&bytes).unwrap().into_iter().map(|e| e.id));
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ids_and_event_ids_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), Arc::new(ManualClock::new(Timestamp(T0))), &[]).await;
    let batch = vec![event("acme", "a", T0, "x.y"), event("acme", "b", T0, "x.y")];
    assert_eq!(
        append(&host, batch.clone(), Some("b1")).await,
        Appended { received: 2, stored: 2, duplicates: 0, deduplicated: false }
    );
    let replay = append(&host, batch.clone(), Some("b1")).await;
    assert!(replay.deduplicated);
    assert_eq!((replay.received, replay.stored), (2, 0));
    // Same ids under a new batch id: stored once.
    let again = append(&host, vec![event("acme", "a", T0, "x.y"), event("acme", "c", T0, "x.y")], Some("b2")).await;
    assert_eq!((again.stored, again.duplicates), (1, 1));
    flush(&host).await;
    assert_eq!(lake_ids(&host).await, ["a", "b", "c"]);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_threshold_flushes_by_alarm_into_hour_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let host = host(dir.path(), clock.clone(), &[("writer.flush_max_age_ms", "1000")]).await;
    // Two event hours.
    append(&host, vec![event("acme", "e1", T0 - 3_600_000, "a"), event("acme", "e2", T0, "a")], None).await;
    match call(&host, WriterRequest::Recent { filter: ReadFilter::default(), limit: 10 }).await {
        WriterResponse::Events(e) => assert_eq!(e.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e2", "e1"]),
        other => panic!("{other:?}"),
    }
    clock.advance(1_000);
    let start = std::time::Instant::now();
    // The alarms (the writer's, then its lake relay's) flush the buffer.
    loop {
        let WriterResponse::Stats(s) = call(&host, WriterRequest::Stats).await else { panic!("stats") };
        if s.buffered == 0 {
            assert_eq!((s.events_flushed, s.files_written), (2, 2));
            break;
        }
        assert!(start.elapsed().as_secs() < 10, "the alarm flushed the buffer: {s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(lake_ids(&host).await, ["e1", "e2"]);
    let keys: Vec<String> = host.blobs().list("events/").await.unwrap().into_iter().map(|b| b.key).collect();
    assert_eq!(keys.len(), 2, "one file per event hour: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("events/ns=acme/date=2027-01-15/hour=")));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_consumers_see_every_event_across_flush_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let h = host(dir.path(), clock.clone(), &[]).await;
    call(&h, WriterRequest::RegisterConsumer { name: "archive".into(), from_start: true }).await;
    append(&h, (0..5).map(|i| event("acme", &format!("o{i}"), T0, "a")).collect(), None).await;
    // Flushing does not drop rows the consumer has not acknowledged.
    flush(&h).await;
    let read = |h: NativeHost| async move {
        match h
            .call_object::<EventWriter>("acme/0", WriterRequest::ReadOutbox { consumer: "archive".into(), limit: 3 })
            .await
            .unwrap()
        {
            WriterResponse::Rows { after, rows } => events_objects::outbox::decode_rows(&rows, after).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    // Reads answer whole appends (at least `limit` events); this consumer
    // handles three of them and acknowledges those only.
    let first = read(h.clone()).await;
    assert_eq!(first.iter().map(|o| o.event.id.as_str()).collect::<Vec<_>>(), ["o0", "o1", "o2", "o3", "o4"]);
    call(&h, WriterRequest::AckOutbox { consumer: "archive".into(), upto: first[2].seq }).await;
    h.shutdown().await;
    drop(h);
    // After a restart the consumer resumes at its cursor.
    let h = host(dir.path(), clock, &[]).await;
    let rest = read(h.clone()).await;
    assert_eq!(rest.iter().map(|o| o.event.id.as_str()).collect::<Vec<_>>(), ["o3", "o4"]);
    call(&h, WriterRequest::AckOutbox { consumer: "archive".into(), upto: rest[1].seq }).await;
    match call(&h, WriterRequest::Stats).await {
        WriterResponse::Stats(s) => assert_eq!(s.retained, 0, "acknowledged and flushed rows are trimmed"),
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_an_hours_small_files_without_losing_or_doubling_rows() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let h = host(dir.path(), clock.clone(), &[("writer.compact_grace_ms", "0")]).await;
    for round in 0..4 {
        append(&h, (0..10).map(|i| event("acme", &format!("r{round}-{i}"), T0 + round, "a")).collect(), None).await;
        flush(&h).await;
    }
    assert_eq!(h.blobs().list("events/").await.unwrap().len(), 4);
    // The hour is not closed yet: nothing happens.
    assert!(compact(&h).await.is_empty());
    clock.advance(2 * 3_600_000);
    assert_eq!(compact(&h).await.len(), 1);
    // One replace snapshot: the table now has the compacted file only; the
    // inputs stay for older snapshots until those expire.
    let scan = h.call_object::<Catalog>(
        "acme",
        CatalogRequest::Scan { table: "events".into(), snapshot_id: None, as_of_ms: None },
    );
    match scan.await.unwrap() {
        CatalogResponse::Scan(s) => {
            assert_eq!(s.files.len(), 1, "{s:?}");
            assert_eq!(s.files[0].rows, 40);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.blobs().list("events/").await.unwrap().len(), 5);
    let expire =
        MaintainOptions { expire: true, keep_last: Some(1), max_snapshot_age_ms: Some(0), ..Default::default() };
    h.call_object::<Catalog>("acme", CatalogRequest::Maintain { table: None, options: expire }).await.unwrap();
    let files = h.blobs().list("events/").await.unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let ids = lake_ids(&h).await;
    assert_eq!(ids.len(), 40);
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 40);
    assert_eq!(clock.now().as_millis(), T0 + 7_200_000);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lake_fills_the_bounded_outbox_without_blocking_appends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let vars = [("writer.outbox_max_events", "10"), ("writer.flush_max_events", "5")];
    let h = host(dir.path(), clock.clone(), &vars).await;
    // A plain file where the events folder must go: every put fails.
    let blocker = dir.path().join("lake").join("events");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a folder").unwrap();
    for round in 0..2 {
        let batch = (0..5).map(|i| event("acme", &format!("b{round}-{i}"), T0, "order.created")).collect();
        assert_eq!(append(&h, batch, None).await.stored, 5, "appends do not wait for the flush");
    }
    // The lake relay tried, failed, and the writer shows why.
    let start = std::time::Instant::now();
    let stats = loop {
        let WriterResponse::Stats(stats) = call(&h, WriterRequest::Stats).await else { panic!("stats") };
        if stats.consumer_errors.iter().any(|(c, _)| c == LAKE) {
            break stats;
        }
        assert!(start.elapsed().as_secs() < 10, "the lake relay reported its failure: {stats:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(stats.buffered, 10, "{stats:?}");
    // At the bound the shard refuses, and stores nothing of the refused batch.
    let over = WriterRequest::append("acme", &[event("acme", "over", T0, "order.created")], &[], None);
    let refused = h.call_object::<EventWriter>(&writer_name("acme", 0), over).await.unwrap_err();
    assert_eq!(refused.code, events_core::ErrorCode::ServiceUnavailable, "{refused}");
    // The fault clears: everything acknowledged reaches the lake once, and appends are taken again.
    std::fs::remove_file(&blocker).unwrap();
    flush(&h).await;
    assert_eq!(lake_ids(&h).await, (0..2).flat_map(|r| (0..5).map(move |i| format!("b{r}-{i}"))).collect::<Vec<_>>());
    let WriterResponse::Stats(stats) = call(&h, WriterRequest::Stats).await else { panic!("stats") };
    assert_eq!(stats.buffered, 0);
    assert!(stats.consumer_errors.iter().all(|(c, _)| c != LAKE), "{stats:?}");
    assert_eq!(append(&h, vec![event("acme", "after", T0, "order.created")], None).await.stored, 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_client_given_ids_take_a_dedup_entry() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), Arc::new(ManualClock::new(Timestamp(T0))), &[]).await;
    let events = vec![event("acme", "client-1", T0, "a"), event("acme", "01SERVERMADE", T0, "a")];
    let req = WriterRequest::append("acme", &events, &[false, true], None);
    let WriterResponse::Appended(first) = call(&h, req).await else { panic!("append") };
    assert_eq!(first.stored, 2);
    let WriterResponse::Stats(stats) = call(&h, WriterRequest::Stats).await else { panic!("stats") };
    assert_eq!(stats.dedup_entries, 1, "the server-made id needs no entry: {stats:?}");
    // A client resending its own id is still deduplicated.
    let again = append(&h, vec![event("acme", "client-1", T0, "a")], None).await;
    assert_eq!((again.stored, again.duplicates), (0, 1));
    flush(&h).await;
    assert_eq!(lake_ids(&h).await, ["01SERVERMADE", "client-1"]);
    h.shutdown().await;
}

fn outbox(response: WriterResponse) -> Vec<events_objects::outbox::OutboxEvent> {
    match response {
        WriterResponse::Rows { after, rows } => events_objects::outbox::decode_rows(&rows, after).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn stats(response: WriterResponse) -> events_objects::event_writer::WriterStats {
    match response {
        WriterResponse::Stats(s) => s,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_log_row_is_stored_whole_and_in_order() {
    use events_objects::event_writer::MAX_LOG_ROW_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), Arc::new(ManualClock::new(Timestamp(T0))), &[]).await;
    call(&h, WriterRequest::RegisterConsumer { name: "archive".into(), from_start: true }).await;
    // Three rows' worth of bytes in one append.
    let filler = "x".repeat(10_000);
    let count = 3 * MAX_LOG_ROW_BYTES / filler.len();
    let batch: Vec<Event> = (0..count)
        .map(|i| {
            let mut e = event("acme", &format!("big-{i:05}"), T0 + i as i64, "a");
            e.data.insert("filler".into(), serde_json::json!(filler));
            e
        })
        .collect();
    assert_eq!(append(&h, batch, None).await.stored, count);
    // Read in pages that end inside rows: every event once, in sequence order.
    let mut seen = Vec::new();
    loop {
        let page = outbox(call(&h, WriterRequest::ReadOutbox { consumer: "archive".into(), limit: 77 }).await);
        let Some(last) = page.last() else { break };
        call(&h, WriterRequest::AckOutbox { consumer: "archive".into(), upto: last.seq }).await;
        seen.extend(page.into_iter().map(|o| (o.seq, o.event.id)));
    }
    assert_eq!(seen.len(), count);
    assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1), "consecutive sequence numbers");
    assert_eq!(
        seen.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        (0..count).map(|i| format!("big-{i:05}")).collect::<Vec<_>>()
    );
    // Recent reads span the rows too, newest first.
    let recent = match call(&h, WriterRequest::Recent { filter: ReadFilter::default(), limit: 3 }).await {
        WriterResponse::Events(events) => events,
        other => panic!("{other:?}"),
    };
    let newest: Vec<String> = (count - 3..count).rev().map(|i| format!("big-{i:05}")).collect();
    assert_eq!(recent.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), newest);
    flush(&h).await;
    assert_eq!(lake_ids(&h).await.len(), count);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_reads_order_events_across_batches_by_time_not_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path(), Arc::new(ManualClock::new(Timestamp(T0))), &[]).await;
    // Client-given times arrive out of order across and within batches.
    append(&h, vec![event("acme", "e5", T0 + 5, "a"), event("acme", "e1", T0 + 1, "b")], None).await;
    append(&h, vec![event("acme", "e9", T0 + 9, "a"), event("acme", "e3", T0 + 3, "a")], None).await;
    append(&h, vec![event("acme", "e7", T0 + 7, "b")], None).await;
    let recent = |filter: ReadFilter, limit| {
        let h = h.clone();
        async move {
            match call(&h, WriterRequest::Recent { filter, limit }).await {
                WriterResponse::Events(events) => events.into_iter().map(|e| e.id).collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(recent(ReadFilter::default(), 10).await, ["e9", "e7", "e5", "e3", "e1"]);
    assert_eq!(recent(ReadFilter::default(), 2).await, ["e9", "e7"]);
    let typed = ReadFilter { pattern: Some("a".into()), ..ReadFilter::default() };
    assert_eq!(recent(typed, 10).await, ["e9", "e5", "e3"]);
    let window = ReadFilter { from: Some(Timestamp(T0 + 2)), to: Some(Timestamp(T0 + 7)), ..ReadFilter::default() };
    assert_eq!(recent(window, 10).await, ["e7", "e5", "e3"]);
    let page = ReadFilter { before: Some((Timestamp(T0 + 5), "e5".into())), ..ReadFilter::default() };
    assert_eq!(recent(page, 10).await, ["e3", "e1"]);
    h.shutdown().await;
}

/// Where the native host keeps an object's SQLite file.
fn object_db_path(data: &std::path::Path, class: &str, name: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    data.join("objects").join(class).join(&digest[..2]).join(format!("{}.sqlite", &digest[..40]))
}

/// Builds the database a writer at schema version 2 (one buffer row per
/// event, a `flushed` flag, AUTOINCREMENT sequence numbers) left behind.
fn write_version_2_writer(data: &std::path::Path, rows: &[(i64, &Event, bool)], cursors: &[(&str, i64)]) {
    use events_runtime::DurableObject;
    let path = object_db_path(data, EventWriter::CLASS, &writer_name("acme", 0));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(events_runtime::migrate::SYSTEM_MIGRATIONS).unwrap();
    for m in &EventWriter::migrations()[..2] {
        db.execute_batch(m.sql).unwrap();
        db.execute(
            "INSERT INTO _migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.version, m.name, T0],
        )
        .unwrap();
    }
    for (seq, event, flushed) in rows {
        let body = serde_json::to_string(event).unwrap();
        db.execute(
            "INSERT INTO buffer (seq, ts, bytes, body, flushed, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![seq, event.ts.as_millis(), body.len() as i64, body, *flushed as i64, T0],
        )
        .unwrap();
    }
    for (name, cursor) in cursors {
        db.execute(
            "INSERT INTO consumers (name, cursor, registered_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![name, cursor, T0],
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_buffer_upgrades_to_batch_rows_without_losing_or_repeating_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (1..=6).map(|i| event("acme", &format!("old{i}"), T0, "a")).collect();
    // Rows 1-2 were flushed and trimmed, 3 is flushed but kept for "archive", 4-6 wait for the flush.
    let rows: Vec<(i64, &Event, bool)> = (3..=6).map(|seq| (seq, &events[seq as usize - 1], seq == 3)).collect();
    write_version_2_writer(dir.path(), &rows, &[("subscriptions", 6), ("cdc", 6), ("archive", 2)]);
    let h = host(dir.path(), Arc::new(ManualClock::new(Timestamp(T0))), &[]).await;
    let s = stats(call(&h, WriterRequest::Stats).await);
    assert_eq!((s.buffered, s.retained, s.last_seq), (3, 1, 6), "{s:?}");
    let read = outbox(call(&h, WriterRequest::ReadOutbox { consumer: "archive".into(), limit: 100 }).await);
    assert_eq!(
        read.iter().map(|o| (o.seq, o.event.id.as_str())).collect::<Vec<_>>(),
        [(3, "old3"), (4, "old4"), (5, "old5"), (6, "old6")]
    );
    // Only the unflushed rows go to the lake, in a file named by their first sequence number.
    let files = flush(&h).await;
    assert!(!files.is_empty() && files.iter().all(|f| f.ends_with(&format!("-{:016}.parquet", 4))), "{files:?}");
    assert_eq!(lake_ids(&h).await, ["old4", "old5", "old6"]);
    // New events continue the sequence.
    append(&h, vec![event("acme", "new7", T0, "a"), event("acme", "new8", T0, "a")], None).await;
    call(&h, WriterRequest::AckOutbox { consumer: "archive".into(), upto: 6 }).await;
    let read = outbox(call(&h, WriterRequest::ReadOutbox { consumer: "archive".into(), limit: 100 }).await);
    assert_eq!(read.iter().map(|o| (o.seq, o.event.id.as_str())).collect::<Vec<_>>(), [(7, "new7"), (8, "new8")]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_version_2_buffer_never_reuses_a_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    // Everything up to 9 was flushed, read by every consumer and trimmed.
    write_version_2_writer(dir.path(), &[], &[("subscriptions", 9), ("cdc", 9)]);
    let h = host(dir.path(), Arc::new(ManualClock::new(Timestamp(T0))), &[]).await;
    append(&h, vec![event("acme", "next", T0, "a")], None).await;
    assert_eq!(stats(call(&h, WriterRequest::Stats).await).last_seq, 10);
    let files = flush(&h).await;
    assert!(
        !files.is_empty() && files.iter().all(|f| f.ends_with(&format!("-{:016}.parquet", 10))),
        "a new file key, never an old one: {files:?}"
    );
    h.shutdown().await;
}
