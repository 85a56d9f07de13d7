//! `POST /e` (and the deprecated `POST /ingest`), in the native order:
//! authenticate → decode (size, encoding, JSON or NDJSON) → rate limit →
//! validate every event → change-capture events → schemas → daily quota → reserve the `batchId` →
//! append to a writer shard → answer. Every refusal happens before anything
//! is written. Decoding and validation are the shared `events_api::ingest`.

use std::cell::RefCell;
use std::collections::HashSet;

use events_core::event::EventLimits;
use events_core::name::validate_batch_id;
use events_core::{ApiError, ErrorCode, Event};
use events_objects::event_writer::{WriterRequest, WriterResponse, writer_name};
use events_api::limits::{LocalLimits, SyncJob};
use events_objects::rate_limiter::{QuotaDecision, RateDecision};
use events_objects::schema_registry::{EventFailure, SchemaRequest, SchemaResponse, ValidationMode};
use events_objects::shard_coordinator::ShardRequest;
use events_objects::tenant::{NamespaceLimits, TenantRequest, TenantResponse};
use events_objects::{EventWriter, SchemaRegistry, ShardCoordinator, Tenant};
use events_runtime::Host;
use serde_json::json;
use worker::Response;

use super::auth::authenticate;
use super::{ApiResult, Call, json};
use crate::directory::{DIRECTORY_NAME, DirectoryRequest};
use crate::host::CfHost;

thread_local! {
    /// Writer names this isolate already recorded in the directory.
    static KNOWN_WRITERS: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Most writer names remembered per isolate (cleared when full).
const KNOWN_WRITERS_CAPACITY: usize = 10_000;

/// Adds `RateLimit-Policy`, `RateLimit` and, when refused, `Retry-After`.
fn apply_rate(response: &mut Response, d: &RateDecision) {
    let h = response.headers_mut();
    let _ = h.set(
        "ratelimit-policy",
        &format!("\"requests\";q={};w=60, \"events\";q={};w=60", d.request_limit, d.event_limit),
    );
    let _ = h.set(
        "ratelimit",
        &format!(
            "\"requests\";r={};t={}, \"events\";r={};t={}",
            d.requests_remaining, d.reset_seconds, d.events_remaining, d.reset_seconds
        ),
    );
    if !d.allowed {
        let _ = h.set("retry-after", &d.retry_after_seconds.to_string());
    }
}

fn refused(error: ApiError, rate: Option<&RateDecision>, retry_after: Option<u64>) -> ApiResult {
    let mut response = super::error_response(&error).map_err(|e| crate::host::platform("answer", e))?;
    if let Some(d) = rate {
        apply_rate(&mut response, d);
    }
    if let Some(secs) = retry_after {
        let _ = response.headers_mut().set("retry-after", &secs.to_string());
    }
    Ok(response)
}

async fn check_rate(
    host: &CfHost,
    subject: &str,
    limits: &NamespaceLimits,
    events: u64,
) -> Result<Option<RateDecision>, ApiError> {
    let (decision, job) = LIMITS
        .with(|l| l.clone())
        .check_rate(
            host,
            subject,
            limits.requests_per_minute.unwrap_or_default(),
            limits.events_per_minute.unwrap_or_default(),
            events,
        )
        .await?;
    spawn_sync(host, job);
    Ok(Some(decision))
}

thread_local! {
    /// This isolate's rate-limit and quota counts ([`events_api::limits`]).
    static LIMITS: LocalLimits = LocalLimits::default();
}

/// Merges local limit counts into the limiter objects in the background.
fn spawn_sync(host: &CfHost, job: Option<SyncJob>) {
    let Some(job) = job else { return };
    let host = host.clone();
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = LIMITS.with(|l| l.clone()).sync(&host, job).await {
            worker::console_warn!("merging rate-limit counts failed: {e}");
        }
    });
}

/// Serves `POST /e`; `deprecated` adds the headers of the `/ingest` alias.
pub async fn ingest(call: &mut Call, deprecated: bool) -> ApiResult {
    let mut response = run(call).await?;
    if deprecated {
        let _ = response.headers_mut().set("deprecation", "true");
        let _ = response.headers_mut().set("link", "</e>; rel=\"successor-version\"");
    }
    Ok(response)
}

async fn run(call: &mut Call) -> ApiResult {
    let caller = authenticate(call).await?;
    let host = call.host.clone();
    let config = call.config.clone();
    let ns = caller.namespace.clone();
    let limits = match host.call::<Tenant>(&ns, TenantRequest::GetLimits).await? {
        TenantResponse::Limits(l) => l,
        _ => NamespaceLimits::default(),
    };
    let limits = limits.or_defaults(NamespaceLimits {
        requests_per_minute: Some(config.requests_per_minute),
        events_per_minute: Some(config.events_per_minute),
        events_per_day: Some(config.events_per_day),
    });
    let subject = caller.limiter_subject(call.client_ip.as_deref());

    // A body that cannot be used still counts as a request with no events.
    let decoded = match call.body(config.max_body_bytes).await.and_then(|body| {
        let batch = events_api::ingest::decode_body(&call.headers, &body, config.max_body_bytes)?;
        if batch.events.len() > config.max_events_per_batch {
            return Err(ApiError::new(
                ErrorCode::InvalidBatch,
                format!("a batch holds at most {} events, not {}", config.max_events_per_batch, batch.events.len()),
            ));
        }
        if let Some(id) = &batch.batch_id {
            validate_batch_id(id)?;
        }
        Ok(batch)
    }) {
        Ok(batch) => batch,
        Err(error) => {
            let rate = check_rate(&host, &subject, &limits, 0).await.ok().flatten();
            return refused(error, rate.as_ref(), None);
        }
    };
    let count = decoded.events.len() as u64;

    let rate = check_rate(&host, &subject, &limits, count).await?;
    if let Some(d) = rate.as_ref().filter(|d| !d.allowed) {
        let error =
            ApiError::new(ErrorCode::RateLimited, "rate limit exceeded; see the RateLimit and Retry-After headers")
                .with_details(json!({
                    "requestsPerMinute": d.request_limit, "eventsPerMinute": d.event_limit,
                    "retryAfterSeconds": d.retry_after_seconds,
                }));
        return refused(error, Some(d), None);
    }

    let now = host.now();
    let event_limits = EventLimits { max_event_bytes: config.max_event_bytes, ..EventLimits::default() };
    let validated = events_api::ingest::validate_events_with_origin(
        &decoded.events,
        &ns,
        now,
        &event_limits,
        &mut || host.random(),
    );
    let (events, server_ids) = match validated {
        Ok(v) => (v.events, v.server_ids),
        Err(e) => return refused(e, rate.as_ref(), None),
    };
    // Change-capture events must be readable changes: a malformed one refuses the batch (as natively).
    if let Err(e) = events_core::cdc::check_batch(&events) {
        return refused(e, rate.as_ref(), None);
    }
    let (events, warnings) = match check_schemas(&host, &ns, events).await {
        Ok(pair) => pair,
        Err(e) => return refused(e, rate.as_ref(), None),
    };

    let per_day = limits.events_per_day.unwrap_or_default();
    if per_day > 0 {
        let (quota, job) =
            LIMITS.with(|l| l.clone()).check_quota(&host, &format!("quota:{ns}"), per_day, count).await?;
        spawn_sync(&host, job);
        if let QuotaDecision { allowed: false, used, limit, reset_seconds } = quota {
            let error =
                ApiError::new(ErrorCode::QuotaExceeded, format!("daily event quota exceeded: {used} of {limit} used"))
                    .with_details(json!({"used": used, "limit": limit, "requested": count}));
            return refused(error, rate.as_ref(), Some(reset_seconds));
        }
    }

    let appended = match store(&host, &ns, events, server_ids, decoded.batch_id).await {
        Ok(a) => a,
        Err(e) => {
            let retry = (e.code == ErrorCode::Overloaded).then_some(1);
            return refused(e, rate.as_ref(), retry);
        }
    };
    let mut body = json!({"ok": true, "received": appended.received, "namespace": ns});
    if appended.deduplicated {
        body["deduplicated"] = json!(true);
    }
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    let mut response = json(200, &body)?;
    if let Some(d) = &rate {
        apply_rate(&mut response, d);
    }
    Ok(response)
}

/// Schemas: strict failures refuse the batch; warn failures are reported and the events marked.
pub async fn check_schemas(
    host: &CfHost,
    ns: &str,
    events: Vec<Event>,
) -> Result<(Vec<Event>, Vec<serde_json::Value>), ApiError> {
    let SchemaResponse::Validated { events, failures, .. } =
        host.call::<SchemaRegistry>(ns, SchemaRequest::Validate { events }).await?
    else {
        return Err(ApiError::internal("schema registry answered out of protocol"));
    };
    let (strict, warn): (Vec<EventFailure>, Vec<EventFailure>) =
        failures.into_iter().partition(|f| f.mode == ValidationMode::Strict);
    if !strict.is_empty() {
        let indices: Vec<usize> = strict.iter().map(|f| f.index).collect();
        return Err(ApiError::new(
            ErrorCode::SchemaValidationError,
            format!("{} event(s) failed schema validation; the batch was not stored", strict.len()),
        )
        .with_details(json!({"indices": indices, "errors": events_api::schemas::failure_entries(&strict)})));
    }
    Ok((events, events_api::schemas::failure_entries(&warn)))
}

/// Appends validated events of `ns` to a writer shard (a `batchId` sticks to
/// the shard that first took it) and records the writer in the directory.
pub async fn store(
    host: &CfHost,
    ns: &str,
    events: Vec<Event>,
    server_ids: Vec<bool>,
    batch_id: Option<String>,
) -> Result<events_objects::event_writer::Appended, ApiError> {
    let shards = host.call::<ShardCoordinator>(ns, ShardRequest::Layout).await?.shards.max(1);
    let mut shard = (host.random() % shards as u128) as u32;
    if let Some(batch_id) = &batch_id
        && let TenantResponse::BatchShard(s) =
            host.call::<Tenant>(ns, TenantRequest::ReserveBatch { batch_id: batch_id.clone(), shard }).await?
    {
        shard = s;
    }
    let name = writer_name(ns, shard);
    let known = KNOWN_WRITERS.with(|k| k.borrow().contains(&name));
    if !known {
        host.call::<crate::directory::Directory>(DIRECTORY_NAME, DirectoryRequest::AddWriter(name.clone())).await?;
        KNOWN_WRITERS.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() >= KNOWN_WRITERS_CAPACITY {
                k.clear();
            }
            k.insert(name.clone());
        });
    }
    match host.call::<EventWriter>(&name, WriterRequest::Append { events, batch_id, server_ids }).await? {
        WriterResponse::Appended(a) => Ok(a),
        _ => Err(ApiError::internal("writer answered out of protocol")),
    }
}
