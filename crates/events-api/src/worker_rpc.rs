//! The original service's Worker-RPC subscription routes, kept for its
//! users: `POST /subscriptions/subscribe`, `GET /subscriptions/list`,
//! `GET|POST /subscriptions/match`, `GET /subscriptions/status/{id}`,
//! `POST /subscriptions/unsubscribe`, `POST /subscriptions/reactivate` and
//! `PUT /subscriptions/{id}`, with the original's shapes.
//!
//! A worker subscription is an ordinary subscription of the caller's
//! namespace whose URL is the host's RPC template filled with `workerId` and
//! `rpcMethod` (see [`crate::subscriptions::subscribe_spec`]). Where the
//! original stored subscriptions in shards named by the pattern's first
//! segment, every subscription of a namespace lives in its one
//! `Subscriptions` object: `shard` is answered (the original's name, from the
//! pattern) and accepted, but never changes where a subscription lives.
//! Unsubscribing pauses: matching events keep being queued and are delivered
//! after a reactivation (the original dropped them).

use std::future::Future;

use events_core::limits::MAX_EVENT_TYPE_LEN;
use events_core::pattern::Pattern;
use events_core::{ApiError, ErrorCode};
use events_objects::Subscriptions;
use events_objects::subscription::{
    DEFAULT_RETRY_SCHEDULE_MS, MAX_LIST_LIMIT, MAX_RETRY_SCHEDULE_LEN, SubsRequest, SubsResponse, SubscriptionInfo,
    SubscriptionPatch, SubscriptionSpec, SubscriptionStats,
};
use events_runtime::context::Host;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::subscriptions::{DEFAULT_PAGE, url_part_ok};

/// The shard name of a pattern whose first segment is a wildcard.
pub const DEFAULT_SHARD: &str = "default";

/// Body of `POST /subscriptions/unsubscribe` and `/subscriptions/reactivate`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRef {
    /// The subscription.
    pub subscription_id: String,
    /// The original's shard name; accepted and ignored.
    pub shard: Option<String>,
}

/// Body of `POST /subscriptions/match`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchBody {
    /// The event type to match.
    pub event_type: String,
}

/// Body of `PUT /subscriptions/{id}`; absent fields stay.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerUpdate {
    /// Attempts per delivery (1-20), as the original's `maxRetries`.
    pub max_retries: Option<u32>,
    /// Request timeout (ms).
    pub timeout_ms: Option<u64>,
    /// New RPC method (worker subscriptions only).
    pub rpc_method: Option<String>,
}

/// The query of `GET /subscriptions/list`, as the client sent it.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerListQuery<'a> {
    /// `active`: `true` (active only) or `false` (paused or disabled only).
    pub active: Option<&'a str>,
    /// `workerId`: only this worker's.
    pub worker_id: Option<&'a str>,
    /// `patternPrefix`: only patterns that start with it.
    pub pattern_prefix: Option<&'a str>,
    /// `shard`: only patterns of this original shard name.
    pub shard: Option<&'a str>,
    /// `limit`: page size (default 100, clamped into 1-1000).
    pub limit: Option<&'a str>,
    /// `offset`: subscriptions skipped.
    pub offset: Option<&'a str>,
}

/// The original's shard name of `pattern`: its first segment, or
/// [`DEFAULT_SHARD`] when that holds a wildcard.
pub fn shard_of(pattern: &str) -> &str {
    match pattern.split('.').next() {
        Some(first) if !first.is_empty() && !first.contains('*') => first,
        _ => DEFAULT_SHARD,
    }
}

/// The retry schedule of `max_retries` attempts: the first entries of the
/// default schedule, its last delay repeated beyond it (`INVALID_CONFIG`
/// outside 1-[`MAX_RETRY_SCHEDULE_LEN`]).
pub fn retry_schedule(max_retries: u32) -> Result<Vec<i64>, ApiError> {
    let n = max_retries as usize;
    if !(1..=MAX_RETRY_SCHEDULE_LEN).contains(&n) {
        return Err(ApiError::new(ErrorCode::InvalidConfig, format!("maxRetries is 1-{MAX_RETRY_SCHEDULE_LEN}")));
    }
    let last = *DEFAULT_RETRY_SCHEDULE_MS.last().expect("a default schedule");
    Ok((0..n).map(|i| DEFAULT_RETRY_SCHEDULE_MS.get(i).copied().unwrap_or(last)).collect())
}

fn unexpected() -> ApiError {
    ApiError::internal("unexpected answer")
}

fn invalid_query(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message)
}

/// A subscription in the original's terms: the subscription plus `active`,
/// `maxRetries` (attempts per delivery) and `shard`.
fn worker_view(info: SubscriptionInfo) -> Result<Value, ApiError> {
    let (active, max_retries, shard) =
        (info.status == "active", info.retry_schedule.len(), shard_of(&info.pattern).to_string());
    let mut v = serde_json::to_value(info).map_err(|e| ApiError::internal(e.to_string()))?;
    v["active"] = json!(active);
    v["maxRetries"] = json!(max_retries);
    v["shard"] = json!(shard);
    Ok(v)
}

/// Every subscription of the namespace, by id.
async fn all<H: Host>(host: &H, ns: &str) -> Result<Vec<SubscriptionInfo>, ApiError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let req = SubsRequest::List { pattern: None, status: None, after, limit: MAX_LIST_LIMIT };
        match host.call::<Subscriptions>(ns, req).await? {
            SubsResponse::List { items, next } => {
                out.extend(items);
                match next {
                    Some(n) => after = Some(n),
                    None => return Ok(out),
                }
            }
            _ => return Err(unexpected()),
        }
    }
}

/// `POST /subscriptions/subscribe` (the host checked `spec.url`):
/// `{ok, subscriptionId, shard, namespace, secret, subscription}`, answered
/// with 200. The same worker, pattern and method twice is refused with
/// `CONFLICT` (409), the existing id in `details.subscriptionId`.
pub async fn subscribe<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    spec: SubscriptionSpec,
) -> Result<Value, ApiError> {
    let ns = namespace.await?;
    match host.call::<Subscriptions>(&ns, SubsRequest::Create(spec)).await? {
        SubsResponse::Subscription { info, secret } => Ok(json!({
            "ok": true, "subscriptionId": info.id, "shard": shard_of(&info.pattern), "namespace": ns,
            "secret": secret, "subscription": worker_view(*info)?,
        })),
        _ => Err(unexpected()),
    }
}

/// `GET /subscriptions/list`: `{subscriptions, namespace}` (and `shard` when
/// asked for), newest first, filtered, then `offset` and `limit` applied.
pub async fn list<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    q: &WorkerListQuery<'_>,
) -> Result<Value, ApiError> {
    let active = match q.active {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(invalid_query("active must be true or false")),
    };
    let limit = match q.limit {
        None => DEFAULT_PAGE,
        Some(s) => {
            s.parse::<i64>().map_err(|_| invalid_query("limit must be an integer"))?.clamp(1, MAX_LIST_LIMIT as i64)
                as usize
        }
    };
    let offset =
        q.offset.map_or(Ok(0), |s| s.parse::<usize>().map_err(|_| invalid_query("offset must be a number")))?;
    let ns = namespace.await?;
    let mut subs: Vec<SubscriptionInfo> = all(host, &ns)
        .await?
        .into_iter()
        .filter(|s| active.is_none_or(|a| (s.status == "active") == a))
        .filter(|s| q.worker_id.is_none_or(|w| s.worker_id.as_deref() == Some(w)))
        .filter(|s| q.pattern_prefix.is_none_or(|p| s.pattern.starts_with(p)))
        .filter(|s| q.shard.is_none_or(|sh| shard_of(&s.pattern) == sh))
        .collect();
    subs.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
    let page = subs.into_iter().skip(offset).take(limit).map(worker_view).collect::<Result<Vec<_>, _>>()?;
    let mut answer = json!({ "subscriptions": page, "namespace": ns });
    if let Some(shard) = q.shard {
        answer["shard"] = json!(shard);
    }
    Ok(answer)
}

/// `GET /subscriptions/match?eventType=` or `POST /subscriptions/match`
/// `{eventType}`: `{subscriptions, namespace}`, the active subscriptions
/// whose pattern matches. A missing or empty type is `INVALID_REQUEST`.
pub async fn matching<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    event_type: Option<&str>,
) -> Result<Value, ApiError> {
    let event_type = event_type
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "eventType is required"))?;
    if event_type.len() > MAX_EVENT_TYPE_LEN {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("eventType is at most {MAX_EVENT_TYPE_LEN} bytes"),
        ));
    }
    let ns = namespace.await?;
    let mut found = Vec::new();
    for s in all(host, &ns).await? {
        if s.status == "active" && Pattern::parse(&s.pattern).is_ok_and(|p| p.matches(event_type)) {
            found.push(worker_view(s)?);
        }
    }
    Ok(json!({ "subscriptions": found, "namespace": ns }))
}

/// The original's statistics of `s`: `successRate` is deliveries per attempt
/// (0 without attempts), and `failedDeliveries` counts failed attempts.
fn worker_stats(s: &SubscriptionStats) -> Value {
    let rate = if s.attempts > 0 { s.delivered as f64 / s.attempts as f64 } else { 0.0 };
    json!({
        "pendingDeliveries": s.pending, "failedDeliveries": s.failed_attempts, "deadLetters": s.dead,
        "successRate": rate, "totalDelivered": s.delivered, "totalAttempts": s.attempts,
    })
}

/// `GET /subscriptions/status/{id}`: `{subscription, stats}`; as in the
/// original, an unknown id (or one of another namespace) answers
/// `subscription: null` with zero statistics.
pub async fn status<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
) -> Result<Value, ApiError> {
    let ns = namespace.await?;
    let info = match host.call::<Subscriptions>(&ns, SubsRequest::Get { id: id.to_string() }).await {
        Ok(SubsResponse::Subscription { info, .. }) => info,
        Ok(_) => return Err(unexpected()),
        Err(e) if e.code == ErrorCode::NotFound => {
            let zero = SubscriptionStats {
                delivered: 0,
                failed_attempts: 0,
                attempts: 0,
                pending: 0,
                dead: 0,
                success_rate: 0.0,
                latency_ms: Default::default(),
                ops_events: Vec::new(),
            };
            return Ok(json!({ "subscription": null, "stats": worker_stats(&zero) }));
        }
        Err(e) => return Err(e),
    };
    match host.call::<Subscriptions>(&ns, SubsRequest::Stats { id: id.to_string() }).await? {
        SubsResponse::Stats(s) => Ok(json!({ "subscription": worker_view(*info)?, "stats": worker_stats(&s) })),
        _ => Err(unexpected()),
    }
}

/// `POST /subscriptions/unsubscribe` (`active` false: pauses) or
/// `/subscriptions/reactivate` (true): `{ok: true}`; `NOT_FOUND` for an
/// unknown id.
pub async fn set_active<H: Host>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    body: &SubscriptionRef,
    active: bool,
) -> Result<Value, ApiError> {
    let ns = namespace.await?;
    let req = SubsRequest::SetActive { id: body.subscription_id.clone(), active };
    match host.call::<Subscriptions>(&ns, req).await? {
        SubsResponse::Subscription { .. } => Ok(json!({ "ok": true })),
        _ => Err(unexpected()),
    }
}

/// `PUT /subscriptions/{id}`: changes attempts, timeout or RPC method (the
/// URL follows the method through `template`; `check_target` is the host's
/// outbound check of the new URL). `{ok: true}`; `NOT_FOUND`, `INVALID_CONFIG`
/// for values out of range, `INVALID_REQUEST` for a method on a subscription
/// that is not a worker's, `CONFLICT` for a duplicate.
pub async fn update<H: Host, C, F>(
    host: &H,
    namespace: impl Future<Output = Result<String, ApiError>>,
    id: &str,
    body: WorkerUpdate,
    template: &str,
    check_target: C,
) -> Result<Value, ApiError>
where
    C: FnOnce(String) -> F,
    F: Future<Output = Result<(), ApiError>>,
{
    let retry_schedule = body.max_retries.map(retry_schedule).transpose()?;
    if let Some(m) = &body.rpc_method
        && !url_part_ok(m)
    {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "rpcMethod is 1-128 letters, digits, '-' or '_'"));
    }
    let ns = namespace.await?;
    let mut patch = SubscriptionPatch { retry_schedule, timeout_ms: body.timeout_ms, ..Default::default() };
    if let Some(method) = body.rpc_method {
        let info = match host.call::<Subscriptions>(&ns, SubsRequest::Get { id: id.to_string() }).await? {
            SubsResponse::Subscription { info, .. } => info,
            _ => return Err(unexpected()),
        };
        let Some(worker) = info.worker_id else {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "rpcMethod applies to worker subscriptions only"));
        };
        let url = template.replace("{workerId}", &worker).replace("{rpcMethod}", &method);
        check_target(url.clone()).await?;
        patch.url = Some(url);
        patch.rpc_method = Some(method);
    }
    match host.call::<Subscriptions>(&ns, SubsRequest::Update { id: id.to_string(), patch }).await? {
        SubsResponse::Subscription { .. } | SubsResponse::Ok => Ok(json!({ "ok": true })),
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_is_the_first_literal_segment() {
        assert_eq!(shard_of("webhook.github.*"), "webhook");
        assert_eq!(shard_of("order"), "order");
        for p in ["*", "**", "*.created", "web*.x", ""] {
            assert_eq!(shard_of(p), DEFAULT_SHARD, "{p}");
        }
    }

    #[test]
    fn max_retries_is_the_number_of_attempts() {
        assert_eq!(retry_schedule(1).unwrap(), vec![0]);
        assert_eq!(retry_schedule(3).unwrap(), DEFAULT_RETRY_SCHEDULE_MS[..3].to_vec());
        let long = retry_schedule(MAX_RETRY_SCHEDULE_LEN as u32).unwrap();
        assert_eq!(long.len(), MAX_RETRY_SCHEDULE_LEN);
        assert_eq!(long.last(), DEFAULT_RETRY_SCHEDULE_MS.last());
        for bad in [0, MAX_RETRY_SCHEDULE_LEN as u32 + 1] {
            let err = retry_schedule(bad).unwrap_err();
            assert_eq!((err.code, err.message), (ErrorCode::InvalidConfig, "maxRetries is 1-20".to_string()));
        }
    }

    #[test]
    fn success_rate_is_deliveries_per_attempt_and_zero_without_attempts() {
        let mut s = SubscriptionStats {
            delivered: 3,
            failed_attempts: 1,
            attempts: 4,
            pending: 2,
            dead: 1,
            success_rate: 0.75,
            latency_ms: Default::default(),
            ops_events: Vec::new(),
        };
        let v = worker_stats(&s);
        assert_eq!(
            v,
            json!({"pendingDeliveries": 2, "failedDeliveries": 1, "deadLetters": 1, "successRate": 0.75,
                "totalDelivered": 3, "totalAttempts": 4})
        );
        s.attempts = 0;
        assert_eq!(worker_stats(&s)["successRate"], 0.0);
    }
}
