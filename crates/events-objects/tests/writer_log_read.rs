//! `WriterRequest::ReadLog`: reading a writer's log from a position the
//! reader keeps itself (the live tail), on the native host with real SQLite.

use std::sync::Arc;

use events_core::{Event, Timestamp};
use events_host_native::{HostConfig, ManualClock, NativeHost};
use events_objects::event_writer::{WriterRequest, WriterResponse, flush_writer, writer_name};
use events_objects::outbox::{CONSUMERS, OutboxRow, decode_rows};
use events_objects::{Catalog, EventWriter, OutboxRelay};

const T0: i64 = 1_800_000_000_000;

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        ns: "acme".into(),
        ts: Timestamp(T0),
        event_type: "a.b".into(),
        source: None,
        data: Default::default(),
    }
}

async fn call(host: &NativeHost, req: WriterRequest) -> WriterResponse {
    host.call_object::<EventWriter>(&writer_name("acme", 0), req).await.unwrap()
}

async fn read_log(host: &NativeHost, after: u64, limit: usize) -> (u64, Vec<OutboxRow>) {
    match call(host, WriterRequest::ReadLog { after, limit }).await {
        WriterResponse::Log { last_seq, rows } => (last_seq, rows),
        other => panic!("{other:?}"),
    }
}

fn ids(rows: &[OutboxRow], after: u64) -> Vec<(u64, String)> {
    decode_rows(rows, after).unwrap().into_iter().map(|o| (o.seq, o.event.id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reads_after_its_own_position_and_sees_rows_that_left_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HostConfig::new(dir.path());
    config.threads = 1;
    config.clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let host = NativeHost::start(config).unwrap();
    host.register::<EventWriter>().register::<OutboxRelay>().register::<Catalog>();

    assert_eq!(read_log(&host, 0, 10).await.0, 0, "an empty log");
    for batch in [&["a", "b", "c"][..], &["d"], &["e", "f"]] {
        let events: Vec<_> = batch.iter().map(|id| event(id)).collect();
        call(&host, WriterRequest::append("acme", &events, &[], None)).await;
    }
    // Whole rows; a position inside a row skips what the reader already has.
    let (last, rows) = read_log(&host, 0, 100).await;
    assert_eq!(last, 6);
    assert_eq!(ids(&rows, 0).len(), 6);
    let (_, rows) = read_log(&host, 2, 100).await;
    assert_eq!(ids(&rows, 2), [(3, "c".into()), (4, "d".into()), (5, "e".into()), (6, "f".into())]);
    // A limit stops after the row that reaches it; 0 answers only the last number.
    let (_, rows) = read_log(&host, 0, 2).await;
    assert_eq!(rows.len(), 1, "the first row holds 3 events");
    let (last, rows) = read_log(&host, 0, 0).await;
    assert_eq!((last, rows.len()), (6, 0));
    assert!(read_log(&host, 6, 100).await.1.is_empty());

    // Reading registers nothing and holds nothing back: once flushed and taken
    // by every consumer, the rows go, and a reader at 2 sees that 3.. are gone.
    flush_writer(&host, &writer_name("acme", 0)).await.unwrap();
    for consumer in CONSUMERS {
        call(&host, WriterRequest::AckOutbox { consumer: consumer.to_string(), upto: 4 }).await;
    }
    // (The relays may have taken all six meanwhile: then no row is left.)
    let (last, rows) = read_log(&host, 2, 100).await;
    assert_eq!(last, 6);
    let first = rows.first().map_or(last + 1, OutboxRow::first_seq);
    assert!(first >= 5, "rows up to 4 left the log, so the reader sees a gap after 2: {first}");
    let WriterResponse::Stats(stats) = call(&host, WriterRequest::Stats).await else { panic!("stats") };
    assert_eq!(stats.consumers.len(), CONSUMERS.len(), "no consumer was registered by reading");
    host.shutdown().await;
}
