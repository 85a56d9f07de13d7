//! `/subscriptions/...`: webhook subscriptions of a namespace, their
//! deliveries, attempts, dead letters, replay, recovery and stats.
//!
//! The admin token (with `X-Namespace`) or a namespace key; a caller only
//! ever sees the subscriptions of its own namespace (one
//! [`Subscriptions`] object per namespace). Target URLs are checked against
//! the outbound policy when they are set: a private, loopback or metadata
//! address that `[outbound] allow` does not cover is refused with
//! `TARGET_NOT_ALLOWED` (the host refuses it again at delivery time).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::Subscriptions;
use events_objects::subscription::{SubsRequest, SubsResponse, SubscriptionPatch, SubscriptionSpec};
use events_runtime::Host as _;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::routes;

use crate::error::{ApiErrorResponse, ApiJson};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(create, list))
        .routes(routes!(subscribe))
        .routes(routes!(get_one, update, delete))
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

/// Default page size of the listings.
pub const DEFAULT_PAGE: usize = 100;

async fn call(state: &AppState, headers: &HeaderMap, req: SubsRequest) -> Result<SubsResponse> {
    let caller = state.auth.authenticate(&state.host, headers).await?;
    Ok(state.host.call_object::<Subscriptions>(&caller.namespace, req).await?)
}

fn unexpected() -> ApiErrorResponse {
    ApiError::internal("unexpected answer").into()
}

fn subscription_json(resp: SubsResponse) -> Result<Value> {
    match resp {
        SubsResponse::Subscription { info, secret } => {
            let mut v = serde_json::to_value(info).map_err(|e| ApiError::internal(e.to_string()))?;
            if let Some(secret) = secret {
                v["secret"] = Value::String(secret);
            }
            Ok(v)
        }
        _ => Err(unexpected()),
    }
}

fn to_json<T: serde::Serialize>(v: T) -> Result<ApiJson<Value>> {
    Ok(ApiJson(serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))?))
}

/// Refuses a target the outbound policy would refuse: a literal private
/// address, or a name that resolves only to such addresses.
async fn check_target(state: &AppState, url: &str) -> Result<()> {
    let http = state.host.http();
    let parsed = http.check_url(url).map_err(|e| {
        let code = if e.message.contains("private") { ErrorCode::TargetNotAllowed } else { ErrorCode::InvalidRequest };
        ApiError::new(code, e.message).with_details(json!({ "url": url }))
    })?;
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
    ApiJson(spec): ApiJson<SubscriptionSpec>,
) -> Result<(StatusCode, ApiJson<Value>)> {
    check_target(&state, &spec.url).await?;
    let resp = call(&state, &headers, SubsRequest::Create(spec)).await?;
    Ok((StatusCode::CREATED, ApiJson(subscription_json(resp)?)))
}

/// Body of `POST /subscriptions/subscribe` (the original service's shape).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeBody {
    /// Worker that receives the events.
    pub worker_id: String,
    /// Event-type pattern.
    pub pattern: String,
    /// RPC method called on the worker.
    pub rpc_method: String,
    /// Optional secret.
    pub secret: Option<String>,
}

fn url_part_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Subscribes a worker's RPC method: delivers to the configured URL template
/// (`[subscriptions] rpc_url_template`, default `https://{workerId}.workers.dev/rpc/{rpcMethod}`).
#[utoipa::path(post, path = "/subscriptions/subscribe", tag = "subscriptions",
    request_body = Value,
    responses((status = 201, description = "Created", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn subscribe(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubscribeBody>,
) -> Result<(StatusCode, ApiJson<Value>)> {
    if !url_part_ok(&body.worker_id) || !url_part_ok(&body.rpc_method) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "workerId and rpcMethod are 1-128 letters, digits, '-' or '_'",
        )
        .into());
    }
    let url = state
        .config
        .subscriptions
        .rpc_url_template
        .replace("{workerId}", &body.worker_id)
        .replace("{rpcMethod}", &body.rpc_method);
    check_target(&state, &url).await?;
    let spec = SubscriptionSpec {
        pattern: body.pattern,
        url,
        secret: body.secret,
        worker_id: Some(body.worker_id),
        rpc_method: Some(body.rpc_method),
        ..Default::default()
    };
    let resp = call(&state, &headers, SubsRequest::Create(spec)).await?;
    Ok((StatusCode::CREATED, ApiJson(subscription_json(resp)?)))
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
    pub limit: Option<usize>,
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
    Query(q): Query<ListParams>,
) -> Result<ApiJson<Value>> {
    let req = SubsRequest::List {
        pattern: q.pattern,
        status: q.status,
        after: q.cursor,
        limit: q.limit.unwrap_or(DEFAULT_PAGE),
    };
    match call(&state, &headers, req).await? {
        SubsResponse::List { items, next } => to_json(json!({ "subscriptions": items, "nextCursor": next })),
        _ => Err(unexpected()),
    }
}

/// One subscription.
#[utoipa::path(get, path = "/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(subscription_json(call(&state, &headers, SubsRequest::Get { id }).await?)?))
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
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<SubscriptionPatch>,
) -> Result<ApiJson<Value>> {
    if let Some(url) = &patch.url {
        check_target(&state, url).await?;
    }
    Ok(ApiJson(subscription_json(call(&state, &headers, SubsRequest::Update { id, patch }).await?)?))
}

/// Deletes a subscription with its deliveries and attempts.
#[utoipa::path(delete, path = "/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "`{deleted: true}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>> {
    call(&state, &headers, SubsRequest::Delete { id: id.clone() }).await?;
    Ok(ApiJson(json!({ "id": id, "deleted": true })))
}

/// Pauses deliveries; matching events keep being queued.
#[utoipa::path(post, path = "/subscriptions/{id}/pause", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(subscription_json(call(&state, &headers, SubsRequest::SetActive { id, active: false }).await?)?))
}

/// Resumes a paused or disabled subscription; queued deliveries go out.
#[utoipa::path(post, path = "/subscriptions/{id}/resume", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>> {
    Ok(ApiJson(subscription_json(call(&state, &headers, SubsRequest::SetActive { id, active: true }).await?)?))
}

/// Body of a secret rotation.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateBody {
    /// The new secret; generated when absent.
    pub secret: Option<String>,
    /// How long the old secret keeps signing (ms, default 24 h).
    pub overlap_ms: Option<i64>,
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
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<ApiJson<Value>> {
    let body: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid rotation request: {e}")))?
    };
    let req = SubsRequest::RotateSecret { id, secret: body.secret, overlap_ms: body.overlap_ms };
    Ok(ApiJson(subscription_json(call(&state, &headers, req).await?)?))
}

/// Query of the attempt listings.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptParams {
    /// Page size (1-1000, default 100).
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<i64>,
}

async fn attempt_page(
    state: &AppState,
    headers: &HeaderMap,
    id: String,
    event_id: Option<String>,
    q: AttemptParams,
) -> Result<ApiJson<Value>> {
    let req = SubsRequest::Attempts { id, event_id, before: q.cursor, limit: q.limit.unwrap_or(DEFAULT_PAGE) };
    match call(state, headers, req).await? {
        SubsResponse::Attempts { items, next } => to_json(json!({ "attempts": items, "nextCursor": next })),
        _ => Err(unexpected()),
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
    Path(id): Path<String>,
    Query(q): Query<AttemptParams>,
) -> Result<ApiJson<Value>> {
    attempt_page(&state, &headers, id, None, q).await
}

/// Delivery attempts of one event, newest first.
#[utoipa::path(get, path = "/subscriptions/{id}/events/{eventId}/attempts", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), ("eventId" = String, Path, description = "Event id"), AttemptParams),
    responses((status = 200, description = "`{attempts, nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn event_attempts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, event_id)): Path<(String, String)>,
    Query(q): Query<AttemptParams>,
) -> Result<ApiJson<Value>> {
    attempt_page(&state, &headers, id, Some(event_id), q).await
}

/// Query of the delivery listings.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `delivered` or `dead` (default all).
    pub status: Option<String>,
    /// Page size (1-1000, default 100).
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

async fn delivery_page(
    state: &AppState,
    headers: &HeaderMap,
    id: String,
    status: Option<String>,
    q: DeliveryParams,
    field: &str,
) -> Result<ApiJson<Value>> {
    let req = SubsRequest::Deliveries { id, status, after: q.cursor, limit: q.limit.unwrap_or(DEFAULT_PAGE) };
    match call(state, headers, req).await? {
        SubsResponse::Deliveries { items, next } => to_json(json!({ field: items, "nextCursor": next })),
        _ => Err(unexpected()),
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
    Path(id): Path<String>,
    Query(q): Query<DeliveryParams>,
) -> Result<ApiJson<Value>> {
    let status = q.status.clone();
    delivery_page(&state, &headers, id, status, q, "deliveries").await
}

/// Dead letters: deliveries whose retries ended without success.
#[utoipa::path(get, path = "/subscriptions/{id}/dead-letters", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), DeliveryParams),
    responses((status = 200, description = "`{deadLetters, nextCursor}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DeliveryParams>,
) -> Result<ApiJson<Value>> {
    delivery_page(&state, &headers, id, Some("dead".into()), q, "deadLetters").await
}

/// Sends one dead letter again, with a fresh retry schedule.
#[utoipa::path(post, path = "/subscriptions/{id}/dead-letters/{dlId}/replay", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), ("dlId" = String, Path, description = "Dead letter (delivery) id")),
    responses((status = 200, description = "`{replayed: 1}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn replay_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, dl_id)): Path<(String, String)>,
) -> Result<ApiJson<Value>> {
    match call(&state, &headers, SubsRequest::Replay { id, dl_id: Some(dl_id) }).await? {
        SubsResponse::Replayed { count } => Ok(ApiJson(json!({ "replayed": count }))),
        _ => Err(unexpected()),
    }
}

/// Sends every dead letter of the subscription again.
#[utoipa::path(post, path = "/subscriptions/{id}/dead-letters/replay", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "`{replayed: n}`", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn replay_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>> {
    match call(&state, &headers, SubsRequest::Replay { id, dl_id: None }).await? {
        SubsResponse::Replayed { count } => Ok(ApiJson(json!({ "replayed": count }))),
        _ => Err(unexpected()),
    }
}

/// Body of a recovery.
#[derive(Debug, Deserialize)]
pub struct RecoverBody {
    /// Re-send every matching event with `ts` at or after this (ISO-8601).
    pub since: String,
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
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RecoverBody>,
) -> Result<(StatusCode, ApiJson<Value>)> {
    let since = Timestamp::parse_iso(&body.since)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "since must be an ISO-8601 time"))?;
    match call(&state, &headers, SubsRequest::Recover { id, since }).await? {
        SubsResponse::Job(job) => Ok((StatusCode::ACCEPTED, to_json(job)?)),
        _ => Err(unexpected()),
    }
}

/// Progress of a recovery job.
#[utoipa::path(get, path = "/subscriptions/{id}/recover/{jobId}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), ("jobId" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = Value)),
    security(("bearerAuth" = [])))]
pub async fn recover_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, job_id)): Path<(String, String)>,
) -> Result<ApiJson<Value>> {
    match call(&state, &headers, SubsRequest::Job { id, job_id }).await? {
        SubsResponse::Job(job) => to_json(job),
        _ => Err(unexpected()),
    }
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
    Path(id): Path<String>,
) -> Result<ApiJson<Value>> {
    match call(&state, &headers, SubsRequest::Stats { id }).await? {
        SubsResponse::Stats(s) => to_json(s),
        _ => Err(unexpected()),
    }
}
