//! The public messages of [`Subscriptions`](super::Subscriptions): requests, answers and the shapes they carry.

use std::collections::BTreeMap;

use events_core::{Event, Timestamp};
use serde::{Deserialize, Serialize};

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
    /// New RPC method of a `/subscriptions/subscribe` subscription (the
    /// caller sets `url` to match; refused with `CONFLICT` when another
    /// subscription has the same worker, pattern and method).
    pub rpc_method: Option<String>,
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
    /// `running`, `done` or `failed` (see `error`).
    pub status: String,
    /// Why the job failed (the lake could not be read).
    pub error: Option<String>,
    /// `lake` (importing older events from the lake), `log` (re-enqueueing) or `done`.
    pub phase: String,
    /// Events imported from the lake into the event log so far.
    pub imported: i64,
    /// Events of the log to examine (final once the lake phase is over).
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
    /// The patterns of the enabled subscriptions (an outbox relay skips
    /// decoding events no pattern matches).
    Patterns,
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
    /// Main object → sub-shard: deliveries it now owns, and the subscriptions they belong to.
    Accept {
        /// Subscriptions of the items (replicas).
        configs: Vec<SubConfig>,
        /// The deliveries, in the main object's order.
        items: Vec<Forwarded>,
    },
    /// Main object → sub-shard: a subscription changed (`config`) or was deleted (`None`).
    SyncSub {
        /// Subscription.
        id: String,
        /// Its new state.
        config: Option<SubConfig>,
    },
    /// Main object → sub-shard: which of these (subscription, ordering key)
    /// pairs still have a pending delivery (the fence of a key that moves).
    PendingKeys {
        /// The pairs.
        keys: Vec<(String, String)>,
    },
    /// The sub-shard layout the main object follows.
    Layout,
    /// Main object → sub-shard: statistics plus the latency sample behind them.
    ShardStats {
        /// Subscription.
        id: String,
    },
}

/// A subscription as the main object hands it to its sub-shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubConfig {
    /// Id.
    pub id: String,
    /// Pattern.
    pub pattern: String,
    /// Target.
    pub url: String,
    /// `active`, `paused` or `disabled`.
    pub status: String,
    /// The stored settings (JSON).
    pub settings: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// Live secrets: (secret, created at, expires at).
    pub secrets: Vec<(String, i64, Option<i64>)>,
}

/// A delivery the main object hands to the sub-shard that owns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forwarded {
    /// Delivery id (the `webhook-id`, the same whichever object sends it).
    pub id: String,
    /// Subscription.
    pub sub_id: String,
    /// Event id.
    pub event_id: String,
    /// Ordering-key value.
    pub order_key: Option<String>,
    /// First attempt due (ms).
    pub next_at: i64,
    /// Enqueue time (ms).
    pub created_at: i64,
    /// Generation: grows when a recovery sends the delivery again.
    pub generation: i64,
    /// Event type.
    pub event_type: String,
    /// Event time (ms).
    pub ts: i64,
    /// The event as delivered (JSON).
    pub body: String,
}

/// Answers of [`Subscriptions`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SubsResponse {
    /// Patterns of the enabled subscriptions.
    Patterns(Vec<String>),
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
    /// Statistics of one sub-shard with its latency sample (ms).
    ShardStats(SubscriptionStats, Vec<i64>),
    /// The sub-shard layout the main object follows.
    Layout {
        /// Sub-shards new deliveries are spread over.
        shards: u32,
        /// The coordinator's epoch of that count.
        epoch: u64,
        /// Most sub-shards ever used.
        max_ever: u32,
    },
    /// The pairs of a `PendingKeys` that are still pending.
    Keys(Vec<(String, String)>),
    /// Done.
    Ok,
}
