//! `/subscriptions/...`: webhook subscriptions of the caller's namespace (one
//! `Subscriptions` object per namespace), with the native server's paths and
//! answers. Deliveries run in the object's alarm, through `fetch`. Query and
//! body parsing, the object calls and the answers are the shared
//! [`events_api::subscriptions`]; this module routes, reads the body, checks
//! target URLs against the outbound policy and authenticates. The original
//! service's Worker-RPC routes (`subscribe`, `list`, `match`, `status`,
//! `unsubscribe`, `reactivate`, `PUT`) are the shared [`events_api::worker_rpc`].

use events_api::subscriptions::{
    self as api, DEFAULT_RPC_URL_TEMPLATE, DeliveryListing, ListQuery, MAX_SUBSCRIPTION_BODY_BYTES, PageQuery,
    RecoverBody, SubscribeBody, target_refused,
};
use events_api::worker_rpc::{self, MatchBody, SubscriptionRef, WorkerListQuery, WorkerUpdate};
use events_core::ApiError;
use events_objects::subscription::{SubscriptionPatch, SubscriptionSpec};
use events_runtime::Host;
use serde_json::Value;

use super::auth::authenticate;
use super::{ApiResult, Call, json, parse_json, query_param};

/// Authenticates the caller (once the shared code has parsed the request)
/// and yields the namespace it acts on.
async fn namespace(call: &Call) -> Result<String, ApiError> {
    Ok(authenticate(call).await?.namespace)
}

/// Refuses a target the outbound policy refuses (literal addresses; the
/// Worker cannot resolve names, and `fetch` reaches only public ones).
fn check_target(call: &Call, url: &str) -> Result<(), ApiError> {
    call.host.http().check_url(url).map(|_| ()).map_err(|e| target_refused(url, e))
}

/// Routes `/subscriptions...`; `None` when no subscription route matches.
pub async fn route(call: &mut Call, method: &str, rest: &[&str]) -> Option<ApiResult> {
    let with_body = match (method, rest) {
        ("POST", []) => create(call).await.and_then(|v| json(201, &v)),
        ("POST", ["subscribe"]) => subscribe(call).await.and_then(|v| json(200, &v)),
        ("POST", ["match"]) => match_body(call).await.and_then(|v| json(200, &v)),
        ("POST", ["unsubscribe"]) => set_active(call, false).await.and_then(|v| json(200, &v)),
        ("POST", ["reactivate"]) => set_active(call, true).await.and_then(|v| json(200, &v)),
        ("PUT", [id]) if !is_static(id) => replace(call, id).await.and_then(|v| json(200, &v)),
        ("PATCH", [id]) => update(call, id).await.and_then(|v| json(200, &v)),
        ("POST", [id, "rotate-secret"]) => rotate_secret(call, id).await.and_then(|v| json(200, &v)),
        ("POST", [id, "recover"]) => recover(call, id).await.and_then(|v| json(202, &v)),
        _ => return without_body(call, method, rest).await.map(|answer| answer.and_then(|v| json(200, &v))),
    };
    Some(with_body)
}

/// The routes that read no body, answered with 200.
async fn without_body(call: &Call, method: &str, rest: &[&str]) -> Option<Result<Value, ApiError>> {
    let host = &call.host;
    let ns = || namespace(call);
    let [pattern, status, limit, cursor] =
        ["pattern", "status", "limit", "cursor"].map(|k| query_param(&call.query, k));
    let page = PageQuery { limit: limit.as_deref(), cursor: cursor.as_deref() };
    Some(match (method, rest) {
        ("GET", ["list"]) => {
            let [active, worker_id, pattern_prefix, shard, offset] =
                ["active", "workerId", "patternPrefix", "shard", "offset"].map(|k| query_param(&call.query, k));
            let query = WorkerListQuery {
                active: active.as_deref(),
                worker_id: worker_id.as_deref(),
                pattern_prefix: pattern_prefix.as_deref(),
                shard: shard.as_deref(),
                limit: limit.as_deref(),
                offset: offset.as_deref(),
            };
            worker_rpc::list(host, ns(), &query).await
        }
        ("GET", ["match"]) => worker_rpc::matching(host, ns(), query_param(&call.query, "eventType").as_deref()).await,
        ("GET", ["status", id]) => worker_rpc::status(host, ns(), id).await,
        ("GET", []) => {
            let query = ListQuery {
                pattern: pattern.as_deref(),
                status: status.as_deref(),
                limit: limit.as_deref(),
                cursor: cursor.as_deref(),
            };
            api::list(host, ns(), &query).await
        }
        ("GET", [id]) => api::get(host, ns(), id).await,
        ("DELETE", [id]) => api::delete(host, ns(), id).await,
        ("POST", [id, "pause"]) => api::set_active(host, ns(), id, false).await,
        ("POST", [id, "resume"]) => api::set_active(host, ns(), id, true).await,
        ("GET", [id, "attempts"]) => api::attempts(host, ns(), id, None, &page).await,
        ("GET", [id, "events", event_id, "attempts"]) => api::attempts(host, ns(), id, Some(event_id), &page).await,
        ("GET", [id, "deliveries"]) => {
            let listing = DeliveryListing::Deliveries { status: status.as_deref() };
            api::deliveries(host, ns(), id, listing, &page).await
        }
        ("GET", [id, "dead-letters"]) => api::deliveries(host, ns(), id, DeliveryListing::DeadLetters, &page).await,
        ("POST", [id, "dead-letters", "replay"]) => api::replay(host, ns(), id, None).await,
        ("POST", [id, "dead-letters", dl_id, "replay"]) => api::replay(host, ns(), id, Some(dl_id)).await,
        ("GET", [id, "recover", job_id]) => api::recover_status(host, ns(), id, job_id).await,
        ("GET", [id, "stats"]) => api::stats(host, ns(), id).await,
        _ => return None,
    })
}

async fn create(call: &mut Call) -> Result<Value, ApiError> {
    let spec: SubscriptionSpec = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
    check_target(call, &spec.url)?;
    api::create(&call.host, namespace(call), spec).await
}

/// The RPC URL template (`RPC_URL_TEMPLATE`, else the default).
fn rpc_template(call: &Call) -> String {
    call.host.var("RPC_URL_TEMPLATE").unwrap_or_else(|| DEFAULT_RPC_URL_TEMPLATE.into())
}

/// The single-segment paths that are routes, not subscription ids.
fn is_static(segment: &str) -> bool {
    matches!(segment, "subscribe" | "list" | "match" | "unsubscribe" | "reactivate")
}

async fn subscribe(call: &mut Call) -> Result<Value, ApiError> {
    let body: SubscribeBody = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
    let spec = api::subscribe_spec(body, &rpc_template(call))?;
    check_target(call, &spec.url)?;
    worker_rpc::subscribe(&call.host, namespace(call), spec).await
}

async fn match_body(call: &mut Call) -> Result<Value, ApiError> {
    let body: MatchBody = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
    worker_rpc::matching(&call.host, namespace(call), Some(&body.event_type)).await
}

async fn set_active(call: &mut Call, active: bool) -> Result<Value, ApiError> {
    let body: SubscriptionRef = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
    worker_rpc::set_active(&call.host, namespace(call), &body, active).await
}

async fn replace(call: &mut Call, id: &str) -> Result<Value, ApiError> {
    let body: WorkerUpdate = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
    let template = rpc_template(call);
    let check = |url: String| std::future::ready(check_target(call, &url));
    worker_rpc::update(&call.host, namespace(call), id, body, &template, check).await
}

async fn update(call: &mut Call, id: &str) -> Result<Value, ApiError> {
    let patch: SubscriptionPatch = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
    if let Some(url) = &patch.url {
        check_target(call, url)?;
    }
    api::update(&call.host, namespace(call), id, patch).await
}

async fn rotate_secret(call: &mut Call, id: &str) -> Result<Value, ApiError> {
    let body = call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?;
    api::rotate_secret(&call.host, namespace(call), id, &body).await
}

async fn recover(call: &mut Call, id: &str) -> Result<Value, ApiError> {
    let body: RecoverBody = parse_json(&call.body(MAX_SUBSCRIPTION_BODY_BYTES).await?)?;
    api::recover(&call.host, namespace(call), id, &body).await
}
