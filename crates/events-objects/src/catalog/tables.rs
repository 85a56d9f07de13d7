//! Table names, managed and external tables, and REST commits to them.

use std::collections::BTreeMap;

use events_core::{ApiError, ErrorCode};
use events_iceberg::commit::{TableRequirement, TableUpdate, apply_commit};
use events_iceberg::metadata::{NAME_MAPPING_PROPERTY, Schema, TableMetadata};
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

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

/// Whether `name` is a table events.do writes itself.
pub fn is_managed_table(name: &str) -> bool {
    name == EVENTS_TABLE || name.starts_with("cdc_")
}

impl Catalog {
    /// Creates the managed events table if it does not exist.
    pub(super) async fn ensure_managed<H: Host>(
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

    pub(super) fn list_tables<S: SqlStorage>(db: &S) -> ObjectResult<Vec<TableSummary>> {
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

    pub(super) async fn commit_table<H: Host>(
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

    /// Creates a managed CDC table (`cdc_*`) with `schema` unless it exists
    /// ([`CatalogRequest::EnsureManagedTable`]).
    pub(super) async fn ensure_managed_table<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: &str,
        schema: Schema,
        properties: BTreeMap<String, String>,
    ) -> ObjectResult<LoadedTable> {
        validate_table_name(table)?;
        if !table.starts_with("cdc_") {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("managed tables besides events are named cdc_*, not {table}"),
            ));
        }
        if let Some((managed, _, loaded)) = Self::load_table(cx.storage(), table)? {
            if !managed {
                return Err(ApiError::new(ErrorCode::Conflict, format!("{table} exists as an external table")));
            }
            return Ok(loaded);
        }
        let location = self.uri(&self.table_prefix(table)).trim_end_matches('/').to_string();
        let mut meta = TableMetadata::new(Self::uuid(cx), location, schema.clone(), cx.now().as_millis());
        meta.properties.extend(properties);
        meta.properties.insert(NAME_MAPPING_PROPERTY.into(), schema.name_mapping_json());
        meta.properties.insert("events.managed".into(), "true".into());
        self.store(cx, table, true, None, meta).await
    }

    /// Creates an external table ([`CatalogRequest::CreateTable`]).
    pub(super) async fn create_table<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        name: &str,
        schema: Schema,
        properties: BTreeMap<String, String>,
    ) -> ObjectResult<LoadedTable> {
        let db = cx.storage();
        validate_table_name(name)?;
        if is_managed_table(name) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{name} is a name reserved for tables events.do writes"),
            ));
        }
        if Self::load_table(db, name)?.is_some() {
            return Err(ApiError::new(ErrorCode::Conflict, format!("table {name} already exists")));
        }
        let count = db.query_one("SELECT COUNT(*) FROM tables", &[])?.map_or(0, |r| r.i64(0));
        if count as usize >= MAX_TABLES {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a namespace has at most {MAX_TABLES} tables"),
            ));
        }
        let location = self.uri(&self.table_prefix(name)).trim_end_matches('/').to_string();
        let mut meta = TableMetadata::new(Self::uuid(cx), location, schema, cx.now().as_millis());
        meta.properties = properties;
        self.store(cx, name, false, None, meta).await
    }

    /// Drops an external table; its files are left to its engine ([`CatalogRequest::DropTable`]).
    pub(super) fn drop_table<S: SqlStorage>(db: &S, table: &str) -> ObjectResult<()> {
        let (managed, _, _) = Self::require_table(db, table)?;
        if managed {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{table} is managed by events.do and cannot be dropped"),
            ));
        }
        db.execute("DELETE FROM tables WHERE name = ?1", &[table.into()])?;
        Ok(())
    }
}
