//! Ingest never waits for a consumer. A webhook receiver that answers after
//! 5 s, one that never answers, and a lake that cannot be written leave
//! `POST /e` answering 200 to every batch within a 2 s client timeout; the
//! events wait in the outbox and reach the receivers and the lake once the
//! fault clears.
//!
//! The latencies are printed (for BENCHMARKS.md), never asserted.

mod receiver;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use events_e2e::serde_json::{Value, json};
use events_e2e::*;
use receiver::{Answer, Receiver, ok};

/// 100 batches of 100 events: 10,000 events.
const BATCHES: usize = 100;
const BATCH_SIZE: usize = 100;
/// Every batch must be answered within this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for the backlog to drain once the fault cleared.
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);

/// Sends the batches one after another with [`CLIENT_TIMEOUT`]; every one
/// must get 200. Answers the ids sent.
async fn ingest_under_fault(server: &TestServer, auth: &Auth, label: &str) -> Vec<String> {
    let client = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build().unwrap();
    let mut ids = Vec::with_capacity(BATCHES * BATCH_SIZE);
    let mut latencies = Vec::with_capacity(BATCHES);
    for b in 0..BATCHES {
        let events: Vec<Value> =
            (0..BATCH_SIZE).map(|i| event("order.created", &format!("{label}-{b:03}-{i:03}"))).collect();
        ids.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        let started = Instant::now();
        let request = auth.apply(client.post(server.url("/e")).json(&json!({ "events": events })));
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{label}: batch {b} got no answer within {CLIENT_TIMEOUT:?}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{label}: batch {b} was refused: {body}");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    eprintln!(
        "{label}: {BATCHES} batches of {BATCH_SIZE}: ack p50 {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        latencies.last().unwrap()
    );
    ids
}

/// The ids each receiver got with a 2xx answer, deduplicated.
fn delivered_set(rx: &Receiver) -> std::collections::BTreeSet<String> {
    rx.delivered().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_receivers_do_not_slow_ingest() {
    if skip_on_external_without("outbound-loopback", "needs [outbound] allow for a loopback receiver") {
        return;
    }
    let server = TestServer::start_with(ServerOptions::new().toml("[outbound]\nallow = [\"127.0.0.0/8\"]")).await;
    let ns = unique_ns("bulkhead");
    let auth = server.admin_for(&ns);
    let fault = Arc::new(AtomicBool::new(true));
    let slow_fault = fault.clone();
    // Answers 200 after 5 s while the fault lasts.
    let slow = Receiver::start(move |_, _| {
        if slow_fault.load(Ordering::SeqCst) { Answer { delay: Duration::from_secs(5), ..ok() } } else { ok() }
    })
    .await;
    let silent_fault = fault.clone();
    // Never answers while the fault lasts (the attempt times out).
    let silent = Receiver::start(move |_, _| {
        if silent_fault.load(Ordering::SeqCst) { Answer { delay: Duration::from_secs(3_600), ..ok() } } else { ok() }
    })
    .await;
    // Retries keep going long enough to outlast the fault.
    let schedule = json!([0, 500, 1000, 2000, 4000, 8000, 15000, 30000, 30000, 30000]);
    for (rx, timeout) in [(&slow, 15_000), (&silent, 2_000)] {
        let body =
            json!({"pattern": "order.*", "url": rx.url("/hook"), "timeoutMs": timeout, "retrySchedule": schedule});
        server.post_json("/subscriptions", &auth, &body).await.expect(201);
    }

    let ids = ingest_under_fault(&server, &auth, "receivers").await;
    // The backlog is visible while it lasts.
    let metrics = server.get("/metrics", &server.admin()).await;
    assert!(metrics.text.contains("events_outbox_backlog"), "{}", metrics.text);
    let shards = server.get("/admin/shards", &server.admin()).await;
    let view = shards.expect(200)["namespaces"].as_array().unwrap().iter().find(|v| v["namespace"] == ns).cloned();
    let outbox = view.expect("the namespace's layout")["outbox"].clone();
    assert!(outbox[0]["backlog"].get("subscriptions").is_some(), "{outbox}");

    fault.store(false, Ordering::SeqCst);
    let want: std::collections::BTreeSet<String> = ids.into_iter().collect();
    for (name, rx) in [("slow", &slow), ("silent", &silent)] {
        rx.wait_within(&format!("every event at the {name} receiver"), DRAIN_DEADLINE, |_| {
            delivered_set(rx).is_superset(&want)
        })
        .await;
        assert_eq!(delivered_set(rx), want, "{name}: exactly the ingested events (duplicates allowed)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_lake_does_not_slow_ingest() {
    if skip_on_external("makes the server's lake folder unwritable") {
        return;
    }
    // Small flushes, so that many are attempted while the lake fails.
    let server = TestServer::start_with(ServerOptions::new().toml("[writer]\nflush_max_events = 500")).await;
    let ns = unique_ns("bulkhead");
    let auth = server.admin_for(&ns);
    // A plain file where the events table's folder must go: every put fails
    // (the tests run as root, which permission bits would not stop).
    let lake = server.lake_dir();
    std::fs::create_dir_all(&lake).unwrap();
    let blocker = lake.join("events");
    std::fs::write(&blocker, b"not a folder").unwrap();

    let ids = ingest_under_fault(&server, &auth, "lake").await;
    let flush = server.post_json("/admin/flush", &server.admin(), &json!({})).await;
    assert_ne!(flush.status, 200, "a flush into an unwritable lake fails: {}", flush.text);

    std::fs::remove_file(&blocker).unwrap();
    server.post_json("/admin/flush", &server.admin(), &json!({})).await.expect(200);
    let read = read_parquet(&lake, false);
    let mut stored: Vec<String> = read.ids.iter().filter(|id| id.starts_with("lake-")).cloned().collect();
    stored.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(stored, want, "every acknowledged event is in the lake exactly once");
}
