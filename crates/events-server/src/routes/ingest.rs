//! `POST /e` (and its deprecated alias `POST /ingest`): event ingest.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::error::ApiErrorResponse;
use crate::routes::ApiRouter;
use crate::state::AppState;
use events_api::ingest::pipeline;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(ingest)).routes(routes!(ingest_deprecated))
}

/// The ingest request body (JSON form; NDJSON sends one event per line).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestRequest {
    /// Up to 1,000 events. Each needs `type`; `ts` (ISO-8601), `id` and
    /// `source` are optional; every other field is kept as data.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Idempotency key: a repeat within 24 hours is not stored again.
    pub batch_id: Option<String>,
}

/// The ingest answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestResponse {
    /// Always `true`.
    pub ok: bool,
    /// Events in the batch.
    pub received: usize,
    /// The namespace written to.
    pub namespace: String,
    /// Present (true) when the batch was a replay of an accepted `batchId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated: Option<bool>,
    /// Schema failures of `warn`-mode schemas: `{index, type, path, message, schema, version}`.
    /// The events were stored, with the messages in their `_schemaErrors` field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub warnings: Option<Vec<serde_json::Value>>,
}

/// Ingests a batch of events. The answer is sent only once the events are on disk (fsynced).
///
/// The one route a publishable key (`pk_...`) may call: in the
/// `Authorization` header, or as the `key` query parameter for
/// `navigator.sendBeacon`, which cannot set headers (publishable keys only).
#[utoipa::path(
    post,
    path = "/e",
    tag = "ingest",
    request_body(
        content(
            (IngestRequest = "application/json"),
            (IngestRequest = "text/plain"),
            (String = "application/x-ndjson"),
        ),
        description = "JSON batch (application/json, or text/plain holding the same JSON, as navigator.sendBeacon sends it), or NDJSON (application/x-ndjson); gzip allowed"
    ),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "batchId for NDJSON bodies"),
        ("key" = Option<String>, Query, description = "A publishable key (pk_<namespace>_<secret>), for clients that cannot send Authorization (sendBeacon). Any other key here is refused (401 INVALID_AUTH_FORMAT), as is a key sent both here and in Authorization."),
        ("Origin" = Option<String>, Header, description = "Checked against a publishable key's allowed origins; required when it has any"),
    ),
    responses(
        (status = 200, description = "Accepted and durable", body = IngestResponse),
        (status = 403, description = "A publishable key used from an origin it does not allow (ORIGIN_NOT_ALLOWED)", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limit or quota exceeded (see Retry-After)", body = crate::error::ErrorBody),
    ),
    security(("bearerAuth" = []), ("publishableKey" = []))
)]
pub async fn ingest(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(state, peer, headers, body, Some(query.as_deref().unwrap_or(""))).await
}

/// Deprecated alias of `POST /e`.
#[utoipa::path(
    post,
    path = "/ingest",
    tag = "ingest",
    request_body(content = IngestRequest),
    responses((status = 200, description = "Accepted (adds Deprecation and Link headers)", body = IngestResponse)),
    security(("bearerAuth" = []))
)]
pub async fn ingest_deprecated(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut response = run(state, peer, headers, body, None).await;
    let h = response.headers_mut();
    h.insert("deprecation", HeaderValue::from_static("true"));
    h.insert("link", HeaderValue::from_static("</e>; rel=\"successor-version\""));
    response
}

/// `query` is the query string of `POST /e`, which may carry a publishable
/// key; `None` on the deprecated alias, which takes no publishable key.
async fn run(state: AppState, peer: SocketAddr, headers: HeaderMap, body: Body, query: Option<&str>) -> Response {
    let authenticated = match query {
        Some(_) => state.auth.authenticate_ingest(&state.host, &headers, query).await,
        // The deprecated alias: only the credentials every route takes.
        None => state.auth.authenticate(&state.host, &headers).await,
    };
    let caller = match authenticated {
        Ok(c) => c,
        Err(e) => return ApiErrorResponse(e).into_response(),
    };
    let limit = state.config.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiErrorResponse(
                events_core::ApiError::new(
                    events_core::ErrorCode::PayloadTooLarge,
                    format!("request body is larger than {limit} bytes"),
                )
                .with_details(serde_json::json!({"maxSize": limit})),
            )
            .into_response();
        }
    };
    let ip = peer.ip().to_string();
    let started = std::time::Instant::now();
    let request = pipeline::IngestRequest {
        namespace: &caller.namespace,
        limiter_subject: &caller.limiter_subject(Some(&ip)),
        key_rate_limit: caller.key_rate_limit(),
        headers: &headers,
        body: &bytes,
    };
    let outcome = state.ingest.run(&state.host, &(), &crate::ingest::settings(&state.config), request).await;
    crate::ingest::spawn_background(&state, outcome.background);
    let mut response = match outcome.result {
        Ok(accepted) => {
            metrics::histogram!("events_ingest_ack_seconds").record(started.elapsed().as_secs_f64());
            let body = IngestResponse {
                ok: true,
                received: accepted.received,
                namespace: accepted.namespace,
                deduplicated: accepted.deduplicated.then_some(true),
                warnings: (!accepted.warnings.is_empty()).then_some(accepted.warnings),
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(error) => ApiErrorResponse(error).into_response(),
    };
    if let Some(secs) = outcome.retry_after {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(rate) = &outcome.rate {
        crate::ingest::apply_rate_headers(rate, response.headers_mut());
    }
    response
}
