//! Recovery jobs: re-enqueueing logged events since a time.

use events_core::Timestamp;
use events_runtime::{ObjectResult, SqlStorage};
use serde_json::Value;

use super::*;

impl Subscriptions {
    /// Advances running recovery jobs by one chunk each. Returns whether any is still running.
    pub(super) fn advance_jobs<S: SqlStorage>(&self, db: &S, now: i64) -> ObjectResult<bool> {
        let jobs = db.query("SELECT id, sub_id, since, cursor, last_seq FROM jobs WHERE status = 'running'", &[])?;
        let mut running = false;
        for j in jobs {
            let (job, sub, since, cursor, last) = (j.str(0), j.str(1), j.i64(2), j.i64(3), j.i64(4));
            let Some(route) = self.routes.iter().find(|r| r.id == sub) else {
                db.execute(
                    "UPDATE jobs SET status = 'done', finished_at = ?2 WHERE id = ?1",
                    &[job.into(), now.into()],
                )?;
                continue;
            };
            let rows = db.query(
                "SELECT seq, id, type, ts, body FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
                &[cursor.into(), last.into(), RECOVER_CHUNK.into()],
            )?;
            let (mut processed, mut requeued) = (0i64, 0i64);
            let mut upto = cursor;
            for r in &rows {
                upto = r.i64(0);
                if r.i64(3) < since {
                    continue;
                }
                processed += 1;
                if !route.pattern.matches(r.str(2)) {
                    continue;
                }
                let key = match &route.ordering_key {
                    Some(f) => {
                        let e: Value = serde_json::from_slice(r.bytes(4)).map_err(corrupt)?;
                        e.get(f).and_then(|v| match v {
                            Value::String(s) => Some(s.clone()),
                            Value::Null => None,
                            o => Some(o.to_string()),
                        })
                    }
                    None => None,
                };
                let id = format!("msg_{}", events_core::id::ulid_string(Timestamp(now), fresh_bits(upto, sub)));
                requeued += db.execute(
                    "INSERT INTO deliveries (id, sub_id, event_id, seq, order_key, status, next_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)
                     ON CONFLICT(sub_id, event_id) DO UPDATE SET
                        status = CASE WHEN shard = 0 THEN 'pending' ELSE 'forward' END, gen = gen + 1,
                        attempts = 0, next_at = ?6, created_at = ?6, dead_at = NULL, dead_reason = NULL,
                        delivered_at = NULL, latency_ms = NULL
                     WHERE status IN ('delivered', 'dead', 'forwarded')",
                    &[id.into(), sub.into(), r.str(1).into(), upto.into(), key.into(), now.into()],
                )? as i64;
            }
            let done = rows.len() < RECOVER_CHUNK as usize || upto >= last;
            db.execute(
                "UPDATE jobs SET cursor = ?2, processed = processed + ?3, requeued = requeued + ?4,
                 status = CASE WHEN ?5 THEN 'done' ELSE 'running' END,
                 finished_at = CASE WHEN ?5 THEN ?6 ELSE NULL END WHERE id = ?1",
                &[job.into(), upto.into(), processed.into(), requeued.into(), done.into(), now.into()],
            )?;
            running |= !done;
        }
        Ok(running)
    }
}
