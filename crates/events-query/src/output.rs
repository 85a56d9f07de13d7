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

use datafusion::arrow::array::{ArrayRef, RecordBatch};
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

/// String views become plain strings for the text encoders.
fn plain_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::BinaryView => f.as_ref().clone().with_data_type(DataType::Binary),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn plain_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ApiError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
        .collect::<Result<Vec<ArrayRef>, _>>()
        .map_err(|e| ApiError::internal(format!("result encoding: {e}")))?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| ApiError::internal(format!("result encoding: {e}")))
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
        let ipc = match format {
            OutputFormat::Arrow => {
                Some(datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(enc_err)?)
            }
            _ => None,
        };
        Ok(ResultEncoder { format, plain: plain_schema(&schema), schema, batches: 0, ipc })
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
                let w = self.ipc.as_mut().expect("arrow writer");
                w.write(batch).map_err(enc_err)?;
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
