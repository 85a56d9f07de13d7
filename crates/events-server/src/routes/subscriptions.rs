//! `/subscriptions/...`: webhook subscriptions of a namespace, their
//! deliveries, attempts, dead letters, replay, recovery and stats.
//!
//! The admin token (with `X-Namespace`) or a namespace key; a caller only
//! ever sees the subscriptions of its own namespace (one
//! [`Subscriptions`] object per namespace). Target URLs are checked against
//! the outbound policy when they are set: a private, loopback or metadata
//! address that `[outbound] allow` does not cover is refused with
//! `TARGET_NOT_ALLOWED` (the host refuses it again at delivery time).
//!
//! Handlers are thin: they authenticate, then parse the body, check target
//! URLs (here, because the check resolves names with the server's resolver),
//! and call the
//! host-independent [`events_api::subscriptions`] (shared with the Worker),
//! which parses the query and bodies, calls the object and shapes the answer.
//! The original service's Worker-RPC routes are in [`super::worker_rpc`].

use std::net::{IpAddr, SocketAddr};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use events_api::subscriptions::{self as api, DeliveryListing, ListQuery, PageQuery, RecoverBody, target_refused};
use events_core::{ApiError, ErrorCode};
use events_objects::subscription::{SubscriptionPatch, SubscriptionSpec};
use events_runtime::Host as _;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::routes;

use crate::error::{ApiErrorResponse, ApiJson, ApiPath, ApiQuery, JsonBody, RawBody};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(create, list))
        .routes(routes!(get_one, update, delete, super::worker_rpc::replace))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(rotate_secret))
        .routes(routes!(attempts))
        .routes(routes!(event_attempts))
        .routes(routes!(deliveries))
        .routes(routes!(dead_letters))
        .routes(routes!(replay_one))
        .routes(routes!(replay_all))
        .routes(routes!(recover))
        .routes(routes!(recover_status))
        .routes(routes!(stats))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

/// Authenticates the caller and yields the namespace it acts on. Every
/// handler calls it before it parses anything, so a caller without valid
/// credentials gets `401` whatever its query or body.
pub(crate) async fn namespace(state: &AppState, headers: &HeaderMap) -> std::result::Result<String, ApiError> {
    Ok(state.auth.authenticate(&state.host, headers).await?.namespace)
}

/// The authenticated namespace, as the shared code takes it.
pub(crate) fn authed(ns: String) -> std::future::Ready<std::result::Result<String, ApiError>> {
    std::future::ready(Ok(ns))
}

/// Refuses a target the outbound policy would refuse: a literal private
/// address, or a name that resolves only to such addresses.
pub(crate) async fn check_target(state: &AppState, url: &str) -> Result<()> {
    let http = state.host.http();
    let parsed = http.check_url(url).map_err(|e| target_refused(url, e))?;
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return Ok(());
    };
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return Ok(()); // literal addresses were checked above
    }
    // A name that does not resolve now may later: delivery checks again.
    let Ok(addrs) = tokio::net::lookup_host((host, port)).await else { return Ok(()) };
    let addrs: Vec<SocketAddr> = addrs.collect();
    if !addrs.is_empty() && addrs.iter().all(|a| http.check_url(&format!("http://{a}/")).is_err()) {
        return Err(ApiError::new(
            ErrorCode::TargetNotAllowed,
            format!("{host} resolves only to private addresses; allow them in [outbound] allow to use it"),
        )
        .with_details(json!({ "url": url }))
        .into());
    }
    Ok(())
}

/// Creates a subscription. Body: `pattern`, `url`, and optionally `secret`
/// (`whsec_...`, generated when absent and returned once), `retrySchedule`
/// (ms before each attempt), `timeoutMs`, `batch {maxSize, windowMs}`,
/// `orderingKey`, `disableAfterMs`, `description`.
#[utoipa::path(post, path = "/subscriptions", tag = "subscriptions",
    request_body = Value,
    responses((status = 201, description = "Created; `secret` is shown only now", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    spec: JsonBody<SubscriptionSpec>,
) -> Result<(StatusCode, ApiJson<Value>)> {
    let ns = namespace(&state, &headers).await?;
    let spec = spec.parse()?;
    check_target(&state, &spec.url).await?;
    Ok((StatusCode::CREATED, ApiJson(api::create(&state.host, authed(ns), spec).await?)))
}

/// Query of `GET /subscriptions`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this exact pattern.
    pub pattern: Option<String>,
    /// Only this status (`active`, `paused`, `disabled`).
    pub status: Option<String>,
    /// Page size (1-1000, default 100).
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists the namespace's subscriptions.
#[utoipa::path(get, path = "/subscriptions", tag = "subscriptions", params(ListParams),
    responses((status = 200, description = "`{subscriptions, nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: ApiQuery<ListParams>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let q = params.parse()?;
    let query = ListQuery {
        pattern: q.pattern.as_deref(),
        status: q.status.as_deref(),
        limit: q.limit.as_deref(),
        cursor: q.cursor.as_deref(),
    };
    Ok(ApiJson(api::list(&state.host, authed(ns), &query).await?))
}

/// One subscription.
#[utoipa::path(get, path = "/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::get(&state.host, authed(namespace(&state, &headers).await?), &id).await?))
}

/// Changes a subscription; absent fields stay.
#[utoipa::path(patch, path = "/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = Value,
    responses((status = 200, description = "The subscription", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    patch: JsonBody<SubscriptionPatch>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let patch = patch.parse()?;
    if let Some(url) = &patch.url {
        check_target(&state, url).await?;
    }
    Ok(ApiJson(api::update(&state.host, authed(ns), &id, patch).await?))
}

/// Deletes a subscription with its deliveries and attempts.
#[utoipa::path(delete, path = "/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "`{deleted: true}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::delete(&state.host, authed(namespace(&state, &headers).await?), &id).await?))
}

/// Pauses deliveries; matching events keep being queued.
#[utoipa::path(post, path = "/subscriptions/{id}/pause", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::set_active(&state.host, authed(namespace(&state, &headers).await?), &id, false).await?))
}

/// Resumes a paused or disabled subscription; queued deliveries go out.
#[utoipa::path(post, path = "/subscriptions/{id}/resume", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::set_active(&state.host, authed(namespace(&state, &headers).await?), &id, true).await?))
}

/// Rotates the signing secret; during the overlap both sign (two signatures).
#[utoipa::path(post, path = "/subscriptions/{id}/rotate-secret", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = Value,
    responses((status = 200, description = "The subscription and its new `secret`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: RawBody,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    Ok(ApiJson(api::rotate_secret(&state.host, authed(ns), &id, &body.bytes()?).await?))
}

/// Query of the attempt listings.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptParams {
    /// Page size (1-1000, default 100).
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    #[param(value_type = Option<i64>)]
    pub cursor: Option<String>,
}

impl AttemptParams {
    fn page(&self) -> PageQuery<'_> {
        PageQuery { limit: self.limit.as_deref(), cursor: self.cursor.as_deref() }
    }
}

/// Delivery attempts of a subscription, newest first.
#[utoipa::path(get, path = "/subscriptions/{id}/attempts", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), AttemptParams),
    responses((status = 200, description = "`{attempts, nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn attempts(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    params: ApiQuery<AttemptParams>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let q = params.parse()?;
    Ok(ApiJson(api::attempts(&state.host, authed(ns), &id, None, &q.page()).await?))
}

/// Delivery attempts of one event, newest first.
#[utoipa::path(get, path = "/subscriptions/{id}/events/{eventId}/attempts", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), ("eventId" = String, Path, description = "Event id"), AttemptParams),
    responses((status = 200, description = "`{attempts, nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn event_attempts(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
    params: ApiQuery<AttemptParams>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let q = params.parse()?;
    let page = q.page();
    Ok(ApiJson(api::attempts(&state.host, authed(ns), &id, Some(&event_id), &page).await?))
}

/// Query of the delivery listings.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `delivered` or `dead` (default all).
    pub status: Option<String>,
    /// Page size (1-1000, default 100).
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl DeliveryParams {
    fn page(&self) -> PageQuery<'_> {
        PageQuery { limit: self.limit.as_deref(), cursor: self.cursor.as_deref() }
    }
}

/// Deliveries of a subscription (one per matching event), oldest first.
#[utoipa::path(get, path = "/subscriptions/{id}/deliveries", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), DeliveryParams),
    responses((status = 200, description = "`{deliveries, nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    params: ApiQuery<DeliveryParams>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let q = params.parse()?;
    let listing = DeliveryListing::Deliveries { status: q.status.as_deref() };
    Ok(ApiJson(api::deliveries(&state.host, authed(ns), &id, listing, &q.page()).await?))
}

/// Dead letters: deliveries whose retries ended without success.
#[utoipa::path(get, path = "/subscriptions/{id}/dead-letters", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), DeliveryParams),
    responses((status = 200, description = "`{deadLetters, nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    params: ApiQuery<DeliveryParams>,
) -> Result<ApiJson<Value>> {
    let ns = namespace(&state, &headers).await?;
    let q = params.parse()?;
    let listing = DeliveryListing::DeadLetters;
    Ok(ApiJson(api::deliveries(&state.host, authed(ns), &id, listing, &q.page()).await?))
}

/// Sends one dead letter again, with a fresh retry schedule.
#[utoipa::path(post, path = "/subscriptions/{id}/dead-letters/{dlId}/replay", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), ("dlId" = String, Path, description = "Dead letter (delivery) id")),
    responses((status = 200, description = "`{replayed: 1}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn replay_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((id, dl_id)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::replay(&state.host, authed(namespace(&state, &headers).await?), &id, Some(&dl_id)).await?))
}

/// Sends every dead letter of the subscription again.
#[utoipa::path(post, path = "/subscriptions/{id}/dead-letters/replay", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "`{replayed: n}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn replay_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::replay(&state.host, authed(namespace(&state, &headers).await?), &id, None).await?))
}

/// Starts a background job that re-sends every matching event since a time
/// (delivered ones included): older events are imported from the lake into
/// the router's event log first, then the log's matching events are re-enqueued.
#[utoipa::path(post, path = "/subscriptions/{id}/recover", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = Value,
    responses((status = 202, description = "The job", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn recover(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    body: JsonBody<RecoverBody>,
) -> Result<(StatusCode, ApiJson<Value>)> {
    let ns = namespace(&state, &headers).await?;
    let body = body.parse()?;
    Ok((StatusCode::ACCEPTED, ApiJson(api::recover(&state.host, authed(ns), &id, &body).await?)))
}

/// Progress of a recovery job.
#[utoipa::path(get, path = "/subscriptions/{id}/recover/{jobId}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), ("jobId" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn recover_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((id, job_id)): ApiPath<(String, String)>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::recover_status(&state.host, authed(namespace(&state, &headers).await?), &id, &job_id).await?))
}

/// Delivery statistics: delivered, failed attempts, pending, dead, success
/// rate, latency percentiles, operational events.
#[utoipa::path(get, path = "/subscriptions/{id}/stats", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "Statistics", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(api::stats(&state.host, authed(namespace(&state, &headers).await?), &id).await?))
}
