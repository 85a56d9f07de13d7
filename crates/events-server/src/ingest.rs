//! The ingest pipeline behind `POST /e`.
//!
//! Order: authenticate → decode the body (size, encoding, JSON or NDJSON)
//! → rate limit → validate every event → change-capture formats
//! ([`events_core::cdc::check_batch`]) → schemas ([`crate::schemas`]) → daily quota → reserve the `batchId`
//! → append to a writer shard (fsynced) → answer. Each step that refuses
//! returns before anything is written, so a refused batch leaves no trace.
//!
//! Rate limits and quotas are counted in process ([`events_api::limits`]) and
//! merged into the limiter objects by background tasks, so the writer append
//! is the only object call of a request (after a subject's first).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use events_api::limits::{LocalLimits, SyncJob};
use events_core::event::EventLimits;
use events_core::name::validate_batch_id;
use events_core::{ApiError, ErrorCode, Event, Timestamp};
use events_host_native::NativeHost;
use events_objects::event_writer::{Appended, WriterRequest, WriterResponse, writer_name};
use events_objects::rate_limiter::{QuotaDecision, RateDecision};
use events_objects::shard_coordinator::ShardRequest;
use events_objects::tenant::{NamespaceLimits, TenantRequest, TenantResponse};
use events_objects::{EventWriter, ShardCoordinator, Tenant};
use serde_json::value::RawValue;

use crate::auth::Caller;
use crate::config::ServerConfig;

/// How long a namespace's shard layout and limits are cached.
pub const LAYOUT_CACHE_TTL: Duration = Duration::from_secs(2);
/// Most namespaces whose layout is cached (cleared when full).
pub const LAYOUT_CACHE_CAPACITY: usize = 10_000;
pub use events_api::ingest::BATCH_ID_HEADER;

pub use events_api::ingest::DecodedBatch;

/// Decodes the request body: size limit, `Content-Encoding`, `Content-Type`
/// (the host-independent [`events_api::ingest::decode_body`] with this server's body limit).
pub fn decode_body(headers: &HeaderMap, body: Bytes, config: &ServerConfig) -> Result<DecodedBatch, ApiError> {
    events_api::ingest::decode_body(headers, &body, config.max_body_bytes)
}

/// Decodes the body and checks the batch envelope (size, `batchId`).
fn decode_batch(headers: &HeaderMap, body: Bytes, config: &ServerConfig) -> Result<DecodedBatch, ApiError> {
    let batch = decode_body(headers, body, config)?;
    if batch.events.len() > config.ingest.max_events_per_batch {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            format!("a batch holds at most {} events, not {}", config.ingest.max_events_per_batch, batch.events.len()),
        ));
    }
    if let Some(id) = &batch.batch_id {
        validate_batch_id(id)?;
    }
    Ok(batch)
}

/// Validates every event; all faults are reported together (ids from this process's randomness).
pub fn validate_events(
    raw: &[Box<RawValue>],
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
) -> Result<Vec<Event>, ApiError> {
    events_api::ingest::validate_events(raw, ns, now, limits, &mut rand::random)
}

/// The rate-limit state of a response, rendered as IETF `RateLimit` headers.
#[derive(Debug, Clone, Copy)]
pub struct RateHeaders(pub RateDecision);

impl RateHeaders {
    /// Adds `RateLimit-Policy` and `RateLimit` (and `Retry-After` when refused).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let d = &self.0;
        let policy = format!("\"requests\";q={};w=60, \"events\";q={};w=60", d.request_limit, d.event_limit);
        let state = format!(
            "\"requests\";r={};t={}, \"events\";r={};t={}",
            d.requests_remaining, d.reset_seconds, d.events_remaining, d.reset_seconds
        );
        if let Ok(v) = HeaderValue::from_str(&policy) {
            headers.insert("ratelimit-policy", v);
        }
        if let Ok(v) = HeaderValue::from_str(&state) {
            headers.insert("ratelimit", v);
        }
        if !d.allowed {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(d.retry_after_seconds));
        }
    }
}

/// A successful ingest.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Events in the batch.
    pub received: usize,
    /// Whether it was a replay of an accepted `batchId`.
    pub deduplicated: bool,
    /// The namespace written to.
    pub namespace: String,
    /// Schema failures of `warn`-mode schemas (the events were stored, marked).
    pub warnings: Vec<serde_json::Value>,
}

/// An ingest failure and the rate state to report with it (if known).
pub struct Refused {
    /// The error.
    pub error: ApiError,
    /// Rate headers, once the rate limiter has answered.
    pub rate: Option<RateHeaders>,
    /// `Retry-After` for errors other than rate limiting.
    pub retry_after: Option<u64>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused { error, rate: None, retry_after: None }
    }
}

struct NamespaceState {
    shards: u32,
    limits: NamespaceLimits,
    fetched: Instant,
    inflight: Vec<Arc<AtomicUsize>>,
    last_backpressure: Option<Instant>,
}

/// Ingest state shared by requests: cached layouts, limits and in-flight counts.
pub struct Ingest {
    namespaces: Mutex<HashMap<String, NamespaceState>>,
    /// Schema validation in front of the namespace's registry.
    pub schemas: crate::schemas::SchemaGate,
    /// Rate-limit and quota counts of this process.
    pub limits: LocalLimits,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest { namespaces: Mutex::new(HashMap::new()), schemas: Default::default(), limits: Default::default() }
    }
}

/// Merges due limit counts every [`events_api::limits::SYNC_INTERVAL_MS`],
/// so a quiet subject's last counts reach its object too.
pub async fn merge_limits_periodically(state: crate::state::AppState) {
    let period = Duration::from_millis(events_api::limits::SYNC_INTERVAL_MS as u64);
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        let now = events_runtime::Host::now(&state.host);
        for job in state.ingest.limits.due(now, false) {
            spawn_sync(&state.host, &state.ingest.limits, Some(job));
        }
    }
}

/// Runs a merge of local limit counts in the background.
fn spawn_sync(host: &NativeHost, limits: &LocalLimits, job: Option<SyncJob>) {
    let Some(job) = job else { return };
    let (host, limits) = (host.clone(), limits.clone());
    tokio::spawn(async move {
        if let Err(e) = limits.sync(&host, job).await {
            metrics::counter!("events_limit_sync_failures_total").increment(1);
            tracing::warn!(error = %e, "merging rate-limit counts failed; they are sent with the next merge");
        }
    });
}

impl Ingest {
    /// Shard count and limits of `ns`, from cache or from its objects.
    async fn namespace(&self, host: &NativeHost, ns: &str) -> Result<(u32, NamespaceLimits), ApiError> {
        {
            let map = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map.get(ns)
                && s.fetched.elapsed() < LAYOUT_CACHE_TTL
            {
                return Ok((s.shards, s.limits));
            }
        }
        let (layout, limits) = tokio::join!(
            host.call_object::<ShardCoordinator>(ns, ShardRequest::Layout),
            host.call_object::<Tenant>(ns, TenantRequest::GetLimits)
        );
        let shards = layout?.shards.max(1);
        let limits = match limits? {
            TenantResponse::Limits(l) => l,
            _ => NamespaceLimits::default(),
        };
        let mut map = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= LAYOUT_CACHE_CAPACITY {
            map.clear();
        }
        let entry = map.entry(ns.to_string()).or_insert_with(|| NamespaceState {
            shards,
            limits,
            fetched: Instant::now(),
            inflight: Vec::new(),
            last_backpressure: None,
        });
        entry.shards = shards;
        entry.limits = limits;
        entry.fetched = Instant::now();
        while entry.inflight.len() < shards as usize {
            entry.inflight.push(Arc::new(AtomicUsize::new(0)));
        }
        Ok((shards, limits))
    }

    /// Forgets cached limits of `ns` (after an admin change).
    pub fn invalidate(&self, ns: &str) {
        self.namespaces.lock().unwrap_or_else(|p| p.into_inner()).remove(ns);
    }

    /// The least loaded shard of `ns` and its in-flight counter.
    fn pick_shard(&self, ns: &str, shards: u32, forced: Option<u32>) -> (u32, Arc<AtomicUsize>) {
        let mut map = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(ns.to_string()).or_insert_with(|| NamespaceState {
            shards,
            limits: NamespaceLimits::default(),
            fetched: Instant::now() - LAYOUT_CACHE_TTL,
            inflight: Vec::new(),
            last_backpressure: None,
        });
        let needed = shards.max(forced.map_or(0, |f| f + 1)) as usize;
        while entry.inflight.len() < needed {
            entry.inflight.push(Arc::new(AtomicUsize::new(0)));
        }
        let shard = forced.unwrap_or_else(|| {
            (0..shards).min_by_key(|s| entry.inflight[*s as usize].load(Ordering::Relaxed)).unwrap_or(0)
        });
        (shard, entry.inflight[shard as usize].clone())
    }

    /// Whether to report backpressure now (at most once a second per namespace).
    fn should_report(&self, ns: &str) -> bool {
        let mut map = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = map.get_mut(ns) else { return false };
        if entry.last_backpressure.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        entry.last_backpressure = Some(Instant::now());
        true
    }

    /// Asks the caller's rate limiter; `None` when it failed and the
    /// configuration lets traffic through (fail-open).
    async fn check_rate(
        &self,
        host: &NativeHost,
        config: &ServerConfig,
        subject: &str,
        limits: &NamespaceLimits,
        events: u64,
    ) -> Result<Option<RateHeaders>, ApiError> {
        let checked = self
            .limits
            .check_rate(
                host,
                subject,
                limits.requests_per_minute.unwrap_or_default(),
                limits.events_per_minute.unwrap_or_default(),
                events,
            )
            .await;
        match checked {
            Ok((d, job)) => {
                spawn_sync(host, &self.limits, job);
                Ok(Some(RateHeaders(d)))
            }
            Err(e) if config.ingest.rate_limit_fail_open => {
                tracing::warn!(error = %e, "rate limiter failed; letting the request through (fail-open)");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the pipeline for one authenticated request.
    pub async fn ingest(
        &self,
        host: &NativeHost,
        config: &ServerConfig,
        caller: &Caller,
        client_ip: Option<&str>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(Accepted, Option<RateHeaders>), Refused> {
        let started = Instant::now();
        let ns = caller.namespace.clone();
        let (_, limits) = self.namespace(host, &ns).await?;
        let defaults = NamespaceLimits {
            requests_per_minute: Some(config.ingest.requests_per_minute),
            events_per_minute: Some(config.ingest.events_per_minute),
            events_per_day: Some(config.ingest.events_per_day),
        };
        let limits = limits.or_defaults(defaults);
        let subject = caller.limiter_subject(client_ip);
        // A request whose body cannot be used still counts as a request
        // (with no events) and carries the rate-limit headers.
        let batch = match decode_batch(headers, body, config) {
            Ok(batch) => batch,
            Err(error) => {
                let rate = self.check_rate(host, config, &subject, &limits, 0).await.ok().flatten();
                metrics::counter!("events_ingest_rejected_total", "code" => error.code.as_str()).increment(1);
                return Err(Refused { error, rate, retry_after: None });
            }
        };
        let count = batch.events.len() as u64;

        // Rate limit (per key), then validation, then the daily quota (per namespace).
        let rate = self.check_rate(host, config, &subject, &limits, count).await?;
        let refuse = |error: ApiError, retry_after: Option<u64>| Refused { error, rate, retry_after };
        if let Some(RateHeaders(d)) = rate
            && !d.allowed
        {
            metrics::counter!("events_ingest_rejected_total", "code" => "RATE_LIMITED").increment(1);
            return Err(refuse(
                ApiError::new(ErrorCode::RateLimited, "rate limit exceeded; see the RateLimit and Retry-After headers")
                    .with_details(serde_json::json!({
                        "requestsPerMinute": d.request_limit, "eventsPerMinute": d.event_limit,
                        "retryAfterSeconds": d.retry_after_seconds,
                    })),
                None,
            ));
        }

        let now = Timestamp(chrono::Utc::now().timestamp_millis());
        let event_limits = EventLimits { max_event_bytes: config.ingest.max_event_bytes, ..EventLimits::default() };
        let validated =
            events_api::ingest::validate_events_with_origin(&batch.events, &ns, now, &event_limits, &mut rand::random)
                .map_err(|e| {
                    metrics::counter!("events_ingest_rejected_total", "code" => e.code.as_str()).increment(1);
                    refuse(e, None)
                })?;
        let (events, server_ids) = (validated.events, validated.server_ids);
        // Change-capture events must be readable changes: a malformed one refuses the batch.
        events_core::cdc::check_batch(&events).map_err(|e| {
            metrics::counter!("events_ingest_rejected_total", "code" => e.code.as_str()).increment(1);
            refuse(e, None)
        })?;
        // Schemas: strict failures refuse the batch; warn failures are reported and marked.
        let (events, warnings) = self.schemas.check(host, &ns, events).await.map_err(|e| {
            metrics::counter!("events_ingest_rejected_total", "code" => e.code.as_str()).increment(1);
            refuse(e, None)
        })?;

        let per_day = limits.events_per_day.unwrap_or_default();
        if per_day > 0 {
            let (quota, job) = self
                .limits
                .check_quota(host, &format!("quota:{ns}"), per_day, count)
                .await
                .map_err(|e| refuse(e, None))?;
            spawn_sync(host, &self.limits, job);
            if let QuotaDecision { allowed: false, used, limit, reset_seconds } = quota {
                metrics::counter!("events_ingest_rejected_total", "code" => "QUOTA_EXCEEDED").increment(1);
                return Err(refuse(
                    ApiError::new(
                        ErrorCode::QuotaExceeded,
                        format!("daily event quota exceeded: {used} of {limit} used"),
                    )
                    .with_details(serde_json::json!({"used": used, "limit": limit, "requested": count})),
                    Some(reset_seconds),
                ));
            }
        }

        let appended = self
            .store(host, config, &ns, events, server_ids, batch.batch_id)
            .await
            .map_err(|r| Refused { rate: r.rate.or(rate), ..r })?;
        let Appended { received, stored, deduplicated, .. } = appended;
        metrics::counter!("events_ingested_total").increment(stored as u64);
        metrics::counter!("events_ingest_batches_total", "outcome" => if deduplicated { "deduplicated" } else { "accepted" })
            .increment(1);
        metrics::histogram!("events_ingest_ack_seconds").record(started.elapsed().as_secs_f64());
        Ok((Accepted { received, deduplicated, namespace: ns, warnings }, rate))
    }

    /// Stores validated events of `ns`: picks the writer shard (a `batchId`
    /// sticks to the shard that first took it) and appends, fsynced.
    pub async fn store(
        &self,
        host: &NativeHost,
        config: &ServerConfig,
        ns: &str,
        events: Vec<Event>,
        server_ids: Vec<bool>,
        batch_id: Option<String>,
    ) -> Result<Appended, Refused> {
        let (shards, _) = self.namespace(host, ns).await?;
        // Choose the shard; a batchId sticks to the shard that first took it.
        let mut forced = None;
        if let Some(batch_id) = &batch_id {
            let (proposal, _) = self.pick_shard(ns, shards, None);
            let reserved = host
                .call_object::<Tenant>(ns, TenantRequest::ReserveBatch { batch_id: batch_id.clone(), shard: proposal })
                .await
                .map_err(Refused::from)?;
            if let TenantResponse::BatchShard(s) = reserved {
                forced = Some(s);
            }
        }
        let (shard, inflight) = self.pick_shard(ns, shards, forced);
        let depth = inflight.fetch_add(1, Ordering::Relaxed) + 1;
        if depth >= config.shards.backpressure_inflight && self.should_report(ns) {
            self.report_backpressure(host, ns, shard);
        }
        let result = host
            .call_object::<EventWriter>(&writer_name(ns, shard), WriterRequest::Append { events, batch_id, server_ids })
            .await;
        inflight.fetch_sub(1, Ordering::Relaxed);
        let appended = match result {
            Ok(WriterResponse::Appended(a)) => a,
            Ok(_) => return Err(ApiError::internal("writer answered out of protocol").into()),
            Err(e) => {
                if e.code == ErrorCode::Overloaded {
                    self.report_backpressure(host, ns, shard);
                }
                return Err(Refused { error: e, rate: None, retry_after: Some(1) });
            }
        };
        Ok(appended)
    }

    fn report_backpressure(&self, host: &NativeHost, ns: &str, shard: u32) {
        metrics::counter!("events_ingest_backpressure_total").increment(1);
        let host = host.clone();
        let owned = ns.to_string();
        tokio::spawn(async move {
            if let Err(e) = host.call_object::<ShardCoordinator>(&owned, ShardRequest::Backpressure { shard }).await {
                tracing::warn!(error = %e, "backpressure report failed");
            }
        });
        // Pick up a grown layout on the next request.
        self.invalidate_layout(ns);
    }

    fn invalidate_layout(&self, ns: &str) {
        if let Some(entry) = self.namespaces.lock().unwrap_or_else(|p| p.into_inner()).get_mut(ns) {
            entry.fetched = Instant::now() - LAYOUT_CACHE_TTL;
        }
    }
}
