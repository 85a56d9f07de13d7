//! Appending: deduplication by batch id and event id, log rows, the outbox
//! bound, and the wake-ups an append sends.

use std::ops::Range;

use events_core::event::EncodedEvents;
use events_core::limits::BATCH_ID_TTL_MS;
use events_core::{ApiError, ErrorCode};
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage, SqlValue};

use super::{Appended, EventWriter, MAX_LOG_ROW_BYTES};
use crate::outbox::{CONSUMERS, LAKE, RELAYED, corrupt};

impl EventWriter {
    /// Appends `events` of this writer's namespace durably, unless the
    /// outbox is full, then wakes the consumers (and the lake relay when a
    /// flush is due) without waiting for them.
    pub(super) async fn accept<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        events: EncodedEvents,
        batch_id: Option<String>,
    ) -> ObjectResult<Appended> {
        assert_eq!(events.namespace(), self.ns, "events reach only their own namespace's writer");
        self.check_room()?;
        let result = self.append(cx, events, batch_id)?;
        if result.stored > 0 {
            for &consumer in CONSUMERS {
                self.wake(cx, consumer, false);
            }
        }
        let now = cx.now().as_millis();
        if self.needs_flush(now) {
            self.wake(cx, LAKE, false);
        } else if let Some(oldest) = self.oldest_received {
            self.alarm.arm(cx.storage(), oldest + self.config.max_age_ms).await?;
        }
        self.report_backlog();
        Ok(result)
    }

    /// Refuses an append while the flush or a built-in consumer lags by the bound.
    fn check_room(&self) -> ObjectResult<()> {
        for consumer in RELAYED {
            let backlog = self.backlog(consumer);
            if backlog >= self.config.outbox_max_events {
                metrics::counter!("events_outbox_refused_total", "consumer" => *consumer).increment(1);
                return Err(ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    format!(
                        "{backlog} events of this namespace wait for the {consumer} consumer (bound {}); retry later",
                        self.config.outbox_max_events
                    ),
                ));
            }
        }
        Ok(())
    }

    fn append<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        mut events: EncodedEvents,
        batch_id: Option<String>,
    ) -> ObjectResult<Appended> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        let received = events.len();
        if let Some(batch) = &batch_id {
            if let Some(r) = db.query_one(
                "SELECT received FROM batches WHERE batch_id = ?1 AND at >= ?2",
                &[batch.as_str().into(), (now - BATCH_ID_TTL_MS).into()],
            )? {
                return Ok(Appended { received: r.i64(0) as usize, stored: 0, duplicates: 0, deduplicated: true });
            }
            db.execute(
                "INSERT INTO batches (batch_id, received, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(batch_id) DO UPDATE SET received = excluded.received, at = excluded.at",
                &[batch.as_str().into(), received.into(), now.into()],
            )?;
        }
        let mut seen = Vec::new();
        for (index, head) in events.heads().iter().enumerate() {
            if let Some(id) = &head.client_id {
                let fresh = db.execute(
                    "INSERT INTO event_ids (id, at) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING",
                    &[id.as_str().into(), now.into()],
                )?;
                if fresh == 0 {
                    seen.push(index);
                }
            }
        }
        if !seen.is_empty() {
            events.retain(|i| seen.binary_search(&i).is_err());
        }
        if !events.is_empty() {
            self.insert_rows(db, &events, 0..events.len(), now)?;
        }
        let stored = events.len();
        Ok(Appended { received, stored, duplicates: received - stored, deduplicated: false })
    }

    /// Stores the events `range` of `events` as one log row (or, past
    /// [`MAX_LOG_ROW_BYTES`], as several) under the next sequence numbers.
    fn insert_rows<S: SqlStorage>(
        &mut self,
        db: &S,
        events: &EncodedEvents,
        range: Range<usize>,
        now: i64,
    ) -> ObjectResult<()> {
        debug_assert!(!range.is_empty());
        if events.json_of(range.clone()).len() + 2 > MAX_LOG_ROW_BYTES && range.len() > 1 {
            let middle = range.start + range.len() / 2;
            self.insert_rows(db, events, range.start..middle, now)?;
            return self.insert_rows(db, events, middle..range.end, now);
        }
        let body = events.array_of(range.clone()).into_bytes();
        let heads = &events.heads()[range.clone()];
        let (min_ts, max_ts) =
            heads.iter().fold((i64::MAX, i64::MIN), |(lo, hi), h| (lo.min(h.ts.as_millis()), hi.max(h.ts.as_millis())));
        let bytes = body.len() as u64;
        let count = range.len();
        let last_seq = self.last_seq + count as u64;
        let types = match events.types() {
            Some(types) => serde_json::to_string(types).map_err(corrupt)?.into(),
            None => SqlValue::Null,
        };
        db.execute(
            "INSERT INTO log (last_seq, count, bytes, min_ts, max_ts, received_at, body, types)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                (last_seq as i64).into(),
                count.into(),
                (bytes as i64).into(),
                min_ts.into(),
                max_ts.into(),
                now.into(),
                SqlValue::Blob(body),
                types,
            ],
        )?;
        self.last_seq = last_seq;
        self.buffered += count as u64;
        self.buffered_bytes += bytes;
        self.oldest_received.get_or_insert(now);
        Ok(())
    }
}
