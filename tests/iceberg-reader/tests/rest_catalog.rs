//! A second, independent Iceberg implementation reads events.do's tables.
//!
//! PyIceberg is not the only reader the lake must satisfy: these tests load
//! the catalog with iceberg-rust (`iceberg` + `iceberg-catalog-rest`, the
//! Apache project's Rust implementation), through the REST catalog at
//! `/iceberg/v1` with a namespace key, and scan the events table and a CDC
//! table from the local lake: every id exactly once, time travel to each
//! snapshot, and snapshot operations as the Iceberg spec means them.
//!
//! They read the server's local lake, so none runs against an external server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use events_e2e::{TestServer, iso_now, skip_on_external, unique_ns};
use futures::TryStreamExt;
use iceberg::io::LocalFsStorageFactory;
use iceberg::spec::{Operation, PrimitiveType, Type};
use iceberg::table::Table;
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableIdent};
use iceberg_catalog_rest::{RestCatalog, RestCatalogBuilder};
use serde_json::{Value, json};

const EXTERNAL: &str = "reads the server's local lake";

/// A REST catalog client for `server`, authenticated with `token`.
async fn rest_catalog(server: &TestServer, token: &str) -> RestCatalog {
    let props = HashMap::from([
        ("uri".to_string(), format!("{}/iceberg", server.base_url())),
        ("token".to_string(), token.to_string()),
    ]);
    RestCatalogBuilder::default()
        .with_storage_factory(Arc::new(LocalFsStorageFactory))
        .load("events", props)
        .await
        .expect("the REST catalog client configures itself from /iceberg/v1/config")
}

/// Every row of `table` at `snapshot` (`None`: the current one).
async fn scan(table: &Table, snapshot: Option<i64>) -> Vec<RecordBatch> {
    let mut scan = table.scan();
    if let Some(id) = snapshot {
        scan = scan.snapshot_id(id);
    }
    let stream = scan.build().expect("scan plan").to_arrow().await.expect("scan stream");
    stream.try_collect().await.expect("every data file the snapshot names reads")
}

/// The values of the string column `name` across `batches`, in row order.
fn strings(batches: &[RecordBatch], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        let column = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        out.extend(column_strings(column.as_ref()));
    }
    out
}

/// A string column as owned strings (`""` for null), whatever string layout
/// the reader chose.
fn column_strings(column: &dyn Array) -> Vec<String> {
    let owned = |v: Option<&str>| v.unwrap_or_default().to_string();
    match column.data_type() {
        arrow_schema::DataType::Utf8 => column.as_string::<i32>().iter().map(owned).collect(),
        arrow_schema::DataType::LargeUtf8 => column.as_string::<i64>().iter().map(owned).collect(),
        arrow_schema::DataType::Utf8View => column.as_string_view().iter().map(owned).collect(),
        other => panic!("{other} is not a string column"),
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// An event at `ts`: the tests give all their events one time, so that they
/// land in one hour folder and compaction merges them whenever it runs.
fn order(ts: &str, id: &str, extra: Value) -> Value {
    let mut e = json!({ "type": "order.placed", "ts": ts, "id": id });
    e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_rust_scans_and_time_travels_the_events_table_through_the_rest_catalog() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    let server = TestServer::start().await;
    let ns = unique_ns("ice-rs");
    let key = server.create_key(&ns).await;
    let ts = iso_now();
    let first: Vec<Value> = (0..3).map(|i| order(&ts, &format!("a{i}"), json!({ "amount": i }))).collect();
    server.ingest_ok(&key.auth(), &first).await;
    server.admin_flush().await;
    let second = vec![order(&ts, "b0", json!({ "amount": 7, "coupon": "SPRING" })), order(&ts, "b1", json!({}))];
    server.ingest_ok(&key.auth(), &second).await;
    server.admin_flush().await;

    let catalog = rest_catalog(&server, &key.key).await;
    let namespaces = catalog.list_namespaces(None).await.unwrap();
    assert_eq!(namespaces, vec![NamespaceIdent::new(ns.clone())], "a key sees only its own namespace");
    let namespace = NamespaceIdent::new(ns.clone());
    let tables = catalog.list_tables(&namespace).await.unwrap();
    assert_eq!(tables, vec![TableIdent::new(namespace.clone(), "events".to_string())]);

    let table = catalog.load_table(&tables[0]).await.unwrap();
    let schema = table.metadata().current_schema();
    let field = |name: &str| schema.field_by_name(name).unwrap_or_else(|| panic!("no field {name}")).clone();
    assert_eq!(*field("id").field_type, Type::Primitive(PrimitiveType::String));
    assert!(field("id").required);
    assert_eq!(*field("ts").field_type, Type::Primitive(PrimitiveType::Timestamptz));
    assert_eq!(*field("amount").field_type, Type::Primitive(PrimitiveType::Int));
    assert!(field("coupon").id > field("amount").id, "evolved columns get fresh ids");

    let current = scan(&table, None).await;
    assert_eq!(sorted(strings(&current, "id")), ["a0", "a1", "a2", "b0", "b1"], "every id exactly once");
    let by_id: BTreeMap<String, String> =
        strings(&current, "id").into_iter().zip(strings(&current, "coupon")).collect();
    assert_eq!(by_id["b0"], "SPRING");
    assert_eq!(by_id["a0"], "", "files older than a column read it as null");

    // Time travel: one snapshot per flush, each an append.
    let mut snapshots: Vec<_> = table.metadata().snapshots().cloned().collect();
    snapshots.sort_by_key(|s| s.sequence_number());
    assert_eq!(snapshots.len(), 2);
    assert!(snapshots.iter().all(|s| s.summary().operation == Operation::Append));
    let oldest = scan(&table, Some(snapshots[0].snapshot_id())).await;
    assert_eq!(sorted(strings(&oldest, "id")), ["a0", "a1", "a2"]);

    // Compaction rewrites the files without changing the rows: `replace`.
    let maintain = json!({ "keepLast": 100, "orphanMinAgeMs": 3_600_000 });
    let r = server.post_json("/tables/maintain", &server.admin_for(&ns), &maintain).await;
    assert_eq!(r.expect(200)["reports"][0]["compacted_inputs"], 2, "{}", r.text);
    let table = catalog.load_table(&tables[0]).await.unwrap();
    let snapshot = table.metadata().current_snapshot().unwrap();
    assert_eq!(snapshot.summary().operation, Operation::Replace);
    let compacted = scan(&table, None).await;
    assert_eq!(sorted(strings(&compacted, "id")), ["a0", "a1", "a2", "b0", "b1"]);

    // Another tenant's key cannot load this table.
    let other = server.create_key(&unique_ns("ice-rs-other")).await;
    let foreign = rest_catalog(&server, &other.key).await;
    assert!(foreign.load_table(&tables[0]).await.is_err(), "a key never loads another namespace's table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_rust_reads_a_cdc_collection_and_sees_each_compaction_as_the_data_change_it_is() {
    if skip_on_external(EXTERNAL) {
        return;
    }
    let server = TestServer::start().await;
    let ns = unique_ns("ice-rs-cdc");
    let key = server.create_key(&ns).await;
    let change = |op: &str, id: &str, doc: Value| {
        let mut e =
            json!({ "type": format!("collection.{op}"), "ts": iso_now(), "collection": "accounts", "docId": id });
        if !doc.is_null() {
            e["doc"] = doc;
        }
        e
    };
    let inserts: Vec<Value> =
        ["u1", "u2", "u3"].iter().map(|id| change("insert", id, json!({ "plan": "free" }))).collect();
    server.ingest_ok(&key.auth(), &inserts).await;
    server.compact_collection(&key.auth(), &ns, "accounts", 3).await;
    let changes = [change("update", "u1", json!({ "plan": "pro" })), change("delete", "u3", Value::Null)];
    server.ingest_ok(&key.auth(), &changes).await;
    server.compact_collection(&key.auth(), &ns, "accounts", 5).await;

    let catalog = rest_catalog(&server, &key.key).await;
    let ident = TableIdent::new(NamespaceIdent::new(ns.clone()), "cdc_accounts".to_string());
    let table = catalog.load_table(&ident).await.unwrap();
    let current = scan(&table, None).await;
    let state: BTreeMap<String, Value> = strings(&current, "id")
        .into_iter()
        .zip(strings(&current, "data").iter().map(|d| serde_json::from_str(d).unwrap()))
        .collect();
    assert_eq!(
        state,
        BTreeMap::from([("u1".to_string(), json!({ "plan": "pro" })), ("u2".to_string(), json!({ "plan": "free" }))]),
        "the state after the second compaction: u1 updated, u3 deleted"
    );

    // The first compaction only adds rows; the second adds and removes them,
    // which incremental readers must see: `overwrite`, never `replace`.
    let mut snapshots: Vec<_> = table.metadata().snapshots().cloned().collect();
    snapshots.sort_by_key(|s| s.sequence_number());
    let operations: Vec<Operation> = snapshots.iter().map(|s| s.summary().operation.clone()).collect();
    assert_eq!(operations, [Operation::Append, Operation::Overwrite]);
    let first = scan(&table, Some(snapshots[0].snapshot_id())).await;
    assert_eq!(sorted(strings(&first, "id")), ["u1", "u2", "u3"], "time travel to the first compaction");
}
