//! The requests and answers of a [`CdcProcessor`].

use events_core::Timestamp;
use events_core::cdc::{Change, ChangeOp};
use events_lake::cdc::CdcManifest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

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
    pub(super) fn period_start(self, now: Timestamp) -> i64 {
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

    pub(super) fn label(self, now: Timestamp) -> String {
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
    /// The Iceberg table of the collection's current state (see
    /// [`cdc_table_name`](crate::catalog::cdc_table_name)).
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
