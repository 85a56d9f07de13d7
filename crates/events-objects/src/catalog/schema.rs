//! Iceberg schemas of the lake files, and schema evolution of managed tables.

use std::collections::BTreeMap;

use arrow_schema::DataType;
use events_iceberg::commit::{TableRequirement, TableUpdate, apply_commit};
use events_iceberg::evolve::evolve;
use events_iceberg::metadata::{NAME_MAPPING_PROPERTY, NestedField, Schema};
use events_lake::{ColumnKind, DataColumn};
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};
use serde_json::Value;

use super::*;

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

impl Catalog {
    pub(super) fn data_columns(schema: &Schema) -> Vec<DataColumn> {
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

    pub(super) async fn prepare_columns<H: Host>(
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

    /// A table's recorded schema changes, oldest first ([`CatalogRequest::SchemaHistory`]).
    pub(super) fn schema_history<S: SqlStorage>(db: &S, table: &str) -> ObjectResult<Vec<RecordedChange>> {
        Self::require_table(db, table)?;
        db.query("SELECT at, change FROM schema_changes WHERE tbl = ?1 ORDER BY seq", &[table.into()])?
            .iter()
            .map(|r| Ok(RecordedChange { at: r.i64(0), change: serde_json::from_slice(r.bytes(1)).map_err(corrupt)? }))
            .collect()
    }
}
