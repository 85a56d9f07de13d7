//! Change capture through HTTP against the real binary: the three input
//! formats, tombstones, history, point-in-time reads, restore, compaction
//! (state preserved, files readable by pyarrow), and a crash in the middle
//! of a compaction.

use std::time::{Duration, Instant};

use events_e2e::{
    Auth, DEADLINE, ServerOptions, TestServer, iso_at_offset, require_python_modules, run_py_json, skip_on_external,
    unique_ns, url_encode,
};
use serde_json::{Value, json};

/// Polls `GET path` until `done` holds on a 200 body (or the deadline passes).
async fn wait_until(server: &TestServer, auth: &Auth, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = server.get(path, auth).await;
        if r.status == 200 && done(&r.body) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "condition on {path} not reached: {} {}", r.status, r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every document of a collection read (following cursors), as `id -> document`.
async fn all_docs(server: &TestServer, auth: &Auth, ns: &str, collection: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("limit=7&{query}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", url_encode(c)));
        }
        let r = server.get(&format!("/cdc/{ns}/{collection}?{q}"), auth).await;
        let body = r.expect(200).clone();
        out.extend(body["documents"].as_array().unwrap().iter().cloned());
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn ids_and_data(docs: &[Value]) -> Vec<(String, Value)> {
    docs.iter().map(|d| (d["id"].as_str().unwrap().to_string(), d["data"].clone())).collect()
}

fn collection_stats(list: &Value, name: &str) -> Value {
    list["collections"].as_array().unwrap().iter().find(|c| c["collection"] == name).cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn three_input_formats_tombstones_history_and_point_in_time_reads() {
    let server = TestServer::start().await;
    let ns = unique_ns("cdc-formats");
    let auth = server.admin_for(&ns);
    let t = |s: i64| iso_at_offset(-600_000 + s * 1000);
    server
        .ingest_ok(
            &auth,
            &[
                // 1. the original's collection events
                json!({"type": "collection.insert", "ts": t(0), "collection": "users", "docId": "u1", "doc": {"name": "Ada"}, "bookmark": "b1"}),
                json!({"type": "collection.update", "ts": t(10), "collection": "users", "docId": "u1", "doc": {"name": "Ada L."}, "prev": {"name": "Ada"}}),
                json!({"type": "collection.insert", "ts": t(0), "collection": "users", "docId": "u2", "doc": {"name": "Bob"}}),
                json!({"type": "collection.delete", "ts": t(20), "collection": "users", "docId": "u2", "prev": {"name": "Bob"}}),
                // 2. unified cdc events
                json!({"type": "cdc", "ts": t(0), "event": "Order.created", "data": {"type": "Order", "id": "o1", "total": 5}}),
                json!({"type": "cdc", "ts": t(10), "event": "Order.updated", "data": {"type": "Order", "id": "o1", "total": 7}, "meta": {"bookmark": "bk"}}),
                json!({"type": "cdc", "ts": t(0), "event": "Order.created", "data": {"type": "Order", "id": "o2", "total": 1}}),
                json!({"type": "cdc", "ts": t(30), "event": "Order.deleted", "data": {"type": "Order", "id": "o2"}}),
            ],
        )
        .await;
    // 3. Debezium envelopes (event time from source.ts_ms), one with the
    // schema-wrapped `payload`; the update arrives before the insert it follows.
    let ms = |s: i64| chrono::DateTime::parse_from_rfc3339(&t(s)).unwrap().timestamp_millis();
    server
        .ingest_ok(
            &auth,
            &[
                json!({"type": "debezium.shop.items", "payload": {"op": "u", "before": {"id": 1, "qty": 1}, "after": {"id": 1, "qty": 2}, "source": {"table": "items", "ts_ms": ms(10)}}}),
                json!({"type": "debezium", "op": "c", "after": {"id": 1, "qty": 1}, "source": {"table": "items", "ts_ms": ms(0)}}),
                json!({"type": "debezium", "op": "c", "key": {"id": 2}, "after": {"id": 2, "qty": 9}, "source": {"table": "items", "ts_ms": ms(0)}}),
                json!({"type": "debezium", "op": "d", "before": {"id": 2, "qty": 9}, "source": {"table": "items", "ts_ms": ms(40)}}),
            ],
        )
        .await;

    let list = wait_until(&server, &auth, &format!("/cdc/{ns}"), |b| {
        ["users", "Order", "items"].iter().all(|c| collection_stats(b, c)["changes"] == 4)
    })
    .await;
    for name in ["users", "Order", "items"] {
        let s = collection_stats(&list, name);
        assert_eq!((s["documents"].as_i64(), s["deleted"].as_i64()), (Some(1), Some(1)), "{name}: {s}");
        assert!(s["lastChange"].is_string(), "{s}");
    }

    // Now: one live document each; tombstones only on request.
    let users = all_docs(&server, &auth, &ns, "users", "").await;
    assert_eq!(ids_and_data(&users), [("u1".to_string(), json!({"name": "Ada L."}))]);
    assert_eq!(users[0]["version"], 2);
    assert_eq!(users[0]["bookmark"], Value::Null, "the winning change had no bookmark");
    let with_tombstones = all_docs(&server, &auth, &ns, "users", "includeDeleted=true").await;
    assert_eq!(with_tombstones.len(), 2);
    let u2 = server.get(&format!("/cdc/{ns}/users/u2"), &auth).await;
    assert_eq!(u2.expect(200)["deleted"], true, "a deleted document is a tombstone");
    assert_eq!(u2.body["data"], json!({"name": "Bob"}), "the tombstone keeps the delete's previous document");
    let orders = all_docs(&server, &auth, &ns, "Order", "").await;
    assert_eq!(ids_and_data(&orders), [("o1".to_string(), json!({"total": 7}))]);
    let items = all_docs(&server, &auth, &ns, "items", "").await;
    assert_eq!(
        ids_and_data(&items),
        [("1".to_string(), json!({"id": 1, "qty": 2}))],
        "event time, not arrival, orders"
    );

    // Point in time: before the update and the delete.
    let at = url_encode(&t(5));
    let past = all_docs(&server, &auth, &ns, "users", &format!("at={at}")).await;
    assert_eq!(
        ids_and_data(&past),
        [("u1".to_string(), json!({"name": "Ada"})), ("u2".to_string(), json!({"name": "Bob"}))]
    );
    let u1 = server.get(&format!("/cdc/{ns}/users/u1?at={at}"), &auth).await;
    assert_eq!((u1.expect(200)["version"].as_i64(), u1.body["bookmark"].as_str()), (Some(1), Some("b1")));
    let early = url_encode(&t(-5));
    server.get(&format!("/cdc/{ns}/users/u1?at={early}"), &auth).await.expect_error(404, "NOT_FOUND");
    server.get(&format!("/cdc/{ns}/users?at=yesterday"), &auth).await.expect_error(400, "INVALID_QUERY");
    for bad in ["source=parquet", "limit=ten", "includeDeleted=yes"] {
        server.get(&format!("/cdc/{ns}/users?{bad}"), &auth).await.expect_error(400, "INVALID_QUERY");
    }

    // History, in event-time order, paginated.
    let h = server.get(&format!("/cdc/{ns}/users/u1/history?limit=1"), &auth).await;
    let first = h.expect(200).clone();
    assert_eq!(first["changes"][0]["op"], "insert");
    let cursor = first["nextCursor"].as_str().unwrap();
    let h2 = server.get(&format!("/cdc/{ns}/users/u1/history?limit=1&cursor={cursor}"), &auth).await;
    assert_eq!(h2.expect(200)["changes"][0]["op"], "update");
    assert_eq!(h2.body["changes"][0]["before"], json!({"name": "Ada"}));
    for bad in ["u1", "12.x", "12"] {
        server.get(&format!("/cdc/{ns}/users/u1/history?cursor={bad}"), &auth).await.expect_error(400, "INVALID_QUERY");
    }
    let items_history = server.get(&format!("/cdc/{ns}/items/1/history"), &auth).await;
    let ops: Vec<&str> =
        items_history.expect(200)["changes"].as_array().unwrap().iter().map(|c| c["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "update"], "the late insert is in history, in event-time order");
    server.get(&format!("/cdc/{ns}/users/nobody/history"), &auth).await.expect_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn malformed_changes_are_refused_at_ingest_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let ns = unique_ns("cdc-refused");
    let auth = server.admin_for(&ns);
    let cases = [
        json!({"type": "collection.upsert", "collection": "users", "docId": "u1", "doc": {}}),
        json!({"type": "cdc", "event": "User.merged", "data": {"id": "u1"}}),
        json!({"type": "debezium", "op": "x", "after": {"id": 1}, "source": {"table": "t"}}),
        json!({"type": "collection.insert", "collection": "users", "doc": {}}),
    ];
    for bad in &cases {
        let ok = json!({"type": "collection.insert", "collection": "users", "docId": "fine", "doc": {}});
        let r = server.ingest(&auth, &[ok, bad.clone()]).await;
        let details = r.expect_error(400, "INVALID_CDC_EVENT");
        assert_eq!(details["indices"], json!([1]), "{}", r.text);
        assert!(details["errors"][0]["message"].as_str().unwrap().len() > 5, "{}", r.text);
    }
    let r = server.ingest(&auth, &[cases[0].clone()]).await;
    assert!(r.text.contains("upsert"), "the error names the unknown operation: {}", r.text);
    // Nothing of the refused batches was stored or applied.
    server
        .ingest_ok(&auth, &[json!({"type": "collection.insert", "collection": "other", "docId": "x", "doc": {}})])
        .await;
    let list =
        wait_until(&server, &auth, &format!("/cdc/{ns}"), |b| collection_stats(b, "other")["changes"] == 1).await;
    assert_eq!(collection_stats(&list, "users"), Value::Null, "{list}");
}

#[tokio::test]
async fn namespace_keys_reach_only_their_namespace() {
    let server = TestServer::start().await;
    let ns = unique_ns("cdc-auth");
    let key = server.create_key(&ns).await;
    server
        .ingest_ok(&key.auth(), &[json!({"type": "collection.insert", "collection": "c", "docId": "1", "doc": {}})])
        .await;
    wait_until(&server, &key.auth(), &format!("/cdc/{ns}"), |b| collection_stats(b, "c")["changes"] == 1).await;
    let other = unique_ns("cdc-auth-other");
    server.get(&format!("/cdc/{other}"), &key.auth()).await.expect_error(403, "FORBIDDEN");
    server.post_json(&format!("/cdc/{other}/c/_compact"), &key.auth(), &json!({})).await.expect_error(403, "FORBIDDEN");
    server.get(&format!("/cdc/{ns}/c"), &Auth::None).await.expect_error(401, "AUTH_REQUIRED");
}

#[tokio::test]
async fn restore_brings_a_collection_back_with_new_changes() {
    let server = TestServer::start().await;
    let ns = unique_ns("cdc-restore");
    let auth = server.admin_for(&ns);
    let t = |s: i64| iso_at_offset(-600_000 + s * 1000);
    let ev = |ty: &str, ts: String, id: &str, doc: Value| json!({"type": ty, "ts": ts, "collection": "notes", "docId": id, "doc": doc});
    server
        .ingest_ok(
            &auth,
            &[
                ev("collection.insert", t(0), "a", json!({"v": 1})),
                ev("collection.insert", t(0), "b", json!({"v": 1})),
                ev("collection.update", t(20), "a", json!({"v": 2})),
                ev("collection.delete", t(20), "b", Value::Null),
                ev("collection.insert", t(20), "c", json!({"v": 1})),
            ],
        )
        .await;
    wait_until(&server, &auth, &format!("/cdc/{ns}"), |b| collection_stats(b, "notes")["changes"] == 5).await;
    let target = t(10);
    let before = all_docs(&server, &auth, &ns, "notes", &format!("at={}", url_encode(&target))).await;
    let r = server.post_json(&format!("/cdc/{ns}/notes/_restore"), &auth, &json!({"at": target})).await;
    assert_eq!(r.expect(200)["changes"], 3, "{}", r.text);
    let now = all_docs(&server, &auth, &ns, "notes", "").await;
    assert_eq!(ids_and_data(&now), ids_and_data(&before));
    // The restore is auditable: it is in each document's history ...
    let h = server.get(&format!("/cdc/{ns}/notes/c/history"), &auth).await;
    let last = h.expect(200)["changes"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["op"], "delete");
    assert!(last["bookmark"].as_str().unwrap().starts_with("restore:"), "{last}");
    // ... and reversible: restoring to a time before it brings back the later state.
    let undo = server.post_json(&format!("/cdc/{ns}/notes/_restore"), &auth, &json!({"at": t(30)})).await;
    assert_eq!(undo.expect(200)["changes"], 3, "{}", undo.text);
    let again = all_docs(&server, &auth, &ns, "notes", "").await;
    assert_eq!(ids_and_data(&again), [("a".to_string(), json!({"v": 2})), ("c".to_string(), json!({"v": 1}))]);
    server
        .post_json(&format!("/cdc/{ns}/notes/_restore"), &auth, &json!({"at": "later"}))
        .await
        .expect_error(400, "INVALID_QUERY");
}

/// The lake files of one collection under the server's lake directory.
fn lake_files(server: &TestServer, ns: &str, collection: &str, kind: &str) -> Vec<String> {
    let dir = server.lake_dir().join(format!("cdc/ns={ns}/collection={collection}/{kind}"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path().display().to_string()).filter(|p| p.ends_with(".parquet")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

async fn ingest_changes(server: &TestServer, auth: &Auth, collection: &str, n: usize) {
    let mut events = Vec::new();
    for i in 0..n {
        let id = format!("d{:03}", i % 40);
        let ts = iso_at_offset(-300_000 + (i as i64) * 100);
        events.push(match i % 7 {
            6 => json!({"type": "collection.delete", "ts": ts, "collection": collection, "docId": id}),
            k => json!({"type": "collection.update", "ts": ts, "collection": collection, "docId": id, "doc": {"i": i, "k": k}}),
        });
        if events.len() == 100 {
            server.ingest_ok(auth, &events).await;
            events.clear();
        }
    }
    if !events.is_empty() {
        server.ingest_ok(auth, &events).await;
    }
}

#[tokio::test]
async fn compaction_preserves_state_and_pyarrow_reads_delta_and_current_files() {
    if skip_on_external("reads the server's lake directory") {
        return;
    }
    require_python_modules(&["pyarrow"]);
    let server = TestServer::start().await;
    let ns = unique_ns("cdc-compact");
    let auth = server.admin_for(&ns);
    ingest_changes(&server, &auth, "docs", 300).await;
    wait_until(&server, &auth, &format!("/cdc/{ns}"), |b| collection_stats(b, "docs")["changes"] == 300).await;
    let state = all_docs(&server, &auth, &ns, "docs", "").await;
    let past_at = url_encode(&iso_at_offset(-300_000 + 150 * 100));
    let past = all_docs(&server, &auth, &ns, "docs", &format!("at={past_at}")).await;

    // Delta files: every change once, with the documented columns.
    let r = server.post_json(&format!("/cdc/{ns}/docs/_flush"), &auth, &json!({})).await;
    assert!(!r.expect(200)["files"].as_array().unwrap().is_empty(), "{}", r.text);
    let deltas = lake_files(&server, &ns, "docs", "deltas");
    let args: Vec<&str> = deltas.iter().map(String::as_str).collect();
    let read = run_py_json("read_cdc.py", &args);
    let columns: Vec<&str> =
        read["files"][0]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["id", "op", "ts", "seq", "before", "after", "bookmark"]);
    let rows: Vec<Value> =
        read["files"].as_array().unwrap().iter().flat_map(|f| f["rows"].as_array().unwrap().clone()).collect();
    assert_eq!(rows.len(), 300);
    let mut seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "each change once");
    assert_eq!(rows.iter().filter(|r| r["op"] == "delete").count(), 300 / 7);
    let update = rows.iter().find(|r| r["op"] == "update").unwrap();
    assert!(serde_json::from_str::<Value>(update["after"].as_str().unwrap()).unwrap()["i"].is_number());

    // Compaction: the current table holds exactly the live documents.
    let r = server.post_json(&format!("/cdc/{ns}/docs/_compact"), &auth, &json!({})).await;
    r.expect(200);
    let current = lake_files(&server, &ns, "docs", "current");
    assert_eq!(current.len(), 1, "{current:?}");
    let read = run_py_json("read_cdc.py", &[current[0].as_str()]);
    let columns: Vec<&str> =
        read["files"][0]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["id", "data", "version", "ts", "seq", "bookmark", "deleted"]);
    let table: Vec<(String, Value)> = read["files"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), serde_json::from_str(r["data"].as_str().unwrap()).unwrap()))
        .collect();
    assert_eq!(table, ids_and_data(&state), "the current table equals the collection's state");
    // The deltas it folded are gone, only after the compaction was recorded.
    wait_until(&server, &auth, &format!("/cdc/{ns}/docs/_manifest"), |m| m["deltas"].as_array().unwrap().is_empty())
        .await;

    // Reads are unchanged, from the object and rebuilt from the lake files.
    assert_eq!(all_docs(&server, &auth, &ns, "docs", "").await, state);
    assert_eq!(ids_and_data(&all_docs(&server, &auth, &ns, "docs", "source=lake").await), ids_and_data(&state));
    assert_eq!(all_docs(&server, &auth, &ns, "docs", &format!("at={past_at}")).await, past);

    // Snapshots: taken once, skipped while nothing changes; an unknown kind takes none.
    server
        .post_json(&format!("/cdc/{ns}/docs/_snapshot?kind=weekly"), &auth, &json!({}))
        .await
        .expect_error(400, "INVALID_QUERY");
    let s = server.post_json(&format!("/cdc/{ns}/docs/_snapshot?kind=daily"), &auth, &json!({})).await;
    assert_eq!(s.expect(200)["skipped"], false, "{}", s.text);
    let s = server.post_json(&format!("/cdc/{ns}/docs/_snapshot?kind=daily"), &auth, &json!({})).await;
    assert_eq!(s.expect(200)["skipped"], true, "{}", s.text);
    let list = server.get(&format!("/cdc/{ns}"), &auth).await;
    let stats = collection_stats(list.expect(200), "docs");
    assert_eq!((stats["compactions"].as_i64(), stats["snapshots"].as_i64()), (Some(1), Some(1)), "{stats}");
}

#[tokio::test]
async fn a_crash_in_the_middle_of_compaction_loses_nothing() {
    if skip_on_external("kills and reconfigures the server") {
        return;
    }
    let mut server =
        TestServer::start_with(ServerOptions::new().toml("[cdc]\nfailpoint = \"compact-after-write\"")).await;
    let ns = unique_ns("cdc-crash");
    let auth = server.admin_for(&ns);
    ingest_changes(&server, &auth, "docs", 200).await;
    wait_until(&server, &auth, &format!("/cdc/{ns}"), |b| collection_stats(b, "docs")["changes"] == 200).await;
    let state = all_docs(&server, &auth, &ns, "docs", "").await;
    server.post_json(&format!("/cdc/{ns}/docs/_flush"), &auth, &json!({})).await.expect(200);
    let deltas_before = lake_files(&server, &ns, "docs", "deltas");
    assert!(!deltas_before.is_empty());

    // The compaction writes its table, then the process dies before recording it.
    let crashed = server
        .client()
        .post(server.url(&format!("/cdc/{ns}/docs/_compact")))
        .bearer_auth(server.admin_token())
        .header("X-Namespace", &ns)
        .send()
        .await;
    assert!(crashed.is_err() || crashed.unwrap().status().is_server_error(), "the failpoint did not crash the server");

    let config = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(server.config_path(), config.replace("failpoint = \"compact-after-write\"", "")).unwrap();
    server.restart().await;

    // Nothing was lost: the state, the deltas, and reads rebuilt from them.
    assert_eq!(all_docs(&server, &auth, &ns, "docs", "").await, state);
    assert_eq!(lake_files(&server, &ns, "docs", "deltas"), deltas_before, "no delta was deleted");
    assert_eq!(ids_and_data(&all_docs(&server, &auth, &ns, "docs", "source=lake").await), ids_and_data(&state));
    // The compaction runs again and completes.
    server.post_json(&format!("/cdc/{ns}/docs/_compact"), &auth, &json!({})).await.expect(200);
    let list = server.get(&format!("/cdc/{ns}"), &auth).await;
    assert_eq!(collection_stats(list.expect(200), "docs")["compactions"], 1);
    assert_eq!(ids_and_data(&all_docs(&server, &auth, &ns, "docs", "source=lake").await), ids_and_data(&state));
    // New changes after the restart are applied as usual.
    ingest_changes(&server, &auth, "docs", 10).await;
    wait_until(&server, &auth, &format!("/cdc/{ns}"), |b| collection_stats(b, "docs")["changes"] == 210).await;
}
