//! `/subscriptions/...`: webhook subscriptions of the caller's namespace (one
//! `Subscriptions` object per namespace), with the native server's paths and
//! answers. Deliveries run in the object's alarm, through `fetch`.

use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::Subscriptions;
use events_objects::subscription::{SubsRequest, SubsResponse, SubscriptionPatch, SubscriptionSpec};
use events_runtime::Host;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::authenticate;
use super::{ApiResult, Call, json, parse_json, query_param};

/// Default page size of the listings.
pub const DEFAULT_PAGE: usize = 100;
/// Largest subscription request body.
const MAX_SUBSCRIPTION_BODY_BYTES: usize = 64 * 1024;
/// Target of `POST /subscriptions/subscribe` when `RPC_URL_TEMPLATE` is not set.
const DEFAULT_RPC_URL_TEMPLATE: &str = "https://{workerId}.workers.dev/rpc/{rpcMethod}";

async fn subs(call: &Call, req: SubsRequest) -> Result<SubsResponse, ApiError> {
    let caller = authenticate(call).await?;
    call.host.call::<Subscriptions>(&caller.namespace, req).await
}

fn unexpected() -> ApiError {
    ApiError::internal("unexpected answer")
}

fn subscription(resp: SubsResponse) -> Result<Value, ApiError> {
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

fn check_target(call: &Call, url: &str) -> Result<(), ApiError> {
    call.host.http().check_url(url).map(|_| ()).map_err(|e| {
        let code = if e.message.contains("private") { ErrorCode::TargetNotAllowed } else { ErrorCode::InvalidRequest };
        ApiError::new(code, e.message).with_details(json!({ "url": url }))
    })
}

fn limit(call: &Call) -> Result<usize, ApiError> {
    match query_param(&call.query, "limit") {
        Some(s) => s.parse().map_err(|_| ApiError::new(ErrorCode::InvalidQuery, "limit must be a number")),
        None => Ok(DEFAULT_PAGE),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeBody {
    worker_id: String,
    pattern: String,
    rpc_method: String,
    secret: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RotateBody {
    secret: Option<String>,
    overlap_ms: Option<i64>,
}

#[derive(Deserialize)]
struct RecoverBody {
    since: String,
}

fn url_part_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Routes `/subscriptions...`; `None` when no subscription route matches.
pub async fn route(call: &mut Call, method: &str, rest: &[&str]) -> Option<ApiResult> {
    let owned: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
    let id = owned.first().cloned().unwrap_or_default();
    let r: ApiResult = async {
        match (method, rest) {
            ("POST", []) => {
                let spec: SubscriptionSpec = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
                check_target(call, &spec.url)?;
                json(201, &subscription(subs(call, SubsRequest::Create(spec)).await?)?)
            }
            ("POST", ["subscribe"]) => {
                let body: SubscribeBody = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
                if !url_part_ok(&body.worker_id) || !url_part_ok(&body.rpc_method) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        "workerId and rpcMethod are 1-128 letters, digits, '-' or '_'",
                    ));
                }
                let template = call.host.var("RPC_URL_TEMPLATE").unwrap_or_else(|| DEFAULT_RPC_URL_TEMPLATE.into());
                let url = template.replace("{workerId}", &body.worker_id).replace("{rpcMethod}", &body.rpc_method);
                check_target(call, &url)?;
                let spec = SubscriptionSpec {
                    pattern: body.pattern,
                    url,
                    secret: body.secret,
                    worker_id: Some(body.worker_id),
                    rpc_method: Some(body.rpc_method),
                    ..Default::default()
                };
                json(201, &subscription(subs(call, SubsRequest::Create(spec)).await?)?)
            }
            ("GET", []) => {
                let req = SubsRequest::List {
                    pattern: query_param(&call.query, "pattern"),
                    status: query_param(&call.query, "status"),
                    after: query_param(&call.query, "cursor"),
                    limit: limit(call)?,
                };
                match subs(call, req).await? {
                    SubsResponse::List { items, next } => {
                        json(200, &json!({ "subscriptions": items, "nextCursor": next }))
                    }
                    _ => Err(unexpected()),
                }
            }
            ("GET", [_]) => json(200, &subscription(subs(call, SubsRequest::Get { id }).await?)?),
            ("PATCH", [_]) => {
                let patch: SubscriptionPatch = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
                if let Some(url) = &patch.url {
                    check_target(call, url)?;
                }
                json(200, &subscription(subs(call, SubsRequest::Update { id, patch }).await?)?)
            }
            ("DELETE", [_]) => {
                subs(call, SubsRequest::Delete { id: id.clone() }).await?;
                json(200, &json!({ "id": id, "deleted": true }))
            }
            ("POST", [_, "pause"]) => {
                json(200, &subscription(subs(call, SubsRequest::SetActive { id, active: false }).await?)?)
            }
            ("POST", [_, "resume"]) => {
                json(200, &subscription(subs(call, SubsRequest::SetActive { id, active: true }).await?)?)
            }
            ("POST", [_, "rotate-secret"]) => {
                let bytes = call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?;
                let body: RotateBody = if bytes.iter().all(u8::is_ascii_whitespace) {
                    RotateBody::default()
                } else {
                    serde_json::from_slice(&bytes)
                        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid rotation request: {e}")))?
                };
                let req = SubsRequest::RotateSecret { id, secret: body.secret, overlap_ms: body.overlap_ms };
                json(200, &subscription(subs(call, req).await?)?)
            }
            ("GET", [_, "attempts"]) => attempts(call, id, None).await,
            ("GET", [_, "events", event_id, "attempts"]) => attempts(call, id, Some(event_id.to_string())).await,
            ("GET", [_, "deliveries"]) => deliveries(call, id, query_param(&call.query, "status"), "deliveries").await,
            ("GET", [_, "dead-letters"]) => deliveries(call, id, Some("dead".into()), "deadLetters").await,
            ("POST", [_, "dead-letters", "replay"]) => replay(call, id, None).await,
            ("POST", [_, "dead-letters", dl_id, "replay"]) => replay(call, id, Some(dl_id.to_string())).await,
            ("POST", [_, "recover"]) => {
                let body: RecoverBody = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
                let since = Timestamp::parse_iso(&body.since)
                    .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "since must be an ISO-8601 time"))?;
                match subs(call, SubsRequest::Recover { id, since }).await? {
                    SubsResponse::Job(job) => json(202, &job),
                    _ => Err(unexpected()),
                }
            }
            ("GET", [_, "recover", job_id]) => {
                match subs(call, SubsRequest::Job { id, job_id: job_id.to_string() }).await? {
                    SubsResponse::Job(job) => json(200, &job),
                    _ => Err(unexpected()),
                }
            }
            ("GET", [_, "stats"]) => match subs(call, SubsRequest::Stats { id }).await? {
                SubsResponse::Stats(s) => json(200, &s),
                _ => Err(unexpected()),
            },
            _ => Err(ApiError::new(ErrorCode::NotFound, "no such subscription route")),
        }
    }
    .await;
    match r {
        Err(e) if e.code == ErrorCode::NotFound && e.message == "no such subscription route" => None,
        other => Some(other),
    }
}

async fn attempts(call: &Call, id: String, event_id: Option<String>) -> ApiResult {
    let before = match query_param(&call.query, "cursor") {
        Some(c) => Some(c.parse::<i64>().map_err(|_| ApiError::new(ErrorCode::InvalidQuery, "invalid cursor"))?),
        None => None,
    };
    let req = SubsRequest::Attempts { id, event_id, before, limit: limit(call)? };
    match subs(call, req).await? {
        SubsResponse::Attempts { items, next } => json(200, &json!({ "attempts": items, "nextCursor": next })),
        _ => Err(unexpected()),
    }
}

async fn deliveries(call: &Call, id: String, status: Option<String>, field: &str) -> ApiResult {
    let req = SubsRequest::Deliveries { id, status, after: query_param(&call.query, "cursor"), limit: limit(call)? };
    match subs(call, req).await? {
        SubsResponse::Deliveries { items, next } => json(200, &json!({ field: items, "nextCursor": next })),
        _ => Err(unexpected()),
    }
}

async fn replay(call: &Call, id: String, dl_id: Option<String>) -> ApiResult {
    match subs(call, SubsRequest::Replay { id, dl_id }).await? {
        SubsResponse::Replayed { count } => json(200, &json!({ "replayed": count })),
        _ => Err(unexpected()),
    }
}
