//! The original service's Worker-RPC subscription routes, for its users:
//! `POST /subscriptions/subscribe`, `GET /subscriptions/list`,
//! `GET|POST /subscriptions/match`, `GET /subscriptions/status/{id}`,
//! `POST /subscriptions/unsubscribe`, `POST /subscriptions/reactivate` and
//! `PUT /subscriptions/{id}` (registered with its path's other methods in
//! [`super::subscriptions`]).
//!
//! Authentication as for every `/subscriptions` route (the admin token with
//! `X-Namespace`, or a namespace key; a caller sees only its namespace). The
//! handlers authenticate, parse, check target URLs against the outbound
//! policy and call the shared [`events_api::worker_rpc`].

use axum::extract::State;
use axum::http::HeaderMap;
use events_api::subscriptions::{self as subs, SubscribeBody};
use events_api::worker_rpc::{self as api, MatchBody, SubscriptionRef, WorkerListQuery, WorkerUpdate};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::routes;

use super::subscriptions::{authed, check_target, namespace};
use crate::error::{ApiErrorResponse, ApiJson, ApiPath, ApiQuery, JsonBody};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(subscribe))
        .routes(routes!(list))
        .routes(routes!(match_query, match_body))
        .routes(routes!(status))
        .routes(routes!(unsubscribe))
        .routes(routes!(reactivate))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

/// Subscribes a worker's RPC method: delivers to the configured URL template
/// (`[subscriptions] rpc_url_template`, default
/// `https://{workerId}.workers.dev/rpc/{rpcMethod}`). Body: `workerId`,
/// `pattern`, `rpcMethod`, and optionally `maxRetries` (attempts, 1-20),
/// `timeoutMs`, `secret`. The same worker, pattern and method twice is
/// refused with `CONFLICT`, the existing id in `details.subscriptionId`.
#[utoipa::path(post, path = "/subscriptions/subscribe", tag = "subscriptions",
    request_body = Value,
    responses((status = 200, description = "`{ok, subscriptionId, shard, namespace, secret, subscription}`; `secret` is shown only now", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn subscribe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<SubscribeBody>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let spec = subs::subscribe_spec(body.parse()?, &state.config.subscriptions.rpc_url_template)?;
    check_target(&state, &spec.url).await?;
    Ok(ApiJson(api::subscribe(&state.host, authed(ns), spec).await?))
}

/// Query of `GET /subscriptions/list`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct WorkerListParams {
    /// `true`: active only; `false`: paused or disabled only.
    #[param(value_type = Option<bool>)]
    pub active: Option<String>,
    /// Only this worker's subscriptions.
    pub worker_id: Option<String>,
    /// Only patterns that start with this.
    pub pattern_prefix: Option<String>,
    /// Only patterns of this shard name (the pattern's first literal segment, or `default`).
    pub shard: Option<String>,
    /// Page size (default 100, clamped into 1-1000).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// Subscriptions skipped.
    #[param(value_type = Option<usize>)]
    pub offset: Option<String>,
}

/// Lists the namespace's subscriptions in the original's shape, newest first.
#[utoipa::path(get, path = "/subscriptions/list", tag = "subscriptions", params(WorkerListParams),
    responses((status = 200, description = "`{subscriptions, namespace}` (and `shard` when filtered by it)", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: ApiQuery<WorkerListParams>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let p = params.parse()?;
    let q = WorkerListQuery {
        active: p.active.as_deref(),
        worker_id: p.worker_id.as_deref(),
        pattern_prefix: p.pattern_prefix.as_deref(),
        shard: p.shard.as_deref(),
        limit: p.limit.as_deref(),
        offset: p.offset.as_deref(),
    };
    Ok(ApiJson(api::list(&state.host, authed(ns), &q).await?))
}

/// Query of `GET /subscriptions/match`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct MatchParams {
    /// The event type to match.
    pub event_type: Option<String>,
}

/// The active subscriptions whose pattern matches an event type.
#[utoipa::path(get, path = "/subscriptions/match", tag = "subscriptions", params(MatchParams),
    responses((status = 200, description = "`{subscriptions, namespace}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn match_query(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: ApiQuery<MatchParams>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let p = params.parse()?;
    Ok(ApiJson(api::matching(&state.host, authed(ns), p.event_type.as_deref()).await?))
}

/// As `GET /subscriptions/match`, the event type in the body: `{eventType}`.
#[utoipa::path(post, path = "/subscriptions/match", tag = "subscriptions",
    request_body = Value,
    responses((status = 200, description = "`{subscriptions, namespace}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn match_body(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<MatchBody>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let body = body.parse()?;
    Ok(ApiJson(api::matching(&state.host, authed(ns), Some(&body.event_type)).await?))
}

/// A subscription and its delivery statistics, in the original's shape; an
/// unknown id answers `subscription: null` with zero statistics.
#[utoipa::path(get, path = "/subscriptions/status/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "`{subscription, stats}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::status(&state.host, authed(namespace(&state, &headers).await?), &id).await?))
}

/// Pauses a subscription (`{subscriptionId}`); matching events keep being
/// queued and go out after `reactivate`.
#[utoipa::path(post, path = "/subscriptions/unsubscribe", tag = "subscriptions",
    request_body = Value,
    responses((status = 200, description = "`{ok: true}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<SubscriptionRef>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    Ok(ApiJson(api::set_active(&state.host, authed(ns), &body.parse()?, false).await?))
}

/// Resumes a subscription (`{subscriptionId}`).
#[utoipa::path(post, path = "/subscriptions/reactivate", tag = "subscriptions",
    request_body = Value,
    responses((status = 200, description = "`{ok: true}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn reactivate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<SubscriptionRef>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    Ok(ApiJson(api::set_active(&state.host, authed(ns), &body.parse()?, true).await?))
}

/// Changes a subscription in the original's terms: `maxRetries` (attempts,
/// 1-20), `timeoutMs`, `rpcMethod` (worker subscriptions; the URL follows).
#[utoipa::path(put, path = "/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = Value,
    responses((status = 200, description = "`{ok: true}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: JsonBody<WorkerUpdate>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let body = body.parse()?;
    let template = state.config.subscriptions.rpc_url_template.clone();
    let check = |url: String| {
        let state = state.clone();
        async move { check_target(&state, &url).await.map_err(|e| e.0) }
    };
    Ok(ApiJson(api::update(&state.host, authed(ns), &id, body, &template, check).await?))
}
