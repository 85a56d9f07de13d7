//! `/cdc/...`: change capture of collections — state at a point in time,
//! documents, history, restore, compaction, snapshots, the manifest.
//!
//! Handlers are thin: they authenticate, extract the path and query, and call
//! the host-independent [`events_api::cdc`] (shared with the Worker), which
//! parses the query, calls the collection's `CdcProcessor` (or the
//! namespace's `CdcCollections`) and shapes the answer. A namespace key acts
//! only on its own namespace (`{ns}` must be its namespace, else
//! `FORBIDDEN`); the admin token acts on any.
//!
//! Action routes start with `_` (`/_restore`, `/_compact`, ...) so they
//! cannot be mistaken for a document id; a document whose id is exactly one
//! of these names is read through the list route.

use axum::extract::State;
use axum::http::HeaderMap;
use events_api::cdc::{self as api, HistoryQuery, StateQuery};
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiErrorResponse, ApiJson, ApiPath, ApiQuery, JsonBody};
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

/// Authenticates the caller for namespace `ns` (the collection name is checked by [`events_api::cdc`]).
async fn authorize(state: &AppState, headers: &HeaderMap, ns: &str) -> Result<()> {
    let caller = state.auth.authenticate(&state.host, headers).await?;
    validate_namespace(ns)?;
    if let Principal::Key { .. } = caller.principal
        && caller.namespace != ns
    {
        return Err(ApiError::new(ErrorCode::Forbidden, "this key belongs to another namespace").into());
    }
    Ok(())
}

/// Lists the namespace's collections with their statistics.
#[utoipa::path(get, path = "/cdc/{ns}", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = 200, description = "`{collections: [{collection, documents, deleted, changes, pending, late, lastChange, deltaFiles, lastCompaction, compactions, snapshots, table, catalogError, historyFrom}]}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn collections(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    Ok(ApiJson(api::collections(&state.host, &ns).await?))
}

/// Query of a collection read (parsed by [`events_api::cdc::state_request`]).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct StateParams {
    /// The time to read at (ISO-8601); default: now.
    pub at: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1-1000, default 100).
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
    /// Include tombstones (deleted documents).
    #[param(value_type = Option<bool>)]
    pub include_deleted: Option<String>,
    /// `state` (the object's history index, default) or `lake` (rebuilt from the Parquet files).
    pub source: Option<String>,
}

/// The documents of a collection as they were at `at` (default: now), a page at a time, by id.
#[utoipa::path(get, path = "/cdc/{ns}/{collection}", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("collection" = String, Path, description = "Collection"), StateParams),
    responses((status = 200, description = "`{collection, at, documents: [{id, data, version, deleted, lastChange, seq, bookmark}], nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn read_collection(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, collection)): ApiPath<(String, String)>,
    params: ApiQuery<StateParams>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    let q = params.parse()?;
    let query = StateQuery {
        at: q.at.as_deref(),
        cursor: q.cursor.as_deref(),
        limit: q.limit.as_deref(),
        include_deleted: q.include_deleted.as_deref(),
        source: q.source.as_deref(),
    };
    Ok(ApiJson(api::read_collection(&state.host, &ns, &collection, &query).await?))
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
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("collection" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"), DocParams),
    responses((status = 200, description = "`{id, data, version, deleted, lastChange, seq, bookmark}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn read_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, collection, id)): ApiPath<(String, String, String)>,
    params: ApiQuery<DocParams>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    let q = params.parse()?;
    Ok(ApiJson(api::read_document(&state.host, &ns, &collection, &id, q.at.as_deref()).await?))
}

/// Query of a history read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1-1000, default 100).
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
}

/// A document's changes in event-time order (ties: arrival order), late ones included.
#[utoipa::path(get, path = "/cdc/{ns}/{collection}/{id}/history", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("collection" = String, Path, description = "Collection"),
        ("id" = String, Path, description = "Document id"), HistoryParams),
    responses((status = 200, description = "`{id, changes: [{eventId, op, ts, seq, before, after, bookmark, trimmedBefore?}], nextCursor, historyFrom}`: `historyFrom` (once trimmed) is the time from which the history is complete", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, collection, id)): ApiPath<(String, String, String)>,
    params: ApiQuery<HistoryParams>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    let q = params.parse()?;
    let query = HistoryQuery { cursor: q.cursor.as_deref(), limit: q.limit.as_deref() };
    Ok(ApiJson(api::history(&state.host, &ns, &collection, &id, &query).await?))
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
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("collection" = String, Path, description = "Collection")),
    request_body = RestoreBody,
    responses((status = 200, description = "`{collection, at, restoreId, changes, examined}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, collection)): ApiPath<(String, String)>,
    body: JsonBody<RestoreBody>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    let body = body.parse()?;
    let answer = api::restore(&state.host, &ns, &collection, &body.at).await?;
    metrics::counter!("events_cdc_restores_total").increment(1);
    Ok(ApiJson(answer))
}

/// Compacts now: pending changes go to a delta file, then the current table is rewritten.
#[utoipa::path(post, path = "/cdc/{ns}/{collection}/_compact", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("collection" = String, Path, description = "Collection")),
    responses((status = 200, description = "`{files}`: keys written", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn compact(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, collection)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    Ok(ApiJson(api::compact(&state.host, &ns, &collection).await?))
}

/// Writes pending changes to delta files now.
#[utoipa::path(post, path = "/cdc/{ns}/{collection}/_flush", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("collection" = String, Path, description = "Collection")),
    responses((status = 200, description = "`{files}`: delta files written", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn flush(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, collection)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    Ok(ApiJson(api::flush(&state.host, &ns, &collection).await?))
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
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("collection" = String, Path, description = "Collection"), SnapshotParams),
    responses((status = 200, description = "`{kind, key, skipped}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, collection)): ApiPath<(String, String)>,
    params: ApiQuery<SnapshotParams>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    let q = params.parse()?;
    Ok(ApiJson(api::snapshot(&state.host, &ns, &collection, q.kind.as_deref()).await?))
}

/// The collection's manifest: delta files, current table, snapshots.
#[utoipa::path(get, path = "/cdc/{ns}/{collection}/_manifest", tag = "cdc",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("collection" = String, Path, description = "Collection")),
    responses((status = 200, description = "The manifest (as written to `manifest.json`)", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, collection)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>> {
    authorize(&state, &headers, &ns).await?;
    Ok(ApiJson(api::manifest(&state.host, &ns, &collection).await?))
}
