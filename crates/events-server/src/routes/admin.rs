//! `/admin/...`: namespace keys and limits, flushing, shard layouts. Admin token only.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use events_api::admin::LimitsView;
use events_api::keys::{self, CreateKeyRequest, CreatedKey, KeyList, KeyView};
use events_core::ApiError;
use events_core::name::validate_namespace;
use events_objects::event_writer::{WriterRequest, WriterResponse};
use events_objects::outbox::CONSUMERS;
use events_objects::shard_coordinator::ShardRequest;
use events_objects::{EventWriter, ShardCoordinator};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::error::{ApiErrorResponse, ApiJson, ApiPath, JsonBody, RawBody};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(get_limits, put_limits))
        .routes(routes!(flush))
        .routes(routes!(shards))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

async fn admin(state: &AppState, headers: &HeaderMap) -> Result<()> {
    state.auth.authenticate(&state.host, headers).await?.require_admin()?;
    Ok(())
}

/// Creates an API key for a namespace: a secret key (`ns_...`, the default),
/// or with `"kind": "publishable"` a write-only key (`pk_...`) for browsers,
/// which only `POST /e` accepts, maybe from `allowedOrigins` only, with its own
/// `rateLimit`. The answer is the only time the key is shown.
#[utoipa::path(post, path = "/admin/namespaces/{ns}/keys", tag = "admin",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    request_body(content = Option<CreateKeyRequest>, description = "Optional: without a body the key is a secret key without a label"),
    responses((status = 201, description = "Created", body = CreatedKey)),
    security(("bearerAuth" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
    body: RawBody,
) -> Result<(StatusCode, ApiJson<CreatedKey>)> {
    admin(&state, &headers).await?;
    validate_namespace(&ns)?;
    let request = CreateKeyRequest::parse(&body.bytes()?)?;
    Ok((StatusCode::CREATED, ApiJson(keys::create_key(&state.host, &ns, request).await?)))
}

/// Lists a namespace's API keys (kind, and a publishable key's origins and limits; never a secret).
#[utoipa::path(get, path = "/admin/namespaces/{ns}/keys", tag = "admin",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = 200, description = "Keys", body = KeyList)),
    security(("bearerAuth" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<ApiJson<KeyList>> {
    admin(&state, &headers).await?;
    Ok(ApiJson(keys::list_keys(&state.host, &ns).await?))
}

/// Revokes an API key (secret or publishable); it stops working at once.
#[utoipa::path(delete, path = "/admin/namespaces/{ns}/keys/{id}", tag = "admin",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("id" = String, Path, description = "Key id")),
    responses((status = 200, description = "Revoked", body = KeyView)),
    security(("bearerAuth" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, id)): ApiPath<(String, String)>,
) -> Result<ApiJson<KeyView>> {
    admin(&state, &headers).await?;
    let view = keys::revoke_key(&state.host, &ns, &id).await?;
    state.auth.evict_key(&id);
    Ok(ApiJson(view))
}

/// Reads a namespace's limits.
#[utoipa::path(get, path = "/admin/namespaces/{ns}/limits", tag = "admin",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = 200, description = "Limits", body = LimitsView)),
    security(("bearerAuth" = [])))]
pub async fn get_limits(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<ApiJson<LimitsView>> {
    admin(&state, &headers).await?;
    Ok(ApiJson(events_api::admin::get_limits(&state.host, &ns).await?))
}

/// Replaces a namespace's limits.
#[utoipa::path(put, path = "/admin/namespaces/{ns}/limits", tag = "admin",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    request_body = LimitsView,
    responses((status = 200, description = "Limits", body = LimitsView)),
    security(("bearerAuth" = [])))]
pub async fn put_limits(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
    body: JsonBody<LimitsView>,
) -> Result<ApiJson<LimitsView>> {
    admin(&state, &headers).await?;
    validate_namespace(&ns)?;
    let limits = events_api::admin::put_limits(&state.host, &ns, body.parse()?).await?;
    state.ingest.invalidate(&ns);
    Ok(ApiJson(limits))
}

/// Files written by a flush.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlushResponse {
    /// Keys of the Parquet files written.
    pub files: Vec<String>,
}

/// Flushes every writer buffer to the lake now.
#[utoipa::path(post, path = "/admin/flush", tag = "admin",
    responses((status = 200, description = "Flushed", body = FlushResponse)),
    security(("bearerAuth" = [])))]
pub async fn flush(State(state): State<AppState>, headers: HeaderMap) -> Result<ApiJson<FlushResponse>> {
    admin(&state, &headers).await?;
    let files = crate::objects::flush_writers(&state.host)
        .await
        .map_err(|e| ApiError::new(events_core::ErrorCode::StorageError, e.to_string()))?;
    Ok(ApiJson(FlushResponse { files }))
}

/// One namespace's writer layout and subscription sub-shard layout.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardView {
    /// Namespace.
    pub namespace: String,
    /// Active writer shards.
    pub shards: u32,
    /// Grows with every change.
    pub epoch: u64,
    /// When the layout last changed (ISO-8601).
    pub changed_at: String,
    /// Backpressure reports in the current window.
    pub recent_backpressure: usize,
    /// Delivery sub-shards of the namespace's subscriptions (`<ns>`, `<ns>/1`, ...).
    pub subscription_shards: u32,
    /// Grows with every split or merge.
    pub subscription_epoch: u64,
    /// Deliveries waiting, summed over the sub-shards' latest reports.
    pub subscription_backlog: u64,
    /// Deliveries per second, summed over the sub-shards' latest reports.
    pub subscription_rate: u64,
    /// Each writer shard's outbox: what waits for the lake flush and for each consumer.
    pub outbox: Vec<OutboxView>,
}

/// One writer shard's outbox backlog. Appends are refused (503) once one of
/// these reaches `[writer] outbox_max_events`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxView {
    /// The writer shard (`<ns>/<shard>`).
    pub writer: String,
    /// Events not yet flushed to the lake.
    pub unflushed: u64,
    /// Events not yet taken by each built-in consumer (`subscriptions`, `cdc`).
    pub backlog: std::collections::BTreeMap<String, u64>,
    /// The last error of each consumer whose last attempt failed.
    pub errors: std::collections::BTreeMap<String, String>,
}

/// Every namespace's layout.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShardsResponse {
    /// Layouts, by namespace.
    pub namespaces: Vec<ShardView>,
}

/// The writer shard layout and the subscription delivery sub-shard layout of every namespace.
#[utoipa::path(get, path = "/admin/shards", tag = "admin",
    responses((status = 200, description = "Layouts", body = ShardsResponse)),
    security(("bearerAuth" = [])))]
pub async fn shards(State(state): State<AppState>, headers: HeaderMap) -> Result<ApiJson<ShardsResponse>> {
    admin(&state, &headers).await?;
    let mut namespaces = Vec::new();
    let writers = state.host.object_names::<EventWriter>()?;
    for ns in state.host.object_names::<ShardCoordinator>()? {
        let layout = state.host.call_object::<ShardCoordinator>(&ns, ShardRequest::Layout).await?;
        let mut outbox = Vec::new();
        for writer in writers.iter().filter(|w| w.rsplit_once('/').is_some_and(|(wns, _)| wns == ns)) {
            if let WriterResponse::Stats(stats) =
                state.host.call_object::<EventWriter>(writer, WriterRequest::Stats).await?
            {
                outbox.push(OutboxView {
                    writer: writer.clone(),
                    unflushed: stats.buffered,
                    backlog: CONSUMERS.iter().filter_map(|c| Some((c.to_string(), stats.backlog(c)?))).collect(),
                    errors: stats.consumer_errors.into_iter().collect(),
                });
            }
        }
        namespaces.push(ShardView {
            namespace: ns,
            shards: layout.shards,
            epoch: layout.epoch,
            changed_at: layout.changed_at.to_iso(),
            recent_backpressure: layout.recent_reports,
            subscription_shards: layout.subscription_shards,
            subscription_epoch: layout.subscription_epoch,
            subscription_backlog: layout.subscription_backlog,
            subscription_rate: layout.subscription_rate,
            outbox,
        });
    }
    Ok(ApiJson(ShardsResponse { namespaces }))
}
