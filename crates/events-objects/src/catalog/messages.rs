//! The requests and answers of a [`Catalog`](super::Catalog), and the types they carry.

use std::collections::BTreeMap;

use events_iceberg::commit::{TableRequirement, TableUpdate};
use events_iceberg::evolve::SchemaChange;
use events_iceberg::metadata::{Schema, TableMetadata};
use events_lake::{ColumnKind, DataColumn};
use serde::{Deserialize, Serialize};

/// A file a writer put in the bucket, to commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFile {
    /// Its key in the bucket.
    pub key: String,
    /// Rows in it.
    pub rows: i64,
    /// Its size.
    pub bytes: i64,
}

/// One data file of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFile {
    /// Its key in the bucket.
    pub key: String,
    /// Rows.
    pub rows: i64,
    /// Size.
    pub bytes: i64,
}

/// The files and schema of a table at one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    /// The snapshot (`None`: the table has no snapshot yet).
    pub snapshot_id: Option<i64>,
    /// The schema (the current one: Iceberg reads old files by field id).
    pub schema: Schema,
    /// The live data files.
    pub files: Vec<ScanFile>,
}

/// One snapshot of a [`ChangeSet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSnapshot {
    /// Its id.
    pub snapshot_id: i64,
    /// Its sequence number.
    pub sequence_number: i64,
    /// When it was committed (ms).
    pub timestamp_ms: i64,
    /// Its operation (`append`, `replace`, `overwrite`, `delete`).
    pub operation: String,
    /// Files whose rows it adds to the change set (none for a `replace`).
    pub added_files: usize,
    /// Rows it adds to the change set.
    pub added_rows: i64,
}

/// The rows a managed table gained between two snapshots: the data files
/// that the snapshots after `from` up to `to` added, for incremental reads.
///
/// By the operations' meaning: an `append` adds its files' rows, an
/// `overwrite` (a CDC table's new state) its added files' rows, a `replace`
/// (compaction, a retried flush) nothing, since its rows were there before,
/// and a `delete` nothing. A file added again under the same key with the
/// same rows is never counted twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The snapshot the changes start after (`None`: the table's beginning).
    pub from_snapshot_id: Option<i64>,
    /// The last snapshot included (`None`: the table has no snapshot).
    pub to_snapshot_id: Option<i64>,
    /// The snapshots after `from` up to `to`, oldest first.
    pub snapshots: Vec<ChangeSnapshot>,
    /// The table's current schema (files lacking a column read it as null).
    pub schema: Schema,
    /// The data files holding the added rows.
    pub files: Vec<ScanFile>,
}

/// A table as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSummary {
    /// Its name.
    pub name: String,
    /// Whether events.do writes it.
    pub managed: bool,
    /// The current snapshot.
    pub current_snapshot_id: Option<i64>,
    /// Live data files.
    pub files: i64,
    /// Live rows.
    pub rows: i64,
}

/// A table's metadata and where it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedTable {
    /// The metadata file location (URI).
    pub metadata_location: String,
    /// The metadata.
    pub metadata: TableMetadata,
}

/// A recorded schema change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedChange {
    /// When it was considered (ms).
    pub at: i64,
    /// The change.
    pub change: SchemaChange,
}

/// What maintenance should do; `None` fields use the configured defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintainOptions {
    /// Compact small files.
    pub compact: bool,
    /// Only compact files whose key starts with this.
    pub compact_prefix: Option<String>,
    /// Expire snapshots.
    pub expire: bool,
    /// Always keep this many newest snapshots.
    pub keep_last: Option<usize>,
    /// Expire snapshots older than this (ms).
    pub max_snapshot_age_ms: Option<i64>,
    /// Delete unreferenced files.
    pub remove_orphans: bool,
    /// Only delete orphans older than this (ms).
    pub orphan_min_age_ms: Option<i64>,
}

impl MaintainOptions {
    /// Everything, with the configured defaults.
    pub fn all() -> Self {
        MaintainOptions { compact: true, expire: true, remove_orphans: true, ..Default::default() }
    }
}

/// What maintenance did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintainReport {
    /// The table.
    pub table: String,
    /// Files merged by compaction.
    pub compacted_inputs: usize,
    /// Files compaction wrote.
    pub compacted_files: Vec<String>,
    /// Snapshots expired.
    pub expired_snapshots: usize,
    /// Files deleted because no retained snapshot needs them.
    pub deleted_files: usize,
    /// Unreferenced files deleted by orphan cleanup.
    pub orphans_deleted: Vec<String>,
}

/// Requests to a [`Catalog`](super::Catalog).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CatalogRequest {
    /// Evolves a managed table's schema for columns observed in a batch;
    /// answers the table's data columns (creating the table if needed).
    PrepareColumns {
        /// The table.
        table: String,
        /// Column name → kind observed.
        observed: BTreeMap<String, ColumnKind>,
    },
    /// Creates a managed table other than `events` (a CDC table, named
    /// `cdc_*`) with `schema` if it does not exist; answers its metadata.
    EnsureManagedTable {
        /// The table.
        table: String,
        /// Its schema (new columns may be added later by `PrepareColumns`-style evolution).
        schema: Schema,
        /// Table properties set at creation (an existing table keeps its own).
        properties: BTreeMap<String, String>,
    },
    /// Records durably that `keys` are about to be put in the bucket and
    /// then committed to the managed `table` by [`CatalogRequest::CommitFiles`];
    /// answers [`CatalogResponse::Ok`]. Orphan cleanup never deletes a key with
    /// a pending intent, whatever its minimum age. An intent lasts until a
    /// commit adds its key: it has no expiry, because a writer retries its
    /// flush plan (same keys) until that commit happens. Repeating an intent
    /// is harmless. At most [`MAX_FILES_PER_COMMIT`](super::MAX_FILES_PER_COMMIT) keys per request and
    /// [`MAX_PENDING_INTENTS`](super::MAX_PENDING_INTENTS) pending in the namespace (`OVERLOADED` beyond).
    IntendFiles {
        /// The table the files will be committed to.
        table: String,
        /// Their keys in the bucket.
        keys: Vec<String>,
    },
    /// Commits files to a managed table as one snapshot whose operation
    /// says, as the Iceberg spec means it, what happened to the rows
    /// ([`commit_operation`](super::commit_operation)): `append` when files are only added, `delete`
    /// when only removed, `overwrite` when rows are added and removed (a CDC
    /// table's new state), and `replace` when the rows stay the same: every
    /// added key was live already and nothing else is removed (a retried
    /// flush rewriting its files, a repeated CDC publish). Compaction,
    /// which the catalog runs itself, is `replace` too.
    /// A key already live is replaced by its new version.
    /// Ends the write intents of the keys it adds.
    CommitFiles {
        /// The table.
        table: String,
        /// Files added.
        added: Vec<NewFile>,
        /// Keys of files removed.
        removed: Vec<String>,
    },
    /// The files of a managed table at a snapshot (`None`: current), or as of a time.
    Scan {
        /// The table.
        table: String,
        /// A snapshot id.
        snapshot_id: Option<i64>,
        /// A time (ms): the snapshot current then.
        as_of_ms: Option<i64>,
    },
    /// The rows a managed table gained after snapshot `from_snapshot`
    /// (exclusive; `None`: from the table's first snapshot) up to
    /// `to_snapshot` (inclusive; `None`: the current one), as the data files
    /// that hold them ([`ChangeSet`]). `from` must be `to` or one of its
    /// ancestors, still retained.
    Changes {
        /// The table.
        table: String,
        /// The snapshot to start after.
        from_snapshot: Option<i64>,
        /// The last snapshot to include.
        to_snapshot: Option<i64>,
    },
    /// Every table.
    ListTables,
    /// One table's metadata.
    LoadTable {
        /// The table.
        table: String,
    },
    /// A table's recorded schema changes (applied and refused).
    SchemaHistory {
        /// The table.
        table: String,
    },
    /// The namespace's properties, if it exists.
    NamespaceInfo,
    /// Creates the namespace (idempotent with equal properties).
    CreateNamespace {
        /// Properties.
        properties: BTreeMap<String, String>,
    },
    /// Drops the namespace; it must have no tables.
    DropNamespace,
    /// Updates namespace properties.
    UpdateNamespaceProperties {
        /// Keys to remove.
        removals: Vec<String>,
        /// Keys to set.
        updates: BTreeMap<String, String>,
    },
    /// Creates an external table.
    CreateTable {
        /// Its name.
        name: String,
        /// Its schema.
        schema: Schema,
        /// Its properties.
        properties: BTreeMap<String, String>,
    },
    /// Commits requirements and updates to a table (REST).
    CommitTable {
        /// The table.
        table: String,
        /// Conditions.
        requirements: Vec<TableRequirement>,
        /// Changes.
        updates: Vec<TableUpdate>,
    },
    /// Drops an external table (its files are left to their engine).
    DropTable {
        /// The table.
        table: String,
    },
    /// Runs maintenance on every managed table (or one).
    Maintain {
        /// One table, or all managed ones.
        table: Option<String>,
        /// What to do.
        options: MaintainOptions,
    },
}

/// Answers of a [`Catalog`](super::Catalog).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CatalogResponse {
    /// A managed table's data columns.
    Columns(Vec<DataColumn>),
    /// A commit's snapshot (`None`: nothing to commit).
    Committed(Option<i64>),
    /// A scan.
    Scan(Scan),
    /// Changes between two snapshots.
    Changes(Box<ChangeSet>),
    /// Tables.
    Tables(Vec<TableSummary>),
    /// One table.
    Table(Box<LoadedTable>),
    /// Schema changes, oldest first.
    SchemaHistory(Vec<RecordedChange>),
    /// Namespace properties (`None`: no such namespace).
    Namespace(Option<BTreeMap<String, String>>),
    /// Property update result: keys updated, removed, missing.
    PropertiesUpdated {
        /// Keys set.
        updated: Vec<String>,
        /// Keys removed.
        removed: Vec<String>,
        /// Keys asked to be removed that did not exist.
        missing: Vec<String>,
    },
    /// Maintenance reports.
    Maintained(Vec<MaintainReport>),
    /// Done.
    Ok,
}
