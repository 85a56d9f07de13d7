//! The ingest pipeline behind `POST /e`, generic over the host.
//!
//! Order: decode the body (size, encoding, JSON or NDJSON) → rate limit →
//! validate every event → change-capture formats
//! ([`events_core::cdc::check_batch`]) → schemas → daily quota → reserve the
//! `batchId` (only when one is given) → append to a writer shard (durable
//! before the answer). Each step that refuses returns before anything is
//! written, so a refused batch leaves no trace.
//!
//! The hosts only authenticate, read the body, map the [`IngestOutcome`] to
//! their response type, and run its [`Background`] work without waiting.
//!
//! # Object calls per request
//! In the steady state one: the writer append. Namespace layouts and limits
//! are cached for [`LAYOUT_CACHE_TTL_MS`], "no schemas here" for
//! [`NO_SCHEMAS_CACHE_TTL_MS`], and rate limits and quotas are counted in
//! process ([`crate::limits`]). A namespace with schemas adds its registry's
//! validation call. A batch with a `batchId` goes to the shard its id names
//! ([`batch_shard`]), whose writer deduplicates a replay within the same
//! append call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use events_core::event::{EncodedEvents, EventLimits};
use events_core::name::validate_batch_id;
use events_core::{ApiError, ErrorCode, Event};
use events_objects::event_writer::{Appended, WriterRequest, WriterResponse, writer_name};
use events_objects::rate_limiter::{QuotaDecision, RateDecision};
use events_objects::schema_registry::{EventFailure, SchemaRequest, SchemaResponse, ValidationMode};
use events_objects::shard_coordinator::{ShardRequest, batch_shard};
use events_objects::tenant::{KeyRateLimit, NamespaceLimits, TenantRequest, TenantResponse};
use events_objects::{EventWriter, SchemaRegistry, ShardCoordinator, Tenant};
use events_runtime::Host;
use http::HeaderMap;
use serde_json::{Value, json};

use super::{DecodedBatch, decode_body, encode_events};
use crate::limits::{LocalLimits, SyncJob};

/// How long a namespace's shard layout and limits are cached (ms).
pub const LAYOUT_CACHE_TTL_MS: i64 = 2_000;
/// How long "this namespace has no schemas" is believed without asking (ms).
pub const NO_SCHEMAS_CACHE_TTL_MS: i64 = 2_000;
/// Most namespaces whose layout (or schema-lessness) is cached; the cache is
/// cleared when full.
pub const NAMESPACE_CACHE_CAPACITY: usize = 10_000;

/// Default of [`IngestSettings::backpressure_inflight`].
pub const DEFAULT_BACKPRESSURE_INFLIGHT: usize = 64;

/// The host's ingest settings.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Largest request body, before and after decompression (bytes).
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_events_per_batch: usize,
    /// Largest event (bytes of JSON).
    pub max_event_bytes: usize,
    /// Limits of namespaces that set none of their own.
    pub defaults: NamespaceLimits,
    /// Let requests through when the rate limiter cannot be reached.
    pub rate_limit_fail_open: bool,
    /// Requests in flight on one writer shard that count as backpressure.
    pub backpressure_inflight: usize,
}

/// One authenticated ingest request.
#[derive(Debug, Clone, Copy)]
pub struct IngestRequest<'a> {
    /// The caller's namespace.
    pub namespace: &'a str,
    /// Who the rate limits count (`key:<id>`, `ip:<addr>`, `admin`).
    pub limiter_subject: &'a str,
    /// The key's own per-minute limits, which replace the namespace's
    /// (publishable keys: [`crate::auth::Caller::key_rate_limit`]).
    pub key_rate_limit: Option<KeyRateLimit>,
    /// The request headers (`Content-Type`, `Content-Encoding`, `Idempotency-Key`).
    pub headers: &'a HeaderMap,
    /// The body as received.
    pub body: &'a [u8],
}

/// An accepted batch.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Events in the batch.
    pub received: usize,
    /// Events stored (not duplicates).
    pub stored: usize,
    /// A replay of an accepted `batchId`.
    pub deduplicated: bool,
    /// The namespace written to.
    pub namespace: String,
    /// The writer shard that took it.
    pub shard: u32,
    /// Failures of `warn`-mode schemas (the events were stored, marked).
    pub warnings: Vec<Value>,
}

impl Accepted {
    /// The JSON answer of `POST /e`.
    pub fn body(&self) -> Value {
        let mut body = json!({"ok": true, "received": self.received, "namespace": self.namespace});
        if self.deduplicated {
            body["deduplicated"] = json!(true);
        }
        if !self.warnings.is_empty() {
            body["warnings"] = json!(self.warnings);
        }
        body
    }
}

/// What differs between hosts on the ingest path, beyond [`Host`].
pub trait IngestHooks {
    /// Called with a writer's name before the first append to it that this
    /// process makes (a host that lists its writers records it here, before
    /// the writer can hold anything).
    fn before_append(&self, writer: &str) -> impl Future<Output = Result<(), ApiError>>;
}

/// A host that needs no hooks (the native host lists writers from storage).
impl IngestHooks for () {
    async fn before_append(&self, _writer: &str) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Work a request leaves for the host to run after answering, never awaited
/// by the request ([`Background::run`]).
#[derive(Debug)]
pub enum Background {
    /// Merge in-process limit counts into a limiter object.
    MergeLimits(SyncJob),
    /// Tell the namespace's coordinator that a shard is under pressure.
    ReportBackpressure {
        /// The namespace.
        namespace: String,
        /// The shard.
        shard: u32,
    },
}

impl Background {
    /// Runs the work.
    pub async fn run<H: Host>(self, host: &H, ingest: &Ingest) -> Result<(), ApiError> {
        match self {
            Background::MergeLimits(job) => ingest.limits.sync(host, job).await,
            Background::ReportBackpressure { namespace, shard } => {
                host.call::<ShardCoordinator>(&namespace, ShardRequest::Backpressure { shard }).await.map(|_| ())
            }
        }
    }
}

/// What the pipeline made of a request.
#[derive(Debug)]
pub struct IngestOutcome {
    /// The batch, accepted or refused.
    pub result: Result<Accepted, ApiError>,
    /// The rate-limit state to report (`RateLimit` headers), once known.
    pub rate: Option<RateDecision>,
    /// `Retry-After` (seconds) for refusals other than rate limiting.
    pub retry_after: Option<u64>,
    /// Work for the host to run in the background.
    pub background: Vec<Background>,
}

/// What a request learns and leaves on its way, whether it is accepted or not.
#[derive(Default)]
struct SideEffects {
    rate: Option<RateDecision>,
    background: Vec<Background>,
}

/// A refusal on the way, with its `Retry-After`.
struct Refusal {
    error: ApiError,
    retry_after: Option<u64>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal { error, retry_after: None }
    }
}

/// What the pipeline needs of a namespace's layout and limits.
struct CachedLayout {
    shards: u32,
    batch_shards: u32,
    limits: NamespaceLimits,
}

struct NamespaceState {
    shards: u32,
    batch_shards: u32,
    limits: NamespaceLimits,
    fetched_at: i64,
    inflight: Vec<Arc<AtomicUsize>>,
    last_backpressure: Option<i64>,
}

/// The pipeline and the state requests share: cached layouts and limits,
/// in-flight counts per shard, the schema-less namespaces, the limit counts.
/// Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Ingest {
    namespaces: Arc<Mutex<HashMap<String, NamespaceState>>>,
    no_schemas: Arc<Mutex<HashMap<String, i64>>>,
    /// Rate-limit and quota counts of this process.
    pub limits: LocalLimits,
}

fn rejected(error: &ApiError) {
    metrics::counter!("events_ingest_rejected_total", "code" => error.code.as_str()).increment(1);
}

impl Ingest {
    fn namespaces(&self) -> std::sync::MutexGuard<'_, HashMap<String, NamespaceState>> {
        self.namespaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the pipeline for one authenticated request.
    pub async fn run<H: Host>(
        &self,
        host: &H,
        hooks: &impl IngestHooks,
        settings: &IngestSettings,
        req: IngestRequest<'_>,
    ) -> IngestOutcome {
        let mut side = SideEffects::default();
        let (result, retry_after) = match self.accept(host, hooks, settings, req, &mut side).await {
            Ok(accepted) => {
                metrics::counter!("events_ingested_total").increment(accepted.stored as u64);
                let label = if accepted.deduplicated { "deduplicated" } else { "accepted" };
                metrics::counter!("events_ingest_batches_total", "outcome" => label).increment(1);
                (Ok(accepted), None)
            }
            Err(Refusal { error, retry_after }) => {
                rejected(&error);
                (Err(error), retry_after)
            }
        };
        IngestOutcome { result, rate: side.rate, retry_after, background: side.background }
    }

    async fn accept<H: Host>(
        &self,
        host: &H,
        hooks: &impl IngestHooks,
        settings: &IngestSettings,
        req: IngestRequest<'_>,
        side: &mut SideEffects,
    ) -> Result<Accepted, Refusal> {
        let ns = req.namespace;
        let limits = self.layout(host, ns).await?.limits;
        let mut limits = limits.or_defaults(settings.defaults);
        if let Some(own) = req.key_rate_limit {
            let own = own.effective();
            limits.requests_per_minute = own.requests_per_minute;
            limits.events_per_minute = own.events_per_minute;
        }
        // A request whose body cannot be used still counts as a request (with no events).
        let batch = match decode_batch(req, settings) {
            Ok(batch) => batch,
            Err(error) => {
                side.rate = self.check_rate(host, settings, req.limiter_subject, &limits, 0, side).await.ok().flatten();
                return Err(error.into());
            }
        };
        let count = batch.events.len() as u64;

        // Rate limit (per key), then validation, then the daily quota (per namespace).
        side.rate = self.check_rate(host, settings, req.limiter_subject, &limits, count, side).await?;
        if let Some(d) = side.rate.filter(|d| !d.allowed) {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "rate limit exceeded; see the RateLimit and Retry-After headers",
            )
            .with_details(json!({
                "requestsPerMinute": d.request_limit, "eventsPerMinute": d.event_limit,
                "retryAfterSeconds": d.retry_after_seconds,
            }))
            .into());
        }
        let event_limits = EventLimits { max_event_bytes: settings.max_event_bytes, ..EventLimits::default() };
        let events = encode_events(&batch.events, ns, host.now(), &event_limits, &mut || host.random())?;
        let (events, warnings) = self.check_whole_events(host, ns, events).await?;

        // The day's events are counted with or without a quota (0 = unlimited),
        // so that a quota set during the day applies to what was already sent.
        let per_day = limits.events_per_day.unwrap_or_default();
        let (quota, job) = self.limits.check_quota(host, &format!("quota:{ns}"), per_day, count).await?;
        side.background.extend(job.map(Background::MergeLimits));
        if let QuotaDecision { allowed: false, used, limit, reset_seconds } = quota {
            return Err(Refusal {
                error: ApiError::new(
                    ErrorCode::QuotaExceeded,
                    format!("daily event quota exceeded: {used} of {limit} used"),
                )
                .with_details(json!({"used": used, "limit": limit, "requested": count})),
                retry_after: Some(reset_seconds),
            });
        }

        let (appended, shard) =
            self.append(host, hooks, settings, ns, events, batch.batch_id, &mut side.background).await?;
        Ok(Accepted {
            received: appended.received,
            stored: appended.stored,
            deduplicated: appended.deduplicated,
            namespace: ns.to_string(),
            shard,
            warnings,
        })
    }

    /// Shard layout and limits of `ns`, from cache or from its objects.
    async fn layout<H: Host>(&self, host: &H, ns: &str) -> Result<CachedLayout, ApiError> {
        let now = host.now().as_millis();
        if let Some(s) = self.namespaces().get(ns)
            && now - s.fetched_at < LAYOUT_CACHE_TTL_MS
        {
            return Ok(CachedLayout { shards: s.shards, batch_shards: s.batch_shards, limits: s.limits });
        }
        let layout = host.call::<ShardCoordinator>(ns, ShardRequest::Layout).await?;
        let (shards, batch_shards) = (layout.shards.max(1), layout.batch_shards.max(1));
        let limits = match host.call::<Tenant>(ns, TenantRequest::GetLimits).await? {
            TenantResponse::Limits(l) => l,
            _ => NamespaceLimits::default(),
        };
        let mut map = self.namespaces();
        if map.len() >= NAMESPACE_CACHE_CAPACITY {
            map.clear();
        }
        let entry = map.entry(ns.to_string()).or_insert_with(|| NamespaceState {
            shards,
            batch_shards,
            limits,
            fetched_at: now,
            inflight: Vec::new(),
            last_backpressure: None,
        });
        entry.shards = shards;
        entry.batch_shards = batch_shards;
        entry.limits = limits;
        entry.fetched_at = now;
        Ok(CachedLayout { shards, batch_shards, limits })
    }

    /// Forgets the cached layout and limits of `ns` (after an admin change).
    pub fn invalidate(&self, ns: &str) {
        self.namespaces().remove(ns);
    }

    /// Forgets that `ns` had no schemas (after a registration).
    pub fn invalidate_schemas(&self, ns: &str) {
        self.no_schemas.lock().unwrap_or_else(|p| p.into_inner()).remove(ns);
    }

    /// Counts the request at the caller's rate limiter; `None` when that
    /// failed and the settings let traffic through (fail-open).
    async fn check_rate<H: Host>(
        &self,
        host: &H,
        settings: &IngestSettings,
        subject: &str,
        limits: &NamespaceLimits,
        events: u64,
        side: &mut SideEffects,
    ) -> Result<Option<RateDecision>, ApiError> {
        let rpm = limits.requests_per_minute.unwrap_or_default();
        let epm = limits.events_per_minute.unwrap_or_default();
        match self.limits.check_rate(host, subject, rpm, epm, events).await {
            Ok((decision, job)) => {
                side.background.extend(job.map(Background::MergeLimits));
                Ok(Some(decision))
            }
            Err(_) if settings.rate_limit_fail_open => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The checks that need events decoded whole, run only when they may
    /// apply: change-capture events must be readable changes (a malformed
    /// one refuses the batch), and a namespace with schemas validates them.
    async fn check_whole_events<H: Host>(
        &self,
        host: &H,
        ns: &str,
        events: EncodedEvents,
    ) -> Result<(EncodedEvents, Vec<Value>), ApiError> {
        let changes = events.heads().iter().any(|h| h.maybe_change);
        let schemas = !self.known_without_schemas(ns, host.now().as_millis());
        if !changes && !schemas {
            return Ok((events, Vec::new()));
        }
        let decoded =
            events.decode().map_err(|e| ApiError::internal(format!("an encoded event does not decode: {e}")))?;
        if changes {
            events_core::cdc::check_batch(&decoded)?;
        }
        if !schemas {
            return Ok((events, Vec::new()));
        }
        let (checked, warnings) = self.check_schemas(host, ns, decoded).await?;
        // Warn-mode failures mark their events: store what the registry answered.
        let server_ids: Vec<bool> = events.heads().iter().map(|h| h.client_id.is_none()).collect();
        Ok((EncodedEvents::from_events(ns, &checked, &server_ids), warnings))
    }

    /// Whether `ns` was seen without schemas recently enough to believe it.
    fn known_without_schemas(&self, ns: &str, now: i64) -> bool {
        let known = self.no_schemas.lock().unwrap_or_else(|p| p.into_inner());
        known.get(ns).is_some_and(|at| now - at < NO_SCHEMAS_CACHE_TTL_MS)
    }

    /// Schemas: strict failures refuse the batch; warn failures come back
    /// as warnings, with the events marked.
    async fn check_schemas<H: Host>(
        &self,
        host: &H,
        ns: &str,
        events: Vec<Event>,
    ) -> Result<(Vec<Event>, Vec<Value>), ApiError> {
        let now = host.now().as_millis();
        let answer = host.call::<SchemaRegistry>(ns, SchemaRequest::Validate { events }).await?;
        let SchemaResponse::Validated { events, has_schemas, failures } = answer else {
            return Err(ApiError::internal("schema registry answered out of protocol"));
        };
        if !has_schemas {
            let mut known = self.no_schemas.lock().unwrap_or_else(|p| p.into_inner());
            if known.len() >= NAMESPACE_CACHE_CAPACITY {
                known.clear();
            }
            known.insert(ns.to_string(), now);
        }
        let (strict, warn): (Vec<EventFailure>, Vec<EventFailure>) =
            failures.into_iter().partition(|f| f.mode == ValidationMode::Strict);
        if !strict.is_empty() {
            let indices: Vec<usize> = strict.iter().map(|f| f.index).collect();
            return Err(ApiError::new(
                ErrorCode::SchemaValidationError,
                format!("{} event(s) failed schema validation; the batch was not stored", strict.len()),
            )
            .with_details(json!({"indices": indices, "errors": crate::schemas::failure_entries(&strict)})));
        }
        Ok((events, crate::schemas::failure_entries(&warn)))
    }

    /// Stores validated events of `ns` (for callers that made the events
    /// themselves, such as inbound webhooks): the append step alone.
    #[allow(clippy::too_many_arguments)]
    pub async fn store<H: Host>(
        &self,
        host: &H,
        hooks: &impl IngestHooks,
        settings: &IngestSettings,
        ns: &str,
        events: Vec<Event>,
        server_ids: Vec<bool>,
        batch_id: Option<String>,
    ) -> Result<(Appended, u32, Vec<Background>), ApiError> {
        let mut background = Vec::new();
        let events = EncodedEvents::from_events(ns, &events, &server_ids);
        let (appended, shard) =
            self.append(host, hooks, settings, ns, events, batch_id, &mut background).await.map_err(|r| r.error)?;
        Ok((appended, shard, background))
    }

    /// Picks the writer shard (the least loaded, or for a `batchId` the
    /// shard its id names) and appends; the answer means the events are durable.
    #[allow(clippy::too_many_arguments)]
    async fn append<H: Host>(
        &self,
        host: &H,
        hooks: &impl IngestHooks,
        settings: &IngestSettings,
        ns: &str,
        events: EncodedEvents,
        batch_id: Option<String>,
        background: &mut Vec<Background>,
    ) -> Result<(Appended, u32), Refusal> {
        let CachedLayout { shards, batch_shards, .. } = self.layout(host, ns).await?;
        let forced = batch_id.as_deref().map(|id| batch_shard(id, batch_shards));
        let (shard, inflight) = self.pick_shard(ns, shards, forced);
        let writer = writer_name(ns, shard);
        hooks.before_append(&writer).await?;
        let depth = inflight.fetch_add(1, Ordering::Relaxed) + 1;
        if depth >= settings.backpressure_inflight && self.should_report(ns, host.now().as_millis()) {
            background.push(self.backpressure(ns, shard));
        }
        let result = host.call::<EventWriter>(&writer, WriterRequest::Append { events, batch_id }).await;
        inflight.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(WriterResponse::Appended(appended)) => Ok((appended, shard)),
            Ok(_) => Err(ApiError::internal("writer answered out of protocol").into()),
            Err(error) => {
                if error.code == ErrorCode::Overloaded {
                    background.push(self.backpressure(ns, shard));
                }
                Err(Refusal { error, retry_after: Some(1) })
            }
        }
    }

    /// The least loaded shard of `ns` (or `forced`) and its in-flight counter.
    fn pick_shard(&self, ns: &str, shards: u32, forced: Option<u32>) -> (u32, Arc<AtomicUsize>) {
        let mut map = self.namespaces();
        let entry = map.entry(ns.to_string()).or_insert_with(|| NamespaceState {
            shards,
            batch_shards: 1,
            limits: NamespaceLimits::default(),
            fetched_at: i64::MIN / 2,
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
    fn should_report(&self, ns: &str, now: i64) -> bool {
        let mut map = self.namespaces();
        let Some(entry) = map.get_mut(ns) else { return false };
        if entry.last_backpressure.is_some_and(|t| now - t < 1_000) {
            return false;
        }
        entry.last_backpressure = Some(now);
        true
    }

    /// A backpressure report; the next request re-reads the (maybe grown) layout.
    fn backpressure(&self, ns: &str, shard: u32) -> Background {
        metrics::counter!("events_ingest_backpressure_total").increment(1);
        if let Some(entry) = self.namespaces().get_mut(ns) {
            entry.fetched_at = i64::MIN / 2;
        }
        Background::ReportBackpressure { namespace: ns.to_string(), shard }
    }
}

/// Decodes the body and checks the batch envelope (size, `batchId`).
fn decode_batch(req: IngestRequest<'_>, settings: &IngestSettings) -> Result<DecodedBatch, ApiError> {
    let batch = decode_body(req.headers, req.body, settings.max_body_bytes)?;
    if batch.events.len() > settings.max_events_per_batch {
        return Err(ApiError::new(
            ErrorCode::InvalidBatch,
            format!("a batch holds at most {} events, not {}", settings.max_events_per_batch, batch.events.len()),
        ));
    }
    if let Some(id) = &batch.batch_id {
        validate_batch_id(id)?;
    }
    Ok(batch)
}

/// `RateLimit-Policy` and `RateLimit` header values (IETF draft), and
/// `Retry-After` when the request was refused.
pub fn rate_headers(d: &RateDecision) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("ratelimit-policy", format!("\"requests\";q={};w=60, \"events\";q={};w=60", d.request_limit, d.event_limit)),
        (
            "ratelimit",
            format!(
                "\"requests\";r={};t={}, \"events\";r={};t={}",
                d.requests_remaining, d.reset_seconds, d.events_remaining, d.reset_seconds
            ),
        ),
    ];
    if !d.allowed {
        headers.push(("retry-after", d.retry_after_seconds.to_string()));
    }
    headers
}
