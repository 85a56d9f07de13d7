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

mod commit;
mod maintain;
mod messages;
mod namespace;
mod object;
mod scan;
mod schema;
mod storage;
mod tables;

pub use commit::commit_operation;
pub use messages::*;
pub use schema::{events_base_schema, iceberg_schema};
pub use tables::{cdc_table_name, is_managed_table, validate_table_name};

use storage::MIGRATIONS;

use events_core::{ApiError, ErrorCode};
use events_iceberg::IcebergError;

use crate::alarm::AlarmSlot;

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
