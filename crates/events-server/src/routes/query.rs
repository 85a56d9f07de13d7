//! `POST /query`: SQL over the caller's tables.
//!
//! A query sees exactly the caller's namespace: the server asks that
//! namespace's catalog for each managed table's files (at the current
//! snapshot, or the one named in `at`) and builds a query context holding
//! only them (see `events_query`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::catalog::{CatalogRequest, CatalogResponse};
use events_query::output::{LimitedStream, OutputFormat, ResultEncoder};
use events_query::{QueryLimits, QueryTable};
use events_runtime::context::Host;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiErrorResponse, JsonBody};
use crate::routes::ApiRouter;
use crate::routes::iceberg::call_catalog;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(query))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

/// Longest per-query timeout a request may ask for.
pub const MAX_QUERY_TIMEOUT_MS: u64 = 300_000;

/// A SQL query.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryBody {
    /// One read-only statement (`SELECT ...`).
    pub sql: String,
    /// `json` (default, also when null), `ndjson`, `csv` or `arrow`.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(json|ndjson|csv|arrow)$")]
    pub format: Option<OutputFormat>,
    /// Time travel: table name → a snapshot id (number) or a time (ISO-8601 string or ms).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub at: BTreeMap<String, Value>,
    /// Timeout in ms (default and maximum from the server's limits).
    pub timeout_ms: Option<u64>,
}

/// A JSON result: one object per row, keyed by column name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Vec<Object>)]
pub struct QueryRows(pub Vec<Value>);

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller> {
    Ok(state.auth.authenticate(&state.host, headers).await?)
}

fn out_of_protocol() -> ApiErrorResponse {
    ApiError::internal("catalog answered out of protocol").into()
}

/// The managed tables of `ns`, each at the snapshot `at` asks for.
async fn query_tables(state: &AppState, ns: &str, at: &BTreeMap<String, Value>) -> Result<Vec<QueryTable>> {
    let CatalogResponse::Tables(tables) = call_catalog(state, ns, CatalogRequest::ListTables).await? else {
        return Err(out_of_protocol());
    };
    let managed: Vec<String> = tables.into_iter().filter(|t| t.managed).map(|t| t.name).collect();
    if let Some(unknown) = at.keys().find(|t| !managed.contains(t)) {
        return Err(ApiError::not_found(format!("no table {unknown} to time-travel")).into());
    }
    let mut out = Vec::with_capacity(managed.len());
    for name in managed {
        let (snapshot_id, as_of_ms) = match at.get(&name) {
            None => (None, None),
            Some(Value::Number(n)) if n.as_i64().is_some() => (n.as_i64(), None),
            Some(Value::String(s)) => {
                let ts = Timestamp::parse_iso(s).ok_or_else(|| {
                    ApiError::new(ErrorCode::InvalidRequest, format!("at.{name}: {s:?} is not an ISO-8601 time"))
                })?;
                (None, Some(ts.as_millis()))
            }
            Some(other) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("at.{name} must be a snapshot id or a time, not {other}"),
                )
                .into());
            }
        };
        let req = CatalogRequest::Scan { table: name.clone(), snapshot_id, as_of_ms };
        let CatalogResponse::Scan(scan) = call_catalog(state, ns, req).await? else {
            return Err(out_of_protocol());
        };
        out.push(QueryTable {
            schema: events_query::arrow_schema(&scan.schema)?,
            files: scan.files.into_iter().map(|f| f.key).collect(),
            name,
        });
    }
    Ok(out)
}

/// Runs one read-only SQL query over the caller's tables and streams the result.
///
/// Tables: `events` (and the namespace's CDC tables). DDL, DML and any other
/// statement answer 400 `READ_ONLY_QUERY`; a result over the row limit or a
/// query over the memory limit answers 400 `QUERY_LIMIT_EXCEEDED`; past the
/// timeout, 504 `TIMEOUT`. A data file the snapshot names but the lake lacks
/// answers 500 `DATA_FILE_MISSING` with the key (`details.key`); it is never
/// read as empty. Once rows have been sent, a failure ends the response early
/// (a JSON result is then not valid JSON).
#[utoipa::path(post, path = "/query", tag = "query",
    request_body = QueryBody,
    responses(
        (status = 200, description = "The result in the requested format (JSON: an array of row objects; also NDJSON, CSV, Arrow IPC)", body = QueryRows),
        (status = 400, description = "READ_ONLY_QUERY, INVALID_QUERY or QUERY_LIMIT_EXCEEDED", body = crate::error::ErrorBody),
        (status = 500, description = "DATA_FILE_MISSING: a data file of the snapshot is absent from the lake (`details.key`)", body = crate::error::ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn query(State(state): State<AppState>, headers: HeaderMap, body: JsonBody<QueryBody>) -> Result<Response> {
    let started = Instant::now();
    let caller = caller(&state, &headers).await?;
    let body = body.parse()?;
    let outcome = run(&state, &caller.namespace, body, started).await;
    let status = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.0.code.as_str(),
    };
    metrics::counter!("events_query_total", "status" => status).increment(1);
    outcome
}

async fn run(state: &AppState, ns: &str, body: QueryBody, started: Instant) -> Result<Response> {
    events_query::check_read_only(&body.sql)?;
    let timeout =
        Duration::from_millis(body.timeout_ms.unwrap_or(state.config.query.timeout_ms).clamp(1, MAX_QUERY_TIMEOUT_MS));
    let limits = QueryLimits {
        timeout,
        max_rows: state.config.query.max_rows,
        max_memory_bytes: state.config.query.max_memory_bytes,
        ..QueryLimits::default()
    };
    let tables = query_tables(state, ns, &body.at).await?;
    stream_query(state, ns, tables, &body.sql, limits, body.format.unwrap_or_default(), None, started).await
}

/// Runs `sql` over `tables` and streams the result in `format`. `wrap`, for
/// JSON: bytes before the row array and after it, so the rows sit in an
/// object (`{"...": ..., "rows": [...]}`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn stream_query(
    state: &AppState,
    ns: &str,
    tables: Vec<QueryTable>,
    sql: &str,
    limits: QueryLimits,
    format: OutputFormat,
    wrap: Option<(Vec<u8>, Vec<u8>)>,
    started: Instant,
) -> Result<Response> {
    let store = state.host.blobs().store();
    let caches = state.query_caches.for_namespace(ns);
    let (schema, stream) = events_query::run_query(store, tables, sql, limits, Some(caches)).await?;
    let mut batches = LimitedStream::new(stream, limits.max_rows, started + limits.timeout);
    let mut encoder = ResultEncoder::new(format, schema)?;
    let (before, after) = wrap.filter(|_| format == OutputFormat::Json).unzip();
    // The first batch is awaited before answering, so an early failure gets a proper status.
    let mut head = before.unwrap_or_default();
    head.extend(encoder.start()?);
    let first = batches.next().await;
    let mut finished = false;
    match first {
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(batch)) => head.extend(encoder.batch(&batch)?),
        None => {
            head.extend(close(&mut encoder, after.as_deref())?);
            finished = true;
        }
    }
    let tail = async_stream(batches, encoder, finished, after, started);
    let body = Body::from_stream(futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(tail));
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    Ok(res)
}

/// The bytes that end a result: the encoder's, then `after` (the row array
/// then closes without its newline, which follows `after`).
fn close(encoder: &mut ResultEncoder, after: Option<&[u8]>) -> std::result::Result<Vec<u8>, ApiError> {
    let mut end = encoder.finish()?;
    if let Some(after) = after {
        while end.last() == Some(&b'\n') {
            end.pop();
        }
        end.extend_from_slice(after);
    }
    Ok(end)
}

/// The rest of the body after the first batch.
fn async_stream(
    batches: LimitedStream,
    encoder: ResultEncoder,
    finished: bool,
    after: Option<Vec<u8>>,
    started: Instant,
) -> impl futures::Stream<Item = std::result::Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold((batches, encoder, finished), move |(mut batches, mut encoder, finished)| {
        let after = after.clone();
        async move {
            if finished {
                return None;
            }
            let chunk = match batches.next().await {
                Some(Ok(batch)) => encoder.batch(&batch),
                Some(Err(e)) => Err(e),
                None => {
                    metrics::histogram!("events_query_seconds").record(started.elapsed().as_secs_f64());
                    metrics::counter!("events_query_rows_total").increment(batches.rows() as u64);
                    let end = close(&mut encoder, after.as_deref());
                    return Some((end.map_err(|e| std::io::Error::other(e.message)), (batches, encoder, true)));
                }
            };
            match chunk {
                Ok(bytes) => Some((Ok(bytes), (batches, encoder, false))),
                Err(e) => {
                    tracing::warn!(code = e.code.as_str(), error = %e.message, "query failed after its first rows");
                    Some((Err(std::io::Error::other(e.message)), (batches, encoder, true)))
                }
            }
        }
    })
}
