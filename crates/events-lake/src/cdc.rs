//! Change-capture files: delta files, state files (the compacted current
//! table and snapshots), the per-collection manifest, their keys, and the
//! streaming reconstruction of a collection at a point in time.
//!
//! # Layout (one folder per namespace and collection)
//! ```text
//! cdc/ns=<ns>/collection=<c>/manifest.json
//! cdc/ns=<ns>/collection=<c>/deltas/<first seq, 20 digits>.parquet
//! cdc/ns=<ns>/collection=<c>/current/<upto seq>.parquet          one row per live document
//! cdc/ns=<ns>/collection=<c>/current-tombstones/<upto seq>.parquet  deleted documents
//! cdc/ns=<ns>/collection=<c>/snapshots/<daily|monthly>/<YYYY-MM-DD|YYYY-MM>/data.parquet (+ tombstones.parquet)
//! ```
//! Every key is built by one function here, and each file kind is written by
//! one encoder: [`encode_delta_file`] and [`encode_state_file`].
//!
//! # Semantics
//! A document's state at time `T` is given by its change with the greatest
//! `(ts, seq)` among those with `ts <= T`: equal event times resolve in
//! favour of the change that was applied later (higher `seq`). Its version is
//! the number of its changes with `ts <= T`. A delete leaves a tombstone whose
//! data is the delete's `before` (if the producer sent one).
//!
//! A state file written "up to `seq` S" holds, per document, the winning
//! change among those with `seq <= S`, its version, and whether it is a
//! tombstone; `max_ts` is the greatest `ts` among those changes. It is a
//! valid base for any `T >= max_ts`: every change it folds has `ts <= T`, so
//! the state at `T` is the per-document winner of the base row and the
//! changes with `seq > S` and `ts <= T` ([`reconstruct`]).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{BooleanBuilder, Int64Builder, StringBuilder};
use arrow_array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use events_core::cdc::ChangeOp;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::LakeError;

/// Root folder of change-capture files.
pub const CDC_PREFIX: &str = "cdc";
/// Footer metadata key naming the kind of a change-capture file.
pub const META_CDC_FORMAT: &str = "events.cdc.format";
/// [`META_CDC_FORMAT`] of delta files.
pub const DELTA_FORMAT: &str = "events-do-cdc-delta/1";
/// [`META_CDC_FORMAT`] of state files (current table, snapshots).
pub const STATE_FORMAT: &str = "events-do-cdc-state/1";
/// Footer metadata key: the last `seq` a state file folds.
pub const META_UPTO_SEQ: &str = "events.cdc.upto_seq";
/// Rows per Arrow batch when writing and reading.
pub const CDC_BATCH_ROWS: usize = 8 * 1024;
/// Most rows in one row group.
pub const CDC_ROW_GROUP_ROWS: usize = 64 * 1024;
/// Format tag of [`CdcManifest`].
pub const MANIFEST_FORMAT: &str = "events-do-cdc-manifest/1";

/// Delta column: document id.
pub const COL_ID: &str = "id";
/// Delta column: `insert`, `update` or `delete`.
pub const COL_OP: &str = "op";
/// Column: event time (µs, UTC; files written before hold ms, read alike).
pub const COL_TS: &str = "ts";
/// Column: the processor's sequence number of the change.
pub const COL_SEQ: &str = "seq";
/// Delta column: the document before (JSON), if sent.
pub const COL_BEFORE: &str = "before";
/// Delta column: the document after (JSON), absent for deletes.
pub const COL_AFTER: &str = "after";
/// Column: the producer's bookmark.
pub const COL_BOOKMARK: &str = "bookmark";
/// State column: the document (JSON).
pub const COL_DATA: &str = "data";
/// State column: number of changes folded.
pub const COL_VERSION: &str = "version";
/// State column: whether the document is deleted.
pub const COL_DELETED: &str = "deleted";

fn ts_field() -> Field {
    Field::new(COL_TS, crate::schema::ts_data_type(), false)
}

static DELTA_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(COL_ID, DataType::Utf8, false),
        Field::new(COL_OP, DataType::Utf8, false),
        ts_field(),
        Field::new(COL_SEQ, DataType::Int64, false),
        Field::new(COL_BEFORE, DataType::Utf8, true),
        Field::new(COL_AFTER, DataType::Utf8, true),
        Field::new(COL_BOOKMARK, DataType::Utf8, true),
    ]))
});

static STATE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(COL_ID, DataType::Utf8, false),
        Field::new(COL_DATA, DataType::Utf8, true),
        Field::new(COL_VERSION, DataType::Int64, false),
        ts_field(),
        Field::new(COL_SEQ, DataType::Int64, false),
        Field::new(COL_BOOKMARK, DataType::Utf8, true),
        Field::new(COL_DELETED, DataType::Boolean, false),
    ]))
});

/// The Arrow schema of delta files: `id, op, ts, seq, before, after, bookmark`.
pub fn delta_schema() -> SchemaRef {
    DELTA_SCHEMA.clone()
}

/// The Arrow schema of state files: `id, data, version, ts, seq, bookmark, deleted`.
pub fn state_schema() -> SchemaRef {
    STATE_SCHEMA.clone()
}

/// One change as stored in a delta file. JSON documents are kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRow {
    /// Document id.
    pub id: String,
    /// What happened.
    pub op: ChangeOp,
    /// Event time, ms.
    pub ts: i64,
    /// Sequence number in the collection's processor.
    pub seq: i64,
    /// Document before, as JSON text.
    pub before: Option<String>,
    /// Document after, as JSON text.
    pub after: Option<String>,
    /// Bookmark.
    pub bookmark: Option<String>,
}

/// One document's state as stored in a state file, or as reconstructed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocState {
    /// Document id.
    pub id: String,
    /// The document (JSON text); for a tombstone, the delete's `before`, if any.
    pub data: Option<String>,
    /// Number of changes folded into this state.
    pub version: i64,
    /// Event time of the winning change.
    pub ts: i64,
    /// Sequence number of the winning change.
    pub seq: i64,
    /// Bookmark of the winning change.
    pub bookmark: Option<String>,
    /// Whether the document is deleted.
    pub deleted: bool,
}

impl DocState {
    /// The state a single change gives a document seen for the first time.
    pub fn from_change(row: &DeltaRow) -> DocState {
        let deleted = row.op == ChangeOp::Delete;
        DocState {
            id: row.id.clone(),
            data: if deleted { row.before.clone() } else { row.after.clone() },
            version: 1,
            ts: row.ts,
            seq: row.seq,
            bookmark: row.bookmark.clone(),
            deleted,
        }
    }

    /// Folds a further change (of any time) into this state: the winner by
    /// `(ts, seq)` gives the content, and the version counts both.
    pub fn fold(&mut self, row: &DeltaRow) {
        debug_assert_eq!(self.id, row.id);
        let version = self.version + 1;
        if (row.ts, row.seq) >= (self.ts, self.seq) {
            *self = DocState::from_change(row);
        }
        self.version = version;
    }
}

// ---------------------------------------------------------------- keys

/// The folder of one collection's files: `cdc/ns=<ns>/collection=<c>/`.
pub fn collection_prefix(ns: &str, collection: &str) -> String {
    format!("{CDC_PREFIX}/ns={ns}/collection={collection}/")
}

/// Key of the manifest of a collection.
pub fn manifest_key(ns: &str, collection: &str) -> String {
    format!("{}manifest.json", collection_prefix(ns, collection))
}

/// Key of the delta file whose first change has sequence number `first_seq`.
pub fn delta_key(ns: &str, collection: &str, first_seq: i64) -> String {
    format!("{}deltas/{first_seq:020}.parquet", collection_prefix(ns, collection))
}

/// Keys of the current table folded up to `upto_seq`: (live documents, tombstones).
pub fn current_keys(ns: &str, collection: &str, upto_seq: i64) -> (String, String) {
    let prefix = collection_prefix(ns, collection);
    (format!("{prefix}current/{upto_seq:020}.parquet"), format!("{prefix}current-tombstones/{upto_seq:020}.parquet"))
}

/// Keys of a snapshot of `kind` (`daily`, `monthly`) labelled `label`: (live documents, tombstones).
pub fn snapshot_keys(ns: &str, collection: &str, kind: &str, label: &str) -> (String, String) {
    let prefix = collection_prefix(ns, collection);
    (
        format!("{prefix}snapshots/{kind}/{label}/data.parquet"),
        format!("{prefix}snapshots/{kind}/{label}/tombstones.parquet"),
    )
}

/// Key of part `part` of a state file whose first part is `key`: `key`
/// itself for part 0, else `<key without .parquet>-<part, 5 digits>.parquet`.
/// A state (current table, snapshot) is written as several files of at most
/// a bounded number of rows, in id order, so no file needs unbounded memory.
pub fn part_key(key: &str, part: u32) -> String {
    if part == 0 {
        return key.to_string();
    }
    let stem = key.strip_suffix(".parquet").unwrap_or(key);
    format!("{stem}-{part:05}.parquet")
}

// ---------------------------------------------------------------- manifest

/// A delta file as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaRef {
    /// Its key.
    pub key: String,
    /// First and last sequence numbers it holds.
    pub first_seq: i64,
    /// Last sequence number it holds.
    pub last_seq: i64,
    /// Rows.
    pub rows: i64,
    /// Size in bytes.
    pub bytes: i64,
    /// Smallest `ts`.
    pub min_ts: i64,
    /// Largest `ts`.
    pub max_ts: i64,
}

/// A state file pair (current table or snapshot) as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateRef {
    /// `current`, `daily` or `monthly`.
    pub kind: String,
    /// The snapshot's date label (`YYYY-MM-DD`, `YYYY-MM`); empty for `current`.
    pub label: String,
    /// Key of the live documents (the first file when there are several).
    pub key: String,
    /// Key of the tombstones (the first file when there are several).
    pub tombstones_key: String,
    /// Every file of the live documents, in id order (each holds a range of
    /// ids; see [`part_key`]); empty in manifests written before states
    /// were split: then `key` alone.
    #[serde(default)]
    pub files: Vec<String>,
    /// Every file of the tombstones, in id order; empty: `tombstonesKey` alone.
    #[serde(default)]
    pub tombstone_files: Vec<String>,
    /// Every change with `seq <= uptoSeq` is folded in.
    pub upto_seq: i64,
    /// Greatest `ts` folded: the file is a base for any time at or after it.
    pub max_ts: i64,
    /// Live documents.
    pub rows: i64,
    /// Tombstones.
    pub tombstones: i64,
    /// Bytes of both files.
    pub bytes: i64,
    /// When it was written (ms).
    pub created_at: i64,
}

/// The per-collection manifest, `manifest.json`: what files exist and what they hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdcManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// Namespace.
    pub namespace: String,
    /// Collection.
    pub collection: String,
    /// Every change with `seq <= flushedSeq` is in a delta file or folded into `current`.
    pub flushed_seq: i64,
    /// Delta files not yet obsolete, by sequence.
    pub deltas: Vec<DeltaRef>,
    /// The compacted current table, if any.
    pub current: Option<StateRef>,
    /// Retained snapshots, oldest first.
    pub snapshots: Vec<StateRef>,
    /// When the manifest was written (ms).
    pub updated_at: i64,
}

// ---------------------------------------------------------------- encoding

fn properties(format: &str, extra: Vec<KeyValue>) -> WriterProperties {
    let mut kv = vec![KeyValue::new(META_CDC_FORMAT.into(), format.to_string())];
    kv.extend(extra);
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_statistics_truncate_length(Some(64))
        .set_max_row_group_row_count(Some(CDC_ROW_GROUP_ROWS))
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from(COL_OP), true)
        .set_key_value_metadata(Some(kv))
        .build()
}

/// Encodes changes as one delta file, rows sorted by `(id, ts, seq)` so
/// that [`reconstruct`] can merge files by document without holding them.
pub fn encode_delta_file(rows: &mut [DeltaRow]) -> Result<Vec<u8>, LakeError> {
    rows.sort_by(|a, b| (&a.id, a.ts, a.seq).cmp(&(&b.id, b.ts, b.seq)));
    let mut writer = ArrowWriter::try_new(Vec::new(), delta_schema(), Some(properties(DELTA_FORMAT, Vec::new())))?;
    for chunk in rows.chunks(CDC_BATCH_ROWS) {
        let n = chunk.len();
        let (mut id, mut op, mut before, mut after, mut bookmark) = (
            StringBuilder::with_capacity(n, 0),
            StringBuilder::with_capacity(n, 0),
            StringBuilder::with_capacity(n, 0),
            StringBuilder::with_capacity(n, 0),
            StringBuilder::with_capacity(n, 0),
        );
        let mut seq = Int64Builder::with_capacity(n);
        let mut ts = Vec::with_capacity(n);
        for r in chunk {
            id.append_value(&r.id);
            op.append_value(r.op.as_str());
            ts.push(r.ts);
            seq.append_value(r.seq);
            before.append_option(r.before.as_deref());
            after.append_option(r.after.as_deref());
            bookmark.append_option(r.bookmark.as_deref());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(op.finish()),
            Arc::new(crate::schema::ts_array(ts)?),
            Arc::new(seq.finish()),
            Arc::new(before.finish()),
            Arc::new(after.finish()),
            Arc::new(bookmark.finish()),
        ];
        writer.write(&RecordBatch::try_new(delta_schema(), columns)?)?;
    }
    Ok(writer.into_inner()?)
}

/// Writes state rows (sorted by id by the caller) as one state file.
/// Takes an iterator so a table is written without collecting it.
pub fn encode_state_file(rows: impl IntoIterator<Item = DocState>, upto_seq: i64) -> Result<Vec<u8>, LakeError> {
    let props = properties(STATE_FORMAT, vec![KeyValue::new(META_UPTO_SEQ.into(), upto_seq.to_string())]);
    let mut writer = ArrowWriter::try_new(Vec::new(), state_schema(), Some(props))?;
    let mut chunk: Vec<DocState> = Vec::with_capacity(CDC_BATCH_ROWS);
    let mut last_id: Option<String> = None;
    let flush = |chunk: &mut Vec<DocState>, writer: &mut ArrowWriter<Vec<u8>>| -> Result<(), LakeError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        let (mut id, mut data, mut bookmark) = (
            StringBuilder::with_capacity(n, 0),
            StringBuilder::with_capacity(n, 0),
            StringBuilder::with_capacity(n, 0),
        );
        let (mut version, mut seq) = (Int64Builder::with_capacity(n), Int64Builder::with_capacity(n));
        let mut deleted = BooleanBuilder::with_capacity(n);
        let mut ts = Vec::with_capacity(n);
        for r in chunk.drain(..) {
            id.append_value(&r.id);
            data.append_option(r.data.as_deref());
            version.append_value(r.version);
            ts.push(r.ts);
            seq.append_value(r.seq);
            bookmark.append_option(r.bookmark.as_deref());
            deleted.append_value(r.deleted);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(data.finish()),
            Arc::new(version.finish()),
            Arc::new(crate::schema::ts_array(ts)?),
            Arc::new(seq.finish()),
            Arc::new(bookmark.finish()),
            Arc::new(deleted.finish()),
        ];
        writer.write(&RecordBatch::try_new(state_schema(), columns)?)?;
        Ok(())
    };
    for row in rows {
        assert!(last_id.as_ref().is_none_or(|l| *l < row.id), "state rows are written in increasing id order");
        last_id = Some(row.id.clone());
        chunk.push(row);
        if chunk.len() == CDC_BATCH_ROWS {
            flush(&mut chunk, &mut writer)?;
        }
    }
    flush(&mut chunk, &mut writer)?;
    Ok(writer.into_inner()?)
}

// ---------------------------------------------------------------- decoding

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, LakeError> {
    let col = batch.column_by_name(name).ok_or_else(|| LakeError::Corrupt(format!("no column {name:?}")))?;
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| LakeError::Corrupt(format!("column {name:?} has the wrong type {}", col.data_type())))
}

fn ts_column(batch: &RecordBatch) -> Result<crate::schema::TsColumn<'_>, LakeError> {
    crate::schema::ts_column(batch, COL_TS).ok_or_else(|| LakeError::Corrupt(format!("no timestamp column {COL_TS:?}")))
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn open(bytes: Bytes, format: &str) -> Result<ParquetRecordBatchReader, LakeError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let kv = builder.metadata().file_metadata().key_value_metadata();
    let found = kv.and_then(|kv| kv.iter().find(|e| e.key == META_CDC_FORMAT)).and_then(|e| e.value.as_deref());
    if found != Some(format) {
        return Err(LakeError::Corrupt(format!("not a {format} file (format {found:?})")));
    }
    Ok(builder.with_batch_size(CDC_BATCH_ROWS).build()?)
}

/// A lake file's rows, decoded one Arrow batch at a time so that only one
/// batch is in memory.
pub struct RowReader<T> {
    reader: ParquetRecordBatchReader,
    decode: fn(&RecordBatch) -> Result<Vec<T>, LakeError>,
    rows: std::vec::IntoIter<T>,
}

/// A delta file's rows, one Arrow batch in memory at a time.
pub type DeltaReader = RowReader<DeltaRow>;

/// A state file's rows, one Arrow batch in memory at a time.
pub type StateReader = RowReader<DocState>;

impl RowReader<DeltaRow> {
    /// Opens a delta file.
    pub fn new(bytes: Bytes) -> Result<Self, LakeError> {
        Ok(RowReader { reader: open(bytes, DELTA_FORMAT)?, decode: delta_rows, rows: Vec::new().into_iter() })
    }
}

impl RowReader<DocState> {
    /// Opens a state file.
    pub fn new(bytes: Bytes) -> Result<Self, LakeError> {
        Ok(RowReader { reader: open(bytes, STATE_FORMAT)?, decode: state_rows, rows: Vec::new().into_iter() })
    }
}

impl<T> Iterator for RowReader<T> {
    type Item = Result<T, LakeError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(row) = self.rows.next() {
                return Some(Ok(row));
            }
            let batch = match self.reader.next()? {
                Ok(batch) => batch,
                Err(e) => return Some(Err(e.into())),
            };
            match (self.decode)(&batch) {
                Ok(rows) => self.rows = rows.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn delta_rows(batch: &RecordBatch) -> Result<Vec<DeltaRow>, LakeError> {
    let id = column::<StringArray>(batch, COL_ID)?;
    let op = column::<StringArray>(batch, COL_OP)?;
    let ts = ts_column(batch)?;
    let seq = column::<Int64Array>(batch, COL_SEQ)?;
    let before = column::<StringArray>(batch, COL_BEFORE)?;
    let after = column::<StringArray>(batch, COL_AFTER)?;
    let bookmark = column::<StringArray>(batch, COL_BOOKMARK)?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(DeltaRow {
                id: id.value(i).to_string(),
                op: ChangeOp::parse(op.value(i))
                    .ok_or_else(|| LakeError::Corrupt(format!("unknown op {:?}", op.value(i))))?,
                ts: ts.millis(i),
                seq: seq.value(i),
                before: opt(before, i),
                after: opt(after, i),
                bookmark: opt(bookmark, i),
            })
        })
        .collect()
}

fn state_rows(batch: &RecordBatch) -> Result<Vec<DocState>, LakeError> {
    let id = column::<StringArray>(batch, COL_ID)?;
    let data = column::<StringArray>(batch, COL_DATA)?;
    let version = column::<Int64Array>(batch, COL_VERSION)?;
    let ts = ts_column(batch)?;
    let seq = column::<Int64Array>(batch, COL_SEQ)?;
    let bookmark = column::<StringArray>(batch, COL_BOOKMARK)?;
    let deleted = column::<BooleanArray>(batch, COL_DELETED)?;
    Ok((0..batch.num_rows())
        .map(|i| DocState {
            id: id.value(i).to_string(),
            data: opt(data, i),
            version: version.value(i),
            ts: ts.millis(i),
            seq: seq.value(i),
            bookmark: opt(bookmark, i),
            deleted: deleted.value(i),
        })
        .collect())
}

/// Decodes a whole delta file (tests and small files).
pub fn decode_delta_file(bytes: &[u8]) -> Result<Vec<DeltaRow>, LakeError> {
    DeltaReader::new(Bytes::copy_from_slice(bytes))?.collect()
}

/// Decodes a whole state file (tests and small files).
pub fn decode_state_file(bytes: &[u8]) -> Result<Vec<DocState>, LakeError> {
    StateReader::new(Bytes::copy_from_slice(bytes))?.collect()
}

// ---------------------------------------------------------------- reconstruction

enum Item {
    Base(DocState),
    Change(DeltaRow),
}

impl Item {
    fn id(&self) -> &str {
        match self {
            Item::Base(s) => &s.id,
            Item::Change(c) => &c.id,
        }
    }
}

struct Head {
    item: Item,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.item.id(), self.source).cmp(&(other.item.id(), other.source))
    }
}

type Source = Box<dyn Iterator<Item = Result<Item, LakeError>>>;

/// Where a reconstruction starts and what it applies.
pub struct ReconstructInput {
    /// The base state files (live + tombstones of one current table or
    /// snapshot), each sorted by id; empty for "from the first change".
    pub base: Vec<Bytes>,
    /// Every change with `seq <= base_upto_seq` is folded into the base.
    pub base_upto_seq: i64,
    /// Delta files (each sorted by id); rows with `seq <= base_upto_seq` are skipped.
    pub deltas: Vec<Bytes>,
    /// Changes not yet in any file (sorted or not).
    pub pending: Vec<DeltaRow>,
}

/// Streams the state of every document at time `at` (tombstones included),
/// in id order, to `emit` until it returns `false`. Memory: the input
/// files' bytes plus one batch per file.
///
/// The caller picks a base whose `max_ts <= at`, and supplies every delta
/// file holding changes after `base_upto_seq`.
pub fn reconstruct(input: ReconstructInput, at: i64, emit: &mut dyn FnMut(DocState) -> bool) -> Result<(), LakeError> {
    let upto = input.base_upto_seq;
    let mut sources: Vec<Source> = Vec::new();
    for b in input.base {
        sources.push(Box::new(StateReader::new(b)?.map(|r| r.map(Item::Base))));
    }
    for d in input.deltas {
        sources.push(Box::new(
            DeltaReader::new(d)?
                .filter(move |r| r.as_ref().is_err() || r.as_ref().is_ok_and(|r| r.seq > upto && r.ts <= at))
                .map(|r| r.map(Item::Change)),
        ));
    }
    let mut pending = input.pending;
    pending.retain(|r| r.seq > upto && r.ts <= at);
    pending.sort_by(|a, b| (&a.id, a.ts, a.seq).cmp(&(&b.id, b.ts, b.seq)));
    sources.push(Box::new(pending.into_iter().map(|r| Ok(Item::Change(r)))));

    let mut heap = BinaryHeap::new();
    for (source, it) in sources.iter_mut().enumerate() {
        if let Some(item) = it.next() {
            heap.push(Reverse(Head { item: item?, source }));
        }
    }
    let mut current: Option<DocState> = None;
    while let Some(Reverse(Head { item, source })) = heap.pop() {
        if let Some(next) = sources[source].next() {
            let next = next?;
            if next.id() < item.id() {
                return Err(LakeError::Corrupt(format!("file rows are not sorted by id at {:?}", next.id())));
            }
            heap.push(Reverse(Head { item: next, source }));
        }
        if current.as_ref().is_some_and(|c| c.id != item.id()) {
            let done = current.take().expect("checked");
            if !emit(done) {
                return Ok(());
            }
        }
        current = Some(match (current.take(), item) {
            (None, Item::Base(s)) => s,
            (None, Item::Change(c)) => DocState::from_change(&c),
            (Some(mut s), Item::Change(c)) => {
                s.fold(&c);
                s
            }
            (Some(s), Item::Base(b)) => {
                // Base sources come first (lower source index), so a base row
                // never follows a change of the same id; two base rows of one
                // id (live and tombstone) mean a corrupt base.
                return Err(LakeError::Corrupt(format!(
                    "document {:?} appears twice in the base ({} / {})",
                    b.id, s.seq, b.seq
                )));
            }
        });
    }
    if let Some(done) = current {
        emit(done);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, op: ChangeOp, ts: i64, seq: i64, after: Option<&str>) -> DeltaRow {
        DeltaRow { id: id.into(), op, ts, seq, before: None, after: after.map(String::from), bookmark: None }
    }

    #[test]
    fn delta_files_round_trip_sorted_by_document() {
        let mut rows = vec![
            change("b", ChangeOp::Insert, 5, 1, Some("{\"v\":1}")),
            change("a", ChangeOp::Delete, 7, 2, None),
            change("a", ChangeOp::Insert, 3, 3, Some("{}")),
        ];
        let file = encode_delta_file(&mut rows).unwrap();
        let back = decode_delta_file(&file).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back.iter().map(|r| (r.id.as_str(), r.seq)).collect::<Vec<_>>(), [("a", 3), ("a", 2), ("b", 1)]);
        assert!(decode_state_file(&file).is_err(), "a delta file is not a state file");
    }

    #[test]
    fn times_are_microseconds_and_millisecond_files_still_read() {
        let mut rows = vec![change("a", ChangeOp::Insert, 1_790_000_000_123, 1, Some("{}"))];
        let delta = encode_delta_file(&mut rows).unwrap();
        let state = DocState::from_change(&rows[0]);
        let file = encode_state_file([state.clone()], 1).unwrap();
        for bytes in [&delta, &file] {
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(bytes)).unwrap();
            assert_eq!(reader.schema().field_with_name(COL_TS).unwrap().data_type(), &crate::schema::ts_data_type());
        }
        // Files written before: `ts` in milliseconds, read to the same rows.
        let old_delta = crate::testdata::with_millisecond_ts(&delta);
        let old_file = crate::testdata::with_millisecond_ts(&file);
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(&old_file)).unwrap();
        assert_eq!(
            reader.schema().field_with_name(COL_TS).unwrap().data_type(),
            &DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into()))
        );
        assert_eq!(decode_delta_file(&old_delta).unwrap(), rows);
        assert_eq!(decode_state_file(&old_file).unwrap(), std::slice::from_ref(&state));
        assert_eq!(decode_state_file(&file).unwrap(), [state]);
    }

    #[test]
    fn late_changes_do_not_overwrite_newer_state() {
        let mut rows = vec![
            change("a", ChangeOp::Insert, 10, 1, Some("1")),
            change("a", ChangeOp::Update, 30, 2, Some("3")),
            change("a", ChangeOp::Update, 20, 3, Some("2")), // late
            change("b", ChangeOp::Insert, 10, 4, Some("b")),
            change("b", ChangeOp::Delete, 10, 5, None), // same ts: applied later wins
        ];
        let file = encode_delta_file(&mut rows).unwrap();
        let state_at = |at| {
            let mut out = Vec::new();
            let input = ReconstructInput {
                base: vec![],
                base_upto_seq: 0,
                deltas: vec![Bytes::from(file.clone())],
                pending: vec![],
            };
            reconstruct(input, at, &mut |s| {
                out.push((s.id, s.data, s.version, s.deleted));
                true
            })
            .unwrap();
            out
        };
        assert_eq!(state_at(100), [("a".into(), Some("3".into()), 3, false), ("b".into(), None, 2, true)]);
        assert_eq!(state_at(25), [("a".into(), Some("2".into()), 2, false), ("b".into(), None, 2, true)]);
        assert_eq!(state_at(5), []);
    }
}
