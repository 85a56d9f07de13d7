//! `/tables`: the caller's Iceberg tables, their snapshots and schema
//! history, and maintenance on demand.

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::catalog::{CatalogRequest, CatalogResponse, MaintainOptions, MaintainReport, RecordedChange};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::auth::Caller;
use events_query::output::OutputFormat;
use events_query::{QueryLimits, QueryTable};
use utoipa::IntoParams;

use crate::error::{ApiErrorResponse, ApiJson, ApiPath, ApiQuery, JsonBody};
use crate::routes::ApiRouter;
use crate::routes::iceberg::call_catalog;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(list_tables)).routes(routes!(snapshots)).routes(routes!(changes)).routes(routes!(maintain))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller> {
    Ok(state.auth.authenticate(&state.host, headers).await?)
}

fn out_of_protocol() -> ApiErrorResponse {
    ApiError::internal("catalog answered out of protocol").into()
}

/// A table of the namespace.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableView {
    /// Its name.
    pub name: String,
    /// Whether events.do writes it (`events`, CDC tables) or an external engine does.
    pub managed: bool,
    /// The current snapshot.
    pub current_snapshot_id: Option<i64>,
    /// Live data files.
    pub files: i64,
    /// Live rows.
    pub rows: i64,
}

/// Table listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TablesView {
    /// Tables.
    pub tables: Vec<TableView>,
}

/// Lists the caller's tables.
#[utoipa::path(get, path = "/tables", tag = "tables",
    responses((status = 200, description = "Tables", body = TablesView)),
    security(("bearerAuth" = [])))]
pub async fn list_tables(State(state): State<AppState>, headers: HeaderMap) -> Result<ApiJson<TablesView>> {
    let caller = caller(&state, &headers).await?;
    let CatalogResponse::Tables(tables) = call_catalog(&state, &caller.namespace, CatalogRequest::ListTables).await?
    else {
        return Err(out_of_protocol());
    };
    Ok(ApiJson(TablesView {
        tables: tables
            .into_iter()
            .map(|t| TableView {
                name: t.name,
                managed: t.managed,
                current_snapshot_id: t.current_snapshot_id,
                files: t.files,
                rows: t.rows,
            })
            .collect(),
    }))
}

/// One snapshot.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    /// Its id.
    pub snapshot_id: i64,
    /// The snapshot before it.
    pub parent_snapshot_id: Option<i64>,
    /// Its sequence number.
    pub sequence_number: i64,
    /// When it was committed (ISO-8601).
    pub committed_at: String,
    /// `append`, `replace`, `overwrite` or `delete`.
    pub operation: String,
    /// The schema it was written with.
    pub schema_id: Option<i32>,
    /// Iceberg summary counters.
    #[schema(value_type = Object)]
    pub summary: BTreeMap<String, String>,
}

/// A table's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotsView {
    /// The table.
    pub table: String,
    /// The current snapshot.
    pub current_snapshot_id: Option<i64>,
    /// Retained snapshots, oldest first.
    pub snapshots: Vec<SnapshotView>,
    /// Every schema of the table (Iceberg JSON), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub schemas: Vec<Value>,
    /// Schema changes considered at flush time, applied or refused, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub schema_changes: Vec<Value>,
}

/// A table's snapshots and schema history.
#[utoipa::path(get, path = "/tables/{table}/snapshots", tag = "tables",
    params(("table" = String, Path, description = "Table")),
    responses((status = 200, description = "History", body = SnapshotsView)),
    security(("bearerAuth" = [])))]
pub async fn snapshots(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(table): ApiPath<String>,
) -> Result<ApiJson<SnapshotsView>> {
    let caller = caller(&state, &headers).await?;
    let ns = caller.namespace.as_str();
    let CatalogResponse::Table(t) =
        call_catalog(&state, ns, CatalogRequest::LoadTable { table: table.clone() }).await?
    else {
        return Err(out_of_protocol());
    };
    let CatalogResponse::SchemaHistory(changes) =
        call_catalog(&state, ns, CatalogRequest::SchemaHistory { table: table.clone() }).await?
    else {
        return Err(out_of_protocol());
    };
    let mut snaps: Vec<SnapshotView> = t
        .metadata
        .snapshots
        .iter()
        .map(|s| SnapshotView {
            snapshot_id: s.snapshot_id,
            parent_snapshot_id: s.parent_snapshot_id,
            sequence_number: s.sequence_number,
            committed_at: Timestamp(s.timestamp_ms).to_iso(),
            operation: s.operation().to_string(),
            schema_id: s.schema_id,
            summary: s.summary.clone(),
        })
        .collect();
    snaps.sort_by_key(|s| s.sequence_number);
    let change_view = |c: RecordedChange| {
        let mut v = serde_json::to_value(&c.change).unwrap_or(Value::Null);
        v["at"] = Value::String(Timestamp(c.at).to_iso());
        v
    };
    Ok(ApiJson(SnapshotsView {
        table,
        current_snapshot_id: t.metadata.current_snapshot_id,
        snapshots: snaps,
        schemas: t.metadata.schemas.iter().filter_map(|s| serde_json::to_value(s).ok()).collect(),
        schema_changes: changes.into_iter().map(change_view).collect(),
    }))
}

/// Query of `GET /tables/{table}/changes`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesParams {
    /// The snapshot the changes start after (exclusive): the last one a
    /// previous read reached (`toSnapshotId`). Default: the table's first
    /// snapshot, while the table's whole history is retained.
    #[param(value_type = Option<i64>)]
    pub from_snapshot: Option<String>,
    /// The last snapshot included (default: the current one).
    #[param(value_type = Option<i64>)]
    pub to_snapshot: Option<String>,
    /// `json` (default), `ndjson`, `csv` or `arrow`.
    #[param(pattern = "^(json|ndjson|csv|arrow)$")]
    pub format: Option<String>,
}

/// One snapshot of a change answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSnapshotView {
    /// Its id.
    pub snapshot_id: i64,
    /// Its sequence number.
    pub sequence_number: i64,
    /// When it was committed (ISO-8601).
    pub committed_at: String,
    /// `append`, `overwrite` (both add rows), `replace` or `delete` (add none).
    pub operation: String,
    /// Data files whose rows it adds.
    pub added_files: usize,
    /// Rows it adds.
    pub added_rows: i64,
}

/// The JSON answer of `GET /tables/{table}/changes`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangesView {
    /// The table.
    pub table: String,
    /// The snapshot the changes start after (`null`: the table's beginning).
    pub from_snapshot_id: Option<i64>,
    /// The last snapshot included: pass it as `from_snapshot` next time.
    pub to_snapshot_id: Option<i64>,
    /// The snapshots in the range, oldest first.
    pub snapshots: Vec<ChangeSnapshotView>,
    /// The rows added in the range, each with every column of the table's current schema.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Value>,
}

/// The rows a table gained between two snapshots, for incremental reads.
///
/// Rows appended by the snapshots after `from_snapshot` up to `to_snapshot`
/// (default: the current one), by the snapshots' operations: an `append`
/// (a flush) adds its rows, an `overwrite` (a CDC table's new state) its new
/// files' rows (the collection as of that compaction), a `replace`
/// (compaction, a retried flush: the same rows in other files) and a
/// `delete` add none. A downstream job passes the `toSnapshotId` of its last
/// read as the next `from_snapshot` and so sees each appended row once.
///
/// JSON answers `{table, fromSnapshotId, toSnapshotId, snapshots, rows}`;
/// `ndjson`, `csv` and `arrow` answer the rows alone, with the range in the
/// `X-Events-From-Snapshot` and `X-Events-To-Snapshot` headers. Rows over
/// the server's `[query] max_rows` answer 400 `QUERY_LIMIT_EXCEEDED` (ask
/// for a shorter range).
#[utoipa::path(get, path = "/tables/{table}/changes", tag = "tables",
    params(("table" = String, Path, description = "Table"), ChangesParams),
    responses(
        (status = 200, description = "The added rows (JSON with the range and its snapshots; also NDJSON, CSV, Arrow IPC)", body = ChangesView),
        (status = 400, description = "INVALID_QUERY: a bad snapshot id or format, `from_snapshot` not an ancestor of `to_snapshot`; QUERY_LIMIT_EXCEEDED", body = crate::error::ErrorBody),
        (status = 404, description = "NOT_FOUND: no such table, or a snapshot that does not exist (any more)", body = crate::error::ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(table): ApiPath<String>,
    params: ApiQuery<ChangesParams>,
) -> Result<Response> {
    let started = Instant::now();
    let caller = caller(&state, &headers).await?;
    let q = params.parse()?;
    let from = events_api::tables::parse_snapshot_id("from_snapshot", q.from_snapshot.as_deref())?;
    let to = events_api::tables::parse_snapshot_id("to_snapshot", q.to_snapshot.as_deref())?;
    let format = match q.format.as_deref() {
        None | Some("json") => OutputFormat::Json,
        Some("ndjson") => OutputFormat::Ndjson,
        Some("csv") => OutputFormat::Csv,
        Some("arrow") => OutputFormat::Arrow,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("format={other:?}: use json, ndjson, csv or arrow"),
            )
            .into());
        }
    };
    let ns = caller.namespace.as_str();
    let set = events_api::tables::changes(&state.host, ns, &table, from, to).await?;
    let mut head = serde_json::to_vec(&events_api::tables::changes_head(&table, &set))
        .map_err(|e| ApiError::internal(format!("encoding the answer: {e}")))?;
    head.pop(); // the closing brace: the rows follow
    head.extend_from_slice(b",\"rows\":");
    let limits = QueryLimits {
        timeout: Duration::from_millis(state.config.query.timeout_ms),
        max_rows: state.config.query.max_rows,
        max_memory_bytes: state.config.query.max_memory_bytes,
        ..QueryLimits::default()
    };
    let files = set.files.into_iter().map(|f| f.key).collect();
    let tables = vec![QueryTable { name: "changes".into(), schema: events_query::arrow_schema(&set.schema)?, files }];
    let mut res = crate::routes::query::stream_query(
        &state,
        ns,
        tables,
        "SELECT * FROM changes",
        limits,
        format,
        Some((head, b"}\n".to_vec())),
        started,
    )
    .await?;
    for (name, id) in [("x-events-from-snapshot", set.from_snapshot_id), ("x-events-to-snapshot", set.to_snapshot_id)] {
        if let Some(id) = id {
            res.headers_mut().insert(name, HeaderValue::from(id));
        }
    }
    Ok(res)
}

/// What to maintain; every field is optional. `keepLast`,
/// `maxSnapshotAgeMs` and `orphanMinAgeMs` below the server's `[catalog]`
/// settings are destructive (they may delete files a reader of an older
/// snapshot still uses) and need the admin token.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaintainBody {
    /// One table (default: every managed table).
    pub table: Option<String>,
    /// Merge small files in one replace commit (default true).
    pub compact: Option<bool>,
    /// Expire old snapshots and delete files only they used (default true).
    pub expire: Option<bool>,
    /// Newest snapshots always kept (default `[catalog] min_snapshots`; fewer needs the admin token).
    pub keep_last: Option<usize>,
    /// Snapshots older than this expire (ms; default `[catalog] snapshot_max_age_ms`; less needs the admin token).
    pub max_snapshot_age_ms: Option<i64>,
    /// Delete unreferenced files (default true).
    pub remove_orphans: Option<bool>,
    /// Only orphans older than this are deleted (ms; default `[catalog] orphan_min_age_ms`; less
    /// needs the admin token). Files a flush has put but not yet committed are never deleted.
    pub orphan_min_age_ms: Option<i64>,
}

/// Maintenance results, one per table.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MaintainView {
    /// Per table: `table`, `compacted_inputs`, `compacted_files`, `expired_snapshots`, `deleted_files`, `orphans_deleted`.
    #[schema(value_type = Vec<Object>)]
    pub reports: Vec<MaintainReport>,
}

/// Runs table maintenance now: compaction, snapshot expiry, orphan cleanup.
///
/// Orphan cleanup deletes files under the table's folders that no snapshot,
/// manifest or metadata file references and that are older than
/// `orphanMinAgeMs`; it never deletes a file a flush has announced and not
/// yet committed (a write intent), nor CDC files. Settings more aggressive
/// than the server's `[catalog]` ones (`keepLast`, `maxSnapshotAgeMs`,
/// `orphanMinAgeMs` below them) need the admin token: a namespace key gets
/// 403 `FORBIDDEN`.
#[utoipa::path(post, path = "/tables/maintain", tag = "tables",
    request_body = MaintainBody,
    responses(
        (status = 200, description = "What was done", body = MaintainView),
        (status = 400, description = "INVALID_REQUEST: keepLast 0, a negative age, an external table", body = crate::error::ErrorBody),
        (status = 403, description = "FORBIDDEN: settings below the server's need the admin token", body = crate::error::ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn maintain(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<MaintainBody>,
) -> Result<ApiJson<MaintainView>> {
    let caller = caller(&state, &headers).await?;
    let body = body.parse()?;
    if body.keep_last == Some(0) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "keepLast must be at least 1: the current snapshot is always kept",
        )
        .into());
    }
    if body.max_snapshot_age_ms.is_some_and(|v| v < 0) || body.orphan_min_age_ms.is_some_and(|v| v < 0) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "ages are non-negative milliseconds").into());
    }
    if let Some(setting) = destructive_setting(&body, &state.config.catalog) {
        caller.require_admin().map_err(|e| {
            ApiError::new(e.code, format!("{setting} below the server's setting needs the admin token"))
        })?;
    }
    let options = MaintainOptions {
        compact: body.compact.unwrap_or(true),
        compact_prefix: None,
        expire: body.expire.unwrap_or(true),
        keep_last: body.keep_last,
        max_snapshot_age_ms: body.max_snapshot_age_ms,
        remove_orphans: body.remove_orphans.unwrap_or(true),
        orphan_min_age_ms: body.orphan_min_age_ms,
    };
    match call_catalog(&state, &caller.namespace, CatalogRequest::Maintain { table: body.table, options }).await? {
        CatalogResponse::Maintained(reports) => Ok(ApiJson(MaintainView { reports })),
        _ => Err(out_of_protocol()),
    }
}

/// The first setting of `body` more aggressive than the server's, if any.
fn destructive_setting(body: &MaintainBody, config: &crate::config::CatalogConfig) -> Option<&'static str> {
    if body.keep_last.is_some_and(|n| n < config.min_snapshots) {
        Some("keepLast")
    } else if body.max_snapshot_age_ms.is_some_and(|ms| ms < config.snapshot_max_age_ms) {
        Some("maxSnapshotAgeMs")
    } else if body.orphan_min_age_ms.is_some_and(|ms| ms < config.orphan_min_age_ms) {
        Some("orphanMinAgeMs")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CatalogConfig;

    #[test]
    fn settings_below_the_servers_are_destructive() {
        let config = CatalogConfig::default();
        let body = |v: Value| -> MaintainBody { serde_json::from_value(v).unwrap() };
        assert_eq!(destructive_setting(&body(serde_json::json!({})), &config), None);
        assert_eq!(destructive_setting(&body(serde_json::json!({"compact": true, "table": "events"})), &config), None);
        let same = serde_json::json!({
            "keepLast": config.min_snapshots,
            "maxSnapshotAgeMs": config.snapshot_max_age_ms,
            "orphanMinAgeMs": config.orphan_min_age_ms,
        });
        assert_eq!(destructive_setting(&body(same), &config), None, "the server's own settings are not destructive");
        assert_eq!(
            destructive_setting(&body(serde_json::json!({"orphanMinAgeMs": 0})), &config),
            Some("orphanMinAgeMs")
        );
        assert_eq!(
            destructive_setting(&body(serde_json::json!({"maxSnapshotAgeMs": 0})), &config),
            Some("maxSnapshotAgeMs")
        );
        assert_eq!(destructive_setting(&body(serde_json::json!({"keepLast": 1})), &config), Some("keepLast"));
    }
}
