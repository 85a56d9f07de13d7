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
    // The example: a null column is not dropped.
    let one = run(store, tables, "SELECT 1 AS a, CAST(NULL AS BIGINT) AS b", OutputFormat::Json).await;
    assert_eq!(serde_json::from_slice::<Value>(&one).unwrap(), json!([{"a": 1, "b": null}]));
    assert_eq!(String::from_utf8(one).unwrap(), "[{\"a\":1,\"b\":null}]\n");
}
