//! [`EventWriter`]: the durable buffer of accepted events and the outbox
//! that the lake flush and the fan-out consumers read from.
//!
//! One object per namespace shard, named `<ns>/<shard>`. The writer never
//! waits on a consumer: it appends, answers, and wakes the shard's
//! [`crate::OutboxRelay`]s, which do the slow work (Parquet files, the
//! catalog, subscriptions, CDC) on their own threads and report back.
//!
//! # Storage: one row per append
//! An append is one row of the `log` table, whatever its size: the events as
//! one JSON array under the row's last sequence number (the row holds
//! `count` consecutive numbers). So an append costs one B-tree insert and
//! one serialization pass, plus one dedup entry per client-given event id;
//! no per-event index is kept. Flushed rows are a prefix of the log, marked
//! by a watermark (`flushed_upto`) rather than a flag per row. Readers that
//! stop inside a row (a page limit, a consumer cursor) skip the events up to
//! their position when they read the row again.
//!
//! # Flush protocol (exactly once, across crashes)
//! 1. The lake relay asks for a flush ([`WriterRequest::TakeFlush`]); the
//!    writer writes a **flush plan**, the sequence range `[first, last]` of
//!    the oldest unflushed rows, and answers it. The plan commits first.
//! 2. The relay reads exactly those events, encodes one Parquet file per
//!    (namespace, event hour) under keys derived only from the plan's first
//!    sequence number (`<shard>-<first>.parquet`), puts them, commits them to
//!    the catalog, and then reports [`WriterRequest::FlushCommitted`]: the
//!    writer moves its flush watermark past them and deletes the plan, in one commit.
//!
//! A crash anywhere before step 2's report leaves the plan: the retry covers
//! the same rows and writes under the same keys, replacing any file already
//! written, and the catalog replaces a key it already has. Only the lake
//! relay flushes, so no two flushes of one writer interleave. So every
//! acknowledged event ends up in exactly one file.
//!
//! # Outbox
//! Rows stay in the buffer after their flush until every registered
//! consumer has acknowledged them ([`WriterRequest::AckOutbox`]), so a
//! consumer that pulls with its cursor sees every event at least once. The
//! backlog is bounded ([`DEFAULT_OUTBOX_MAX_EVENTS`]): past it, appends are
//! refused with `SERVICE_UNAVAILABLE` (and `Retry-After`) until the lagging
//! consumer catches up, so nothing acknowledged is ever dropped.

//!
//! # Modules
//! `messages.rs` (requests and answers), `storage.rs` (schema, counters,
//! positions, row reads), `append.rs` (appending, deduplication, the outbox
//! bound), `flush.rs` (flush plans, the watermark, compaction bookkeeping),
//! `consumers.rs` (consumer cursors, backlog, wake-ups), `read.rs` (recent
//! events, statistics), `relays.rs` (the [`Outbox`](crate::outbox::Outbox)
//! seam the relays reach the writer through) and `object.rs` (the
//! `DurableObject` impl: load, the dispatching `handle`, the alarm).
//! The writer imports the outbox vocabulary ([`crate::outbox`]) and wakes
//! its relays; no consumer imports the writer.

mod append;
mod consumers;
mod flush;
mod messages;
mod object;
mod read;
mod relays;
mod storage;

use std::collections::{BTreeMap, BTreeSet};

use events_runtime::Host;

use crate::alarm::AlarmSlot;
use crate::outbox::LakeConfig;
use crate::var_or;

pub use crate::outbox::{COMPACT_GRACE_MS, FlushPlan, MAX_OUTBOX_READ};
pub use messages::{Appended, ReadFilter, WriterRequest, WriterResponse, WriterStats};
pub use relays::flush_writer;

/// Default: flush once this many events are buffered.
pub const DEFAULT_FLUSH_MAX_EVENTS: u64 = 20_000;
/// Default: flush once the buffered JSON reaches this many bytes (8 MiB).
pub const DEFAULT_FLUSH_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Default: flush once the oldest buffered event waited this long (ms).
pub const DEFAULT_FLUSH_MAX_AGE_MS: i64 = 10_000;
/// Most rows one flush plan covers (bounds the memory of one flush).
pub const MAX_ROWS_PER_FLUSH: i64 = 100_000;
/// Default of `writer.outbox_max_events`: the most events a shard holds
/// unflushed, or not yet taken by one of its built-in consumers, before it
/// refuses appends (about 1 GB of buffer at 500 bytes an event).
pub const DEFAULT_OUTBOX_MAX_EVENTS: u64 = 2_000_000;
/// While a relay has work, the writer's alarm wakes it again this often (ms),
/// in case a wake-up was lost (the relay also keeps its own alarm).
pub const RELAY_NUDGE_MS: i64 = 2_000;
/// Longest consumer error kept for `Stats` (characters).
pub const MAX_ERROR_CHARS: usize = 1_000;
/// Longest consumer name.
pub const MAX_CONSUMER_NAME_LEN: usize = 128;
/// Largest body of one log row; a bigger batch is stored as several rows
/// (Durable Object storage caps a value at 2 MB).
pub const MAX_LOG_ROW_BYTES: usize = 1 << 20;
/// Dedup entries pruned per alarm run.
const PRUNE_BATCH: i64 = 10_000;

/// Tunables, from host variables `writer.*` (defaults above).
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Flush at this many buffered events.
    pub max_events: u64,
    /// Flush at this many buffered bytes.
    pub max_bytes: u64,
    /// Flush when the oldest buffered event is this old (ms).
    pub max_age_ms: i64,
    /// The events table's folder and the compaction grace, shared with the lake relay.
    pub lake: LakeConfig,
    /// Refuse appends once this many events wait for the flush or one built-in consumer.
    pub outbox_max_events: u64,
}

impl WriterConfig {
    /// The configuration from the host's variables.
    pub fn from_host<H: Host>(host: &H) -> Self {
        WriterConfig {
            max_events: var_or(host, "writer.flush_max_events", DEFAULT_FLUSH_MAX_EVENTS).max(1),
            max_bytes: var_or(host, "writer.flush_max_bytes", DEFAULT_FLUSH_MAX_BYTES).max(1),
            max_age_ms: var_or(host, "writer.flush_max_age_ms", DEFAULT_FLUSH_MAX_AGE_MS).max(1),
            lake: LakeConfig::from_host(host),
            outbox_max_events: var_or(host, "writer.outbox_max_events", DEFAULT_OUTBOX_MAX_EVENTS).max(1),
        }
    }
}

/// The writer object.
pub struct EventWriter {
    ns: String,
    config: WriterConfig,
    buffered: u64,
    buffered_bytes: u64,
    oldest_received: Option<i64>,
    alarm: AlarmSlot,
    /// Highest sequence number assigned.
    last_seq: u64,
    /// Every event up to this sequence number is in the lake.
    flushed_upto: u64,
    /// Cursors of the built-in fan-out consumers.
    cursors: BTreeMap<&'static str, u64>,
    /// Relays (by consumer, [`LAKE`](crate::outbox::LAKE) included) woken since they last found
    /// nothing to do; appends wake only the others.
    awake: BTreeSet<&'static str>,
    /// What this instance last added to each `events_outbox_backlog` gauge.
    reported: BTreeMap<&'static str, u64>,
    /// Why the last flush attempt failed, until a flush succeeds.
    lake_error: Option<String>,
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // The gauges sum over live writers; a hibernating one takes its part back.
        for (consumer, value) in &self.reported {
            metrics::gauge!("events_outbox_backlog", "consumer" => *consumer).decrement(*value as f64);
        }
    }
}

/// Name of shard `shard` of namespace `ns`.
pub fn writer_name(ns: &str, shard: u32) -> String {
    format!("{ns}/{shard}")
}
