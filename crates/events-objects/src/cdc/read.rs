//! Reads from the object's state: statistics, documents at a time, history.

use events_core::Timestamp;
use events_core::cdc::ChangeOp;
use events_lake::cdc::DocState;
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;
use crate::catalog::cdc_table_name;

impl CdcProcessor {
    pub(super) fn stats<S: SqlStorage>(&self, db: &S) -> ObjectResult<CdcStats> {
        let count = |sql: &str| -> ObjectResult<i64> { Ok(db.query_one(sql, &[])?.map_or(0, |r| r.i64(0))) };
        Ok(CdcStats {
            collection: self.collection.clone(),
            documents: self.counters.live,
            deleted: self.counters.deleted,
            changes: self.counters.changes,
            pending: self.pending(),
            late: self.counters.late,
            last_change: (self.counters.changes > 0).then(|| Timestamp(self.counters.max_ts).to_iso()),
            delta_files: count("SELECT COUNT(*) FROM files WHERE kind = 'delta'")?,
            last_compaction: (self.counters.last_compaction > 0)
                .then(|| Timestamp(self.counters.last_compaction).to_iso()),
            compactions: self.counters.compactions,
            snapshots: count("SELECT COUNT(*) FROM files WHERE kind IN ('daily', 'monthly')")?,
            table: cdc_table_name(&self.collection),
            catalog_error: self.publish_error.clone(),
            history_from: self.history_from(),
        })
    }

    /// The state of one document at `at`, from its history (index range
    /// read); exact when [`CdcProcessor::history_covers`] `at`.
    pub(super) fn doc_at<S: SqlStorage>(db: &S, id: &str, at: i64) -> ObjectResult<Option<DocState>> {
        let mut state: Option<DocState> = None;
        let mut failure = None;
        db.query_each(
            &format!(
                "SELECT {HISTORY_COLUMNS} FROM doc_changes h JOIN changes c ON c.seq = h.seq
                 WHERE h.doc_id = ?1 AND h.ts <= ?2 ORDER BY h.ts, h.seq"
            ),
            &[id.into(), at.into()],
            &mut |r| match fold_history_row(state.take(), r) {
                Ok(s) => {
                    state = Some(s);
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            },
        )?;
        failure.map_or(Ok(state), Err)
    }

    /// A page of documents at `at`, streamed from the history index.
    pub(super) fn read_state<S: SqlStorage>(
        &self,
        db: &S,
        at: Option<Timestamp>,
        after: Option<String>,
        limit: usize,
        include_deleted: bool,
    ) -> ObjectResult<(Vec<DocView>, Option<String>)> {
        let limit = limit.clamp(1, MAX_READ_PAGE);
        let after = after.unwrap_or_default();
        let mut out: Vec<DocState> = Vec::new();
        let mut more = false;
        match at.map(|t| t.as_millis()) {
            // Now (or later than every change): the `docs` table is the answer.
            None => {
                db.query_each(
                    &format!(
                        "SELECT {DOC_COLUMNS} FROM docs WHERE doc_id > ?1 AND (deleted = 0 OR ?2) ORDER BY doc_id"
                    ),
                    &[after.as_str().into(), include_deleted.into()],
                    &mut |r| {
                        if out.len() == limit {
                            more = true;
                            return false;
                        }
                        out.push(doc_state_row(r));
                        true
                    },
                )?;
            }
            Some(at) => {
                let mut current: Option<DocState> = None;
                let mut failure = None;
                db.query_each(
                    &format!(
                        "SELECT {HISTORY_COLUMNS} FROM doc_changes h JOIN changes c ON c.seq = h.seq
                         WHERE h.doc_id > ?1 AND h.ts <= ?2 ORDER BY h.doc_id, h.ts, h.seq"
                    ),
                    &[after.as_str().into(), at.into()],
                    &mut |r| {
                        if current.as_ref().is_some_and(|s| s.id != r.str(0)) {
                            let done = current.take().expect("checked");
                            if include_deleted || !done.deleted {
                                out.push(done);
                            }
                            if out.len() == limit {
                                more = true;
                                return false;
                            }
                        }
                        match fold_history_row(current.take(), r) {
                            Ok(s) => {
                                current = Some(s);
                                true
                            }
                            Err(e) => {
                                failure = Some(e);
                                false
                            }
                        }
                    },
                )?;
                if let Some(e) = failure {
                    return Err(e);
                }
                if let Some(done) = current.take()
                    && !more
                    && (include_deleted || !done.deleted)
                {
                    out.push(done);
                    if out.len() > limit {
                        out.pop();
                        more = true;
                    }
                }
            }
        }
        let next = if more { out.last().map(|d| d.id.clone()) } else { None };
        Ok((out.into_iter().map(doc_view).collect::<ObjectResult<_>>()?, next))
    }

    pub(super) fn history<S: SqlStorage>(
        db: &S,
        id: &str,
        after: Option<ChangePosition>,
        limit: usize,
    ) -> ObjectResult<(Vec<HistoryEntry>, Option<ChangePosition>)> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let (ts, seq) = after.unwrap_or((events_runtime::MIN_EXACT_INTEGER, events_runtime::MIN_EXACT_INTEGER));
        let rows = db.query(
            "SELECT c.event_id, c.op, h.ts, h.seq, c.before, c.after, c.bookmark, c.merged FROM doc_changes h JOIN changes c ON c.seq = h.seq
             WHERE h.doc_id = ?1 AND (h.ts > ?2 OR (h.ts = ?2 AND h.seq > ?3)) ORDER BY h.ts, h.seq LIMIT ?4",
            &[id.into(), ts.into(), seq.into(), (limit + 1).into()],
        )?;
        let more = rows.len() > limit;
        let mut out = Vec::with_capacity(limit);
        for r in rows.iter().take(limit) {
            out.push(HistoryEntry {
                event_id: r.str(0).to_string(),
                op: ChangeOp::from_code(r.i64(1)).ok_or_else(|| corrupt("unknown op code"))?,
                ts: Timestamp(r.i64(2)).to_iso(),
                seq: r.i64(3),
                before: parse_json(r.opt_str(4))?,
                after: parse_json(r.opt_str(5))?,
                bookmark: r.opt_str(6).map(String::from),
                trimmed_before: r.i64(7) - 1,
            });
        }
        let next = if more { rows.get(limit - 1).map(|r| (r.i64(2), r.i64(3))) } else { None };
        Ok((out, next))
    }

    /// A page of documents at `at` (default: now) ([`CdcRequest::ReadState`]):
    /// from the object's state, or from the lake files at a time the trimmed
    /// history no longer covers.
    pub(super) async fn read_docs<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        at: Option<Timestamp>,
        after: Option<String>,
        limit: usize,
        include_deleted: bool,
    ) -> ObjectResult<(Vec<DocView>, Option<String>)> {
        match at.map(|t| t.as_millis()) {
            Some(at) if !self.history_covers(at) => self
                .read_files(cx, at, FileBase::Auto, (after, limit), include_deleted)
                .await
                .map_err(|e| self.trimmed_error(at, e)),
            _ => self.read_state(cx.storage(), at, after, limit, include_deleted),
        }
    }

    /// One document at `at` (default: now) ([`CdcRequest::ReadDoc`]), read
    /// like [`CdcProcessor::read_docs`].
    pub(super) async fn read_doc<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        id: &str,
        at: Option<Timestamp>,
    ) -> ObjectResult<Option<DocView>> {
        let db = cx.storage();
        let state = match at.map(|t| t.as_millis()) {
            None => db
                .query_one(&format!("SELECT {DOC_COLUMNS} FROM docs WHERE doc_id = ?1"), &[id.into()])?
                .map(|r| doc_state_row(&r)),
            Some(at) if !self.history_covers(at) => {
                self.read_file_doc(cx, at, id).await.map_err(|e| self.trimmed_error(at, e))?
            }
            Some(at) => Self::doc_at(db, id, at)?,
        };
        state.map(doc_view).transpose()
    }
}
