//! Maintenance of managed tables: compaction, snapshot expiry, orphan cleanup.

use std::collections::{BTreeMap, BTreeSet};

use events_core::{ApiError, ErrorCode};
use events_iceberg::commit::{TableUpdate, apply_commit};
use events_iceberg::manifest::ManifestFile;
use events_iceberg::metadata::Snapshot;
use events_runtime::{BlobStore, Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

impl Catalog {
    /// Runs maintenance on one managed table or on all of them ([`CatalogRequest::Maintain`]).
    pub(super) async fn maintain_tables<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        table: Option<String>,
        options: &MaintainOptions,
    ) -> ObjectResult<Vec<MaintainReport>> {
        let db = cx.storage();
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
            reports.push(self.maintain(cx, &t, options).await?);
        }
        Ok(reports)
    }

    pub(super) async fn maintain<H: Host>(
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
}
