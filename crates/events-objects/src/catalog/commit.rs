//! Committing data files to a managed table as a snapshot, and write intents.

use std::collections::{BTreeMap, BTreeSet};

use events_core::{ApiError, ErrorCode};
use events_iceberg::commit::{TableRequirement, TableUpdate, apply_commit};
use events_iceberg::manifest::{
    DataFile, ManifestEntry, ManifestFile, STATUS_ADDED, STATUS_DELETED, STATUS_EXISTING, write_manifest,
    write_manifest_list,
};
use events_iceberg::metadata::{MAIN_BRANCH, Snapshot, SnapshotRef};
use events_runtime::{BlobStore, Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

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

impl Catalog {
    /// Commits `added` and `removed` as one snapshot. `rewrite`: the added
    /// files hold exactly the rows of the removed ones (compaction), so the
    /// snapshot is a `replace` whatever the keys.
    pub(super) async fn commit_files<H: Host>(
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
    pub(super) fn intend_files<S: SqlStorage>(db: &S, table: &str, keys: &[String], now: i64) -> ObjectResult<()> {
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
}
