//! Writing event batches as one Parquet file.
//!
//! Rows are sorted by `(ts, id)` and the file says so in its row-group
//! `sorting_columns`. Every column is Snappy-compressed with min/max
//! statistics per page (the column index), so readers can skip pages by
//! time. The footer's key-value metadata names the format and carries the
//! row count and time range, which [`file_stats`](crate::file_stats) reads
//! without touching the data.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int32Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use events_core::Event;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use arrow_schema::{Field, Schema, SchemaRef};

use crate::columns::{DataColumn, DataColumnBuilder, data_column_field};
use crate::error::LakeError;
use crate::schema::*;
use crate::view::{EventView, MemberPlan};

/// Footer metadata key: the file format and its version, [`FORMAT_VERSION`].
pub const META_FORMAT: &str = "events.format";
/// Footer metadata key: the number of events in the file.
pub const META_COUNT: &str = "events.count";
/// Footer metadata key: the smallest `ts`, in ms since the epoch (absent when the file is empty).
pub const META_MIN_TS: &str = "events.min_ts";
/// Footer metadata key: the largest `ts`, in ms since the epoch (absent when the file is empty).
pub const META_MAX_TS: &str = "events.max_ts";
/// The value of [`META_FORMAT`] in files this crate writes and reads.
pub const FORMAT_VERSION: &str = "events-do/1";

/// The compression codec of every column.
pub const COMPRESSION: Compression = Compression::SNAPPY;
/// Statistics level: min/max per page, so readers can skip pages, not only row groups.
pub const STATISTICS: EnabledStatistics = EnabledStatistics::Page;
/// Longest min/max value kept in statistics, in bytes (long strings are truncated).
pub const STATISTICS_TRUNCATE_BYTES: usize = 64;
/// Most rows in one row group.
pub const MAX_ROW_GROUP_ROWS: usize = 128 * 1024;
/// Most rows in one data page: the granularity of page statistics.
pub const DATA_PAGE_ROW_LIMIT: usize = 20_000;
/// Rows turned into one Arrow batch at a time while writing, to bound memory.
pub const ENCODE_CHUNK_ROWS: usize = 64 * 1024;
/// Columns written with dictionary encoding: few distinct values per file.
/// Every other column is written without a dictionary.
pub const DICTIONARY_COLUMNS: &[&str] =
    &[COL_NS, COL_TYPE, COL_SOURCE, COL_USER_ID, COL_SESSION_ID, COL_COLLECTION, COL_PROVIDER, COL_STATUS_CODE];
/// Encoding of `ts`: sorted times are small deltas.
pub const TS_ENCODING: Encoding = Encoding::DELTA_BINARY_PACKED;
/// Encoding of `id`: ULIDs sorted by time share long prefixes.
pub const ID_ENCODING: Encoding = Encoding::DELTA_BYTE_ARRAY;

/// The writer settings of every event file.
fn writer_properties() -> WriterProperties {
    let schema = event_schema();
    // The schema is flat, so an Arrow field's index is its Parquet leaf column index.
    let leaf = |name: &str| schema.index_of(name).expect("sort column is in the schema") as i32;
    let ascending = |column_idx| SortingColumn { column_idx, descending: false, nulls_first: false };
    let mut props = WriterProperties::builder()
        .set_compression(COMPRESSION)
        .set_statistics_enabled(STATISTICS)
        .set_statistics_truncate_length(Some(STATISTICS_TRUNCATE_BYTES))
        .set_column_index_truncate_length(Some(STATISTICS_TRUNCATE_BYTES))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(DATA_PAGE_ROW_LIMIT)
        .set_dictionary_enabled(false)
        .set_column_encoding(ColumnPath::from(COL_TS), TS_ENCODING)
        .set_column_encoding(ColumnPath::from(COL_ID), ID_ENCODING)
        .set_sorting_columns(Some(vec![ascending(leaf(COL_TS)), ascending(leaf(COL_ID))]));
    for name in DICTIONARY_COLUMNS {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*name), true);
    }
    props.build()
}

/// Encodes events as one Parquet file, rows sorted by `(ts, id)`.
///
/// The events need not share a namespace or hour, though the partition
/// layout ([`partition_by_hour`](crate::partition_by_hour)) writes one file
/// per namespace and hour. An empty slice gives a valid file with no rows.
pub fn encode_events(events: &[&Event]) -> Result<Vec<u8>, LakeError> {
    encode_events_with(events, &[])
}

/// The Arrow schema of a file with data columns: [`event_schema`] followed by `columns`.
pub fn file_schema(columns: &[DataColumn]) -> SchemaRef {
    if columns.is_empty() {
        return event_schema();
    }
    let mut fields: Vec<Field> = event_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(columns.iter().map(data_column_field));
    Arc::new(Schema::new(fields))
}

/// Encodes events as one Parquet file with the fixed columns followed by
/// the data columns `columns` (see [`crate::columns`]), rows sorted by `(ts, id)`.
pub fn encode_events_with<E: EventView>(events: &[&E], columns: &[DataColumn]) -> Result<Vec<u8>, LakeError> {
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| (a.ts(), a.id()).cmp(&(b.ts(), b.id())));

    let schema = file_schema(columns);
    let plan = MemberPlan::new(typed_member_names().chain(columns.iter().map(|c| c.name.as_str())));
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(writer_properties()))?;
    for chunk in sorted.chunks(ENCODE_CHUNK_ROWS) {
        writer.write(&record_batch(chunk, columns, &plan, &schema)?)?;
    }
    writer.append_key_value_metadata(KeyValue::new(META_FORMAT.into(), FORMAT_VERSION.to_string()));
    writer.append_key_value_metadata(KeyValue::new(META_COUNT.into(), sorted.len().to_string()));
    if let (Some(first), Some(last)) = (sorted.first(), sorted.last()) {
        writer.append_key_value_metadata(KeyValue::new(META_MIN_TS.into(), first.ts().as_millis().to_string()));
        writer.append_key_value_metadata(KeyValue::new(META_MAX_TS.into(), last.ts().as_millis().to_string()));
    }
    Ok(writer.into_inner()?)
}

/// One Arrow batch of [`file_schema`] for `events`: the fixed columns, then
/// the data `columns`. Each event's members are read once, with `plan`
/// (which holds the typed columns' and the data columns' names).
fn record_batch<E: EventView>(
    events: &[&E],
    columns: &[DataColumn],
    plan: &MemberPlan,
    schema: &SchemaRef,
) -> Result<RecordBatch, LakeError> {
    let n = events.len();
    let strings = || StringBuilder::with_capacity(n, 0);
    let (mut id, mut ns, mut ty, mut source, mut data) = (strings(), strings(), strings(), strings(), strings());
    let (mut user_id, mut session_id, mut collection, mut doc_id, mut provider, mut url) =
        (strings(), strings(), strings(), strings(), strings(), strings());
    let mut status_code = Int32Builder::with_capacity(n);
    let mut duration_ms = Float64Builder::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let column_slots: Vec<usize> =
        columns.iter().map(|c| plan.slot(&c.name).expect("the plan holds every data column")).collect();
    let mut column_builders: Vec<DataColumnBuilder> =
        columns.iter().map(|c| DataColumnBuilder::new(c.kind, n)).collect();
    let mut members = Vec::with_capacity(plan.len());

    for event in events {
        id.append_value(event.id());
        ns.append_value(event.ns());
        ts.push(event.ts().as_millis());
        ty.append_value(event.event_type());
        source.append_option(event.source());
        data.append_value(event.data_json());

        members.clear();
        members.resize(plan.len(), None);
        event.read_members(plan, &mut members);
        for (builder, slot) in column_builders.iter_mut().zip(&column_slots) {
            builder.append(members[*slot].as_ref());
        }
        let derived = DerivedFields::from_members(*event, plan, &members);
        user_id.append_option(derived.user_id);
        session_id.append_option(derived.session_id);
        collection.append_option(derived.collection);
        doc_id.append_option(derived.doc_id);
        provider.append_option(derived.provider);
        url.append_option(derived.url);
        status_code.append_option(derived.status_code);
        duration_ms.append_option(derived.duration_ms);
    }

    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(ns.finish()),
        Arc::new(ts_array(ts)?),
        Arc::new(ty.finish()),
        Arc::new(source.finish()),
        Arc::new(data.finish()),
        Arc::new(user_id.finish()),
        Arc::new(session_id.finish()),
        Arc::new(collection.finish()),
        Arc::new(doc_id.finish()),
        Arc::new(provider.finish()),
        Arc::new(url.finish()),
        Arc::new(status_code.finish()),
        Arc::new(duration_ms.finish()),
    ];
    arrays.extend(column_builders.iter_mut().map(DataColumnBuilder::finish));
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_events, file_stats};
    use crate::testdata::{Rng, realistic_events, refs, sorted, varied_events};
    use arrow_array::{Array, Float64Array, Int32Array, StringArray};
    use arrow_schema::DataType;
    use bytes::Bytes;
    use events_core::Timestamp;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::{Value, json};

    /// Every column of a small file, as one batch.
    fn read_all(file: &[u8]) -> RecordBatch {
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(file)).unwrap();
        let mut batches: Vec<RecordBatch> =
            builder.with_batch_size(1 << 20).build().unwrap().map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1, "test files fit in one batch");
        batches.remove(0)
    }

    fn strings<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
        batch.column_by_name(name).unwrap().as_any().downcast_ref().unwrap()
    }

    fn event(id: &str, ms: i64, data: Value) -> Event {
        let Value::Object(data) = data else { panic!("data must be an object") };
        Event { id: id.into(), ns: "acme".into(), ts: Timestamp(ms), event_type: "t".into(), source: None, data }
    }

    #[test]
    fn written_columns_have_the_schema_types() {
        let events = varied_events(200, 1);
        let file = encode_events(&refs(&events)).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        let read: Vec<(String, DataType, bool)> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        let expected: Vec<(String, DataType, bool)> = event_schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(read, expected);
        assert_eq!(
            builder.schema().field_with_name(COL_TS).unwrap().data_type(),
            &DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()))
        );
        // In Parquet terms: TIMESTAMP(MICROS, adjusted to UTC), what Iceberg's `timestamptz` is.
        let leaf = builder.parquet_schema().column(event_schema().index_of(COL_TS).unwrap());
        assert_eq!(leaf.physical_type(), parquet::basic::Type::INT64);
        assert_eq!(
            leaf.logical_type_ref(),
            Some(&parquet::basic::LogicalType::Timestamp {
                is_adjusted_to_u_t_c: true,
                unit: parquet::basic::TimeUnit::MICROS
            })
        );
    }

    #[test]
    fn rows_are_sorted_by_ts_then_id() {
        // Same-millisecond events in reverse id order, and out-of-order times.
        let events = vec![
            event("b", 2_000, json!({})),
            event("c", 1_000, json!({})),
            event("a", 2_000, json!({})),
            event("a", 1_000, json!({})),
        ];
        let batch = read_all(&encode_events(&refs(&events)).unwrap());
        let ids: Vec<&str> = strings(&batch, COL_ID).iter().map(Option::unwrap).collect();
        assert_eq!(ids, ["a", "c", "a", "b"]);

        let events = varied_events(1_000, 2);
        let batch = read_all(&encode_events(&refs(&events)).unwrap());
        let ts = ts_column(&batch, COL_TS).unwrap();
        let ids = strings(&batch, COL_ID);
        let keys: Vec<(i64, &str)> = (0..batch.num_rows()).map(|i| (ts.millis(i), ids.value(i))).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "rows out of (ts, id) order");
    }

    #[test]
    fn typed_columns_are_extracted_and_null_on_wrong_type() {
        let events = vec![
            event(
                "1",
                1,
                json!({"userId": "u1", "sessionId": "s1", "collection": "orders", "docId": "d1", "provider": "stripe",
                       "url": "https://a.test/", "statusCode": 200, "durationMs": 1.5}),
            ),
            event(
                "2",
                2,
                json!({"user_id": "u2", "session_id": "s2", "doc_id": "d2", "status_code": 404, "duration_ms": 7}),
            ),
            event("3", 3, json!({"actor": {"id": "u3"}})),
            event(
                "4",
                4,
                json!({"userId": 5, "sessionId": false, "collection": {}, "docId": [1], "provider": null, "url": 9,
                       "statusCode": "200", "durationMs": "fast"}),
            ),
        ];
        let batch = read_all(&encode_events(&refs(&events)).unwrap());
        let col = |name: &str| -> Vec<Option<&str>> { strings(&batch, name).iter().collect() };
        assert_eq!(col(COL_USER_ID), [Some("u1"), Some("u2"), Some("u3"), None]);
        assert_eq!(col(COL_SESSION_ID), [Some("s1"), Some("s2"), None, None]);
        assert_eq!(col(COL_COLLECTION), [Some("orders"), None, None, None]);
        assert_eq!(col(COL_DOC_ID), [Some("d1"), Some("d2"), None, None]);
        assert_eq!(col(COL_PROVIDER), [Some("stripe"), None, None, None]);
        assert_eq!(col(COL_URL), [Some("https://a.test/"), None, None, None]);
        let status: Vec<Option<i32>> = batch
            .column_by_name(COL_STATUS_CODE)
            .unwrap()
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(status, [Some(200), Some(404), None, None]);
        let duration: Vec<Option<f64>> = batch
            .column_by_name(COL_DURATION_MS)
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(duration, [Some(1.5), Some(7.0), None, None]);
        // The envelope columns: source null when absent, data as compact JSON.
        assert_eq!(strings(&batch, COL_SOURCE).null_count(), 4);
        assert_eq!(strings(&batch, COL_DATA).value(2), r#"{"actor":{"id":"u3"}}"#);
    }

    #[test]
    fn footer_records_format_and_writer_settings() {
        let events = varied_events(300, 3);
        let file = encode_events(&refs(&events)).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        let meta = builder.metadata();
        let kv: Vec<(&str, &str)> = meta
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .filter(|e| e.key.starts_with("events."))
            .map(|e| (e.key.as_str(), e.value.as_deref().unwrap()))
            .collect();
        let min = events.iter().map(|e| e.ts.as_millis()).min().unwrap().to_string();
        let max = events.iter().map(|e| e.ts.as_millis()).max().unwrap().to_string();
        assert_eq!(
            kv,
            [
                (META_FORMAT, FORMAT_VERSION),
                (META_COUNT, "300"),
                (META_MIN_TS, min.as_str()),
                (META_MAX_TS, max.as_str())
            ]
        );

        let schema = event_schema();
        for rg in meta.row_groups() {
            let sorting = rg.sorting_columns().unwrap();
            assert_eq!(sorting.iter().map(|s| s.column_idx).collect::<Vec<_>>(), [2, 0], "sorted by ts, id");
            for (i, col) in rg.columns().iter().enumerate() {
                let name = schema.field(i).name().as_str();
                assert_eq!(col.compression(), Compression::SNAPPY, "{name}");
                assert!(col.statistics().is_some(), "{name} has chunk statistics");
                assert!(col.column_index_offset().is_some(), "{name} has page statistics (column index)");
                assert_eq!(
                    col.dictionary_page_offset().is_some(),
                    DICTIONARY_COLUMNS.contains(&name),
                    "{name} dictionary"
                );
                let encodings: Vec<Encoding> = col.encodings().collect();
                match name {
                    COL_TS => assert!(encodings.contains(&TS_ENCODING), "{name}: {encodings:?}"),
                    COL_ID => assert!(encodings.contains(&ID_ENCODING), "{name}: {encodings:?}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn empty_batch_is_a_valid_empty_file() {
        let file = encode_events(&[]).unwrap();
        assert_eq!(decode_events(&file).unwrap(), vec![]);
        let stats = file_stats(&file).unwrap();
        assert_eq!((stats.rows, stats.min_ts, stats.max_ts), (0, None, None));
    }

    #[test]
    fn batches_larger_than_one_chunk_stay_sorted_across_chunks() {
        // More rows than one encode chunk, in random time order: the file is sorted as a whole.
        let mut rng = Rng::new(9);
        let n = ENCODE_CHUNK_ROWS + 1_000;
        let events: Vec<Event> =
            (0..n).map(|i| event(&format!("{i:08}"), (rng.below(1_000_000)) as i64, json!({"i": i}))).collect();
        let file = encode_events(&refs(&events)).unwrap();
        assert_eq!(decode_events(&file).unwrap(), sorted(&events));
    }

    #[test]
    fn parquet_is_smaller_than_json() {
        let events = realistic_events(10_000, 4);
        let json_bytes: usize = events.iter().map(|e| serde_json::to_string(&e.to_json()).unwrap().len() + 1).sum();
        let parquet_bytes = encode_events(&refs(&events)).unwrap().len();
        let n = events.len() as f64;
        println!(
            "{} realistic events: NDJSON {:.1} bytes/event, Parquet {:.1} bytes/event ({:.1}x smaller)",
            events.len(),
            json_bytes as f64 / n,
            parquet_bytes as f64 / n,
            json_bytes as f64 / parquet_bytes as f64
        );
        assert!(parquet_bytes < json_bytes, "parquet {parquet_bytes} >= json {json_bytes}");
    }
}
