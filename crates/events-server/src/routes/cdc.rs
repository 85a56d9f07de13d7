//! `/cdc/...`: change capture of collections — state at a point in time,
//! documents, history, restore, compaction, snapshots, the manifest.
//!
//! Handlers are thin: they authenticate, parse the query and call the
//! collection's [`CdcProcessor`] (or the namespace's [`CdcCollections`]).
//! A namespace key acts only on its own namespace (`{ns}` must be its
//! namespace, else `FORBIDDEN`); the admin token acts on any.
//!
//! Action routes start with `_` (`/_restore`, `/_compact`, ...) so they
//! cannot be mistaken for a document id; a document whose id is exactly one
//! of these names is read through the list route.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use events_core::cdc::valid_collection_name;
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::cdc::{
    CdcRequest, CdcResponse, CollectionsRequest, CollectionsResponse, FileBase, SnapshotKind, processor_name,
};
use events_objects::{CdcCollections, CdcProcessor};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiErrorResponse, ApiJson};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(collections))
        .routes(routes!(read_collection))
        .routes(routes!(read_document))
        .routes(routes!(history))
        .routes(routes!(restore))
        .routes(routes!(compact))
        .routes(routes!(flush))
        .routes(routes!(snapshot))
        .routes(routes!(manifest))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

/// Default page size of state reads and history.
pub const DEFAULT_PAGE: usize = 100;
/// Most steps one restore request runs (each examines up to 10,000 documents).
pub const MAX_RESTORE_STEPS: usize = 10_000;

/// Authenticates the caller for namespace `ns` and checks the collection name.
async fn authorize(state: &AppState, headers: &HeaderMap, ns: &str, collection: Option<&str>) -> Result<()> {
    let caller = state.auth.authenticate(&state.host, headers).await?;
    validate_namespace(ns)?;
    if let Principal::Key { .. } = caller.principal
        && caller.namespace != ns
    {
        return Err(ApiError::new(ErrorCode::Forbidden, "this key belongs to another namespace").into());
    }
    if let Some(c) = collection
        && !valid_collection_name(c)
    {
        return Err(ApiError::new(ErrorCode::InvalidRequest, format!("{c:?} is not a collection name")).into());
    }
    Ok(())
}

async fn call(state: &AppState, ns: &str, collection: &str, req: CdcRequest) -> Result<CdcResponse> {
    Ok(state.host.call_object::<CdcProcessor>(&processor_name(ns, collection), req).await?)
}

fn unexpected() -> ApiErrorResponse {
    ApiError::internal("unexpected answer").into()
}

fn to_json<T: serde::Serialize>(v: T) -> Result<ApiJson<Value>> {
    Ok(ApiJson(serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))?))
}

/// Parses an `at` parameter (ISO-8601 with offset).
fn parse_at(at: Option<&str>) -> Result<Option<Timestamp>> {
    at.map(|s| {
        Timestamp::parse_iso(s).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidQuery, format!("at={s:?} is not an ISO-8601 date-time with offset")).into()
        })
    })
    .transpose()
}

/// Lists the namespace's collections with their statistics.
#[utoipa::path(get, path = "/cdc/{ns}", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace")),
    responses((status = 200, description = "`{collections: [{collection, documents, deleted, changes, pending, late, lastChange, deltaFiles, lastCompaction, compactions, snapshots, table, catalogError, historyFrom}]}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn collections(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, None).await?;
    let CollectionsResponse::Collections(names) =
        state.host.call_object::<CdcCollections>(&ns, CollectionsRequest::List).await?
    else {
        return Err(unexpected());
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match call(&state, &ns, &name, CdcRequest::Stats).await? {
            CdcResponse::Stats(s) => out.push(s),
            _ => return Err(unexpected()),
        }
    }
    to_json(json!({ "namespace": ns, "collections": out }))
}

/// Query of a collection read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct StateParams {
    /// The time to read at (ISO-8601); default: now.
    pub at: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1-1000, default 100).
    pub limit: Option<usize>,
    /// Include tombstones (deleted documents).
    pub include_deleted: Option<bool>,
    /// `state` (the object's history index, default) or `lake` (rebuilt from the Parquet files).
    pub source: Option<String>,
}

/// The documents of a collection as they were at `at` (default: now), a page at a time, by id.
#[utoipa::path(get, path = "/cdc/{ns}/{collection}", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace"), ("collection" = String, Path, description = "Collection"), StateParams),
    responses((status = 200, description = "`{collection, at, documents: [{id, data, version, deleted, lastChange, seq, bookmark}], nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn read_collection(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ns, collection)): Path<(String, String)>,
    Query(q): Query<StateParams>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, Some(&collection)).await?;
    let at = parse_at(q.at.as_deref())?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    let req = match q.source.as_deref().unwrap_or("state") {
        "state" => {
            CdcRequest::ReadState { at, after: q.cursor, limit, include_deleted: q.include_deleted.unwrap_or(false) }
        }
        "lake" => CdcRequest::ReadFiles {
            at: at.unwrap_or(Timestamp(i64::MAX)),
            base: FileBase::Auto,
            after: q.cursor,
            limit,
        },
        other => {
            return Err(ApiError::new(ErrorCode::InvalidQuery, format!("source={other:?}: use state or lake")).into());
        }
    };
    match call(&state, &ns, &collection, req).await? {
        CdcResponse::Docs { docs, next } => to_json(json!({
            "collection": collection,
            "at": at.map(|t| t.to_iso()),
            "documents": docs,
            "nextCursor": next,
        })),
        _ => Err(unexpected()),
    }
}

/// Query of a document read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DocParams {
    /// The time to read at (ISO-8601); default: now.
    pub at: Option<String>,
}

/// One document as it was at `at` (default: now); tombstones have `deleted: true`.
#[utoipa::path(get, path = "/cdc/{ns}/{collection}/{id}", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace"), ("collection" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"), DocParams),
    responses((status = 200, description = "`{id, data, version, deleted, lastChange, seq, bookmark}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn read_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ns, collection, id)): Path<(String, String, String)>,
    Query(q): Query<DocParams>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, Some(&collection)).await?;
    let at = parse_at(q.at.as_deref())?;
    match call(&state, &ns, &collection, CdcRequest::ReadDoc { id: id.clone(), at }).await? {
        CdcResponse::Doc(Some(doc)) => to_json(doc),
        CdcResponse::Doc(None) => Err(ApiError::not_found(match at {
            Some(at) => format!("document {id:?} had no change at or before {at}"),
            None => format!("no document {id:?} in {collection}"),
        })
        .into()),
        _ => Err(unexpected()),
    }
}

/// Query of a history read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1-1000, default 100).
    pub limit: Option<usize>,
}

/// A document's changes in event-time order (ties: arrival order), late ones included.
#[utoipa::path(get, path = "/cdc/{ns}/{collection}/{id}/history", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace"), ("collection" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"), HistoryParams),
    responses((status = 200, description = "`{id, changes: [{eventId, op, ts, seq, before, after, bookmark, trimmedBefore?}], nextCursor, historyFrom}`: `historyFrom` (once trimmed) is the time from which the history is complete", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ns, collection, id)): Path<(String, String, String)>,
    Query(q): Query<HistoryParams>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, Some(&collection)).await?;
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.split_once('.')
                .and_then(|(ts, seq)| Some((ts.parse::<i64>().ok()?, seq.parse::<i64>().ok()?)))
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "cursor is not a history cursor"))?,
        ),
    };
    let req = CdcRequest::History { id: id.clone(), after, limit: q.limit.unwrap_or(DEFAULT_PAGE) };
    match call(&state, &ns, &collection, req).await? {
        CdcResponse::History { changes, next, history_from } => {
            if changes.is_empty() && after.is_none() {
                return Err(ApiError::not_found(format!("document {id:?} has no history in {collection}")).into());
            }
            to_json(
                json!({ "id": id, "changes": changes, "nextCursor": next.map(|(t, s)| format!("{t}.{s}")), "historyFrom": history_from }),
            )
        }
        _ => Err(unexpected()),
    }
}

/// Body of a restore.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RestoreBody {
    /// The time to bring the collection back to (ISO-8601).
    pub at: String,
}

/// Restores the collection to its state at `at` by writing new changes
/// (updates, re-inserts, deletes), so the restore is in the history and can
/// itself be undone by a later restore.
#[utoipa::path(post, path = "/cdc/{ns}/{collection}/_restore", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace"), ("collection" = String, Path, description = "Collection")),
    request_body = RestoreBody,
    responses((status = 200, description = "`{collection, at, restoreId, changes, examined}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ns, collection)): Path<(String, String)>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, Some(&collection)).await?;
    let at = parse_at(Some(&body.at))?.expect("given");
    let restore_id = format!(
        "restore-{}",
        events_core::id::ulid_string(Timestamp(chrono::Utc::now().timestamp_millis()), rand::random())
    );
    let (mut changes, mut examined, mut after) = (0, 0, None);
    for _ in 0..MAX_RESTORE_STEPS {
        let req = CdcRequest::Restore { at, restore_id: restore_id.clone(), after: after.take() };
        match call(&state, &ns, &collection, req).await? {
            CdcResponse::Restored { changes: c, examined: e, next } => {
                changes += c;
                examined += e;
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            _ => return Err(unexpected()),
        }
    }
    metrics::counter!("events_cdc_restores_total").increment(1);
    to_json(
        json!({ "collection": collection, "at": at.to_iso(), "restoreId": restore_id, "changes": changes, "examined": examined }),
    )
}

/// Compacts now: pending changes go to a delta file, then the current table is rewritten.
#[utoipa::path(post, path = "/cdc/{ns}/{collection}/_compact", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace"), ("collection" = String, Path, description = "Collection")),
    responses((status = 200, description = "`{files}`: keys written", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn compact(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ns, collection)): Path<(String, String)>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, Some(&collection)).await?;
    match call(&state, &ns, &collection, CdcRequest::Compact).await? {
        CdcResponse::Files(files) => to_json(json!({ "files": files })),
        _ => Err(unexpected()),
    }
}

/// Writes pending changes to delta files now.
#[utoipa::path(post, path = "/cdc/{ns}/{collection}/_flush", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace"), ("collection" = String, Path, description = "Collection")),
    responses((status = 200, description = "`{files}`: delta files written", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn flush(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ns, collection)): Path<(String, String)>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, Some(&collection)).await?;
    match call(&state, &ns, &collection, CdcRequest::Flush).await? {
        CdcResponse::Files(files) => to_json(json!({ "files": files })),
        _ => Err(unexpected()),
    }
}

/// Query of a snapshot request.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotParams {
    /// `daily` (default) or `monthly`.
    pub kind: Option<String>,
}

/// Takes a snapshot now (labelled with today's date or month); skipped when
/// nothing changed since the last snapshot of that kind.
#[utoipa::path(post, path = "/cdc/{ns}/{collection}/_snapshot", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace"), ("collection" = String, Path, description = "Collection"), SnapshotParams),
    responses((status = 200, description = "`{kind, key, skipped}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ns, collection)): Path<(String, String)>,
    Query(q): Query<SnapshotParams>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, Some(&collection)).await?;
    let kind = match q.kind.as_deref().unwrap_or("daily") {
        "daily" => SnapshotKind::Daily,
        "monthly" => SnapshotKind::Monthly,
        other => {
            return Err(ApiError::new(ErrorCode::InvalidQuery, format!("kind={other:?}: use daily or monthly")).into());
        }
    };
    match call(&state, &ns, &collection, CdcRequest::Snapshot { kind }).await? {
        CdcResponse::Snapshot(key) => to_json(json!({ "kind": kind.as_str(), "skipped": key.is_none(), "key": key })),
        _ => Err(unexpected()),
    }
}

/// The collection's manifest: delta files, current table, snapshots.
#[utoipa::path(get, path = "/cdc/{ns}/{collection}/_manifest", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace"), ("collection" = String, Path, description = "Collection")),
    responses((status = 200, description = "The manifest (as written to `manifest.json`)", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((ns, collection)): Path<(String, String)>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns, Some(&collection)).await?;
    match call(&state, &ns, &collection, CdcRequest::Manifest).await? {
        CdcResponse::Manifest(m) => to_json(m),
        _ => Err(unexpected()),
    }
}
