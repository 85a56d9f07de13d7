//! The requests and answers of an [`EventWriter`](super::EventWriter)(super::EventWriter).

use events_core::event::EncodedEvents;
use events_core::{Event, Timestamp};
use serde::{Deserialize, Serialize};

use crate::outbox::{FlushPlan, OutboxRow};

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

/// Requests to an [`EventWriter`](super::EventWriter).
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

/// Answers of an [`EventWriter`](super::EventWriter).
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
