//! EventWriter behaviour on the native host, with real SQLite and a real local bucket.

use std::sync::Arc;

use events_core::{Event, Timestamp};
use events_host_native::{Clock, HostConfig, ManualClock, NativeHost};
use events_objects::catalog::{CatalogRequest, CatalogResponse, MaintainOptions};
use events_objects::event_writer::{Appended, ReadFilter, WriterRequest, WriterResponse, writer_name};
use events_objects::fanout::LAKE;
use events_objects::outbox_relay::{RelayRequest, RelayResponse, flush_writer, relay_name};
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
    match call(host, WriterRequest::Append { events, batch_id: batch.map(str::to_string), server_ids: Vec::new() })
        .await
    {
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
            WriterResponse::Outbox(o) => o,
            other => panic!("{other:?}"),
        }
    };
    let first = read(h.clone()).await;
    assert_eq!(first.iter().map(|o| o.event.id.as_str()).collect::<Vec<_>>(), ["o0", "o1", "o2"]);
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
    let over = WriterRequest::Append {
        events: vec![event("acme", "over", T0, "order.created")],
        batch_id: None,
        server_ids: Vec::new(),
    };
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
    let req = WriterRequest::Append { events: events.clone(), batch_id: None, server_ids: vec![false, true] };
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
