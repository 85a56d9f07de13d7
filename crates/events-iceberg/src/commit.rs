//! Optimistic commits: the REST catalog's requirements (checked against the
//! current metadata) and updates (applied to a copy of it).
//!
//! A commit is all or nothing: [`apply_commit`] returns a new metadata value
//! or an error, never a half-applied table.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IcebergError;
use crate::metadata::{
    MAIN_BRANCH, PartitionSpec, Schema, Snapshot, SnapshotLogEntry, SnapshotRef, SortOrder, TableMetadata,
};

/// A condition the current metadata must meet for a commit to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TableRequirement {
    /// The table must not exist.
    AssertCreate,
    /// The table's UUID.
    AssertTableUuid {
        /// Expected UUID.
        uuid: String,
    },
    /// A ref points at a snapshot (or, with `None`, does not exist).
    AssertRefSnapshotId {
        /// The ref name.
        #[serde(rename = "ref")]
        reference: String,
        /// Expected snapshot.
        #[serde(rename = "snapshot-id")]
        snapshot_id: Option<i64>,
    },
    /// The highest assigned field id.
    AssertLastAssignedFieldId {
        /// Expected value.
        #[serde(rename = "last-assigned-field-id")]
        last_assigned_field_id: i32,
    },
    /// The current schema id.
    AssertCurrentSchemaId {
        /// Expected value.
        #[serde(rename = "current-schema-id")]
        current_schema_id: i32,
    },
    /// The highest assigned partition field id.
    AssertLastAssignedPartitionId {
        /// Expected value.
        #[serde(rename = "last-assigned-partition-id")]
        last_assigned_partition_id: i32,
    },
    /// The default partition spec.
    AssertDefaultSpecId {
        /// Expected value.
        #[serde(rename = "default-spec-id")]
        default_spec_id: i32,
    },
    /// The default sort order.
    AssertDefaultSortOrderId {
        /// Expected value.
        #[serde(rename = "default-sort-order-id")]
        default_sort_order_id: i32,
    },
}

/// One change to table metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum TableUpdate {
    /// Sets the UUID (only to its current value after creation).
    AssignUuid {
        /// The UUID.
        uuid: String,
    },
    /// Upgrades the format version (only 2 is supported).
    UpgradeFormatVersion {
        /// The version.
        #[serde(rename = "format-version")]
        format_version: u8,
    },
    /// Adds a schema.
    AddSchema {
        /// The schema.
        schema: Schema,
        /// Deprecated hint; recomputed.
        #[serde(rename = "last-column-id", default, skip_serializing_if = "Option::is_none")]
        last_column_id: Option<i32>,
    },
    /// Sets the current schema (`-1`: the last added).
    SetCurrentSchema {
        /// Schema id.
        #[serde(rename = "schema-id")]
        schema_id: i32,
    },
    /// Adds a partition spec.
    AddSpec {
        /// The spec.
        spec: PartitionSpec,
    },
    /// Sets the default spec (`-1`: the last added).
    SetDefaultSpec {
        /// Spec id.
        #[serde(rename = "spec-id")]
        spec_id: i32,
    },
    /// Adds a sort order.
    AddSortOrder {
        /// The order.
        #[serde(rename = "sort-order")]
        sort_order: SortOrder,
    },
    /// Sets the default sort order (`-1`: the last added).
    SetDefaultSortOrder {
        /// Order id.
        #[serde(rename = "sort-order-id")]
        sort_order_id: i32,
    },
    /// Adds a snapshot (its manifests are already written).
    AddSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Points a branch or tag at a snapshot.
    SetSnapshotRef {
        /// The ref name.
        #[serde(rename = "ref-name")]
        ref_name: String,
        /// The ref.
        #[serde(flatten)]
        reference: SnapshotRef,
    },
    /// Removes snapshots.
    RemoveSnapshots {
        /// Their ids.
        #[serde(rename = "snapshot-ids")]
        snapshot_ids: Vec<i64>,
    },
    /// Removes a ref.
    RemoveSnapshotRef {
        /// The ref name.
        #[serde(rename = "ref-name")]
        ref_name: String,
    },
    /// Moves the table's base location.
    SetLocation {
        /// The location.
        location: String,
    },
    /// Sets properties.
    SetProperties {
        /// Key → value.
        updates: std::collections::BTreeMap<String, String>,
    },
    /// Removes properties.
    RemoveProperties {
        /// Keys.
        removals: Vec<String>,
    },
}

impl TableUpdate {
    /// Whether this update changes the table's data (snapshots or refs).
    pub fn touches_snapshots(&self) -> bool {
        matches!(
            self,
            TableUpdate::AddSnapshot { .. }
                | TableUpdate::SetSnapshotRef { .. }
                | TableUpdate::RemoveSnapshots { .. }
                | TableUpdate::RemoveSnapshotRef { .. }
                | TableUpdate::SetLocation { .. }
        )
    }
}

/// Checks `requirements` against `current` (`None`: the table does not exist).
pub fn check_requirements(
    current: Option<&TableMetadata>,
    requirements: &[TableRequirement],
) -> Result<(), IcebergError> {
    let conflict = |msg: String| Err(IcebergError::Conflict(msg));
    for req in requirements {
        let Some(meta) = current else {
            if matches!(req, TableRequirement::AssertCreate) {
                continue;
            }
            return Err(IcebergError::NotFound("the table does not exist".into()));
        };
        match req {
            TableRequirement::AssertCreate => return conflict("the table already exists".into()),
            TableRequirement::AssertTableUuid { uuid } if *uuid != meta.table_uuid => {
                return conflict(format!("table uuid is {}, not {uuid}", meta.table_uuid));
            }
            TableRequirement::AssertRefSnapshotId { reference, snapshot_id } => {
                let actual = meta.refs.get(reference).map(|r| r.snapshot_id);
                if actual != *snapshot_id {
                    return conflict(format!("ref {reference} is at {actual:?}, expected {snapshot_id:?}"));
                }
            }
            TableRequirement::AssertLastAssignedFieldId { last_assigned_field_id: id }
                if *id != meta.last_column_id =>
            {
                return conflict(format!("last assigned field id is {}, expected {id}", meta.last_column_id));
            }
            TableRequirement::AssertCurrentSchemaId { current_schema_id: id } if *id != meta.current_schema_id => {
                return conflict(format!("current schema id is {}, expected {id}", meta.current_schema_id));
            }
            TableRequirement::AssertLastAssignedPartitionId { last_assigned_partition_id: id }
                if *id != meta.last_partition_id =>
            {
                return conflict(format!("last partition id is {}, expected {id}", meta.last_partition_id));
            }
            TableRequirement::AssertDefaultSpecId { default_spec_id: id } if *id != meta.default_spec_id => {
                return conflict(format!("default spec id is {}, expected {id}", meta.default_spec_id));
            }
            TableRequirement::AssertDefaultSortOrderId { default_sort_order_id: id }
                if *id != meta.default_sort_order_id =>
            {
                return conflict(format!("default sort order is {}, expected {id}", meta.default_sort_order_id));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies `updates` to a copy of `base` at time `now_ms`, after checking
/// `requirements`. The result satisfies [`TableMetadata::check_invariants`].
pub fn apply_commit(
    base: &TableMetadata,
    requirements: &[TableRequirement],
    updates: &[TableUpdate],
    now_ms: i64,
) -> Result<TableMetadata, IcebergError> {
    check_requirements(Some(base), requirements)?;
    let mut meta = base.clone();
    let invalid = |m: String| Err(IcebergError::Invalid(m));
    let mut last_schema = None;
    let mut last_spec = None;
    let mut last_order = None;
    for update in updates {
        match update {
            TableUpdate::AssignUuid { uuid } => {
                if *uuid != meta.table_uuid {
                    return invalid("a table's uuid cannot change".into());
                }
            }
            TableUpdate::UpgradeFormatVersion { format_version } => {
                if *format_version != crate::metadata::FORMAT_VERSION {
                    return invalid(format!("format version {format_version} is not supported (only 2)"));
                }
            }
            TableUpdate::AddSchema { schema, .. } => {
                let mut schema = schema.clone();
                let existing = meta.schemas.iter().find(|s| s.fields == schema.fields).map(|s| s.schema_id);
                if let Some(id) = existing {
                    last_schema = Some(id);
                    continue;
                }
                schema.schema_id = meta.schemas.iter().map(|s| s.schema_id).max().unwrap_or(-1) + 1;
                meta.last_column_id = meta.last_column_id.max(schema.highest_field_id());
                last_schema = Some(schema.schema_id);
                meta.schemas.push(schema);
            }
            TableUpdate::SetCurrentSchema { schema_id } => {
                let id = if *schema_id == -1 {
                    last_schema.ok_or(IcebergError::Invalid("no schema was added".into()))?
                } else {
                    *schema_id
                };
                if meta.schema(id).is_none() {
                    return invalid(format!("no schema {id}"));
                }
                meta.current_schema_id = id;
            }
            TableUpdate::AddSpec { spec } => {
                let mut spec = spec.clone();
                spec.spec_id = meta.partition_specs.iter().map(|s| s.spec_id).max().unwrap_or(-1) + 1;
                for f in &spec.fields {
                    if let Some(id) = f.get("field-id").and_then(Value::as_i64) {
                        meta.last_partition_id = meta.last_partition_id.max(id as i32);
                    }
                }
                last_spec = Some(spec.spec_id);
                meta.partition_specs.push(spec);
            }
            TableUpdate::SetDefaultSpec { spec_id } => {
                let id = if *spec_id == -1 {
                    last_spec.ok_or(IcebergError::Invalid("no spec was added".into()))?
                } else {
                    *spec_id
                };
                if !meta.partition_specs.iter().any(|s| s.spec_id == id) {
                    return invalid(format!("no partition spec {id}"));
                }
                meta.default_spec_id = id;
            }
            TableUpdate::AddSortOrder { sort_order } => {
                let mut order = sort_order.clone();
                if order.fields.is_empty() {
                    last_order = Some(0);
                    continue;
                }
                order.order_id = meta.sort_orders.iter().map(|s| s.order_id).max().unwrap_or(0) + 1;
                last_order = Some(order.order_id);
                meta.sort_orders.push(order);
            }
            TableUpdate::SetDefaultSortOrder { sort_order_id } => {
                let id = if *sort_order_id == -1 {
                    last_order.ok_or(IcebergError::Invalid("no sort order was added".into()))?
                } else {
                    *sort_order_id
                };
                if !meta.sort_orders.iter().any(|s| s.order_id == id) {
                    return invalid(format!("no sort order {id}"));
                }
                meta.default_sort_order_id = id;
            }
            TableUpdate::AddSnapshot { snapshot } => {
                // -1 stands for "no snapshot" in metadata files (current-snapshot-id).
                if snapshot.snapshot_id == -1 {
                    return invalid("snapshot id -1 is reserved (it means no snapshot)".into());
                }
                if meta.snapshot(snapshot.snapshot_id).is_some() {
                    return invalid(format!("snapshot {} already exists", snapshot.snapshot_id));
                }
                if snapshot.sequence_number <= meta.last_sequence_number && !meta.snapshots.is_empty() {
                    return Err(IcebergError::Conflict(format!(
                        "snapshot sequence number {} is not after the table's {}",
                        snapshot.sequence_number, meta.last_sequence_number
                    )));
                }
                meta.last_sequence_number = meta.last_sequence_number.max(snapshot.sequence_number);
                meta.snapshots.push(snapshot.clone());
            }
            TableUpdate::SetSnapshotRef { ref_name, reference } => {
                if meta.snapshot(reference.snapshot_id).is_none() {
                    return invalid(format!("no snapshot {}", reference.snapshot_id));
                }
                if reference.kind != "branch" && reference.kind != "tag" {
                    return invalid(format!("ref type {:?} is neither branch nor tag", reference.kind));
                }
                meta.refs.insert(ref_name.clone(), reference.clone());
                if ref_name == MAIN_BRANCH && meta.current_snapshot_id != Some(reference.snapshot_id) {
                    meta.current_snapshot_id = Some(reference.snapshot_id);
                    meta.snapshot_log
                        .push(SnapshotLogEntry { timestamp_ms: now_ms, snapshot_id: reference.snapshot_id });
                }
            }
            TableUpdate::RemoveSnapshots { snapshot_ids } => {
                meta.snapshots.retain(|s| !snapshot_ids.contains(&s.snapshot_id));
                meta.snapshot_log.retain(|e| !snapshot_ids.contains(&e.snapshot_id));
                meta.refs.retain(|_, r| !snapshot_ids.contains(&r.snapshot_id));
                if meta.current_snapshot_id.is_some_and(|id| snapshot_ids.contains(&id)) {
                    meta.current_snapshot_id = None;
                }
            }
            TableUpdate::RemoveSnapshotRef { ref_name } => {
                meta.refs.remove(ref_name);
                if ref_name == MAIN_BRANCH {
                    meta.current_snapshot_id = None;
                }
            }
            TableUpdate::SetLocation { location } => meta.location = location.clone(),
            TableUpdate::SetProperties { updates } => {
                meta.properties.extend(updates.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            TableUpdate::RemoveProperties { removals } => {
                for k in removals {
                    meta.properties.remove(k);
                }
            }
        }
    }
    meta.last_updated_ms = now_ms.max(base.last_updated_ms);
    meta.check_invariants().map_err(IcebergError::Invalid)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::NestedField;
    use serde_json::json;

    fn table() -> TableMetadata {
        let schema = Schema::new(
            0,
            vec![NestedField { id: 1, name: "id".into(), required: true, field_type: json!("string"), doc: None }],
        );
        TableMetadata::new("u-1".into(), "file:///t".into(), schema, 1000)
    }

    fn snapshot(id: i64, parent: Option<i64>, seq: i64) -> Snapshot {
        Snapshot {
            snapshot_id: id,
            parent_snapshot_id: parent,
            sequence_number: seq,
            timestamp_ms: 2000,
            manifest_list: format!("file:///t/metadata/snap-{id}.avro"),
            summary: [("operation".to_string(), "append".to_string())].into(),
            schema_id: Some(0),
        }
    }

    fn append(id: i64, parent: Option<i64>, seq: i64) -> Vec<TableUpdate> {
        vec![
            TableUpdate::AddSnapshot { snapshot: snapshot(id, parent, seq) },
            TableUpdate::SetSnapshotRef {
                ref_name: "main".into(),
                reference: SnapshotRef {
                    snapshot_id: id,
                    kind: "branch".into(),
                    min_snapshots_to_keep: None,
                    max_snapshot_age_ms: None,
                    max_ref_age_ms: None,
                },
            },
        ]
    }

    /// Found by the fuzz target `commits_are_all_or_nothing`: a snapshot
    /// with id -1 could be added and made current, and the metadata file
    /// written for it read back with no current snapshot.
    #[test]
    fn snapshot_id_minus_one_is_refused() {
        let base = table();
        let err = apply_commit(&base, &[], &append(-1, None, 1), 2000).unwrap_err();
        assert!(matches!(err, IcebergError::Invalid(_)), "{err:?}");
        let ok = apply_commit(&base, &[], &append(-2, None, 1), 2000).unwrap();
        let back: TableMetadata = serde_json::from_str(&serde_json::to_string(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
    }

    #[test]
    fn wire_shapes_match_the_rest_spec() {
        let req: TableRequirement =
            serde_json::from_value(json!({"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": null}))
                .unwrap();
        assert_eq!(req, TableRequirement::AssertRefSnapshotId { reference: "main".into(), snapshot_id: None });
        let up: TableUpdate = serde_json::from_value(
            json!({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": 5}),
        )
        .unwrap();
        assert!(matches!(up, TableUpdate::SetSnapshotRef { ref reference, .. } if reference.snapshot_id == 5));
        let props: TableUpdate =
            serde_json::from_value(json!({"action": "set-properties", "updates": {"a": "b"}})).unwrap();
        assert_eq!(serde_json::to_value(&props).unwrap()["action"], "set-properties");
    }

    #[test]
    fn a_stale_commit_conflicts_and_a_rebased_one_applies() {
        let t0 = table();
        let expect_empty = [TableRequirement::AssertRefSnapshotId { reference: "main".into(), snapshot_id: None }];
        let t1 = apply_commit(&t0, &expect_empty, &append(10, None, 1), 3000).unwrap();
        assert_eq!(t1.current_snapshot_id, Some(10));
        assert_eq!(t1.snapshot_log.len(), 1);
        // A second writer built on the empty table: conflict, nothing applied.
        let err = apply_commit(&t1, &expect_empty, &append(11, None, 1), 3001).unwrap_err();
        assert!(matches!(err, IcebergError::Conflict(_)), "{err:?}");
        // Rebased on snapshot 10, it applies.
        let rebased = [TableRequirement::AssertRefSnapshotId { reference: "main".into(), snapshot_id: Some(10) }];
        let t2 = apply_commit(&t1, &rebased, &append(11, Some(10), 2), 3002).unwrap();
        assert_eq!(t2.current_snapshot_id, Some(11));
        assert_eq!(t2.last_sequence_number, 2);
        assert_eq!(t2.snapshot_as_of(3001).unwrap().snapshot_id, 10);
    }

    #[test]
    fn schema_updates_assign_ids_and_keep_history() {
        let t0 = table();
        let mut s = t0.current_schema().clone();
        s.fields.push(NestedField { id: 2, name: "n".into(), required: false, field_type: json!("long"), doc: None });
        let t1 = apply_commit(
            &t0,
            &[TableRequirement::AssertCurrentSchemaId { current_schema_id: 0 }],
            &[
                TableUpdate::AddSchema { schema: s, last_column_id: None },
                TableUpdate::SetCurrentSchema { schema_id: -1 },
            ],
            5,
        )
        .unwrap();
        assert_eq!((t1.current_schema_id, t1.last_column_id, t1.schemas.len()), (1, 2, 2));
        let bad = apply_commit(&t1, &[], &[TableUpdate::SetCurrentSchema { schema_id: 9 }], 6);
        assert!(matches!(bad, Err(IcebergError::Invalid(_))));
    }
}
