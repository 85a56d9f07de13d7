//! Daily and monthly snapshots of the current table.

use events_core::{ApiError, ErrorCode};
use events_lake::cdc::{part_key, snapshot_keys};
use events_runtime::{BlobStore, Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

impl CdcProcessor {
    /// Takes a snapshot of `kind` unless nothing changed since the last one.
    pub(super) async fn snapshot<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        kind: SnapshotKind,
        label: String,
    ) -> ObjectResult<Option<String>> {
        let db = cx.storage();
        let last = db
            .query_one("SELECT MAX(last_seq) FROM files WHERE kind = ?1", &[kind.as_str().into()])?
            .and_then(|r| r.opt_i64(0))
            .unwrap_or(0);
        if self.counters.next_seq - 1 <= last || self.counters.changes == 0 {
            metrics::snapshot(kind.as_str(), "skipped");
            return Ok(None);
        }
        self.compact(cx).await?;
        let db = cx.storage();
        let current = state_ref_row(
            &db.query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = 'current'"), &[])?
                .ok_or_else(|| ApiError::internal("compaction left no current table"))?,
        );
        let now = cx.now();
        let (key, tomb_key) = snapshot_keys(&self.ns, &self.collection, kind.as_str(), &label);
        // A snapshot of the same label (taken earlier today) is replaced:
        // its files are overwritten, and those beyond the new parts retired.
        let replaced =
            db.query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE key = ?1"), &[key.as_str().into()])?;
        let replaced = match replaced {
            Some(r) => state_parts(db, &state_ref_row(&r))?,
            None => Vec::new(),
        };
        db.execute("DELETE FROM state_parts WHERE base_key = ?1", &[key.as_str().into()])?;
        // One file at a time: memory holds one state file.
        let mut written = Vec::new();
        for part in state_parts(db, &current)? {
            let to = part_key(if part.tombstones { &tomb_key } else { &key }, part.part);
            let bytes = cx.host().blobs().get(&part.key).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::StorageError, format!("current table file {} is missing", part.key))
            })?;
            let size = bytes.len() as i64;
            cx.host().blobs().put(&to, bytes).await?;
            db.execute(
                "INSERT INTO state_parts (base_key, tombstones, part, key, rows, bytes, first_id, last_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    key.as_str().into(),
                    part.tombstones.into(),
                    part.part.into(),
                    to.as_str().into(),
                    part.rows.into(),
                    size.into(),
                    part.ids.as_ref().map(|i| i.0.clone()).into(),
                    part.ids.as_ref().map(|i| i.1.clone()).into(),
                ],
            )?;
            written.push(to);
        }
        for part in replaced.into_iter().filter(|p| !written.contains(&p.key)) {
            db.execute("INSERT OR IGNORE INTO garbage (key) VALUES (?1)", &[part.key.into()])?;
        }
        db.execute("DELETE FROM files WHERE key = ?1", &[key.as_str().into()])?;
        db.execute(
            "INSERT INTO files (key, kind, label, tombstones_key, first_seq, last_seq, rows, tombstones, bytes, min_ts, max_ts, created_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
            &[
                key.as_str().into(),
                kind.as_str().into(),
                label.into(),
                tomb_key.into(),
                current.upto_seq.into(),
                current.rows.into(),
                current.tombstones.into(),
                current.bytes.into(),
                current.max_ts.into(),
                now.as_millis().into(),
            ],
        )?;
        // Retention: keep the newest N of this kind.
        let keep = match kind {
            SnapshotKind::Daily => self.config.keep_daily,
            SnapshotKind::Monthly => self.config.keep_monthly,
        };
        let old = db.query(
            &format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = ?1 ORDER BY last_seq DESC LIMIT -1 OFFSET ?2"),
            &[kind.as_str().into(), keep.into()],
        )?;
        for r in old {
            let old = state_ref_row(&r);
            for part in state_parts(db, &old)? {
                db.execute("INSERT OR IGNORE INTO garbage (key) VALUES (?1)", &[part.key.into()])?;
            }
            db.execute("DELETE FROM files WHERE key = ?1", &[old.key.as_str().into()])?;
            db.execute("DELETE FROM state_parts WHERE base_key = ?1", &[old.key.into()])?;
        }
        self.retire_deltas(db)?;
        self.write_manifest(cx).await?;
        metrics::snapshot(kind.as_str(), "taken");
        Ok(Some(key))
    }

    /// Takes a snapshot of `kind` labelled with the current period and sets
    /// the next alarm ([`CdcRequest::Snapshot`]).
    pub(super) async fn snapshot_now<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        kind: SnapshotKind,
    ) -> ObjectResult<Option<String>> {
        let key = self.snapshot(cx, kind, kind.label(cx.now())).await?;
        self.schedule(cx).await?;
        Ok(key)
    }
}
