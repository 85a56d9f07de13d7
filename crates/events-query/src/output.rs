//! Encoding query results as they stream: JSON (an array of row objects),
//! NDJSON, CSV (with a header) or Arrow IPC (stream format).
//!
//! Every format carries every column of the result in SELECT order: a JSON
//! or NDJSON row has each column as a key, in that order, `null` included.
//!
//! [`ResultEncoder`] turns one batch at a time into bytes, so a large result
//! is never held whole in memory; [`LimitedStream`] applies the row limit and
//! the deadline to the batches on their way.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use events_core::{ApiError, ErrorCode};
use futures::Stream;
use serde::{Deserialize, Serialize};

/// A result format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// One JSON array of row objects.
    #[default]
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header row.
    Csv,
    /// Arrow IPC stream.
    Arrow,
}

impl OutputFormat {
    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// Whether a result column holds values of the JSON functions (`json_get`,
/// `->`): a union of JSON kinds, which no output format carries as is.
fn is_json_union(ty: &DataType) -> bool {
    ty == &*datafusion_functions_json::JSON_UNION_DATA_TYPE
}

/// Whether a field holds JSON text (the canonical `arrow.json` extension type).
fn is_json_text(f: &Field) -> bool {
    f.metadata().get("ARROW:extension:name").is_some_and(|n| n == "arrow.json")
}

/// The schema a format writes: string views become plain strings for the
/// text encoders, and JSON-function values become JSON text (type
/// `arrow.json`; for CSV, a JSON string's text without its quotes).
fn plain_schema(schema: &Schema, format: OutputFormat) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            ty if is_json_union(ty) => {
                let field = Field::new(f.name(), DataType::Utf8, true);
                if format == OutputFormat::Csv {
                    field
                } else {
                    field.with_metadata(datafusion_functions_json::json_field_metadata())
                }
            }
            // An untyped NULL column: CSV has no null type, so empty text.
            DataType::Null if format == OutputFormat::Csv => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::Utf8View if format != OutputFormat::Arrow => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::BinaryView if format != OutputFormat::Arrow => {
                f.as_ref().clone().with_data_type(DataType::Binary)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A column of JSON-function values as text: JSON text of each value
/// (`unquote`: a string's own text, for CSV); null for JSON null or a
/// missing path.
fn json_union_text(column: &ArrayRef, unquote: bool) -> Result<ArrayRef, ApiError> {
    use datafusion_functions_json::{JsonUnionEncoder, JsonUnionValue};
    let union = column
        .as_any()
        .downcast_ref::<datafusion::arrow::array::UnionArray>()
        .and_then(|u| JsonUnionEncoder::from_union(u.clone()))
        .ok_or_else(|| enc_err("a JSON value column is not a JSON union"))?;
    let mut out = datafusion::arrow::array::StringBuilder::new();
    for i in 0..union.len() {
        match union.get_value(i) {
            JsonUnionValue::JsonNull => out.append_null(),
            JsonUnionValue::Bool(b) => out.append_value(if b { "true" } else { "false" }),
            JsonUnionValue::Int(n) => out.append_value(n.to_string()),
            JsonUnionValue::Float(x) => out.append_value(serde_json::Value::from(x).to_string()),
            JsonUnionValue::Str(s) if unquote => out.append_value(s),
            JsonUnionValue::Str(s) => out.append_value(serde_json::Value::from(s).to_string()),
            JsonUnionValue::Array(text) | JsonUnionValue::Object(text) => out.append_value(text),
        }
    }
    Ok(Arc::new(out.finish()))
}

fn plain_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ApiError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else if is_json_union(c.data_type()) {
                json_union_text(c, !is_json_text(f))
            } else {
                cast(c, f.data_type()).map_err(enc_err)
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(enc_err)
}

/// Writes JSON-text columns (`arrow.json`) into JSON output as the values
/// they are, not as strings holding them.
#[derive(Debug)]
struct RawJsonColumns;

struct RawJson(datafusion::arrow::array::StringArray);

impl datafusion::arrow::json::Encoder for RawJson {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.value(idx).as_bytes());
    }
}

impl datafusion::arrow::json::EncoderFactory for RawJsonColumns {
    fn make_default_encoder<'a>(
        &self,
        field: &'a datafusion::arrow::datatypes::FieldRef,
        array: &'a dyn datafusion::arrow::array::Array,
        _options: &'a datafusion::arrow::json::EncoderOptions,
    ) -> Result<Option<datafusion::arrow::json::writer::NullableEncoder<'a>>, datafusion::arrow::error::ArrowError>
    {
        if !is_json_text(field) {
            return Ok(None);
        }
        let Some(text) = array.as_any().downcast_ref::<datafusion::arrow::array::StringArray>() else {
            return Ok(None);
        };
        // Only text that is JSON: a string a query labelled `arrow.json` otherwise stays a string.
        let invalid = |i: usize| serde_json::from_str::<serde::de::IgnoredAny>(text.value(i)).is_err();
        if (0..text.len()).any(|i| text.is_valid(i) && invalid(i)) {
            return Ok(None);
        }
        let encoder = RawJson(text.clone());
        Ok(Some(datafusion::arrow::json::writer::NullableEncoder::new(Box::new(encoder), text.nulls().cloned())))
    }
}

/// Encodes batches of one result, in order.
pub struct ResultEncoder {
    format: OutputFormat,
    schema: SchemaRef,
    plain: SchemaRef,
    batches: usize,
    ipc: Option<datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

fn enc_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("result encoding: {e}"))
}

impl ResultEncoder {
    /// An encoder for results of `schema`.
    pub fn new(format: OutputFormat, schema: SchemaRef) -> Result<Self, ApiError> {
        let plain = plain_schema(&schema, format);
        let ipc = match format {
            OutputFormat::Arrow => {
                Some(datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &plain).map_err(enc_err)?)
            }
            _ => None,
        };
        Ok(ResultEncoder { format, plain, schema, batches: 0, ipc })
    }

    /// The bytes that open the result.
    pub fn start(&mut self) -> Result<Vec<u8>, ApiError> {
        Ok(match self.format {
            OutputFormat::Json => b"[".to_vec(),
            OutputFormat::Csv => {
                let names: Vec<String> = self.schema.fields().iter().map(|f| csv_field(f.name())).collect();
                format!("{}\n", names.join(",")).into_bytes()
            }
            OutputFormat::Ndjson => Vec::new(),
            OutputFormat::Arrow => std::mem::take(self.ipc.as_mut().expect("arrow writer").get_mut()),
        })
    }

    /// The bytes of one batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ApiError> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let first = self.batches == 0;
        self.batches += 1;
        match self.format {
            OutputFormat::Json | OutputFormat::Ndjson => {
                let batch = plain_batch(batch, &self.plain)?;
                // Every column of every row, in SELECT order, nulls as `null`.
                let mut w = datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_encoder_factory(Arc::new(RawJsonColumns))
                    .build::<_, datafusion::arrow::json::writer::LineDelimited>(Vec::new());
                w.write(&batch).map_err(enc_err)?;
                w.finish().map_err(enc_err)?;
                let lines = w.into_inner();
                if self.format == OutputFormat::Ndjson {
                    return Ok(lines);
                }
                let mut out = Vec::with_capacity(lines.len() + 2);
                for (i, line) in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
                    if !(first && i == 0) {
                        out.push(b',');
                    }
                    out.extend_from_slice(line);
                }
                Ok(out)
            }
            OutputFormat::Csv => {
                let batch = plain_batch(batch, &self.plain)?;
                let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(false).build(Vec::new());
                w.write(&batch).map_err(enc_err)?;
                Ok(w.into_inner())
            }
            OutputFormat::Arrow => {
                let batch = plain_batch(batch, &self.plain)?;
                let w = self.ipc.as_mut().expect("arrow writer");
                w.write(&batch).map_err(enc_err)?;
                Ok(std::mem::take(w.get_mut()))
            }
        }
    }

    /// The bytes that close the result.
    pub fn finish(&mut self) -> Result<Vec<u8>, ApiError> {
        Ok(match self.format {
            OutputFormat::Json => b"]\n".to_vec(),
            OutputFormat::Arrow => {
                let w = self.ipc.as_mut().expect("arrow writer");
                w.finish().map_err(enc_err)?;
                std::mem::take(w.get_mut())
            }
            _ => Vec::new(),
        })
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Batches of a running query, ended with an error when the row limit or
/// the deadline is crossed.
pub struct LimitedStream {
    inner: SendableRecordBatchStream,
    rows: usize,
    max_rows: usize,
    deadline: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl LimitedStream {
    /// Wraps `inner`.
    pub fn new(inner: SendableRecordBatchStream, max_rows: usize, deadline: Instant) -> Self {
        let sleep = Box::pin(tokio::time::sleep_until(deadline.into()));
        LimitedStream { inner, rows: 0, max_rows, deadline, sleep, done: false }
    }

    /// Rows passed so far.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl Stream for LimitedStream {
    type Item = Result<RecordBatch, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() || Instant::now() >= self.deadline {
            self.done = true;
            return Poll::Ready(Some(Err(ApiError::new(ErrorCode::Timeout, "the query ran past its time limit"))));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                self.rows += batch.num_rows();
                if self.rows > self.max_rows {
                    self.done = true;
                    let max = self.max_rows;
                    return Poll::Ready(Some(Err(ApiError::new(
                        ErrorCode::QueryLimitExceeded,
                        format!("the result has more than {max} rows; add a LIMIT or aggregate"),
                    ))));
                }
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(crate::datafusion_error(e))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;
