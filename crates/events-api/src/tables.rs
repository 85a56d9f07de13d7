//! `GET /tables/{table}/changes`: the rows a managed table gained between
//! two snapshots, so a downstream job reads the lake incrementally (each run
//! asks for the changes after the last snapshot it consumed).
//!
//! The catalog answers which data files hold those rows
//! ([`ChangeSet`]); snapshot operations decide, as the Iceberg spec means
//! them: `append` and `overwrite` (a CDC table's new state) add their files'
//! rows, `replace` (compaction, a retried flush) and `delete` add none. The
//! host reads the rows from the files.

use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::Catalog;
use events_objects::catalog::{CatalogRequest, CatalogResponse, ChangeSet};
use events_runtime::context::Host;
use serde_json::{Value, json};

/// Parses a snapshot id parameter (`from_snapshot`, `to_snapshot`).
pub fn parse_snapshot_id(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::new(ErrorCode::InvalidQuery, format!("{name}={v:?} is not a snapshot id")))
        })
        .transpose()
}

/// The change set of `table` in `ns` after snapshot `from` (none: from the
/// table's first snapshot) up to `to` (none: the current snapshot).
pub async fn changes<H: Host>(
    host: &H,
    ns: &str,
    table: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<ChangeSet, ApiError> {
    let req = CatalogRequest::Changes { table: table.to_string(), from_snapshot: from, to_snapshot: to };
    match host.call::<Catalog>(ns, req).await? {
        CatalogResponse::Changes(set) => Ok(*set),
        _ => Err(ApiError::internal("catalog answered out of protocol")),
    }
}

/// What a change answer says besides its rows: `{table, fromSnapshotId,
/// toSnapshotId, snapshots: [{snapshotId, sequenceNumber, committedAt,
/// operation, addedFiles, addedRows}], rows}` (the rows follow, as the JSON
/// format streams them).
pub fn changes_head(table: &str, set: &ChangeSet) -> Value {
    let snapshots: Vec<Value> = set
        .snapshots
        .iter()
        .map(|s| {
            json!({
                "snapshotId": s.snapshot_id,
                "sequenceNumber": s.sequence_number,
                "committedAt": Timestamp(s.timestamp_ms).to_iso(),
                "operation": s.operation,
                "addedFiles": s.added_files,
                "addedRows": s.added_rows,
            })
        })
        .collect();
    json!({
        "table": table,
        "fromSnapshotId": set.from_snapshot_id,
        "toSnapshotId": set.to_snapshot_id,
        "snapshots": snapshots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_objects::catalog::ChangeSnapshot;

    #[test]
    fn snapshot_ids_parse_or_answer_invalid_query() {
        assert_eq!(parse_snapshot_id("from_snapshot", None).unwrap(), None);
        assert_eq!(parse_snapshot_id("from_snapshot", Some("")).unwrap(), None);
        assert_eq!(parse_snapshot_id("from_snapshot", Some("42")).unwrap(), Some(42));
        let e = parse_snapshot_id("to_snapshot", Some("latest")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::InvalidQuery, "to_snapshot=\"latest\" is not a snapshot id")
        );
    }

    #[test]
    fn the_head_names_the_range_and_each_snapshot() {
        let set = ChangeSet {
            from_snapshot_id: Some(1),
            to_snapshot_id: Some(2),
            snapshots: vec![ChangeSnapshot {
                snapshot_id: 2,
                sequence_number: 5,
                timestamp_ms: 1_800_000_000_000,
                operation: "append".into(),
                added_files: 1,
                added_rows: 3,
            }],
            schema: events_iceberg::metadata::Schema::new(0, vec![]),
            files: vec![],
        };
        assert_eq!(
            changes_head("events", &set),
            json!({"table": "events", "fromSnapshotId": 1, "toSnapshotId": 2, "snapshots": [
                {"snapshotId": 2, "sequenceNumber": 5, "committedAt": "2027-01-15T08:00:00.000Z", "operation": "append",
                 "addedFiles": 1, "addedRows": 3}
            ]})
        );
    }
}
