//! The Worker's HTTP API: the same routes, wire shapes and error envelope as
//! the native server (`events-server`), for the parts that run in a Worker.
//!
//! Request decoding, event validation, reads and webhook verification are the
//! shared functions of `events-api`; this module only routes and calls the
//! objects through [`CfHost`].

pub mod admin;
pub mod auth;
pub mod cdc;
pub mod config;
pub mod events;
pub mod ingest;
pub mod schemas;
pub mod subscriptions;
pub mod tail;
pub mod webhooks;

use events_core::{ApiError, ErrorCode};
use http::HeaderMap;
use serde::Serialize;
use worker::{Env, Request, Response};

use crate::host::{CfHost, platform};

/// What a route handler returns.
pub type ApiResult = Result<Response, ApiError>;

/// One request as the handlers see it.
pub struct Call {
    /// The host (objects, R2, clock).
    pub host: CfHost,
    /// The Worker's settings.
    pub config: config::WorkerConfig,
    /// Request headers.
    pub headers: HeaderMap,
    /// The URL's query string (without `?`).
    pub query: String,
    /// The client address (`CF-Connecting-IP`), if known.
    pub client_ip: Option<String>,
    req: Request,
}

impl Call {
    /// The whole request body, refused beyond `max` bytes.
    pub async fn body(&mut self, max: usize) -> Result<Vec<u8>, ApiError> {
        let bytes = self.req.bytes().await.map_err(|e| platform("reading the body", e))?;
        if bytes.len() > max {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than {max} bytes"))
                .with_details(serde_json::json!({"maxSize": max, "size": bytes.len()})));
        }
        Ok(bytes)
    }
}

/// Converts the Workers headers to an `http::HeaderMap` (what `events-api` reads).
fn header_map(headers: &worker::Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers.entries() {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(&v)) {
            map.append(name, value);
        }
    }
    map
}

/// Serves one request.
pub async fn serve(req: Request, env: Env) -> worker::Result<Response> {
    let config = config::WorkerConfig::from_env(&env);
    let url = req.url()?;
    let path = url.path().to_string();
    let method = req.method().to_string();
    let headers = header_map(req.headers());
    let client_ip = headers.get("cf-connecting-ip").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut call =
        Call { host: CfHost::new(env), config, headers, query: url.query().unwrap_or("").to_string(), client_ip, req };
    if method == "OPTIONS" {
        // A CORS preflight (any path), answered as natively.
        return with_headers(Response::empty()?.with_status(200), events_api::cors::preflight_headers());
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Some handlers read the path, query or body before they authenticate:
    // a publishable key is refused here, before any of them, everywhere but
    // on `POST /e` and the routes that take no credentials.
    let takes_no_key = matches!(
        (method.as_str(), segments.as_slice()),
        ("POST", ["e"]) | ("GET", ["health"] | [""] | ["openapi.json"]) | (_, ["webhooks", ..])
    );
    if !takes_no_key && events_api::auth::bearer_is_publishable(&call.headers) {
        let refused = error_response(&events_api::auth::publishable_forbidden())?;
        return with_headers(refused, events_api::cors::response_headers());
    }
    let result = match (method.as_str(), segments.as_slice()) {
        ("GET", ["health"] | [""]) => health(&call),
        ("GET", ["openapi.json"]) => openapi(),
        ("POST", ["e"]) => ingest::ingest(&mut call, false).await,
        ("POST", ["ingest"]) => ingest::ingest(&mut call, true).await,
        ("GET", ["events"]) => events::list(&call).await,
        ("GET", ["events", "stream"]) => tail::stream(&call).await,
        ("GET", ["recent"]) => events::recent(&call).await,
        ("POST", ["admin", "namespaces", ns, "keys"]) => admin::create_key(&mut call, ns).await,
        ("GET", ["admin", "namespaces", ns, "keys"]) => admin::list_keys(&call, ns).await,
        ("DELETE", ["admin", "namespaces", ns, "keys", id]) => admin::revoke_key(&call, ns, id).await,
        ("GET", ["admin", "namespaces", ns, "limits"]) => admin::get_limits(&call, ns).await,
        ("PUT", ["admin", "namespaces", ns, "limits"]) => admin::put_limits(&mut call, ns).await,
        ("POST", ["admin", "flush"]) => admin::flush(&call).await,
        ("GET", ["admin", "shards"]) => admin::shards(&call).await,
        ("GET", ["admin", "namespaces", ns, "webhooks", provider]) => {
            webhooks::config(&mut call, false, ns, provider).await
        }
        ("PUT", ["admin", "namespaces", ns, "webhooks", provider]) => {
            webhooks::config(&mut call, true, ns, provider).await
        }
        ("POST", ["webhooks"]) => webhooks::receive(&mut call, None).await,
        ("POST", ["webhooks", provider]) => webhooks::receive(&mut call, Some(provider)).await,
        (m, ["subscriptions", rest @ ..]) => match subscriptions::route(&mut call, m, rest).await {
            Some(r) => r,
            None => Err(ApiError::new(ErrorCode::NotFound, format!("no route for {method} {path}"))),
        },
        (m, ["cdc", rest @ ..]) if !rest.is_empty() => match cdc::route(&mut call, m, rest).await {
            Some(r) => r,
            None => Err(ApiError::new(ErrorCode::NotFound, format!("no route for {method} {path}"))),
        },
        (m, ["schemas", rest @ ..]) if !rest.is_empty() => match schemas::route(&mut call, m, rest).await {
            Some(r) => r,
            None => Err(ApiError::new(ErrorCode::NotFound, format!("no route for {method} {path}"))),
        },
        _ => Err(ApiError::new(ErrorCode::NotFound, format!("no route for {method} {path}"))),
    };
    let response = match result {
        Ok(r) => r,
        Err(e) => error_response(&e)?,
    };
    with_headers(response, events_api::cors::response_headers())
}

/// `response` with `headers` set (the shared CORS headers).
fn with_headers(mut response: Response, headers: Vec<(&'static str, String)>) -> worker::Result<Response> {
    for (name, value) in headers {
        response.headers_mut().set(name, &value)?;
    }
    Ok(response)
}

/// The error envelope `{"error", "code", "details"}` with the code's status.
pub fn error_response(e: &ApiError) -> worker::Result<Response> {
    Ok(Response::from_json(e)?.with_status(e.http_status()))
}

/// A JSON answer with `status`.
pub fn json<T: Serialize>(status: u16, body: &T) -> ApiResult {
    Ok(Response::from_json(body).map_err(|e| platform("encoding the answer", e))?.with_status(status))
}

/// Parses a JSON request body, with the server's error codes: `INVALID_JSON`
/// for a body that is not JSON and for one that does not have the expected
/// shape (a missing or unknown field, a wrong type), as natively.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::new(ErrorCode::InvalidJson, format!("the JSON body does not have the expected shape: {e}"))
        }
        _ => ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {e}")),
    })
}

/// The value of query parameter `key`, percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// The API's OpenAPI document, generated from the native server's routes
/// and committed as `docs/openapi.json` (a test of `events-server` keeps it
/// current): both hosts serve the same document.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../../docs/openapi.json");

/// `GET /openapi.json`.
fn openapi() -> ApiResult {
    let mut res = Response::ok(OPENAPI_DOCUMENT).map_err(|e| platform("encoding the answer", e))?;
    res.headers_mut().set("content-type", "application/json").map_err(|e| platform("setting a header", e))?;
    Ok(res)
}

/// `GET /health` and `GET /`: the shared liveness answer.
fn health(call: &Call) -> ApiResult {
    use events_runtime::Host;
    json(200, &events_api::health::health(events_api::health::HOST_CLOUDFLARE, call.host.now(), &call.config.env))
}
