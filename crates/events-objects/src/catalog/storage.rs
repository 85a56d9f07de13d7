//! The catalog's SQLite schema, table metadata and its files in the bucket.

use events_core::ApiError;
use events_iceberg::metadata::{MetadataLogEntry, TableMetadata};
use events_runtime::{BlobStore, Host, Migration, ObjectContext, ObjectResult, SqlStorage};

use super::*;

pub(super) const MIGRATIONS: &[Migration] = &[
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

impl Catalog {
    pub(super) fn uuid<H: Host>(cx: &ObjectContext<H>) -> String {
        let r = cx.host().random();
        // Version 4, variant 1.
        let r = (r & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        let h = format!("{r:032x}");
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }

    pub(super) fn table_prefix(&self, table: &str) -> String {
        format!("{ICEBERG_PREFIX}/ns={}/{table}/", self.ns)
    }

    pub(super) fn uri(&self, key: &str) -> String {
        format!("{}/{key}", self.config.base_uri.trim_end_matches('/'))
    }

    pub(super) fn key_of(&self, uri: &str) -> Option<String> {
        uri.strip_prefix(self.config.base_uri.trim_end_matches('/'))
            .and_then(|k| k.strip_prefix('/'))
            .map(str::to_string)
    }

    pub(super) fn load_table<S: SqlStorage>(db: &S, table: &str) -> ObjectResult<Option<(bool, i64, LoadedTable)>> {
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

    pub(super) fn require_table<S: SqlStorage>(db: &S, table: &str) -> ObjectResult<(bool, i64, LoadedTable)> {
        Self::load_table(db, table)?.ok_or_else(|| ApiError::not_found(format!("no table {table}")))
    }

    /// Writes `metadata` as the next version of `table` and moves the pointer.
    pub(super) async fn store<H: Host>(
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

    pub(super) fn live_files<S: SqlStorage>(db: &S, table: &str, at_seq: Option<i64>) -> ObjectResult<Vec<LiveFile>> {
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

    pub(super) fn managed_tables<S: SqlStorage>(db: &S) -> ObjectResult<Vec<String>> {
        Ok(db
            .query("SELECT name FROM tables WHERE managed = 1 ORDER BY name", &[])?
            .iter()
            .map(|r| r.str(0).to_string())
            .collect())
    }
}
