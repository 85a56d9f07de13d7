//! Queries over real event files in an in-memory lake: event times of old
//! and new files, result columns as the query names them.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use events_core::{Event, Timestamp};
use events_query::output::{OutputFormat, ResultEncoder};
use events_query::{QueryLimits, QueryTable, run_query};
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

const T0: i64 = 1_800_000_000_123;

fn event(id: &str, ts: i64, data: Value) -> Event {
    Event {
        id: id.into(),
        ns: "acme".into(),
        ts: Timestamp(ts),
        event_type: "order.placed".into(),
        source: None,
        data: data.as_object().unwrap().clone(),
    }
}

/// An event file as written before `ts` was stored in microseconds.
fn millisecond_file(events: &[Event]) -> Vec<u8> {
    let file = events_lake::encode_events(&events.iter().collect::<Vec<_>>()).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
    let batch = builder.build().unwrap().next().unwrap().unwrap();
    let old_type = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(
            |f| if f.name() == "ts" { f.as_ref().clone().with_data_type(old_type.clone()) } else { f.as_ref().clone() },
        )
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.as_any().downcast_ref::<TimestampMicrosecondArray>() {
            Some(us) => Arc::new(
                TimestampMillisecondArray::from(us.values().iter().map(|v| v / 1000).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ) as ArrayRef,
            None => c.clone(),
        })
        .collect();
    let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), None).unwrap();
    w.write(&RecordBatch::try_new(schema, columns).unwrap()).unwrap();
    w.into_inner().unwrap()
}

/// A lake holding `files` as the `events` table (with the table's current schema).
async fn lake(files: Vec<(&str, Vec<u8>)>) -> (Arc<dyn ObjectStore>, Vec<QueryTable>) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut keys = Vec::new();
    for (key, bytes) in files {
        store.put(&key.into(), PutPayload::from(bytes)).await.unwrap();
        keys.push(key.to_string());
    }
    let arrow = events_lake::event_schema();
    let iceberg = events_objects_schema(&arrow);
    let schema = events_query::arrow_schema(&iceberg).unwrap();
    (store, vec![QueryTable { name: "events".into(), schema, files: keys }])
}

/// The Iceberg schema of the events table (as the catalog declares it).
fn events_objects_schema(arrow: &Schema) -> events_iceberg::metadata::Schema {
    let fields = arrow
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = match f.data_type() {
                DataType::Timestamp(_, Some(_)) => "timestamptz",
                DataType::Int32 => "int",
                DataType::Float64 => "double",
                _ => "string",
            };
            events_iceberg::metadata::NestedField {
                id: i as i32 + 1,
                name: f.name().clone(),
                required: !f.is_nullable(),
                field_type: Value::String(ty.into()),
                doc: None,
            }
        })
        .collect();
    events_iceberg::metadata::Schema::new(0, fields)
}

/// Runs `sql` and answers the result in `format`, as text (or bytes).
async fn run(store: Arc<dyn ObjectStore>, tables: Vec<QueryTable>, sql: &str, format: OutputFormat) -> Vec<u8> {
    let (schema, mut stream) = run_query(store, tables, sql, QueryLimits::default(), None).await.unwrap();
    let mut enc = ResultEncoder::new(format, schema).unwrap();
    let mut out = enc.start().unwrap();
    while let Some(batch) = stream.next().await {
        out.extend(enc.batch(&batch.unwrap()).unwrap());
    }
    out.extend(enc.finish().unwrap());
    out
}

#[tokio::test]
async fn old_millisecond_files_and_new_microsecond_files_read_as_one_table() {
    let new = events_lake::encode_events(&[&event("b", T0 + 1, json!({}))]).unwrap();
    let old = millisecond_file(&[event("a", T0, json!({}))]);
    let (store, tables) = lake(vec![("events/old.parquet", old), ("events/new.parquet", new)]).await;
    assert_eq!(
        tables[0].schema.field_with_name("ts").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let sql = "SELECT id, CAST(ts AS BIGINT) AS us, ts FROM events ORDER BY id";
    let out = run(store.clone(), tables.clone(), sql, OutputFormat::Json).await;
    let rows: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(rows[0]["id"], "a");
    assert_eq!(rows[0]["us"], json!(T0 * 1000), "{rows}");
    assert_eq!(rows[1]["us"], json!((T0 + 1) * 1000), "{rows}");
    assert_eq!(rows[0]["ts"], "2027-01-15T08:00:00.123Z", "{rows}");
    // Filters on time see both files alike.
    let sql = format!("SELECT count(*) AS n FROM events WHERE ts >= to_timestamp_millis({T0})");
    let out = run(store, tables, &sql, OutputFormat::Json).await;
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), json!([{"n": 2}]));
}

#[tokio::test]
async fn every_format_keeps_null_columns_in_select_order() {
    let (store, tables) = lake(vec![]).await;
    let sql = "SELECT 2 AS z, CAST(NULL AS BIGINT) AS b, 'x' AS a, CAST(NULL AS VARCHAR) AS c \
               UNION ALL SELECT 3, 4, NULL, 'y' ORDER BY z";
    let json = run(store.clone(), tables.clone(), sql, OutputFormat::Json).await;
    assert_eq!(
        String::from_utf8(json).unwrap(),
        "[{\"z\":2,\"b\":null,\"a\":\"x\",\"c\":null},{\"z\":3,\"b\":4,\"a\":null,\"c\":\"y\"}]\n"
    );
    let nd = run(store.clone(), tables.clone(), sql, OutputFormat::Ndjson).await;
    assert_eq!(
        String::from_utf8(nd).unwrap(),
        "{\"z\":2,\"b\":null,\"a\":\"x\",\"c\":null}\n{\"z\":3,\"b\":4,\"a\":null,\"c\":\"y\"}\n"
    );
    let csv = run(store.clone(), tables.clone(), sql, OutputFormat::Csv).await;
    assert_eq!(String::from_utf8(csv).unwrap(), "z,b,a,c\n2,,x,\n3,4,,y\n");
    let arrow = run(store.clone(), tables.clone(), sql, OutputFormat::Arrow).await;
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow), None).unwrap();
    let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["z", "b", "a", "c"]);
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 2);
    assert_eq!((batch.column(1).null_count(), batch.column(2).null_count(), batch.column(3).null_count()), (1, 1, 1));
    // An untyped NULL in every format.
    let sql = "SELECT NULL AS n, 1 AS one";
    let csv = run(store.clone(), tables.clone(), sql, OutputFormat::Csv).await;
    assert_eq!(String::from_utf8(csv).unwrap(), "n,one\n,1\n");
    let nd = run(store.clone(), tables.clone(), sql, OutputFormat::Ndjson).await;
    assert_eq!(String::from_utf8(nd).unwrap(), "{\"n\":null,\"one\":1}\n");
    run(store.clone(), tables.clone(), sql, OutputFormat::Arrow).await;
    // The example: a null column is not dropped.
    let one = run(store, tables, "SELECT 1 AS a, CAST(NULL AS BIGINT) AS b", OutputFormat::Json).await;
    assert_eq!(serde_json::from_slice::<Value>(&one).unwrap(), json!([{"a": 1, "b": null}]));
    assert_eq!(String::from_utf8(one).unwrap(), "[{\"a\":1,\"b\":null}]\n");
}

/// Events whose `data` covers the shapes JSON functions meet.
fn json_lake_events() -> Vec<Event> {
    vec![
        event(
            "e1",
            T0,
            json!({"user": {"id": "u1", "plan": "pro", "tags": ["a", "b"]}, "amount": 12, "price": 2.5, "ok": true}),
        ),
        event("e2", T0 + 1, json!({"user": {"id": "u2"}, "amount": "n/a", "ok": false})),
        event("e3", T0 + 2, json!({"user": "not an object", "items": [{"sku": "x"}, {"sku": "y"}]})),
        event("e4", T0 + 3, json!({"user": null})),
        event("e5", T0 + 4, json!({})),
    ]
}

async fn json_rows(sql: &str) -> Value {
    let file = events_lake::encode_events(&json_lake_events().iter().collect::<Vec<_>>()).unwrap();
    let (store, tables) = lake(vec![("events/f.parquet", file)]).await;
    serde_json::from_slice(&run(store, tables, sql, OutputFormat::Json).await).unwrap()
}

async fn query_error(sql: &str) -> events_core::ApiError {
    let file = events_lake::encode_events(&json_lake_events().iter().collect::<Vec<_>>()).unwrap();
    let (store, tables) = lake(vec![("events/f.parquet", file)]).await;
    let (_, mut stream) = match run_query(store, tables, sql, QueryLimits::default(), None).await {
        Ok(started) => started,
        Err(e) => return e,
    };
    while let Some(batch) = stream.next().await {
        if let Err(e) = batch {
            return events_query::datafusion_error(e);
        }
    }
    panic!("{sql} did not fail")
}

#[tokio::test]
async fn json_functions_read_nested_data_missing_paths_and_other_kinds() {
    let rows = json_rows(
        "SELECT id, json_get_str(data, 'user', 'id') AS uid, data->'user'->>'plan' AS plan, \
         json_get_int(data, 'amount') AS amount, json_get_float(data, 'price') AS price, \
         json_get_bool(data, 'ok') AS ok, json_contains(data, 'user') AS has_user, \
         json_get_str(data, 'user', 'tags', 1) AS tag, json_length(data, 'user', 'tags') AS ntags, \
         data->>'amount' AS amount_text, json_get_json(data, 'items', 0) AS first_item \
         FROM events ORDER BY id",
    )
    .await;
    let want = json!([
        {"id": "e1", "uid": "u1", "plan": "pro", "amount": 12, "price": 2.5, "ok": true, "has_user": true,
         "tag": "b", "ntags": 2, "amount_text": "12", "first_item": null},
        // A string where a number is wanted: null, never an error.
        {"id": "e2", "uid": "u2", "plan": null, "amount": null, "price": null, "ok": false, "has_user": true,
         "tag": null, "ntags": null, "amount_text": "n/a", "first_item": null},
        // A path through a non-object: null.
        {"id": "e3", "uid": null, "plan": null, "amount": null, "price": null, "ok": null, "has_user": true,
         "tag": null, "ntags": null, "amount_text": null, "first_item": {"sku": "x"}},
        {"id": "e4", "uid": null, "plan": null, "amount": null, "price": null, "ok": null, "has_user": true,
         "tag": null, "ntags": null, "amount_text": null, "first_item": null},
        // Missing paths: null.
        {"id": "e5", "uid": null, "plan": null, "amount": null, "price": null, "ok": null, "has_user": false,
         "tag": null, "ntags": null, "amount_text": null, "first_item": null},
    ]);
    assert_eq!(rows, want);
    // `->` keeps the JSON kind: in JSON output a number is a number, an object an object.
    let rows =
        json_rows("SELECT id, data->'amount' AS a, data->'user' AS u FROM events WHERE id IN ('e1', 'e2') ORDER BY id")
            .await;
    assert_eq!(
        rows,
        json!([
            {"id": "e1", "a": 12, "u": {"id": "u1", "plan": "pro", "tags": ["a", "b"]}},
            {"id": "e2", "a": "n/a", "u": {"id": "u2"}},
        ])
    );
    // Filters and aggregates over JSON paths.
    let rows = json_rows(
        "SELECT json_get_str(data, 'user', 'id') AS uid, sum(json_get_int(data, 'amount')) AS total \
         FROM events WHERE json_contains(data, 'amount') GROUP BY uid ORDER BY uid",
    )
    .await;
    assert_eq!(rows, json!([{"uid": "u1", "total": 12}, {"uid": "u2", "total": null}]));
    let rows = json_rows("SELECT count(*) AS n FROM events WHERE data->>'ok' = 'true'").await;
    assert_eq!(rows, json!([{"n": 1}]));
    // The read-only guard admits them.
    for sql in
        ["SELECT data->'a' FROM events", "SELECT data->>'a' FROM events", "SELECT json_get(data, 'a', 0) FROM events"]
    {
        events_query::check_read_only(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

#[tokio::test]
async fn json_values_in_csv_and_arrow() {
    let file = events_lake::encode_events(&json_lake_events().iter().collect::<Vec<_>>()).unwrap();
    let (store, tables) = lake(vec![("events/f.parquet", file)]).await;
    let sql = "SELECT id, data->'user' AS u, data->'amount' AS a FROM events WHERE id IN ('e1', 'e2') ORDER BY id";
    let csv = String::from_utf8(run(store.clone(), tables.clone(), sql, OutputFormat::Csv).await).unwrap();
    assert_eq!(
        csv,
        "id,u,a\ne1,\"{\"\"id\"\":\"\"u1\"\",\"\"plan\"\":\"\"pro\"\",\"\"tags\"\":[\"\"a\"\",\"\"b\"\"]}\",12\ne2,\"{\"\"id\"\":\"\"u2\"\"}\",n/a\n"
    );
    let arrow = run(store, tables, sql, OutputFormat::Arrow).await;
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow), None).unwrap();
    let schema = reader.schema();
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert_eq!(schema.field(1).metadata().get("ARROW:extension:name").map(String::as_str), Some("arrow.json"));
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let a = batches[0].column(2).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap();
    assert_eq!((a.value(0), a.value(1)), ("12", "\"n/a\""));
}

#[tokio::test]
async fn user_errors_in_sql_are_invalid_queries() {
    for sql in [
        "SELECT get_field(data, 'a') FROM events",
        "SELECT get_field(id) FROM events",
        "SELECT json_get_str(42, 'a') FROM events",
        "SELECT json_get_str(data, 1.5) FROM events",
        "SELECT json_get_int() FROM events",
        "SELECT no_such_function(data) FROM events",
        "SELECT nope FROM events",
        "SELECT CAST(data AS INT) FROM events",
        "SELECT 1 / 0",
        "SELECT data + 1 FROM events",
        "SELECT date_trunc('fortnight', ts) FROM events",
        "SELECT * FROM no_such_table",
    ] {
        let e = query_error(sql).await;
        assert_eq!(e.code, events_core::ErrorCode::InvalidQuery, "{sql}: {e:?}");
    }
}

/// A table of many files, queried twice so the footer and statistics caches
/// are warm, then one of its files vanishes: a count that the cached footers
/// could answer fails with the missing file's key instead.
#[tokio::test]
async fn a_file_missing_from_a_large_table_fails_the_query_even_with_warm_caches() {
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|h| {
            let file = events_lake::encode_events(&[&event(&format!("e{h}"), T0 + h, json!({}))]).unwrap();
            (format!("events/ns=acme/2027-01-15/{h:02}/part.parquet"), file)
        })
        .collect();
    let (store, tables) = lake(files.iter().map(|(k, f)| (k.as_str(), f.clone())).collect()).await;
    let caches = events_query::QueryCaches::default();
    let count = |tables: Vec<QueryTable>| {
        let (store, caches) = (store.clone(), caches.for_namespace("acme"));
        async move {
            let sql = "SELECT count(*) AS n FROM events";
            let (_, mut stream) = run_query(store, tables, sql, QueryLimits::default(), Some(caches)).await?;
            let batch = stream.next().await.expect("one batch").map_err(events_query::datafusion_error)?;
            let n = batch.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(0);
            Ok::<i64, events_core::ApiError>(n)
        }
    };
    assert_eq!(count(tables.clone()).await.unwrap(), 24);
    assert_eq!(count(tables.clone()).await.unwrap(), 24, "again, from warm caches");
    let gone = &files[7].0;
    store.delete(&gone.as_str().into()).await.unwrap();
    let e = count(tables).await.expect_err("a missing file never counts as empty");
    assert_eq!(e.code, events_core::ErrorCode::DataFileMissing, "{e}");
    assert_eq!(e.details["key"], json!(gone), "{e}");
}
