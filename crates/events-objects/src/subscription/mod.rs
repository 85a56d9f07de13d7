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
//! pass per event with [`Pattern`](events_core::pattern::Pattern)) and enqueues one delivery per matching
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
//! # Sub-shards (hot spots)
//! When the namespace's delivery backlog or rate passes the thresholds of
//! [`crate::subs_layout`], the coordinator splits the delivery work over
//! sub-shards `<ns>/<k>` of this class and merges it back when the load
//! falls. This object (`<ns>`) stays the router and the only place a
//! delivery is created; it records each delivery's owner and hands it over,
//! and moves an ordering key only after its old owner drained it. See
//! `sharding.rs`.
//!
//! # Recovery
//! [`SubsRequest::Recover`] starts a job that re-enqueues every event with
//! `ts >= since` that matches the subscription (already delivered ones
//! included), in two phases. The *lake phase* lists the namespace's event
//! files hour by hour from `since` to the job's start and imports the
//! matching events the event log does not hold (older than its
//! [`EVENT_LOG_RETENTION_MS`], or that matched no subscription when they
//! arrived) into the log. The *log phase* then re-enqueues the log's matching
//! events in log order, [`RECOVER_CHUNK`] at a time, so each event is
//! re-sent once per job. Events still in a writer's buffer are not in the
//! lake yet; they reach the log (and this subscription) through the outbox.
//! Progress is readable; `since` reaches back at most [`MAX_RECOVER_AGE_MS`].

mod delivery;
mod history;
mod messages;
mod object;
mod operations;
mod recovery;
mod routing;
mod sharding;
mod signing;
mod storage;

pub use messages::*;
pub use sharding::{ATTEMPT_ID_SHIFT, DEFAULT_LOAD_REPORT_MS, FENCE_POLL_MS, FORWARD_BATCH, shard_name, shard_of};
pub use signing::{secret_key, sign};

use delivery::Sent;
use routing::{Route, fresh_bits};
use sharding::{LayoutCache, merge_pages, parse_name};
use storage::{MIGRATIONS, Settings, check_settings, check_url};

use events_core::{ApiError, ErrorCode, Timestamp};

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
/// Hours of the lake a recovery job lists per alarm run (it also stops
/// after reading [`RECOVER_CHUNK`] events).
pub const RECOVER_LAKE_HOURS: i64 = 24;
/// How far back a recovery may reach (90 days): bounds one job's work.
pub const MAX_RECOVER_AGE_MS: i64 = 90 * 24 * 3_600_000;
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

/// The subscription router and delivery object of one namespace.
pub struct Subscriptions {
    ns: String,
    /// Sub-shard number: 0 for the main object `<ns>`, `k` for `<ns>/<k>`.
    shard: u32,
    routes: Vec<Route>,
    alarm: crate::alarm::AlarmSlot,
    /// The sub-shard layout new deliveries follow (main object).
    layout: LayoutCache,
    /// Last load report to the coordinator (ms; 0 = never).
    reported_at: i64,
    /// Deliveries that succeeded since that report.
    delivered_since_report: u64,
    /// Backlog of that report.
    last_backlog: u64,
    /// Time between two load reports (ms).
    report_ms: i64,
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

/// A listing's page size, brought into 1..=[`MAX_LIST_LIMIT`].
fn limit_of(limit: usize) -> usize {
    limit.clamp(1, MAX_LIST_LIMIT)
}
