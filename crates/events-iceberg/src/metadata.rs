//! The Iceberg v2 table metadata JSON (spec "Table Metadata"), as stored in
//! `*.metadata.json` files and returned by the REST catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The table format version this crate writes.
pub const FORMAT_VERSION: u8 = 2;
/// The name of the main branch.
pub const MAIN_BRANCH: &str = "main";
/// Table property: the name mapping readers use for files without field ids.
pub const NAME_MAPPING_PROPERTY: &str = "schema.name-mapping.default";

/// One column of a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NestedField {
    /// The field id: unique in the table's history, never reused.
    pub id: i32,
    /// The column name.
    pub name: String,
    /// Whether every row has a value.
    pub required: bool,
    /// The Iceberg type: a primitive name (`"long"`) or a nested type object.
    #[serde(rename = "type")]
    pub field_type: Value,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
}

impl NestedField {
    /// The primitive type name, if the type is primitive.
    pub fn primitive(&self) -> Option<&str> {
        self.field_type.as_str()
    }
}

/// A table schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Schema {
    /// Always `"struct"`.
    #[serde(rename = "type", default = "struct_type")]
    pub kind: String,
    /// The schema id.
    #[serde(default)]
    pub schema_id: i32,
    /// Identifier (row key) field ids.
    #[serde(default)]
    pub identifier_field_ids: Vec<i32>,
    /// The columns, in order.
    pub fields: Vec<NestedField>,
}

fn struct_type() -> String {
    "struct".into()
}

impl Schema {
    /// A schema with the given id and columns.
    pub fn new(schema_id: i32, fields: Vec<NestedField>) -> Self {
        Schema { kind: struct_type(), schema_id, identifier_field_ids: Vec::new(), fields }
    }

    /// The highest field id in the schema, nested fields included.
    pub fn highest_field_id(&self) -> i32 {
        fn walk(v: &Value, best: &mut i32) {
            match v {
                Value::Object(map) => {
                    for key in ["id", "element-id", "key-id", "value-id"] {
                        if let Some(id) = map.get(key).and_then(Value::as_i64) {
                            *best = (*best).max(id as i32);
                        }
                    }
                    map.values().for_each(|v| walk(v, best));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, best)),
                _ => {}
            }
        }
        let mut best = 0;
        for f in &self.fields {
            best = best.max(f.id);
            walk(&f.field_type, &mut best);
        }
        best
    }

    /// The column named `name`.
    pub fn field(&self, name: &str) -> Option<&NestedField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The name mapping (`schema.name-mapping.default`) of the top-level columns.
    pub fn name_mapping_json(&self) -> String {
        let entries: Vec<Value> =
            self.fields.iter().map(|f| serde_json::json!({"field-id": f.id, "names": [f.name]})).collect();
        Value::Array(entries).to_string()
    }
}

/// A partition spec (events.do tables are unpartitioned: no fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionSpec {
    /// The spec id.
    pub spec_id: i32,
    /// The partition fields (source id, field id, name, transform).
    pub fields: Vec<Value>,
}

/// A sort order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SortOrder {
    /// The order id (0 = unsorted).
    pub order_id: i32,
    /// The sort fields.
    pub fields: Vec<Value>,
}

/// A snapshot: the table's state after one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    /// The snapshot id.
    pub snapshot_id: i64,
    /// The snapshot it was built on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<i64>,
    /// Its sequence number (strictly increasing along history).
    pub sequence_number: i64,
    /// When it was committed (ms since the epoch).
    pub timestamp_ms: i64,
    /// The location of its manifest list.
    pub manifest_list: String,
    /// `operation` (append, replace, overwrite, delete) and counters.
    pub summary: BTreeMap<String, String>,
    /// The schema current when it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<i32>,
}

impl Snapshot {
    /// The `operation` of the summary.
    pub fn operation(&self) -> &str {
        self.summary.get("operation").map_or("", String::as_str)
    }
}

/// A named reference (branch or tag) to a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotRef {
    /// The snapshot.
    pub snapshot_id: i64,
    /// `branch` or `tag`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Retention: snapshots of a branch to keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_snapshots_to_keep: Option<i32>,
    /// Retention: oldest snapshot age to keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_snapshot_age_ms: Option<i64>,
    /// Retention of the reference itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ref_age_ms: Option<i64>,
}

/// One entry of the snapshot log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotLogEntry {
    /// When the snapshot became current.
    pub timestamp_ms: i64,
    /// The snapshot.
    pub snapshot_id: i64,
}

/// One entry of the metadata log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetadataLogEntry {
    /// When that metadata file was replaced.
    pub timestamp_ms: i64,
    /// Its location.
    pub metadata_file: String,
}

/// Iceberg table metadata, format version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TableMetadata {
    /// Always 2 here.
    pub format_version: u8,
    /// The table's UUID.
    pub table_uuid: String,
    /// The table's base location (URI).
    pub location: String,
    /// The highest sequence number assigned.
    pub last_sequence_number: i64,
    /// When the metadata last changed.
    pub last_updated_ms: i64,
    /// The highest field id ever assigned.
    pub last_column_id: i32,
    /// Every schema (history).
    pub schemas: Vec<Schema>,
    /// The current schema.
    pub current_schema_id: i32,
    /// Partition specs.
    pub partition_specs: Vec<PartitionSpec>,
    /// The default spec.
    pub default_spec_id: i32,
    /// The highest partition field id assigned.
    pub last_partition_id: i32,
    /// Table properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The current snapshot (`main`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "snapshot_id_or_minus_one")]
    pub current_snapshot_id: Option<i64>,
    /// Valid snapshots.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    /// History of the current snapshot.
    #[serde(default)]
    pub snapshot_log: Vec<SnapshotLogEntry>,
    /// Previous metadata files.
    #[serde(default)]
    pub metadata_log: Vec<MetadataLogEntry>,
    /// Sort orders.
    pub sort_orders: Vec<SortOrder>,
    /// The default sort order.
    pub default_sort_order_id: i32,
    /// Branches and tags.
    #[serde(default)]
    pub refs: BTreeMap<String, SnapshotRef>,
}

fn snapshot_id_or_minus_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v: Option<i64> = Option::deserialize(d)?;
    Ok(v.filter(|id| *id != -1))
}

impl TableMetadata {
    /// A new, empty, unpartitioned, unsorted table.
    pub fn new(table_uuid: String, location: String, schema: Schema, now_ms: i64) -> Self {
        let last_column_id = schema.highest_field_id();
        let schema = Schema { schema_id: 0, ..schema };
        TableMetadata {
            format_version: FORMAT_VERSION,
            table_uuid,
            location,
            last_sequence_number: 0,
            last_updated_ms: now_ms,
            last_column_id,
            schemas: vec![schema],
            current_schema_id: 0,
            partition_specs: vec![PartitionSpec { spec_id: 0, fields: Vec::new() }],
            default_spec_id: 0,
            last_partition_id: 999,
            properties: BTreeMap::new(),
            current_snapshot_id: None,
            snapshots: Vec::new(),
            snapshot_log: Vec::new(),
            metadata_log: Vec::new(),
            sort_orders: vec![SortOrder { order_id: 0, fields: Vec::new() }],
            default_sort_order_id: 0,
            refs: BTreeMap::new(),
        }
    }

    /// The current schema.
    pub fn current_schema(&self) -> &Schema {
        self.schema(self.current_schema_id).expect("the current schema is in the schema list")
    }

    /// The schema with id `id`.
    pub fn schema(&self, id: i32) -> Option<&Schema> {
        self.schemas.iter().find(|s| s.schema_id == id)
    }

    /// The snapshot with id `id`.
    pub fn snapshot(&self, id: i64) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.snapshot_id == id)
    }

    /// The current snapshot of `main`.
    pub fn current_snapshot(&self) -> Option<&Snapshot> {
        self.current_snapshot_id.and_then(|id| self.snapshot(id))
    }

    /// The snapshot that was current at `timestamp_ms` (the last log entry at or before it).
    pub fn snapshot_as_of(&self, timestamp_ms: i64) -> Option<&Snapshot> {
        let entry = self.snapshot_log.iter().rev().find(|e| e.timestamp_ms <= timestamp_ms)?;
        self.snapshot(entry.snapshot_id)
    }

    /// Checks the invariants every metadata version must keep.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.schema(self.current_schema_id).is_none() {
            return Err(format!("current schema {} is not in the schema list", self.current_schema_id));
        }
        for s in &self.schemas {
            if s.highest_field_id() > self.last_column_id {
                return Err(format!("schema {} uses field ids beyond last-column-id", s.schema_id));
            }
        }
        if let Some(id) = self.current_snapshot_id
            && self.snapshot(id).is_none()
        {
            return Err(format!("current snapshot {id} is not in the snapshot list"));
        }
        for (name, r) in &self.refs {
            if self.snapshot(r.snapshot_id).is_none() {
                return Err(format!("ref {name} points to a missing snapshot {}", r.snapshot_id));
            }
        }
        if self.snapshots.iter().any(|s| s.sequence_number > self.last_sequence_number) {
            return Err("a snapshot's sequence number is beyond last-sequence-number".into());
        }
        Ok(())
    }
}
