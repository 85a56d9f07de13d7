//! The `/subscriptions/...` API (webhook subscriptions of a namespace, their
//! deliveries, attempts, dead letters, replay, recovery and stats) between
//! the host's routing and the namespace's [`Subscriptions`] object: query and
//! body parsing, the object requests, and the JSON answers.
//!
//! A host extracts the path, the query parameters (as strings) and the body,
//! checks target URLs against its outbound policy (refusals shaped by
//! [`target_refused`]), and calls one of the `async` functions here with
//! itself as the [`Host`] and a future that authenticates the caller and
//! yields its namespace. That future is awaited only once the request has
//! parsed, so a malformed request is refused for what it is whoever sends it
//! (as before the logic was shared). Query errors carry `INVALID_QUERY`;
//! answers are sent with status 200, except a creation (201, [`create`]) and
//! a recovery job (202, [`recover`]).

use std::future::Future;

use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::Subscriptions;
use events_objects::subscription::{SubsRequest, SubsResponse, SubscriptionPatch, SubscriptionSpec};
use events_runtime::context::Host;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::params::parse_limit;

/// Page size of the listings when the query has no `limit` (the object
/// clamps any limit to 1..=1000).
pub use crate::params::DEFAULT_PAGE;
/// Largest subscription request body a host reads.
pub const MAX_SUBSCRIPTION_BODY_BYTES: usize = 64 * 1024;
/// Target of `POST /subscriptions/subscribe` when the host configures none.
pub const DEFAULT_RPC_URL_TEMPLATE: &str = "https://{workerId}.workers.dev/rpc/{rpcMethod}";
/// Longest `workerId` or `rpcMethod` of `POST /subscriptions/subscribe`.
pub const MAX_URL_PART_BYTES: usize = 128;

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
    /// Attempts per delivery (1-20; the original's `maxRetries`).
    pub max_retries: Option<u32>,
    /// Request timeout (ms).
    pub timeout_ms: Option<u64>,
}

/// Body of `POST /subscriptions/{id}/rotate-secret` (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateBody {
    /// The new secret; generated when absent.
    pub secret: Option<String>,
    /// How long the old secret keeps signing (ms, default 24 h).
    pub overlap_ms: Option<i64>,
}

/// Body of `POST /subscriptions/{id}/recover`.
#[derive(Debug, Deserialize)]
pub struct RecoverBody {
    /// Re-send every matching event with `ts` at or after this (ISO-8601).
    pub since: String,
}

/// The query of `GET /subscriptions`, as the client sent it.
#[derive(Debug, Default, Clone, Copy)]
pub struct ListQuery<'a> {
    /// `pattern`: only this exact pattern.
    pub pattern: Option<&'a str>,
    /// `status`: only this status (`active`, `paused`, `disabled`).
    pub status: Option<&'a str>,
    /// `limit`: page size.
    pub limit: Option<&'a str>,
    /// `cursor`: `nextCursor` of the previous page.
    pub cursor: Option<&'a str>,
}

/// The query of the attempt and delivery listings, as the client sent it.
#[derive(Debug, Default, Clone, Copy)]
pub struct PageQuery<'a> {
    /// `limit`: page size.
    pub limit: Option<&'a str>,
    /// `cursor`: `nextCursor` of the previous page.
    pub cursor: Option<&'a str>,
}

/// Which delivery listing is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryListing<'a> {
    /// `GET /subscriptions/{id}/deliveries`, optionally filtered by status.
    Deliveries {
        /// `status`: `pending`, `delivered` or `dead` (default all).
        status: Option<&'a str>,
    },
    /// `GET /subscriptions/{id}/dead-letters`.
    DeadLetters,
}

/// Parses the `cursor` of an attempt listing (the `nextCursor` of the
/// previous page: an attempt number). An integer beyond what every host
/// stores exactly (±2^53-1) is no attempt number either: `INVALID_QUERY`,
/// never a value handed to storage.
pub fn parse_attempt_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| (events_runtime::MIN_EXACT_INTEGER..=events_runtime::MAX_EXACT_INTEGER).contains(n))
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "invalid cursor"))
        })
        .transpose()
}

/// Parses the body of a secret rotation: empty (or only whitespace) means
/// defaults; anything else must be the JSON object (`INVALID_JSON` if not).
pub fn parse_rotate_body(body: &[u8]) -> Result<RotateBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RotateBody::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid rotation request: {e}")))
}

/// Parses the `since` of a recovery (ISO-8601 with offset; `INVALID_REQUEST`).
pub fn parse_since(since: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_iso(since)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "since must be an ISO-8601 time"))
}

/// Whether `s` may be substituted into the RPC URL template: 1-128 letters,
/// digits, `-` or `_`.
pub fn url_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_URL_PART_BYTES
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The subscription of `POST /subscriptions/subscribe`: `workerId` and
/// `rpcMethod` substituted into the host's URL `template` (`{workerId}`,
/// `{rpcMethod}`). Both must be 1-128 letters, digits, `-` or `_`, so they
/// cannot change the URL's host or path structure (`INVALID_REQUEST`).
/// The host still checks the resulting URL against its outbound policy.
pub fn subscribe_spec(body: SubscribeBody, template: &str) -> Result<SubscriptionSpec, ApiError> {
    if !url_part_ok(&body.worker_id) || !url_part_ok(&body.rpc_method) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "workerId and rpcMethod are 1-128 letters, digits, '-' or '_'",
        ));
    }
    let url = template.replace("{workerId}", &body.worker_id).replace("{rpcMethod}", &body.rpc_method);
    Ok(SubscriptionSpec {
        pattern: body.pattern,
        url,
        secret: body.secret,
        retry_schedule: body.max_retries.map(crate::worker_rpc::retry_schedule).transpose()?,
        timeout_ms: body.timeout_ms,
        worker_id: Some(body.worker_id),
        rpc_method: Some(body.rpc_method),
        ..Default::default()
    })
}

/// The refusal of target `url` whose check by the host's outbound policy
/// failed with `error`: `TARGET_NOT_ALLOWED` for a private address,
/// `INVALID_REQUEST` for anything else (not a URL, a scheme other than
/// http(s)), the URL in the details.
pub fn target_refused(url: &str, error: ApiError) -> ApiError {
    let code = if error.message.contains("private") { ErrorCode::TargetNotAllowed } else { ErrorCode::InvalidRequest };
    ApiError::new(code, error.message).with_details(json!({ "url": url }))
}

fn unexpected() -> ApiError {
    ApiError::internal("unexpected answer")
}

fn to_json<T: serde::Serialize>(v: T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

async fn call<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    req: SubsRequest,
) -> Result<SubsResponse, ApiError> {
    let ns = namespace.await?;
    host.call::<Subscriptions>(&ns, req).await
}

/// A subscription as JSON, with its `secret` when the object returned it
/// (only on creation and rotation).
fn subscription_json(resp: SubsResponse) -> Result<Value, ApiError> {
    match resp {
        SubsResponse::Subscription { info, secret } => {
            let mut v = to_json(info)?;
            if let Some(secret) = secret {
                v["secret"] = Value::String(secret);
            }
            Ok(v)
        }
        _ => Err(unexpected()),
    }
}

/// Creates a subscription (the host checked `spec.url`); answer with 201.
pub async fn create<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    spec: SubscriptionSpec,
) -> Result<Value, ApiError> {
    subscription_json(call(host, namespace, SubsRequest::Create(spec)).await?)
}

/// `GET /subscriptions`: `{subscriptions, nextCursor}`.
pub async fn list<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    q: &ListQuery<'_>,
) -> Result<Value, ApiError> {
    let req = SubsRequest::List {
        pattern: q.pattern.map(str::to_string),
        status: q.status.map(str::to_string),
        after: q.cursor.map(str::to_string),
        limit: parse_limit(q.limit)?,
    };
    match call(host, namespace, req).await? {
        SubsResponse::List { items, next } => to_json(json!({ "subscriptions": items, "nextCursor": next })),
        _ => Err(unexpected()),
    }
}

/// `GET /subscriptions/{id}`: the subscription.
pub async fn get<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
) -> Result<Value, ApiError> {
    subscription_json(call(host, namespace, SubsRequest::Get { id: id.to_string() }).await?)
}

/// `PATCH /subscriptions/{id}` (the host checked `patch.url`): the
/// subscription. The RPC method changes only with `PUT` (which moves the URL
/// with it; [`crate::worker_rpc::update`]).
pub async fn update<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    patch: SubscriptionPatch,
) -> Result<Value, ApiError> {
    if patch.rpc_method.is_some() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "rpcMethod is changed with PUT /subscriptions/{id}"));
    }
    subscription_json(call(host, namespace, SubsRequest::Update { id: id.to_string(), patch }).await?)
}

/// `DELETE /subscriptions/{id}`: `{id, deleted: true}`.
pub async fn delete<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
) -> Result<Value, ApiError> {
    call(host, namespace, SubsRequest::Delete { id: id.to_string() }).await?;
    Ok(json!({ "id": id, "deleted": true }))
}

/// `POST /subscriptions/{id}/pause` (`active` false) or `/resume` (true): the subscription.
pub async fn set_active<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    active: bool,
) -> Result<Value, ApiError> {
    subscription_json(call(host, namespace, SubsRequest::SetActive { id: id.to_string(), active }).await?)
}

/// `POST /subscriptions/{id}/rotate-secret` with the raw `body`: the
/// subscription and its new `secret`.
pub async fn rotate_secret<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let body = parse_rotate_body(body)?;
    let req = SubsRequest::RotateSecret { id: id.to_string(), secret: body.secret, overlap_ms: body.overlap_ms };
    subscription_json(call(host, namespace, req).await?)
}

/// `GET /subscriptions/{id}/attempts` (`event_id` `None`) or
/// `/subscriptions/{id}/events/{eventId}/attempts`: `{attempts, nextCursor}`.
pub async fn attempts<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    event_id: Option<&str>,
    q: &PageQuery<'_>,
) -> Result<Value, ApiError> {
    let req = SubsRequest::Attempts {
        id: id.to_string(),
        event_id: event_id.map(str::to_string),
        before: parse_attempt_cursor(q.cursor)?,
        limit: parse_limit(q.limit)?,
    };
    match call(host, namespace, req).await? {
        SubsResponse::Attempts { items, next } => to_json(json!({ "attempts": items, "nextCursor": next })),
        _ => Err(unexpected()),
    }
}

/// `GET /subscriptions/{id}/deliveries` (`{deliveries, nextCursor}`) or
/// `/subscriptions/{id}/dead-letters` (`{deadLetters, nextCursor}`).
pub async fn deliveries<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    listing: DeliveryListing<'_>,
    q: &PageQuery<'_>,
) -> Result<Value, ApiError> {
    let (status, field) = match listing {
        DeliveryListing::Deliveries { status } => (status.map(str::to_string), "deliveries"),
        DeliveryListing::DeadLetters => (Some("dead".to_string()), "deadLetters"),
    };
    let req = SubsRequest::Deliveries {
        id: id.to_string(),
        status,
        after: q.cursor.map(str::to_string),
        limit: parse_limit(q.limit)?,
    };
    match call(host, namespace, req).await? {
        SubsResponse::Deliveries { items, next } => to_json(json!({ field: items, "nextCursor": next })),
        _ => Err(unexpected()),
    }
}

/// `POST /subscriptions/{id}/dead-letters/{dlId}/replay` (`dl_id` set) or
/// `/subscriptions/{id}/dead-letters/replay` (all): `{replayed: n}`.
pub async fn replay<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    dl_id: Option<&str>,
) -> Result<Value, ApiError> {
    let req = SubsRequest::Replay { id: id.to_string(), dl_id: dl_id.map(str::to_string) };
    match call(host, namespace, req).await? {
        SubsResponse::Replayed { count } => Ok(json!({ "replayed": count })),
        _ => Err(unexpected()),
    }
}

/// `POST /subscriptions/{id}/recover`: the job; answer with 202.
pub async fn recover<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    body: &RecoverBody,
) -> Result<Value, ApiError> {
    let since = parse_since(&body.since)?;
    match call(host, namespace, SubsRequest::Recover { id: id.to_string(), since }).await? {
        SubsResponse::Job(job) => to_json(job),
        _ => Err(unexpected()),
    }
}

/// `GET /subscriptions/{id}/recover/{jobId}`: the job.
pub async fn recover_status<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    job_id: &str,
) -> Result<Value, ApiError> {
    match call(host, namespace, SubsRequest::Job { id: id.to_string(), job_id: job_id.to_string() }).await? {
        SubsResponse::Job(job) => to_json(job),
        _ => Err(unexpected()),
    }
}

/// `GET /subscriptions/{id}/stats`: delivery statistics.
pub async fn stats<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
) -> Result<Value, ApiError> {
    match call(host, namespace, SubsRequest::Stats { id: id.to_string() }).await? {
        SubsResponse::Stats(s) => to_json(s),
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(worker_id: &str, rpc_method: &str) -> SubscribeBody {
        SubscribeBody {
            worker_id: worker_id.into(),
            pattern: "order.*".into(),
            rpc_method: rpc_method.into(),
            secret: None,
            max_retries: None,
            timeout_ms: None,
        }
    }

    #[test]
    fn subscribe_substitutes_the_worker_and_method_into_the_template() {
        let spec = subscribe_spec(body("billing-1", "on_event"), DEFAULT_RPC_URL_TEMPLATE).unwrap();
        assert_eq!(spec.url, "https://billing-1.workers.dev/rpc/on_event");
        assert_eq!(spec.pattern, "order.*");
        assert_eq!(spec.worker_id.as_deref(), Some("billing-1"));
        assert_eq!(spec.rpc_method.as_deref(), Some("on_event"));
    }

    #[test]
    fn subscribe_refuses_parts_that_could_reshape_the_url() {
        let long = "w".repeat(MAX_URL_PART_BYTES + 1);
        for (worker, method) in
            [("", "m"), ("w", ""), ("evil.com/x", "m"), ("w", "a/../b"), ("w", "m?x=1"), (long.as_str(), "m")]
        {
            let err = subscribe_spec(body(worker, method), DEFAULT_RPC_URL_TEMPLATE).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{worker:?} {method:?}");
            assert_eq!(err.message, "workerId and rpcMethod are 1-128 letters, digits, '-' or '_'");
        }
        let longest = "w".repeat(MAX_URL_PART_BYTES);
        assert!(subscribe_spec(body(&longest, "m"), DEFAULT_RPC_URL_TEMPLATE).is_ok());
    }

    #[test]
    fn limits_and_attempt_cursors_must_be_numbers() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(parse_limit(Some("7")).unwrap(), 7);
        for bad in ["x", "-1", "1.5", ""] {
            let err = parse_limit(Some(bad)).unwrap_err();
            assert_eq!((err.code, err.message), (ErrorCode::InvalidQuery, format!("limit={bad:?} is not a number")));
        }
        assert_eq!(parse_attempt_cursor(None).unwrap(), None);
        assert_eq!(parse_attempt_cursor(Some("-3")).unwrap(), Some(-3));
        let max = events_runtime::MAX_EXACT_INTEGER;
        assert_eq!(parse_attempt_cursor(Some(&max.to_string())).unwrap(), Some(max));
        assert_eq!(parse_attempt_cursor(Some(&(-max).to_string())).unwrap(), Some(-max));
        // Found by the OpenAPI fuzzer: i64::MIN reached the object's storage,
        // which refuses integers it cannot store exactly (a 500).
        for bad in ["abc", "-9223372036854775808", "9007199254740992", "-9007199254740992"] {
            let err = parse_attempt_cursor(Some(bad)).unwrap_err();
            assert_eq!((err.code, err.message.as_str()), (ErrorCode::InvalidQuery, "invalid cursor"), "{bad}");
        }
    }

    #[test]
    fn an_empty_rotation_body_means_defaults_and_a_malformed_one_is_invalid_json() {
        let defaults = parse_rotate_body(b" \n").unwrap();
        assert_eq!((defaults.secret, defaults.overlap_ms), (None, None));
        let given = parse_rotate_body(br#"{"secret":"whsec_abc","overlapMs":5}"#).unwrap();
        assert_eq!((given.secret.as_deref(), given.overlap_ms), (Some("whsec_abc"), Some(5)));
        for bad in [&b"{"[..], br#"{"overlapMs":"soon"}"#] {
            assert_eq!(parse_rotate_body(bad).unwrap_err().code, ErrorCode::InvalidJson);
        }
    }

    #[test]
    fn recovery_needs_an_iso_time() {
        assert!(parse_since("2026-01-02T03:04:05Z").is_ok());
        let err = parse_since("yesterday").unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (ErrorCode::InvalidRequest, "since must be an ISO-8601 time"));
    }

    #[test]
    fn private_targets_are_refused_as_not_allowed_and_other_failures_as_invalid() {
        let private = target_refused("http://10.0.0.1/", ApiError::new(ErrorCode::InvalidRequest, "private address"));
        assert_eq!(private.code, ErrorCode::TargetNotAllowed);
        assert_eq!(private.details["url"], "http://10.0.0.1/");
        let bad = target_refused("ftp://x", ApiError::new(ErrorCode::InvalidRequest, "only http and https"));
        assert_eq!(bad.code, ErrorCode::InvalidRequest);
        assert_eq!(bad.details["url"], "ftp://x");
    }
}
