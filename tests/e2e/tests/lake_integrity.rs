//! The lake keeps what it acknowledged, and says so when it cannot:
//! orphan cleanup running during ingest deletes no file a flush has yet to
//! commit, destructive maintenance settings need the admin token, and a data
//! file missing from the lake fails SQL and reads with `DATA_FILE_MISSING`
//! instead of reading as empty.
//!
//! Every test here reads or changes the server's local lake, so none runs
//! against an external server (`EVENTS_TEST_BASE_URL`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use events_e2e::{
    Auth, ServerOptions, TestServer, iso_now, python, require_python_modules, run_py_json, skip_on_external, unique_ns,
};
use serde_json::{Value, json};

const EXTERNAL: &str = "reads and changes the server's local lake";

/// Batches sent while maintenance runs.
const BATCHES: usize = 60;
/// Events per batch.
const BATCH_EVENTS: usize = 10;
/// Most maintenance calls while the batches are sent.
const MAX_MAINTENANCE_RUNS: usize = 1_000;

fn event(id: &str) -> Value {
    json!({ "type": "order.placed", "ts": iso_now(), "id": id, "amount": 1 })
}

/// Every id of `SELECT id FROM events`, sorted, repeats kept.
async fn sql_ids(server: &TestServer, auth: &Auth) -> Vec<String> {
    let r = server.post_json("/query", auth, &json!({ "sql": "SELECT id FROM events ORDER BY id" })).await;
    let rows = r.expect(200).as_array().unwrap_or_else(|| panic!("not an array: {}", r.text)).clone();
    rows.iter().map(|row| row["id"].as_str().unwrap().to_string()).collect()
}

fn pyiceberg_available() -> bool {
    std::process::Command::new(python())
        .args(["-c", "import pyiceberg, pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_cleanup_during_ingest_loses_no_acknowledged_event() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    // Small flushes, often: many files are between their put and their commit.
    let server = Arc::new(
        TestServer::start_with(ServerOptions::new().toml(
            "[ingest]\nrequests_per_minute = 1000000\nevents_per_minute = 1000000000\n\n\
             [writer]\nflush_max_events = 5\nflush_max_age_ms = 20\n",
        ))
        .await,
    );
    let ns = unique_ns("orphans");
    let key = server.create_key(&ns).await;
    let auth = key.auth();

    // A namespace key may not ask for destructive settings; the admin may.
    let r = server.post_json("/tables/maintain", &auth, &json!({ "orphanMinAgeMs": 0 })).await;
    let details = r.expect_error(403, "FORBIDDEN");
    assert!(r.text.contains("orphanMinAgeMs"), "{} {details}", r.text);
    let r = server.post_json("/tables/maintain", &auth, &json!({ "maxSnapshotAgeMs": 0 })).await;
    r.expect_error(403, "FORBIDDEN");
    let r = server.post_json("/tables/maintain", &auth, &json!({ "keepLast": 1 })).await;
    r.expect_error(403, "FORBIDDEN");
    let r = server.post_json("/tables/maintain", &auth, &json!({ "orphanMinAgeMs": 86_400_000 })).await;
    r.expect(200);

    let done = Arc::new(AtomicBool::new(false));
    let maintenance = {
        let (server, done, admin) = (server.clone(), done.clone(), server.admin_for(&ns));
        tokio::spawn(async move {
            let (mut runs, mut deleted) = (0, 0);
            while !done.load(Ordering::SeqCst) && runs < MAX_MAINTENANCE_RUNS {
                let r = server.post_json("/tables/maintain", &admin, &json!({ "orphanMinAgeMs": 0 })).await;
                let body = r.expect(200);
                deleted += body["reports"]
                    .as_array()
                    .map_or(0, |reports| reports.iter().map(|t| t["orphans_deleted"].as_array().unwrap().len()).sum());
                runs += 1;
            }
            (runs, deleted)
        })
    };
    let mut acknowledged = Vec::new();
    for b in 0..BATCHES {
        let batch: Vec<Value> = (0..BATCH_EVENTS).map(|i| event(&format!("b{b:03}-{i:02}"))).collect();
        let r = server.ingest(&auth, &batch).await;
        match r.status {
            200 => acknowledged.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string())),
            // Only a busy server may refuse a batch; it then acknowledged none of it.
            429 | 503 => {}
            other => panic!("ingest answered {other}: {}", r.text),
        }
        if b % 7 == 0 {
            server.admin_flush().await;
        }
    }
    done.store(true, Ordering::SeqCst);
    let (runs, deleted) = maintenance.await.unwrap();
    eprintln!("{runs} maintenance runs deleted {deleted} orphans during ingest");
    assert!(runs > 0);
    server.admin_flush().await;
    acknowledged.sort();
    assert!(!acknowledged.is_empty(), "no batch was acknowledged");

    // Cleanup once more, now that nothing is in flight: still nothing lost.
    let r = server.post_json("/tables/maintain", &server.admin_for(&ns), &json!({ "orphanMinAgeMs": 0 })).await;
    r.expect(200);

    let found = sql_ids(&server, &auth).await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &found {
        *counts.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !counts.contains_key(id.as_str())).collect();
    let repeated: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "acknowledged but not in SQL: {missing:?}");
    assert!(repeated.is_empty(), "in SQL more than once: {repeated:?}");
    assert_eq!(found, acknowledged, "SQL holds exactly the acknowledged ids");

    // An independent reader of the Iceberg table's current snapshot agrees.
    if pyiceberg_available() {
        require_python_modules(&["pyiceberg", "pyarrow"]);
        let v = run_py_json("iceberg_client.py", &["ids", server.base_url(), &key.key, &ns]);
        assert_eq!(v["ids"], json!(acknowledged), "PyIceberg reads exactly the acknowledged ids once");
    } else {
        eprintln!("skipping the PyIceberg check: pyiceberg is not installed for {}", python());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_file_missing_from_the_lake_fails_sql_and_reads() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    let server = TestServer::start_with(ServerOptions::new().toml("[writer]\nflush_max_age_ms = 3600000")).await;
    let ns = unique_ns("missing");
    let key = server.create_key(&ns).await;
    let auth = key.auth();
    let mut files = Vec::new();
    for round in 0..3 {
        let batch: Vec<Value> = (0..4).map(|i| event(&format!("r{round}-{i}"))).collect();
        server.ingest_ok(&auth, &batch).await;
        files.extend(server.admin_flush().await.into_iter().filter(|f| f.contains(&format!("ns={ns}/"))));
    }
    assert_eq!(files.len(), 3, "{files:?}");
    let r = server.post_json("/query", &auth, &json!({ "sql": "SELECT count(*) AS n FROM events" })).await;
    assert_eq!(r.expect(200), &json!([{ "n": 12 }]));
    assert_eq!(server.read_all(&auth, "").await.len(), 12);

    // One committed file disappears behind the server's back.
    let gone = &files[1];
    std::fs::remove_file(server.lake_dir().join(gone)).unwrap();

    let r = server.post_json("/query", &auth, &json!({ "sql": "SELECT count(*) AS n FROM events" })).await;
    let details = r.expect_error(500, "DATA_FILE_MISSING");
    assert_eq!(details["key"], json!(gone), "{}", r.text);
    assert!(r.body["error"].as_str().unwrap().contains(gone.as_str()), "{}", r.text);
    let r = server.post_json("/query", &auth, &json!({ "sql": "SELECT id FROM events WHERE id = 'r0-0'" })).await;
    r.expect_error(500, "DATA_FILE_MISSING");

    let r = server.get("/events?limit=100", &auth).await;
    let details = r.expect_error(500, "DATA_FILE_MISSING");
    assert_eq!(details["key"], json!(gone), "{}", r.text);
    assert!(r.body["error"].as_str().unwrap().contains(gone.as_str()), "{}", r.text);
}
