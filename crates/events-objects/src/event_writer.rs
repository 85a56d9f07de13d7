//! [`EventWriter`]: the durable buffer of accepted events, its flush to
//! Parquet, the compaction of small files, and the fan-out outbox.
//!
//! One object per namespace shard, named `<ns>/<shard>`.
//!
//! # Flush protocol (exactly once, across crashes)
//! 1. An append (or the alarm) that finds the buffer over a threshold writes
//!    a **flush plan** — the sequence range `[first, last]` of unflushed rows
//!    — and sets the alarm to now. The plan commits with that request.
//! 2. The alarm executes the plan: it encodes exactly those rows, one
//!    Parquet file per (namespace, event hour), under keys derived only from
//!    the plan's first sequence number (`<shard>-<first>.parquet`), puts
//!    them, then marks the rows flushed and deletes the plan, in one commit.
//!
//! A crash before step 2 commits leaves the rows unflushed (and the plan, if
//! it was committed): the retry starts from the same first row, covers at
//! least the same rows, and writes under the same keys, replacing any file
//! already written. This also holds when a flush is planned and executed in
//! one request (`Flush`, or the alarm when a threshold is crossed): an
//! uncommitted plan leaves nothing behind but files that the retry
//! overwrites. So every acknowledged event ends up in exactly one file.
//!
//! # Outbox
//! Rows stay in the buffer after their flush until every registered
//! consumer has acknowledged them ([`WriterRequest::AckOutbox`]), so a
//! consumer that pulls with its cursor sees every event at least once.

use std::collections::BTreeMap;

use events_core::limits::BATCH_ID_TTL_MS;
use events_core::pattern::Pattern;
use events_core::{ApiError, ErrorCode, Event, Timestamp};
use events_lake::{encode_events_with, event_file_key, hour_prefix, observe_columns, partition_by_hour};
use events_runtime::context::ObjectStorage;
use events_runtime::{BlobStore, DurableObject, Host, Migration, ObjectContext, ObjectResult, SqlStorage, SqlValue};
use serde::{Deserialize, Serialize};

use crate::Catalog;
use crate::catalog::{CatalogRequest, CatalogResponse, EVENTS_TABLE, MaintainOptions, NewFile};
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
/// Most events one outbox read returns.
pub const MAX_OUTBOX_READ: usize = 10_000;
/// Longest consumer name.
pub const MAX_CONSUMER_NAME_LEN: usize = 128;
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
}

impl WriterConfig {
    fn from_host<H: Host>(host: &H) -> Self {
        WriterConfig {
            max_events: var_or(host, "writer.flush_max_events", DEFAULT_FLUSH_MAX_EVENTS).max(1),
            max_bytes: var_or(host, "writer.flush_max_bytes", DEFAULT_FLUSH_MAX_BYTES).max(1),
            max_age_ms: var_or(host, "writer.flush_max_age_ms", DEFAULT_FLUSH_MAX_AGE_MS).max(1),
            prefix: host.var("lake.events_prefix").unwrap_or_else(|| events_lake::EVENTS_TABLE_PREFIX.to_string()),
            compact_grace_ms: var_or(host, "writer.compact_grace_ms", COMPACT_GRACE_MS).max(0),
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
        /// The events.
        events: Vec<Event>,
        /// The client's idempotency key, if any.
        batch_id: Option<String>,
    },
    /// Flushes everything buffered now (shutdown, tests, `events flush`).
    Flush,
    /// Compacts closed hours now.
    Compact,
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
}

/// One event read from the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Its sequence number in this writer.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// Answers of an [`EventWriter`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriterResponse {
    /// Append result.
    Appended(Appended),
    /// Files written by a flush or compaction.
    Files(Vec<String>),
    /// Events read.
    Events(Vec<Event>),
    /// Outbox events.
    Outbox(Vec<OutboxEvent>),
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
];

/// The writer object.
pub struct EventWriter {
    ns: String,
    shard: String,
    config: WriterConfig,
    buffered: u64,
    buffered_bytes: u64,
    oldest_received: Option<i64>,
    alarm_at: Option<i64>,
    /// Whether built-in consumers may have events to receive.
    fanout_pending: bool,
}

/// Name of shard `shard` of namespace `ns`.
pub fn writer_name(ns: &str, shard: u32) -> String {
    format!("{ns}/{shard}")
}

fn corrupt(e: impl std::fmt::Display) -> ApiError {
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

    fn needs_flush(&self, now: i64) -> bool {
        self.buffered >= self.config.max_events
            || self.buffered_bytes >= self.config.max_bytes
            || self.oldest_received.is_some_and(|t| now - t >= self.config.max_age_ms)
    }

    /// Arms the alarm no later than `at`.
    async fn arm<H: Host>(&mut self, cx: &ObjectContext<H>, at: i64) -> ObjectResult<()> {
        if self.alarm_at.is_none_or(|current| at < current) {
            cx.storage().set_alarm(Timestamp(at)).await?;
            self.alarm_at = Some(at);
        }
        Ok(())
    }

    /// Writes a flush plan for the oldest unflushed rows, if none exists.
    fn plan_flush<S: SqlStorage>(db: &S) -> ObjectResult<bool> {
        if db.query_one("SELECT 1 FROM flush_plan", &[])?.is_some() {
            return Ok(true);
        }
        let range = db.query_one(
            "SELECT MIN(seq), MAX(seq) FROM (SELECT seq FROM buffer WHERE flushed = 0 ORDER BY seq LIMIT ?1)",
            &[MAX_ROWS_PER_FLUSH.into()],
        )?;
        match range.and_then(|r| Some((r.opt_i64(0)?, r.opt_i64(1)?))) {
            Some((first, last)) => {
                db.execute(
                    "INSERT INTO flush_plan (id, first_seq, last_seq) VALUES (1, ?1, ?2)",
                    &[first.into(), last.into()],
                )?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Executes the flush plan, if any. Returns the keys written.
    async fn execute_plan<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let db = cx.storage();
        let Some(plan) = db.query_one("SELECT first_seq, last_seq FROM flush_plan", &[])? else {
            return Ok(Vec::new());
        };
        let (first, last) = (plan.i64(0), plan.i64(1));
        let mut events = Vec::new();
        let mut bytes = 0u64;
        db.query_each(
            "SELECT body, bytes FROM buffer WHERE seq BETWEEN ?1 AND ?2 AND flushed = 0 ORDER BY seq",
            &[first.into(), last.into()],
            &mut |r| {
                events.push(serde_json::from_slice::<Event>(r.bytes(0)).map_err(corrupt));
                bytes += r.i64(1) as u64;
                true
            },
        )?;
        let events: Vec<Event> = events.into_iter().collect::<Result<_, _>>()?;
        // Named by the first sequence number only: a flush that ran but did
        // not commit (crash) is retried from the same first row with a range
        // that contains the old one, so it overwrites the same files.
        let file_id = format!("{}-{first:016}", self.shard.replace('/', "-"));
        // The table's columns, evolved for the fields this batch carries.
        let columns = match self
            .catalog(
                cx,
                CatalogRequest::PrepareColumns { table: EVENTS_TABLE.into(), observed: observe_columns(&events) },
            )
            .await?
        {
            CatalogResponse::Columns(columns) => columns,
            other => return Err(ApiError::internal(format!("catalog answered {other:?} to PrepareColumns"))),
        };
        let groups = partition_by_hour(&events);
        // Recorded before the first put, so orphan cleanup never deletes a
        // file of this plan before its commit (a retry intends the same keys).
        let intended =
            groups.keys().map(|(ns, hour)| event_file_key(&self.config.prefix, ns, *hour, &file_id)).collect();
        self.catalog(cx, CatalogRequest::IntendFiles { table: EVENTS_TABLE.into(), keys: intended }).await?;
        let mut keys = Vec::new();
        let mut added = Vec::new();
        for ((ns, hour), group) in groups {
            let key = event_file_key(&self.config.prefix, &ns, hour, &file_id);
            let parquet = encode_events_with(&group, &columns)?;
            added.push(NewFile { key: key.clone(), rows: group.len() as i64, bytes: parquet.len() as i64 });
            cx.host().blobs().put(&key, parquet).await?;
            db.execute(
                "INSERT INTO dirty_hours (prefix, hour) VALUES (?1, ?2) ON CONFLICT(prefix) DO NOTHING",
                &[hour_prefix(&self.config.prefix, &ns, hour).into(), hour.as_millis().into()],
            )?;
            keys.push(key);
        }
        // Committed to the table before the rows are marked flushed: a crash
        // in between re-flushes the same keys, and the catalog replaces them.
        self.catalog(cx, CatalogRequest::CommitFiles { table: EVENTS_TABLE.into(), added, removed: Vec::new() })
            .await?;
        db.execute("UPDATE buffer SET flushed = 1 WHERE seq BETWEEN ?1 AND ?2", &[first.into(), last.into()])?;
        db.execute("DELETE FROM flush_plan", &[])?;
        Self::bump(db, "files_written", keys.len() as u64)?;
        Self::bump(db, "events_flushed", events.len() as u64)?;
        self.trim(db)?;
        self.refresh(db)?;
        Ok(keys)
    }

    /// Deletes flushed rows every consumer has acknowledged.
    fn trim<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        db.execute(
            "DELETE FROM buffer WHERE flushed = 1 AND seq <= (SELECT COALESCE(MIN(cursor), 9223372036854775807) FROM consumers)",
            &[],
        )?;
        Ok(())
    }

    /// Reloads the unflushed totals from storage.
    fn refresh<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        let r = db
            .query_one("SELECT COUNT(*), COALESCE(SUM(bytes), 0), MIN(received_at) FROM buffer WHERE flushed = 0", &[])?
            .expect("aggregate row");
        self.buffered = r.i64(0) as u64;
        self.buffered_bytes = r.i64(1) as u64;
        self.oldest_received = r.opt_i64(2);
        Ok(())
    }

    async fn flush_all<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let mut keys = self.execute_plan(cx).await?;
        while Self::plan_flush(cx.storage())? {
            keys.extend(self.execute_plan(cx).await?);
        }
        Ok(keys)
    }

    fn append<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        events: Vec<Event>,
        batch_id: Option<String>,
    ) -> ObjectResult<Appended> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        let received = events.len();
        if let Some(batch) = &batch_id
            && let Some(r) = db.query_one(
                "SELECT received FROM batches WHERE batch_id = ?1 AND at >= ?2",
                &[batch.as_str().into(), (now - BATCH_ID_TTL_MS).into()],
            )?
        {
            return Ok(Appended { received: r.i64(0) as usize, stored: 0, duplicates: 0, deduplicated: true });
        }
        let mut stored = 0;
        for event in &events {
            let fresh = db.execute(
                "INSERT INTO event_ids (id, at) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING",
                &[event.id.as_str().into(), now.into()],
            )?;
            if fresh == 0 {
                continue;
            }
            let body = serde_json::to_string(event).map_err(corrupt)?;
            let bytes = body.len() as u64;
            db.execute(
                "INSERT INTO buffer (ts, bytes, body, received_at) VALUES (?1, ?2, ?3, ?4)",
                &[event.ts.as_millis().into(), (bytes as i64).into(), SqlValue::Text(body), now.into()],
            )?;
            stored += 1;
            self.buffered += 1;
            self.buffered_bytes += bytes;
            self.oldest_received.get_or_insert(now);
        }
        if let Some(batch) = batch_id {
            db.execute(
                "INSERT INTO batches (batch_id, received, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(batch_id) DO UPDATE SET received = excluded.received, at = excluded.at",
                &[batch.into(), received.into(), now.into()],
            )?;
        }
        Ok(Appended { received, stored, duplicates: received - stored, deduplicated: false })
    }

    /// Asks the catalog to compact the small files of each closed dirty hour
    /// (one `replace` snapshot per hour; the inputs stay readable by older
    /// snapshots until those expire).
    async fn compact<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        let closed = now - events_lake::layout::HOUR_MS - self.config.compact_grace_ms;
        let hours = db.query("SELECT prefix FROM dirty_hours WHERE hour <= ?1 ORDER BY hour", &[closed.into()])?;
        let mut written = Vec::new();
        for row in hours {
            let prefix = row.str(0).to_string();
            let options = MaintainOptions { compact: true, compact_prefix: Some(prefix.clone()), ..Default::default() };
            match self.catalog(cx, CatalogRequest::Maintain { table: Some(EVENTS_TABLE.into()), options }).await? {
                CatalogResponse::Maintained(reports) => {
                    written.extend(reports.into_iter().flat_map(|r| r.compacted_files));
                }
                other => return Err(ApiError::internal(format!("catalog answered {other:?} to Maintain"))),
            }
            db.execute("DELETE FROM dirty_hours WHERE prefix = ?1", &[prefix.into()])?;
        }
        Ok(written)
    }

    /// Calls this namespace's catalog.
    async fn catalog<H: Host>(&self, cx: &ObjectContext<H>, req: CatalogRequest) -> ObjectResult<CatalogResponse> {
        cx.stub::<Catalog>(self.ns.clone()).call(req).await
    }

    /// Hands new events to every built-in consumer. Returns when to try
    /// again if some consumer failed or has more to receive.
    async fn fan_out<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Option<i64>> {
        if !self.fanout_pending {
            return Ok(None);
        }
        let db = cx.storage();
        let now = cx.now().as_millis();
        let mut again = None;
        for consumer in crate::fanout::CONSUMERS {
            let cursor = db
                .query_one("SELECT cursor FROM consumers WHERE name = ?1", &[(*consumer).into()])?
                .map_or(0, |r| r.i64(0));
            let events = Self::outbox_after(db, cursor, crate::fanout::FANOUT_BATCH)?;
            if events.is_empty() {
                continue;
            }
            match crate::fanout::deliver(cx, consumer, &events).await {
                Ok(()) => {
                    let upto = events.last().expect("non-empty").seq as i64;
                    db.execute(
                        "UPDATE consumers SET cursor = ?2, last_error = NULL WHERE name = ?1",
                        &[(*consumer).into(), upto.into()],
                    )?;
                    if events.len() == crate::fanout::FANOUT_BATCH {
                        again = Some(now);
                    }
                }
                Err(e) => {
                    // Kept for `Stats`; the same events are offered again.
                    db.execute(
                        "UPDATE consumers SET last_error = ?2 WHERE name = ?1",
                        &[(*consumer).into(), e.to_string().into()],
                    )?;
                    again = Some(again.unwrap_or(i64::MAX).min(now + crate::fanout::FANOUT_RETRY_MS));
                }
            }
        }
        self.trim(db)?;
        self.fanout_pending = again.is_some();
        Ok(again)
    }

    /// Up to `limit` buffered events after sequence number `cursor`, in order.
    fn outbox_after<S: SqlStorage>(db: &S, cursor: i64, limit: usize) -> ObjectResult<Vec<OutboxEvent>> {
        db.query("SELECT seq, body FROM buffer WHERE seq > ?1 ORDER BY seq LIMIT ?2", &[cursor.into(), limit.into()])?
            .iter()
            .map(|r| {
                Ok(OutboxEvent { seq: r.i64(0) as u64, event: serde_json::from_slice(r.bytes(1)).map_err(corrupt)? })
            })
            .collect()
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

    fn read_recent<S: SqlStorage>(db: &S, filter: &ReadFilter, limit: usize) -> ObjectResult<Vec<Event>> {
        let pattern = filter.pattern.as_deref().map(Pattern::parse).transpose()?;
        let (before_ts, before_id) = match &filter.before {
            Some((ts, id)) => (ts.as_millis(), id.clone()),
            None => (events_runtime::MAX_EXACT_INTEGER, String::new()),
        };
        let mut out = Vec::new();
        let mut failure = None;
        db.query_each(
            "SELECT body FROM buffer WHERE flushed = 0 AND ts BETWEEN ?1 AND ?2 ORDER BY ts DESC, seq DESC",
            &[
                filter.from.map_or(events_runtime::MIN_EXACT_INTEGER, |t| t.as_millis()).into(),
                filter.to.map_or(events_runtime::MAX_EXACT_INTEGER, |t| t.as_millis()).into(),
            ],
            &mut |r| {
                let event: Event = match serde_json::from_slice(r.bytes(0)) {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(corrupt(e));
                        return false;
                    }
                };
                let before = filter.before.is_none()
                    || event.ts.as_millis() < before_ts
                    || (event.ts.as_millis() == before_ts && event.id < before_id);
                if before && pattern.as_ref().is_none_or(|p| p.matches(&event.event_type)) {
                    out.push(event);
                }
                out.len() < limit
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        // Same-millisecond events: order by id descending, as the lake reader does.
        out.sort_by(|a, b| (b.ts, &b.id).cmp(&(a.ts, &a.id)));
        Ok(out)
    }
}

impl DurableObject for EventWriter {
    const CLASS: &'static str = "EventWriter";
    type Request = WriterRequest;
    type Response = WriterResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let (ns, shard) = cx.name().rsplit_once('/').unwrap_or((cx.name(), "0"));
        let mut writer = EventWriter {
            ns: ns.to_string(),
            shard: format!("{:04}", shard.parse::<u32>().unwrap_or(0)),
            config: WriterConfig::from_host(cx.host()),
            buffered: 0,
            buffered_bytes: 0,
            oldest_received: None,
            alarm_at: cx.storage().get_alarm().await?.map(|t| t.as_millis()),
            fanout_pending: false,
        };
        writer.refresh(cx.storage())?;
        for consumer in crate::fanout::CONSUMERS {
            cx.storage().execute(
                "INSERT INTO consumers (name, cursor, registered_at)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) FROM buffer), ?2) ON CONFLICT(name) DO NOTHING",
                &[(*consumer).into(), cx.now().as_millis().into()],
            )?;
        }
        writer.fanout_pending = !crate::fanout::CONSUMERS.is_empty();
        Ok(writer)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: WriterRequest) -> ObjectResult<WriterResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        match req {
            WriterRequest::Append { events, batch_id } => {
                for e in &events {
                    assert_eq!(e.ns, self.ns, "events reach only their own namespace's writer");
                }
                let result = self.append(cx, events, batch_id)?;
                if result.stored > 0 && !crate::fanout::CONSUMERS.is_empty() {
                    self.fanout_pending = true;
                    self.arm(cx, now).await?;
                }
                if self.needs_flush(now) {
                    Self::plan_flush(db)?;
                    self.arm(cx, now).await?;
                } else if let Some(oldest) = self.oldest_received {
                    self.arm(cx, oldest + self.config.max_age_ms).await?;
                }
                Ok(WriterResponse::Appended(result))
            }
            WriterRequest::Flush => Ok(WriterResponse::Files(self.flush_all(cx).await?)),
            WriterRequest::Compact => Ok(WriterResponse::Files(self.compact(cx).await?)),
            WriterRequest::Recent { filter, limit } => {
                Ok(WriterResponse::Events(Self::read_recent(db, &filter, limit)?))
            }
            WriterRequest::Stats => {
                let consumers = db
                    .query("SELECT name, cursor FROM consumers ORDER BY name", &[])?
                    .iter()
                    .map(|r| (r.str(0).to_string(), r.i64(1) as u64))
                    .collect();
                let retained =
                    db.query_one("SELECT COUNT(*) FROM buffer WHERE flushed = 1", &[])?.map_or(0, |r| r.i64(0));
                let last_seq = db.query_one("SELECT COALESCE(MAX(seq), 0) FROM buffer", &[])?.map_or(0, |r| r.i64(0));
                Ok(WriterResponse::Stats(WriterStats {
                    buffered: self.buffered,
                    buffered_bytes: self.buffered_bytes,
                    oldest_buffered: self.oldest_received.map(Timestamp),
                    retained: retained as u64,
                    files_written: Self::counter(db, "files_written")?,
                    events_flushed: Self::counter(db, "events_flushed")?,
                    last_seq: last_seq as u64,
                    consumers,
                }))
            }
            WriterRequest::RegisterConsumer { name, from_start } => {
                if name.is_empty() || name.len() > MAX_CONSUMER_NAME_LEN {
                    return Err(ApiError::new(ErrorCode::InvalidRequest, "consumer names are 1-128 characters"));
                }
                let start = if from_start {
                    db.query_one("SELECT COALESCE(MIN(seq) - 1, 0) FROM buffer", &[])?.map_or(0, |r| r.i64(0))
                } else {
                    db.query_one("SELECT COALESCE(MAX(seq), 0) FROM buffer", &[])?.map_or(0, |r| r.i64(0))
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
                let events = Self::outbox_after(db, cursor, limit.min(MAX_OUTBOX_READ))?;
                Ok(WriterResponse::Outbox(events))
            }
            WriterRequest::AckOutbox { consumer, upto } => {
                let changed = db.execute(
                    "UPDATE consumers SET cursor = MAX(cursor, ?2) WHERE name = ?1",
                    &[consumer.as_str().into(), (upto as i64).into()],
                )?;
                if changed == 0 {
                    return Err(ApiError::not_found(format!("no outbox consumer {consumer}")));
                }
                self.trim(db)?;
                Ok(WriterResponse::Ok)
            }
        }
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        self.alarm_at = None;
        self.execute_plan(cx).await?;
        if self.needs_flush(now) && Self::plan_flush(db)? {
            self.execute_plan(cx).await?;
        }
        let fanout_retry = self.fan_out(cx).await?;
        self.compact(cx).await?;
        Self::prune(db, now)?;
        // Next wake-up: the age deadline of what is buffered, the next
        // compaction of dirty hours, or the next dedup prune.
        let mut next = BTreeMap::new();
        if let Some(at) = fanout_retry {
            next.insert(at, ());
        }
        if let Some(oldest) = self.oldest_received {
            next.insert(oldest + self.config.max_age_ms, ());
        }
        if let Some(r) = db.query_one("SELECT MIN(hour) FROM dirty_hours", &[])?
            && let Some(hour) = r.opt_i64(0)
        {
            next.insert(hour + events_lake::layout::HOUR_MS + self.config.compact_grace_ms, ());
        }
        if let Some(r) = db.query_one("SELECT MIN(at) FROM event_ids", &[])?
            && let Some(at) = r.opt_i64(0)
        {
            next.insert(at + BATCH_ID_TTL_MS, ());
        }
        if let Some((&at, _)) = next.first_key_value() {
            self.arm(cx, at.max(now + 1)).await?;
        }
        Ok(())
    }
}
