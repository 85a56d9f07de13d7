//! Reads of a managed table's files: a snapshot's scan, the changes between snapshots.

use events_core::{ApiError, ErrorCode};
use events_runtime::{ObjectResult, SqlStorage};

use super::*;

impl Catalog {
    pub(super) fn scan<S: SqlStorage>(
        db: &S,
        table: &str,
        snapshot_id: Option<i64>,
        as_of_ms: Option<i64>,
    ) -> ObjectResult<Scan> {
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

    pub(super) fn changes<S: SqlStorage>(
        db: &S,
        table: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> ObjectResult<ChangeSet> {
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
}
