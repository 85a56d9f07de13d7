//! History retention: trimming old changes to each document's winning one.

use events_core::{ApiError, ErrorCode, Timestamp};
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

impl CdcProcessor {
    /// Whether the object's history answers reads at `at` exactly: nothing
    /// was trimmed, or `at` is not before the newest trimmed change.
    pub(super) fn history_covers(&self, at: i64) -> bool {
        self.counters.trimmed_seq == 0 || at >= self.counters.history_from
    }

    /// The time from which the history is complete, if some was trimmed.
    pub(super) fn history_from(&self) -> Option<String> {
        (self.counters.trimmed_seq > 0).then(|| Timestamp(self.counters.history_from).to_iso())
    }

    /// Trims the history by one step: of the changes that arrived more than
    /// [`CdcConfig::history_keep_ms`] ago and are both in delta files and
    /// folded (at most [`TRIM_BATCH`], in arrival order), each document
    /// keeps only its winning change by `(ts, seq)`, which then counts for
    /// the removed ones (`merged`). Returns the rows removed, or `None` when
    /// nothing was due.
    ///
    /// Why reads stay exact: every trimmed change has an event time at or
    /// before `history_from`, so at any time `T >= history_from` all of a
    /// document's trimmed changes are in its fold, whose winner and count
    /// the kept row preserves. Earlier times are read from the lake (delta
    /// files and snapshots keep every change until their own retention).
    fn trim<S: SqlStorage>(&mut self, db: &S, now: i64) -> ObjectResult<Option<usize>> {
        let eligible = self.counters.flushed_seq.min(self.counters.folded_seq);
        let cutoff = now - self.config.history_keep_ms;
        let lo = self.counters.trimmed_seq;
        // Arrival order is receive-time order: the due changes are a prefix,
        // read up to the first one still within the retention.
        let mut due = None;
        db.query_each(
            "SELECT seq, received_at FROM changes WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
            &[lo.into(), eligible.into(), TRIM_BATCH.into()],
            &mut |r| {
                if r.i64(1) > cutoff {
                    return false;
                }
                due = Some(r.i64(0));
                true
            },
        )?;
        let Some(hi) = due else {
            return Ok(None);
        };
        let range = [lo.into(), hi.into()];
        let newest = db
            .query_one("SELECT MAX(ts) FROM changes WHERE seq > ?1 AND seq <= ?2", &range)?
            .and_then(|r| r.opt_i64(0))
            .expect("the range holds at least one change");
        let docs: Vec<String> = db
            .query("SELECT DISTINCT doc_id FROM changes WHERE seq > ?1 AND seq <= ?2", &range)?
            .iter()
            .map(|r| r.str(0).to_string())
            .collect();
        let mut removed = 0;
        for id in docs {
            // The document's history up to `hi`: its kept row of an earlier trim, if any, and the range's changes.
            let rows: Vec<(i64, i64, i64)> = db
                .query(
                    "SELECT h.ts, h.seq, c.merged FROM doc_changes h JOIN changes c ON c.seq = h.seq
                     WHERE h.doc_id = ?1 AND h.seq <= ?2",
                    &[id.as_str().into(), hi.into()],
                )?
                .iter()
                .map(|r| (r.i64(0), r.i64(1), r.i64(2)))
                .collect();
            let &(_, winner, _) = rows
                .iter()
                .max_by_key(|r| (r.0, r.1))
                .ok_or_else(|| corrupt(format!("document {id:?} has no history for its changes")))?;
            for &(ts, seq, _) in rows.iter().filter(|r| r.1 != winner) {
                db.execute(
                    "DELETE FROM doc_changes WHERE doc_id = ?1 AND ts = ?2 AND seq = ?3",
                    &[id.as_str().into(), ts.into(), seq.into()],
                )?;
                db.execute("DELETE FROM changes WHERE seq = ?1", &[seq.into()])?;
                removed += 1;
            }
            let merged: i64 = rows.iter().map(|r| r.2).sum();
            db.execute("UPDATE changes SET merged = ?1 WHERE seq = ?2", &[merged.into(), winner.into()])?;
        }
        self.counters.history_from = if lo == 0 { newest } else { self.counters.history_from.max(newest) };
        self.counters.trimmed_seq = hi;
        self.save_counters(db)?;
        metrics::trimmed(removed);
        Ok(Some(removed))
    }

    /// Runs trim steps until nothing is due, at most [`TRIM_STEPS_PER_ALARM`]
    /// of them; returns the rows removed.
    pub(super) fn trim_due<S: SqlStorage>(&mut self, db: &S, now: i64) -> ObjectResult<usize> {
        let mut removed = 0;
        for _ in 0..TRIM_STEPS_PER_ALARM {
            match self.trim(db, now)? {
                Some(n) => removed += n,
                None => break,
            }
        }
        Ok(removed)
    }

    /// Explains a failed lake read at a time the trimmed history no longer covers.
    pub(super) fn trimmed_error(&self, at: i64, e: ApiError) -> ApiError {
        if e.code != ErrorCode::InvalidQuery {
            return e;
        }
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!(
                "the collection's history before {} is trimmed from its state, and the lake cannot rebuild {}: {}",
                Timestamp(self.counters.history_from),
                Timestamp(at),
                e.message
            ),
        )
    }

    /// Trims what the retention allows now and sets the next alarm ([`CdcRequest::TrimHistory`]).
    pub(super) async fn trim_now<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<usize> {
        let removed = self.trim_due(cx.storage(), cx.now().as_millis())?;
        self.schedule(cx).await?;
        Ok(removed)
    }
}
