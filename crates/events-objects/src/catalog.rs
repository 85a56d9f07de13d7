//! [`Catalog`]: the Iceberg catalog of one namespace.
//!
//! One object per namespace, named `<ns>`. It holds the pointer to each
//! table's current metadata file (the catalog's job in Iceberg) together
//! with the metadata itself, and it is the only writer of that pointer, so
//! commits are serialized: a commit whose requirements no longer hold
//! (built on a stale snapshot) is refused with `COMMIT_CONFLICT` and never
//! half-applied.
//!
//! **Managed tables** (`events`, later CDC tables) are written by events.do
//! itself: every Parquet file the writer flushes is committed as a snapshot
//! ([`CatalogRequest::CommitFiles`]); compaction commits one `replace`
//! snapshot. For them the catalog also keeps, in SQLite, every data file
//! with the sequence numbers that added and removed it, which answers
//! "which files make snapshot N" for SQL and time travel without reading
//! manifests, and drives expiry and orphan cleanup. A writer announces the
//! keys of a flush before it puts them ([`CatalogRequest::IntendFiles`]), so
//! orphan cleanup never takes a file whose commit is still to come. External engines read
//! managed tables through the metadata, manifest lists and manifests written
//! here; their REST commits may change properties only.
//!
//! **External tables** are created and committed through the REST catalog
//! by engines such as PyIceberg; the catalog validates and stores their
//! metadata, and the engine writes their files.
//!
//! Keys in the bucket:
//! `iceberg/ns=<ns>/<table>/metadata/{NNNNN-uuid.metadata.json, snap-*.avro, *-m0.avro}`.

use std::collections::{BTreeMap, BTreeSet};

use arrow_schema::DataType;
use events_core::{ApiError, ErrorCode};
use events_iceberg::IcebergError;
use events_iceberg::commit::{TableRequirement, TableUpdate, apply_commit};
use events_iceberg::evolve::{SchemaChange, evolve};
use events_iceberg::manifest::{
    DataFile, ManifestEntry, ManifestFile, STATUS_ADDED, STATUS_DELETED, STATUS_EXISTING, write_manifest,
    write_manifest_list,
};
use events_iceberg::metadata::{
    MAIN_BRANCH, MetadataLogEntry, NAME_MAPPING_PROPERTY, NestedField, Schema, Snapshot, SnapshotRef, TableMetadata,
};
use events_lake::{ColumnKind, DataColumn};
use events_runtime::{BlobStore, DurableObject, Host, Migration, ObjectContext, ObjectResult, Placement, SqlStorage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alarm::AlarmSlot;
use crate::var_or;

/// The managed table of a namespace's events.
pub const EVENTS_TABLE: &str = "events";
/// The folder of all catalog metadata in the bucket.
pub const ICEBERG_PREFIX: &str = "iceberg";
/// Most data columns added to a table by schema evolution.
pub const MAX_DATA_COLUMNS: usize = 200;
/// Most manifests in one snapshot's list before they are rewritten into one.
pub const MAX_MANIFESTS_PER_SNAPSHOT: usize = 64;
/// Most previous metadata files listed in the metadata log (older ones are deleted).
pub const MAX_METADATA_LOG: usize = 20;
/// Most tables in one namespace.
pub const MAX_TABLES: usize = 1_000;
/// Longest table name.
pub const MAX_TABLE_NAME_LEN: usize = 128;
/// Most files added or removed by one commit.
pub const MAX_FILES_PER_COMMIT: usize = 10_000;
/// Default of `catalog.maintenance_interval_ms`: how often the alarm runs maintenance.
pub const DEFAULT_MAINTENANCE_INTERVAL_MS: i64 = 15 * 60_000;
/// Default of `catalog.snapshot_max_age_ms`: snapshots older than this expire (1 day).
pub const DEFAULT_SNAPSHOT_MAX_AGE_MS: i64 = 24 * 3_600_000;
/// Default of `catalog.min_snapshots`: the newest snapshots always kept.
pub const DEFAULT_MIN_SNAPSHOTS: usize = 10;
/// Default of `catalog.orphan_min_age_ms`: unreferenced files younger than this are kept
/// (they may belong to a commit in flight). One day.
pub const DEFAULT_ORPHAN_MIN_AGE_MS: i64 = 24 * 3_600_000;
/// Files smaller than this are compacted.
pub const COMPACT_SMALL_FILE_BYTES: i64 = 16 * 1024 * 1024;
/// Most input bytes merged into one compacted file.
pub const COMPACT_MAX_INPUT_BYTES: i64 = 128 * 1024 * 1024;
/// Most pending write intents one namespace's catalog holds (all tables).
/// Each is one flush's file waiting for its commit; a full table refuses
/// new intents with `OVERLOADED` (the flush is retried) rather than drop
/// protection from an old one.
pub const MAX_PENDING_INTENTS: usize = 100_000;

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

/// Requests to a [`Catalog`].
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
    /// is harmless. At most [`MAX_FILES_PER_COMMIT`] keys per request and
    /// [`MAX_PENDING_INTENTS`] pending in the namespace (`OVERLOADED` beyond).
    IntendFiles {
        /// The table the files will be committed to.
        table: String,
        /// Their keys in the bucket.
        keys: Vec<String>,
    },
    /// Commits files to a managed table as one snapshot whose operation
    /// says, as the Iceberg spec means it, what happened to the rows
    /// ([`commit_operation`]): `append` when files are only added, `delete`
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

/// Answers of a [`Catalog`].
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

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tables, files, snapshots, schema changes",
        sql: "CREATE TABLE namespace (id INTEGER PRIMARY KEY CHECK (id = 1), properties TEXT NOT NULL);
          CREATE TABLE tables (
              name TEXT PRIMARY KEY,
              managed INTEGER NOT NULL,
              version INTEGER NOT NULL,
              metadata_location TEXT NOT NULL,
              metadata TEXT NOT NULL
          ) WITHOUT ROWID;
          CREATE TABLE files (
              tbl TEXT NOT NULL,
              key TEXT NOT NULL,
              rows INTEGER NOT NULL,
              bytes INTEGER NOT NULL,
              snapshot_id INTEGER NOT NULL,
              added_seq INTEGER NOT NULL,
              removed_seq INTEGER,
              PRIMARY KEY (tbl, key, added_seq)
          ) WITHOUT ROWID;
          CREATE INDEX files_live ON files (tbl, removed_seq);
          CREATE TABLE snapshot_manifests (
              tbl TEXT NOT NULL,
              snapshot_id INTEGER NOT NULL,
              manifest_list_key TEXT NOT NULL,
              manifests TEXT NOT NULL,
              PRIMARY KEY (tbl, snapshot_id)
          ) WITHOUT ROWID;
          CREATE TABLE schema_changes (
              seq INTEGER PRIMARY KEY AUTOINCREMENT,
              tbl TEXT NOT NULL,
              at INTEGER NOT NULL,
              change TEXT NOT NULL
          );",
    },
    Migration {
        version: 2,
        name: "write intents: keys a flush puts before it commits them",
        sql: "CREATE TABLE intents (
              tbl TEXT NOT NULL,
              key TEXT NOT NULL,
              at INTEGER NOT NULL,
              PRIMARY KEY (tbl, key)
          ) WITHOUT ROWID;",
    },
];

/// Settings, from host variables `catalog.*` and `lake.*`.
#[derive(Debug, Clone)]
struct CatalogConfig {
    /// The URI of the bucket root (`file:///data/lake`, `s3://bucket/prefix`).
    base_uri: String,
    maintenance_interval_ms: i64,
    snapshot_max_age_ms: i64,
    min_snapshots: usize,
    orphan_min_age_ms: i64,
    events_prefix: String,
}

/// A live data file: key, rows, bytes, the snapshot that added it, its data sequence number.
type LiveFile = (String, i64, i64, i64, i64);

/// The catalog object.
pub struct Catalog {
    ns: String,
    config: CatalogConfig,
    alarm: AlarmSlot,
}

fn iceberg_err(e: IcebergError) -> ApiError {
    match e {
        IcebergError::Conflict(m) => ApiError::new(ErrorCode::CommitConflict, m),
        IcebergError::NotFound(m) => ApiError::not_found(m),
        IcebergError::Invalid(m) => ApiError::new(ErrorCode::InvalidRequest, m),
        other => ApiError::internal(other.to_string()),
    }
}

fn corrupt(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::StorageError, format!("catalog state: {e}"))
}

/// The Iceberg schema of the events table before any data column.
pub fn events_base_schema() -> Schema {
    iceberg_schema(&events_lake::event_schema())
}

/// The Iceberg schema of an Arrow schema written by events.do (flat,
/// primitive columns), with field ids 1, 2, ... in column order.
pub fn iceberg_schema(arrow: &arrow_schema::Schema) -> Schema {
    let fields = arrow
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = match f.data_type() {
                DataType::Timestamp(_, Some(_)) => "timestamptz",
                DataType::Int32 => "int",
                DataType::Int64 => "long",
                DataType::Float64 => "double",
                DataType::Boolean => "boolean",
                DataType::Utf8 => "string",
                other => unreachable!("lake files written by events.do have no {other:?} column"),
            };
            NestedField {
                id: i as i32 + 1,
                name: f.name().clone(),
                required: !f.is_nullable(),
                field_type: Value::String(ty.into()),
                doc: None,
            }
        })
        .collect();
    Schema::new(0, fields)
}

/// The Iceberg table holding the current state of a CDC collection:
/// `cdc_` + the collection name lower-cased, `-` read as `_`.
///
/// Collection names are ASCII letters, digits, `_` and `-`, so the result is
/// a valid table name; two collections differing only in case or in `-`
/// versus `_` share a table name, and only the first to compact gets it (the
/// other's publish is refused with a conflict, see `docs/lakehouse.md`).
pub fn cdc_table_name(collection: &str) -> String {
    let name: String = collection.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_lowercase() }).collect();
    format!("cdc_{name}")
}

/// Checks a table name: `[a-z0-9_]`, starting with a letter, at most [`MAX_TABLE_NAME_LEN`].
pub fn validate_table_name(name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= MAX_TABLE_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("table names are [a-z][a-z0-9_]*, at most {MAX_TABLE_NAME_LEN} characters: {name:?}"),
        ))
    }
}

/// The Iceberg operation of a commit that does not merely rewrite rows, from
/// what it does to the table's data files: `new` keys added that were not
/// live, `rewritten` live keys added again (their rows unchanged: a retried
/// flush, a repeated publish), `dropped` live keys removed and not added again.
///
/// By the spec's meaning: `append` adds rows only, `delete` removes rows
/// only, `overwrite` does both (a CDC table's new state), and `replace`
/// changes files without changing the rows.
pub fn commit_operation(new: usize, rewritten: usize, dropped: usize) -> &'static str {
    match (new > 0, rewritten > 0, dropped > 0) {
        (false, _, false) => "replace",
        (true, false, false) => "append",
        (false, false, true) => "delete",
        _ => "overwrite",
    }
}

/// Whether `name` is a table events.do writes itself.
pub fn is_managed_table(name: &str) -> bool {
    name == EVENTS_TABLE || name.starts_with("cdc_")
}

impl Catalog {
    fn uuid<H: Host>(cx: &ObjectContext<H>) -> String {
        let r = cx.host().random();
        // Version 4, variant 1.
        let r = (r & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        let h = format!("{r:032x}");
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }

    fn table_prefix(&self, table: &str) -> String {
        format!("{ICEBERG_PREFIX}/ns={}/{table}/", self.ns)
    }

    fn uri(&self, key: &str) -> String {
        format!("{}/{key}", self.config.base_uri.trim_end_matches('/'))
    }

    fn key_of(&self, uri: &str) -> Option<String> {
        uri.strip_prefix(self.config.base_uri.trim_end_matches('/'))
            .and_then(|k| k.strip_prefix('/'))
            .map(str::to_string)
    }

    fn load_table<S: SqlStorage>(db: &S, table: &str) -> ObjectResult<Option<(bool, i64, LoadedTable)>> {
        let Some(r) = db.query_one(
            "SELECT managed, version, metadata_location, metadata FROM tables WHERE name = ?1",
            &[table.into()],
        )?
        else {
            return Ok(None);
        };
        let metadata: TableMetadata = serde_json::from_slice(r.bytes(3)).map_err(corrupt)?;
        Ok(Some((r.i64(0) != 0, r.i64(1), LoadedTable { metadata_location: r.str(2).to_string(), metadata })))
    }

    fn require_table<S: SqlStorage>(db: &S, table: &str) -> ObjectResult<(bool, i64, LoadedTable)> {
        Self::load_table(db, table)?.ok_or_else(|| ApiError::not_found(format!("no table {table}")))
    }

    /// Writes `metadata` as the next version of `table` and moves the pointer.
    async fn store<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        managed: bool,
        previous: Option<(i64, &LoadedTable)>,
        mut metadata: TableMetadata,
    ) -> ObjectResult<LoadedTable> {
        let db = cx.storage();
        let version = previous.map_or(0, |(v, _)| v) + 1;
        if let Some((_, prev)) = previous {
            metadata.metadata_log.push(MetadataLogEntry {
                timestamp_ms: prev.metadata.last_updated_ms,
                metadata_file: prev.metadata_location.clone(),
            });
            while metadata.metadata_log.len() > MAX_METADATA_LOG {
                let old = metadata.metadata_log.remove(0);
                if managed && let Some(key) = self.key_of(&old.metadata_file) {
                    cx.host().blobs().delete(&key).await?;
                }
            }
        }
        metadata.check_invariants().map_err(|e| ApiError::internal(format!("metadata invariant: {e}")))?;
        let key = format!("{}metadata/{version:05}-{}.metadata.json", self.table_prefix(table), Self::uuid(cx));
        let json = serde_json::to_vec(&metadata).map_err(corrupt)?;
        // put_if_absent: a metadata file is never overwritten.
        if !cx.host().blobs().put_if_absent(&key, json.clone()).await? {
            return Err(ApiError::internal(format!("metadata file {key} already exists")));
        }
        let location = self.uri(&key);
        db.execute(
            "INSERT INTO tables (name, managed, version, metadata_location, metadata) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET version = excluded.version, metadata_location = excluded.metadata_location,
             metadata = excluded.metadata",
            &[table.into(), managed.into(), version.into(), location.as_str().into(), json.into()],
        )?;
        self.ensure_namespace(db)?;
        Ok(LoadedTable { metadata_location: location, metadata })
    }

    fn ensure_namespace<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        db.execute("INSERT INTO namespace (id, properties) VALUES (1, '{}') ON CONFLICT(id) DO NOTHING", &[])?;
        Ok(())
    }

    /// Creates the managed events table if it does not exist.
    async fn ensure_managed<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
    ) -> ObjectResult<(i64, LoadedTable)> {
        if let Some((managed, version, loaded)) = Self::load_table(cx.storage(), table)? {
            if !managed {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("{table} is an external table; its engine commits its files"),
                ));
            }
            return Ok((version, loaded));
        }
        if table != EVENTS_TABLE {
            return Err(ApiError::not_found(format!("no managed table {table}")));
        }
        let schema = events_base_schema();
        let location = self.uri(&self.table_prefix(table)).trim_end_matches('/').to_string();
        let mut meta = TableMetadata::new(Self::uuid(cx), location, schema.clone(), cx.now().as_millis());
        meta.properties.insert(NAME_MAPPING_PROPERTY.into(), schema.name_mapping_json());
        meta.properties.insert("events.managed".into(), "true".into());
        meta.properties.insert("write.parquet.compression-codec".into(), "snappy".into());
        let loaded = self.store(cx, table, true, None, meta).await?;
        Ok((1, loaded))
    }

    fn data_columns(schema: &Schema) -> Vec<DataColumn> {
        let base = events_lake::event_schema().fields().len();
        schema
            .fields
            .iter()
            .skip(base)
            .filter_map(|f| {
                Some(DataColumn { name: f.name.clone(), kind: ColumnKind::from_iceberg_type(f.primitive()?)? })
            })
            .collect()
    }

    async fn prepare_columns<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        observed: BTreeMap<String, ColumnKind>,
    ) -> ObjectResult<Vec<DataColumn>> {
        let (version, loaded) = self.ensure_managed(cx, table).await?;
        let observed: BTreeMap<String, String> = observed
            .into_iter()
            .filter(|(name, _)| events_lake::columns::is_data_column_name(name))
            .map(|(k, v)| (k, v.iceberg_type().to_string()))
            .collect();
        let meta = &loaded.metadata;
        let base = events_lake::event_schema().fields().len();
        let already = meta.current_schema().fields.len().saturating_sub(base);
        let (next, last_column_id, changes) =
            evolve(meta.current_schema(), meta.last_column_id, &observed, MAX_DATA_COLUMNS.saturating_sub(already));
        let now = cx.now().as_millis();
        // A refused change is recorded once per column and type, not per flush.
        for change in &changes {
            let text = serde_json::to_string(change).map_err(corrupt)?;
            let seen = cx.storage().query_one(
                "SELECT 1 FROM schema_changes WHERE tbl = ?1 AND change = ?2",
                &[table.into(), text.as_str().into()],
            )?;
            if seen.is_none() || change.applied {
                cx.storage().execute(
                    "INSERT INTO schema_changes (tbl, at, change) VALUES (?1, ?2, ?3)",
                    &[table.into(), now.into(), text.into()],
                )?;
            }
        }
        let Some(mut schema) = next else {
            return Ok(Self::data_columns(meta.current_schema()));
        };
        schema.schema_id = meta.schemas.iter().map(|s| s.schema_id).max().unwrap_or(0) + 1;
        let mapping = schema.name_mapping_json();
        let updates = [
            TableUpdate::AddSchema { schema: schema.clone(), last_column_id: Some(last_column_id) },
            TableUpdate::SetCurrentSchema { schema_id: -1 },
            TableUpdate::SetProperties { updates: BTreeMap::from([(NAME_MAPPING_PROPERTY.to_string(), mapping)]) },
        ];
        let requirements = [TableRequirement::AssertCurrentSchemaId { current_schema_id: meta.current_schema_id }];
        let next_meta = apply_commit(meta, &requirements, &updates, now).map_err(iceberg_err)?;
        let stored = self.store(cx, table, true, Some((version, &loaded)), next_meta).await?;
        Ok(Self::data_columns(stored.metadata.current_schema()))
    }

    fn live_files<S: SqlStorage>(db: &S, table: &str, at_seq: Option<i64>) -> ObjectResult<Vec<LiveFile>> {
        let seq = at_seq.unwrap_or(events_runtime::MAX_EXACT_INTEGER);
        Ok(db
            .query(
                "SELECT key, rows, bytes, snapshot_id, added_seq FROM files
                 WHERE tbl = ?1 AND added_seq <= ?2 AND (removed_seq IS NULL OR removed_seq > ?2) ORDER BY key",
                &[table.into(), seq.into()],
            )?
            .iter()
            .map(|r| (r.str(0).to_string(), r.i64(1), r.i64(2), r.i64(3), r.i64(4)))
            .collect())
    }

    /// Commits `added` and `removed` as one snapshot. `rewrite`: the added
    /// files hold exactly the rows of the removed ones (compaction), so the
    /// snapshot is a `replace` whatever the keys.
    async fn commit_files<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        added: Vec<NewFile>,
        removed: Vec<String>,
        rewrite: bool,
    ) -> ObjectResult<Option<i64>> {
        if added.len() > MAX_FILES_PER_COMMIT || removed.len() > MAX_FILES_PER_COMMIT {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("at most {MAX_FILES_PER_COMMIT} files per commit"),
            ));
        }
        if added.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        let (version, loaded) = self.ensure_managed(cx, table).await?;
        let db = cx.storage();
        let meta = &loaded.metadata;
        let now = cx.now().as_millis();
        let seq = meta.last_sequence_number + 1;
        // Positive and within what every host's SQL stores exactly (53 random bits).
        let mut snapshot_id = (cx.host().random() as i64) & events_runtime::MAX_EXACT_INTEGER;
        while snapshot_id == 0 || meta.snapshot(snapshot_id).is_some() {
            snapshot_id = (cx.host().random() as i64) & events_runtime::MAX_EXACT_INTEGER;
        }
        let parent = meta.current_snapshot_id;
        let live = Self::live_files(db, table, None)?;
        let live_keys: BTreeSet<&str> = live.iter().map(|f| f.0.as_str()).collect();
        // A key added again (a retried flush rewrote it) replaces its old version.
        let mut gone: BTreeSet<String> = removed.iter().filter(|k| live_keys.contains(k.as_str())).cloned().collect();
        gone.extend(added.iter().filter(|f| live_keys.contains(f.key.as_str())).map(|f| f.key.clone()));
        let operation = if rewrite {
            "replace"
        } else {
            let added_keys: BTreeSet<&str> = added.iter().map(|f| f.key.as_str()).collect();
            let rewritten = added_keys.iter().filter(|k| live_keys.contains(*k)).count();
            let dropped = gone.iter().filter(|k| !added_keys.contains(k.as_str())).count();
            commit_operation(added_keys.len() - rewritten, rewritten, dropped)
        };
        let previous: Vec<ManifestFile> = match parent {
            Some(p) => db
                .query_one(
                    "SELECT manifests FROM snapshot_manifests WHERE tbl = ?1 AND snapshot_id = ?2",
                    &[table.into(), p.into()],
                )?
                .map(|r| serde_json::from_slice(r.bytes(0)).map_err(corrupt))
                .transpose()?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let schema = meta.current_schema().clone();
        let meta_prefix = format!("{}metadata/", self.table_prefix(table));
        let manifest_key = format!("{meta_prefix}{}-m0.avro", Self::uuid(cx));
        let added_entries: Vec<ManifestEntry> = added
            .iter()
            .map(|f| ManifestEntry {
                status: STATUS_ADDED,
                snapshot_id,
                sequence_number: seq,
                file_sequence_number: seq,
                file: DataFile { path: self.uri(&f.key), record_count: f.rows, file_size_in_bytes: f.bytes },
            })
            .collect();
        let manifests = if gone.is_empty() && previous.len() < MAX_MANIFESTS_PER_SNAPSHOT {
            // Fast append: one new manifest, the previous ones reused.
            let (bytes, file) =
                write_manifest(&self.uri(&manifest_key), &schema, snapshot_id, seq, &added_entries, cx.host().random())
                    .map_err(iceberg_err)?;
            cx.host().blobs().put(&manifest_key, bytes).await?;
            let mut all = vec![file];
            all.extend(previous);
            all
        } else {
            // Rewrite: one manifest with every live file, the removed ones marked deleted.
            let mut entries = added_entries;
            for (key, rows, bytes, sid, added_seq) in &live {
                let file = DataFile { path: self.uri(key), record_count: *rows, file_size_in_bytes: *bytes };
                let (status, sid) =
                    if gone.contains(key) { (STATUS_DELETED, snapshot_id) } else { (STATUS_EXISTING, *sid) };
                entries.push(ManifestEntry {
                    status,
                    snapshot_id: sid,
                    sequence_number: *added_seq,
                    file_sequence_number: *added_seq,
                    file,
                });
            }
            let (bytes, file) =
                write_manifest(&self.uri(&manifest_key), &schema, snapshot_id, seq, &entries, cx.host().random())
                    .map_err(iceberg_err)?;
            cx.host().blobs().put(&manifest_key, bytes).await?;
            vec![file]
        };
        let list_key = format!("{meta_prefix}snap-{snapshot_id}-{}.avro", Self::uuid(cx));
        cx.host()
            .blobs()
            .put(&list_key, write_manifest_list(snapshot_id, parent, seq, &manifests, cx.host().random()))
            .await?;

        let live_rows: i64 = live.iter().map(|f| f.1).sum();
        let removed_rows: i64 = live.iter().filter(|f| gone.contains(&f.0)).map(|f| f.1).sum();
        let added_rows: i64 = added.iter().map(|f| f.rows).sum();
        let total_files = live.len() - gone.len() + added.len();
        let summary = BTreeMap::from([
            ("operation".to_string(), operation.to_string()),
            ("added-data-files".to_string(), added.len().to_string()),
            ("deleted-data-files".to_string(), gone.len().to_string()),
            ("added-records".to_string(), added_rows.to_string()),
            ("deleted-records".to_string(), removed_rows.to_string()),
            ("total-data-files".to_string(), total_files.to_string()),
            ("total-records".to_string(), (live_rows - removed_rows + added_rows).to_string()),
            ("total-delete-files".to_string(), "0".to_string()),
            ("total-position-deletes".to_string(), "0".to_string()),
            ("total-equality-deletes".to_string(), "0".to_string()),
        ]);
        let snapshot = Snapshot {
            snapshot_id,
            parent_snapshot_id: parent,
            sequence_number: seq,
            timestamp_ms: now,
            manifest_list: self.uri(&list_key),
            summary,
            schema_id: Some(schema.schema_id),
        };
        let updates = [
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: MAIN_BRANCH.into(),
                reference: SnapshotRef {
                    snapshot_id,
                    kind: "branch".into(),
                    min_snapshots_to_keep: None,
                    max_snapshot_age_ms: None,
                    max_ref_age_ms: None,
                },
            },
        ];
        // The same optimistic check an external engine's commit gets; the
        // catalog is the only committer, so it holds here by construction.
        let requirements =
            [TableRequirement::AssertRefSnapshotId { reference: MAIN_BRANCH.into(), snapshot_id: parent }];
        let next = apply_commit(meta, &requirements, &updates, now).map_err(iceberg_err)?;
        for key in &gone {
            db.execute(
                "UPDATE files SET removed_seq = ?3 WHERE tbl = ?1 AND key = ?2 AND removed_seq IS NULL",
                &[table.into(), key.as_str().into(), seq.into()],
            )?;
        }
        for f in &added {
            db.execute(
                "INSERT INTO files (tbl, key, rows, bytes, snapshot_id, added_seq, removed_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
                &[table.into(), f.key.as_str().into(), f.rows.into(), f.bytes.into(), snapshot_id.into(), seq.into()],
            )?;
            // Committed: the file is referenced now, its intent has served.
            db.execute("DELETE FROM intents WHERE tbl = ?1 AND key = ?2", &[table.into(), f.key.as_str().into()])?;
        }
        db.execute(
            "INSERT INTO snapshot_manifests (tbl, snapshot_id, manifest_list_key, manifests) VALUES (?1, ?2, ?3, ?4)",
            &[
                table.into(),
                snapshot_id.into(),
                list_key.into(),
                serde_json::to_string(&manifests).map_err(corrupt)?.into(),
            ],
        )?;
        self.store(cx, table, true, Some((version, &loaded)), next).await?;
        self.alarm.arm(cx.storage(), now + self.config.maintenance_interval_ms).await?;
        Ok(Some(snapshot_id))
    }

    /// Records the write intents of [`CatalogRequest::IntendFiles`].
    fn intend_files<S: SqlStorage>(db: &S, table: &str, keys: &[String], now: i64) -> ObjectResult<()> {
        validate_table_name(table)?;
        if !is_managed_table(table) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{table} is not a managed table; its engine writes its files"),
            ));
        }
        if keys.len() > MAX_FILES_PER_COMMIT {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("at most {MAX_FILES_PER_COMMIT} files per intent"),
            ));
        }
        for key in keys {
            db.execute(
                "INSERT INTO intents (tbl, key, at) VALUES (?1, ?2, ?3) ON CONFLICT(tbl, key) DO UPDATE SET at = excluded.at",
                &[table.into(), key.as_str().into(), now.into()],
            )?;
        }
        let pending = db.query_one("SELECT COUNT(*) FROM intents", &[])?.map_or(0, |r| r.i64(0));
        if pending as usize > MAX_PENDING_INTENTS {
            // The request's savepoint rolls the inserts back.
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                format!("{pending} files await their commit (at most {MAX_PENDING_INTENTS}); retry later"),
            ));
        }
        Ok(())
    }

    fn scan<S: SqlStorage>(db: &S, table: &str, snapshot_id: Option<i64>, as_of_ms: Option<i64>) -> ObjectResult<Scan> {
        let (managed, _, loaded) = Self::require_table(db, table)?;
        if !managed {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{table} is an external table; SQL reads managed tables only"),
            ));
        }
        let meta = &loaded.metadata;
        let snapshot = match (snapshot_id, as_of_ms) {
            (Some(id), _) => {
                Some(meta.snapshot(id).ok_or_else(|| ApiError::not_found(format!("no snapshot {id} in {table}")))?)
            }
            (None, Some(ms)) => Some(meta.snapshot_as_of(ms).ok_or_else(|| {
                ApiError::not_found(format!("{table} had no snapshot at {}", events_core::Timestamp(ms).to_iso()))
            })?),
            (None, None) => meta.current_snapshot(),
        };
        let files = match snapshot {
            Some(s) => Self::live_files(db, table, Some(s.sequence_number))?
                .into_iter()
                .map(|(key, rows, bytes, _, _)| ScanFile { key, rows, bytes })
                .collect(),
            None => Vec::new(),
        };
        Ok(Scan { snapshot_id: snapshot.map(|s| s.snapshot_id), schema: meta.current_schema().clone(), files })
    }

    fn changes<S: SqlStorage>(db: &S, table: &str, from: Option<i64>, to: Option<i64>) -> ObjectResult<ChangeSet> {
        let (managed, _, loaded) = Self::require_table(db, table)?;
        if !managed {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{table} is an external table; its engine tracks its changes"),
            ));
        }
        let meta = &loaded.metadata;
        let missing = |id: i64| ApiError::not_found(format!("no snapshot {id} in {table} (never, or expired)"));
        let mut set = ChangeSet {
            from_snapshot_id: from,
            to_snapshot_id: None,
            snapshots: Vec::new(),
            schema: meta.current_schema().clone(),
            files: Vec::new(),
        };
        if let Some(id) = from
            && meta.snapshot(id).is_none()
        {
            return Err(missing(id));
        }
        let last = match to {
            Some(id) => meta.snapshot(id).ok_or_else(|| missing(id))?,
            None => match meta.current_snapshot() {
                Some(s) => s,
                None => return Ok(set),
            },
        };
        set.to_snapshot_id = Some(last.snapshot_id);
        // The snapshots after `from` up to `last`, newest first, by parent links.
        let mut chain = Vec::new();
        let mut at = Some(last);
        let mut reached = false;
        while let Some(s) = at {
            if Some(s.snapshot_id) == from {
                reached = true;
                break;
            }
            chain.push(s);
            at = s.parent_snapshot_id.and_then(|p| meta.snapshot(p));
        }
        match from {
            Some(id) if !reached => {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("snapshot {id} is not {} or one of its ancestors", last.snapshot_id),
                ));
            }
            None if chain.last().is_some_and(|s| s.parent_snapshot_id.is_some()) => {
                let oldest = chain.last().expect("checked").snapshot_id;
                return Err(ApiError::not_found(format!(
                    "the snapshots of {table} before {oldest} have expired: read the table at snapshot {oldest} \
                     and ask for the changes from it"
                )));
            }
            _ => {}
        }
        for s in chain.into_iter().rev() {
            let operation = s.operation().to_string();
            let files: Vec<ScanFile> = if operation == "replace" || operation == "delete" {
                Vec::new()
            } else {
                // Added by this snapshot, unless the same key was live before
                // it (rewritten with its rows, not new rows).
                db.query(
                    "SELECT key, rows, bytes FROM files f WHERE tbl = ?1 AND snapshot_id = ?2 AND added_seq = ?3
                     AND NOT EXISTS (SELECT 1 FROM files g WHERE g.tbl = f.tbl AND g.key = f.key
                                     AND g.removed_seq = f.added_seq)
                     ORDER BY key",
                    &[table.into(), s.snapshot_id.into(), s.sequence_number.into()],
                )?
                .iter()
                .map(|r| ScanFile { key: r.str(0).to_string(), rows: r.i64(1), bytes: r.i64(2) })
                .collect()
            };
            set.snapshots.push(ChangeSnapshot {
                snapshot_id: s.snapshot_id,
                sequence_number: s.sequence_number,
                timestamp_ms: s.timestamp_ms,
                operation,
                added_files: files.len(),
                added_rows: files.iter().map(|f| f.rows).sum(),
            });
            set.files.extend(files);
        }
        Ok(set)
    }

    fn list_tables<S: SqlStorage>(db: &S) -> ObjectResult<Vec<TableSummary>> {
        let mut out = Vec::new();
        for r in db.query("SELECT name, managed, metadata FROM tables ORDER BY name", &[])? {
            let meta: TableMetadata = serde_json::from_slice(r.bytes(2)).map_err(corrupt)?;
            let name = r.str(0).to_string();
            let live = db
                .query_one(
                    "SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM files WHERE tbl = ?1 AND removed_seq IS NULL",
                    &[name.as_str().into()],
                )?
                .expect("aggregate row");
            out.push(TableSummary {
                name,
                managed: r.i64(1) != 0,
                current_snapshot_id: meta.current_snapshot_id,
                files: live.i64(0),
                rows: live.i64(1),
            });
        }
        Ok(out)
    }

    async fn commit_table<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> ObjectResult<LoadedTable> {
        let (managed, version, loaded) = Self::require_table(cx.storage(), table)?;
        if managed {
            let allowed =
                |u: &TableUpdate| matches!(u, TableUpdate::SetProperties { .. } | TableUpdate::RemoveProperties { .. });
            if let Some(u) = updates.iter().find(|u| !allowed(u)) {
                let action = serde_json::to_value(u)
                    .ok()
                    .and_then(|v| v["action"].as_str().map(str::to_string))
                    .unwrap_or_default();
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "{table} is managed by events.do: its commits may set or remove properties only, not {action}"
                    ),
                ));
            }
            let touches_mapping = updates.iter().any(|u| match u {
                TableUpdate::SetProperties { updates } => updates.contains_key(NAME_MAPPING_PROPERTY),
                TableUpdate::RemoveProperties { removals } => removals.iter().any(|k| k == NAME_MAPPING_PROPERTY),
                _ => false,
            });
            if touches_mapping {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("{NAME_MAPPING_PROPERTY} of a managed table is kept by events.do"),
                ));
            }
        }
        let next =
            apply_commit(&loaded.metadata, &requirements, &updates, cx.now().as_millis()).map_err(iceberg_err)?;
        if next == loaded.metadata {
            return Ok(loaded);
        }
        self.store(cx, table, managed, Some((version, &loaded)), next).await
    }

    async fn maintain<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        options: &MaintainOptions,
    ) -> ObjectResult<MaintainReport> {
        let mut report = MaintainReport { table: table.to_string(), ..Default::default() };
        if options.compact {
            self.compact(cx, table, options.compact_prefix.as_deref(), &mut report).await?;
        }
        if options.expire {
            self.expire(cx, table, options, &mut report).await?;
        }
        if options.remove_orphans {
            self.remove_orphans(
                cx,
                table,
                options.orphan_min_age_ms.unwrap_or(self.config.orphan_min_age_ms),
                &mut report,
            )
            .await?;
        }
        Ok(report)
    }

    /// Merges small live files of the same folder (an hour of events) in one replace commit.
    async fn compact<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        prefix: Option<&str>,
        report: &mut MaintainReport,
    ) -> ObjectResult<()> {
        let (_, _, loaded) = Self::require_table(cx.storage(), table)?;
        let columns = Self::data_columns(loaded.metadata.current_schema());
        let live = Self::live_files(cx.storage(), table, None)?;
        let mut folders: BTreeMap<&str, Vec<&LiveFile>> = BTreeMap::new();
        for f in &live {
            if f.2 < COMPACT_SMALL_FILE_BYTES && prefix.is_none_or(|p| f.0.starts_with(p)) {
                let folder = f.0.rsplit_once('/').map_or("", |(d, _)| d);
                folders.entry(folder).or_default().push(f);
            }
        }
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for (folder, files) in folders {
            let mut group: Vec<&LiveFile> = Vec::new();
            let mut budget = 0;
            let mut groups = Vec::new();
            for f in files {
                if budget + f.2 > COMPACT_MAX_INPUT_BYTES && !group.is_empty() {
                    groups.push(std::mem::take(&mut group));
                    budget = 0;
                }
                budget += f.2;
                group.push(f);
            }
            groups.push(group);
            for group in groups.into_iter().filter(|g| g.len() >= 2) {
                let mut contents = Vec::with_capacity(group.len());
                for f in &group {
                    let bytes = cx.host().blobs().get(&f.0).await?.ok_or_else(|| ApiError::data_file_missing(&f.0))?;
                    contents.push(bytes);
                }
                let (merged, rows) = events_lake::merge_event_files_with(&contents, &columns)?;
                let key = format!("{folder}/compact-{}.parquet", Self::uuid(cx));
                let bytes = merged.len() as i64;
                cx.host().blobs().put(&key, merged).await?;
                added.push(NewFile { key, rows: rows as i64, bytes });
                removed.extend(group.iter().map(|f| f.0.clone()));
            }
        }
        report.compacted_inputs = removed.len();
        report.compacted_files = added.iter().map(|f| f.key.clone()).collect();
        if !added.is_empty() {
            self.commit_files(cx, table, added, removed, true).await?;
        }
        Ok(())
    }

    /// Expires old snapshots and deletes the files only they needed.
    async fn expire<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        options: &MaintainOptions,
        report: &mut MaintainReport,
    ) -> ObjectResult<()> {
        let (managed, version, loaded) = Self::require_table(cx.storage(), table)?;
        if !managed {
            return Ok(());
        }
        let now = cx.now().as_millis();
        let keep_last = options.keep_last.unwrap_or(self.config.min_snapshots).max(1);
        let max_age = options.max_snapshot_age_ms.unwrap_or(self.config.snapshot_max_age_ms);
        let meta = &loaded.metadata;
        let mut by_seq: Vec<&Snapshot> = meta.snapshots.iter().collect();
        by_seq.sort_by_key(|s| std::cmp::Reverse(s.sequence_number));
        let referenced: BTreeSet<i64> = meta.refs.values().map(|r| r.snapshot_id).collect();
        let expired: Vec<i64> = by_seq
            .iter()
            .skip(keep_last)
            .filter(|s| now - s.timestamp_ms >= max_age && !referenced.contains(&s.snapshot_id))
            .map(|s| s.snapshot_id)
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let next = apply_commit(meta, &[], &[TableUpdate::RemoveSnapshots { snapshot_ids: expired.clone() }], now)
            .map_err(iceberg_err)?;
        let oldest_kept_seq =
            next.snapshots.iter().map(|s| s.sequence_number).min().unwrap_or(next.last_sequence_number);
        let db = cx.storage();
        // Files removed at or before the oldest kept snapshot are in no kept
        // snapshot, unless the same key was added again (a retried flush
        // rewrote it) and that version is still needed, or a flush intends to
        // put and commit it again.
        let dead: Vec<String> = db
            .query(
                "SELECT DISTINCT key FROM files f WHERE tbl = ?1 AND removed_seq IS NOT NULL AND removed_seq <= ?2
                 AND NOT EXISTS (SELECT 1 FROM files g WHERE g.tbl = f.tbl AND g.key = f.key
                                 AND (g.removed_seq IS NULL OR g.removed_seq > ?2))
                 AND NOT EXISTS (SELECT 1 FROM intents i WHERE i.tbl = f.tbl AND i.key = f.key)",
                &[table.into(), oldest_kept_seq.into()],
            )?
            .iter()
            .map(|r| r.str(0).to_string())
            .collect();
        // Manifests and lists of expired snapshots that no kept snapshot uses.
        let mut kept_manifests = BTreeSet::new();
        for s in &next.snapshots {
            if let Some(r) = db.query_one(
                "SELECT manifests FROM snapshot_manifests WHERE tbl = ?1 AND snapshot_id = ?2",
                &[table.into(), s.snapshot_id.into()],
            )? {
                let list: Vec<ManifestFile> = serde_json::from_slice(r.bytes(0)).map_err(corrupt)?;
                kept_manifests.extend(list.into_iter().map(|m| m.manifest_path));
            }
        }
        let mut metadata_garbage = Vec::new();
        for id in &expired {
            if let Some(r) = db.query_one(
                "SELECT manifest_list_key, manifests FROM snapshot_manifests WHERE tbl = ?1 AND snapshot_id = ?2",
                &[table.into(), (*id).into()],
            )? {
                metadata_garbage.push(r.str(0).to_string());
                let list: Vec<ManifestFile> = serde_json::from_slice(r.bytes(1)).map_err(corrupt)?;
                metadata_garbage.extend(
                    list.into_iter()
                        .filter(|m| !kept_manifests.contains(&m.manifest_path))
                        .filter_map(|m| self.key_of(&m.manifest_path)),
                );
            }
            db.execute(
                "DELETE FROM snapshot_manifests WHERE tbl = ?1 AND snapshot_id = ?2",
                &[table.into(), (*id).into()],
            )?;
        }
        db.execute(
            "DELETE FROM files WHERE tbl = ?1 AND removed_seq IS NOT NULL AND removed_seq <= ?2",
            &[table.into(), oldest_kept_seq.into()],
        )?;
        // The new metadata first: once it is current, nothing points at the garbage.
        self.store(cx, table, true, Some((version, &loaded)), next).await?;
        metadata_garbage.sort();
        metadata_garbage.dedup();
        for key in dead.iter().chain(metadata_garbage.iter()) {
            cx.host().blobs().delete(key).await?;
        }
        report.expired_snapshots = expired.len();
        report.deleted_files = dead.len();
        Ok(())
    }

    /// Deletes files under the table's folders that nothing references.
    ///
    /// Never deleted, whatever `min_age_ms`: a key with a pending write
    /// intent (a flush put it, or is about to, and will commit it), and, in
    /// the events folder, anything that is not laid out as one of this
    /// namespace's event files (CDC files, other tables' metadata, should a
    /// configured prefix make the folders overlap).
    async fn remove_orphans<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        min_age_ms: i64,
        report: &mut MaintainReport,
    ) -> ObjectResult<()> {
        let (managed, _, loaded) = Self::require_table(cx.storage(), table)?;
        if !managed {
            return Ok(());
        }
        let db = cx.storage();
        let mut referenced: BTreeSet<String> = db
            .query("SELECT key FROM files WHERE tbl = ?1", &[table.into()])?
            .iter()
            .map(|r| r.str(0).to_string())
            .collect();
        // Intents of every table: a key is kept if any commit is pending for it.
        referenced.extend(db.query("SELECT key FROM intents", &[])?.iter().map(|r| r.str(0).to_string()));
        for r in
            db.query("SELECT manifest_list_key, manifests FROM snapshot_manifests WHERE tbl = ?1", &[table.into()])?
        {
            referenced.insert(r.str(0).to_string());
            let list: Vec<ManifestFile> = serde_json::from_slice(r.bytes(1)).map_err(corrupt)?;
            referenced.extend(list.into_iter().filter_map(|m| self.key_of(&m.manifest_path)));
        }
        referenced.extend(self.key_of(&loaded.metadata_location));
        referenced.extend(loaded.metadata.metadata_log.iter().filter_map(|m| self.key_of(&m.metadata_file)));
        // (folder, whether only this namespace's event files may go)
        let mut folders = vec![(self.table_prefix(table), false)];
        if table == EVENTS_TABLE {
            folders.push((self.events_folder(), true));
        }
        // CDC collection folders: their files belong to the processors.
        let cdc_folders = format!("{}/ns={}/collection=", events_lake::cdc::CDC_PREFIX, self.ns);
        let horizon = cx.now().as_millis() - min_age_ms;
        for (folder, events_only) in folders {
            for blob in cx.host().blobs().list(&folder).await? {
                let deletable = !referenced.contains(&blob.key)
                    && blob.last_modified.as_millis() <= horizon
                    && !blob.key.starts_with(&cdc_folders)
                    && (!events_only || events_lake::parse_event_file_key(&blob.key).is_some_and(|k| k.ns == self.ns));
                if deletable {
                    cx.host().blobs().delete(&blob.key).await?;
                    report.orphans_deleted.push(blob.key);
                }
            }
        }
        Ok(())
    }

    /// The folder of this namespace's event files: `{events_prefix}/ns=<ns>/`.
    fn events_folder(&self) -> String {
        let prefix = self.config.events_prefix.trim_end_matches('/');
        let sep = if prefix.is_empty() { "" } else { "/" };
        format!("{prefix}{sep}ns={}/", self.ns)
    }

    fn managed_tables<S: SqlStorage>(db: &S) -> ObjectResult<Vec<String>> {
        Ok(db
            .query("SELECT name FROM tables WHERE managed = 1 ORDER BY name", &[])?
            .iter()
            .map(|r| r.str(0).to_string())
            .collect())
    }
}

impl DurableObject for Catalog {
    const CLASS: &'static str = "Catalog";
    const PLACEMENT: Placement = Placement::Background;
    type Request = CatalogRequest;
    type Response = CatalogResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let host = cx.host();
        let config = CatalogConfig {
            base_uri: host.var("lake.base_uri").unwrap_or_else(|| "file:///lake".to_string()),
            maintenance_interval_ms: var_or(host, "catalog.maintenance_interval_ms", DEFAULT_MAINTENANCE_INTERVAL_MS)
                .max(1000),
            snapshot_max_age_ms: var_or(host, "catalog.snapshot_max_age_ms", DEFAULT_SNAPSHOT_MAX_AGE_MS).max(0),
            min_snapshots: var_or(host, "catalog.min_snapshots", DEFAULT_MIN_SNAPSHOTS).max(1),
            orphan_min_age_ms: var_or(host, "catalog.orphan_min_age_ms", DEFAULT_ORPHAN_MIN_AGE_MS).max(0),
            events_prefix: host
                .var("lake.events_prefix")
                .unwrap_or_else(|| events_lake::EVENTS_TABLE_PREFIX.to_string()),
        };
        Ok(Catalog { ns: cx.name().to_string(), config, alarm: AlarmSlot::load(cx.storage()).await? })
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: CatalogRequest) -> ObjectResult<CatalogResponse> {
        let db = cx.storage();
        match req {
            CatalogRequest::PrepareColumns { table, observed } => {
                Ok(CatalogResponse::Columns(self.prepare_columns(cx, &table, observed).await?))
            }
            CatalogRequest::EnsureManagedTable { table, schema, properties } => {
                validate_table_name(&table)?;
                if !table.starts_with("cdc_") {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("managed tables besides events are named cdc_*, not {table}"),
                    ));
                }
                if let Some((managed, _, loaded)) = Self::load_table(db, &table)? {
                    if !managed {
                        return Err(ApiError::new(ErrorCode::Conflict, format!("{table} exists as an external table")));
                    }
                    return Ok(CatalogResponse::Table(Box::new(loaded)));
                }
                let location = self.uri(&self.table_prefix(&table)).trim_end_matches('/').to_string();
                let mut meta = TableMetadata::new(Self::uuid(cx), location, schema.clone(), cx.now().as_millis());
                meta.properties.extend(properties);
                meta.properties.insert(NAME_MAPPING_PROPERTY.into(), schema.name_mapping_json());
                meta.properties.insert("events.managed".into(), "true".into());
                let loaded = self.store(cx, &table, true, None, meta).await?;
                Ok(CatalogResponse::Table(Box::new(loaded)))
            }
            CatalogRequest::IntendFiles { table, keys } => {
                Self::intend_files(db, &table, &keys, cx.now().as_millis())?;
                Ok(CatalogResponse::Ok)
            }
            CatalogRequest::CommitFiles { table, added, removed } => {
                Ok(CatalogResponse::Committed(self.commit_files(cx, &table, added, removed, false).await?))
            }
            CatalogRequest::Scan { table, snapshot_id, as_of_ms } => {
                Ok(CatalogResponse::Scan(Self::scan(db, &table, snapshot_id, as_of_ms)?))
            }
            CatalogRequest::Changes { table, from_snapshot, to_snapshot } => {
                Ok(CatalogResponse::Changes(Box::new(Self::changes(db, &table, from_snapshot, to_snapshot)?)))
            }
            CatalogRequest::ListTables => Ok(CatalogResponse::Tables(Self::list_tables(db)?)),
            CatalogRequest::LoadTable { table } => {
                Ok(CatalogResponse::Table(Box::new(Self::require_table(db, &table)?.2)))
            }
            CatalogRequest::SchemaHistory { table } => {
                Self::require_table(db, &table)?;
                let changes = db
                    .query(
                        "SELECT at, change FROM schema_changes WHERE tbl = ?1 ORDER BY seq",
                        &[table.as_str().into()],
                    )?
                    .iter()
                    .map(|r| {
                        Ok(RecordedChange {
                            at: r.i64(0),
                            change: serde_json::from_slice(r.bytes(1)).map_err(corrupt)?,
                        })
                    })
                    .collect::<ObjectResult<Vec<_>>>()?;
                Ok(CatalogResponse::SchemaHistory(changes))
            }
            CatalogRequest::NamespaceInfo => {
                let props = db
                    .query_one("SELECT properties FROM namespace WHERE id = 1", &[])?
                    .map(|r| serde_json::from_slice(r.bytes(0)).map_err(corrupt))
                    .transpose()?;
                Ok(CatalogResponse::Namespace(props))
            }
            CatalogRequest::CreateNamespace { properties } => {
                if db.query_one("SELECT 1 FROM namespace WHERE id = 1", &[])?.is_some() {
                    return Err(ApiError::new(ErrorCode::Conflict, format!("namespace {} already exists", self.ns)));
                }
                db.execute(
                    "INSERT INTO namespace (id, properties) VALUES (1, ?1)",
                    &[serde_json::to_string(&properties).map_err(corrupt)?.into()],
                )?;
                Ok(CatalogResponse::Namespace(Some(properties)))
            }
            CatalogRequest::DropNamespace => {
                if db.query_one("SELECT 1 FROM namespace WHERE id = 1", &[])?.is_none() {
                    return Err(ApiError::not_found(format!("no namespace {}", self.ns)));
                }
                if db.query_one("SELECT 1 FROM tables LIMIT 1", &[])?.is_some() {
                    return Err(ApiError::new(ErrorCode::Conflict, format!("namespace {} has tables", self.ns)));
                }
                db.execute("DELETE FROM namespace", &[])?;
                Ok(CatalogResponse::Ok)
            }
            CatalogRequest::UpdateNamespaceProperties { removals, updates } => {
                let row = db.query_one("SELECT properties FROM namespace WHERE id = 1", &[])?;
                let mut props: BTreeMap<String, String> = match row {
                    Some(r) => serde_json::from_slice(r.bytes(0)).map_err(corrupt)?,
                    None => return Err(ApiError::not_found(format!("no namespace {}", self.ns))),
                };
                if removals.iter().any(|k| updates.contains_key(k)) {
                    return Err(ApiError::new(ErrorCode::InvalidRequest, "a key is both removed and updated"));
                }
                let (mut removed, mut missing) = (Vec::new(), Vec::new());
                for k in removals {
                    if props.remove(&k).is_some() { removed.push(k) } else { missing.push(k) }
                }
                let updated: Vec<String> = updates.keys().cloned().collect();
                props.extend(updates);
                db.execute(
                    "UPDATE namespace SET properties = ?1 WHERE id = 1",
                    &[serde_json::to_string(&props).map_err(corrupt)?.into()],
                )?;
                Ok(CatalogResponse::PropertiesUpdated { updated, removed, missing })
            }
            CatalogRequest::CreateTable { name, schema, properties } => {
                validate_table_name(&name)?;
                if is_managed_table(&name) {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        format!("{name} is a name reserved for tables events.do writes"),
                    ));
                }
                if Self::load_table(db, &name)?.is_some() {
                    return Err(ApiError::new(ErrorCode::Conflict, format!("table {name} already exists")));
                }
                let count = db.query_one("SELECT COUNT(*) FROM tables", &[])?.map_or(0, |r| r.i64(0));
                if count as usize >= MAX_TABLES {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("a namespace has at most {MAX_TABLES} tables"),
                    ));
                }
                let location = self.uri(&self.table_prefix(&name)).trim_end_matches('/').to_string();
                let mut meta = TableMetadata::new(Self::uuid(cx), location, schema, cx.now().as_millis());
                meta.properties = properties;
                let loaded = self.store(cx, &name, false, None, meta).await?;
                Ok(CatalogResponse::Table(Box::new(loaded)))
            }
            CatalogRequest::CommitTable { table, requirements, updates } => {
                Ok(CatalogResponse::Table(Box::new(self.commit_table(cx, &table, requirements, updates).await?)))
            }
            CatalogRequest::DropTable { table } => {
                let (managed, _, _) = Self::require_table(db, &table)?;
                if managed {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        format!("{table} is managed by events.do and cannot be dropped"),
                    ));
                }
                db.execute("DELETE FROM tables WHERE name = ?1", &[table.as_str().into()])?;
                Ok(CatalogResponse::Ok)
            }
            CatalogRequest::Maintain { table, options } => {
                let tables = match table {
                    Some(t) => {
                        if !Self::require_table(db, &t)?.0 {
                            return Err(ApiError::new(
                                ErrorCode::InvalidRequest,
                                format!("{t} is an external table; its engine maintains it"),
                            ));
                        }
                        vec![t]
                    }
                    None => Self::managed_tables(db)?,
                };
                let mut reports = Vec::new();
                for t in tables {
                    reports.push(self.maintain(cx, &t, &options).await?);
                }
                Ok(CatalogResponse::Maintained(reports))
            }
        }
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        self.alarm.fired();
        // Compaction of closed hours is the writers' trigger; the alarm expires and cleans.
        let options = MaintainOptions { expire: true, remove_orphans: true, ..Default::default() };
        for t in Self::managed_tables(cx.storage())? {
            self.maintain(cx, &t, &options).await?;
        }
        Ok(())
    }
}
