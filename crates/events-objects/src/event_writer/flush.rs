//! Flush plans and the flush watermark (the protocol is in the module docs
//! of [`crate::event_writer`]), and the hours due for compaction.

use events_core::{ApiError, ErrorCode};
use events_runtime::{ObjectResult, SqlStorage};

use super::{EventWriter, MAX_ROWS_PER_FLUSH, WriterResponse};
use crate::outbox::{FlushPlan, LAKE, MAX_OUTBOX_READ};

impl EventWriter {
    pub(super) fn needs_flush(&self, now: i64) -> bool {
        self.buffered >= self.config.max_events
            || self.buffered_bytes >= self.config.max_bytes
            || self.oldest_received.is_some_and(|t| now - t >= self.config.max_age_ms)
    }

    /// The open flush plan, if any.
    pub(super) fn open_plan<S: SqlStorage>(db: &S) -> ObjectResult<Option<FlushPlan>> {
        Ok(db
            .query_one("SELECT first_seq, last_seq FROM flush_plan", &[])?
            .map(|r| FlushPlan { first: r.i64(0) as u64, last: r.i64(1) as u64 }))
    }

    /// Writes a flush plan for the oldest unflushed rows (whole rows, about
    /// [`MAX_ROWS_PER_FLUSH`] events), if none exists.
    pub(super) fn plan_flush<S: SqlStorage>(&self, db: &S) -> ObjectResult<Option<FlushPlan>> {
        if let Some(plan) = Self::open_plan(db)? {
            return Ok(Some(plan));
        }
        let (mut first, mut last, mut events) = (None, 0, 0);
        db.query_each(
            "SELECT last_seq, count FROM log WHERE last_seq > ?1 ORDER BY last_seq",
            &[(self.flushed_upto as i64).into()],
            &mut |r| {
                let (row_last, count) = (r.i64(0), r.i64(1));
                first.get_or_insert(row_last - count + 1);
                last = row_last;
                events += count;
                events < MAX_ROWS_PER_FLUSH
            },
        )?;
        let Some(first) = first else { return Ok(None) };
        assert!(first as u64 > self.flushed_upto, "a plan starts after the flushed rows");
        db.execute(
            "INSERT INTO flush_plan (id, first_seq, last_seq) VALUES (1, ?1, ?2)",
            &[first.into(), last.into()],
        )?;
        Ok(Some(FlushPlan { first: first as u64, last: last as u64 }))
    }

    /// Moves the flush watermark past a committed plan; a report of a plan
    /// that is no longer open (a retry that already got through) changes nothing.
    pub(super) fn complete_flush<S: SqlStorage>(
        &mut self,
        db: &S,
        plan: FlushPlan,
        files: u64,
        events: u64,
        hours: &[(String, i64)],
    ) -> ObjectResult<()> {
        if Self::open_plan(db)? != Some(plan) {
            return Ok(());
        }
        assert!(plan.last >= self.flushed_upto, "flushes go forward");
        self.flushed_upto = plan.last;
        Self::set_counter(db, "flushed_upto", plan.last)?;
        db.execute("DELETE FROM flush_plan", &[])?;
        for (prefix, hour) in hours {
            db.execute(
                "INSERT INTO dirty_hours (prefix, hour) VALUES (?1, ?2) ON CONFLICT(prefix) DO NOTHING",
                &[prefix.as_str().into(), (*hour).into()],
            )?;
        }
        Self::bump(db, "files_written", files)?;
        Self::bump(db, "events_flushed", events)?;
        self.trim(db)?;
        self.refresh(db)
    }

    /// Deletes flushed rows every consumer has acknowledged.
    pub(super) fn trim<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        db.execute(
            "DELETE FROM log WHERE last_seq <= MIN(?1, (SELECT COALESCE(MIN(cursor), 9223372036854775807) FROM consumers))",
            &[(self.flushed_upto as i64).into()],
        )?;
        Ok(())
    }

    /// The open plan, or a new one when a flush is due (with `force`: when
    /// anything is unflushed). No plan: the lake relay goes idle.
    pub(super) fn take_flush<S: SqlStorage>(
        &mut self,
        db: &S,
        now: i64,
        force: bool,
    ) -> ObjectResult<Option<FlushPlan>> {
        let plan = match Self::open_plan(db)? {
            Some(plan) => Some(plan),
            None if force || self.needs_flush(now) => self.plan_flush(db)?,
            None => None,
        };
        if plan.is_none() {
            self.awake.remove(LAKE);
        }
        Ok(plan)
    }

    /// A page of the open plan's rows after `after`.
    pub(super) fn read_flush<S: SqlStorage>(
        &self,
        db: &S,
        plan: FlushPlan,
        after: u64,
        limit: usize,
    ) -> ObjectResult<WriterResponse> {
        if Self::open_plan(db)? != Some(plan) {
            return Err(ApiError::new(ErrorCode::Conflict, format!("flush plan {plan:?} is not open")));
        }
        let after = after.max(self.flushed_upto);
        let rows = Self::read_rows(db, after, plan.last, limit.min(MAX_OUTBOX_READ))?;
        Ok(WriterResponse::Rows { after, rows })
    }

    /// A flush was committed: the watermark moves and the lake error clears.
    pub(super) fn flush_committed<S: SqlStorage>(
        &mut self,
        db: &S,
        plan: FlushPlan,
        files: u64,
        events: u64,
        hours: &[(String, i64)],
    ) -> ObjectResult<()> {
        self.complete_flush(db, plan, files, events, hours)?;
        self.lake_error = None;
        self.report_backlog();
        Ok(())
    }

    /// Hour folders whose hour ended at or before `closed` and that got files since their last compaction.
    pub(super) fn due_compactions<S: SqlStorage>(db: &S, closed: i64) -> ObjectResult<Vec<String>> {
        let rows = db.query("SELECT prefix FROM dirty_hours WHERE hour <= ?1 ORDER BY hour", &[closed.into()])?;
        Ok(rows.iter().map(|r| r.str(0).to_string()).collect())
    }

    /// The hour folder `prefix` was compacted.
    pub(super) fn compacted<S: SqlStorage>(db: &S, prefix: String) -> ObjectResult<()> {
        db.execute("DELETE FROM dirty_hours WHERE prefix = ?1", &[prefix.into()])?;
        Ok(())
    }
}
