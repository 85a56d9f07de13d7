//! The section tables of the configuration (`[ingest]`, `[writer]`, `[catalog]`,
//! `[outbound]`, `[subscriptions]`, `[shards]`, `[runtime]`); `[cdc]`,
//! `[query]` and `[http]` have modules of their own.

use events_core::limits;
use serde::{Deserialize, Serialize};

/// Ingest limits (the `[ingest]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Requests per minute per API key.
    pub requests_per_minute: u64,
    /// Events per minute per API key.
    pub events_per_minute: u64,
    /// Events per day per namespace; 0 = unlimited.
    pub events_per_day: u64,
    /// Most events in one batch.
    pub max_events_per_batch: usize,
    /// Largest single event, serialized, in bytes.
    pub max_event_bytes: usize,
    /// Let requests through when the rate limiter fails (default: refuse).
    pub rate_limit_fail_open: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            requests_per_minute: limits::DEFAULT_REQUESTS_PER_MINUTE,
            events_per_minute: limits::DEFAULT_EVENTS_PER_MINUTE,
            events_per_day: limits::DEFAULT_EVENTS_PER_DAY,
            max_events_per_batch: limits::MAX_EVENTS_PER_BATCH,
            max_event_bytes: limits::MAX_EVENT_BYTES,
            rate_limit_fail_open: false,
        }
    }
}

/// Event writer settings (the `[writer]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Flush a writer shard once it buffers this many events.
    pub flush_max_events: u64,
    /// Flush once the buffered JSON reaches this many bytes.
    pub flush_max_bytes: u64,
    /// Flush once the oldest buffered event waited this long (ms).
    pub flush_max_age_ms: i64,
    /// Compact an hour's small files this long after the hour ends (ms).
    pub compact_grace_ms: i64,
    /// Refuse appends to a shard (503, `Retry-After`) once this many of its
    /// events wait for the lake flush or for one consumer (subscriptions, CDC).
    pub outbox_max_events: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        use events_objects::event_writer as w;
        WriterConfig {
            flush_max_events: w::DEFAULT_FLUSH_MAX_EVENTS,
            flush_max_bytes: w::DEFAULT_FLUSH_MAX_BYTES,
            flush_max_age_ms: w::DEFAULT_FLUSH_MAX_AGE_MS,
            compact_grace_ms: w::COMPACT_GRACE_MS,
            outbox_max_events: w::DEFAULT_OUTBOX_MAX_EVENTS,
        }
    }
}

/// Iceberg catalog maintenance, run by each catalog's alarm (the `[catalog]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// How often maintenance runs after a commit (ms).
    pub maintenance_interval_ms: i64,
    /// Snapshots older than this expire (ms).
    pub snapshot_max_age_ms: i64,
    /// The newest snapshots always kept.
    pub min_snapshots: usize,
    /// Unreferenced files younger than this are kept by orphan cleanup (ms).
    pub orphan_min_age_ms: i64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        use events_objects::catalog as c;
        CatalogConfig {
            maintenance_interval_ms: c::DEFAULT_MAINTENANCE_INTERVAL_MS,
            snapshot_max_age_ms: c::DEFAULT_SNAPSHOT_MAX_AGE_MS,
            min_snapshots: c::DEFAULT_MIN_SNAPSHOTS,
            orphan_min_age_ms: c::DEFAULT_ORPHAN_MIN_AGE_MS,
        }
    }
}

/// Outbound HTTP policy (the `[outbound]` table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// CIDR blocks that webhooks may reach although private (e.g. `127.0.0.0/8`).
    pub allow: Vec<String>,
}

/// Webhook subscriptions (the `[subscriptions]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Target of `POST /subscriptions/subscribe`; `{workerId}` and `{rpcMethod}` are replaced.
    pub rpc_url_template: String,
    /// Deliveries waiting (summed over sub-shards) that split a namespace's delivery work.
    pub split_backlog: u64,
    /// Deliveries per second (summed) that split it.
    pub split_rate: u64,
    /// Backlog at or under which it may merge back.
    pub merge_backlog: u64,
    /// Rate at or under which it may merge back.
    pub merge_rate: u64,
    /// Quiet time (under both merge thresholds) before a merge (ms).
    pub merge_quiet_ms: i64,
    /// Minimum time between two sub-shard layout changes (ms).
    pub shard_cooldown_ms: i64,
    /// Most delivery sub-shards per namespace.
    pub max_shards: u32,
    /// Time between two load reports of a sub-shard (ms).
    pub report_interval_ms: i64,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        use events_objects::subs_layout as l;
        SubscriptionsConfig {
            rpc_url_template: "https://{workerId}.workers.dev/rpc/{rpcMethod}".to_string(),
            split_backlog: l::DEFAULT_SPLIT_BACKLOG,
            split_rate: l::DEFAULT_SPLIT_RATE,
            merge_backlog: l::DEFAULT_MERGE_BACKLOG,
            merge_rate: l::DEFAULT_MERGE_RATE,
            merge_quiet_ms: l::DEFAULT_MERGE_QUIET_MS,
            shard_cooldown_ms: l::DEFAULT_SUBS_COOLDOWN_MS,
            max_shards: l::MAX_SUBS_SHARDS,
            report_interval_ms: events_objects::subscription::DEFAULT_LOAD_REPORT_MS,
        }
    }
}

/// Dynamic sharding of event writers (the `[shards]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardsConfig {
    /// Fewest writer shards per namespace; 0: one per executor thread that
    /// runs writers (half the object threads, at least one).
    pub min: u32,
    /// Most writer shards per namespace.
    pub max: u32,
    /// Requests in flight on one shard that count as backpressure.
    pub backpressure_inflight: usize,
    /// Minimum time between two layout changes (ms).
    pub cooldown_ms: i64,
    /// Quiet time after which one shard is removed (ms).
    pub scale_down_quiet_ms: i64,
}

impl Default for ShardsConfig {
    fn default() -> Self {
        use events_objects::shard_coordinator as s;
        ShardsConfig {
            min: 0,
            max: s::MAX_SHARDS,
            backpressure_inflight: events_api::ingest::pipeline::DEFAULT_BACKPRESSURE_INFLIGHT,
            cooldown_ms: s::COOLDOWN_MS,
            scale_down_quiet_ms: s::SCALE_DOWN_QUIET_MS,
        }
    }
}

impl ShardsConfig {
    /// `min`, with 0 resolved from the object threads: writers run on half of
    /// them (the rest run background objects), and one shard keeps one busy.
    pub fn effective_min(&self, object_threads: usize) -> u32 {
        let min = if self.min > 0 { self.min } else { (object_threads / 2).max(1) as u32 };
        min.clamp(1, self.max.max(1))
    }
}

/// Durable-object runtime settings (the `[runtime]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// An object with no activity for this long is unloaded from memory.
    pub idle_timeout_ms: u64,
    /// Most objects held in memory at once.
    pub max_live_objects: usize,
    /// Threads running object code; 0 = one per CPU.
    pub object_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { idle_timeout_ms: 30_000, max_live_objects: 10_000, object_threads: 0 }
    }
}

impl RuntimeConfig {
    /// `object_threads`, with 0 resolved to the number of CPUs.
    pub fn effective_object_threads(&self) -> usize {
        if self.object_threads > 0 {
            self.object_threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}
