//! A restart of the runtime loses nothing: object state (keys, accepted
//! events, batch ids, schemas) and a pending alarm (the writer's timed flush)
//! survive a SIGKILL, and the flush the alarm runs after the restart writes
//! Parquet files that pyarrow reads, in the lake layout
//! `events/ns=<ns>/date=YYYY-MM-DD/hour=HH/<file>.parquet`.
//!
//! Runs against the local binary and against an external server with the
//! `restart` capability (the Cloudflare Worker under workerd: see
//! `scripts/worker.sh test`); the lake check also needs `lake-export` there.
//! Test names contain `restart`, so that runner can give them the runtime alone.

use std::time::{Duration, Instant};

use events_e2e::{
    DEADLINE, ServerOptions, TestServer, event, parquet_files, read_parquet, require_python_modules,
    skip_on_external_without, sorted_ids, unique_ns,
};
use serde_json::{Value, json};

/// The writer's flush age for these tests (the Worker's test run sets the same).
const FLUSH_MAX_AGE_MS: u64 = 2_000;

async fn server() -> TestServer {
    TestServer::start_with(ServerOptions::new().toml(&format!("[writer]\nflush_max_age_ms = {FLUSH_MAX_AGE_MS}"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_state_survives_a_runtime_restart() {
    if skip_on_external_without("restart", "restarts the runtime") {
        return;
    }
    let mut server = server().await;
    let key = server.create_key(&unique_ns("restart")).await;
    let ns = key.namespace.clone();
    let auth = key.auth();
    let schema = json!({"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}});
    let r = server.post_json(&format!("/schemas/{ns}"), &auth, &json!({"type": "order.paid", "schema": schema})).await;
    r.expect(201);
    let mut paid = event("order.paid", "o1");
    paid["amount"] = json!(10);
    let batch = json!({"batchId": "restart-batch-1", "events": [paid, event("page.view", "p1")]});
    let first = server.post_json("/e", &auth, &batch).await;
    first.expect(200);
    let first_events = server.read_all(&auth, "").await;
    assert_eq!(sorted_ids(&first_events), ["o1", "p1"]);

    server.restart().await;

    // The key still authenticates, and the acknowledged events are all there.
    assert_eq!(sorted_ids(&server.read_all(&auth, "").await), ["o1", "p1"]);
    // The batch id is remembered: a replay is not stored again.
    let replay = server.post_json("/e", &auth, &batch).await;
    assert_eq!(replay.expect(200)["deduplicated"], true, "{}", replay.text);
    // The schema is still enforced (strict is the default mode).
    let bad = server.ingest(&auth, &[json!({"type": "order.paid", "id": "o2", "amount": "ten"})]).await;
    bad.expect_error(400, "SCHEMA_VALIDATION_ERROR");
    assert_eq!(sorted_ids(&server.read_all(&auth, "").await), ["o1", "p1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_flush_alarm_survives_a_runtime_restart_and_writes_parquet() {
    if skip_on_external_without("restart", "restarts the runtime")
        || skip_on_external_without("lake-export", "reads the lake's files")
    {
        return;
    }
    require_python_modules(&["pyarrow"]);
    let mut server = server().await;
    let ns = unique_ns("alarm");
    let auth = server.admin_for(&ns);
    let ids: Vec<String> = (0..20).map(|i| format!("alarm-{i:02}")).collect();
    let events: Vec<Value> = ids.iter().map(|id| json!({"type": "sensor.read", "id": id, "value": 1.5})).collect();
    server.ingest_ok(&auth, &events).await;
    // Down before the flush is due: only the stored alarm can flush these events.
    server.kill();
    tokio::time::sleep(Duration::from_millis(FLUSH_MAX_AGE_MS + 500)).await;
    server.restart().await;

    let prefix = format!("events/ns={ns}/");
    let deadline = Instant::now() + DEADLINE;
    let (dir, files) = loop {
        let dir = server.lake_snapshot();
        let files: Vec<String> = parquet_files(&dir).into_iter().filter(|f| f.starts_with(&prefix)).collect();
        if !files.is_empty() {
            break (dir, files);
        }
        assert!(Instant::now() < deadline, "no Parquet file under {prefix} within {DEADLINE:?} of the restart");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for f in &files {
        let parts: Vec<&str> = f.split('/').collect();
        assert_eq!(parts.len(), 5, "{f}");
        assert!(
            parts[2].starts_with("date=") && parts[3].starts_with("hour=") && parts[4].ends_with(".parquet"),
            "{f}"
        );
    }
    let read = read_parquet(&dir.join(format!("events/ns={ns}")), true);
    let mut got = read.ids.clone();
    got.sort();
    assert_eq!(got, ids, "each event exactly once");
    assert!(read.columns.iter().any(|(name, ty)| name == "ts" && ty.starts_with("timestamp[us")), "{:?}", read.columns);
    assert!(read.rows.iter().all(|r| r["ns"] == ns && r["type"] == "sensor.read"), "{:?}", read.rows);
}
