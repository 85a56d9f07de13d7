//! SQL through `POST /query` (DataFusion over the namespace's Iceberg
//! tables): aggregates over events and CDC tables, output formats, time
//! travel, read-only enforcement, limits, and tenant isolation.
//!
//! Every test here reads the server's local lake, so none runs against an
//! external server (`EVENTS_TEST_BASE_URL`).

use events_e2e::{Auth, ServerOptions, TestServer, iso_now, skip_on_external, unique_ns};
use serde_json::{Value, json};

const EXTERNAL: &str = "reads the server's local lake";

fn order(id: &str, extra: Value) -> Value {
    let mut e = json!({ "type": "order.placed", "ts": iso_now(), "id": id });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

async fn query(server: &TestServer, auth: &Auth, body: Value) -> events_e2e::Reply {
    server.post_json("/query", auth, &body).await
}

/// Rows of a JSON query, asserting 200.
async fn rows(server: &TestServer, auth: &Auth, sql: &str) -> Vec<Value> {
    let r = query(server, auth, json!({ "sql": sql })).await;
    assert_eq!(r.status, 200, "{sql}: {}", r.text);
    r.body.as_array().unwrap_or_else(|| panic!("not an array: {}", r.text)).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_aggregates_formats_time_travel_and_read_only() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    let server = TestServer::start_with(ServerOptions::new().toml("[query]\nmax_rows = 1000")).await;
    let ns = unique_ns("sql");
    let key = server.create_key(&ns).await;
    let auth = key.auth();
    let mut events = Vec::new();
    for i in 0..30 {
        let ty = ["page.view", "order.placed", "signup"][i % 3];
        events.push(json!({ "type": ty, "ts": iso_now(), "id": format!("e{i:02}"), "userId": format!("u{}", i % 4), "durationMs": i as f64 }));
    }
    server.ingest_ok(&auth, &events[..15]).await;
    server.admin_flush().await;
    let history = server.get("/tables/events/snapshots", &auth).await;
    let first_snapshot = history.expect(200)["snapshots"][0]["snapshotId"].as_i64().unwrap();
    server.ingest_ok(&auth, &events[15..]).await;
    server.admin_flush().await;

    let by_type = rows(
        &server,
        &auth,
        "SELECT type, count(*) AS n, count(DISTINCT user_id) AS users FROM events GROUP BY type ORDER BY type",
    )
    .await;
    assert_eq!(
        by_type,
        vec![
            json!({"type": "order.placed", "n": 10, "users": 4}),
            json!({"type": "page.view", "n": 10, "users": 4}),
            json!({"type": "signup", "n": 10, "users": 4}),
        ]
    );
    let total = rows(&server, &auth, "SELECT sum(duration_ms) AS s, max(\"durationMs\") AS m FROM events").await;
    assert_eq!(total, vec![json!({"s": 435.0, "m": 29.0})]);

    // Time travel: the first snapshot has the first 15 events.
    let r = query(&server, &auth, json!({"sql": "SELECT count(*) AS n FROM events", "at": {"events": first_snapshot}}))
        .await;
    assert_eq!(r.expect(200), &json!([{"n": 15}]));
    let r = query(&server, &auth, json!({"sql": "SELECT 1", "at": {"events": 42}})).await;
    r.expect_error(404, "NOT_FOUND");

    // Formats.
    let csv = query(
        &server,
        &auth,
        json!({"sql": "SELECT id, type FROM events WHERE id IN ('e00', 'e01') ORDER BY id", "format": "csv"}),
    )
    .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(csv.text, "id,type\ne00,page.view\ne01,order.placed\n");
    let nd =
        query(&server, &auth, json!({"sql": "SELECT id FROM events ORDER BY id LIMIT 2", "format": "ndjson"})).await;
    assert_eq!(nd.text, "{\"id\":\"e00\"}\n{\"id\":\"e01\"}\n");
    // A null format is the default, JSON, as the OpenAPI document says.
    let null_format = query(&server, &auth, json!({"sql": "SELECT 1 AS one", "format": null})).await;
    assert_eq!(null_format.expect(200), &json!([{"one": 1}]));
    query(&server, &auth, json!({"sql": "SELECT 1", "format": "xml"})).await.expect_error(400, "INVALID_JSON");
    let arrow = server
        .send(
            server
                .client()
                .post(server.url("/query"))
                .json(&json!({"sql": "SELECT id FROM events", "format": "arrow"})),
            &auth,
        )
        .await;
    assert_eq!(arrow.status, 200);
    assert_eq!(arrow.header("content-type"), Some("application/vnd.apache.arrow.stream"));
    let empty = rows(&server, &auth, "SELECT id FROM events WHERE type = 'nothing'").await;
    assert!(empty.is_empty());

    // Read-only: every kind of write or side effect is refused with one code.
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO events (id) VALUES ('x')",
        "DELETE FROM events",
        "UPDATE events SET type = 'x'",
        "DROP TABLE events",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'",
        "COPY (SELECT 1) TO '/tmp/out.csv'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let r = query(&server, &auth, json!({ "sql": sql })).await;
        r.expect_error(400, "READ_ONLY_QUERY");
    }
    query(&server, &auth, json!({"sql": "SELECT 1; SELECT 2"})).await.expect_error(400, "INVALID_QUERY");
    query(&server, &auth, json!({"sql": "SELEC nonsense"})).await.expect_error(400, "INVALID_QUERY");
    // The row limit is an error, never a silent truncation.
    let r = query(&server, &auth, json!({"sql": "SELECT * FROM generate_series(1, 5000)"})).await;
    r.expect_error(400, "QUERY_LIMIT_EXCEEDED");
    // The snapshot history names its operations.
    let h = server.get("/tables/events/snapshots", &auth).await;
    let body = h.expect(200);
    assert_eq!(body["snapshots"].as_array().unwrap().len(), 2);
    assert_eq!(body["snapshots"][1]["operation"], "append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_another_tenants_rows() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    let server = TestServer::start().await;
    let (victim_ns, attacker_ns) = (unique_ns("victim"), unique_ns("attacker"));
    let victim = server.create_key(&victim_ns).await;
    let attacker = server.create_key(&attacker_ns).await;
    server.ingest_ok(&victim.auth(), &[order("secret-1", json!({"card": "4242"}))]).await;
    server.ingest_ok(&attacker.auth(), &[order("mine-1", json!({}))]).await;
    let files = server.admin_flush().await;
    let victim_file = files.iter().find(|f| f.contains(&format!("ns={victim_ns}/"))).expect("victim file").clone();
    let victim_path = server.lake_dir().join(&victim_file);
    assert!(victim_path.exists());

    let a = attacker.auth();
    assert_eq!(rows(&server, &a, "SELECT id FROM events").await, vec![json!({"id": "mine-1"})]);
    assert!(rows(&server, &a, &format!("SELECT id FROM events WHERE ns = '{victim_ns}'")).await.is_empty());
    let path = victim_path.display().to_string();
    for sql in [
        format!("SELECT * FROM '{path}'"),
        format!("SELECT * FROM 'events://lake/{victim_file}'"),
        format!("SELECT * FROM read_parquet('{path}')"),
        format!("SELECT * FROM parquet_scan('{path}')"),
        format!("SELECT * FROM \"{victim_ns}\".events"),
        format!("SELECT * FROM events.\"{victim_ns}\".events"),
        "SELECT * FROM information_schema.tables".to_string(),
    ] {
        let r = query(&server, &a, json!({ "sql": sql })).await;
        assert_eq!(r.status, 400, "{sql}: {}", r.text);
        assert!(!r.text.contains("secret-1") && !r.text.contains("4242"), "{sql}: {}", r.text);
    }
    // Time travel to the victim's snapshot id finds nothing in the attacker's table.
    let victim_history = server.get("/tables/events/snapshots", &victim.auth()).await;
    let victim_snapshot = victim_history.expect(200)["snapshots"][0]["snapshotId"].as_i64().unwrap();
    let r = query(&server, &a, json!({"sql": "SELECT id FROM events", "at": {"events": victim_snapshot}})).await;
    r.expect_error(404, "NOT_FOUND");
    // The REST catalog answers the attacker as if the namespace did not exist.
    let r = server.get(&format!("/iceberg/v1/namespaces/{victim_ns}/tables/events"), &a).await;
    assert_eq!(r.expect_iceberg_error(404, "NoSuchNamespaceException"), format!("no namespace {victim_ns}"));
    let r = server.get(&format!("/iceberg/v1/namespaces/{victim_ns}/tables"), &a).await;
    r.expect_iceberg_error(404, "NoSuchNamespaceException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_joins_events_with_a_cdc_collection() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    let server = TestServer::start().await;
    let ns = unique_ns("sql-cdc");
    let key = server.create_key(&ns).await;
    let auth = key.auth();
    let user = |op: &str, id: &str, plan: Option<&str>| {
        let mut e = json!({ "type": format!("collection.{op}"), "ts": iso_now(), "collection": "users", "docId": id });
        if let Some(plan) = plan {
            e["doc"] = json!({ "plan": plan });
        }
        e
    };
    server
        .ingest_ok(
            &auth,
            &[
                user("insert", "u1", Some("free")),
                user("insert", "u2", Some("pro")),
                user("insert", "u3", Some("pro")),
                user("update", "u1", Some("pro")),
                user("delete", "u3", None),
            ],
        )
        .await;
    // The compaction commits the collection's state as table cdc_users.
    server.compact_collection(&auth, &ns, "users", 5).await;
    let clicks: Vec<Value> = ["u1", "u1", "u2", "u3", "nobody"]
        .iter()
        .enumerate()
        .map(|(i, u)| json!({ "type": "click", "ts": iso_now(), "id": format!("c{i}"), "userId": u }))
        .collect();
    server.ingest_ok(&auth, &clicks).await;
    server.admin_flush().await;

    let live = rows(&server, &auth, "SELECT id, version, deleted FROM cdc_users ORDER BY id").await;
    assert_eq!(
        live,
        vec![json!({"id": "u1", "version": 2, "deleted": false}), json!({"id": "u2", "version": 1, "deleted": false})],
        "the table holds live documents only: u3 was deleted"
    );
    // Clicks of users that exist now, with their current document.
    let joined = rows(
        &server,
        &auth,
        "SELECT u.id, u.data, count(*) AS clicks FROM events e JOIN cdc_users u ON e.user_id = u.id \
         WHERE e.type = 'click' GROUP BY u.id, u.data ORDER BY u.id",
    )
    .await;
    let parsed: Vec<(String, Value, i64)> = joined
        .iter()
        .map(|r| {
            let doc: Value = serde_json::from_str(r["data"].as_str().unwrap()).unwrap();
            (r["id"].as_str().unwrap().to_string(), doc, r["clicks"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        parsed,
        vec![("u1".to_string(), json!({"plan": "pro"}), 2), ("u2".to_string(), json!({"plan": "pro"}), 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_functions_null_columns_and_user_errors() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    let server = TestServer::start().await;
    let ns = unique_ns("sqljson");
    let key = server.create_key(&ns).await;
    let auth = key.auth();
    let events = [
        order("j1", json!({"customer": {"id": "c1", "tier": "gold"}, "lines": [{"sku": "a", "qty": 2}], "total": 30})),
        order("j2", json!({"customer": {"id": "c2"}, "total": "unknown"})),
        order("j3", json!({"customer": "guest"})),
    ];
    server.ingest_ok(&auth, &events).await;
    server.admin_flush().await;

    // JSON over nested `data`: missing paths and values of another kind are null.
    let got = rows(
        &server,
        &auth,
        "SELECT id, data->'customer'->>'id' AS customer, json_get_str(data, 'customer', 'tier') AS tier, \
         json_get_int(data, 'total') AS total, json_get_int(data, 'lines', 0, 'qty') AS qty \
         FROM events ORDER BY id",
    )
    .await;
    assert_eq!(
        got,
        vec![
            json!({"id": "j1", "customer": "c1", "tier": "gold", "total": 30, "qty": 2}),
            json!({"id": "j2", "customer": "c2", "tier": null, "total": null, "qty": null}),
            json!({"id": "j3", "customer": null, "tier": null, "total": null, "qty": null}),
        ]
    );
    let got = rows(&server, &auth, "SELECT count(*) AS n FROM events WHERE json_contains(data, 'lines')").await;
    assert_eq!(got, vec![json!({"n": 1})]);

    // Null columns stay, in SELECT order, in every text format.
    let sql = "SELECT 1 AS a, CAST(NULL AS BIGINT) AS b";
    let r = query(&server, &auth, json!({"sql": sql})).await;
    assert_eq!(r.text, "[{\"a\":1,\"b\":null}]\n");
    let r = query(&server, &auth, json!({"sql": "SELECT 2 AS z, NULL AS y, 'x' AS a", "format": "ndjson"})).await;
    assert_eq!(r.text, "{\"z\":2,\"y\":null,\"a\":\"x\"}\n");
    let r = query(&server, &auth, json!({"sql": "SELECT 2 AS z, NULL AS y, 'x' AS a", "format": "csv"})).await;
    assert_eq!(r.text, "z,y,a\n2,,x\n");

    // Mistakes in SQL are the caller's: 400 INVALID_QUERY, never a 500.
    for sql in [
        "SELECT get_field(data, 'customer') FROM events",
        "SELECT json_get_str(42, 'a') FROM events",
        "SELECT CAST(data AS INT) FROM events",
        "SELECT nope FROM events",
    ] {
        let r = query(&server, &auth, json!({"sql": sql})).await;
        r.expect_error(400, "INVALID_QUERY");
    }
}
