//! The `DurableObject` impl of the [`EventWriter`]: activation, a `handle`
//! that sends each request to one method, and the alarm.

use std::collections::{BTreeMap, BTreeSet};

use events_core::limits::BATCH_ID_TTL_MS;
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, Placement, SqlStorage};

use super::storage::MIGRATIONS;
use super::{EventWriter, RELAY_NUDGE_MS, WriterConfig, WriterRequest, WriterResponse};
use crate::alarm::AlarmSlot;
use crate::outbox::{CONSUMERS, LAKE, RELAYED};

impl DurableObject for EventWriter {
    const CLASS: &'static str = "EventWriter";
    const PLACEMENT: Placement = Placement::Latency;
    type Request = WriterRequest;
    type Response = WriterResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let (ns, _shard) = cx.name().rsplit_once('/').unwrap_or((cx.name(), "0"));
        let mut writer = EventWriter {
            ns: ns.to_string(),
            config: WriterConfig::from_host(cx.host()),
            buffered: 0,
            buffered_bytes: 0,
            oldest_received: None,
            alarm: AlarmSlot::load(cx.storage()).await?,
            last_seq: 0,
            flushed_upto: 0,
            cursors: BTreeMap::new(),
            awake: BTreeSet::new(),
            reported: BTreeMap::new(),
            lake_error: None,
        };
        writer.load_positions(cx.storage())?;
        for consumer in CONSUMERS {
            cx.storage().execute(
                "INSERT INTO consumers (name, cursor, registered_at) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO NOTHING",
                &[(*consumer).into(), (writer.last_seq as i64).into(), cx.now().as_millis().into()],
            )?;
        }
        writer.load_cursors(cx.storage())?;
        writer.refresh(cx.storage())?;
        writer.report_backlog();
        // Work left from before a restart: the alarm wakes the relays.
        if RELAYED.iter().any(|c| writer.backlog(c) > 0) {
            writer.alarm.arm(cx.storage(), cx.now().as_millis()).await?;
        }
        Ok(writer)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: WriterRequest) -> ObjectResult<WriterResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        match req {
            WriterRequest::Append { events, batch_id } => {
                Ok(WriterResponse::Appended(self.accept(cx, events, batch_id).await?))
            }
            WriterRequest::TakeFlush { force } => Ok(WriterResponse::Plan(self.take_flush(db, now, force)?)),
            WriterRequest::ReadFlush { plan, after, limit } => self.read_flush(db, plan, after, limit),
            WriterRequest::FlushCommitted { plan, files, events, hours } => {
                self.flush_committed(db, plan, files, events, &hours)?;
                Ok(WriterResponse::Ok)
            }
            WriterRequest::DueCompactions { closed } => {
                Ok(WriterResponse::Prefixes(Self::due_compactions(db, closed)?))
            }
            WriterRequest::Compacted { prefix } => Self::compacted(db, prefix).map(|()| WriterResponse::Ok),
            WriterRequest::Recent { filter, limit } => {
                Ok(WriterResponse::Events(self.read_recent(db, &filter, limit)?))
            }
            WriterRequest::Stats => Ok(WriterResponse::Stats(self.stats(db)?)),
            WriterRequest::RegisterConsumer { name, from_start } => {
                self.register_consumer(db, name, from_start, now).map(|()| WriterResponse::Ok)
            }
            WriterRequest::ReadOutbox { consumer, limit } => self.read_outbox(db, consumer, limit),
            WriterRequest::AckOutbox { consumer, upto } => {
                self.ack_outbox(db, consumer, upto).map(|()| WriterResponse::Ok)
            }
            WriterRequest::ReadLog { after, limit } => self.read_log(db, after, limit),
            WriterRequest::ConsumerFailed { consumer, error } => {
                self.consumer_failed(db, consumer, error).map(|()| WriterResponse::Ok)
            }
        }
    }

    /// The backstop of the wake-ups: while the flush or a consumer has work,
    /// wakes its relay every [`RELAY_NUDGE_MS`]; also wakes the lake relay
    /// for the age threshold and for hours due for compaction, and prunes
    /// the dedup windows.
    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        self.alarm.fired();
        let mut next = BTreeMap::new();
        let compact_at = db
            .query_one("SELECT MIN(hour) FROM dirty_hours", &[])?
            .and_then(|r| r.opt_i64(0))
            .map(|hour| hour + events_lake::layout::HOUR_MS + self.config.lake.compact_grace_ms);
        let lake_due =
            self.needs_flush(now) || Self::open_plan(db)?.is_some() || compact_at.is_some_and(|at| at <= now);
        if lake_due {
            self.wake(cx, LAKE, true);
            next.insert(now + RELAY_NUDGE_MS, ());
        }
        for &consumer in CONSUMERS {
            if self.backlog(consumer) > 0 {
                self.wake(cx, consumer, true);
                next.insert(now + RELAY_NUDGE_MS, ());
            }
        }
        Self::prune(db, now)?;
        if let Some(oldest) = self.oldest_received {
            next.insert(oldest + self.config.max_age_ms, ());
        }
        if let Some(at) = compact_at {
            next.insert(at, ());
        }
        if let Some(r) = db.query_one("SELECT MIN(at) FROM event_ids", &[])?
            && let Some(at) = r.opt_i64(0)
        {
            next.insert(at + BATCH_ID_TTL_MS, ());
        }
        if let Some((&at, _)) = next.first_key_value() {
            self.alarm.arm(cx.storage(), at.max(now + 1)).await?;
        }
        Ok(())
    }
}
