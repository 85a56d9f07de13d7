//! [`Subscriptions`]: pattern routing and at-least-once signed webhook delivery.
//!
//! One object per namespace, named `<ns>`. It holds the namespace's
//! subscriptions, a log of the events that matched at least one of them, one
//! delivery row per (subscription, event), every delivery attempt, the dead
//! letters and the recovery jobs.
//!
//! # Routing
//! Every writer shard of the namespace hands its accepted events to this
//! object through the fan-out outbox (consumer `"subscriptions"`, see
//! [`crate::fanout`]), at least once and in the shard's order. [`SubsRequest::Route`]
//! matches each event against every pattern (`**`, `*.created`, ... — one
//! pass per event with [`Pattern`]) and enqueues one delivery per matching
//! subscription with `INSERT ... ON CONFLICT (sub_id, event_id) DO NOTHING`,
//! so a redelivery from upstream never doubles a delivery. Paused
//! subscriptions keep enqueueing (delivered on resume); disabled ones do not.
//!
//! # Delivery
//! The alarm picks due deliveries (at most [`MAX_DELIVERIES_PER_RUN`]), and
//! sends them concurrently (at most [`MAX_CONCURRENT_DELIVERIES`] in flight)
//! through the host's outbound HTTP client, which enforces the outbound
//! policy (private targets refused unless allowed). Each request carries the
//! Standard Webhooks headers: `webhook-id` (the delivery id, stable across
//! retries and replays; `batch_<ulid>` for a batch), `webhook-timestamp`
//! (unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">` keyed by the base64-decoded part of the
//! `whsec_` secret; during a rotation overlap one signature per live secret,
//! space separated). The state change of a run commits after its requests
//! finish; a crash before that leaves the deliveries pending, so they are
//! sent again (at least once).
//!
//! - A 2xx answer is a success. Anything else, a timeout or a transport
//!   error is a failed attempt, logged with status, duration, a response
//!   excerpt ([`RESPONSE_EXCERPT_BYTES`]) and the error.
//! - Retries follow the subscription's schedule (default
//!   [`DEFAULT_RETRY_SCHEDULE_MS`], Svix's: immediately, 5 s, 5 min, 30 min,
//!   2 h, 5 h, 10 h, 10 h), each delay with ±[`RETRY_JITTER_PERCENT`] % jitter.
//!   On 429 and 503 a `Retry-After` (seconds) longer than the scheduled delay
//!   is honoured, capped at [`MAX_RETRY_AFTER_MS`].
//! - A receiver stops the retries of a delivery by answering non-2xx with the
//!   header [`STOP_RETRIES_HEADER`]` : true`; the delivery goes to the dead
//!   letters at once.
//! - After the last attempt the delivery is a dead letter. Dead letters can
//!   be replayed, one or all; a replay sends them again with a fresh schedule.
//! - A subscription whose deliveries have failed without a single success
//!   for `disableAfterMs` (default [`DEFAULT_DISABLE_AFTER_MS`], 5 days) is
//!   disabled. The operational event `events.subscription.disabled` is
//!   **recorded** in this object (listed with the subscription's stats and
//!   `GET /subscriptions/{id}`), not ingested: ingesting would make this
//!   object call a writer that may be waiting on it (writer → router is the
//!   fan-out edge), which the runtime's acyclic-call rule forbids.
//!
//! # Batching and ordering (per subscription)
//! - `batch {maxSize, windowMs}`: a new delivery becomes due `windowMs` after
//!   it is enqueued, or at once when `maxSize` are waiting; due deliveries of
//!   the subscription go out in requests of at most `maxSize` events, body
//!   `{"events": [...]}`. A 2xx answer may carry `{"results": [{"id": <event
//!   id>, "ok": bool}]}`: the items marked `ok: false` are failed attempts and
//!   are retried on their own schedule; the others are delivered.
//! - `orderingKey` (a top-level field of the event): deliveries with the same
//!   key go out one at a time in the order this object received them; a key
//!   whose head delivery is failing does not hold back other keys. A dead
//!   letter stops blocking its key. Events of one writer shard arrive in
//!   ingest order; events of different shards are ordered by arrival.
//!
//! # Recovery
//! [`SubsRequest::Recover`] starts a job that re-enqueues every logged event
//! with `ts >= since` that matches the subscription (already delivered ones
//! included). The alarm advances it [`RECOVER_CHUNK`] events at a time; its
//! progress is readable. The event log keeps events for
//! [`EVENT_LOG_RETENTION_MS`]; it holds only events that matched some
//! subscription when they arrived.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use events_core::pattern::Pattern;
use events_core::{ApiError, ErrorCode, Event, Timestamp};
use events_runtime::context::ObjectStorage;
use events_runtime::{
    DurableObject, Host, HttpClient, HttpRequest, HttpResponse, Migration, ObjectContext, ObjectResult, Row, SqlStorage,
};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// Svix's retry schedule: the delay before each attempt, in ms (the first is immediate).
pub const DEFAULT_RETRY_SCHEDULE_MS: &[i64] =
    &[0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];
/// Most entries of a retry schedule (so most attempts per delivery).
pub const MAX_RETRY_SCHEDULE_LEN: usize = 20;
/// Longest single delay of a retry schedule (1 day).
pub const MAX_RETRY_DELAY_MS: i64 = 24 * 3_600_000;
/// Jitter applied to every retry delay, ± this percentage.
pub const RETRY_JITTER_PERCENT: i64 = 10;
/// Longest `Retry-After` honoured (1 hour).
pub const MAX_RETRY_AFTER_MS: i64 = 3_600_000;
/// Default request timeout of a delivery.
pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;
/// Longest request timeout a subscription may set.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Shortest request timeout a subscription may set.
pub const MIN_TIMEOUT_MS: u64 = 100;
/// Default: disable a subscription that fails continuously for this long (5 days).
pub const DEFAULT_DISABLE_AFTER_MS: i64 = 5 * 24 * 3_600_000;
/// Most deliveries (single or inside batches) sent by one alarm run.
pub const MAX_DELIVERIES_PER_RUN: usize = 512;
/// Most requests in flight at once from one alarm run.
pub const MAX_CONCURRENT_DELIVERIES: usize = 64;
/// Largest batch a subscription may ask for.
pub const MAX_BATCH_SIZE: usize = 1_000;
/// Longest batch window (1 minute).
pub const MAX_BATCH_WINDOW_MS: i64 = 60_000;
/// Bytes of a receiver's answer kept with an attempt.
pub const RESPONSE_EXCERPT_BYTES: usize = 1_024;
/// Most subscriptions per namespace.
pub const MAX_SUBSCRIPTIONS_PER_NAMESPACE: usize = 1_000;
/// Longest target URL.
pub const MAX_URL_LEN: usize = 2_048;
/// Longest ordering-key field name.
pub const MAX_ORDERING_KEY_LEN: usize = 128;
/// Most rows a listing returns.
pub const MAX_LIST_LIMIT: usize = 1_000;
/// Events of the log re-examined per alarm run by a recovery job.
pub const RECOVER_CHUNK: i64 = 5_000;
/// How long routed events, finished deliveries and attempts are kept (7 days).
pub const EVENT_LOG_RETENTION_MS: i64 = 7 * 24 * 3_600_000;
/// Rows pruned per alarm run.
const PRUNE_BATCH: i64 = 10_000;
/// Longest secret-rotation overlap (7 days).
pub const MAX_ROTATION_OVERLAP_MS: i64 = 7 * 24 * 3_600_000;
/// Default secret-rotation overlap (24 hours).
pub const DEFAULT_ROTATION_OVERLAP_MS: i64 = 24 * 3_600_000;
/// Delivered latencies sampled for the percentiles of the stats.
pub const LATENCY_SAMPLE: i64 = 10_000;
/// Response header with which a receiver stops the retries of a delivery.
pub const STOP_RETRIES_HEADER: &str = "webhook-stop-retries";
/// Prefix of webhook secrets.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes of a generated secret.
pub const SECRET_BYTES: usize = 32;
/// Accepted decoded secret sizes.
pub const SECRET_BYTES_RANGE: std::ops::RangeInclusive<usize> = 16..=64;

/// Batching of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchSpec {
    /// Most events per request.
    pub max_size: usize,
    /// Longest wait for a batch to fill (ms).
    pub window_ms: i64,
}

/// What a client asks for when it creates a subscription.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// Event-type pattern.
    pub pattern: String,
    /// Target URL.
    pub url: String,
    /// `whsec_...`; generated when absent.
    pub secret: Option<String>,
    /// Delay before each attempt, ms; the first is usually 0.
    pub retry_schedule: Option<Vec<i64>>,
    /// Request timeout (ms).
    pub timeout_ms: Option<u64>,
    /// Batching.
    pub batch: Option<BatchSpec>,
    /// Field whose value orders deliveries.
    pub ordering_key: Option<String>,
    /// Disable after failing continuously this long (ms).
    pub disable_after_ms: Option<i64>,
    /// Free label.
    pub description: Option<String>,
    /// Worker id (the `/subscriptions/subscribe` shape).
    pub worker_id: Option<String>,
    /// RPC method (the `/subscriptions/subscribe` shape).
    pub rpc_method: Option<String>,
}

/// Changes to a subscription; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionPatch {
    /// New pattern (applies to events routed from now on).
    pub pattern: Option<String>,
    /// New URL.
    pub url: Option<String>,
    /// New schedule.
    pub retry_schedule: Option<Vec<i64>>,
    /// New timeout.
    pub timeout_ms: Option<u64>,
    /// New batching.
    pub batch: Option<BatchSpec>,
    /// New ordering key.
    pub ordering_key: Option<String>,
    /// New disable span.
    pub disable_after_ms: Option<i64>,
    /// New label.
    pub description: Option<String>,
}

/// Settings stored with a subscription (JSON column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Settings {
    retry_schedule: Vec<i64>,
    timeout_ms: u64,
    batch: Option<BatchSpec>,
    ordering_key: Option<String>,
    disable_after_ms: i64,
    description: Option<String>,
    worker_id: Option<String>,
    rpc_method: Option<String>,
}

/// A subscription as the API shows it (never its secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionInfo {
    /// `sub_<ulid>`.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Pattern.
    pub pattern: String,
    /// Target.
    pub url: String,
    /// `active`, `paused` or `disabled`.
    pub status: String,
    /// Delay before each attempt (ms).
    pub retry_schedule: Vec<i64>,
    /// Request timeout (ms).
    pub timeout_ms: u64,
    /// Batching.
    pub batch: Option<BatchSpec>,
    /// Ordering-key field.
    pub ordering_key: Option<String>,
    /// Disable span (ms).
    pub disable_after_ms: i64,
    /// Label.
    pub description: Option<String>,
    /// Worker id, for `/subscriptions/subscribe` subscriptions.
    pub worker_id: Option<String>,
    /// RPC method, for `/subscriptions/subscribe` subscriptions.
    pub rpc_method: Option<String>,
    /// Creation time (ISO-8601).
    pub created_at: String,
    /// Last change (ISO-8601).
    pub updated_at: String,
    /// Start of the current run of failures, if failing.
    pub failing_since: Option<String>,
    /// When it was disabled, if it is.
    pub disabled_at: Option<String>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptInfo {
    /// Attempt id (grows).
    pub id: i64,
    /// The delivery (message) id.
    pub delivery_id: String,
    /// The event.
    pub event_id: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// When it was sent (ISO-8601).
    pub at: String,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Time until the answer or failure (ms).
    pub duration_ms: i64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Start of the answer body.
    pub response: Option<String>,
    /// Transport error, or why an answer counts as a failure.
    pub error: Option<String>,
    /// Stable code of a transport error (`TIMEOUT`, `TARGET_NOT_ALLOWED`, ...).
    pub error_code: Option<String>,
    /// The batch request id, if sent in a batch.
    pub batch_id: Option<String>,
}

/// One delivery (one event for one subscription).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryInfo {
    /// `msg_<ulid>`: the `webhook-id`; a dead letter's id.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts so far (since the last replay).
    pub attempts: i64,
    /// Next attempt, if pending.
    pub next_attempt_at: Option<String>,
    /// Enqueue time.
    pub created_at: String,
    /// Success time.
    pub delivered_at: Option<String>,
    /// Dead-letter time.
    pub dead_at: Option<String>,
    /// Why it is a dead letter.
    pub dead_reason: Option<String>,
    /// Last failure.
    pub last_error: Option<String>,
}

/// A recovery job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    /// `job_<ulid>`.
    pub id: String,
    /// Subscription.
    pub subscription_id: String,
    /// Events with `ts >=` this are re-sent (ISO-8601).
    pub since: String,
    /// `running` or `done`.
    pub status: String,
    /// Events of the log to examine.
    pub total: i64,
    /// Examined so far.
    pub processed: i64,
    /// Deliveries re-enqueued so far.
    pub requeued: i64,
    /// Start time.
    pub created_at: String,
    /// End time.
    pub finished_at: Option<String>,
}

/// A recorded operational event (`events.subscription.disabled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsEvent {
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Time (ISO-8601).
    pub at: String,
    /// What happened.
    pub message: String,
}

/// Delivery statistics of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStats {
    /// Deliveries that succeeded.
    pub delivered: i64,
    /// Failed attempts.
    pub failed_attempts: i64,
    /// All attempts.
    pub attempts: i64,
    /// Deliveries waiting (first attempt or retry).
    pub pending: i64,
    /// Dead letters.
    pub dead: i64,
    /// Successful attempts / attempts (1 when none).
    pub success_rate: f64,
    /// Enqueue → success latency percentiles (ms), over the last deliveries.
    pub latency_ms: BTreeMap<String, i64>,
    /// Operational events recorded for this subscription.
    pub ops_events: Vec<OpsEvent>,
}

/// Requests to [`Subscriptions`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SubsRequest {
    /// Events from a writer's outbox (fan-out).
    Route {
        /// The events, in the writer's order.
        events: Vec<Event>,
    },
    /// Creates a subscription.
    Create(SubscriptionSpec),
    /// Lists subscriptions by id.
    List {
        /// Only this exact pattern.
        pattern: Option<String>,
        /// Only this status.
        status: Option<String>,
        /// Ids after this one.
        after: Option<String>,
        /// Most returned.
        limit: usize,
    },
    /// One subscription.
    Get {
        /// Its id.
        id: String,
    },
    /// Changes a subscription.
    Update {
        /// Its id.
        id: String,
        /// The changes.
        patch: SubscriptionPatch,
    },
    /// Deletes a subscription and its deliveries.
    Delete {
        /// Its id.
        id: String,
    },
    /// Pauses (`active = false`) or resumes (also re-enables a disabled one).
    SetActive {
        /// Its id.
        id: String,
        /// Resume or pause.
        active: bool,
    },
    /// New secret; the old one keeps signing for `overlap_ms`.
    RotateSecret {
        /// Its id.
        id: String,
        /// The new secret, or generate one.
        secret: Option<String>,
        /// Overlap of the old secret (ms).
        overlap_ms: Option<i64>,
    },
    /// Attempts, newest first.
    Attempts {
        /// Subscription.
        id: String,
        /// Only this event's.
        event_id: Option<String>,
        /// Attempt ids below this.
        before: Option<i64>,
        /// Most returned.
        limit: usize,
    },
    /// Deliveries by status, oldest first.
    Deliveries {
        /// Subscription.
        id: String,
        /// `pending`, `delivered`, `dead` or all.
        status: Option<String>,
        /// Delivery ids after this.
        after: Option<String>,
        /// Most returned.
        limit: usize,
    },
    /// Sends dead letters again: one (`dl_id`) or all.
    Replay {
        /// Subscription.
        id: String,
        /// The dead letter, or all.
        dl_id: Option<String>,
    },
    /// Starts a recovery job.
    Recover {
        /// Subscription.
        id: String,
        /// Re-send events with `ts >=` this.
        since: Timestamp,
    },
    /// A recovery job's progress.
    Job {
        /// Subscription.
        id: String,
        /// Job.
        job_id: String,
    },
    /// Statistics.
    Stats {
        /// Subscription.
        id: String,
    },
}

/// Answers of [`Subscriptions`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SubsResponse {
    /// Route result: deliveries enqueued.
    Routed {
        /// New deliveries.
        enqueued: usize,
    },
    /// A subscription, with its secret when just created or rotated.
    Subscription {
        /// The subscription.
        info: Box<SubscriptionInfo>,
        /// The secret, shown once.
        secret: Option<String>,
    },
    /// A listing.
    List {
        /// Subscriptions.
        items: Vec<SubscriptionInfo>,
        /// Cursor of the next page.
        next: Option<String>,
    },
    /// Attempts.
    Attempts {
        /// Attempts.
        items: Vec<AttemptInfo>,
        /// Cursor of the next page.
        next: Option<i64>,
    },
    /// Deliveries.
    Deliveries {
        /// Deliveries.
        items: Vec<DeliveryInfo>,
        /// Cursor of the next page.
        next: Option<String>,
    },
    /// Replay result.
    Replayed {
        /// Deliveries made pending again.
        count: usize,
    },
    /// A job.
    Job(JobInfo),
    /// Statistics.
    Stats(SubscriptionStats),
    /// Done.
    Ok,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "subscriptions, event log, deliveries, attempts, jobs",
    sql: "CREATE TABLE subscriptions (
              id TEXT PRIMARY KEY,
              pattern TEXT NOT NULL,
              url TEXT NOT NULL,
              status TEXT NOT NULL,
              settings TEXT NOT NULL,
              created_at INTEGER NOT NULL,
              updated_at INTEGER NOT NULL,
              failing_since INTEGER,
              disabled_at INTEGER,
              disabled_reason TEXT
          );
          CREATE TABLE secrets (
              sub_id TEXT NOT NULL,
              secret TEXT NOT NULL,
              created_at INTEGER NOT NULL,
              expires_at INTEGER,
              PRIMARY KEY (sub_id, secret)
          );
          CREATE TABLE events (
              seq INTEGER PRIMARY KEY AUTOINCREMENT,
              id TEXT NOT NULL UNIQUE,
              ts INTEGER NOT NULL,
              type TEXT NOT NULL,
              body TEXT NOT NULL,
              received_at INTEGER NOT NULL
          );
          CREATE INDEX events_received ON events (received_at);
          CREATE TABLE deliveries (
              id TEXT PRIMARY KEY,
              sub_id TEXT NOT NULL,
              event_id TEXT NOT NULL,
              seq INTEGER NOT NULL,
              order_key TEXT,
              status TEXT NOT NULL,
              attempts INTEGER NOT NULL DEFAULT 0,
              next_at INTEGER NOT NULL,
              created_at INTEGER NOT NULL,
              delivered_at INTEGER,
              latency_ms INTEGER,
              dead_at INTEGER,
              dead_reason TEXT,
              last_error TEXT,
              UNIQUE (sub_id, event_id)
          );
          CREATE INDEX deliveries_due ON deliveries (status, next_at);
          CREATE INDEX deliveries_sub ON deliveries (sub_id, status, id);
          CREATE INDEX deliveries_key ON deliveries (sub_id, order_key, status, seq);
          CREATE INDEX deliveries_done ON deliveries (status, delivered_at);
          CREATE TABLE attempts (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              delivery_id TEXT NOT NULL,
              sub_id TEXT NOT NULL,
              event_id TEXT NOT NULL,
              attempt INTEGER NOT NULL,
              at INTEGER NOT NULL,
              status INTEGER,
              duration_ms INTEGER NOT NULL,
              ok INTEGER NOT NULL,
              response TEXT,
              error TEXT,
              error_code TEXT,
              batch_id TEXT
          );
          CREATE INDEX attempts_sub ON attempts (sub_id, id);
          CREATE INDEX attempts_event ON attempts (sub_id, event_id, id);
          CREATE INDEX attempts_at ON attempts (at);
          CREATE TABLE jobs (
              id TEXT PRIMARY KEY,
              sub_id TEXT NOT NULL,
              since INTEGER NOT NULL,
              cursor INTEGER NOT NULL,
              last_seq INTEGER NOT NULL,
              total INTEGER NOT NULL,
              processed INTEGER NOT NULL,
              requeued INTEGER NOT NULL,
              status TEXT NOT NULL,
              created_at INTEGER NOT NULL,
              finished_at INTEGER
          );
          CREATE TABLE ops_events (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              sub_id TEXT NOT NULL,
              kind TEXT NOT NULL,
              at INTEGER NOT NULL,
              message TEXT NOT NULL
          );",
}];

/// A subscription as the router keeps it in memory.
#[derive(Debug, Clone)]
struct Route {
    id: String,
    pattern: Pattern,
    enabled: bool,
    ordering_key: Option<String>,
    batch: Option<BatchSpec>,
}

/// The subscription router and delivery object of one namespace.
pub struct Subscriptions {
    ns: String,
    routes: Vec<Route>,
    alarm_at: Option<i64>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

fn corrupt(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::StorageError, format!("subscriptions: {e}"))
}

fn iso(ms: i64) -> String {
    Timestamp(ms).to_iso()
}

/// Validates a retry schedule.
fn check_schedule(s: &[i64]) -> ObjectResult<()> {
    if s.is_empty() || s.len() > MAX_RETRY_SCHEDULE_LEN {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            format!("retrySchedule needs 1-{MAX_RETRY_SCHEDULE_LEN} delays"),
        ));
    }
    if s.iter().any(|d| !(0..=MAX_RETRY_DELAY_MS).contains(d)) {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            format!("retrySchedule delays are 0-{MAX_RETRY_DELAY_MS} ms"),
        ));
    }
    Ok(())
}

fn check_url(url: &str) -> ObjectResult<()> {
    if url.len() > MAX_URL_LEN || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(format!("url must be an http(s) URL of at most {MAX_URL_LEN} characters")));
    }
    Ok(())
}

fn check_settings(s: &Settings) -> ObjectResult<()> {
    check_schedule(&s.retry_schedule)?;
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&s.timeout_ms) {
        return Err(ApiError::new(ErrorCode::InvalidConfig, format!("timeoutMs is {MIN_TIMEOUT_MS}-{MAX_TIMEOUT_MS}")));
    }
    if let Some(b) = s.batch
        && (b.max_size == 0 || b.max_size > MAX_BATCH_SIZE || !(0..=MAX_BATCH_WINDOW_MS).contains(&b.window_ms))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            format!("batch.maxSize is 1-{MAX_BATCH_SIZE}, batch.windowMs 0-{MAX_BATCH_WINDOW_MS}"),
        ));
    }
    if let Some(k) = &s.ordering_key
        && (k.is_empty() || k.len() > MAX_ORDERING_KEY_LEN)
    {
        return Err(ApiError::new(ErrorCode::InvalidConfig, "orderingKey is a field name of 1-128 characters"));
    }
    if s.disable_after_ms <= 0 {
        return Err(ApiError::new(ErrorCode::InvalidConfig, "disableAfterMs must be positive"));
    }
    Ok(())
}

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> ObjectResult<Vec<u8>> {
    let bad = || ApiError::new(ErrorCode::InvalidConfig, "secret must be whsec_ followed by 16-64 base64 bytes");
    let key = B64.decode(secret.strip_prefix(SECRET_PREFIX).ok_or_else(bad)?).map_err(|_| bad())?;
    if !SECRET_BYTES_RANGE.contains(&key.len()) {
        return Err(bad());
    }
    Ok(key)
}

/// The Standard Webhooks signature `v1,<base64>` of one message.
pub fn sign(key: &[u8], msg_id: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The value of the ordering field of an event, if it has one.
fn order_key_of(event: &Event, field: &str) -> Option<String> {
    let v = match field {
        "type" => return Some(event.event_type.clone()),
        "source" => return event.source.clone(),
        "id" => return Some(event.id.clone()),
        f => event.data.get(f)?,
    };
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A request prepared by the alarm.
struct Outgoing {
    sub_id: String,
    batch_id: Option<String>,
    /// (delivery id, event id, attempts so far)
    items: Vec<(String, String, i64)>,
    request: HttpRequest,
}

/// Its result.
struct Sent {
    out: Outgoing,
    result: ObjectResult<HttpResponse>,
    duration_ms: i64,
}

impl Subscriptions {
    fn load_routes<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        let rows = db.query("SELECT id, pattern, status, settings FROM subscriptions ORDER BY id", &[])?;
        self.routes = rows
            .iter()
            .map(|r| {
                let settings: Settings = serde_json::from_slice(r.bytes(3)).map_err(corrupt)?;
                Ok(Route {
                    id: r.str(0).to_string(),
                    pattern: Pattern::parse(r.str(1))?,
                    enabled: r.str(2) != "disabled",
                    ordering_key: settings.ordering_key,
                    batch: settings.batch,
                })
            })
            .collect::<ObjectResult<_>>()?;
        Ok(())
    }

    /// Arms the alarm no later than `at`.
    async fn arm<H: Host>(&mut self, cx: &ObjectContext<H>, at: i64) -> ObjectResult<()> {
        if self.alarm_at.is_none_or(|current| at < current) {
            cx.storage().set_alarm(Timestamp(at)).await?;
            self.alarm_at = Some(at);
        }
        Ok(())
    }

    fn info<S: SqlStorage>(&self, db: &S, id: &str) -> ObjectResult<SubscriptionInfo> {
        let row = db
            .query_one(
                "SELECT id, pattern, url, status, settings, created_at, updated_at, failing_since, disabled_at, disabled_reason
                 FROM subscriptions WHERE id = ?1",
                &[id.into()],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no subscription {id}")))?;
        self.row_info(&row)
    }

    fn row_info(&self, r: &Row) -> ObjectResult<SubscriptionInfo> {
        let s: Settings = serde_json::from_slice(r.bytes(4)).map_err(corrupt)?;
        Ok(SubscriptionInfo {
            id: r.str(0).to_string(),
            namespace: self.ns.clone(),
            pattern: r.str(1).to_string(),
            url: r.str(2).to_string(),
            status: r.str(3).to_string(),
            retry_schedule: s.retry_schedule,
            timeout_ms: s.timeout_ms,
            batch: s.batch,
            ordering_key: s.ordering_key,
            disable_after_ms: s.disable_after_ms,
            description: s.description,
            worker_id: s.worker_id,
            rpc_method: s.rpc_method,
            created_at: iso(r.i64(5)),
            updated_at: iso(r.i64(6)),
            failing_since: r.opt_i64(7).map(iso),
            disabled_at: r.opt_i64(8).map(iso),
            disabled_reason: r.opt_str(9).map(str::to_string),
        })
    }

    fn settings<S: SqlStorage>(db: &S, id: &str) -> ObjectResult<Settings> {
        let row = db
            .query_one("SELECT settings FROM subscriptions WHERE id = ?1", &[id.into()])?
            .ok_or_else(|| ApiError::not_found(format!("no subscription {id}")))?;
        serde_json::from_slice(row.bytes(0)).map_err(corrupt)
    }

    fn new_secret<H: Host>(cx: &ObjectContext<H>) -> String {
        let mut bytes = Vec::with_capacity(SECRET_BYTES);
        while bytes.len() < SECRET_BYTES {
            bytes.extend_from_slice(&cx.host().random().to_le_bytes());
        }
        bytes.truncate(SECRET_BYTES);
        format!("{SECRET_PREFIX}{}", B64.encode(bytes))
    }

    fn create<H: Host>(&mut self, cx: &ObjectContext<H>, spec: SubscriptionSpec) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        let pattern = Pattern::parse(&spec.pattern)?;
        check_url(&spec.url)?;
        let settings = Settings {
            retry_schedule: spec.retry_schedule.unwrap_or_else(|| DEFAULT_RETRY_SCHEDULE_MS.to_vec()),
            timeout_ms: spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            batch: spec.batch,
            ordering_key: spec.ordering_key,
            disable_after_ms: spec.disable_after_ms.unwrap_or(DEFAULT_DISABLE_AFTER_MS),
            description: spec.description,
            worker_id: spec.worker_id,
            rpc_method: spec.rpc_method,
        };
        check_settings(&settings)?;
        let secret = match spec.secret {
            Some(s) => {
                secret_key(&s)?;
                s
            }
            None => Self::new_secret(cx),
        };
        let count = db.query_one("SELECT COUNT(*) FROM subscriptions", &[])?.map_or(0, |r| r.i64(0));
        if count as usize >= MAX_SUBSCRIPTIONS_PER_NAMESPACE {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("a namespace holds at most {MAX_SUBSCRIPTIONS_PER_NAMESPACE} subscriptions"),
            ));
        }
        let id = format!("sub_{}", cx.ulid());
        db.execute(
            "INSERT INTO subscriptions (id, pattern, url, status, settings, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?5)",
            &[
                id.as_str().into(),
                pattern.as_str().into(),
                spec.url.as_str().into(),
                serde_json::to_string(&settings).map_err(corrupt)?.into(),
                now.into(),
            ],
        )?;
        db.execute(
            "INSERT INTO secrets (sub_id, secret, created_at) VALUES (?1, ?2, ?3)",
            &[id.as_str().into(), secret.as_str().into(), now.into()],
        )?;
        self.load_routes(db)?;
        Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: Some(secret) })
    }

    fn update<S: SqlStorage>(&mut self, db: &S, id: &str, patch: SubscriptionPatch, now: i64) -> ObjectResult<()> {
        let mut s = Self::settings(db, id)?;
        if let Some(p) = &patch.pattern {
            Pattern::parse(p)?;
            db.execute("UPDATE subscriptions SET pattern = ?2 WHERE id = ?1", &[id.into(), p.as_str().into()])?;
        }
        if let Some(u) = &patch.url {
            check_url(u)?;
            db.execute("UPDATE subscriptions SET url = ?2 WHERE id = ?1", &[id.into(), u.as_str().into()])?;
        }
        if let Some(v) = patch.retry_schedule {
            s.retry_schedule = v;
        }
        if let Some(v) = patch.timeout_ms {
            s.timeout_ms = v;
        }
        if let Some(v) = patch.batch {
            s.batch = Some(v);
        }
        if let Some(v) = patch.ordering_key {
            s.ordering_key = Some(v);
        }
        if let Some(v) = patch.disable_after_ms {
            s.disable_after_ms = v;
        }
        if let Some(v) = patch.description {
            s.description = Some(v);
        }
        check_settings(&s)?;
        db.execute(
            "UPDATE subscriptions SET settings = ?2, updated_at = ?3 WHERE id = ?1",
            &[id.into(), serde_json::to_string(&s).map_err(corrupt)?.into(), now.into()],
        )?;
        self.load_routes(db)
    }

    /// Enqueues deliveries for `events`.
    fn route<S: SqlStorage>(&self, db: &S, events: &[Event], now: i64) -> ObjectResult<usize> {
        let mut enqueued = 0;
        let mut batch_subs: HashMap<&str, BatchSpec> = HashMap::new();
        for event in events {
            assert_eq!(event.ns, self.ns, "events reach only their own namespace's router");
            let matching: Vec<&Route> =
                self.routes.iter().filter(|r| r.enabled && r.pattern.matches(&event.event_type)).collect();
            if matching.is_empty() {
                continue;
            }
            db.execute(
                "INSERT INTO events (id, ts, type, body, received_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO NOTHING",
                &[
                    event.id.as_str().into(),
                    event.ts.as_millis().into(),
                    event.event_type.as_str().into(),
                    event.to_json().to_string().into(),
                    now.into(),
                ],
            )?;
            let seq = db
                .query_one("SELECT seq FROM events WHERE id = ?1", &[event.id.as_str().into()])?
                .expect("event row just written")
                .i64(0);
            for r in matching {
                let key = r.ordering_key.as_deref().and_then(|f| order_key_of(event, f));
                let due = now + r.batch.map_or(0, |b| b.window_ms);
                let id = format!("msg_{}", events_core::id::ulid_string(Timestamp(now), fresh_bits(seq, &r.id)));
                enqueued += db.execute(
                    "INSERT INTO deliveries (id, sub_id, event_id, seq, order_key, status, next_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7) ON CONFLICT(sub_id, event_id) DO NOTHING",
                    &[
                        id.into(),
                        r.id.as_str().into(),
                        event.id.as_str().into(),
                        seq.into(),
                        key.into(),
                        due.into(),
                        now.into(),
                    ],
                )? as usize;
                if let Some(b) = r.batch {
                    batch_subs.insert(&r.id, b);
                }
            }
        }
        // A full batch is due at once.
        for (sub, b) in batch_subs {
            let waiting = db
                .query_one(
                    "SELECT COUNT(*) FROM deliveries WHERE sub_id = ?1 AND status = 'pending' AND attempts = 0 AND next_at > ?2",
                    &[sub.into(), now.into()],
                )?
                .map_or(0, |r| r.i64(0));
            if waiting as usize >= b.max_size {
                db.execute(
                    "UPDATE deliveries SET next_at = ?2 WHERE sub_id = ?1 AND status = 'pending' AND attempts = 0 AND next_at > ?2",
                    &[sub.into(), now.into()],
                )?;
            }
        }
        Ok(enqueued)
    }

    /// The earliest time a delivery is due (respecting ordering), if any.
    fn next_due<S: SqlStorage>(db: &S) -> ObjectResult<Option<i64>> {
        Ok(db
            .query_one(
                "SELECT MIN(d.next_at) FROM deliveries d JOIN subscriptions s ON s.id = d.sub_id
                 WHERE d.status = 'pending' AND s.status = 'active'
                   AND (d.order_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM deliveries p WHERE p.sub_id = d.sub_id AND p.order_key = d.order_key
                        AND p.status = 'pending' AND p.seq < d.seq))",
                &[],
            )?
            .and_then(|r| r.opt_i64(0)))
    }

    /// Builds the requests of one alarm run.
    fn prepare<H: Host>(&self, cx: &ObjectContext<H>, now: i64) -> ObjectResult<(Vec<Outgoing>, bool)> {
        let db = cx.storage();
        let rows = db.query(
            "SELECT d.id, d.sub_id, d.event_id, d.attempts, e.body FROM deliveries d
             JOIN subscriptions s ON s.id = d.sub_id JOIN events e ON e.id = d.event_id
             WHERE d.status = 'pending' AND d.next_at <= ?1 AND s.status = 'active'
               AND (d.order_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM deliveries p WHERE p.sub_id = d.sub_id AND p.order_key = d.order_key
                    AND p.status = 'pending' AND p.seq < d.seq))
             ORDER BY d.next_at, d.seq LIMIT ?2",
            &[now.into(), MAX_DELIVERIES_PER_RUN.into()],
        )?;
        let full = rows.len() == MAX_DELIVERIES_PER_RUN;
        // Per subscription: its url, settings, signing keys.
        let mut subs: HashMap<String, (String, Settings, Vec<Vec<u8>>)> = HashMap::new();
        let mut grouped: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
        for r in &rows {
            let sub = r.str(1).to_string();
            if !subs.contains_key(&sub) {
                let s = db
                    .query_one("SELECT url, settings FROM subscriptions WHERE id = ?1", &[sub.as_str().into()])?
                    .expect("joined subscription exists");
                let settings: Settings = serde_json::from_slice(s.bytes(1)).map_err(corrupt)?;
                let keys = db
                    .query(
                        "SELECT secret FROM secrets WHERE sub_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)
                         ORDER BY created_at DESC",
                        &[sub.as_str().into(), now.into()],
                    )?
                    .iter()
                    .map(|k| secret_key(k.str(0)))
                    .collect::<ObjectResult<Vec<_>>>()?;
                assert!(!keys.is_empty(), "a subscription always has a live secret");
                subs.insert(sub.clone(), (s.str(0).to_string(), settings, keys));
            }
            grouped.entry(sub).or_default().push(r);
        }
        let ts_s = now.div_euclid(1000);
        let mut out = Vec::new();
        for (sub, rows) in grouped {
            let (url, settings, keys) = &subs[&sub];
            let request = |msg_id: &str, body: Vec<u8>| {
                let signature = keys.iter().map(|k| sign(k, msg_id, ts_s, &body)).collect::<Vec<_>>().join(" ");
                HttpRequest {
                    method: "POST".into(),
                    url: url.clone(),
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("webhook-id".into(), msg_id.to_string()),
                        ("webhook-timestamp".into(), ts_s.to_string()),
                        ("webhook-signature".into(), signature),
                    ],
                    body,
                    timeout_ms: settings.timeout_ms,
                }
            };
            let item = |r: &Row| (r.str(0).to_string(), r.str(2).to_string(), r.i64(3));
            match settings.batch {
                Some(b) => {
                    for chunk in rows.chunks(b.max_size) {
                        let msg_id = format!("batch_{}", cx.ulid());
                        let mut body = b"{\"events\":[".to_vec();
                        for (i, r) in chunk.iter().enumerate() {
                            if i > 0 {
                                body.push(b',');
                            }
                            body.extend_from_slice(r.bytes(4));
                        }
                        body.extend_from_slice(b"]}");
                        out.push(Outgoing {
                            sub_id: sub.clone(),
                            batch_id: Some(msg_id.clone()),
                            items: chunk.iter().map(|r| item(r)).collect(),
                            request: request(&msg_id, body),
                        });
                    }
                }
                None => {
                    for r in rows {
                        let msg_id = r.str(0).to_string();
                        out.push(Outgoing {
                            sub_id: sub.clone(),
                            batch_id: None,
                            items: vec![item(r)],
                            request: request(&msg_id, r.bytes(4).to_vec()),
                        });
                    }
                }
            }
        }
        Ok((out, full))
    }

    /// Records the results of one run.
    fn record<H: Host>(&mut self, cx: &ObjectContext<H>, sent: Vec<Sent>, now: i64) -> ObjectResult<()> {
        let db = cx.storage();
        let mut sub_ok: HashMap<String, bool> = HashMap::new();
        for Sent { out, result, duration_ms } in sent {
            let settings = Self::settings(db, &out.sub_id)?;
            // Per item: None = success, Some(reason) = failure.
            let (status, excerpt, transport, retry_after, stop) = match &result {
                Ok(resp) => {
                    let excerpt =
                        String::from_utf8_lossy(&resp.body[..resp.body.len().min(RESPONSE_EXCERPT_BYTES)]).into_owned();
                    let retry_after = if matches!(resp.status, 429 | 503) {
                        resp.header("retry-after").and_then(|v| v.trim().parse::<i64>().ok()).map(|s| s * 1000)
                    } else {
                        None
                    };
                    let stop = resp.header(STOP_RETRIES_HEADER).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
                    (Some(resp.status), Some(excerpt), None, retry_after, stop)
                }
                Err(e) => (None, None, Some(e.clone()), None, false),
            };
            let success = status.is_some_and(|s| (200..300).contains(&s));
            // Per-item results of a batch answer.
            let mut item_failed: HashMap<String, ()> = HashMap::new();
            if success
                && out.batch_id.is_some()
                && let Ok(resp) = &result
                && let Ok(v) = serde_json::from_slice::<Value>(&resp.body)
                && let Some(results) = v.get("results").and_then(Value::as_array)
            {
                for r in results {
                    if r.get("ok") == Some(&Value::Bool(false))
                        && let Some(id) = r.get("id").and_then(Value::as_str)
                    {
                        item_failed.insert(id.to_string(), ());
                    }
                }
            }
            for (delivery_id, event_id, attempts) in &out.items {
                let attempt = attempts + 1;
                let ok = success && !item_failed.contains_key(event_id);
                let error = match (&transport, ok) {
                    (Some(e), _) => Some(e.message.clone()),
                    (None, true) => None,
                    (None, false) if success => Some("the receiver reported this item as failed".to_string()),
                    (None, false) => Some(format!("HTTP {}", status.unwrap_or(0))),
                };
                let error_code = transport.as_ref().map(|e| match e.code {
                    ErrorCode::Forbidden => ErrorCode::TargetNotAllowed.as_str(),
                    c => c.as_str(),
                });
                db.execute(
                    "INSERT INTO attempts (delivery_id, sub_id, event_id, attempt, at, status, duration_ms, ok, response, error, error_code, batch_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    &[
                        delivery_id.as_str().into(),
                        out.sub_id.as_str().into(),
                        event_id.as_str().into(),
                        attempt.into(),
                        (now - duration_ms).into(),
                        status.map(|s| s as i64).into(),
                        duration_ms.into(),
                        ok.into(),
                        excerpt.clone().into(),
                        error.clone().into(),
                        error_code.into(),
                        out.batch_id.clone().into(),
                    ],
                )?;
                let entry = sub_ok.entry(out.sub_id.clone()).or_insert(false);
                *entry |= ok;
                if ok {
                    db.execute(
                        "UPDATE deliveries SET status = 'delivered', attempts = ?2, delivered_at = ?3,
                         latency_ms = ?3 - created_at, last_error = NULL WHERE id = ?1",
                        &[delivery_id.as_str().into(), attempt.into(), now.into()],
                    )?;
                    continue;
                }
                let dead_reason = if stop {
                    Some(format!("the receiver answered {STOP_RETRIES_HEADER}: true"))
                } else if attempt as usize >= settings.retry_schedule.len() {
                    Some(format!("no success after {attempt} attempts"))
                } else {
                    None
                };
                if let Some(reason) = dead_reason {
                    db.execute(
                        "UPDATE deliveries SET status = 'dead', attempts = ?2, dead_at = ?3, dead_reason = ?4, last_error = ?5 WHERE id = ?1",
                        &[delivery_id.as_str().into(), attempt.into(), now.into(), reason.into(), error.into()],
                    )?;
                } else {
                    let base = settings.retry_schedule[attempt as usize];
                    let jitter_span = base * RETRY_JITTER_PERCENT / 100;
                    let jitter = if jitter_span > 0 {
                        (cx.host().random() % (2 * jitter_span as u128 + 1)) as i64 - jitter_span
                    } else {
                        0
                    };
                    let mut delay = base + jitter;
                    if let Some(ra) = retry_after {
                        delay = delay.max(ra.min(MAX_RETRY_AFTER_MS));
                    }
                    db.execute(
                        "UPDATE deliveries SET attempts = ?2, next_at = ?3, last_error = ?4 WHERE id = ?1",
                        &[delivery_id.as_str().into(), attempt.into(), (now + delay.max(0)).into(), error.into()],
                    )?;
                }
            }
        }
        // Failure streaks and disabling.
        let mut changed = false;
        for (sub, any_ok) in sub_ok {
            if any_ok {
                db.execute("UPDATE subscriptions SET failing_since = NULL WHERE id = ?1", &[sub.as_str().into()])?;
                continue;
            }
            db.execute(
                "UPDATE subscriptions SET failing_since = COALESCE(failing_since, ?2) WHERE id = ?1",
                &[sub.as_str().into(), now.into()],
            )?;
            let settings = Self::settings(db, &sub)?;
            let since = db
                .query_one("SELECT failing_since FROM subscriptions WHERE id = ?1", &[sub.as_str().into()])?
                .and_then(|r| r.opt_i64(0))
                .expect("just set");
            if now - since >= settings.disable_after_ms {
                let reason = format!("every delivery failed since {}", iso(since));
                db.execute(
                    "UPDATE subscriptions SET status = 'disabled', disabled_at = ?2, disabled_reason = ?3, updated_at = ?2 WHERE id = ?1",
                    &[sub.as_str().into(), now.into(), reason.as_str().into()],
                )?;
                db.execute(
                    "INSERT INTO ops_events (sub_id, kind, at, message) VALUES (?1, 'events.subscription.disabled', ?2, ?3)",
                    &[sub.as_str().into(), now.into(), format!("subscription {sub} disabled: {reason}").into()],
                )?;
                changed = true;
            }
        }
        if changed {
            self.load_routes(db)?;
        }
        Ok(())
    }

    /// Advances running recovery jobs by one chunk each. Returns whether any is still running.
    fn advance_jobs<S: SqlStorage>(&self, db: &S, now: i64) -> ObjectResult<bool> {
        let jobs = db.query("SELECT id, sub_id, since, cursor, last_seq FROM jobs WHERE status = 'running'", &[])?;
        let mut running = false;
        for j in jobs {
            let (job, sub, since, cursor, last) = (j.str(0), j.str(1), j.i64(2), j.i64(3), j.i64(4));
            let Some(route) = self.routes.iter().find(|r| r.id == sub) else {
                db.execute(
                    "UPDATE jobs SET status = 'done', finished_at = ?2 WHERE id = ?1",
                    &[job.into(), now.into()],
                )?;
                continue;
            };
            let rows = db.query(
                "SELECT seq, id, type, ts, body FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
                &[cursor.into(), last.into(), RECOVER_CHUNK.into()],
            )?;
            let (mut processed, mut requeued) = (0i64, 0i64);
            let mut upto = cursor;
            for r in &rows {
                upto = r.i64(0);
                if r.i64(3) < since {
                    continue;
                }
                processed += 1;
                if !route.pattern.matches(r.str(2)) {
                    continue;
                }
                let key = match &route.ordering_key {
                    Some(f) => {
                        let e: Value = serde_json::from_slice(r.bytes(4)).map_err(corrupt)?;
                        e.get(f).and_then(|v| match v {
                            Value::String(s) => Some(s.clone()),
                            Value::Null => None,
                            o => Some(o.to_string()),
                        })
                    }
                    None => None,
                };
                let id = format!("msg_{}", events_core::id::ulid_string(Timestamp(now), fresh_bits(upto, sub)));
                requeued += db.execute(
                    "INSERT INTO deliveries (id, sub_id, event_id, seq, order_key, status, next_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)
                     ON CONFLICT(sub_id, event_id) DO UPDATE SET status = 'pending', attempts = 0, next_at = ?6,
                        created_at = ?6, dead_at = NULL, dead_reason = NULL, delivered_at = NULL, latency_ms = NULL
                     WHERE status != 'pending'",
                    &[id.into(), sub.into(), r.str(1).into(), upto.into(), key.into(), now.into()],
                )? as i64;
            }
            let done = rows.len() < RECOVER_CHUNK as usize || upto >= last;
            db.execute(
                "UPDATE jobs SET cursor = ?2, processed = processed + ?3, requeued = requeued + ?4,
                 status = CASE WHEN ?5 THEN 'done' ELSE 'running' END,
                 finished_at = CASE WHEN ?5 THEN ?6 ELSE NULL END WHERE id = ?1",
                &[job.into(), upto.into(), processed.into(), requeued.into(), done.into(), now.into()],
            )?;
            running |= !done;
        }
        Ok(running)
    }

    fn prune<S: SqlStorage>(db: &S, now: i64) -> ObjectResult<()> {
        let horizon = now - EVENT_LOG_RETENTION_MS;
        db.execute(
            "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE at < ?1 ORDER BY at LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        db.execute(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE status = 'delivered'
             AND delivered_at < ?1 LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events e WHERE received_at < ?1 AND NOT EXISTS
             (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status != 'delivered') ORDER BY seq LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        db.execute("DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at <= ?1", &[now.into()])?;
        Ok(())
    }

    fn require<S: SqlStorage>(db: &S, id: &str) -> ObjectResult<()> {
        if db.query_one("SELECT 1 FROM subscriptions WHERE id = ?1", &[id.into()])?.is_none() {
            return Err(ApiError::not_found(format!("no subscription {id}")));
        }
        Ok(())
    }

    fn job<S: SqlStorage>(db: &S, sub: &str, job: &str) -> ObjectResult<JobInfo> {
        let r = db
            .query_one(
                "SELECT id, sub_id, since, status, total, processed, requeued, created_at, finished_at
                 FROM jobs WHERE id = ?1 AND sub_id = ?2",
                &[job.into(), sub.into()],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no recovery job {job}")))?;
        Ok(JobInfo {
            id: r.str(0).to_string(),
            subscription_id: r.str(1).to_string(),
            since: iso(r.i64(2)),
            status: r.str(3).to_string(),
            total: r.i64(4),
            processed: r.i64(5),
            requeued: r.i64(6),
            created_at: iso(r.i64(7)),
            finished_at: r.opt_i64(8).map(iso),
        })
    }

    fn stats<S: SqlStorage>(db: &S, id: &str) -> ObjectResult<SubscriptionStats> {
        let count = |status: &str| -> ObjectResult<i64> {
            Ok(db
                .query_one(
                    "SELECT COUNT(*) FROM deliveries WHERE sub_id = ?1 AND status = ?2",
                    &[id.into(), status.into()],
                )?
                .map_or(0, |r| r.i64(0)))
        };
        let a = db
            .query_one("SELECT COUNT(*), COALESCE(SUM(ok), 0) FROM attempts WHERE sub_id = ?1", &[id.into()])?
            .expect("aggregate row");
        let (attempts, ok) = (a.i64(0), a.i64(1));
        let mut lat: Vec<i64> = db
            .query(
                "SELECT latency_ms FROM deliveries WHERE sub_id = ?1 AND status = 'delivered' AND latency_ms IS NOT NULL
                 ORDER BY delivered_at DESC LIMIT ?2",
                &[id.into(), LATENCY_SAMPLE.into()],
            )?
            .iter()
            .map(|r| r.i64(0))
            .collect();
        lat.sort_unstable();
        let mut latency_ms = BTreeMap::new();
        if !lat.is_empty() {
            for (name, q) in [("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)] {
                let idx = ((lat.len() * q).div_ceil(100)).clamp(1, lat.len()) - 1;
                latency_ms.insert(name.to_string(), lat[idx]);
            }
        }
        let ops_events = db
            .query("SELECT kind, at, message FROM ops_events WHERE sub_id = ?1 ORDER BY id", &[id.into()])?
            .iter()
            .map(|r| OpsEvent { kind: r.str(0).to_string(), at: iso(r.i64(1)), message: r.str(2).to_string() })
            .collect();
        Ok(SubscriptionStats {
            delivered: count("delivered")?,
            failed_attempts: attempts - ok,
            attempts,
            pending: count("pending")?,
            dead: count("dead")?,
            success_rate: if attempts == 0 { 1.0 } else { ok as f64 / attempts as f64 },
            latency_ms,
            ops_events,
        })
    }

    fn delivery_info(r: &Row) -> DeliveryInfo {
        let status = r.str(3).to_string();
        DeliveryInfo {
            id: r.str(0).to_string(),
            event_id: r.str(1).to_string(),
            event_type: r.str(2).to_string(),
            next_attempt_at: (status == "pending").then(|| iso(r.i64(5))),
            status,
            attempts: r.i64(4),
            created_at: iso(r.i64(6)),
            delivered_at: r.opt_i64(7).map(iso),
            dead_at: r.opt_i64(8).map(iso),
            dead_reason: r.opt_str(9).map(str::to_string),
            last_error: r.opt_str(10).map(str::to_string),
        }
    }
}

/// 80 bits for a delivery id, unique per (event seq, subscription) within a millisecond.
fn fresh_bits(seq: i64, sub: &str) -> u128 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sub.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ((h as u128) << 32) ^ (seq as u128)
}

impl DurableObject for Subscriptions {
    const CLASS: &'static str = "Subscriptions";
    type Request = SubsRequest;
    type Response = SubsResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let mut me = Subscriptions {
            ns: cx.name().to_string(),
            routes: Vec::new(),
            alarm_at: cx.storage().get_alarm().await?.map(|t| t.as_millis()),
        };
        me.load_routes(cx.storage())?;
        Ok(me)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: SubsRequest) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        let limit_of = |l: usize| l.clamp(1, MAX_LIST_LIMIT);
        match req {
            SubsRequest::Route { events } => {
                if self.routes.iter().all(|r| !r.enabled) {
                    return Ok(SubsResponse::Routed { enqueued: 0 });
                }
                let enqueued = self.route(db, &events, now)?;
                if enqueued > 0
                    && let Some(at) = Self::next_due(db)?
                {
                    self.arm(cx, at.max(now)).await?;
                }
                Ok(SubsResponse::Routed { enqueued })
            }
            SubsRequest::Create(spec) => self.create(cx, spec),
            SubsRequest::List { pattern, status, after, limit } => {
                let limit = limit_of(limit);
                let rows = db.query(
                    "SELECT id, pattern, url, status, settings, created_at, updated_at, failing_since, disabled_at, disabled_reason
                     FROM subscriptions WHERE id > ?1 AND (?2 IS NULL OR pattern = ?2) AND (?3 IS NULL OR status = ?3)
                     ORDER BY id LIMIT ?4",
                    &[after.unwrap_or_default().into(), pattern.into(), status.into(), (limit + 1).into()],
                )?;
                let mut items = rows.iter().map(|r| self.row_info(r)).collect::<ObjectResult<Vec<_>>>()?;
                let next = (items.len() > limit).then(|| {
                    items.truncate(limit);
                    items.last().expect("non-empty").id.clone()
                });
                Ok(SubsResponse::List { items, next })
            }
            SubsRequest::Get { id } => {
                Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: None })
            }
            SubsRequest::Update { id, patch } => {
                self.update(db, &id, patch, now)?;
                Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: None })
            }
            SubsRequest::Delete { id } => {
                Self::require(db, &id)?;
                for table in ["subscriptions WHERE id", "secrets WHERE sub_id", "deliveries WHERE sub_id"] {
                    db.execute(&format!("DELETE FROM {table} = ?1"), &[id.as_str().into()])?;
                }
                for table in ["attempts", "jobs", "ops_events"] {
                    db.execute(&format!("DELETE FROM {table} WHERE sub_id = ?1"), &[id.as_str().into()])?;
                }
                self.load_routes(db)?;
                Ok(SubsResponse::Ok)
            }
            SubsRequest::SetActive { id, active } => {
                Self::require(db, &id)?;
                if active {
                    db.execute(
                        "UPDATE subscriptions SET status = 'active', failing_since = NULL, disabled_at = NULL,
                         disabled_reason = NULL, updated_at = ?2 WHERE id = ?1",
                        &[id.as_str().into(), now.into()],
                    )?;
                    self.load_routes(db)?;
                    if let Some(at) = Self::next_due(db)? {
                        self.arm(cx, at.max(now)).await?;
                    }
                } else {
                    db.execute(
                        "UPDATE subscriptions SET status = 'paused', updated_at = ?2 WHERE id = ?1 AND status != 'disabled'",
                        &[id.as_str().into(), now.into()],
                    )?;
                }
                Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: None })
            }
            SubsRequest::RotateSecret { id, secret, overlap_ms } => {
                Self::require(db, &id)?;
                let overlap = overlap_ms.unwrap_or(DEFAULT_ROTATION_OVERLAP_MS);
                if !(0..=MAX_ROTATION_OVERLAP_MS).contains(&overlap) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidConfig,
                        format!("overlapMs is 0-{MAX_ROTATION_OVERLAP_MS}"),
                    ));
                }
                let secret = match secret {
                    Some(s) => {
                        secret_key(&s)?;
                        s
                    }
                    None => Self::new_secret(cx),
                };
                db.execute(
                    "UPDATE secrets SET expires_at = ?2 WHERE sub_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                    &[id.as_str().into(), (now + overlap).into()],
                )?;
                db.execute(
                    "INSERT INTO secrets (sub_id, secret, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(sub_id, secret) DO UPDATE SET expires_at = NULL",
                    &[id.as_str().into(), secret.as_str().into(), now.into()],
                )?;
                Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: Some(secret) })
            }
            SubsRequest::Attempts { id, event_id, before, limit } => {
                Self::require(db, &id)?;
                let limit = limit_of(limit);
                let rows = db.query(
                    "SELECT id, delivery_id, event_id, attempt, at, status, duration_ms, ok, response, error, error_code, batch_id
                     FROM attempts WHERE sub_id = ?1 AND (?2 IS NULL OR event_id = ?2) AND id < ?3
                     ORDER BY id DESC LIMIT ?4",
                    &[id.as_str().into(), event_id.into(), before.unwrap_or(i64::MAX).into(), (limit + 1).into()],
                )?;
                let mut items: Vec<AttemptInfo> = rows
                    .iter()
                    .map(|r| AttemptInfo {
                        id: r.i64(0),
                        delivery_id: r.str(1).to_string(),
                        event_id: r.str(2).to_string(),
                        attempt: r.i64(3),
                        at: iso(r.i64(4)),
                        status: r.opt_i64(5).map(|s| s as u16),
                        duration_ms: r.i64(6),
                        ok: r.i64(7) != 0,
                        response: r.opt_str(8).map(str::to_string),
                        error: r.opt_str(9).map(str::to_string),
                        error_code: r.opt_str(10).map(str::to_string),
                        batch_id: r.opt_str(11).map(str::to_string),
                    })
                    .collect();
                let next = (items.len() > limit).then(|| {
                    items.truncate(limit);
                    items.last().expect("non-empty").id
                });
                Ok(SubsResponse::Attempts { items, next })
            }
            SubsRequest::Deliveries { id, status, after, limit } => {
                Self::require(db, &id)?;
                let limit = limit_of(limit);
                let rows = db.query(
                    "SELECT d.id, d.event_id, COALESCE(e.type, ''), d.status, d.attempts, d.next_at, d.created_at,
                            d.delivered_at, d.dead_at, d.dead_reason, d.last_error
                     FROM deliveries d LEFT JOIN events e ON e.id = d.event_id
                     WHERE d.sub_id = ?1 AND (?2 IS NULL OR d.status = ?2) AND d.id > ?3 ORDER BY d.id LIMIT ?4",
                    &[id.as_str().into(), status.into(), after.unwrap_or_default().into(), (limit + 1).into()],
                )?;
                let mut items: Vec<DeliveryInfo> = rows.iter().map(Self::delivery_info).collect();
                let next = (items.len() > limit).then(|| {
                    items.truncate(limit);
                    items.last().expect("non-empty").id.clone()
                });
                Ok(SubsResponse::Deliveries { items, next })
            }
            SubsRequest::Replay { id, dl_id } => {
                Self::require(db, &id)?;
                let reset = "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?2, dead_at = NULL,
                             dead_reason = NULL WHERE sub_id = ?1 AND status = 'dead'";
                let count = match dl_id {
                    Some(dl) => {
                        let n = db.execute(
                            &format!("{reset} AND id = ?3"),
                            &[id.as_str().into(), now.into(), dl.as_str().into()],
                        )?;
                        if n == 0 {
                            return Err(ApiError::not_found(format!("no dead letter {dl} in subscription {id}")));
                        }
                        n
                    }
                    None => db.execute(reset, &[id.as_str().into(), now.into()])?,
                };
                if count > 0 {
                    self.arm(cx, now).await?;
                }
                Ok(SubsResponse::Replayed { count: count as usize })
            }
            SubsRequest::Recover { id, since } => {
                Self::require(db, &id)?;
                let r = db
                    .query_one(
                        "SELECT COALESCE(MAX(seq), 0), (SELECT COUNT(*) FROM events WHERE ts >= ?1) FROM events",
                        &[since.as_millis().into()],
                    )?
                    .expect("aggregate row");
                let job = format!("job_{}", cx.ulid());
                db.execute(
                    "INSERT INTO jobs (id, sub_id, since, cursor, last_seq, total, processed, requeued, status, created_at)
                     VALUES (?1, ?2, ?3, 0, ?4, ?5, 0, 0, 'running', ?6)",
                    &[
                        job.as_str().into(),
                        id.as_str().into(),
                        since.as_millis().into(),
                        r.i64(0).into(),
                        r.i64(1).into(),
                        now.into(),
                    ],
                )?;
                self.arm(cx, now).await?;
                Ok(SubsResponse::Job(Self::job(db, &id, &job)?))
            }
            SubsRequest::Job { id, job_id } => Ok(SubsResponse::Job(Self::job(db, &id, &job_id)?)),
            SubsRequest::Stats { id } => {
                Self::require(db, &id)?;
                Ok(SubsResponse::Stats(Self::stats(db, &id)?))
            }
        }
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let start = cx.now().as_millis();
        self.alarm_at = None;
        let jobs_running = self.advance_jobs(db, start)?;
        let (outgoing, full) = self.prepare(cx, start)?;
        let sent: Vec<Sent> = futures::stream::iter(outgoing.into_iter().map(|out| async move {
            let began = cx.now().as_millis();
            let result = cx.host().http().send(out.request.clone()).await;
            Sent { out, result, duration_ms: cx.now().as_millis() - began }
        }))
        .buffer_unordered(MAX_CONCURRENT_DELIVERIES)
        .collect()
        .await;
        let now = cx.now().as_millis();
        self.record(cx, sent, now)?;
        Self::prune(db, now)?;
        let mut next = Self::next_due(db)?;
        if jobs_running || full {
            next = Some(now);
        }
        if let Some(r) = db.query_one("SELECT MIN(received_at) FROM events", &[])?
            && let Some(oldest) = r.opt_i64(0)
        {
            let prune_at = oldest + EVENT_LOG_RETENTION_MS;
            next = Some(next.map_or(prune_at, |n| n.min(prune_at)));
        }
        match next {
            Some(at) => self.arm(cx, at.max(now)).await?,
            None => cx.storage().delete_alarm().await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // Example of the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_validated() {
        assert!(secret_key("nope").is_err());
        assert!(secret_key("whsec_!!!").is_err());
        assert!(secret_key("whsec_AAAA").is_err());
    }
}
