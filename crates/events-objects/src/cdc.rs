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
//!   to the namespace's [`Catalog`] as table `cdc_<collection>` (one
//!   snapshot replacing the previous files, listed in `cataloged`), so SQL
//!   and Iceberg engines read the collection as of its last compaction. From
//!   then on those files are the catalog's: snapshot expiry deletes them,
//!   not this object's garbage list.
//! - **Snapshots** (`daily`, `monthly`) copy the current table after a
//!   compaction, at the first alarm of a new UTC day (month) when the
//!   collection changed since the previous snapshot of that kind; the
//!   newest [`CdcConfig::keep_daily`] / [`CdcConfig::keep_monthly`] are kept.
//! - The manifest (`manifest.json`) is rewritten after each of these.

use std::collections::BTreeMap;

use events_core::cdc::{Change, ChangeOp, valid_collection_name};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_lake::cdc::{
    CdcManifest, DeltaRef, DeltaRow, DocState, MANIFEST_FORMAT, ReconstructInput, StateRef, current_keys, delta_key,
    encode_delta_file, encode_state_file, manifest_key, part_key, reconstruct, snapshot_keys,
};
use events_runtime::context::ObjectStorage;
use events_runtime::{
    BlobStore, DurableObject, Host, Migration, ObjectContext, ObjectResult, Row, SqlStorage, SqlValue,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Catalog;
use crate::catalog::{CatalogRequest, CatalogResponse, NewFile, cdc_table_name, iceberg_schema};
use crate::var_or;

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

/// Change-capture tunables: the server's `[cdc]` configuration table, carried
/// to each processor as host variables `cdc.*` (defaults above).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdcConfig {
    /// Write a delta file once this many changes are pending (1-100,000).
    pub flush_max_changes: i64,
    /// Write a delta file once the oldest pending change waited this long (ms).
    pub flush_max_age_ms: i64,
    /// Compact once this many delta files hold changes the current table
    /// does not (and those are a tenth of the documents; see `COMPACT_MIN_SHARE_DIVISOR`).
    pub compact_min_deltas: i64,
    /// Fold the changes appended since the last fold into the documents'
    /// state once this many are waiting (1-200,000; reads and the alarm fold sooner).
    pub fold_max_changes: i64,
    /// Most documents per state file (current table, snapshot): larger
    /// states are several files, written one at a time (1-1,000,000).
    pub state_file_rows: i64,
    /// Daily snapshots kept per collection (0: none taken).
    pub keep_daily: i64,
    /// Monthly snapshots kept per collection (0: none taken).
    pub keep_monthly: i64,
    /// How long a change stays in the object's history after it arrived
    /// (ms, at least [`MIN_HISTORY_KEEP_MS`]); older changes are trimmed to
    /// each document's winning one, and earlier times are read from the lake.
    pub history_keep_ms: i64,
    /// Crash tests only: `compact-after-write` aborts the process after a
    /// compaction wrote its files and before it recorded them.
    pub failpoint: Option<String>,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            flush_max_changes: DEFAULT_FLUSH_MAX_CHANGES,
            flush_max_age_ms: DEFAULT_FLUSH_MAX_AGE_MS,
            compact_min_deltas: DEFAULT_COMPACT_MIN_DELTAS,
            fold_max_changes: DEFAULT_FOLD_MAX_CHANGES,
            state_file_rows: DEFAULT_STATE_FILE_ROWS,
            keep_daily: DEFAULT_KEEP_DAILY,
            keep_monthly: DEFAULT_KEEP_MONTHLY,
            history_keep_ms: DEFAULT_HISTORY_KEEP_MS,
            failpoint: None,
        }
    }
}

impl CdcConfig {
    /// The host variables (`cdc.*`) that carry this configuration to every
    /// processor (see [`CdcConfig::from_host`]).
    pub fn host_vars(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("flush_max_changes", self.flush_max_changes),
            ("flush_max_age_ms", self.flush_max_age_ms),
            ("compact_min_deltas", self.compact_min_deltas),
            ("fold_max_changes", self.fold_max_changes),
            ("state_file_rows", self.state_file_rows),
            ("keep_daily", self.keep_daily),
            ("keep_monthly", self.keep_monthly),
            ("history_keep_ms", self.history_keep_ms),
        ]
        .into_iter()
        .map(|(name, value)| (format!("cdc.{name}"), value.to_string()))
        .collect();
        if let Some(f) = &self.failpoint {
            vars.push(("cdc.failpoint".to_string(), f.clone()));
        }
        vars
    }

    /// Checks every value is in its range (the message names the key).
    pub fn validate(&self) -> Result<(), String> {
        let ranges = [
            ("flush_max_changes", self.flush_max_changes, 1, MAX_CHANGES_PER_DELTA),
            ("flush_max_age_ms", self.flush_max_age_ms, 1, i64::MAX),
            ("compact_min_deltas", self.compact_min_deltas, 1, i64::MAX),
            ("fold_max_changes", self.fold_max_changes, 1, MAX_FOLD_CHANGES),
            ("state_file_rows", self.state_file_rows, 1, MAX_STATE_FILE_ROWS),
            ("keep_daily", self.keep_daily, 0, i64::MAX),
            ("keep_monthly", self.keep_monthly, 0, i64::MAX),
            ("history_keep_ms", self.history_keep_ms, MIN_HISTORY_KEEP_MS, i64::MAX),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                let upper = if max == i64::MAX { String::new() } else { format!(" and at most {max}") };
                return Err(format!("cdc.{name} must be at least {min}{upper}, got {value}"));
            }
        }
        Ok(())
    }

    /// The configuration the host's variables give, each value brought into its range.
    pub fn from_host<H: Host>(host: &H) -> Self {
        let d = CdcConfig::default();
        CdcConfig {
            flush_max_changes: var_or(host, "cdc.flush_max_changes", d.flush_max_changes)
                .clamp(1, MAX_CHANGES_PER_DELTA),
            flush_max_age_ms: var_or(host, "cdc.flush_max_age_ms", d.flush_max_age_ms).max(1),
            compact_min_deltas: var_or(host, "cdc.compact_min_deltas", d.compact_min_deltas).max(1),
            fold_max_changes: var_or(host, "cdc.fold_max_changes", d.fold_max_changes).clamp(1, MAX_FOLD_CHANGES),
            state_file_rows: var_or(host, "cdc.state_file_rows", d.state_file_rows).clamp(1, MAX_STATE_FILE_ROWS),
            keep_daily: var_or(host, "cdc.keep_daily", d.keep_daily).max(0),
            keep_monthly: var_or(host, "cdc.keep_monthly", d.keep_monthly).max(0),
            history_keep_ms: var_or(host, "cdc.history_keep_ms", d.history_keep_ms).max(MIN_HISTORY_KEEP_MS),
            failpoint: host.var("cdc.failpoint").filter(|f| !f.is_empty()),
        }
    }
}

/// Snapshot kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Labelled `YYYY-MM-DD`.
    Daily,
    /// Labelled `YYYY-MM`.
    Monthly,
}

impl SnapshotKind {
    /// `daily` or `monthly`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Daily => "daily",
            SnapshotKind::Monthly => "monthly",
        }
    }

    /// Start (ms) of the UTC day or month containing `now`.
    fn period_start(self, now: Timestamp) -> i64 {
        use chrono::{Datelike, TimeZone, Utc};
        let d = now.to_datetime();
        match self {
            SnapshotKind::Daily => now.as_millis() - now.as_millis().rem_euclid(DAY_MS),
            SnapshotKind::Monthly => Utc
                .with_ymd_and_hms(d.year(), d.month(), 1, 0, 0, 0)
                .single()
                .map_or(now.as_millis(), |m| m.timestamp_millis()),
        }
    }

    fn label(self, now: Timestamp) -> String {
        let d = now.to_datetime();
        match self {
            SnapshotKind::Daily => d.format("%Y-%m-%d").to_string(),
            SnapshotKind::Monthly => d.format("%Y-%m").to_string(),
        }
    }
}

/// Which files a reconstruction from the lake starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileBase {
    /// The newest base (current table or snapshot) usable at the time.
    Auto,
    /// No base: every delta file from the first change (fails once compaction removed some).
    DeltasOnly,
    /// The current table.
    Current,
    /// The snapshot of this kind and label.
    Snapshot {
        /// Kind.
        kind: SnapshotKind,
        /// Label.
        label: String,
    },
}

/// Requests to a [`CdcProcessor`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CdcRequest {
    /// Applies changes (in order); already applied event ids are skipped.
    Apply {
        /// The changes, all of this processor's collection.
        changes: Vec<Change>,
    },
    /// Writes every pending change to delta files now.
    Flush,
    /// Flushes, then compacts into the current table.
    Compact,
    /// Takes a snapshot of `kind` now (skipped when nothing changed since the last one of that kind).
    Snapshot {
        /// Kind.
        kind: SnapshotKind,
    },
    /// Collection statistics.
    Stats,
    /// The manifest as it stands.
    Manifest,
    /// A page of documents (by id) as they were at `at` (default: now), from the object's state.
    ReadState {
        /// Time; `None` = now.
        at: Option<Timestamp>,
        /// Only ids after this one.
        after: Option<String>,
        /// Page size.
        limit: usize,
        /// Include tombstones.
        include_deleted: bool,
    },
    /// One document as it was at `at` (default: now).
    ReadDoc {
        /// Document id.
        id: String,
        /// Time; `None` = now.
        at: Option<Timestamp>,
    },
    /// A document's changes in event-time order.
    History {
        /// Document id.
        id: String,
        /// Only changes after this `(ts, seq)` position.
        after: Option<(i64, i64)>,
        /// Page size.
        limit: usize,
    },
    /// A page of documents at `at`, reconstructed from the lake files (and
    /// pending changes), not from `docs`: the path a lake reader takes.
    ReadFiles {
        /// Time.
        at: Timestamp,
        /// Base files.
        base: FileBase,
        /// Only ids after this one.
        after: Option<String>,
        /// Page size.
        limit: usize,
    },
    /// Trims the history now as far as the retention allows (the alarm does
    /// this on its own; see [`CdcConfig::history_keep_ms`]).
    TrimHistory,
    /// One step of restoring the collection to its state at `at`, as new
    /// changes: every document after `after` (at most [`MAX_RESTORE_STEP`])
    /// whose current state differs gets a change that brings it back.
    Restore {
        /// The time to go back to.
        at: Timestamp,
        /// Id of the whole restore (names its changes' event ids).
        restore_id: String,
        /// Resume after this document id.
        after: Option<String>,
    },
}

/// Result of an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Changes applied.
    pub applied: usize,
    /// Changes skipped because their event id was applied before.
    pub duplicates: usize,
    /// Late changes (older than their document's state: recorded in history
    /// only) found by the fold this request ran, if it ran one: changes are
    /// folded in batches, so a late change is counted by the request that
    /// folds it (see [`CdcStats::late`] for the total).
    pub late: usize,
}

/// A document as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocView {
    /// Id.
    pub id: String,
    /// The document; for a tombstone, the delete's `before`, if sent.
    pub data: Option<Value>,
    /// Changes folded (up to the read time).
    pub version: i64,
    /// Whether it is deleted.
    pub deleted: bool,
    /// Event time of its last change (ISO-8601).
    pub last_change: String,
    /// Sequence number of that change.
    pub seq: i64,
    /// Bookmark of that change.
    pub bookmark: Option<String>,
}

/// One change in a document's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Event id that carried it.
    pub event_id: String,
    /// Operation.
    pub op: ChangeOp,
    /// Event time (ISO-8601).
    pub ts: String,
    /// Sequence number (arrival order).
    pub seq: i64,
    /// Before, if sent.
    pub before: Option<Value>,
    /// After (absent for deletes).
    pub after: Option<Value>,
    /// Bookmark.
    pub bookmark: Option<String>,
    /// Earlier changes of this document that were trimmed from the history
    /// and that this entry now stands for in versions (0: none); they are
    /// in the collection's delta files and snapshots.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trimmed_before: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Collection statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdcStats {
    /// Collection name.
    pub collection: String,
    /// Live documents.
    pub documents: i64,
    /// Tombstones.
    pub deleted: i64,
    /// Changes applied.
    pub changes: i64,
    /// Changes waiting for a delta file.
    pub pending: i64,
    /// Changes that arrived late: older than their document's state then
    /// (kept in history, not in the state).
    pub late: i64,
    /// Event time of the newest change (ISO-8601).
    pub last_change: Option<String>,
    /// Live delta files.
    pub delta_files: i64,
    /// When the last compaction ran (ISO-8601).
    pub last_compaction: Option<String>,
    /// Compactions run.
    pub compactions: i64,
    /// Retained snapshots.
    pub snapshots: i64,
    /// The Iceberg table of the collection's current state (see [`cdc_table_name`]).
    pub table: String,
    /// Why the last commit of the current table to the catalog failed, if
    /// it did (retried by the alarm; cleared by a success).
    pub catalog_error: Option<String>,
    /// Once history was trimmed: the event time (ISO-8601) from which the
    /// object's history is complete; reads at earlier times come from the
    /// lake's delta files and snapshots.
    pub history_from: Option<String>,
}

/// Answers of a [`CdcProcessor`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CdcResponse {
    /// Apply result.
    Applied(Applied),
    /// Files written.
    Files(Vec<String>),
    /// Snapshot result: the key written, or `None` when skipped as unchanged.
    Snapshot(Option<String>),
    /// Statistics.
    Stats(CdcStats),
    /// The manifest.
    Manifest(CdcManifest),
    /// A page of documents; `next` is the cursor of the next page.
    Docs {
        /// Documents.
        docs: Vec<DocView>,
        /// Cursor, when more may follow.
        next: Option<String>,
    },
    /// One document, if it had any change at or before the time.
    Doc(Option<DocView>),
    /// History page.
    History {
        /// Entries.
        changes: Vec<HistoryEntry>,
        /// Cursor, when more may follow.
        next: Option<(i64, i64)>,
        /// See [`CdcStats::history_from`].
        history_from: Option<String>,
    },
    /// Changes removed from the history by a trim.
    Trimmed(usize),
    /// One restore step: changes made and where to resume (`None`: done).
    Restored {
        /// Changes made.
        changes: usize,
        /// Documents examined.
        examined: usize,
        /// Resume cursor.
        next: Option<String>,
    },
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "changes, docs, files, counters",
        sql: "CREATE TABLE changes (
              seq INTEGER PRIMARY KEY,
              event_id TEXT NOT NULL,
              doc_id TEXT NOT NULL,
              op INTEGER NOT NULL,
              ts INTEGER NOT NULL,
              before TEXT,
              after TEXT,
              bookmark TEXT,
              received_at INTEGER NOT NULL
          );
          CREATE UNIQUE INDEX changes_event ON changes (event_id);
          CREATE INDEX changes_doc ON changes (doc_id, ts, seq);
          CREATE TABLE docs (
              doc_id TEXT PRIMARY KEY,
              data TEXT,
              version INTEGER NOT NULL,
              deleted INTEGER NOT NULL,
              ts INTEGER NOT NULL,
              seq INTEGER NOT NULL,
              bookmark TEXT
          ) WITHOUT ROWID;
          CREATE TABLE files (
              key TEXT PRIMARY KEY,
              kind TEXT NOT NULL,
              label TEXT NOT NULL DEFAULT '',
              tombstones_key TEXT,
              first_seq INTEGER NOT NULL,
              last_seq INTEGER NOT NULL,
              rows INTEGER NOT NULL,
              tombstones INTEGER NOT NULL DEFAULT 0,
              bytes INTEGER NOT NULL,
              min_ts INTEGER NOT NULL,
              max_ts INTEGER NOT NULL,
              created_at INTEGER NOT NULL
          );
          CREATE TABLE garbage (key TEXT PRIMARY KEY) WITHOUT ROWID;
          CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    },
    Migration {
        version: 2,
        name: "history index filled by folds, in document order",
        // Changes are appended in arrival order and folded into `docs` and
        // `doc_changes` later, in document-sorted batches; until then they are
        // the unfolded tail (`seq > folded_seq`). Every change of an existing
        // database was folded when it was applied. (The `late` counter that
        // starts here is filled from the history by migration 6.)
        sql: "CREATE TABLE doc_changes (
              doc_id TEXT NOT NULL,
              ts INTEGER NOT NULL,
              seq INTEGER NOT NULL,
              PRIMARY KEY (doc_id, ts, seq)
          ) WITHOUT ROWID;
          INSERT INTO doc_changes (doc_id, ts, seq) SELECT doc_id, ts, seq FROM changes ORDER BY doc_id, ts, seq;
          DROP INDEX changes_doc;
          INSERT INTO counters (name, value) SELECT 'folded_seq', COALESCE(MAX(seq), 0) FROM changes;",
    },
    Migration {
        version: 3,
        name: "state files in several parts; the files the catalog holds",
        // Every base written before was one live and one tombstone file.
        sql: "CREATE TABLE state_parts (
              base_key TEXT NOT NULL,
              tombstones INTEGER NOT NULL,
              part INTEGER NOT NULL,
              key TEXT NOT NULL,
              rows INTEGER NOT NULL,
              bytes INTEGER NOT NULL,
              PRIMARY KEY (base_key, tombstones, part)
          ) WITHOUT ROWID;
          INSERT INTO state_parts (base_key, tombstones, part, key, rows, bytes)
              SELECT key, 0, 0, key, rows, 0 FROM files WHERE kind IN ('current', 'daily', 'monthly');
          INSERT INTO state_parts (base_key, tombstones, part, key, rows, bytes)
              SELECT key, 1, 0, tombstones_key, tombstones, 0 FROM files WHERE kind IN ('current', 'daily', 'monthly');
          CREATE TABLE cataloged (key TEXT PRIMARY KEY) WITHOUT ROWID;",
    },
    Migration {
        version: 4,
        name: "history trimming: a kept change stands for the trimmed ones before it",
        // `merged`: how many changes of its document this row counts for in
        // versions: 1, or more for the change a trim kept in place of the
        // document's older ones (see `CdcProcessor::trim`).
        sql: "ALTER TABLE changes ADD COLUMN merged INTEGER NOT NULL DEFAULT 1;",
    },
    Migration {
        version: 5,
        name: "id range of each state file",
        // NULL for files written before: a lake read then loads every file of the base.
        sql: "ALTER TABLE state_parts ADD COLUMN first_id TEXT;
          ALTER TABLE state_parts ADD COLUMN last_id TEXT;",
    },
    Migration {
        version: 6,
        name: "late changes counted from the history",
        // Migration 2 started the `late` counter at 0, so a collection
        // upgraded from version 1 counted only the late changes folded since.
        // Recount the folded history: a change is late when a change of its
        // document with a later event time arrived first (a smaller `seq`
        // among those after it in `(ts, seq)` order), the fold's rule. A
        // trimmed history undercounts, so the larger count stays.
        sql: "INSERT INTO counters (name, value)
              SELECT 'late', COUNT(*) FROM (
                  SELECT seq, MIN(seq) OVER (
                      PARTITION BY doc_id ORDER BY ts, seq ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
                  ) AS first_arrival_after
                  FROM doc_changes
              ) WHERE first_arrival_after < seq
              ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value);",
    },
];

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

fn corrupt(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::StorageError, format!("cdc state: {e}"))
}

fn parse_json(text: Option<&str>) -> ObjectResult<Option<Value>> {
    text.map(|t| serde_json::from_str(t).map_err(corrupt)).transpose()
}

fn doc_view(s: DocState) -> ObjectResult<DocView> {
    Ok(DocView {
        data: parse_json(s.data.as_deref())?,
        id: s.id,
        version: s.version,
        deleted: s.deleted,
        last_change: Timestamp(s.ts).to_iso(),
        seq: s.seq,
        bookmark: s.bookmark,
    })
}

fn delta_row(r: &Row) -> ObjectResult<DeltaRow> {
    // Columns: doc_id, op, ts, seq, before, after, bookmark.
    Ok(DeltaRow {
        id: r.str(0).to_string(),
        op: ChangeOp::from_code(r.i64(1)).ok_or_else(|| corrupt("unknown op code"))?,
        ts: r.i64(2),
        seq: r.i64(3),
        before: r.opt_str(4).map(String::from),
        after: r.opt_str(5).map(String::from),
        bookmark: r.opt_str(6).map(String::from),
    })
}

const CHANGE_COLUMNS: &str = "doc_id, op, ts, seq, before, after, bookmark";
/// [`CHANGE_COLUMNS`] of `changes c` found through the history index `doc_changes h`.
/// Column 7 is `merged` (see [`fold_history_row`]).
const HISTORY_COLUMNS: &str = "h.doc_id, c.op, h.ts, h.seq, c.before, c.after, c.bookmark, c.merged";

/// Folds one history row (read with [`HISTORY_COLUMNS`]) into a document's
/// state; a row kept by a trim counts for the changes it replaced.
fn fold_history_row(state: Option<DocState>, r: &Row) -> ObjectResult<DocState> {
    let row = delta_row(r)?;
    let merged = r.i64(7);
    assert!(merged >= 1, "a history row counts for at least its own change");
    let mut state = match state {
        Some(mut s) => {
            s.fold(&row);
            s
        }
        None => DocState::from_change(&row),
    };
    state.version += merged - 1;
    Ok(state)
}

/// The changes matching `condition` (on `changes`), in `seq` order; the
/// first undecodable row ends the read with its error.
fn change_rows<S: SqlStorage>(db: &S, condition: &str, params: &[SqlValue]) -> ObjectResult<Vec<DeltaRow>> {
    let mut rows = Vec::new();
    let mut failure = None;
    db.query_each(&format!("SELECT {CHANGE_COLUMNS} FROM changes WHERE {condition} ORDER BY seq"), params, &mut |r| {
        match delta_row(r) {
            Ok(row) => {
                rows.push(row);
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    failure.map_or(Ok(rows), Err)
}

fn doc_state_row(r: &Row) -> DocState {
    // Columns: doc_id, data, version, deleted, ts, seq, bookmark.
    DocState {
        id: r.str(0).to_string(),
        data: r.opt_str(1).map(String::from),
        version: r.i64(2),
        deleted: r.i64(3) != 0,
        ts: r.i64(4),
        seq: r.i64(5),
        bookmark: r.opt_str(6).map(String::from),
    }
}

const DOC_COLUMNS: &str = "doc_id, data, version, deleted, ts, seq, bookmark";

/// The unfolded tail's winner per document (its greatest `(ts, seq)`) and
/// how many changes the document has in the tail, in document order; `?1`
/// and `?2` bound the tail's `seq`. Used as `WITH tail_winners AS (...)`.
const FOLD_TAIL_WINNERS: &str = "SELECT doc_id, seq, n FROM (
    SELECT doc_id, seq, ROW_NUMBER() OVER (PARTITION BY doc_id ORDER BY ts DESC, seq DESC) AS rank,
           COUNT(*) OVER (PARTITION BY doc_id) AS n
    FROM changes WHERE seq > ?1 AND seq <= ?2
) WHERE rank = 1";

/// A fold statement over [`FOLD_TAIL_WINNERS`].
fn fold_sql(statement: &str) -> String {
    format!("WITH tail_winners AS ({FOLD_TAIL_WINNERS}) {statement}")
}

/// The tail's late changes: those whose document already had a later event
/// time, in its state or in an earlier arrival of the tail.
const FOLD_LATE_SQL: &str = "SELECT COUNT(*) FROM (
    SELECT doc_id, ts,
           MAX(ts) OVER (PARTITION BY doc_id ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev
    FROM changes WHERE seq > ?1 AND seq <= ?2
) t LEFT JOIN docs d ON d.doc_id = t.doc_id
WHERE t.ts < COALESCE(MAX(t.prev, d.ts), t.prev, d.ts)";

/// The fold's change to the live and tombstone counts: per touched
/// document, the state after (the tail's winner if it beats the stored
/// state) against the state before.
const FOLD_TRANSITIONS_SELECT: &str = "SELECT
    COALESCE(SUM((1 - gone) - (CASE WHEN had THEN 1 - was ELSE 0 END)), 0),
    COALESCE(SUM(gone - COALESCE(was, 0)), 0)
FROM (
    SELECT d.doc_id IS NOT NULL AS had, d.deleted AS was,
           CASE WHEN d.doc_id IS NULL OR (c.ts, c.seq) >= (d.ts, d.seq) THEN c.op = 2 ELSE d.deleted END AS gone
    FROM tail_winners w JOIN changes c ON c.seq = w.seq LEFT JOIN docs d ON d.doc_id = w.doc_id
)";

/// Writes each touched document's state: the tail's winner where it beats
/// the stored state by `(ts, seq)`, and the version counting every change.
/// (Op code 2 is a delete: a tombstone keeps the delete's `before`.)
const FOLD_UPSERT: &str = "INSERT INTO docs (doc_id, data, version, deleted, ts, seq, bookmark)
SELECT c.doc_id, CASE WHEN c.op = 2 THEN c.before ELSE c.after END, w.n, c.op = 2, c.ts, c.seq, c.bookmark
FROM tail_winners w JOIN changes c ON c.seq = w.seq WHERE true
ON CONFLICT (doc_id) DO UPDATE SET
    version = docs.version + excluded.version,
    data = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.data ELSE docs.data END,
    deleted = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.deleted ELSE docs.deleted END,
    bookmark = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.bookmark ELSE docs.bookmark END,
    ts = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.ts ELSE docs.ts END,
    seq = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.seq ELSE docs.seq END";

/// A base as recorded in `files`, with its parts from `state_parts`.
fn state_ref<S: SqlStorage>(db: &S, r: &Row) -> ObjectResult<StateRef> {
    let mut base = state_ref_row(r);
    for p in state_parts(db, &base)? {
        if p.tombstones {
            base.tombstone_files.push(p.key);
        } else {
            base.files.push(p.key);
        }
    }
    Ok(base)
}

/// One file of a base (current table or snapshot).
#[derive(Debug, Clone)]
struct StatePart {
    tombstones: bool,
    part: u32,
    key: String,
    rows: i64,
    /// 0 when not recorded (bases written before states were split).
    bytes: i64,
    /// The first and last document id in the file (`None`: an empty file,
    /// or one written before ranges were recorded).
    ids: Option<(String, String)>,
}

/// Every file of `base` (live documents first, each kind in id order); a
/// base recorded before states were split is its two files.
fn state_parts<S: SqlStorage>(db: &S, base: &StateRef) -> ObjectResult<Vec<StatePart>> {
    let parts: Vec<StatePart> = db
        .query(
            "SELECT tombstones, part, key, rows, bytes, first_id, last_id FROM state_parts WHERE base_key = ?1
             ORDER BY tombstones, part",
            &[base.key.as_str().into()],
        )?
        .iter()
        .map(|r| StatePart {
            tombstones: r.i64(0) != 0,
            part: r.i64(1) as u32,
            key: r.str(2).to_string(),
            rows: r.i64(3),
            bytes: r.i64(4),
            ids: r.opt_str(5).zip(r.opt_str(6)).map(|(a, b)| (a.to_string(), b.to_string())),
        })
        .collect();
    if !parts.is_empty() {
        return Ok(parts);
    }
    Ok(vec![
        StatePart { tombstones: false, part: 0, key: base.key.clone(), rows: base.rows, bytes: 0, ids: None },
        StatePart {
            tombstones: true,
            part: 0,
            key: base.tombstones_key.clone(),
            rows: base.tombstones,
            bytes: 0,
            ids: None,
        },
    ])
}

/// The documents of `docs` with one tombstone flag, in id order, read from
/// SQLite a page at a time: at most `left` of them, after `after`.
struct StatePages<'a, S: SqlStorage> {
    db: &'a S,
    deleted: bool,
    after: String,
    left: i64,
    page: std::vec::IntoIter<DocState>,
    rows: i64,
    /// The first id returned.
    first: Option<String>,
    failure: Option<ApiError>,
}

impl<S: SqlStorage> Iterator for StatePages<'_, S> {
    type Item = DocState;

    fn next(&mut self) -> Option<DocState> {
        loop {
            if let Some(d) = self.page.next() {
                if self.first.is_none() {
                    self.first = Some(d.id.clone());
                }
                self.after.clone_from(&d.id);
                self.rows += 1;
                return Some(d);
            }
            if self.left <= 0 || self.failure.is_some() {
                return None;
            }
            let query =
                format!("SELECT {DOC_COLUMNS} FROM docs WHERE deleted = ?1 AND doc_id > ?2 ORDER BY doc_id LIMIT ?3");
            let params = [self.deleted.into(), self.after.as_str().into(), self.left.min(STATE_PAGE_ROWS).into()];
            match self.db.query(&query, &params) {
                Ok(rows) if rows.is_empty() => self.left = 0,
                Ok(rows) => {
                    self.left -= rows.len() as i64;
                    self.page = rows.iter().map(doc_state_row).collect::<Vec<_>>().into_iter();
                }
                Err(e) => self.failure = Some(e),
            }
        }
    }
}

fn state_ref_row(r: &Row) -> StateRef {
    // Columns: key, kind, label, tombstones_key, last_seq, max_ts, rows, tombstones, bytes, created_at.
    StateRef {
        key: r.str(0).to_string(),
        kind: r.str(1).to_string(),
        label: r.str(2).to_string(),
        tombstones_key: r.str(3).to_string(),
        files: Vec::new(),
        tombstone_files: Vec::new(),
        upto_seq: r.i64(4),
        max_ts: r.i64(5),
        rows: r.i64(6),
        tombstones: r.i64(7),
        bytes: r.i64(8),
        created_at: r.i64(9),
    }
}

const STATE_REF_COLUMNS: &str =
    "key, kind, label, tombstones_key, last_seq, max_ts, rows, tombstones, bytes, created_at";

impl CdcProcessor {
    fn save_counters<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        let mut current = self.counters.clone();
        let mut saved = self.saved.clone();
        for ((name, value), old) in COUNTER_NAMES.iter().zip(current.slots()).zip(saved.slots()) {
            if *value != *old {
                db.execute(
                    "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    &[(*name).into(), (*value).into()],
                )?;
            }
        }
        self.saved = self.counters.clone();
        Ok(())
    }

    fn pending(&self) -> i64 {
        self.counters.next_seq - 1 - self.counters.flushed_seq
    }

    fn unfolded(&self) -> i64 {
        self.counters.next_seq - 1 - self.counters.folded_seq
    }

    /// Appends changes in arrival order (one transaction with the request):
    /// per change one row of `changes` (and its `event_id` index entry, which
    /// skips a redelivered change). Folding them into `docs` waits for a
    /// sorted batch (see [`CdcProcessor::fold`]); the apply that brings the
    /// unfolded tail to [`CdcConfig::fold_max_changes`] runs it.
    async fn apply<H: Host>(&mut self, cx: &ObjectContext<H>, changes: Vec<Change>) -> ObjectResult<Applied> {
        if changes.len() > MAX_CHANGES_PER_APPLY {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("at most {MAX_CHANGES_PER_APPLY} changes per apply, not {}", changes.len()),
            ));
        }
        let db = cx.storage();
        let now = cx.now().as_millis();
        let mut result = Applied { applied: 0, duplicates: 0, late: 0 };
        for c in changes {
            assert_eq!(c.collection, self.collection, "changes reach only their collection's processor");
            let seq = self.counters.next_seq;
            let fresh = db.execute(
                "INSERT INTO changes (seq, event_id, doc_id, op, ts, before, after, bookmark, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(event_id) DO NOTHING",
                &[
                    seq.into(),
                    c.event_id.into(),
                    c.doc_id.into(),
                    c.op.code().into(),
                    c.ts.as_millis().into(),
                    c.before.as_ref().map(|v| v.to_string()).into(),
                    c.after.as_ref().map(|v| v.to_string()).into(),
                    c.bookmark.into(),
                    now.into(),
                ],
            )?;
            if fresh == 0 {
                result.duplicates += 1;
                continue;
            }
            self.counters.next_seq += 1;
            self.counters.changes += 1;
            self.counters.max_ts = self.counters.max_ts.max(c.ts.as_millis());
            self.oldest_pending.get_or_insert(now);
            self.oldest_unfolded.get_or_insert(now);
            result.applied += 1;
        }
        if self.unfolded() >= self.config.fold_max_changes {
            result.late = self.fold(db)?;
        }
        if result.applied > 0 && self.counters.registered == 0 {
            cx.stub::<CdcCollections>(self.ns.clone())
                .call(CollectionsRequest::Register { collection: self.collection.clone() })
                .await?;
            self.counters.registered = 1;
        }
        self.save_counters(db)?;
        self.schedule(cx).await?;
        cdc_metrics::applied(&result);
        Ok(result)
    }

    /// Folds the unfolded tail (`seq > folded_seq`) into `docs` and the
    /// history index `doc_changes`, set-based: SQLite sorts the tail's keys
    /// by document (a window over at most [`MAX_FOLD_CHANGES`] changes plus
    /// one batch), and each statement then visits the pages of `docs` and
    /// `doc_changes` in key order, each once per fold. Returns the late
    /// changes found: a change is late when an earlier arrival of its
    /// document has a later event time (the rule of [`DocState::fold`]).
    fn fold<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<usize> {
        let last = self.counters.next_seq - 1;
        if self.counters.folded_seq >= last {
            self.oldest_unfolded = None;
            return Ok(0);
        }
        assert_eq!(ChangeOp::Delete.code(), 2, "the fold's SQL names deletes by their code");
        let range = [self.counters.folded_seq.into(), last.into()];
        // Read before the state changes: late changes and tombstone transitions.
        let late = db.query_one(FOLD_LATE_SQL, &range)?.map_or(0, |r| r.i64(0));
        let (live, deleted) =
            db.query_one(&fold_sql(FOLD_TRANSITIONS_SELECT), &range)?.map_or((0, 0), |r| (r.i64(0), r.i64(1)));
        db.execute(
            "INSERT INTO doc_changes (doc_id, ts, seq)
             SELECT doc_id, ts, seq FROM changes WHERE seq > ?1 AND seq <= ?2 ORDER BY doc_id, ts, seq",
            &range,
        )?;
        db.execute(&fold_sql(FOLD_UPSERT), &range)?;
        self.counters.live += live;
        self.counters.deleted += deleted;
        assert!(self.counters.live >= 0 && self.counters.deleted >= 0, "document counts stay non-negative");
        self.counters.folded_seq = last;
        self.counters.late += late;
        self.oldest_unfolded = None;
        self.save_counters(db)?;
        cdc_metrics::late(late as usize);
        Ok(late as usize)
    }

    /// Sets the alarm for the next flush or snapshot.
    async fn schedule<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let now = cx.now().as_millis();
        let mut next: Option<i64> = None;
        let mut consider = |at: i64| next = Some(next.map_or(at, |n: i64| n.min(at)));
        if self.pending() >= self.config.flush_max_changes {
            consider(now);
        } else if let Some(oldest) = self.oldest_pending {
            consider(oldest + self.config.flush_max_age_ms);
        }
        if let Some(oldest) = self.oldest_unfolded {
            // The unfolded tail is folded as old as a pending change is flushed.
            consider(oldest + self.config.flush_max_age_ms);
        }
        let db = cx.storage();
        if db.query_one("SELECT 1 FROM garbage LIMIT 1", &[])?.is_some() {
            consider(now);
        }
        // The next trim: when the oldest untrimmed change leaves the
        // retention, once it is in a delta file and folded (the flush and
        // fold scheduled above come first).
        let eligible = self.counters.flushed_seq.min(self.counters.folded_seq);
        if let Some(oldest) = db.query_one(
            "SELECT seq, received_at FROM changes WHERE seq > ?1 ORDER BY seq LIMIT 1",
            &[self.counters.trimmed_seq.into()],
        )? && oldest.i64(0) <= eligible
        {
            consider(oldest.i64(1) + self.config.history_keep_ms);
        }
        if self.publish_error.is_some() {
            consider(now + PUBLISH_RETRY_MS);
        }
        if self.counters.changes > 0 {
            // The next UTC midnight: the daily (and monthly) snapshot check.
            consider(now - now.rem_euclid(DAY_MS) + DAY_MS);
        }
        if let Some(at) = next {
            let current = cx.storage().get_alarm().await?.map(|t| t.as_millis());
            if current.is_none_or(|c| at < c || c < now) {
                cx.storage().set_alarm(Timestamp(at.max(now))).await?;
            }
        }
        Ok(())
    }

    /// Writes pending changes to delta files: plans a range, writes it, records it.
    async fn flush<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let db = cx.storage();
        let mut keys = Vec::new();
        while self.pending() > 0 || self.counters.plan_first > 0 {
            if self.counters.plan_first == 0 {
                self.counters.plan_first = self.counters.flushed_seq + 1;
                self.counters.plan_last =
                    (self.counters.flushed_seq + MAX_CHANGES_PER_DELTA).min(self.counters.next_seq - 1);
                self.save_counters(db)?;
            }
            let (first, last) = (self.counters.plan_first, self.counters.plan_last);
            let mut rows = change_rows(db, "seq BETWEEN ?1 AND ?2", &[first.into(), last.into()])?;
            let min_ts = rows.iter().map(|r| r.ts).min().unwrap_or(0);
            let max_ts = rows.iter().map(|r| r.ts).max().unwrap_or(0);
            let count = rows.len() as i64;
            let bytes = encode_delta_file(&mut rows)?;
            let key = delta_key(&self.ns, &self.collection, first);
            let size = bytes.len() as i64;
            cx.host().blobs().put(&key, bytes).await?;
            db.execute(
                "INSERT OR REPLACE INTO files (key, kind, first_seq, last_seq, rows, bytes, min_ts, max_ts, created_at)
                 VALUES (?1, 'delta', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    key.as_str().into(),
                    first.into(),
                    last.into(),
                    count.into(),
                    size.into(),
                    min_ts.into(),
                    max_ts.into(),
                    cx.now().as_millis().into(),
                ],
            )?;
            cdc_metrics::flushed(count, size);
            self.counters.flushed_seq = last;
            self.counters.plan_first = 0;
            self.counters.plan_last = 0;
            self.save_counters(db)?;
            keys.push(key);
        }
        self.oldest_pending = None;
        if !keys.is_empty() {
            self.write_manifest(cx).await?;
        }
        Ok(keys)
    }

    /// Whether the alarm should compact: at least
    /// [`CdcConfig::compact_min_deltas`] delta files hold changes the current
    /// table does not (files kept only for older snapshots do not count), and
    /// those changes are at least 1/[`COMPACT_MIN_SHARE_DIVISOR`] of the
    /// documents. A compaction rewrites every document, so the second rule
    /// keeps the rows written per change bounded however large the collection.
    fn compaction_due<S: SqlStorage>(&self, db: &S) -> ObjectResult<bool> {
        let current_upto =
            db.query_one("SELECT last_seq FROM files WHERE kind = 'current'", &[])?.map_or(0, |r| r.i64(0));
        let (deltas, rows) = db
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM files WHERE kind = 'delta' AND last_seq > ?1",
                &[current_upto.into()],
            )?
            .map_or((0, 0), |r| (r.i64(0), r.i64(1)));
        let documents = self.counters.live + self.counters.deleted;
        Ok(deltas >= self.config.compact_min_deltas && rows * COMPACT_MIN_SHARE_DIVISOR >= documents)
    }

    /// Flushes, then writes the current table from `docs` and retires what it makes obsolete.
    async fn compact<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let mut written = self.flush(cx).await?;
        let db = cx.storage();
        self.fold(db)?;
        let upto = self.counters.flushed_seq;
        let current = db.query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = 'current'"), &[])?;
        if current.as_ref().is_some_and(|c| c.i64(4) == upto) || upto == 0 {
            return Ok(written); // nothing new to fold
        }
        let (live_key, tomb_key) = current_keys(&self.ns, &self.collection, upto);
        let (live_rows, live_size) = self.write_state(cx, &live_key, &live_key, false, upto).await?;
        let (tomb_rows, tomb_size) = self.write_state(cx, &live_key, &tomb_key, true, upto).await?;
        let size = live_size + tomb_size;
        if self.config.failpoint.as_deref() == Some("compact-after-write") {
            // Test hook: a crash after the new table is written, before it is recorded.
            std::process::abort();
        }
        if let Some(old) = current {
            let old = state_ref_row(&old);
            // A live file the catalog holds is the catalog's to delete (by
            // snapshot expiry, once no retained snapshot reads it); one it
            // never got is ours.
            let cataloged = self.cataloged_keys(db)?;
            for part in state_parts(db, &old)? {
                if part.tombstones || !cataloged.contains(&part.key) {
                    db.execute("INSERT OR IGNORE INTO garbage (key) VALUES (?1)", &[part.key.into()])?;
                }
            }
            db.execute("DELETE FROM files WHERE key = ?1", &[old.key.as_str().into()])?;
            db.execute("DELETE FROM state_parts WHERE base_key = ?1", &[old.key.into()])?;
        }
        let now = cx.now().as_millis();
        db.execute(
            "INSERT OR REPLACE INTO files (key, kind, tombstones_key, first_seq, last_seq, rows, tombstones, bytes, min_ts, max_ts, created_at)
             VALUES (?1, 'current', ?2, 1, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
            &[
                live_key.as_str().into(),
                tomb_key.into(),
                upto.into(),
                live_rows.into(),
                tomb_rows.into(),
                size.into(),
                self.counters.max_ts.into(),
                now.into(),
            ],
        )?;
        self.retire_deltas(db)?;
        self.counters.compactions += 1;
        self.counters.last_compaction = now;
        self.save_counters(db)?;
        self.write_manifest(cx).await?;
        cdc_metrics::compaction();
        written.push(live_key);
        self.publish_current(cx).await;
        Ok(written)
    }

    /// Commits the current table to the namespace's Iceberg catalog as table
    /// [`cdc_table_name`], replacing the one committed before, unless it is
    /// there already. Runs after the compaction that wrote it has been
    /// recorded, so a retry (the next alarm) finds the same file; a file the
    /// catalog already lists is replaced by itself, so a repeat is harmless.
    ///
    /// A failure is counted and retried by the alarm; it never undoes the
    /// compaction.
    async fn publish_current<H: Host>(&mut self, cx: &ObjectContext<H>) {
        if let Err(e) = self.try_publish_current(cx).await {
            cdc_metrics::publish_failed();
            self.publish_error = Some(e.message);
        } else {
            self.publish_error = None;
        }
    }

    async fn try_publish_current<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let Some(current) =
            db.query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = 'current'"), &[])?
        else {
            return Ok(());
        };
        let current = state_ref_row(&current);
        if current.upto_seq == self.counters.cataloged_seq {
            return Ok(());
        }
        let table = cdc_table_name(&self.collection);
        let catalog = cx.stub::<Catalog>(self.ns.clone());
        let properties = BTreeMap::from([(CDC_COLLECTION_PROPERTY.to_string(), self.collection.clone())]);
        let schema = iceberg_schema(&events_lake::cdc::state_schema());
        match catalog.call(CatalogRequest::EnsureManagedTable { table: table.clone(), schema, properties }).await? {
            CatalogResponse::Table(loaded) => {
                let owner = loaded.metadata.properties.get(CDC_COLLECTION_PROPERTY);
                if owner != Some(&self.collection) {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!("table {table} belongs to collection {owner:?}, not {:?}", self.collection),
                    ));
                }
            }
            other => return Err(ApiError::internal(format!("catalog answered {other:?} to EnsureManagedTable"))),
        }
        // Every live file of the state, in one catalog snapshot.
        let mut added = Vec::new();
        for part in state_parts(db, &current)?.into_iter().filter(|p| !p.tombstones) {
            let bytes = match part.bytes {
                0 => cx
                    .host()
                    .blobs()
                    .list(&part.key)
                    .await?
                    .into_iter()
                    .find(|b| b.key == part.key)
                    .map(|b| b.size as i64)
                    .ok_or_else(|| ApiError::internal(format!("state file {} is missing from the lake", part.key)))?,
                n => n,
            };
            added.push(NewFile { key: part.key, rows: part.rows, bytes });
        }
        let removed = self.cataloged_keys(db)?;
        let keys: Vec<String> = added.iter().map(|f| f.key.clone()).collect();
        match catalog.call(CatalogRequest::CommitFiles { table, added, removed }).await? {
            CatalogResponse::Committed(_) => {}
            other => return Err(ApiError::internal(format!("catalog answered {other:?} to CommitFiles"))),
        }
        db.execute("DELETE FROM cataloged", &[])?;
        for key in keys {
            db.execute("INSERT OR IGNORE INTO cataloged (key) VALUES (?1)", &[key.into()])?;
        }
        self.counters.cataloged_seq = current.upto_seq;
        self.save_counters(db)
    }

    /// The live state files the catalog's table holds (recorded since states
    /// were split; before, the one file named by `cataloged_seq`).
    fn cataloged_keys<S: SqlStorage>(&self, db: &S) -> ObjectResult<Vec<String>> {
        let keys: Vec<String> =
            db.query("SELECT key FROM cataloged ORDER BY key", &[])?.iter().map(|r| r.str(0).to_string()).collect();
        Ok(match (keys.is_empty(), self.counters.cataloged_seq) {
            (true, 0) => Vec::new(),
            (true, seq) => vec![current_keys(&self.ns, &self.collection, seq).0],
            (false, _) => keys,
        })
    }

    /// Moves to `garbage` every delta file folded into the current table and
    /// into the oldest retained snapshot (so every retained base keeps the
    /// deltas that follow it).
    fn retire_deltas<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        let horizon = db
            .query_one("SELECT MIN(last_seq) FROM files WHERE kind IN ('current', 'daily', 'monthly')", &[])?
            .and_then(|r| r.opt_i64(0))
            .unwrap_or(0);
        db.execute(
            "INSERT OR IGNORE INTO garbage (key) SELECT key FROM files WHERE kind = 'delta' AND last_seq <= ?1",
            &[horizon.into()],
        )?;
        db.execute("DELETE FROM files WHERE kind = 'delta' AND last_seq <= ?1", &[horizon.into()])?;
        Ok(())
    }

    /// Writes the live documents (or the tombstones) of `docs` as state
    /// files of at most [`CdcConfig::state_file_rows`] rows in id order: the
    /// first at `first_key`, the next at its [`part_key`]s. Each file is
    /// encoded from pages of SQLite rows and put before the next is begun,
    /// so memory holds one file, whatever the collection's size. Records the
    /// files in `state_parts` under `base_key`; returns (rows, bytes).
    async fn write_state<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        base_key: &str,
        first_key: &str,
        deleted: bool,
        upto: i64,
    ) -> ObjectResult<(i64, i64)> {
        let db = cx.storage();
        db.execute(
            "DELETE FROM state_parts WHERE base_key = ?1 AND tombstones = ?2",
            &[base_key.into(), deleted.into()],
        )?;
        let (mut rows, mut bytes) = (0, 0);
        let mut after = String::new(); // below every id (ids are never empty)
        for part in 0u32.. {
            let mut pages = StatePages {
                db,
                deleted,
                after: after.clone(),
                left: self.config.state_file_rows,
                page: Vec::new().into_iter(),
                rows: 0,
                first: None,
                failure: None,
            };
            let file = encode_state_file(&mut pages, upto)?;
            if let Some(e) = pages.failure {
                return Err(e);
            }
            if pages.rows == 0 && part > 0 {
                break; // the previous part ended exactly at the bound
            }
            let key = part_key(first_key, part);
            let size = file.len() as i64;
            cx.host().blobs().put(&key, file).await?;
            db.execute(
                "INSERT OR REPLACE INTO state_parts (base_key, tombstones, part, key, rows, bytes, first_id, last_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    base_key.into(),
                    deleted.into(),
                    part.into(),
                    key.into(),
                    pages.rows.into(),
                    size.into(),
                    pages.first.clone().into(),
                    pages.first.is_some().then(|| pages.after.clone()).into(),
                ],
            )?;
            rows += pages.rows;
            bytes += size;
            if pages.rows < self.config.state_file_rows {
                break;
            }
            after = pages.after;
        }
        Ok((rows, bytes))
    }

    /// Takes a snapshot of `kind` unless nothing changed since the last one.
    async fn snapshot<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        kind: SnapshotKind,
        label: String,
    ) -> ObjectResult<Option<String>> {
        let db = cx.storage();
        let last = db
            .query_one("SELECT MAX(last_seq) FROM files WHERE kind = ?1", &[kind.as_str().into()])?
            .and_then(|r| r.opt_i64(0))
            .unwrap_or(0);
        if self.counters.next_seq - 1 <= last || self.counters.changes == 0 {
            cdc_metrics::snapshot(kind.as_str(), "skipped");
            return Ok(None);
        }
        self.compact(cx).await?;
        let db = cx.storage();
        let current = state_ref_row(
            &db.query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = 'current'"), &[])?
                .ok_or_else(|| ApiError::internal("compaction left no current table"))?,
        );
        let now = cx.now();
        let (key, tomb_key) = snapshot_keys(&self.ns, &self.collection, kind.as_str(), &label);
        // A snapshot of the same label (taken earlier today) is replaced:
        // its files are overwritten, and those beyond the new parts retired.
        let replaced =
            db.query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE key = ?1"), &[key.as_str().into()])?;
        let replaced = match replaced {
            Some(r) => state_parts(db, &state_ref_row(&r))?,
            None => Vec::new(),
        };
        db.execute("DELETE FROM state_parts WHERE base_key = ?1", &[key.as_str().into()])?;
        // One file at a time: memory holds one state file.
        let mut written = Vec::new();
        for part in state_parts(db, &current)? {
            let to = part_key(if part.tombstones { &tomb_key } else { &key }, part.part);
            let bytes = cx.host().blobs().get(&part.key).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::StorageError, format!("current table file {} is missing", part.key))
            })?;
            let size = bytes.len() as i64;
            cx.host().blobs().put(&to, bytes).await?;
            db.execute(
                "INSERT INTO state_parts (base_key, tombstones, part, key, rows, bytes, first_id, last_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    key.as_str().into(),
                    part.tombstones.into(),
                    part.part.into(),
                    to.as_str().into(),
                    part.rows.into(),
                    size.into(),
                    part.ids.as_ref().map(|i| i.0.clone()).into(),
                    part.ids.as_ref().map(|i| i.1.clone()).into(),
                ],
            )?;
            written.push(to);
        }
        for part in replaced.into_iter().filter(|p| !written.contains(&p.key)) {
            db.execute("INSERT OR IGNORE INTO garbage (key) VALUES (?1)", &[part.key.into()])?;
        }
        db.execute("DELETE FROM files WHERE key = ?1", &[key.as_str().into()])?;
        db.execute(
            "INSERT INTO files (key, kind, label, tombstones_key, first_seq, last_seq, rows, tombstones, bytes, min_ts, max_ts, created_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
            &[
                key.as_str().into(),
                kind.as_str().into(),
                label.into(),
                tomb_key.into(),
                current.upto_seq.into(),
                current.rows.into(),
                current.tombstones.into(),
                current.bytes.into(),
                current.max_ts.into(),
                now.as_millis().into(),
            ],
        )?;
        // Retention: keep the newest N of this kind.
        let keep = match kind {
            SnapshotKind::Daily => self.config.keep_daily,
            SnapshotKind::Monthly => self.config.keep_monthly,
        };
        let old = db.query(
            &format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = ?1 ORDER BY last_seq DESC LIMIT -1 OFFSET ?2"),
            &[kind.as_str().into(), keep.into()],
        )?;
        for r in old {
            let old = state_ref_row(&r);
            for part in state_parts(db, &old)? {
                db.execute("INSERT OR IGNORE INTO garbage (key) VALUES (?1)", &[part.key.into()])?;
            }
            db.execute("DELETE FROM files WHERE key = ?1", &[old.key.as_str().into()])?;
            db.execute("DELETE FROM state_parts WHERE base_key = ?1", &[old.key.into()])?;
        }
        self.retire_deltas(db)?;
        self.write_manifest(cx).await?;
        cdc_metrics::snapshot(kind.as_str(), "taken");
        Ok(Some(key))
    }

    /// Deletes garbage files (each already unreferenced by a committed state).
    async fn collect_garbage<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let keys = db.query("SELECT key FROM garbage LIMIT ?1", &[GC_BATCH.into()])?;
        for r in keys {
            cx.host().blobs().delete(r.str(0)).await?;
            db.execute("DELETE FROM garbage WHERE key = ?1", &[r.str(0).into()])?;
        }
        Ok(())
    }

    fn manifest<S: SqlStorage>(&self, db: &S, now: i64) -> ObjectResult<CdcManifest> {
        let deltas = db
            .query(
                "SELECT key, first_seq, last_seq, rows, bytes, min_ts, max_ts FROM files WHERE kind = 'delta' ORDER BY first_seq",
                &[],
            )?
            .iter()
            .map(|r| DeltaRef {
                key: r.str(0).to_string(),
                first_seq: r.i64(1),
                last_seq: r.i64(2),
                rows: r.i64(3),
                bytes: r.i64(4),
                min_ts: r.i64(5),
                max_ts: r.i64(6),
            })
            .collect();
        let current = db
            .query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = 'current'"), &[])?
            .map(|r| state_ref(db, &r))
            .transpose()?;
        let snapshots = db
            .query(
                &format!(
                    "SELECT {STATE_REF_COLUMNS} FROM files WHERE kind IN ('daily', 'monthly') ORDER BY last_seq, kind"
                ),
                &[],
            )?
            .iter()
            .map(|r| state_ref(db, r))
            .collect::<ObjectResult<_>>()?;
        Ok(CdcManifest {
            format: MANIFEST_FORMAT.to_string(),
            namespace: self.ns.clone(),
            collection: self.collection.clone(),
            flushed_seq: self.counters.flushed_seq,
            deltas,
            current,
            snapshots,
            updated_at: now,
        })
    }

    async fn write_manifest<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let manifest = self.manifest(cx.storage(), cx.now().as_millis())?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(corrupt)?;
        cx.host().blobs().put(&manifest_key(&self.ns, &self.collection), json).await
    }

    fn stats<S: SqlStorage>(&self, db: &S) -> ObjectResult<CdcStats> {
        let count = |sql: &str| -> ObjectResult<i64> { Ok(db.query_one(sql, &[])?.map_or(0, |r| r.i64(0))) };
        Ok(CdcStats {
            collection: self.collection.clone(),
            documents: self.counters.live,
            deleted: self.counters.deleted,
            changes: self.counters.changes,
            pending: self.pending(),
            late: self.counters.late,
            last_change: (self.counters.changes > 0).then(|| Timestamp(self.counters.max_ts).to_iso()),
            delta_files: count("SELECT COUNT(*) FROM files WHERE kind = 'delta'")?,
            last_compaction: (self.counters.last_compaction > 0)
                .then(|| Timestamp(self.counters.last_compaction).to_iso()),
            compactions: self.counters.compactions,
            snapshots: count("SELECT COUNT(*) FROM files WHERE kind IN ('daily', 'monthly')")?,
            table: cdc_table_name(&self.collection),
            catalog_error: self.publish_error.clone(),
            history_from: self.history_from(),
        })
    }

    /// The state of one document at `at`, from its history (index range
    /// read); exact when [`CdcProcessor::history_covers`] `at`.
    fn doc_at<S: SqlStorage>(db: &S, id: &str, at: i64) -> ObjectResult<Option<DocState>> {
        let mut state: Option<DocState> = None;
        let mut failure = None;
        db.query_each(
            &format!(
                "SELECT {HISTORY_COLUMNS} FROM doc_changes h JOIN changes c ON c.seq = h.seq
                 WHERE h.doc_id = ?1 AND h.ts <= ?2 ORDER BY h.ts, h.seq"
            ),
            &[id.into(), at.into()],
            &mut |r| match fold_history_row(state.take(), r) {
                Ok(s) => {
                    state = Some(s);
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            },
        )?;
        failure.map_or(Ok(state), Err)
    }

    /// Whether the object's history answers reads at `at` exactly: nothing
    /// was trimmed, or `at` is not before the newest trimmed change.
    fn history_covers(&self, at: i64) -> bool {
        self.counters.trimmed_seq == 0 || at >= self.counters.history_from
    }

    /// The time from which the history is complete, if some was trimmed.
    fn history_from(&self) -> Option<String> {
        (self.counters.trimmed_seq > 0).then(|| Timestamp(self.counters.history_from).to_iso())
    }

    /// Trims the history by one step: of the changes that arrived more than
    /// [`CdcConfig::history_keep_ms`] ago and are both in delta files and
    /// folded (at most [`TRIM_BATCH`], in arrival order), each document
    /// keeps only its winning change by `(ts, seq)`, which then counts for
    /// the removed ones (`merged`). Returns the rows removed, or `None` when
    /// nothing was due.
    ///
    /// Why reads stay exact: every trimmed change has an event time at or
    /// before `history_from`, so at any time `T >= history_from` all of a
    /// document's trimmed changes are in its fold, whose winner and count
    /// the kept row preserves. Earlier times are read from the lake (delta
    /// files and snapshots keep every change until their own retention).
    fn trim<S: SqlStorage>(&mut self, db: &S, now: i64) -> ObjectResult<Option<usize>> {
        let eligible = self.counters.flushed_seq.min(self.counters.folded_seq);
        let cutoff = now - self.config.history_keep_ms;
        let lo = self.counters.trimmed_seq;
        // Arrival order is receive-time order: the due changes are a prefix,
        // read up to the first one still within the retention.
        let mut due = None;
        db.query_each(
            "SELECT seq, received_at FROM changes WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
            &[lo.into(), eligible.into(), TRIM_BATCH.into()],
            &mut |r| {
                if r.i64(1) > cutoff {
                    return false;
                }
                due = Some(r.i64(0));
                true
            },
        )?;
        let Some(hi) = due else {
            return Ok(None);
        };
        let range = [lo.into(), hi.into()];
        let newest = db
            .query_one("SELECT MAX(ts) FROM changes WHERE seq > ?1 AND seq <= ?2", &range)?
            .and_then(|r| r.opt_i64(0))
            .expect("the range holds at least one change");
        let docs: Vec<String> = db
            .query("SELECT DISTINCT doc_id FROM changes WHERE seq > ?1 AND seq <= ?2", &range)?
            .iter()
            .map(|r| r.str(0).to_string())
            .collect();
        let mut removed = 0;
        for id in docs {
            // The document's history up to `hi`: its kept row of an earlier trim, if any, and the range's changes.
            let rows: Vec<(i64, i64, i64)> = db
                .query(
                    "SELECT h.ts, h.seq, c.merged FROM doc_changes h JOIN changes c ON c.seq = h.seq
                     WHERE h.doc_id = ?1 AND h.seq <= ?2",
                    &[id.as_str().into(), hi.into()],
                )?
                .iter()
                .map(|r| (r.i64(0), r.i64(1), r.i64(2)))
                .collect();
            let &(_, winner, _) = rows
                .iter()
                .max_by_key(|r| (r.0, r.1))
                .ok_or_else(|| corrupt(format!("document {id:?} has no history for its changes")))?;
            for &(ts, seq, _) in rows.iter().filter(|r| r.1 != winner) {
                db.execute(
                    "DELETE FROM doc_changes WHERE doc_id = ?1 AND ts = ?2 AND seq = ?3",
                    &[id.as_str().into(), ts.into(), seq.into()],
                )?;
                db.execute("DELETE FROM changes WHERE seq = ?1", &[seq.into()])?;
                removed += 1;
            }
            let merged: i64 = rows.iter().map(|r| r.2).sum();
            db.execute("UPDATE changes SET merged = ?1 WHERE seq = ?2", &[merged.into(), winner.into()])?;
        }
        self.counters.history_from = if lo == 0 { newest } else { self.counters.history_from.max(newest) };
        self.counters.trimmed_seq = hi;
        self.save_counters(db)?;
        cdc_metrics::trimmed(removed);
        Ok(Some(removed))
    }

    /// Runs trim steps until nothing is due, at most [`TRIM_STEPS_PER_ALARM`]
    /// of them; returns the rows removed.
    fn trim_due<S: SqlStorage>(&mut self, db: &S, now: i64) -> ObjectResult<usize> {
        let mut removed = 0;
        for _ in 0..TRIM_STEPS_PER_ALARM {
            match self.trim(db, now)? {
                Some(n) => removed += n,
                None => break,
            }
        }
        Ok(removed)
    }

    /// A page of documents at `at`, streamed from the history index.
    fn read_state<S: SqlStorage>(
        &self,
        db: &S,
        at: Option<Timestamp>,
        after: Option<String>,
        limit: usize,
        include_deleted: bool,
    ) -> ObjectResult<(Vec<DocView>, Option<String>)> {
        let limit = limit.clamp(1, MAX_READ_PAGE);
        let after = after.unwrap_or_default();
        let mut out: Vec<DocState> = Vec::new();
        let mut more = false;
        match at.map(|t| t.as_millis()) {
            // Now (or later than every change): the `docs` table is the answer.
            None => {
                db.query_each(
                    &format!(
                        "SELECT {DOC_COLUMNS} FROM docs WHERE doc_id > ?1 AND (deleted = 0 OR ?2) ORDER BY doc_id"
                    ),
                    &[after.as_str().into(), include_deleted.into()],
                    &mut |r| {
                        if out.len() == limit {
                            more = true;
                            return false;
                        }
                        out.push(doc_state_row(r));
                        true
                    },
                )?;
            }
            Some(at) => {
                let mut current: Option<DocState> = None;
                let mut failure = None;
                db.query_each(
                    &format!(
                        "SELECT {HISTORY_COLUMNS} FROM doc_changes h JOIN changes c ON c.seq = h.seq
                         WHERE h.doc_id > ?1 AND h.ts <= ?2 ORDER BY h.doc_id, h.ts, h.seq"
                    ),
                    &[after.as_str().into(), at.into()],
                    &mut |r| {
                        if current.as_ref().is_some_and(|s| s.id != r.str(0)) {
                            let done = current.take().expect("checked");
                            if include_deleted || !done.deleted {
                                out.push(done);
                            }
                            if out.len() == limit {
                                more = true;
                                return false;
                            }
                        }
                        match fold_history_row(current.take(), r) {
                            Ok(s) => {
                                current = Some(s);
                                true
                            }
                            Err(e) => {
                                failure = Some(e);
                                false
                            }
                        }
                    },
                )?;
                if let Some(e) = failure {
                    return Err(e);
                }
                if let Some(done) = current.take()
                    && !more
                    && (include_deleted || !done.deleted)
                {
                    out.push(done);
                    if out.len() > limit {
                        out.pop();
                        more = true;
                    }
                }
            }
        }
        let next = if more { out.last().map(|d| d.id.clone()) } else { None };
        Ok((out.into_iter().map(doc_view).collect::<ObjectResult<_>>()?, next))
    }

    fn history<S: SqlStorage>(
        db: &S,
        id: &str,
        after: Option<ChangePosition>,
        limit: usize,
    ) -> ObjectResult<(Vec<HistoryEntry>, Option<ChangePosition>)> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let (ts, seq) = after.unwrap_or((events_runtime::MIN_EXACT_INTEGER, events_runtime::MIN_EXACT_INTEGER));
        let rows = db.query(
            "SELECT c.event_id, c.op, h.ts, h.seq, c.before, c.after, c.bookmark, c.merged FROM doc_changes h JOIN changes c ON c.seq = h.seq
             WHERE h.doc_id = ?1 AND (h.ts > ?2 OR (h.ts = ?2 AND h.seq > ?3)) ORDER BY h.ts, h.seq LIMIT ?4",
            &[id.into(), ts.into(), seq.into(), (limit + 1).into()],
        )?;
        let more = rows.len() > limit;
        let mut out = Vec::with_capacity(limit);
        for r in rows.iter().take(limit) {
            out.push(HistoryEntry {
                event_id: r.str(0).to_string(),
                op: ChangeOp::from_code(r.i64(1)).ok_or_else(|| corrupt("unknown op code"))?,
                ts: Timestamp(r.i64(2)).to_iso(),
                seq: r.i64(3),
                before: parse_json(r.opt_str(4))?,
                after: parse_json(r.opt_str(5))?,
                bookmark: r.opt_str(6).map(String::from),
                trimmed_before: r.i64(7) - 1,
            });
        }
        let next = if more { rows.get(limit - 1).map(|r| (r.i64(2), r.i64(3))) } else { None };
        Ok((out, next))
    }

    /// A page of documents at `at` reconstructed from the lake files plus
    /// pending changes (tombstones only if `include_deleted`).
    async fn read_files<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        at: i64,
        base: FileBase,
        page: (Option<String>, usize),
        include_deleted: bool,
    ) -> ObjectResult<(Vec<DocView>, Option<String>)> {
        let (after, limit) = (page.0.unwrap_or_default(), page.1.clamp(1, MAX_READ_PAGE));
        let start = if after.is_empty() { String::new() } else { format!("{after}\0") }; // the least id after `after`
        let mut out = Vec::new();
        let mut more = false;
        self.lake_states(cx, at, base, &start, &mut |s| {
            if (s.deleted && !include_deleted) || s.id <= after {
                return true;
            }
            if out.len() == limit {
                more = true;
                return false;
            }
            out.push(s);
            true
        })
        .await?;
        let next = if more { out.last().map(|d| d.id.clone()) } else { None };
        Ok((out.into_iter().map(doc_view).collect::<ObjectResult<_>>()?, next))
    }

    /// One document at `at`, reconstructed from the lake files plus pending changes.
    async fn read_file_doc<H: Host>(&self, cx: &ObjectContext<H>, at: i64, id: &str) -> ObjectResult<Option<DocState>> {
        let mut found = None;
        self.lake_states(cx, at, FileBase::Auto, id, &mut |s| match s.id.as_str().cmp(id) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => {
                found = Some(s);
                false
            }
            std::cmp::Ordering::Greater => false,
        })
        .await?;
        Ok(found)
    }

    /// Streams the state at `at` of every document whose id is `start` or
    /// later (tombstones included), in id order, from `base` plus the delta
    /// files after it plus the pending changes, to `emit` until it returns
    /// `false`. Memory: one file of the base's live documents and one of its
    /// tombstones at a time (files entirely before `start` are not read),
    /// plus the delta files; delta files whose changes are all later than
    /// `at` are not read.
    async fn lake_states<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        at: i64,
        base: FileBase,
        start: &str,
        emit: &mut dyn FnMut(DocState) -> bool,
    ) -> ObjectResult<()> {
        let db = cx.storage();
        let bases: Vec<StateRef> = db
            .query(
                &format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind IN ('current', 'daily', 'monthly') ORDER BY last_seq DESC"),
                &[],
            )?
            .iter()
            .map(|r| state_ref(db, r))
            .collect::<ObjectResult<_>>()?;
        let chosen = match &base {
            FileBase::DeltasOnly => None,
            FileBase::Auto => bases.into_iter().find(|b| b.max_ts <= at),
            FileBase::Current => Some(
                bases
                    .into_iter()
                    .find(|b| b.kind == "current")
                    .ok_or_else(|| ApiError::not_found("the collection has no current table yet: compact it first"))?,
            ),
            FileBase::Snapshot { kind, label } => Some(
                bases
                    .into_iter()
                    .find(|b| b.kind == kind.as_str() && b.label == *label)
                    .ok_or_else(|| ApiError::not_found(format!("no {} snapshot {label}", kind.as_str())))?,
            ),
        };
        if let Some(b) = &chosen
            && b.max_ts > at
        {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("the {} base holds changes up to {}, after {}", b.kind, Timestamp(b.max_ts), Timestamp(at)),
            ));
        }
        let upto = chosen.as_ref().map_or(0, |b| b.upto_seq);
        let deltas = db.query(
            "SELECT key, first_seq, last_seq, min_ts FROM files WHERE kind = 'delta' AND last_seq > ?1 ORDER BY first_seq",
            &[upto.into()],
        )?;
        // The deltas must cover every change after the base without a gap.
        let mut covered = upto;
        for d in &deltas {
            if d.i64(1) > covered + 1 {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "changes {}..{} are no longer in delta files (compacted away); read from a later base",
                        covered + 1,
                        d.i64(1) - 1
                    ),
                ));
            }
            covered = covered.max(d.i64(2));
        }
        if covered < self.counters.flushed_seq {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!(
                    "changes {}..{} are no longer in delta files (compacted away); read from a later base",
                    covered + 1,
                    self.counters.flushed_seq
                ),
            ));
        }
        let get = async |key: &str| -> ObjectResult<bytes::Bytes> {
            let bytes = cx
                .host()
                .blobs()
                .get(key)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::StorageError, format!("lake file {key} is missing")))?;
            Ok(bytes::Bytes::from(bytes))
        };
        let base_parts: Vec<StatePart> = match &chosen {
            Some(b) => state_parts(db, b)?.into_iter().filter(|p| p.rows > 0).collect(),
            None => Vec::new(),
        };
        // Read once; every window merges them (`Bytes` clones share the buffer).
        let mut delta_files = Vec::new();
        for d in deltas.iter().filter(|d| d.i64(3) <= at) {
            delta_files.push(get(d.str(0)).await?);
        }
        let pending =
            change_rows(db, "seq > ?1 AND ts <= ?2", &[covered.max(self.counters.flushed_seq).into(), at.into()])?;
        // Windows of the id space, each ending where the first base file
        // (live or tombstones) still wanted ends: a window loads at most one
        // file of each, since the files of a kind hold consecutive id ranges.
        let mut start = start.to_string();
        loop {
            let wanted: Vec<&StatePart> =
                base_parts.iter().filter(|p| p.ids.as_ref().is_none_or(|(_, last)| *last >= start)).collect();
            // A file without a recorded range (written before ranges were): one window for everything.
            let end: Option<String> = if wanted.iter().any(|p| p.ids.is_none()) {
                None
            } else {
                [false, true]
                    .iter()
                    .filter_map(|kind| wanted.iter().find(|p| p.tombstones == *kind))
                    .filter_map(|p| p.ids.as_ref().map(|(_, last)| last.clone()))
                    .min()
            };
            let mut input = ReconstructInput {
                base: Vec::new(),
                base_upto_seq: upto,
                deltas: delta_files.clone(),
                pending: pending.clone(),
            };
            for p in &wanted {
                let in_window = match (&end, &p.ids) {
                    (Some(end), Some((first, _))) => first <= end,
                    _ => true,
                };
                if in_window {
                    input.base.push(get(&p.key).await?);
                }
            }
            let mut stopped = false;
            reconstruct(input, at, &mut |s| {
                if s.id < start {
                    return true;
                }
                if end.as_ref().is_some_and(|e| s.id > *e) {
                    return false; // the next window's
                }
                stopped = !emit(s);
                !stopped
            })?;
            match end {
                Some(end) if !stopped => {
                    assert!(end >= start, "a window ends at or after its start");
                    start = format!("{end}\0"); // the least id after `end`
                }
                _ => return Ok(()),
            }
        }
    }

    /// One restore step (see [`CdcRequest::Restore`]).
    async fn restore<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        at: i64,
        restore_id: &str,
        after: Option<String>,
    ) -> ObjectResult<(usize, usize, Option<String>)> {
        let db = cx.storage();
        let after = after.unwrap_or_default();
        let docs: Vec<DocState> = db
            .query(
                &format!("SELECT {DOC_COLUMNS} FROM docs WHERE doc_id > ?1 ORDER BY doc_id LIMIT ?2"),
                &[after.as_str().into(), MAX_RESTORE_STEP.into()],
            )?
            .iter()
            .map(doc_state_row)
            .collect();
        let examined = docs.len();
        let next = (examined == MAX_RESTORE_STEP).then(|| docs.last().map(|d| d.id.clone())).flatten();
        // Restore changes are newer than everything: they win over every earlier change.
        let ts = Timestamp(cx.now().as_millis().max(self.counters.max_ts));
        let bookmark = Some(format!("restore:{}", Timestamp(at)));
        let mut changes = Vec::new();
        for now in docs {
            let then = Self::doc_at(db, &now.id, at)?;
            let then_live = then.as_ref().filter(|t| !t.deleted);
            let change = match (then_live, now.deleted) {
                (None, false) => Some((ChangeOp::Delete, None)),
                (None, true) => None,
                (Some(t), true) => Some((ChangeOp::Insert, t.data.clone())),
                (Some(t), false) if t.data != now.data => Some((ChangeOp::Update, t.data.clone())),
                (Some(_), false) => None,
            };
            if let Some((op, data)) = change {
                changes.push(Change {
                    event_id: format!("{restore_id}:{}", now.id),
                    collection: self.collection.clone(),
                    doc_id: now.id.clone(),
                    op,
                    ts,
                    before: parse_json(now.data.as_deref())?,
                    after: parse_json(data.as_deref())?,
                    bookmark: bookmark.clone(),
                });
            }
        }
        let applied = if changes.is_empty() { 0 } else { self.apply(cx, changes).await?.applied };
        Ok((applied, examined, next))
    }
}

/// Prometheus metrics of change capture (`events_cdc_*`).
mod cdc_metrics {
    /// Changes applied, duplicates skipped.
    pub fn applied(a: &super::Applied) {
        metrics::counter!("events_cdc_changes_applied_total").increment(a.applied as u64);
        metrics::counter!("events_cdc_changes_duplicate_total").increment(a.duplicates as u64);
    }

    /// Late changes found by a fold.
    pub fn late(n: usize) {
        metrics::counter!("events_cdc_changes_late_total").increment(n as u64);
    }

    /// A delta file was written.
    pub fn flushed(rows: i64, bytes: i64) {
        metrics::counter!("events_cdc_delta_files_total").increment(1);
        metrics::counter!("events_cdc_delta_rows_total").increment(rows as u64);
        metrics::counter!("events_cdc_delta_bytes_total").increment(bytes as u64);
    }

    /// Changes removed from the history by a trim.
    pub fn trimmed(rows: usize) {
        metrics::counter!("events_cdc_history_trimmed_total").increment(rows as u64);
    }

    /// A compaction ran.
    pub fn compaction() {
        metrics::counter!("events_cdc_compactions_total").increment(1);
    }

    /// A commit of the current table to the Iceberg catalog failed (retried by the alarm).
    pub fn publish_failed() {
        metrics::counter!("events_cdc_catalog_publish_failures_total").increment(1);
    }

    /// A snapshot was taken or skipped.
    pub fn snapshot(kind: &'static str, outcome: &'static str) {
        metrics::counter!("events_cdc_snapshots_total", "kind" => kind, "outcome" => outcome).increment(1);
    }
}

impl DurableObject for CdcProcessor {
    const CLASS: &'static str = "CdcProcessor";
    const PLACEMENT: events_runtime::Placement = events_runtime::Placement::Background;
    const STORAGE_CACHE_KIB: Option<u32> = Some(STORAGE_CACHE_KIB);
    type Request = CdcRequest;
    type Response = CdcResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let (ns, collection) = cx
            .name()
            .split_once('/')
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "processor names are <ns>/<collection>"))?;
        if !valid_collection_name(collection) {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("invalid collection name {collection:?}")));
        }
        let mut counters = Counters { next_seq: 1, ..Default::default() };
        let rows = cx.storage().query("SELECT name, value FROM counters", &[])?;
        for r in rows {
            if let Some(i) = COUNTER_NAMES.iter().position(|n| *n == r.str(0)) {
                *counters.slots()[i] = r.i64(1);
            }
        }
        let oldest_pending = cx
            .storage()
            .query_one("SELECT MIN(received_at) FROM changes WHERE seq > ?1", &[counters.flushed_seq.into()])?
            .and_then(|r| r.opt_i64(0));
        let oldest_unfolded = cx
            .storage()
            .query_one("SELECT MIN(received_at) FROM changes WHERE seq > ?1", &[counters.folded_seq.into()])?
            .and_then(|r| r.opt_i64(0));
        Ok(CdcProcessor {
            ns: ns.to_string(),
            collection: collection.to_string(),
            config: CdcConfig::from_host(cx.host()),
            saved: counters.clone(),
            counters,
            oldest_pending,
            oldest_unfolded,
            publish_error: None,
        })
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: CdcRequest) -> ObjectResult<CdcResponse> {
        // A failed request is rolled back: so are the in-memory counters.
        let start = (self.counters.clone(), self.saved.clone(), self.oldest_pending, self.oldest_unfolded);
        let result = self.dispatch(cx, req).await;
        if result.is_err() {
            (self.counters, self.saved, self.oldest_pending, self.oldest_unfolded) = start;
        }
        result
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let now = cx.now();
        // First, and only what earlier commits made garbage: files retired
        // by this run's own compaction are deleted by the next run, after
        // this one committed.
        self.collect_garbage(cx).await?;
        let due = self.pending() >= self.config.flush_max_changes
            || self.oldest_pending.is_some_and(|t| now.as_millis() - t >= self.config.flush_max_age_ms)
            || self.counters.plan_first > 0;
        if due {
            self.flush(cx).await?;
        }
        // The tail is folded when it is full or old, not at every flush:
        // larger folds visit each page of `docs` once for more changes.
        let fold_due = self.unfolded() >= self.config.fold_max_changes
            || self.oldest_unfolded.is_some_and(|t| now.as_millis() - t >= self.config.flush_max_age_ms);
        if fold_due {
            self.fold(cx.storage())?;
        }
        if self.compaction_due(cx.storage())? {
            self.compact(cx).await?;
        } else {
            self.publish_current(cx).await; // a no-op unless an earlier commit failed
        }
        // Scheduled snapshots: the snapshot labelled with a day (month) is
        // taken at the first alarm after that period ended, if a change
        // received before its end is not yet in a snapshot of that kind.
        for kind in [SnapshotKind::Daily, SnapshotKind::Monthly] {
            let keep = match kind {
                SnapshotKind::Daily => self.config.keep_daily,
                SnapshotKind::Monthly => self.config.keep_monthly,
            };
            let period_start = kind.period_start(now);
            let label = kind.label(Timestamp(period_start - 1));
            let db = cx.storage();
            let taken = db
                .query_one(
                    "SELECT 1 FROM files WHERE kind = ?1 AND label = ?2",
                    &[kind.as_str().into(), label.as_str().into()],
                )?
                .is_some();
            if keep == 0 || taken {
                continue;
            }
            let last = db
                .query_one("SELECT MAX(last_seq) FROM files WHERE kind = ?1", &[kind.as_str().into()])?
                .and_then(|r| r.opt_i64(0))
                .unwrap_or(0);
            let first_new = db
                .query_one("SELECT received_at FROM changes WHERE seq > ?1 ORDER BY seq LIMIT 1", &[last.into()])?
                .map(|r| r.i64(0));
            // Trimmed changes after the last snapshot are older than any
            // kept one: count them as received before the period ended.
            let first_new = if last < self.counters.trimmed_seq { Some(i64::MIN) } else { first_new };
            if first_new.is_some_and(|t| t < period_start) {
                self.snapshot(cx, kind, label).await?;
            }
        }
        self.trim_due(cx.storage(), now.as_millis())?;
        self.save_counters(cx.storage())?;
        self.schedule(cx).await
    }
}

impl CdcProcessor {
    /// Explains a failed lake read at a time the trimmed history no longer covers.
    fn trimmed_error(&self, at: i64, e: ApiError) -> ApiError {
        if e.code != ErrorCode::InvalidQuery {
            return e;
        }
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!(
                "the collection's history before {} is trimmed from its state, and the lake cannot rebuild {}: {}",
                Timestamp(self.counters.history_from),
                Timestamp(at),
                e.message
            ),
        )
    }

    async fn dispatch<H: Host>(&mut self, cx: &ObjectContext<H>, req: CdcRequest) -> ObjectResult<CdcResponse> {
        let db = cx.storage();
        // Whatever reads the documents' state folds the appended tail first,
        // so that it sees every acknowledged change.
        let reads_state = matches!(
            req,
            CdcRequest::Stats
                | CdcRequest::ReadState { .. }
                | CdcRequest::ReadDoc { .. }
                | CdcRequest::History { .. }
                | CdcRequest::TrimHistory
                | CdcRequest::Restore { .. }
        );
        if reads_state {
            self.fold(db)?;
        }
        match req {
            CdcRequest::Apply { changes } => Ok(CdcResponse::Applied(self.apply(cx, changes).await?)),
            CdcRequest::Flush => Ok(CdcResponse::Files(self.flush(cx).await?)),
            CdcRequest::Compact => {
                let files = self.compact(cx).await?;
                self.schedule(cx).await?;
                Ok(CdcResponse::Files(files))
            }
            CdcRequest::Snapshot { kind } => {
                let key = self.snapshot(cx, kind, kind.label(cx.now())).await?;
                self.schedule(cx).await?;
                Ok(CdcResponse::Snapshot(key))
            }
            CdcRequest::Stats => Ok(CdcResponse::Stats(self.stats(db)?)),
            CdcRequest::Manifest => Ok(CdcResponse::Manifest(self.manifest(db, cx.now().as_millis())?)),
            CdcRequest::ReadState { at, after, limit, include_deleted } => {
                let (docs, next) = match at.map(|t| t.as_millis()) {
                    Some(at) if !self.history_covers(at) => self
                        .read_files(cx, at, FileBase::Auto, (after, limit), include_deleted)
                        .await
                        .map_err(|e| self.trimmed_error(at, e))?,
                    _ => self.read_state(db, at, after, limit, include_deleted)?,
                };
                Ok(CdcResponse::Docs { docs, next })
            }
            CdcRequest::ReadDoc { id, at } => {
                let state = match at.map(|t| t.as_millis()) {
                    None => db
                        .query_one(&format!("SELECT {DOC_COLUMNS} FROM docs WHERE doc_id = ?1"), &[id.as_str().into()])?
                        .map(|r| doc_state_row(&r)),
                    Some(at) if !self.history_covers(at) => {
                        self.read_file_doc(cx, at, &id).await.map_err(|e| self.trimmed_error(at, e))?
                    }
                    Some(at) => Self::doc_at(db, &id, at)?,
                };
                Ok(CdcResponse::Doc(state.map(doc_view).transpose()?))
            }
            CdcRequest::History { id, after, limit } => {
                let (changes, next) = Self::history(db, &id, after, limit)?;
                Ok(CdcResponse::History { changes, next, history_from: self.history_from() })
            }
            CdcRequest::ReadFiles { at, base, after, limit } => {
                let (docs, next) = self.read_files(cx, at.as_millis(), base, (after, limit), false).await?;
                Ok(CdcResponse::Docs { docs, next })
            }
            CdcRequest::TrimHistory => {
                let removed = self.trim_due(db, cx.now().as_millis())?;
                self.schedule(cx).await?;
                Ok(CdcResponse::Trimmed(removed))
            }
            CdcRequest::Restore { at, restore_id, after } => {
                if !self.history_covers(at.as_millis()) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidQuery,
                        format!(
                            "a restore reaches back to {} at most: the collection's older history is trimmed",
                            Timestamp(self.counters.history_from)
                        ),
                    ));
                }
                let (changes, examined, next) = self.restore(cx, at.as_millis(), &restore_id, after).await?;
                Ok(CdcResponse::Restored { changes, examined, next })
            }
        }
    }
}

// ---------------------------------------------------------------- collections registry

/// Requests to [`CdcCollections`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CollectionsRequest {
    /// Records a collection (no-op if known).
    Register {
        /// Collection name.
        collection: String,
    },
    /// Every known collection, by name.
    List,
}

/// Answers of [`CdcCollections`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CollectionsResponse {
    /// Done.
    Ok,
    /// Collection names.
    Collections(Vec<String>),
}

/// Most collections per namespace.
pub const MAX_COLLECTIONS_PER_NAMESPACE: usize = 10_000;

/// The collections of one namespace that received changes, named `<ns>`.
/// Processors register themselves on their first change; it calls no one.
pub struct CdcCollections;

const COLLECTIONS_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "collections",
    sql: "CREATE TABLE collections (name TEXT PRIMARY KEY, registered_at INTEGER NOT NULL) WITHOUT ROWID;",
}];

impl DurableObject for CdcCollections {
    const CLASS: &'static str = "CdcCollections";
    type Request = CollectionsRequest;
    type Response = CollectionsResponse;

    fn migrations() -> &'static [Migration] {
        COLLECTIONS_MIGRATIONS
    }

    async fn load<H: Host>(_cx: &ObjectContext<H>) -> ObjectResult<Self> {
        Ok(CdcCollections)
    }

    async fn handle<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        req: CollectionsRequest,
    ) -> ObjectResult<CollectionsResponse> {
        let db = cx.storage();
        match req {
            CollectionsRequest::Register { collection } => {
                let count = db.query_one("SELECT COUNT(*) FROM collections", &[])?.map_or(0, |r| r.i64(0)) as usize;
                let known = db.query_one("SELECT 1 FROM collections WHERE name = ?1", &[collection.as_str().into()])?;
                if known.is_none() {
                    if count >= MAX_COLLECTIONS_PER_NAMESPACE {
                        return Err(ApiError::new(
                            ErrorCode::Conflict,
                            format!("a namespace has at most {MAX_COLLECTIONS_PER_NAMESPACE} collections"),
                        ));
                    }
                    db.execute(
                        "INSERT INTO collections (name, registered_at) VALUES (?1, ?2)",
                        &[SqlValue::Text(collection), cx.now().as_millis().into()],
                    )?;
                }
                Ok(CollectionsResponse::Ok)
            }
            CollectionsRequest::List => Ok(CollectionsResponse::Collections(
                db.query("SELECT name FROM collections ORDER BY name", &[])?
                    .iter()
                    .map(|r| r.str(0).to_string())
                    .collect(),
            )),
        }
    }
}
