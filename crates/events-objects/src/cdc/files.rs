//! Lake files: delta files, the current table (compaction), garbage and the manifest.

use events_core::ApiError;
use events_lake::cdc::{
    CdcManifest, DeltaRef, DocState, MANIFEST_FORMAT, current_keys, delta_key, encode_delta_file, encode_state_file,
    manifest_key, part_key,
};
use events_runtime::{BlobStore, Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

/// The documents of `docs` with one tombstone flag, in id order, read from
/// SQLite a page at a time: at most `left` of them, after `after`.
struct StatePages<'a, S: SqlStorage> {
    db: &'a S,
    deleted: bool,
    after: String,
    left: i64,
    page: std::vec::IntoIter<DocState>,
    rows: i64,
    /// The first id returned.
    first: Option<String>,
    failure: Option<ApiError>,
}

impl<S: SqlStorage> Iterator for StatePages<'_, S> {
    type Item = DocState;

    fn next(&mut self) -> Option<DocState> {
        loop {
            if let Some(d) = self.page.next() {
                if self.first.is_none() {
                    self.first = Some(d.id.clone());
                }
                self.after.clone_from(&d.id);
                self.rows += 1;
                return Some(d);
            }
            if self.left <= 0 || self.failure.is_some() {
                return None;
            }
            let query =
                format!("SELECT {DOC_COLUMNS} FROM docs WHERE deleted = ?1 AND doc_id > ?2 ORDER BY doc_id LIMIT ?3");
            let params = [self.deleted.into(), self.after.as_str().into(), self.left.min(STATE_PAGE_ROWS).into()];
            match self.db.query(&query, &params) {
                Ok(rows) if rows.is_empty() => self.left = 0,
                Ok(rows) => {
                    self.left -= rows.len() as i64;
                    self.page = rows.iter().map(doc_state_row).collect::<Vec<_>>().into_iter();
                }
                Err(e) => self.failure = Some(e),
            }
        }
    }
}

impl CdcProcessor {
    /// Writes pending changes to delta files: plans a range, writes it, records it.
    pub(super) async fn flush<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let db = cx.storage();
        let mut keys = Vec::new();
        while self.pending() > 0 || self.counters.plan_first > 0 {
            if self.counters.plan_first == 0 {
                self.counters.plan_first = self.counters.flushed_seq + 1;
                self.counters.plan_last =
                    (self.counters.flushed_seq + MAX_CHANGES_PER_DELTA).min(self.counters.next_seq - 1);
                self.save_counters(db)?;
            }
            let (first, last) = (self.counters.plan_first, self.counters.plan_last);
            let mut rows = change_rows(db, "seq BETWEEN ?1 AND ?2", &[first.into(), last.into()])?;
            let min_ts = rows.iter().map(|r| r.ts).min().unwrap_or(0);
            let max_ts = rows.iter().map(|r| r.ts).max().unwrap_or(0);
            let count = rows.len() as i64;
            let bytes = encode_delta_file(&mut rows)?;
            let key = delta_key(&self.ns, &self.collection, first);
            let size = bytes.len() as i64;
            cx.host().blobs().put(&key, bytes).await?;
            db.execute(
                "INSERT OR REPLACE INTO files (key, kind, first_seq, last_seq, rows, bytes, min_ts, max_ts, created_at)
                 VALUES (?1, 'delta', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    key.as_str().into(),
                    first.into(),
                    last.into(),
                    count.into(),
                    size.into(),
                    min_ts.into(),
                    max_ts.into(),
                    cx.now().as_millis().into(),
                ],
            )?;
            metrics::flushed(count, size);
            self.counters.flushed_seq = last;
            self.counters.plan_first = 0;
            self.counters.plan_last = 0;
            self.save_counters(db)?;
            keys.push(key);
        }
        self.oldest_pending = None;
        if !keys.is_empty() {
            self.write_manifest(cx).await?;
        }
        Ok(keys)
    }

    /// Whether the alarm should compact: at least
    /// [`CdcConfig::compact_min_deltas`] delta files hold changes the current
    /// table does not (files kept only for older snapshots do not count), and
    /// those changes are at least 1/[`COMPACT_MIN_SHARE_DIVISOR`] of the
    /// documents. A compaction rewrites every document, so the second rule
    /// keeps the rows written per change bounded however large the collection.
    pub(super) fn compaction_due<S: SqlStorage>(&self, db: &S) -> ObjectResult<bool> {
        let current_upto =
            db.query_one("SELECT last_seq FROM files WHERE kind = 'current'", &[])?.map_or(0, |r| r.i64(0));
        let (deltas, rows) = db
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM files WHERE kind = 'delta' AND last_seq > ?1",
                &[current_upto.into()],
            )?
            .map_or((0, 0), |r| (r.i64(0), r.i64(1)));
        let documents = self.counters.live + self.counters.deleted;
        Ok(deltas >= self.config.compact_min_deltas && rows * COMPACT_MIN_SHARE_DIVISOR >= documents)
    }

    /// Flushes, then writes the current table from `docs` and retires what it makes obsolete.
    pub(super) async fn compact<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let mut written = self.flush(cx).await?;
        let db = cx.storage();
        self.fold(db)?;
        let upto = self.counters.flushed_seq;
        let current = db.query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = 'current'"), &[])?;
        if current.as_ref().is_some_and(|c| c.i64(4) == upto) || upto == 0 {
            return Ok(written); // nothing new to fold
        }
        let (live_key, tomb_key) = current_keys(&self.ns, &self.collection, upto);
        let (live_rows, live_size) = self.write_state(cx, &live_key, &live_key, false, upto).await?;
        let (tomb_rows, tomb_size) = self.write_state(cx, &live_key, &tomb_key, true, upto).await?;
        let size = live_size + tomb_size;
        if self.config.failpoint.as_deref() == Some("compact-after-write") {
            // Test hook: a crash after the new table is written, before it is recorded.
            std::process::abort();
        }
        if let Some(old) = current {
            let old = state_ref_row(&old);
            // A live file the catalog holds is the catalog's to delete (by
            // snapshot expiry, once no retained snapshot reads it); one it
            // never got is ours.
            let cataloged = self.cataloged_keys(db)?;
            for part in state_parts(db, &old)? {
                if part.tombstones || !cataloged.contains(&part.key) {
                    db.execute("INSERT OR IGNORE INTO garbage (key) VALUES (?1)", &[part.key.into()])?;
                }
            }
            db.execute("DELETE FROM files WHERE key = ?1", &[old.key.as_str().into()])?;
            db.execute("DELETE FROM state_parts WHERE base_key = ?1", &[old.key.into()])?;
        }
        let now = cx.now().as_millis();
        db.execute(
            "INSERT OR REPLACE INTO files (key, kind, tombstones_key, first_seq, last_seq, rows, tombstones, bytes, min_ts, max_ts, created_at)
             VALUES (?1, 'current', ?2, 1, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
            &[
                live_key.as_str().into(),
                tomb_key.into(),
                upto.into(),
                live_rows.into(),
                tomb_rows.into(),
                size.into(),
                self.counters.max_ts.into(),
                now.into(),
            ],
        )?;
        self.retire_deltas(db)?;
        self.counters.compactions += 1;
        self.counters.last_compaction = now;
        self.save_counters(db)?;
        self.write_manifest(cx).await?;
        metrics::compaction();
        written.push(live_key);
        self.publish_current(cx).await;
        Ok(written)
    }

    /// Moves to `garbage` every delta file folded into the current table and
    /// into the oldest retained snapshot (so every retained base keeps the
    /// deltas that follow it).
    pub(super) fn retire_deltas<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        let horizon = db
            .query_one("SELECT MIN(last_seq) FROM files WHERE kind IN ('current', 'daily', 'monthly')", &[])?
            .and_then(|r| r.opt_i64(0))
            .unwrap_or(0);
        db.execute(
            "INSERT OR IGNORE INTO garbage (key) SELECT key FROM files WHERE kind = 'delta' AND last_seq <= ?1",
            &[horizon.into()],
        )?;
        db.execute("DELETE FROM files WHERE kind = 'delta' AND last_seq <= ?1", &[horizon.into()])?;
        Ok(())
    }

    /// Writes the live documents (or the tombstones) of `docs` as state
    /// files of at most [`CdcConfig::state_file_rows`] rows in id order: the
    /// first at `first_key`, the next at its [`part_key`]s. Each file is
    /// encoded from pages of SQLite rows and put before the next is begun,
    /// so memory holds one file, whatever the collection's size. Records the
    /// files in `state_parts` under `base_key`; returns (rows, bytes).
    async fn write_state<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        base_key: &str,
        first_key: &str,
        deleted: bool,
        upto: i64,
    ) -> ObjectResult<(i64, i64)> {
        let db = cx.storage();
        db.execute(
            "DELETE FROM state_parts WHERE base_key = ?1 AND tombstones = ?2",
            &[base_key.into(), deleted.into()],
        )?;
        let (mut rows, mut bytes) = (0, 0);
        let mut after = String::new(); // below every id (ids are never empty)
        for part in 0u32.. {
            let mut pages = StatePages {
                db,
                deleted,
                after: after.clone(),
                left: self.config.state_file_rows,
                page: Vec::new().into_iter(),
                rows: 0,
                first: None,
                failure: None,
            };
            let file = encode_state_file(&mut pages, upto)?;
            if let Some(e) = pages.failure {
                return Err(e);
            }
            if pages.rows == 0 && part > 0 {
                break; // the previous part ended exactly at the bound
            }
            let key = part_key(first_key, part);
            let size = file.len() as i64;
            cx.host().blobs().put(&key, file).await?;
            db.execute(
                "INSERT OR REPLACE INTO state_parts (base_key, tombstones, part, key, rows, bytes, first_id, last_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                &[
                    base_key.into(),
                    deleted.into(),
                    part.into(),
                    key.into(),
                    pages.rows.into(),
                    size.into(),
                    pages.first.clone().into(),
                    pages.first.is_some().then(|| pages.after.clone()).into(),
                ],
            )?;
            rows += pages.rows;
            bytes += size;
            if pages.rows < self.config.state_file_rows {
                break;
            }
            after = pages.after;
        }
        Ok((rows, bytes))
    }

    /// Deletes garbage files (each already unreferenced by a committed state).
    pub(super) async fn collect_garbage<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let keys = db.query("SELECT key FROM garbage LIMIT ?1", &[GC_BATCH.into()])?;
        for r in keys {
            cx.host().blobs().delete(r.str(0)).await?;
            db.execute("DELETE FROM garbage WHERE key = ?1", &[r.str(0).into()])?;
        }
        Ok(())
    }

    pub(super) fn manifest<S: SqlStorage>(&self, db: &S, now: i64) -> ObjectResult<CdcManifest> {
        let deltas = db
            .query(
                "SELECT key, first_seq, last_seq, rows, bytes, min_ts, max_ts FROM files WHERE kind = 'delta' ORDER BY first_seq",
                &[],
            )?
            .iter()
            .map(|r| DeltaRef {
                key: r.str(0).to_string(),
                first_seq: r.i64(1),
                last_seq: r.i64(2),
                rows: r.i64(3),
                bytes: r.i64(4),
                min_ts: r.i64(5),
                max_ts: r.i64(6),
            })
            .collect();
        let current = db
            .query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = 'current'"), &[])?
            .map(|r| state_ref(db, &r))
            .transpose()?;
        let snapshots = db
            .query(
                &format!(
                    "SELECT {STATE_REF_COLUMNS} FROM files WHERE kind IN ('daily', 'monthly') ORDER BY last_seq, kind"
                ),
                &[],
            )?
            .iter()
            .map(|r| state_ref(db, r))
            .collect::<ObjectResult<_>>()?;
        Ok(CdcManifest {
            format: MANIFEST_FORMAT.to_string(),
            namespace: self.ns.clone(),
            collection: self.collection.clone(),
            flushed_seq: self.counters.flushed_seq,
            deltas,
            current,
            snapshots,
            updated_at: now,
        })
    }

    pub(super) async fn write_manifest<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let manifest = self.manifest(cx.storage(), cx.now().as_millis())?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(corrupt)?;
        cx.host().blobs().put(&manifest_key(&self.ns, &self.collection), json).await
    }

    /// Compacts now and sets the next alarm ([`CdcRequest::Compact`]).
    pub(super) async fn compact_now<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let files = self.compact(cx).await?;
        self.schedule(cx).await?;
        Ok(files)
    }
}
