//! The outbox: what every accepted event leaves behind for the work that
//! follows it, and the seam between the writer that fills it and the relays
//! and consumers that read it.
//!
//! Dependencies point one way. The [`crate::EventWriter`] appends to the
//! outbox, keeps one cursor per consumer in [`CONSUMERS`] and wakes its
//! relays. The relays ([`crate::outbox_relay`]), the lake flush
//! ([`crate::lake_flush`]) and the fan-out consumers ([`crate::fanout`],
//! [`crate::cdc_fanout`]) reach a writer shard only through the [`Outbox`]
//! trait, and read its rows with the decoders of this module; none of them
//! imports the writer.
//!
//! Every accepted event reaches every consumer at least once, in the
//! writer's order, across crashes: a relay advances a consumer's cursor
//! only after [`OutboxConsumer::deliver`] succeeded, and consumers make
//! redelivery harmless by keying on the event id.

mod rows;

use std::future::Future;

use events_runtime::{Host, ObjectContext, ObjectResult};
use serde::{Deserialize, Serialize};

pub use rows::{OutboxEvent, OutboxRow, corrupt, decode_matching, decode_rows};

/// Most events one outbox read returns (also one page of a flush read).
pub const MAX_OUTBOX_READ: usize = 10_000;

/// The relay that flushes a writer's buffer to the lake. Not a cursor
/// consumer: its progress is the writer's flush plan.
pub const LAKE: &str = "lake";

/// The consumer that routes events to the namespace's [`crate::Subscriptions`].
pub const SUBSCRIPTIONS: &str = "subscriptions";

/// The consumer that applies collection changes to each collection's [`crate::CdcProcessor`].
pub const CDC: &str = "cdc";

/// The built-in consumers, registered by every writer when it loads. A
/// capability that needs every event adds its name here and an
/// [`OutboxConsumer`] to [`crate::fanout::deliver`].
pub const CONSUMERS: &[&str] = &[SUBSCRIPTIONS, CDC];

/// Every relay of a writer shard: the lake flush and the built-in consumers.
pub const RELAYED: &[&str] = &[LAKE, SUBSCRIPTIONS, CDC];

/// Default: an hour is compacted once it ended this long ago (late writes settle).
pub const COMPACT_GRACE_MS: i64 = 5 * 60_000;

/// A flush plan: the sequence range of the rows one flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushPlan {
    /// First sequence number (names the plan's files).
    pub first: u64,
    /// Last sequence number, inclusive.
    pub last: u64,
}

/// What a flush wrote, reported to the writer once the files are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// The plan.
    pub plan: FlushPlan,
    /// Files written.
    pub files: u64,
    /// Events flushed.
    pub events: u64,
    /// Hour folders that got a file (`prefix`, hour start in ms), for compaction.
    pub hours: Vec<(String, i64)>,
}

/// The lake settings that the writer and its lake relay both read, from
/// host variables (`lake.events_prefix`, `writer.compact_grace_ms`).
#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// Folder of the events table in the bucket.
    pub prefix: String,
    /// Hours end this long before they are compacted (ms).
    pub compact_grace_ms: i64,
}

impl LakeConfig {
    /// The settings from the host's variables.
    pub fn from_host<H: Host>(host: &H) -> Self {
        LakeConfig {
            prefix: host.var("lake.events_prefix").unwrap_or_else(|| events_lake::EVENTS_TABLE_PREFIX.to_string()),
            compact_grace_ms: crate::var_or(host, "writer.compact_grace_ms", COMPACT_GRACE_MS).max(0),
        }
    }
}

/// One writer shard's outbox, as its relays reach it: the class that keeps
/// the outbox implements it over its own messages, so that relays and
/// consumers never name that class. Every method takes the host and the
/// shard's object name (`<ns>/<shard>`).
pub trait Outbox: 'static {
    /// The rows after `consumer`'s cursor (at most about `limit` events),
    /// and that cursor. An empty answer also tells the writer the relay goes idle.
    fn read<H: Host>(
        host: &H,
        shard: &str,
        consumer: &str,
        limit: usize,
    ) -> impl Future<Output = ObjectResult<(u64, Vec<OutboxRow>)>>;

    /// The log rows after a reader's own position `after` (at most about
    /// `limit` events), and the highest sequence number assigned: for
    /// readers that keep no cursor at the writer (the live tail).
    fn read_log<H: Host>(
        host: &H,
        shard: &str,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = ObjectResult<(u64, Vec<OutboxRow>)>>;

    /// Moves `consumer`'s cursor to `upto` (inclusive).
    fn ack<H: Host>(host: &H, shard: &str, consumer: &str, upto: u64) -> impl Future<Output = ObjectResult<()>>;

    /// Records why `consumer` failed to take its events (shown in the writer's stats).
    fn report_failure<H: Host>(
        host: &H,
        shard: &str,
        consumer: &str,
        error: String,
    ) -> impl Future<Output = ObjectResult<()>>;

    /// The open flush plan, or a new one when due (with `force`: when
    /// anything is unflushed); `None` when there is nothing to flush.
    fn take_flush<H: Host>(host: &H, shard: &str, force: bool)
    -> impl Future<Output = ObjectResult<Option<FlushPlan>>>;

    /// A page of the plan's rows after sequence number `after`.
    fn read_flush<H: Host>(
        host: &H,
        shard: &str,
        plan: FlushPlan,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = ObjectResult<Vec<OutboxRow>>>;

    /// The plan's files are in the lake and the catalog: its rows are flushed.
    fn flush_committed<H: Host>(host: &H, shard: &str, report: FlushReport) -> impl Future<Output = ObjectResult<()>>;

    /// Hour folders whose hour ended at or before `closed` (ms) and that got files since their last compaction.
    fn due_compactions<H: Host>(host: &H, shard: &str, closed: i64) -> impl Future<Output = ObjectResult<Vec<String>>>;

    /// The hour folder `prefix` was compacted.
    fn compacted<H: Host>(host: &H, shard: &str, prefix: String) -> impl Future<Output = ObjectResult<()>>;
}

/// A capability that needs every accepted event: a fan-out relay hands it a
/// writer shard's rows after its cursor.
pub trait OutboxConsumer {
    /// Its name: its cursor at the writer, the last part of its relay's name.
    const NAME: &'static str;

    /// Takes the events of `rows` after sequence number `after`, all of
    /// namespace `ns`, in order, decoding only those it wants. An error
    /// leaves the cursor where it was, and the same events come again later.
    fn deliver<H: Host>(
        cx: &ObjectContext<H>,
        ns: &str,
        rows: &[OutboxRow],
        after: u64,
    ) -> impl Future<Output = ObjectResult<()>>;
}
