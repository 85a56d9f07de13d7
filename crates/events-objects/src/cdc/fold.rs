//! Appending changes, folding them into the documents' state, and the alarm's schedule.

use events_core::cdc::{Change, ChangeOp};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_runtime::context::ObjectStorage;
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

/// The unfolded tail's winner per document (its greatest `(ts, seq)`) and
/// how many changes the document has in the tail, in document order; `?1`
/// and `?2` bound the tail's `seq`. Used as `WITH tail_winners AS (...)`.
const FOLD_TAIL_WINNERS: &str = "SELECT doc_id, seq, n FROM (
    SELECT doc_id, seq, ROW_NUMBER() OVER (PARTITION BY doc_id ORDER BY ts DESC, seq DESC) AS rank,
           COUNT(*) OVER (PARTITION BY doc_id) AS n
    FROM changes WHERE seq > ?1 AND seq <= ?2
) WHERE rank = 1";

/// A fold statement over [`FOLD_TAIL_WINNERS`].
fn fold_sql(statement: &str) -> String {
    format!("WITH tail_winners AS ({FOLD_TAIL_WINNERS}) {statement}")
}

/// The tail's late changes: those whose document already had a later event
/// time, in its state or in an earlier arrival of the tail.
const FOLD_LATE_SQL: &str = "SELECT COUNT(*) FROM (
    SELECT doc_id, ts,
           MAX(ts) OVER (PARTITION BY doc_id ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev
    FROM changes WHERE seq > ?1 AND seq <= ?2
) t LEFT JOIN docs d ON d.doc_id = t.doc_id
WHERE t.ts < COALESCE(MAX(t.prev, d.ts), t.prev, d.ts)";

/// The fold's change to the live and tombstone counts: per touched
/// document, the state after (the tail's winner if it beats the stored
/// state) against the state before.
const FOLD_TRANSITIONS_SELECT: &str = "SELECT
    COALESCE(SUM((1 - gone) - (CASE WHEN had THEN 1 - was ELSE 0 END)), 0),
    COALESCE(SUM(gone - COALESCE(was, 0)), 0)
FROM (
    SELECT d.doc_id IS NOT NULL AS had, d.deleted AS was,
           CASE WHEN d.doc_id IS NULL OR (c.ts, c.seq) >= (d.ts, d.seq) THEN c.op = 2 ELSE d.deleted END AS gone
    FROM tail_winners w JOIN changes c ON c.seq = w.seq LEFT JOIN docs d ON d.doc_id = w.doc_id
)";

/// Writes each touched document's state: the tail's winner where it beats
/// the stored state by `(ts, seq)`, and the version counting every change.
/// (Op code 2 is a delete: a tombstone keeps the delete's `before`.)
const FOLD_UPSERT: &str = "INSERT INTO docs (doc_id, data, version, deleted, ts, seq, bookmark)
SELECT c.doc_id, CASE WHEN c.op = 2 THEN c.before ELSE c.after END, w.n, c.op = 2, c.ts, c.seq, c.bookmark
FROM tail_winners w JOIN changes c ON c.seq = w.seq WHERE true
ON CONFLICT (doc_id) DO UPDATE SET
    version = docs.version + excluded.version,
    data = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.data ELSE docs.data END,
    deleted = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.deleted ELSE docs.deleted END,
    bookmark = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.bookmark ELSE docs.bookmark END,
    ts = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.ts ELSE docs.ts END,
    seq = CASE WHEN (excluded.ts, excluded.seq) >= (docs.ts, docs.seq) THEN excluded.seq ELSE docs.seq END";

impl CdcProcessor {
    /// Appends changes in arrival order (one transaction with the request):
    /// per change one row of `changes` (and its `event_id` index entry, which
    /// skips a redelivered change). Folding them into `docs` waits for a
    /// sorted batch (see [`CdcProcessor::fold`]); the apply that brings the
    /// unfolded tail to [`CdcConfig::fold_max_changes`] runs it.
    pub(super) async fn apply<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        changes: Vec<Change>,
    ) -> ObjectResult<Applied> {
        if changes.len() > MAX_CHANGES_PER_APPLY {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("at most {MAX_CHANGES_PER_APPLY} changes per apply, not {}", changes.len()),
            ));
        }
        let db = cx.storage();
        let now = cx.now().as_millis();
        let mut result = Applied { applied: 0, duplicates: 0, late: 0 };
        for c in changes {
            assert_eq!(c.collection, self.collection, "changes reach only their collection's processor");
            let seq = self.counters.next_seq;
            let fresh = db.execute(
                "INSERT INTO changes (seq, event_id, doc_id, op, ts, before, after, bookmark, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(event_id) DO NOTHING",
                &[
                    seq.into(),
                    c.event_id.into(),
                    c.doc_id.into(),
                    c.op.code().into(),
                    c.ts.as_millis().into(),
                    c.before.as_ref().map(|v| v.to_string()).into(),
                    c.after.as_ref().map(|v| v.to_string()).into(),
                    c.bookmark.into(),
                    now.into(),
                ],
            )?;
            if fresh == 0 {
                result.duplicates += 1;
                continue;
            }
            self.counters.next_seq += 1;
            self.counters.changes += 1;
            self.counters.max_ts = self.counters.max_ts.max(c.ts.as_millis());
            self.oldest_pending.get_or_insert(now);
            self.oldest_unfolded.get_or_insert(now);
            result.applied += 1;
        }
        if self.unfolded() >= self.config.fold_max_changes {
            result.late = self.fold(db)?;
        }
        if result.applied > 0 && self.counters.registered == 0 {
            cx.stub::<CdcCollections>(self.ns.clone())
                .call(CollectionsRequest::Register { collection: self.collection.clone() })
                .await?;
            self.counters.registered = 1;
        }
        self.save_counters(db)?;
        self.schedule(cx).await?;
        metrics::applied(&result);
        Ok(result)
    }

    /// Folds the unfolded tail (`seq > folded_seq`) into `docs` and the
    /// history index `doc_changes`, set-based: SQLite sorts the tail's keys
    /// by document (a window over at most [`MAX_FOLD_CHANGES`] changes plus
    /// one batch), and each statement then visits the pages of `docs` and
    /// `doc_changes` in key order, each once per fold. Returns the late
    /// changes found: a change is late when an earlier arrival of its
    /// document has a later event time (the rule of
    /// [`DocState::fold`](events_lake::cdc::DocState::fold)).
    pub(super) fn fold<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<usize> {
        let last = self.counters.next_seq - 1;
        if self.counters.folded_seq >= last {
            self.oldest_unfolded = None;
            return Ok(0);
        }
        assert_eq!(ChangeOp::Delete.code(), 2, "the fold's SQL names deletes by their code");
        let range = [self.counters.folded_seq.into(), last.into()];
        // Read before the state changes: late changes and tombstone transitions.
        let late = db.query_one(FOLD_LATE_SQL, &range)?.map_or(0, |r| r.i64(0));
        let (live, deleted) =
            db.query_one(&fold_sql(FOLD_TRANSITIONS_SELECT), &range)?.map_or((0, 0), |r| (r.i64(0), r.i64(1)));
        db.execute(
            "INSERT INTO doc_changes (doc_id, ts, seq)
             SELECT doc_id, ts, seq FROM changes WHERE seq > ?1 AND seq <= ?2 ORDER BY doc_id, ts, seq",
            &range,
        )?;
        db.execute(&fold_sql(FOLD_UPSERT), &range)?;
        self.counters.live += live;
        self.counters.deleted += deleted;
        assert!(self.counters.live >= 0 && self.counters.deleted >= 0, "document counts stay non-negative");
        self.counters.folded_seq = last;
        self.counters.late += late;
        self.oldest_unfolded = None;
        self.save_counters(db)?;
        metrics::late(late as usize);
        Ok(late as usize)
    }

    /// Sets the alarm for the next flush or snapshot.
    pub(super) async fn schedule<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let now = cx.now().as_millis();
        let mut next: Option<i64> = None;
        let mut consider = |at: i64| next = Some(next.map_or(at, |n: i64| n.min(at)));
        if self.pending() >= self.config.flush_max_changes {
            consider(now);
        } else if let Some(oldest) = self.oldest_pending {
            consider(oldest + self.config.flush_max_age_ms);
        }
        if let Some(oldest) = self.oldest_unfolded {
            // The unfolded tail is folded as old as a pending change is flushed.
            consider(oldest + self.config.flush_max_age_ms);
        }
        let db = cx.storage();
        if db.query_one("SELECT 1 FROM garbage LIMIT 1", &[])?.is_some() {
            consider(now);
        }
        // The next trim: when the oldest untrimmed change leaves the
        // retention, once it is in a delta file and folded (the flush and
        // fold scheduled above come first).
        let eligible = self.counters.flushed_seq.min(self.counters.folded_seq);
        if let Some(oldest) = db.query_one(
            "SELECT seq, received_at FROM changes WHERE seq > ?1 ORDER BY seq LIMIT 1",
            &[self.counters.trimmed_seq.into()],
        )? && oldest.i64(0) <= eligible
        {
            consider(oldest.i64(1) + self.config.history_keep_ms);
        }
        if self.publish_error.is_some() {
            consider(now + PUBLISH_RETRY_MS);
        }
        if self.counters.changes > 0 {
            // The next UTC midnight: the daily (and monthly) snapshot check.
            consider(now - now.rem_euclid(DAY_MS) + DAY_MS);
        }
        if let Some(at) = next {
            let current = cx.storage().get_alarm().await?.map(|t| t.as_millis());
            if current.is_none_or(|c| at < c || c < now) {
                cx.storage().set_alarm(Timestamp(at.max(now))).await?;
            }
        }
        Ok(())
    }
}
