//! The lakehouse as other engines see it: PyIceberg through the Iceberg
//! REST catalog (`/iceberg/v1`), and table maintenance over HTTP.
//!
//! Every test here reads the server's local lake, so none runs against an
//! external server (`EVENTS_TEST_BASE_URL`).

use events_e2e::{TestServer, iso_now, require_python_modules, run_py_json, skip_on_external, unique_ns};
use serde_json::{Value, json};

const EXTERNAL: &str = "reads the server's local lake";

fn order(id: &str, extra: Value) -> Value {
    let mut e = json!({ "type": "order.placed", "ts": iso_now(), "id": id });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_lists_loads_scans_and_time_travels_the_events_table() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    require_python_modules(&["pyiceberg", "pyarrow"]);
    let server = TestServer::start().await;
    let ns = unique_ns("ice");
    let key = server.create_key(&ns).await;
    let first: Vec<Value> =
        (0..3).map(|i| order(&format!("a{i}"), json!({ "amount": i, "plan": "pro", "userId": "u1" }))).collect();
    server.ingest_ok(&key.auth(), &first).await;
    server.admin_flush().await;
    let second = vec![order("b0", json!({ "amount": 7, "coupon": "SPRING" })), order("b1", json!({ "note": "x" }))];
    server.ingest_ok(&key.auth(), &second).await;
    server.admin_flush().await;

    let v = run_py_json("iceberg_client.py", &["read", server.base_url(), &key.key, &ns]);
    assert_eq!(v["namespaces"], json!([[ns]]), "a tenant lists only its own namespace: {v}");
    assert_eq!(v["tables"], json!([format!("{ns}.events")]));
    assert_eq!(v["current_ids"], json!(["a0", "a1", "a2", "b0", "b1"]), "exactly the ingested rows: {v}");
    assert_eq!(v["name_mapping"], true);
    // Two flushes, two snapshots; the older one has the first batch only.
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{v}");
    assert_eq!(snaps[0]["ids"], json!(["a0", "a1", "a2"]));
    assert_eq!(snaps[1]["ids"], json!(["a0", "a1", "a2", "b0", "b1"]));
    assert!(snaps.iter().all(|s| s["operation"] == "append"));
    // Data fields became typed columns with fresh ids after the fixed ones.
    let columns = v["columns"].as_array().unwrap();
    let column =
        |name: &str| columns.iter().find(|c| c[1] == name).unwrap_or_else(|| panic!("no column {name}: {v}")).clone();
    assert_eq!(column("id")[0], 1);
    assert_eq!(column("ts")[2], "timestamptz");
    assert_eq!(column("amount")[2], "int");
    assert!(column("coupon")[0].as_i64().unwrap() > column("amount")[0].as_i64().unwrap());
    let rows = &v["rows_by_id"];
    assert_eq!(rows["a2"]["amount"], 2);
    assert_eq!(rows["a2"]["user_id"], "u1");
    assert_eq!(rows["b0"]["coupon"], "SPRING");
    assert_eq!(rows["a0"]["coupon"], Value::Null, "older files read the new column as null");
    assert_eq!(rows["b1"]["type"], "order.placed");
    let data: Value = serde_json::from_str(rows["b0"]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["coupon"], "SPRING");

    // Another tenant's key cannot load this namespace's table.
    let other_ns = unique_ns("ice-other");
    let other = server.create_key(&other_ns).await;
    let denied = run_py_json("iceberg_client.py", &["denied", server.base_url(), &other.key, &ns]);
    assert_eq!(denied["error"], "NoSuchTableError", "{denied}");
    // The admin sees both namespaces once both have tables.
    let r = server.get("/iceberg/v1/namespaces", &server.admin()).await;
    assert!(r.expect(200)["namespaces"].as_array().unwrap().contains(&json!([ns])), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_reads_a_cdc_collection_as_of_each_compaction() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    require_python_modules(&["pyiceberg", "pyarrow"]);
    let server = TestServer::start().await;
    let ns = unique_ns("ice-cdc");
    let key = server.create_key(&ns).await;
    let change = |op: &str, id: &str, doc: Value| {
        let mut e =
            json!({ "type": format!("collection.{op}"), "ts": iso_now(), "collection": "User-Profiles", "docId": id });
        if !doc.is_null() {
            e["doc"] = doc;
        }
        e
    };
    server
        .ingest_ok(
            &key.auth(),
            &[
                change("insert", "u1", json!({ "name": "Ada", "plan": "free" })),
                change("insert", "u2", json!({ "name": "Grace" })),
                change("insert", "u3", json!({ "name": "Edsger" })),
            ],
        )
        .await;
    let compact = |expected: i64| {
        let (server, key, ns) = (&server, &key, &ns);
        async move {
            server.compact_collection(&key.auth(), ns, "User-Profiles", expected).await;
            let list = server.get(&format!("/cdc/{ns}"), &key.auth()).await;
            let stats = list.expect(200)["collections"][0].clone();
            assert_eq!(stats["table"], "cdc_user_profiles", "{stats}");
            assert_eq!(stats["catalogError"], Value::Null, "{stats}");
        }
    };
    compact(3).await;
    server
        .ingest_ok(
            &key.auth(),
            &[change("update", "u1", json!({ "name": "Ada", "plan": "pro" })), change("delete", "u3", Value::Null)],
        )
        .await;
    compact(5).await;

    let v = run_py_json("iceberg_client.py", &["cdc", server.base_url(), &key.key, &ns, "cdc_user_profiles"]);
    assert!(v["tables"].as_array().unwrap().contains(&json!(format!("{ns}.cdc_user_profiles"))), "{v}");
    let names: Vec<&str> = v["columns"].as_array().unwrap().iter().map(|c| c[0].as_str().unwrap()).collect();
    assert_eq!(names, ["id", "data", "version", "ts", "seq", "bookmark", "deleted"]);
    assert_eq!(
        v["current"],
        json!({ "u1": { "name": "Ada", "plan": "pro" }, "u2": { "name": "Grace" } }),
        "the state after the second compaction: u1 updated, u3 deleted: {v}"
    );
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "one snapshot per compaction: {v}");
    assert_eq!(
        snaps[0]["docs"],
        json!({ "u1": { "name": "Ada", "plan": "free" }, "u2": { "name": "Grace" }, "u3": { "name": "Edsger" } }),
        "time travel to the first compaction: {v}"
    );
    assert_eq!(snaps[1]["docs"], v["current"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_commits_to_an_external_table_and_a_stale_commit_conflicts() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    require_python_modules(&["pyiceberg", "pyarrow"]);
    let server = TestServer::start().await;
    let ns = unique_ns("ice-ext");
    let key = server.create_key(&ns).await;
    let v = run_py_json("iceberg_client.py", &["external", server.base_url(), &key.key, &ns]);
    // The second handle's append was built on the empty table: the catalog
    // refuses it (409) and PyIceberg rebuilds it on the fresh metadata, so
    // both appends land; then one more after an explicit reload.
    assert_eq!(v["notes"], json!(["a", "b", "c", "c"]), "no commit lost or overwritten: {v}");
    assert_eq!(v["snapshots"], 3, "{v}");
    // An external table can be dropped (its files are left to its engine); the managed one cannot.
    let r = server
        .send(server.client().delete(server.url(&format!("/iceberg/v1/namespaces/{ns}/tables/py_notes"))), &key.auth())
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = server.get(&format!("/iceberg/v1/namespaces/{ns}/tables/py_notes"), &key.auth()).await;
    r.expect_iceberg_error(404, "NoSuchTableException");
    server.ingest_ok(&key.auth(), &[order("x", json!({}))]).await;
    server.admin_flush().await;
    let r = server
        .send(server.client().delete(server.url(&format!("/iceberg/v1/namespaces/{ns}/tables/events"))), &key.auth())
        .await;
    r.expect_iceberg_error(403, "ForbiddenException");
    let r = server
        .post_json(
            &format!("/iceberg/v1/namespaces/{ns}/tables/events"),
            &key.auth(),
            &json!({"requirements": [], "updates": [{"action": "remove-snapshot-ref", "ref-name": "main"}]}),
        )
        .await;
    r.expect_iceberg_error(403, "ForbiddenException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_errors_use_the_iceberg_error_model_and_pyiceberg_raises_the_spec_exceptions() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    require_python_modules(&["pyiceberg", "pyarrow"]);
    let server = TestServer::start().await;
    let ns = unique_ns("ice-err");
    let key = server.create_key(&ns).await;
    server.ingest_ok(&key.auth(), &[order("x", json!({}))]).await;
    server.admin_flush().await;

    // Over HTTP: the spec's ErrorModel, with the types clients map by.
    let missing = server.get(&format!("/iceberg/v1/namespaces/{ns}/tables/no_such_table"), &key.auth()).await;
    let missing_message = missing.expect_iceberg_error(404, "NoSuchTableException").to_string();
    assert_eq!(missing_message, "no table no_such_table");
    let other = server.get(&format!("/iceberg/v1/namespaces/{ns}-nope/tables/events"), &key.auth()).await;
    other.expect_iceberg_error(404, "NoSuchNamespaceException");
    let r = server.get(&format!("/iceberg/v1/namespaces/{ns}-nope"), &key.auth()).await;
    r.expect_iceberg_error(404, "NoSuchNamespaceException");
    // The flush made the namespace.
    let r = server.post_json("/iceberg/v1/namespaces", &key.auth(), &json!({"namespace": [ns]})).await;
    r.expect_iceberg_error(409, "AlreadyExistsException");
    let r = server.send(server.client().delete(server.url(&format!("/iceberg/v1/namespaces/{ns}"))), &key.auth()).await;
    r.expect_iceberg_error(409, "NamespaceNotEmptyException");
    let r = server.get("/iceberg/v1/nope", &key.auth()).await;
    r.expect_iceberg_error(404, "NotFoundException");
    let r = server.get("/iceberg/v1/config", &events_e2e::Auth::None).await;
    r.expect_iceberg_error(401, "NotAuthorizedException");
    // Everywhere else, the events.do envelope.
    server.get("/tables/no_such_table/snapshots", &key.auth()).await.expect_error(404, "NOT_FOUND");
    server.get("/nope", &key.auth()).await.expect_error(404, "NOT_FOUND");

    // PyIceberg raises the spec's exceptions, carrying the server's message.
    let v = run_py_json("iceberg_client.py", &["errors", server.base_url(), &key.key, &ns]);
    let raised = |name: &str| (v[name]["error"].as_str().unwrap_or(""), v[name]["message"].as_str().unwrap_or(""));
    assert_eq!(
        raised("missing_table"),
        ("NoSuchTableError", format!("NoSuchTableException: {missing_message}").as_str())
    );
    assert_eq!(raised("missing_namespace").0, "NoSuchNamespaceError", "{v}");
    assert_eq!(raised("missing_namespace").1, format!("NoSuchNamespaceException: no namespace {ns}-nope"));
    assert_eq!(raised("drop_managed").0, "ForbiddenError", "{v}");
    assert_eq!(
        raised("drop_managed").1,
        "ForbiddenException: events is managed by events.do and cannot be dropped",
        "{v}"
    );
    assert_eq!(raised("stale_commit").0, "CommitFailedException", "{v}");
    assert!(raised("stale_commit").1.starts_with("CommitFailedException: ref main is at "), "{v}");
    assert_eq!(raised("bad_token").0, "UnauthorizedError", "{v}");
    assert!(raised("bad_token").1.starts_with("NotAuthorizedException: "), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_over_http_compacts_expires_and_removes_only_orphans() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    require_python_modules(&["pyiceberg", "pyarrow"]);
    let server = TestServer::start().await;
    let ns = unique_ns("maint");
    let key = server.create_key(&ns).await;
    let auth = key.auth();
    let mut ids = Vec::new();
    for round in 0..3 {
        let batch: Vec<Value> = (0..4).map(|i| order(&format!("m{round}{i}"), json!({"round": round}))).collect();
        ids.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        server.ingest_ok(&auth, &batch).await;
        server.admin_flush().await;
    }
    let folder = server.lake_dir().join("events").join(format!("ns={ns}"));
    let hour_dir = walk(&folder).into_iter().next().unwrap().parent().unwrap().to_path_buf();
    let stray = hour_dir.join("stray.parquet");
    std::fs::write(&stray, b"not referenced").unwrap();

    // Young orphans are kept (a flush may be about to commit them).
    let r = server.post_json("/tables/maintain", &auth, &json!({"compact": false, "expire": false})).await;
    assert_eq!(r.expect(200)["reports"][0]["orphans_deleted"], json!([]));
    assert!(stray.exists());

    // Settings below the server's are destructive: the admin token only.
    let destructive = json!({"keepLast": 1, "maxSnapshotAgeMs": 0, "orphanMinAgeMs": 0});
    server.post_json("/tables/maintain", &auth, &destructive).await.expect_error(403, "FORBIDDEN");
    assert!(stray.exists());
    let r = server.post_json("/tables/maintain", &server.admin_for(&ns), &destructive).await;
    let report = &r.expect(200)["reports"][0];
    assert_eq!(report["compacted_inputs"], 3, "{}", r.text);
    assert_eq!(report["expired_snapshots"], 3, "{}", r.text);
    let orphans: Vec<String> =
        report["orphans_deleted"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(orphans.len(), 1, "{}", r.text);
    assert!(orphans[0].ends_with("stray.parquet"));
    assert!(!stray.exists());
    let files = walk(&folder);
    assert_eq!(files.len(), 1, "only the compacted file is left: {files:?}");
    let tables = server.get("/tables", &auth).await;
    assert_eq!(
        tables.expect(200)["tables"],
        json!([{"name": "events", "managed": true, "currentSnapshotId": tables.body["tables"][0]["currentSnapshotId"], "files": 1, "rows": ids.len()}])
    );
    let v = run_py_json("iceberg_client.py", &["read", server.base_url(), &key.key, &ns]);
    let mut want = ids.clone();
    want.sort();
    assert_eq!(v["current_ids"], json!(want), "every row readable after compaction and expiry: {v}");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1, "{v}");
    let r = server.post_json("/tables/maintain", &auth, &json!({"keepLast": 0})).await;
    r.expect_error(400, "INVALID_REQUEST");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn ids_of(rows: &Value) -> Vec<String> {
    let mut ids: Vec<String> = rows.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_snapshots_give_each_appended_row_once() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    let server = TestServer::start().await;
    let ns = unique_ns("changes");
    let key = server.create_key(&ns).await;
    let auth = key.auth();
    server.ingest_ok(&auth, &[order("c1", json!({"n": 1})), order("c2", json!({"n": 2}))]).await;
    server.admin_flush().await;
    let first = server.get("/tables/events/changes", &auth).await;
    let body = first.expect(200).clone();
    assert_eq!(ids_of(&body["rows"]), ["c1", "c2"], "{}", first.text);
    let s1 = body["toSnapshotId"].as_i64().unwrap();
    assert_eq!(body["fromSnapshotId"], Value::Null);
    assert_eq!(body["snapshots"][0]["operation"], "append");
    assert_eq!(body["rows"][0]["type"], "order.placed", "every column of the table: {}", first.text);

    server.ingest_ok(&auth, &[order("c3", json!({"n": 3, "coupon": "X"}))]).await;
    server.admin_flush().await;
    let next = server.get(&format!("/tables/events/changes?from_snapshot={s1}"), &auth).await;
    let body = next.expect(200).clone();
    assert_eq!(ids_of(&body["rows"]), ["c3"], "only the rows after s1: {}", next.text);
    assert_eq!(body["rows"][0]["coupon"], "X");
    let s2 = body["toSnapshotId"].as_i64().unwrap();

    // Compaction is a replace: the same rows, no changes.
    let r = server.post_json("/tables/maintain", &auth, &json!({"expire": false, "removeOrphans": false})).await;
    assert_eq!(r.expect(200)["reports"][0]["compacted_inputs"], 2, "{}", r.text);
    let after = server.get(&format!("/tables/events/changes?from_snapshot={s2}"), &auth).await;
    let body = after.expect(200).clone();
    assert_eq!(body["rows"], json!([]), "{}", after.text);
    assert_eq!(body["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(
        (body["snapshots"][0]["operation"].as_str(), body["snapshots"][0]["addedRows"].as_i64()),
        (Some("replace"), Some(0))
    );
    // The whole history still gives every row once.
    let all = server.get("/tables/events/changes", &auth).await;
    assert_eq!(ids_of(&all.expect(200)["rows"]), ["c1", "c2", "c3"], "{}", all.text);
    // A closed range, and other formats with the range in headers.
    let r =
        server.get(&format!("/tables/events/changes?from_snapshot={s1}&to_snapshot={s2}&format=ndjson"), &auth).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("x-events-to-snapshot"), Some(s2.to_string().as_str()));
    assert_eq!(r.header("x-events-from-snapshot"), Some(s1.to_string().as_str()));
    assert_eq!(r.text.lines().count(), 1, "{}", r.text);
    assert!(r.text.contains("\"c3\""), "{}", r.text);
    let r = server.get(&format!("/tables/events/changes?from_snapshot={s1}&to_snapshot={s2}&format=csv"), &auth).await;
    assert!(r.text.starts_with("id,ns,ts,type,"), "{}", r.text);

    // Mistakes.
    server.get("/tables/events/changes?from_snapshot=abc", &auth).await.expect_error(400, "INVALID_QUERY");
    server.get("/tables/events/changes?format=xml", &auth).await.expect_error(400, "INVALID_QUERY");
    let r = server.get(&format!("/tables/events/changes?from_snapshot={s2}&to_snapshot={s1}"), &auth).await;
    r.expect_error(400, "INVALID_QUERY");
    server.get("/tables/events/changes?from_snapshot=42", &auth).await.expect_error(404, "NOT_FOUND");
    server.get("/tables/nope/changes", &auth).await.expect_error(404, "NOT_FOUND");

    // A CDC table: each compaction's new state is an overwrite that adds the collection's rows.
    let change = |op: &str, id: &str, doc: Value| json!({ "type": format!("collection.{op}"), "ts": iso_now(), "collection": "people", "docId": id, "doc": doc });
    server
        .ingest_ok(
            &auth,
            &[change("insert", "p1", json!({"name": "Ada"})), change("insert", "p2", json!({"name": "Bob"}))],
        )
        .await;
    server.compact_collection(&auth, &ns, "people", 2).await;
    let r = server.get("/tables/cdc_people/changes", &auth).await;
    let body = r.expect(200).clone();
    assert_eq!(ids_of(&body["rows"]), ["p1", "p2"], "{}", r.text);
    let c1 = body["toSnapshotId"].as_i64().unwrap();
    server.ingest_ok(&auth, &[change("update", "p2", json!({"name": "Bobby"}))]).await;
    server.compact_collection(&auth, &ns, "people", 3).await;
    let r = server.get(&format!("/tables/cdc_people/changes?from_snapshot={c1}"), &auth).await;
    let body = r.expect(200).clone();
    assert_eq!(body["snapshots"][0]["operation"], "overwrite", "{}", r.text);
    assert_eq!(ids_of(&body["rows"]), ["p1", "p2"], "the new state: {}", r.text);
    let bobby = body["rows"].as_array().unwrap().iter().find(|r| r["id"] == "p2").unwrap();
    assert_eq!(serde_json::from_str::<Value>(bobby["data"].as_str().unwrap()).unwrap(), json!({"name": "Bobby"}));
}

/// The recipes of docs/lakehouse.md, "Reading with other engines", as
/// written: PyIceberg, DuckDB through PyIceberg's scan, and polars, over the
/// events table and a CDC table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_recipes_read_every_row_with_pyiceberg_duckdb_and_polars() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    require_python_modules(&["pyiceberg", "pyarrow", "duckdb", "polars"]);
    let server = TestServer::start().await;
    let ns = unique_ns("recipes");
    let key = server.create_key(&ns).await;
    let mut batch: Vec<Value> = (0..5).map(|i| order(&format!("o{i}"), json!({ "amount": i }))).collect();
    batch.push(json!({ "type": "user.signup", "ts": iso_now(), "id": "s0" }));
    server.ingest_ok(&key.auth(), &batch).await;
    let change = |op: &str, id: &str, doc: Value| {
        let mut e = json!({ "type": format!("collection.{op}"), "ts": iso_now(), "collection": "users", "docId": id });
        if !doc.is_null() {
            e["doc"] = doc;
        }
        e
    };
    let changes = [
        change("insert", "u1", json!({ "plan": "free" })),
        change("insert", "u2", json!({ "plan": "pro" })),
        change("delete", "u1", Value::Null),
    ];
    server.ingest_ok(&key.auth(), &changes).await;
    server.admin_flush().await;
    server.compact_collection(&key.auth(), &ns, "users", 3).await;

    let v = run_py_json("recipes.py", &[server.base_url(), &key.key, &ns, "cdc_users"]);
    // The change events are events too (with ids the server gave them).
    let ids = v["pyiceberg_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 9, "{v}");
    for id in ["o0", "o1", "o2", "o3", "o4", "s0"] {
        assert!(ids.contains(&json!(id)), "{id}: {v}");
    }
    assert_eq!(v["polars_ids"], v["pyiceberg_ids"], "{v}");
    assert_eq!(v["duckdb_count"], 9, "{v}");
    assert_eq!(
        v["duckdb_types"],
        json!([["collection.delete", 1], ["collection.insert", 2], ["order.placed", 5], ["user.signup", 1]]),
        "{v}"
    );
    assert_eq!(v["cdc_ids"], json!(["u2"]), "the deleted document is filtered out: {v}");
}
