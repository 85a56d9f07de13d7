//! Recovery jobs: importing older events from the lake into the event log,
//! then re-enqueueing the log's events since a time.

use events_core::Timestamp;
use events_lake::layout::HOUR_MS;
use events_lake::{EVENTS_TABLE_PREFIX, decode_events, hour_prefix, parse_event_file_key};
use events_runtime::{BlobStore, Host, ObjectContext, ObjectResult, SqlStorage};
use serde_json::Value;

use super::*;

/// Times one hour is listed again when a file vanished between listing and
/// reading (a compaction replaced it) before the job gives up on that hour.
const LAKE_HOUR_ATTEMPTS: usize = 3;

impl Subscriptions {
    /// Starts a recovery job re-enqueueing the subscription's events since
    /// `since` ([`SubsRequest::Recover`]).
    pub(super) async fn start_recovery<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        id: &str,
        since: Timestamp,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        Self::require(db, id)?;
        if since.as_millis() < now - MAX_RECOVER_AGE_MS {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("since reaches back at most {} days", MAX_RECOVER_AGE_MS / 86_400_000),
            ));
        }
        let lake_next = events_lake::layout::hour_start(since).as_millis();
        let lake_end = events_lake::layout::hour_start(Timestamp(now)).as_millis() + events_lake::layout::HOUR_MS;
        let r = db
            .query_one(
                "SELECT COALESCE(MAX(seq), 0), (SELECT COUNT(*) FROM events WHERE ts >= ?1) FROM events",
                &[since.as_millis().into()],
            )?
            .expect("aggregate row");
        let job = format!("job_{}", cx.ulid());
        db.execute(
            "INSERT INTO jobs (id, sub_id, since, cursor, last_seq, total, processed, requeued, status, created_at,
                               lake_next, lake_end)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, 0, 0, 'running', ?6, ?7, ?8)",
            &[
                job.as_str().into(),
                id.into(),
                since.as_millis().into(),
                r.i64(0).into(),
                r.i64(1).into(),
                now.into(),
                lake_next.into(),
                lake_end.into(),
            ],
        )?;
        self.alarm.arm(cx.storage(), now).await?;
        Ok(SubsResponse::Job(Self::job(db, id, &job)?))
    }

    /// Advances the lake phase of running recovery jobs: imports the
    /// subscription's matching events of up to [`RECOVER_LAKE_HOURS`] hours
    /// (or [`RECOVER_CHUNK`] events read) into the event log. Returns whether a
    /// job is still in its lake phase.
    pub(super) async fn import_from_lake<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<bool> {
        let db = cx.storage();
        let jobs = db.query(
            "SELECT id, sub_id, since, lake_next, lake_end FROM jobs WHERE status = 'running' AND lake_next IS NOT NULL",
            &[],
        )?;
        if jobs.is_empty() {
            return Ok(false);
        }
        let prefix = cx.host().var("lake.events_prefix").unwrap_or_else(|| EVENTS_TABLE_PREFIX.to_string());
        let now = cx.now().as_millis();
        let mut importing = false;
        for j in jobs {
            let (job, sub, since, mut hour, end) = (j.str(0), j.str(1), j.i64(2), j.i64(3), j.i64(4));
            let Some(route) = self.routes.iter().find(|r| r.id == sub) else {
                // The subscription is gone: the log phase will close the job.
                db.execute("UPDATE jobs SET lake_next = NULL WHERE id = ?1", &[job.into()])?;
                continue;
            };
            let (mut hours, mut read, mut imported) = (0, 0i64, 0i64);
            let mut failure = None;
            while hour < end && hours < RECOVER_LAKE_HOURS && read < RECOVER_CHUNK {
                let key_prefix = hour_prefix(&prefix, &self.ns, Timestamp(hour));
                match import_hour(cx, &key_prefix, route, since, now).await {
                    Ok((r, i)) => (read, imported) = (read + r, imported + i),
                    Err(e) => {
                        failure = Some(e.message);
                        break;
                    }
                }
                hour += HOUR_MS;
                hours += 1;
            }
            if let Some(error) = failure {
                // A job that cannot read the lake stops; deliveries go on.
                db.execute(
                    "UPDATE jobs SET status = 'failed', error = ?2, finished_at = ?3, imported = imported + ?4
                     WHERE id = ?1",
                    &[job.into(), error.into(), now.into(), imported.into()],
                )?;
            } else if hour < end {
                importing = true;
                db.execute(
                    "UPDATE jobs SET lake_next = ?2, imported = imported + ?3 WHERE id = ?1",
                    &[job.into(), hour.into(), imported.into()],
                )?;
            } else {
                // The log phase now covers the imported events too.
                db.execute(
                    "UPDATE jobs SET lake_next = NULL, imported = imported + ?3,
                        last_seq = (SELECT COALESCE(MAX(seq), 0) FROM events),
                        total = (SELECT COUNT(*) FROM events WHERE ts >= ?2)
                     WHERE id = ?1",
                    &[job.into(), since.into(), imported.into()],
                )?;
            }
        }
        Ok(importing)
    }

    /// Advances running recovery jobs by one chunk each. Returns whether any is still running.
    pub(super) fn advance_jobs<S: SqlStorage>(&self, db: &S, now: i64) -> ObjectResult<bool> {
        let jobs = db.query(
            "SELECT id, sub_id, since, cursor, last_seq FROM jobs WHERE status = 'running' AND lake_next IS NULL",
            &[],
        )?;
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

/// Imports one hour folder's events with `ts >= since` that match `route`
/// into the event log (events it already holds are left as they are).
/// Returns (events read, events imported).
async fn import_hour<H: Host>(
    cx: &ObjectContext<H>,
    key_prefix: &str,
    route: &Route,
    since: i64,
    now: i64,
) -> ObjectResult<(i64, i64)> {
    let db = cx.storage();
    let blobs = cx.host().blobs();
    let (mut read, mut imported) = (0i64, 0i64);
    'listing: for _ in 0..LAKE_HOUR_ATTEMPTS {
        let mut files: Vec<String> = blobs
            .list(key_prefix)
            .await?
            .into_iter()
            .map(|m| m.key)
            .filter(|k| parse_event_file_key(k).is_some())
            .collect();
        files.sort();
        for key in files {
            let Some(bytes) = blobs.get(&key).await? else {
                // Replaced by a compaction since the listing (the merged file
                // holds its events): list again. Imports are idempotent.
                continue 'listing;
            };
            for event in decode_events(&bytes)? {
                read += 1;
                if event.ts.as_millis() < since || !route.pattern.matches(&event.event_type) {
                    continue;
                }
                imported += i64::from(routing::log_event(db, &event, now)?);
            }
        }
        return Ok((read, imported));
    }
    Err(ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("the files under {key_prefix} kept changing while a recovery read them"),
    ))
}
