//! [`CdcProcessor`]: the change capture of one collection, and
//! [`CdcCollections`]: the list of a namespace's collections.
//!
//! One processor per (namespace, collection), named `<ns>/<collection>`. It
//! receives the collection's changes (normalised by [`events_core::cdc`])
//! from the ingest outbox, at least once ([`crate::fanout`] consumer `"cdc"`).
//!
//! # State (the object's SQLite, never in memory)
//! - `changes`: the changes applied, appended with their processor sequence
//!   number `seq` (arrival order), keyed uniquely by event id: a redelivered
//!   change is recognised and skipped, so it is applied once. Folds index
//!   them by `(doc_id, ts, seq)` in `doc_changes`: a document's history and
//!   its state at any time are index range reads.
//! - History retention: after [`CdcConfig::history_keep_ms`] the alarm trims
//!   changes (once in delta files) to each document's winning one, which
//!   counts for the rest; reads before the trimmed part's newest event time
//!   come from the lake (`CdcProcessor::trim`).
//! - `docs`: per document, the current data, version (number of changes),
//!   tombstone flag, time and `seq` of the winning change, and bookmark.
//! - `files`: the delta files, the current table and the snapshots written
//!   to the lake; `garbage`: files to delete once a later commit no longer
//!   needs them.
//!
//! # Ordering
//! A document's state is its change with the greatest `(ts, seq)`: changes
//! apply in event-time order, and **equal event times resolve in favour of
//! the change applied later** (higher `seq`). A late change (older `ts` than
//! the document's state) is recorded in history and counted in the version
//! but does not overwrite the newer state. The state at a time `T` is the
//! same rule restricted to changes with `ts <= T`.
//!
//! # Files (see [`events_lake::cdc`] for the layout)
//! - **Deltas**: pending changes (`seq > flushed_seq`) are flushed when
//!   [`CdcConfig::flush_max_changes`] are waiting or the oldest has waited
//!   [`CdcConfig::flush_max_age_ms`]. A flush is planned (sequence range
//!   committed) and its file named by the plan's first `seq`, so a retried
//!   flush overwrites, never duplicates.
//! - **Compaction** flushes what is pending, writes the current table
//!   (live documents + tombstones, from `docs`, which then equals the
//!   folding of every delta) as files of at most
//!   [`CdcConfig::state_file_rows`] documents each, streamed from SQLite
//!   and put one at a time (`state_parts` lists them), and records it. Files it makes obsolete (the
//!   previous current table; deltas older than every retained base) are
//!   moved to `garbage` in the same commit and deleted by the alarm in a
//!   later one: a crash anywhere loses nothing, since no file is deleted
//!   before the commit that stops needing it.
//! - **Iceberg**: after each compaction the live-document files are committed
//!   to the namespace's [`Catalog`](crate::Catalog) as table `cdc_<collection>` (one
//!   snapshot replacing the previous files, listed in `cataloged`), so SQL
//!   and Iceberg engines read the collection as of its last compaction. From
//!   then on those files are the catalog's: snapshot expiry deletes them,
//!   not this object's garbage list.
//! - **Snapshots** (`daily`, `monthly`) copy the current table after a
//!   compaction, at the first alarm of a new UTC day (month) when the
//!   collection changed since the previous snapshot of that kind; the
//!   newest [`CdcConfig::keep_daily`] / [`CdcConfig::keep_monthly`] are kept.
//! - The manifest (`manifest.json`) is rewritten after each of these.

mod collections;
mod config;
mod files;
mod fold;
mod lake;
mod messages;
mod metrics;
mod object;
mod publish;
mod read;
mod restore;
mod snapshot;
mod storage;
mod trim;

pub use collections::{CdcCollections, CollectionsRequest, CollectionsResponse, MAX_COLLECTIONS_PER_NAMESPACE};
pub use config::CdcConfig;
pub use messages::*;

use storage::{
    DOC_COLUMNS, HISTORY_COLUMNS, MIGRATIONS, STATE_REF_COLUMNS, StatePart, change_rows, corrupt, doc_state_row,
    doc_view, fold_history_row, parse_json, state_parts, state_ref, state_ref_row,
};

/// The position of a change in a document's history: its event time (ms) and
/// its arrival sequence number, the order changes are applied in.
pub type ChangePosition = (i64, i64);

/// Default: flush a delta file once this many changes are pending.
pub const DEFAULT_FLUSH_MAX_CHANGES: i64 = 10_000;
/// Default: flush once the oldest pending change waited this long (ms).
pub const DEFAULT_FLUSH_MAX_AGE_MS: i64 = 5_000;
/// Most changes in one delta file.
pub const MAX_CHANGES_PER_DELTA: i64 = 100_000;
/// Default: compact once this many delta files hold changes the current table does not.
pub const DEFAULT_COMPACT_MIN_DELTAS: i64 = 16;
/// The alarm compacts only once the changes since the current table are at
/// least this fraction (1/n) of the documents (see `CdcProcessor::compaction_due`).
pub const COMPACT_MIN_SHARE_DIVISOR: i64 = 10;
/// Default number of daily snapshots kept.
pub const DEFAULT_KEEP_DAILY: i64 = 7;
/// Default number of monthly snapshots kept.
pub const DEFAULT_KEEP_MONTHLY: i64 = 12;
/// Default: fold the unfolded tail of `changes` into `docs` once it holds this many changes.
pub const DEFAULT_FOLD_MAX_CHANGES: i64 = 200_000;
/// Most changes in the unfolded tail (bounds one fold: SQLite sorts the
/// tail's `(doc_id, ts, seq)` keys, about 100 bytes each).
pub const MAX_FOLD_CHANGES: i64 = 200_000;
/// Default: most documents in one state file (a current table or snapshot
/// is several files of at most this many rows, written one at a time).
pub const DEFAULT_STATE_FILE_ROWS: i64 = 100_000;
/// Upper bound of [`CdcConfig::state_file_rows`].
pub const MAX_STATE_FILE_ROWS: i64 = 1_000_000;
/// Documents read from SQLite per page while a state file is encoded.
const STATE_PAGE_ROWS: i64 = 1_000;
/// Most changes in one [`CdcRequest::Apply`].
pub const MAX_CHANGES_PER_APPLY: usize = 10_000;
/// Most documents in one page of a state read.
pub const MAX_READ_PAGE: usize = 1_000;
/// Most history entries in one page.
pub const MAX_HISTORY_PAGE: usize = 1_000;
/// Most documents examined by one [`CdcRequest::Restore`] step.
pub const MAX_RESTORE_STEP: usize = 10_000;
/// Delay before retrying a failed commit of the current table to the catalog (ms).
const PUBLISH_RETRY_MS: i64 = 30_000;
/// Table property naming the collection a CDC table belongs to.
pub const CDC_COLLECTION_PROPERTY: &str = "events.cdc.collection";
/// Garbage files deleted per alarm run.
const GC_BATCH: i64 = 1_000;
/// One UTC day in ms.
const DAY_MS: i64 = 86_400_000;
/// Default: changes stay in the object's history this long after they
/// arrived (ms); older ones are trimmed (see `CdcProcessor::trim`). Also
/// the window in which a redelivered change is recognised by its event id.
pub const DEFAULT_HISTORY_KEEP_MS: i64 = 7 * DAY_MS;
/// Shortest history retention (ms): a trimmed change's event id no longer
/// deduplicates, and the ingest outbox may redeliver a change whose
/// acknowledgement a crash lost only once the server is back.
pub const MIN_HISTORY_KEEP_MS: i64 = 3_600_000;
/// Most changes one trim step removes from the history (one transaction).
const TRIM_BATCH: i64 = 10_000;
/// A processor's storage page cache (KiB): a fold and a compaction walk
/// `changes`, `docs` and `doc_changes` together; with the host's small
/// default their pages are re-read from the file system (and dirty ones
/// spilled mid-transaction). Within the 128 MB per object of the design.
pub const STORAGE_CACHE_KIB: u32 = 32 * 1024;
/// Most trim steps one alarm runs before it yields to other requests.
const TRIM_STEPS_PER_ALARM: usize = 10;

/// Counters kept in memory and written back after each request that changes them.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    next_seq: i64,
    flushed_seq: i64,
    live: i64,
    deleted: i64,
    changes: i64,
    max_ts: i64,
    compactions: i64,
    last_compaction: i64,
    registered: i64,
    plan_first: i64,
    plan_last: i64,
    /// `last_seq` of the current table last committed to the Iceberg
    /// catalog (0: none yet).
    cataloged_seq: i64,
    /// Changes up to this `seq` are folded into `docs` and `doc_changes`.
    folded_seq: i64,
    /// Changes that arrived late (older than their document's state then).
    late: i64,
    /// Changes up to this `seq` were trimmed from the history: only each
    /// document's winning one is kept (0: nothing trimmed yet).
    trimmed_seq: i64,
    /// The newest event time among trimmed changes: the object's history
    /// answers reads at this time or later exactly; earlier times are read
    /// from the lake (meaningful once `trimmed_seq > 0`).
    history_from: i64,
}

const COUNTER_NAMES: &[&str] = &[
    "next_seq",
    "flushed_seq",
    "live",
    "deleted",
    "changes",
    "max_ts",
    "compactions",
    "last_compaction",
    "registered",
    "plan_first",
    "plan_last",
    "cataloged_seq",
    "folded_seq",
    "late",
    "trimmed_seq",
    "history_from",
];

impl Counters {
    fn slots(&mut self) -> [&mut i64; 16] {
        [
            &mut self.next_seq,
            &mut self.flushed_seq,
            &mut self.live,
            &mut self.deleted,
            &mut self.changes,
            &mut self.max_ts,
            &mut self.compactions,
            &mut self.last_compaction,
            &mut self.registered,
            &mut self.plan_first,
            &mut self.plan_last,
            &mut self.cataloged_seq,
            &mut self.folded_seq,
            &mut self.late,
            &mut self.trimmed_seq,
            &mut self.history_from,
        ]
    }
}

/// The processor of one collection.
pub struct CdcProcessor {
    ns: String,
    collection: String,
    config: CdcConfig,
    counters: Counters,
    saved: Counters,
    /// When the oldest pending change was received (ms), if any are pending.
    oldest_pending: Option<i64>,
    /// When the oldest unfolded change was received (ms), if any are unfolded.
    oldest_unfolded: Option<i64>,
    /// The last failure to commit the current table to the catalog.
    publish_error: Option<String>,
}

/// Name of the processor of `collection` in `ns`.
pub fn processor_name(ns: &str, collection: &str) -> String {
    format!("{ns}/{collection}")
}
