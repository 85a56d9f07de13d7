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

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use events_core::event::EncodedEvents;
use events_core::limits::BATCH_ID_TTL_MS;
use events_core::pattern::Pattern;
use events_core::{ApiError, ErrorCode, Event, Timestamp};
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, Placement, SqlStorage, SqlValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::alarm::AlarmSlot;
use crate::fanout::{self, LAKE};
use crate::outbox_relay::{OutboxRelay, RelayRequest, relay_name};
use crate::var_or;

/// Default: flush once this many events are buffered.
pub const DEFAULT_FLUSH_MAX_EVENTS: u64 = 20_000;
/// Default: flush once the buffered JSON reaches this many bytes (8 MiB).
pub const DEFAULT_FLUSH_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Default: flush once the oldest buffered event waited this long (ms).
pub const DEFAULT_FLUSH_MAX_AGE_MS: i64 = 10_000;
/// Most rows one flush plan covers (bounds the memory of one flush).
pub const MAX_ROWS_PER_FLUSH: i64 = 100_000;
/// An hour is compacted once it ended this long ago (late writes settle).
pub const COMPACT_GRACE_MS: i64 = 5 * 60_000;
/// Most events one outbox read returns (also one page of a flush read).
pub const MAX_OUTBOX_READ: usize = 10_000;
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
    /// Folder of the events table in the bucket.
    pub prefix: String,
    /// Hours end this long before they are compacted (ms).
    pub compact_grace_ms: i64,
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
            prefix: host.var("lake.events_prefix").unwrap_or_else(|| events_lake::EVENTS_TABLE_PREFIX.to_string()),
            compact_grace_ms: var_or(host, "writer.compact_grace_ms", COMPACT_GRACE_MS).max(0),
            outbox_max_events: var_or(host, "writer.outbox_max_events", DEFAULT_OUTBOX_MAX_EVENTS).max(1),
        }
    }
}

/// Which buffered events to read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadFilter {
    /// Event-type pattern (`order.*`).
    pub pattern: Option<String>,
    /// Earliest `ts`, inclusive.
    pub from: Option<Timestamp>,
    /// Latest `ts`, inclusive.
    pub to: Option<Timestamp>,
    /// Only events strictly before this (ts, id) position (newest-first paging).
    pub before: Option<(Timestamp, String)>,
}

/// Requests to an [`EventWriter`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriterRequest {
    /// Appends validated events durably.
    Append {
        /// The events, in their stored form. Events whose id the server made
        /// (fresh and random) get no deduplication entry.
        events: EncodedEvents,
        /// The client's idempotency key, if any.
        batch_id: Option<String>,
    },
    /// Plans a flush if one is due (with `force`: if anything is unflushed)
    /// and answers the plan, or the plan already open. Sent by the lake relay.
    TakeFlush {
        /// Plan even below the thresholds.
        force: bool,
    },
    /// Unflushed rows of a plan after `after` (a page of at most `limit`).
    ReadFlush {
        /// The plan.
        plan: FlushPlan,
        /// Sequence number the previous page ended at (`plan.first - 1` for the first page).
        after: u64,
        /// Most rows answered.
        limit: usize,
    },
    /// The plan's files are in the lake and the catalog: mark its rows flushed.
    FlushCommitted {
        /// The plan.
        plan: FlushPlan,
        /// Files written.
        files: u64,
        /// Events flushed.
        events: u64,
        /// Hour folders that got a file (`prefix`, hour start in ms), for compaction.
        hours: Vec<(String, i64)>,
    },
    /// Hour folders whose hour ended at or before `closed` (ms) and that got files since their last compaction.
    DueCompactions {
        /// The cut-off.
        closed: i64,
    },
    /// An hour folder was compacted.
    Compacted {
        /// Its prefix.
        prefix: String,
    },
    /// Buffered (not yet flushed) events, newest first.
    Recent {
        /// Filter.
        filter: ReadFilter,
        /// Most events returned.
        limit: usize,
    },
    /// Counters.
    Stats,
    /// Registers an outbox consumer (no-op if it exists).
    RegisterConsumer {
        /// Consumer name.
        name: String,
        /// Start from the oldest retained event rather than the next new one.
        from_start: bool,
    },
    /// Events after the consumer's cursor.
    ReadOutbox {
        /// Consumer name.
        consumer: String,
        /// Most events returned.
        limit: usize,
    },
    /// Moves the consumer's cursor to `upto` (inclusive).
    AckOutbox {
        /// Consumer name.
        consumer: String,
        /// Last sequence number handled.
        upto: u64,
    },
    /// The log rows after sequence number `after` (whole rows, until they
    /// hold at least `limit` such events) and the highest sequence number
    /// assigned, for readers that keep their own position (the live tail).
    /// Registers nothing and holds nothing back: rows leave the log as usual,
    /// so a reader whose position fell behind the oldest row sees the gap.
    ReadLog {
        /// Sequence number the reader has seen up to.
        after: u64,
        /// Most events wanted (0: only the highest sequence number).
        limit: usize,
    },
    /// A consumer failed to take the events after its cursor (kept for `Stats`).
    ConsumerFailed {
        /// Consumer name.
        consumer: String,
        /// What went wrong.
        error: String,
    },
}

impl WriterRequest {
    /// An append of validated events of `ns`; `server_ids[i]`: the server
    /// made the id of `events[i]` (missing entries count as false).
    pub fn append(ns: &str, events: &[Event], server_ids: &[bool], batch_id: Option<String>) -> Self {
        WriterRequest::Append { events: EncodedEvents::from_events(ns, events, server_ids), batch_id }
    }
}

/// A flush plan: the sequence range of the rows one flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushPlan {
    /// First sequence number (names the plan's files).
    pub first: u64,
    /// Last sequence number, inclusive.
    pub last: u64,
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Events in the request.
    pub received: usize,
    /// Events stored (not duplicates).
    pub stored: usize,
    /// Events skipped because their id was already stored.
    pub duplicates: usize,
    /// The whole batch was a replay of an accepted `batchId`.
    pub deduplicated: bool,
}

/// Writer counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterStats {
    /// Events waiting to be flushed.
    pub buffered: u64,
    /// Their JSON bytes.
    pub buffered_bytes: u64,
    /// Time of the oldest of them.
    pub oldest_buffered: Option<Timestamp>,
    /// Rows kept for outbox consumers after their flush.
    pub retained: u64,
    /// Parquet files written.
    pub files_written: u64,
    /// Events flushed.
    pub events_flushed: u64,
    /// Highest sequence number assigned.
    pub last_seq: u64,
    /// Registered consumers and their cursors.
    pub consumers: Vec<(String, u64)>,
    /// Consumers whose last attempt failed, with the error.
    pub consumer_errors: Vec<(String, String)>,
    /// Event ids held for deduplication (client-given ids of the last day).
    pub dedup_entries: u64,
}

impl WriterStats {
    /// Events after `consumer`'s cursor (its backlog), if it is registered.
    pub fn backlog(&self, consumer: &str) -> Option<u64> {
        self.consumers
            .iter()
            .find(|(name, _)| name == consumer)
            .map(|(_, cursor)| self.last_seq.saturating_sub(*cursor))
    }
}

/// One event read from the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Its sequence number in this writer.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// One log row as a relay reads it: `count` events ending at `last_seq`,
/// the JSON array the writer stored, passed on undecoded (relays decode on
/// their own thread, and only what they need).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Sequence number of the row's last event.
    pub last_seq: u64,
    /// Events in the row.
    pub count: u64,
    /// The events, a JSON array.
    pub events: Box<RawValue>,
    /// Every event type in the row (maybe more), when the writer listed
    /// them: a reader that wants none of them skips the row undecoded.
    #[serde(default)]
    pub types: Option<Vec<String>>,
}

impl OutboxRow {
    /// Sequence number of the row's first event.
    pub fn first_seq(&self) -> u64 {
        self.last_seq + 1 - self.count
    }

    /// The row's events with sequence numbers after `after`, undecoded.
    pub fn raw_events(&self, after: u64) -> ObjectResult<Vec<(u64, &RawValue)>> {
        let raw: Vec<&RawValue> = serde_json::from_str(self.events.get()).map_err(corrupt)?;
        if raw.len() as u64 != self.count {
            return Err(corrupt(format!("a log row of {} events holds {}", self.count, raw.len())));
        }
        Ok((self.first_seq()..).zip(raw).filter(|(seq, _)| *seq > after).collect())
    }

    /// The row's events with sequence numbers after `after`, decoded.
    pub fn decode(&self, after: u64) -> ObjectResult<Vec<OutboxEvent>> {
        self.raw_events(after)?
            .into_iter()
            .map(|(seq, raw)| Ok(OutboxEvent { seq, event: serde_json::from_str(raw.get()).map_err(corrupt)? }))
            .collect()
    }
}

/// Every event of `rows` after sequence number `after`, decoded, in order.
pub fn decode_rows(rows: &[OutboxRow], after: u64) -> ObjectResult<Vec<OutboxEvent>> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(row.decode(after)?);
    }
    Ok(out)
}

/// Answers of an [`EventWriter`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriterResponse {
    /// Append result.
    Appended(Appended),
    /// The open flush plan, if any.
    Plan(Option<FlushPlan>),
    /// Hour folders to compact.
    Prefixes(Vec<String>),
    /// Events read.
    Events(Vec<Event>),
    /// Outbox rows holding the events after `after`.
    Rows {
        /// Events up to this sequence number were asked to be left out (the
        /// first row may hold some).
        after: u64,
        /// The rows, in order.
        rows: Vec<OutboxRow>,
    },
    /// Log rows after a reader's own position ([`WriterRequest::ReadLog`]).
    Log {
        /// Highest sequence number assigned.
        last_seq: u64,
        /// The rows, in order. The first starts after the reader's position
        /// plus one when the rows in between already left the log.
        rows: Vec<OutboxRow>,
    },
    /// Counters.
    Stats(WriterStats),
    /// Done.
    Ok,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
    version: 1,
    name: "buffer, dedup, flush plan, outbox",
    sql: "CREATE TABLE buffer (
              seq INTEGER PRIMARY KEY AUTOINCREMENT,
              ts INTEGER NOT NULL,
              bytes INTEGER NOT NULL,
              body TEXT NOT NULL,
              flushed INTEGER NOT NULL DEFAULT 0,
              received_at INTEGER NOT NULL
          );
          CREATE INDEX buffer_unflushed_ts ON buffer (flushed, ts);
          CREATE TABLE event_ids (id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
          CREATE INDEX event_ids_at ON event_ids (at);
          CREATE TABLE batches (batch_id TEXT PRIMARY KEY, received INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;
          CREATE INDEX batches_at ON batches (at);
          CREATE TABLE flush_plan (id INTEGER PRIMARY KEY CHECK (id = 1), first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL);
          CREATE TABLE dirty_hours (prefix TEXT PRIMARY KEY, hour INTEGER NOT NULL) WITHOUT ROWID;
          CREATE TABLE consumers (name TEXT PRIMARY KEY, cursor INTEGER NOT NULL, registered_at INTEGER NOT NULL);
          CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    },
    Migration {
        version: 2,
        name: "consumer errors",
        sql: "ALTER TABLE consumers ADD COLUMN last_error TEXT;",
    },
    Migration {
        version: 3,
        name: "one log row per appended batch, a flush watermark",
        // Old rows become one-event rows under their own sequence number; the
        // flushed ones form a prefix, so a watermark replaces the flag. With
        // no rows left, the highest cursor is at least the last sequence
        // number ever assigned (rows go only once every cursor passed them),
        // so sequence numbers (and the file keys named by them) never repeat.
        sql: "CREATE TABLE log (
                  last_seq INTEGER PRIMARY KEY,
                  count INTEGER NOT NULL CHECK (count > 0),
                  bytes INTEGER NOT NULL,
                  min_ts INTEGER NOT NULL,
                  max_ts INTEGER NOT NULL,
                  received_at INTEGER NOT NULL,
                  body BLOB NOT NULL
              );
              INSERT INTO log (last_seq, count, bytes, min_ts, max_ts, received_at, body)
                  SELECT seq, 1, bytes, ts, ts, received_at, CAST('[' || body || ']' AS BLOB) FROM buffer;
              INSERT INTO counters (name, value) VALUES ('flushed_upto', COALESCE(
                  (SELECT MIN(seq) - 1 FROM buffer WHERE flushed = 0),
                  (SELECT MAX(seq) FROM buffer),
                  (SELECT MAX(cursor) FROM consumers),
                  0)) ON CONFLICT(name) DO UPDATE SET value = excluded.value;
              DROP TABLE buffer;",
    },
    Migration {
        version: 4,
        name: "the event types of each log row",
        // A JSON array of every type in the row; NULL when not listed (too
        // many types, or a row written before): readers then look at each event.
        sql: "ALTER TABLE log ADD COLUMN types TEXT;",
    },
];

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
    /// Relays (by consumer, [`LAKE`] included) woken since they last found
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

/// A stored log row or event that does not decode.
pub(crate) fn corrupt(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::StorageError, format!("writer buffer: {e}"))
}

impl EventWriter {
    fn counter<S: SqlStorage>(db: &S, name: &str) -> ObjectResult<u64> {
        Ok(db.query_one("SELECT value FROM counters WHERE name = ?1", &[name.into()])?.map_or(0, |r| r.i64(0) as u64))
    }

    fn bump<S: SqlStorage>(db: &S, name: &str, by: u64) -> ObjectResult<()> {
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            &[name.into(), (by as i64).into()],
        )?;
        Ok(())
    }

    fn set_counter<S: SqlStorage>(db: &S, name: &str, value: u64) -> ObjectResult<()> {
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            &[name.into(), (value as i64).into()],
        )?;
        Ok(())
    }

    fn needs_flush(&self, now: i64) -> bool {
        self.buffered >= self.config.max_events
            || self.buffered_bytes >= self.config.max_bytes
            || self.oldest_received.is_some_and(|t| now - t >= self.config.max_age_ms)
    }

    /// The open flush plan, if any.
    fn open_plan<S: SqlStorage>(db: &S) -> ObjectResult<Option<FlushPlan>> {
        Ok(db
            .query_one("SELECT first_seq, last_seq FROM flush_plan", &[])?
            .map(|r| FlushPlan { first: r.i64(0) as u64, last: r.i64(1) as u64 }))
    }

    /// Writes a flush plan for the oldest unflushed rows (whole rows, about
    /// [`MAX_ROWS_PER_FLUSH`] events), if none exists.
    fn plan_flush<S: SqlStorage>(&self, db: &S) -> ObjectResult<Option<FlushPlan>> {
        if let Some(plan) = Self::open_plan(db)? {
            return Ok(Some(plan));
        }
        let (mut first, mut last, mut events) = (None, 0, 0);
        db.query_each(
            "SELECT last_seq, count FROM log WHERE last_seq > ?1 ORDER BY last_seq",
            &[(self.flushed_upto as i64).into()],
            &mut |r| {
                let (row_last, count) = (r.i64(0), r.i64(1));
                first.get_or_insert(row_last - count + 1);
                last = row_last;
                events += count;
                events < MAX_ROWS_PER_FLUSH
            },
        )?;
        let Some(first) = first else { return Ok(None) };
        assert!(first as u64 > self.flushed_upto, "a plan starts after the flushed rows");
        db.execute(
            "INSERT INTO flush_plan (id, first_seq, last_seq) VALUES (1, ?1, ?2)",
            &[first.into(), last.into()],
        )?;
        Ok(Some(FlushPlan { first: first as u64, last: last as u64 }))
    }

    /// Moves the flush watermark past a committed plan; a report of a plan
    /// that is no longer open (a retry that already got through) changes nothing.
    fn complete_flush<S: SqlStorage>(
        &mut self,
        db: &S,
        plan: FlushPlan,
        files: u64,
        events: u64,
        hours: &[(String, i64)],
    ) -> ObjectResult<()> {
        if Self::open_plan(db)? != Some(plan) {
            return Ok(());
        }
        assert!(plan.last >= self.flushed_upto, "flushes go forward");
        self.flushed_upto = plan.last;
        Self::set_counter(db, "flushed_upto", plan.last)?;
        db.execute("DELETE FROM flush_plan", &[])?;
        for (prefix, hour) in hours {
            db.execute(
                "INSERT INTO dirty_hours (prefix, hour) VALUES (?1, ?2) ON CONFLICT(prefix) DO NOTHING",
                &[prefix.as_str().into(), (*hour).into()],
            )?;
        }
        Self::bump(db, "files_written", files)?;
        Self::bump(db, "events_flushed", events)?;
        self.trim(db)?;
        self.refresh(db)
    }

    /// Events not yet taken by `consumer` ([`LAKE`]: not yet flushed).
    fn backlog(&self, consumer: &str) -> u64 {
        if consumer == LAKE {
            return self.buffered;
        }
        self.cursors.get(consumer).map_or(0, |cursor| self.last_seq.saturating_sub(*cursor))
    }

    /// Refuses an append while the flush or a built-in consumer lags by the bound.
    fn check_room(&self) -> ObjectResult<()> {
        for consumer in fanout::RELAYED {
            let backlog = self.backlog(consumer);
            if backlog >= self.config.outbox_max_events {
                metrics::counter!("events_outbox_refused_total", "consumer" => *consumer).increment(1);
                return Err(ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    format!(
                        "{backlog} events of this namespace wait for the {consumer} consumer (bound {}); retry later",
                        self.config.outbox_max_events
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Wakes `consumer`'s relay unless it is known to be awake (`force`: anyway).
    /// Never waits: the relay may be busy with a slow consumer.
    fn wake<H: Host>(&mut self, cx: &ObjectContext<H>, consumer: &'static str, force: bool) {
        if self.awake.insert(consumer) || force {
            cx.stub::<OutboxRelay>(relay_name(cx.name(), consumer)).notify(RelayRequest::Wake);
        }
    }

    /// Moves the `events_outbox_backlog` gauges to this writer's backlog.
    fn report_backlog(&mut self) {
        for &consumer in fanout::RELAYED {
            let now = self.backlog(consumer);
            let before = self.reported.insert(consumer, now).unwrap_or(0);
            if now != before {
                metrics::gauge!("events_outbox_backlog", "consumer" => consumer).increment(now as f64 - before as f64);
            }
        }
    }

    /// Reloads the flush watermark and the highest sequence number assigned
    /// (at least every row's, the watermark and every cursor: rows leave the
    /// log only once flushed and passed by every cursor).
    fn load_positions<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        self.flushed_upto = Self::counter(db, "flushed_upto")?;
        let highest = db
            .query_one(
                "SELECT MAX(COALESCE((SELECT MAX(last_seq) FROM log), 0), (SELECT COALESCE(MAX(cursor), 0) FROM consumers))",
                &[],
            )?
            .map_or(0, |r| r.i64(0) as u64);
        self.last_seq = highest.max(self.flushed_upto);
        Ok(())
    }

    /// Reloads the built-in consumers' cursors.
    fn load_cursors<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        for &consumer in fanout::CONSUMERS {
            let cursor = db
                .query_one("SELECT cursor FROM consumers WHERE name = ?1", &[consumer.into()])?
                .map_or(0, |r| r.i64(0) as u64);
            self.cursors.insert(consumer, cursor);
        }
        Ok(())
    }

    /// Deletes flushed rows every consumer has acknowledged.
    fn trim<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        db.execute(
            "DELETE FROM log WHERE last_seq <= MIN(?1, (SELECT COALESCE(MIN(cursor), 9223372036854775807) FROM consumers))",
            &[(self.flushed_upto as i64).into()],
        )?;
        Ok(())
    }

    /// Reloads the unflushed totals from storage.
    fn refresh<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        let r = db
            .query_one(
                "SELECT COALESCE(SUM(count), 0), COALESCE(SUM(bytes), 0), MIN(received_at) FROM log WHERE last_seq > ?1",
                &[(self.flushed_upto as i64).into()],
            )?
            .expect("aggregate row");
        self.buffered = r.i64(0) as u64;
        self.buffered_bytes = r.i64(1) as u64;
        self.oldest_received = r.opt_i64(2);
        Ok(())
    }

    fn append<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        mut events: EncodedEvents,
        batch_id: Option<String>,
    ) -> ObjectResult<Appended> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        let received = events.len();
        if let Some(batch) = &batch_id {
            if let Some(r) = db.query_one(
                "SELECT received FROM batches WHERE batch_id = ?1 AND at >= ?2",
                &[batch.as_str().into(), (now - BATCH_ID_TTL_MS).into()],
            )? {
                return Ok(Appended { received: r.i64(0) as usize, stored: 0, duplicates: 0, deduplicated: true });
            }
            db.execute(
                "INSERT INTO batches (batch_id, received, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(batch_id) DO UPDATE SET received = excluded.received, at = excluded.at",
                &[batch.as_str().into(), received.into(), now.into()],
            )?;
        }
        let mut seen = Vec::new();
        for (index, head) in events.heads().iter().enumerate() {
            if let Some(id) = &head.client_id {
                let fresh = db.execute(
                    "INSERT INTO event_ids (id, at) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING",
                    &[id.as_str().into(), now.into()],
                )?;
                if fresh == 0 {
                    seen.push(index);
                }
            }
        }
        if !seen.is_empty() {
            events.retain(|i| seen.binary_search(&i).is_err());
        }
        if !events.is_empty() {
            self.insert_rows(db, &events, 0..events.len(), now)?;
        }
        let stored = events.len();
        Ok(Appended { received, stored, duplicates: received - stored, deduplicated: false })
    }

    /// Stores the events `range` of `events` as one log row (or, past
    /// [`MAX_LOG_ROW_BYTES`], as several) under the next sequence numbers.
    fn insert_rows<S: SqlStorage>(
        &mut self,
        db: &S,
        events: &EncodedEvents,
        range: Range<usize>,
        now: i64,
    ) -> ObjectResult<()> {
        debug_assert!(!range.is_empty());
        if events.json_of(range.clone()).len() + 2 > MAX_LOG_ROW_BYTES && range.len() > 1 {
            let middle = range.start + range.len() / 2;
            self.insert_rows(db, events, range.start..middle, now)?;
            return self.insert_rows(db, events, middle..range.end, now);
        }
        let body = events.array_of(range.clone()).into_bytes();
        let heads = &events.heads()[range.clone()];
        let (min_ts, max_ts) =
            heads.iter().fold((i64::MAX, i64::MIN), |(lo, hi), h| (lo.min(h.ts.as_millis()), hi.max(h.ts.as_millis())));
        let bytes = body.len() as u64;
        let count = range.len();
        let last_seq = self.last_seq + count as u64;
        let types = match events.types() {
            Some(types) => serde_json::to_string(types).map_err(corrupt)?.into(),
            None => SqlValue::Null,
        };
        db.execute(
            "INSERT INTO log (last_seq, count, bytes, min_ts, max_ts, received_at, body, types)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                (last_seq as i64).into(),
                count.into(),
                (bytes as i64).into(),
                min_ts.into(),
                max_ts.into(),
                now.into(),
                SqlValue::Blob(body),
                types,
            ],
        )?;
        self.last_seq = last_seq;
        self.buffered += count as u64;
        self.buffered_bytes += bytes;
        self.oldest_received.get_or_insert(now);
        Ok(())
    }

    /// The rows holding the events with sequence numbers in `(after, upto]`,
    /// in order, whole rows, until they hold at least `limit` such events.
    fn read_rows<S: SqlStorage>(db: &S, after: u64, upto: u64, limit: usize) -> ObjectResult<Vec<OutboxRow>> {
        let mut rows = Vec::new();
        let mut failure = None;
        if limit == 0 || after >= upto {
            return Ok(rows);
        }
        let mut events = 0;
        db.query_each(
            "SELECT last_seq, count, body, types FROM log WHERE last_seq > ?1 AND last_seq - count < ?2 ORDER BY last_seq",
            &[(after as i64).into(), (upto.min(events_runtime::MAX_EXACT_INTEGER as u64) as i64).into()],
            &mut |r| {
                let (last_seq, count) = (r.i64(0) as u64, r.i64(1) as u64);
                let body = String::from_utf8(r.bytes(2).to_vec())
                    .map_err(corrupt)
                    .and_then(|text| RawValue::from_string(text).map_err(corrupt));
                let types = r.opt_str(3).map(serde_json::from_str::<Vec<String>>).transpose().map_err(corrupt);
                match body.and_then(|events| Ok((events, types?))) {
                    Ok((events, types)) => rows.push(OutboxRow { last_seq, count, events, types }),
                    Err(e) => {
                        failure = Some(e);
                        return false;
                    }
                }
                let first = last_seq + 1 - count;
                events += last_seq.min(upto) - first.max(after + 1) + 1;
                events < limit as u64
            },
        )?;
        match failure {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    fn prune<S: SqlStorage>(db: &S, now: i64) -> ObjectResult<()> {
        let horizon = now - BATCH_ID_TTL_MS;
        db.execute(
            "DELETE FROM event_ids WHERE id IN (SELECT id FROM event_ids WHERE at < ?1 ORDER BY at LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        db.execute(
            "DELETE FROM batches WHERE batch_id IN (SELECT batch_id FROM batches WHERE at < ?1 ORDER BY at LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        Ok(())
    }

    /// Unflushed events matching `filter`, newest first (by `ts`, then id).
    /// Rows are visited newest `max_ts` first and the visit stops once no
    /// remaining row can hold an event that would make the first `limit`.
    fn read_recent<S: SqlStorage>(&self, db: &S, filter: &ReadFilter, limit: usize) -> ObjectResult<Vec<Event>> {
        let pattern = filter.pattern.as_deref().map(Pattern::parse).transpose()?;
        let from = filter.from.map_or(events_runtime::MIN_EXACT_INTEGER, |t| t.as_millis());
        let to = filter.to.map_or(events_runtime::MAX_EXACT_INTEGER, |t| t.as_millis());
        let mut rows: Vec<(i64, i64)> = db
            .query(
                "SELECT last_seq, max_ts FROM log WHERE last_seq > ?1 AND max_ts >= ?2 AND min_ts <= ?3",
                &[(self.flushed_upto as i64).into(), from.into(), to.into()],
            )?
            .iter()
            .map(|r| (r.i64(0), r.i64(1)))
            .collect();
        rows.sort_by_key(|&(seq, max_ts)| std::cmp::Reverse((max_ts, seq)));
        let newer = |event: &Event| match &filter.before {
            None => true,
            Some((ts, id)) => (event.ts, &event.id) < (*ts, id),
        };
        let mut out: Vec<Event> = Vec::new();
        for (seq, max_ts) in rows {
            if limit == 0 || (out.len() >= limit && out.last().is_some_and(|e| e.ts.as_millis() > max_ts)) {
                break;
            }
            let Some(row) = db.query_one("SELECT count, body FROM log WHERE last_seq = ?1", &[seq.into()])? else {
                continue;
            };
            out.extend(decode_row(row.bytes(1), row.i64(0) as u64)?.into_iter().filter(|e| {
                (from..=to).contains(&e.ts.as_millis())
                    && newer(e)
                    && pattern.as_ref().is_none_or(|p| p.matches(&e.event_type))
            }));
            out.sort_by(|a, b| (b.ts, &b.id).cmp(&(a.ts, &a.id)));
            out.truncate(limit);
        }
        Ok(out)
    }
}

/// The events of one log row, checked against its count.
fn decode_row(body: &[u8], count: u64) -> ObjectResult<Vec<Event>> {
    let events: Vec<Event> = serde_json::from_slice(body).map_err(corrupt)?;
    if events.len() as u64 != count {
        return Err(corrupt(format!("a log row of {count} events holds {}", events.len())));
    }
    Ok(events)
}

impl DurableObject for EventWriter {
    const CLASS: &'static str = "EventWriter";
    const PLACEMENT: Placement = Placement::Latency;
    type Request = WriterRequest;
    type Response = WriterResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let (ns, _shard) = cx.name().rsplit_once('/').unwrap_or((cx.name(), "0"));
        let mut writer = EventWriter {
            ns: ns.to_string(),
            config: WriterConfig::from_host(cx.host()),
            buffered: 0,
            buffered_bytes: 0,
            oldest_received: None,
            alarm: AlarmSlot::load(cx.storage()).await?,
            last_seq: 0,
            flushed_upto: 0,
            cursors: BTreeMap::new(),
            awake: BTreeSet::new(),
            reported: BTreeMap::new(),
            lake_error: None,
        };
        writer.load_positions(cx.storage())?;
        for consumer in fanout::CONSUMERS {
            cx.storage().execute(
                "INSERT INTO consumers (name, cursor, registered_at) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO NOTHING",
                &[(*consumer).into(), (writer.last_seq as i64).into(), cx.now().as_millis().into()],
            )?;
        }
        writer.load_cursors(cx.storage())?;
        writer.refresh(cx.storage())?;
        writer.report_backlog();
        // Work left from before a restart: the alarm wakes the relays.
        if fanout::RELAYED.iter().any(|c| writer.backlog(c) > 0) {
            writer.alarm.arm(cx.storage(), cx.now().as_millis()).await?;
        }
        Ok(writer)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: WriterRequest) -> ObjectResult<WriterResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        match req {
            WriterRequest::Append { events, batch_id } => {
                assert_eq!(events.namespace(), self.ns, "events reach only their own namespace's writer");
                self.check_room()?;
                let result = self.append(cx, events, batch_id)?;
                if result.stored > 0 {
                    for &consumer in fanout::CONSUMERS {
                        self.wake(cx, consumer, false);
                    }
                }
                if self.needs_flush(now) {
                    self.wake(cx, LAKE, false);
                } else if let Some(oldest) = self.oldest_received {
                    self.alarm.arm(cx.storage(), oldest + self.config.max_age_ms).await?;
                }
                self.report_backlog();
                Ok(WriterResponse::Appended(result))
            }
            WriterRequest::TakeFlush { force } => {
                let plan = match Self::open_plan(db)? {
                    Some(plan) => Some(plan),
                    None if force || self.needs_flush(now) => self.plan_flush(db)?,
                    None => None,
                };
                if plan.is_none() {
                    self.awake.remove(LAKE);
                }
                Ok(WriterResponse::Plan(plan))
            }
            WriterRequest::ReadFlush { plan, after, limit } => {
                if Self::open_plan(db)? != Some(plan) {
                    return Err(ApiError::new(ErrorCode::Conflict, format!("flush plan {plan:?} is not open")));
                }
                let after = after.max(self.flushed_upto);
                let rows = Self::read_rows(db, after, plan.last, limit.min(MAX_OUTBOX_READ))?;
                Ok(WriterResponse::Rows { after, rows })
            }
            WriterRequest::FlushCommitted { plan, files, events, hours } => {
                self.complete_flush(db, plan, files, events, &hours)?;
                self.lake_error = None;
                self.report_backlog();
                Ok(WriterResponse::Ok)
            }
            WriterRequest::DueCompactions { closed } => {
                let rows =
                    db.query("SELECT prefix FROM dirty_hours WHERE hour <= ?1 ORDER BY hour", &[closed.into()])?;
                Ok(WriterResponse::Prefixes(rows.iter().map(|r| r.str(0).to_string()).collect()))
            }
            WriterRequest::Compacted { prefix } => {
                db.execute("DELETE FROM dirty_hours WHERE prefix = ?1", &[prefix.into()])?;
                Ok(WriterResponse::Ok)
            }
            WriterRequest::Recent { filter, limit } => {
                Ok(WriterResponse::Events(self.read_recent(db, &filter, limit)?))
            }
            WriterRequest::Stats => {
                let mut consumers = Vec::new();
                let mut consumer_errors: Vec<(String, String)> =
                    self.lake_error.iter().map(|e| (LAKE.to_string(), e.clone())).collect();
                for r in db.query("SELECT name, cursor, last_error FROM consumers ORDER BY name", &[])?.iter() {
                    consumers.push((r.str(0).to_string(), r.i64(1) as u64));
                    if let Some(error) = r.opt_str(2) {
                        consumer_errors.push((r.str(0).to_string(), error.to_string()));
                    }
                }
                let retained = db
                    .query_one(
                        "SELECT COALESCE(SUM(count), 0) FROM log WHERE last_seq <= ?1",
                        &[(self.flushed_upto as i64).into()],
                    )?
                    .map_or(0, |r| r.i64(0));
                Ok(WriterResponse::Stats(WriterStats {
                    buffered: self.buffered,
                    buffered_bytes: self.buffered_bytes,
                    oldest_buffered: self.oldest_received.map(Timestamp),
                    retained: retained as u64,
                    files_written: Self::counter(db, "files_written")?,
                    events_flushed: Self::counter(db, "events_flushed")?,
                    last_seq: self.last_seq,
                    consumers,
                    consumer_errors,
                    dedup_entries: db.query_one("SELECT COUNT(*) FROM event_ids", &[])?.map_or(0, |r| r.i64(0) as u64),
                }))
            }
            WriterRequest::RegisterConsumer { name, from_start } => {
                if name.is_empty() || name.len() > MAX_CONSUMER_NAME_LEN {
                    return Err(ApiError::new(ErrorCode::InvalidRequest, "consumer names are 1-128 characters"));
                }
                let start = if from_start {
                    db.query_one(
                        "SELECT COALESCE(MIN(last_seq - count), ?1) FROM log",
                        &[(self.last_seq as i64).into()],
                    )?
                    .map_or(0, |r| r.i64(0))
                } else {
                    self.last_seq as i64
                };
                db.execute(
                    "INSERT INTO consumers (name, cursor, registered_at) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO NOTHING",
                    &[name.into(), start.into(), now.into()],
                )?;
                Ok(WriterResponse::Ok)
            }
            WriterRequest::ReadOutbox { consumer, limit } => {
                let cursor = db
                    .query_one("SELECT cursor FROM consumers WHERE name = ?1", &[consumer.as_str().into()])?
                    .ok_or_else(|| ApiError::not_found(format!("no outbox consumer {consumer}")))?
                    .i64(0);
                let after = cursor as u64;
                let rows =
                    Self::read_rows(db, after, events_runtime::MAX_EXACT_INTEGER as u64, limit.min(MAX_OUTBOX_READ))?;
                if rows.is_empty() {
                    // The relay goes idle now; the next append wakes it.
                    self.awake.retain(|c| *c != consumer);
                }
                Ok(WriterResponse::Rows { after, rows })
            }
            WriterRequest::AckOutbox { consumer, upto } => {
                let changed = db.execute(
                    "UPDATE consumers SET cursor = MAX(cursor, ?2), last_error = NULL WHERE name = ?1",
                    &[consumer.as_str().into(), (upto as i64).into()],
                )?;
                if changed == 0 {
                    return Err(ApiError::not_found(format!("no outbox consumer {consumer}")));
                }
                if let Some(cursor) = self.cursors.iter_mut().find(|(name, _)| **name == consumer).map(|(_, c)| c) {
                    *cursor = (*cursor).max(upto);
                }
                self.trim(db)?;
                self.report_backlog();
                Ok(WriterResponse::Ok)
            }
            WriterRequest::ReadLog { after, limit } => {
                let rows = Self::read_rows(db, after, self.last_seq, limit.min(MAX_OUTBOX_READ))?;
                Ok(WriterResponse::Log { last_seq: self.last_seq, rows })
            }
            WriterRequest::ConsumerFailed { consumer, error } if consumer == LAKE => {
                self.lake_error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
                Ok(WriterResponse::Ok)
            }
            WriterRequest::ConsumerFailed { consumer, error } => {
                db.execute(
                    "UPDATE consumers SET last_error = ?2 WHERE name = ?1",
                    &[consumer.into(), error.chars().take(MAX_ERROR_CHARS).collect::<String>().into()],
                )?;
                Ok(WriterResponse::Ok)
            }
        }
    }

    /// The backstop of the wake-ups: while the flush or a consumer has work,
    /// wakes its relay every [`RELAY_NUDGE_MS`]; also wakes the lake relay
    /// for the age threshold and for hours due for compaction, and prunes
    /// the dedup windows.
    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        self.alarm.fired();
        let mut next = BTreeMap::new();
        let compact_at = db
            .query_one("SELECT MIN(hour) FROM dirty_hours", &[])?
            .and_then(|r| r.opt_i64(0))
            .map(|hour| hour + events_lake::layout::HOUR_MS + self.config.compact_grace_ms);
        let lake_due =
            self.needs_flush(now) || Self::open_plan(db)?.is_some() || compact_at.is_some_and(|at| at <= now);
        if lake_due {
            self.wake(cx, LAKE, true);
            next.insert(now + RELAY_NUDGE_MS, ());
        }
        for &consumer in fanout::CONSUMERS {
            if self.backlog(consumer) > 0 {
                self.wake(cx, consumer, true);
                next.insert(now + RELAY_NUDGE_MS, ());
            }
        }
        Self::prune(db, now)?;
        if let Some(oldest) = self.oldest_received {
            next.insert(oldest + self.config.max_age_ms, ());
        }
        if let Some(at) = compact_at {
            next.insert(at, ());
        }
        if let Some(r) = db.query_one("SELECT MIN(at) FROM event_ids", &[])?
            && let Some(at) = r.opt_i64(0)
        {
            next.insert(at + BATCH_ID_TTL_MS, ());
        }
        if let Some((&at, _)) = next.first_key_value() {
            self.alarm.arm(cx.storage(), at.max(now + 1)).await?;
        }
        Ok(())
    }
}
