//! Reading event files back: the events themselves, or only the footer's stats.

use arrow_array::{Array, RecordBatch, StringArray};
use bytes::Bytes;
use events_core::{Event, Timestamp};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::FOOTER_SIZE;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use serde_json::{Map, Value};

use crate::encode::{FORMAT_VERSION, META_COUNT, META_FORMAT, META_MAX_TS, META_MIN_TS};
use crate::error::LakeError;
use crate::schema::*;

/// Rows decoded into one Arrow batch at a time while reading.
pub const DECODE_BATCH_ROWS: usize = 8 * 1024;

/// What an event file's footer says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStats {
    /// The number of events.
    pub rows: usize,
    /// The smallest `ts`; `None` when the file is empty.
    pub min_ts: Option<Timestamp>,
    /// The largest `ts`; `None` when the file is empty.
    pub max_ts: Option<Timestamp>,
}

/// Reads the row count and time range of an event file from its footer
/// alone, without decoding any data page.
///
/// Fails with [`LakeError::Corrupt`] when the file is not an event file of
/// format [`FORMAT_VERSION`] or its metadata disagrees with its row count.
pub fn file_stats(bytes: &[u8]) -> Result<FileStats, LakeError> {
    stats_of(&read_footer(bytes)?)
}

/// Decodes an event file written by [`encode_events`](crate::encode_events)
/// back into its events, in file order: sorted by `(ts, id)`.
///
/// Copies `bytes` once; [`decode_events_bytes`] takes an owned buffer instead.
pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, LakeError> {
    decode_events_bytes(Bytes::copy_from_slice(bytes))
}

/// [`decode_events`] without the copy, for a file already held as [`Bytes`]
/// (as object stores return it).
///
/// Only the six event columns are read; the typed columns are derived from
/// `data`, so they are skipped.
pub fn decode_events_bytes(bytes: Bytes) -> Result<Vec<Event>, LakeError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let stats = stats_of(builder.metadata())?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), EVENT_COLUMNS);
    let reader = builder.with_projection(mask).with_batch_size(DECODE_BATCH_ROWS).build()?;
    let mut events = Vec::with_capacity(stats.rows);
    for batch in reader {
        append_events(&batch?, &mut events)?;
    }
    if events.len() != stats.rows {
        return Err(LakeError::Corrupt(format!("{} rows read, footer says {}", events.len(), stats.rows)));
    }
    Ok(events)
}

/// Parses the Parquet footer at the end of `bytes`.
fn read_footer(bytes: &[u8]) -> Result<ParquetMetaData, LakeError> {
    let body_len = bytes
        .len()
        .checked_sub(FOOTER_SIZE)
        .ok_or_else(|| LakeError::Corrupt(format!("{} bytes is too short for Parquet", bytes.len())))?;
    let metadata_len = FooterTail::try_from(&bytes[body_len..])?.metadata_length();
    let start = body_len
        .checked_sub(metadata_len)
        .ok_or_else(|| LakeError::Corrupt(format!("footer of {metadata_len} bytes is longer than the file")))?;
    Ok(ParquetMetaDataReader::decode_metadata(&bytes[start..body_len])?)
}

/// Checks the format marker and reads the stats from the footer metadata.
fn stats_of(metadata: &ParquetMetaData) -> Result<FileStats, LakeError> {
    let file = metadata.file_metadata();
    let kv = file.key_value_metadata();
    let get = |key: &str| kv.and_then(|kv| kv.iter().find(|e| e.key == key)).and_then(|e| e.value.as_deref());
    let corrupt = |why: String| Err(LakeError::Corrupt(why));
    match get(META_FORMAT) {
        Some(FORMAT_VERSION) => {}
        Some(other) => return corrupt(format!("format {other:?} is not {FORMAT_VERSION:?}")),
        None => return corrupt(format!("no {META_FORMAT} metadata: not an event file")),
    }
    let number = |key: &str| -> Result<i64, LakeError> {
        let text = get(key).ok_or_else(|| LakeError::Corrupt(format!("no {key} metadata")))?;
        text.parse().map_err(|_| LakeError::Corrupt(format!("{key} is {text:?}, not an integer")))
    };
    let rows = file.num_rows();
    let count = number(META_COUNT)?;
    if count != rows || rows < 0 {
        return corrupt(format!("{META_COUNT} is {count} but the file has {rows} rows"));
    }
    let (min_ts, max_ts) = if rows == 0 {
        (None, None)
    } else {
        (Some(Timestamp(number(META_MIN_TS)?)), Some(Timestamp(number(META_MAX_TS)?)))
    };
    Ok(FileStats { rows: rows as usize, min_ts, max_ts })
}

/// Turns one batch of the event columns into events.
fn append_events(batch: &RecordBatch, events: &mut Vec<Event>) -> Result<(), LakeError> {
    let id = column::<StringArray>(batch, COL_ID)?;
    let ns = column::<StringArray>(batch, COL_NS)?;
    let ts = ts_column(batch, COL_TS).ok_or_else(|| LakeError::Corrupt(format!("no timestamp column {COL_TS:?}")))?;
    let ty = column::<StringArray>(batch, COL_TYPE)?;
    let source = column::<StringArray>(batch, COL_SOURCE)?;
    let data = column::<StringArray>(batch, COL_DATA)?;
    let required: [(&dyn Array, &str); 5] =
        [(id, COL_ID), (ns, COL_NS), (ts.array(), COL_TS), (ty, COL_TYPE), (data, COL_DATA)];
    if let Some((_, name)) = required.iter().find(|(col, _)| col.null_count() > 0) {
        return Err(LakeError::Corrupt(format!("column {name:?} has nulls")));
    }
    for row in 0..batch.num_rows() {
        events.push(Event {
            id: id.value(row).to_string(),
            ns: ns.value(row).to_string(),
            ts: Timestamp(ts.millis(row)),
            event_type: ty.value(row).to_string(),
            source: source.is_valid(row).then(|| source.value(row).to_string()),
            data: serde_json::from_str::<Map<String, Value>>(data.value(row))?,
        });
    }
    Ok(())
}

/// The column `name` of `batch` as an array of type `T`.
fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, LakeError> {
    let col = batch.column_by_name(name).ok_or_else(|| LakeError::Corrupt(format!("no column {name:?}")))?;
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| LakeError::Corrupt(format!("column {name:?} has the wrong type {}", col.data_type())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode_events;
    use crate::testdata::{refs, sorted, varied_events};
    use arrow_array::{ArrayRef, Int32Array};
    use parquet::arrow::ArrowWriter;
    use std::sync::Arc;

    #[test]
    fn round_trips_varied_events_losslessly() {
        let events = varied_events(1_000, 7);
        assert!(events.iter().any(|e| e.source.is_none()) && events.iter().any(|e| e.data.is_empty()));
        let file = encode_events(&refs(&events)).unwrap();
        let back = decode_events(&file).unwrap();
        let expected = sorted(&events);
        // Compare one by one first, for a readable failure.
        for (got, want) in back.iter().zip(&expected) {
            assert_eq!(got, want);
        }
        assert_eq!(back, expected);
        assert_eq!(decode_events_bytes(Bytes::from(file)).unwrap(), expected);
    }

    #[test]
    fn file_stats_match_the_events() {
        let events = varied_events(500, 8);
        let file = encode_events(&refs(&events)).unwrap();
        let stats = file_stats(&file).unwrap();
        assert_eq!(
            stats,
            FileStats {
                rows: 500,
                min_ts: events.iter().map(|e| e.ts).min(),
                max_ts: events.iter().map(|e| e.ts).max(),
            }
        );
        assert_eq!(stats.rows, decode_events(&file).unwrap().len());
    }

    #[test]
    fn files_with_millisecond_times_still_read() {
        let events = varied_events(300, 5);
        let old = crate::testdata::with_millisecond_ts(&encode_events(&refs(&events)).unwrap());
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(&old)).unwrap();
        assert_eq!(
            builder.schema().field_with_name(COL_TS).unwrap().data_type(),
            &arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into())),
            "the file is of the old kind"
        );
        assert_eq!(decode_events(&old).unwrap(), sorted(&events));
        assert_eq!(file_stats(&old).unwrap().rows, 300);
        // Compaction reads old and new files together and writes microseconds.
        let new = encode_events(&refs(&varied_events(50, 6))).unwrap();
        let (merged, rows) = crate::merge_event_files(&[old, new]).unwrap();
        assert_eq!(rows, 350);
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(merged)).unwrap();
        assert_eq!(builder.schema().field_with_name(COL_TS).unwrap().data_type(), &ts_data_type());
    }

    #[test]
    fn refuses_what_is_not_an_event_file() {
        let events = varied_events(50, 9);
        let file = encode_events(&refs(&events)).unwrap();

        for bad in [&b""[..], b"PAR1", b"not parquet at all, just some text", &file[..file.len() / 2]] {
            assert!(decode_events(bad).is_err());
            assert!(file_stats(bad).is_err());
        }

        // Valid Parquet, but not written by encode_events.
        let col: ArrayRef = Arc::new(Int32Array::from(vec![1, 2, 3]));
        let batch = RecordBatch::try_from_iter([("x", col)]).unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        let foreign = writer.into_inner().unwrap();
        assert!(matches!(decode_events(&foreign), Err(LakeError::Corrupt(_))));
        assert!(matches!(file_stats(&foreign), Err(LakeError::Corrupt(_))));
    }
}
