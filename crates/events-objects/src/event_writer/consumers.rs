//! The writer's side of the outbox: consumer cursors and registration,
//! reads and acknowledgements, the backlog and its gauges, failures kept
//! for `Stats`, and waking the relays without waiting for them.

use events_core::{ApiError, ErrorCode};
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};

use super::{EventWriter, MAX_CONSUMER_NAME_LEN, MAX_ERROR_CHARS, WriterResponse};
use crate::OutboxRelay;
use crate::outbox::{LAKE, MAX_OUTBOX_READ, RELAYED};
use crate::outbox_relay::{RelayRequest, relay_name};

impl EventWriter {
    /// Events not yet taken by `consumer` ([`LAKE`]: not yet flushed).
    pub(super) fn backlog(&self, consumer: &str) -> u64 {
        if consumer == LAKE {
            return self.buffered;
        }
        self.cursors.get(consumer).map_or(0, |cursor| self.last_seq.saturating_sub(*cursor))
    }

    /// Wakes `consumer`'s relay unless it is known to be awake (`force`: anyway).
    /// Never waits: the relay may be busy with a slow consumer.
    pub(super) fn wake<H: Host>(&mut self, cx: &ObjectContext<H>, consumer: &'static str, force: bool) {
        if self.awake.insert(consumer) || force {
            cx.stub::<OutboxRelay>(relay_name(cx.name(), consumer)).notify(RelayRequest::Wake);
        }
    }

    /// Moves the `events_outbox_backlog` gauges to this writer's backlog.
    pub(super) fn report_backlog(&mut self) {
        for &consumer in RELAYED {
            let now = self.backlog(consumer);
            let before = self.reported.insert(consumer, now).unwrap_or(0);
            if now != before {
                metrics::gauge!("events_outbox_backlog", "consumer" => consumer).increment(now as f64 - before as f64);
            }
        }
    }

    /// Registers the consumer `name` (no-op if it exists), its cursor at the
    /// oldest retained event (`from_start`) or at the next new one.
    pub(super) fn register_consumer<S: SqlStorage>(
        &self,
        db: &S,
        name: String,
        from_start: bool,
        now: i64,
    ) -> ObjectResult<()> {
        if name.is_empty() || name.len() > MAX_CONSUMER_NAME_LEN {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "consumer names are 1-128 characters"));
        }
        let start = if from_start {
            db.query_one("SELECT COALESCE(MIN(last_seq - count), ?1) FROM log", &[(self.last_seq as i64).into()])?
                .map_or(0, |r| r.i64(0))
        } else {
            self.last_seq as i64
        };
        db.execute(
            "INSERT INTO consumers (name, cursor, registered_at) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO NOTHING",
            &[name.into(), start.into(), now.into()],
        )?;
        Ok(())
    }

    /// The rows after `consumer`'s cursor; none left: its relay goes idle.
    pub(super) fn read_outbox<S: SqlStorage>(
        &mut self,
        db: &S,
        consumer: String,
        limit: usize,
    ) -> ObjectResult<WriterResponse> {
        let cursor = db
            .query_one("SELECT cursor FROM consumers WHERE name = ?1", &[consumer.as_str().into()])?
            .ok_or_else(|| ApiError::not_found(format!("no outbox consumer {consumer}")))?
            .i64(0);
        let after = cursor as u64;
        let rows = Self::read_rows(db, after, events_runtime::MAX_EXACT_INTEGER as u64, limit.min(MAX_OUTBOX_READ))?;
        if rows.is_empty() {
            // The relay goes idle now; the next append wakes it.
            self.awake.retain(|c| *c != consumer);
        }
        Ok(WriterResponse::Rows { after, rows })
    }

    /// Moves `consumer`'s cursor to `upto` (never back) and trims the rows
    /// every consumer passed.
    pub(super) fn ack_outbox<S: SqlStorage>(&mut self, db: &S, consumer: String, upto: u64) -> ObjectResult<()> {
        let changed = db.execute(
            "UPDATE consumers SET cursor = MAX(cursor, ?2), last_error = NULL WHERE name = ?1",
            &[consumer.as_str().into(), (upto as i64).into()],
        )?;
        if changed == 0 {
            return Err(ApiError::not_found(format!("no outbox consumer {consumer}")));
        }
        if let Some(cursor) = self.cursors.iter_mut().find(|(name, _)| **name == consumer).map(|(_, c)| c) {
            *cursor = (*cursor).max(upto);
        }
        self.trim(db)?;
        self.report_backlog();
        Ok(())
    }

    /// The log rows after a reader's own position, and the highest sequence number.
    pub(super) fn read_log<S: SqlStorage>(&self, db: &S, after: u64, limit: usize) -> ObjectResult<WriterResponse> {
        let rows = Self::read_rows(db, after, self.last_seq, limit.min(MAX_OUTBOX_READ))?;
        Ok(WriterResponse::Log { last_seq: self.last_seq, rows })
    }

    /// Keeps `consumer`'s error (cut to [`MAX_ERROR_CHARS`]) for `Stats`.
    pub(super) fn consumer_failed<S: SqlStorage>(
        &mut self,
        db: &S,
        consumer: String,
        error: String,
    ) -> ObjectResult<()> {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        if consumer == LAKE {
            self.lake_error = Some(error);
            return Ok(());
        }
        db.execute("UPDATE consumers SET last_error = ?2 WHERE name = ?1", &[consumer.into(), error.into()])?;
        Ok(())
    }
}
