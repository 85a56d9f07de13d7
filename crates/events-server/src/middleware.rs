//! Request middleware: request id, tracing span, metrics and timeout.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use events_core::{ApiError, ErrorCode, Timestamp};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::ApiErrorResponse;
use crate::telemetry::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL};

/// The request id header, read from requests and always set on responses.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The id of the current request, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Whether a client-supplied request id is acceptable: 8–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_request_id(s: &str) -> bool {
    (8..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh request id (a ULID).
pub fn new_request_id() -> String {
    events_core::id::ulid_string(Timestamp(chrono::Utc::now().timestamp_millis()), rand::random())
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Assigns the request id, runs the request in a tracing span, logs its end and
/// records `http_requests_total` and `http_request_duration_seconds`.
///
/// Added with `Router::layer`, so it runs after routing and sees [`MatchedPath`].
pub async fn observe(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| is_valid_request_id(s))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let header_value = HeaderValue::from_str(&request_id).expect("request ids are visible ASCII");
    req.headers_mut().insert(X_REQUEST_ID.clone(), header_value.clone());
    req.extensions_mut().insert(RequestId(request_id.clone()));

    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().map_or(UNMATCHED_ROUTE.to_owned(), |m| m.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        method,
        path = %req.uri().path(),
        route = %route,
        request_id = %request_id,
        status = Empty,
        latency_ms = Empty,
    );

    let mut res = next.run(req).instrument(span.clone()).await;

    let latency = start.elapsed();
    let status = res.status().as_u16();
    span.record("status", status);
    span.record("latency_ms", latency.as_secs_f64() * 1000.0);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!("request failed");
        } else {
            tracing::info!("request completed");
        }
    });

    metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route)
        .record(latency.as_secs_f64());

    res.headers_mut().insert(X_REQUEST_ID.clone(), header_value);
    res
}

/// Answers `504 TIMEOUT` when the inner service has not produced a response in time.
pub async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let ms = limit.as_millis() as u64;
            ApiErrorResponse(
                ApiError::new(ErrorCode::Timeout, format!("the request did not complete within {ms} ms"))
                    .with_details(serde_json::json!({ "timeoutMs": ms })),
            )
            .into_response()
        }
    }
}

/// Answers errors of the Iceberg REST catalog (`/iceberg/v1/...`) in the
/// spec's `ErrorModel` (see [`events_api::iceberg`]) instead of the events.do
/// envelope, whoever produced them (a catalog handler, the fallbacks, the
/// timeout); the route says what the request addresses, which names the
/// error's type. Status and headers are kept.
pub async fn iceberg_errors(req: Request, next: Next) -> Response {
    if !events_api::iceberg::is_catalog_path(req.uri().path()) {
        return next.run(req).await;
    }
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let resource = events_api::iceberg::resource_of(req.method().as_str(), &route);
    let res = next.run(req).await;
    let Some(error) = res.extensions().get::<ApiError>().cloned() else { return res };
    let body = events_api::iceberg::error_model(&error, resource);
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        assert!(is_valid_request_id("abcd1234"));
        assert!(is_valid_request_id("A_b-C_d-0123"));
        assert!(is_valid_request_id(&"x".repeat(64)));
        assert!(!is_valid_request_id("short"));
        assert!(!is_valid_request_id("1234567"));
        assert!(!is_valid_request_id(&"x".repeat(65)));
        assert!(!is_valid_request_id("has space here"));
        assert!(!is_valid_request_id("dots.are.not.ok"));
        assert!(!is_valid_request_id("ünïcödé-id"));
    }

    #[tokio::test]
    async fn timeout_answers_with_the_envelope() {
        use axum::Router;
        use axum::body::{Body, to_bytes};
        use axum::routing::get;
        use tower::ServiceExt;

        let app = Router::new()
            .route("/never", get(std::future::pending::<&'static str>))
            .layer(axum::middleware::from_fn_with_state(Duration::from_millis(1), timeout));
        let res = app.oneshot(Request::get("/never").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status().as_u16(), 504);
        let v: serde_json::Value =
            serde_json::from_slice(&to_bytes(res.into_body(), usize::MAX).await.unwrap()).unwrap();
        assert_eq!(v["code"], "TIMEOUT");
        assert_eq!(v["details"]["timeoutMs"], 1);
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert!(is_valid_request_id(&a), "{a}");
        assert!(events_core::id::is_ulid(&a));
        assert_ne!(a, b);
    }
}
