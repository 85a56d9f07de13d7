//! Reads of the buffer: recent unflushed events, and the writer's counters.

use events_core::pattern::Pattern;
use events_core::{Event, Timestamp};
use events_runtime::{ObjectResult, SqlStorage};

use super::storage::decode_row;
use super::{EventWriter, ReadFilter, WriterStats};
use crate::outbox::LAKE;

impl EventWriter {
    /// Unflushed events matching `filter`, newest first (by `ts`, then id).
    /// Rows are visited newest `max_ts` first and the visit stops once no
    /// remaining row can hold an event that would make the first `limit`.
    pub(super) fn read_recent<S: SqlStorage>(
        &self,
        db: &S,
        filter: &ReadFilter,
        limit: usize,
    ) -> ObjectResult<Vec<Event>> {
        let pattern = filter.pattern.as_deref().map(Pattern::parse).transpose()?;
        let from = filter.from.map_or(events_runtime::MIN_EXACT_INTEGER, |t| t.as_millis());
        let to = filter.to.map_or(events_runtime::MAX_EXACT_INTEGER, |t| t.as_millis());
        let mut rows: Vec<(i64, i64)> = db
            .query(
                "SELECT last_seq, max_ts FROM log WHERE last_seq > ?1 AND max_ts >= ?2 AND min_ts <= ?3",
                &[(self.flushed_upto as i64).into(), from.into(), to.into()],
            )?
            .iter()
            .map(|r| (r.i64(0), r.i64(1)))
            .collect();
        rows.sort_by_key(|&(seq, max_ts)| std::cmp::Reverse((max_ts, seq)));
        let newer = |event: &Event| match &filter.before {
            None => true,
            Some((ts, id)) => (event.ts, &event.id) < (*ts, id),
        };
        let mut out: Vec<Event> = Vec::new();
        for (seq, max_ts) in rows {
            if limit == 0 || (out.len() >= limit && out.last().is_some_and(|e| e.ts.as_millis() > max_ts)) {
                break;
            }
            let Some(row) = db.query_one("SELECT count, body FROM log WHERE last_seq = ?1", &[seq.into()])? else {
                continue;
            };
            out.extend(decode_row(row.bytes(1), row.i64(0) as u64)?.into_iter().filter(|e| {
                (from..=to).contains(&e.ts.as_millis())
                    && newer(e)
                    && pattern.as_ref().is_none_or(|p| p.matches(&e.event_type))
            }));
            out.sort_by(|a, b| (b.ts, &b.id).cmp(&(a.ts, &a.id)));
            out.truncate(limit);
        }
        Ok(out)
    }

    /// The writer's counters, its consumers' cursors and their last errors.
    pub(super) fn stats<S: SqlStorage>(&self, db: &S) -> ObjectResult<WriterStats> {
        let mut consumers = Vec::new();
        let mut consumer_errors: Vec<(String, String)> =
            self.lake_error.iter().map(|e| (LAKE.to_string(), e.clone())).collect();
        for r in db.query("SELECT name, cursor, last_error FROM consumers ORDER BY name", &[])?.iter() {
            consumers.push((r.str(0).to_string(), r.i64(1) as u64));
            if let Some(error) = r.opt_str(2) {
                consumer_errors.push((r.str(0).to_string(), error.to_string()));
            }
        }
        let retained = db
            .query_one(
                "SELECT COALESCE(SUM(count), 0) FROM log WHERE last_seq <= ?1",
                &[(self.flushed_upto as i64).into()],
            )?
            .map_or(0, |r| r.i64(0));
        Ok(WriterStats {
            buffered: self.buffered,
            buffered_bytes: self.buffered_bytes,
            oldest_buffered: self.oldest_received.map(Timestamp),
            retained: retained as u64,
            files_written: Self::counter(db, "files_written")?,
            events_flushed: Self::counter(db, "events_flushed")?,
            last_seq: self.last_seq,
            consumers,
            consumer_errors,
            dedup_entries: db.query_one("SELECT COUNT(*) FROM event_ids", &[])?.map_or(0, |r| r.i64(0) as u64),
        })
    }
}
