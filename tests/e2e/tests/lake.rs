//! The Parquet lake as another tool sees it: files under
//! `<data_dir>/lake/events/ns=<ns>/date=YYYY-MM-DD/hour=HH/`, read with pyarrow.
//!
//! Against an external server (`EVENTS_TEST_BASE_URL`), the tests that need
//! no server configuration of their own read a copy of its bucket (the
//! `lake-export` capability); the others say why they skip.

use std::time::{Duration, Instant};

use events_e2e::{
    DEADLINE, LakeRead, ServerOptions, TestServer, event, iso_at_offset, parquet_files, read_parquet,
    require_python_modules, skip_on_external, skip_on_external_without, unique_ns,
};
use serde_json::{Value, json};

/// Skips against an external server that cannot export its lake.
fn skip_without_lake_export() -> bool {
    skip_on_external_without("lake-export", "reads the lake's files")
}

/// The columns of every event file and their Arrow types, as pyarrow prints them.
const EXPECTED_COLUMNS: &[(&str, &str)] = &[
    ("id", "string"),
    ("ns", "string"),
    ("ts", "timestamp[us, tz=UTC]"),
    ("type", "string"),
    ("source", "string"),
    ("data", "string"),
    ("user_id", "string"),
    ("session_id", "string"),
    ("collection", "string"),
    ("doc_id", "string"),
    ("provider", "string"),
    ("url", "string"),
    ("status_code", "int32"),
    ("duration_ms", "double"),
];

/// Polls the lake (files appear, then pyarrow reads them) until every id of
/// `ids` is there, or the deadline passes; returns the last read.
/// The lake as it is now, as a directory: the server's own lake, or for an
/// external server (shared with other tests) a copy of its bucket reduced to
/// namespace `ns`, so other tests' files and schemas do not mix in.
fn lake_of(server: &mut TestServer, ns: &str) -> std::path::PathBuf {
    let dir = server.lake_snapshot();
    if server.is_external() {
        let remove = |path: std::path::PathBuf| {
            let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            gone.unwrap_or_else(|e| panic!("removing {} from the lake copy: {e}", path.display()));
        };
        // Other tests' CDC files and other namespaces' event files.
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name() != "events" {
                remove(entry.path());
            }
        }
        let keep = format!("ns={ns}");
        for entry in std::fs::read_dir(dir.join("events")).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy() != keep.as_str() {
                remove(entry.path());
            }
        }
    }
    dir
}

async fn wait_for_lake(server: &mut TestServer, ns: &str, ids: &[&str]) -> LakeRead {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let dir = lake_of(server, ns);
        let files = parquet_files(&dir);
        if !files.is_empty() {
            let read = read_parquet(&dir, true);
            let in_ns: Vec<&Value> = read.rows.iter().filter(|r| r["ns"] == ns).collect();
            if ids.iter().all(|id| in_ns.iter().any(|r| r["id"] == *id)) || Instant::now() > deadline {
                return read;
            }
        } else if Instant::now() > deadline {
            panic!("no .parquet file under {} after {DEADLINE:?}\n{}", dir.display(), server.stderr_log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rows_of<'a>(read: &'a LakeRead, ns: &str) -> Vec<&'a Value> {
    read.rows.iter().filter(|r| r["ns"] == ns).collect()
}

fn ms_of(iso: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso).unwrap().timestamp_millis()
}

#[tokio::test]
async fn flushed_events_are_typed_parquet_rows() {
    if skip_without_lake_export() {
        return;
    }
    require_python_modules(&["pyarrow"]);
    let mut server = TestServer::start_with(ServerOptions::new().toml("[writer]\nflush_max_age_ms = 3600000")).await;
    let key = server.create_key(&unique_ns("lake")).await;
    let ns = key.namespace.clone();
    let ts_http = iso_at_offset(-90_000);
    let ts_doc = iso_at_offset(-30_000);
    let events = vec![
        json!({"type": "http.request", "ts": ts_http, "id": "l-http", "source": "edge",
               "url": "https://example.com/a?b=1", "statusCode": 503, "durationMs": 12.75,
               "userId": "u-1", "sessionId": "s-1", "method": "GET"}),
        json!({"type": "doc.updated", "ts": ts_doc, "id": "l-doc", "collection": "posts", "docId": "p-9",
               "provider": "mongo", "actor": {"id": "u-2"}, "changes": {"title": ["a", "b"]}}),
        json!({"type": "plain", "ts": ts_doc, "id": "l-plain", "statusCode": "200", "n": 1}),
    ];
    server.ingest_ok(&key.auth(), &events).await;
    let files = server.admin_flush().await;
    let ours: Vec<&String> = files.iter().filter(|f| f.contains(&format!("ns={ns}/"))).collect();
    // An external server is shared (its flush also writes other tests' namespaces)
    // and keeps its own flush age (its alarm may have flushed ours first).
    if !server.is_external() {
        assert!(!ours.is_empty(), "POST /admin/flush wrote no file");
        assert_eq!(ours.len(), files.len(), "files of other namespaces: {files:?}");
    }
    for f in &ours {
        assert!(f.ends_with(".parquet"), "unexpected file key {f:?}");
    }

    let read = wait_for_lake(&mut server, &ns, &["l-http", "l-doc", "l-plain"]).await;
    let cols: Vec<(&str, &str)> = read.columns.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    assert_eq!(&cols[..EXPECTED_COLUMNS.len()], EXPECTED_COLUMNS, "fixed columns and Arrow types");
    // Then the scalar top-level data fields of the flush, as typed columns
    // (schema evolution; names of fixed columns such as `url` are not repeated).
    assert_eq!(
        &cols[EXPECTED_COLUMNS.len()..],
        &[
            ("docId", "string"),
            ("durationMs", "double"),
            ("method", "string"),
            ("n", "int32"),
            ("sessionId", "string"),
            ("statusCode", "int32"),
            ("userId", "string"),
        ],
        "data columns"
    );
    assert!(read.schemas_agree, "every file has the same schema");
    let rows = rows_of(&read, &ns);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(read.row_count, read.ids.len());

    let row = |id: &str| *rows.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("{id} missing: {rows:?}"));
    let data =
        |r: &Value| -> Value { serde_json::from_str(r["data"].as_str().expect("data is text")).expect("data is JSON") };

    let http = row("l-http");
    assert_eq!(http["type"], "http.request");
    assert_eq!(http["ns"], ns.as_str());
    assert_eq!(http["ts_ms"], ms_of(&ts_http));
    assert_eq!(http["source"], "edge");
    assert_eq!(http["url"], "https://example.com/a?b=1");
    assert_eq!(http["status_code"], 503);
    assert_eq!(http["duration_ms"], 12.75);
    assert_eq!(http["user_id"], "u-1");
    assert_eq!(http["session_id"], "s-1");
    assert_eq!(http["collection"], Value::Null);
    assert_eq!(
        data(http),
        json!({"url": "https://example.com/a?b=1", "statusCode": 503, "durationMs": 12.75,
               "userId": "u-1", "sessionId": "s-1", "method": "GET"}),
        "data holds every field but id, ns, ts, type and source"
    );

    let doc = row("l-doc");
    assert_eq!(doc["collection"], "posts");
    assert_eq!(doc["doc_id"], "p-9");
    assert_eq!(doc["provider"], "mongo");
    assert_eq!(doc["user_id"], "u-2", "user_id from actor.id");
    assert_eq!(doc["source"], Value::Null);
    assert_eq!(doc["status_code"], Value::Null);
    assert_eq!(data(doc)["changes"], json!({"title": ["a", "b"]}));

    let plain = row("l-plain");
    assert_eq!(plain["status_code"], Value::Null, "a string statusCode is not an int32");
    assert_eq!(plain["statusCode"], Value::Null, "nor in the data column");
    assert_eq!(http["statusCode"], 503);
    assert_eq!(data(plain), json!({"statusCode": "200", "n": 1}));

    // Each row sits in the partition of its own UTC hour.
    for r in &rows {
        let ts = chrono::DateTime::from_timestamp_millis(r["ts_ms"].as_i64().unwrap()).unwrap();
        let dir = format!("events/ns={ns}/date={}/hour={}/", ts.format("%Y-%m-%d"), ts.format("%H"));
        let file = r["_file"].as_str().unwrap();
        assert!(file.starts_with(&dir), "{} is in {file}, expected under {dir}", r["id"]);
    }
}

#[tokio::test]
async fn writer_flushes_after_max_age() {
    // An external server flushes at its own age (the Worker's test run sets 2 s).
    if skip_without_lake_export() {
        return;
    }
    require_python_modules(&["pyarrow"]);
    let mut server = TestServer::start_with(ServerOptions::new().toml("[writer]\nflush_max_age_ms = 200")).await;
    let key = server.create_key(&unique_ns("age")).await;
    server.ingest_ok(&key.auth(), &[event("a.b", "age-1"), event("a.b", "age-2")]).await;
    // No admin flush: the age alone must get the events into a file.
    let read = wait_for_lake(&mut server, &key.namespace, &["age-1", "age-2"]).await;
    let mut ids: Vec<&str> = rows_of(&read, &key.namespace).iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec!["age-1", "age-2"]);
}

#[tokio::test]
async fn writer_flushes_after_max_events() {
    if skip_on_external("needs [writer] flush_max_events = 10 in the server config") {
        return;
    }
    require_python_modules(&["pyarrow"]);
    let mut server = TestServer::start_with(
        ServerOptions::new().toml("[writer]\nflush_max_age_ms = 3600000\nflush_max_events = 10"),
    )
    .await;
    let key = server.create_key(&unique_ns("count")).await;
    let events: Vec<Value> = (0..10).map(|i| event("a.b", &format!("cnt-{i}"))).collect();
    server.ingest_ok(&key.auth(), &events).await;
    let want: Vec<String> = (0..10).map(|i| format!("cnt-{i}")).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    let read = wait_for_lake(&mut server, &key.namespace, &want).await;
    let mut ids: Vec<&str> = rows_of(&read, &key.namespace).iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn sigterm_flushes_the_buffer() {
    // A Worker is never shut down with a volatile buffer: its buffer is Durable Object storage.
    if skip_on_external("sends SIGTERM to the server process") {
        return;
    }
    require_python_modules(&["pyarrow"]);
    let mut server = TestServer::start_with(ServerOptions::new().toml("[writer]\nflush_max_age_ms = 3600000")).await;
    let key = server.create_key(&unique_ns("term")).await;
    server.ingest_ok(&key.auth(), &[event("a.b", "term-1"), event("a.b", "term-2")]).await;
    server.terminate().await;
    // The process has exited: whatever is in the lake now is all there is.
    let read = read_parquet(&server.lake_dir(), true);
    let mut ids: Vec<&str> = rows_of(&read, &key.namespace).iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec!["term-1", "term-2"], "files: {:?}\n{}", read.files, server.stderr_log());
}

#[tokio::test]
async fn flushing_twice_writes_each_event_once() {
    if skip_without_lake_export() {
        return;
    }
    require_python_modules(&["pyarrow"]);
    let mut server = TestServer::start_with(ServerOptions::new().toml("[writer]\nflush_max_age_ms = 3600000")).await;
    let key = server.create_key(&unique_ns("twice")).await;
    server.ingest_ok(&key.auth(), &[event("a.b", "t-1")]).await;
    server.admin_flush().await;
    server.ingest_ok(&key.auth(), &[event("a.b", "t-2")]).await;
    server.admin_flush().await;
    // Nothing buffered: a third flush writes no file for this namespace.
    let files = server.admin_flush().await;
    assert!(files.iter().all(|f| !f.contains(&format!("ns={}/", key.namespace))), "empty flush wrote {files:?}");
    let read = read_parquet(&lake_of(&mut server, &key.namespace), false);
    let counts = read.id_counts();
    assert_eq!((counts.get("t-1"), counts.get("t-2")), (Some(&1), Some(&1)), "{counts:?}");
}
