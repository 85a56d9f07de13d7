//! Routing: matching outbox events against the patterns and enqueueing one delivery per (subscription, event).

use std::collections::HashMap;

use events_core::pattern::Pattern;
use events_core::{Event, Timestamp};
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};
use serde_json::Value;

use super::*;

/// A subscription as the router keeps it in memory.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) id: String,
    pub(super) pattern: Pattern,
    pub(super) enabled: bool,
    pub(super) ordering_key: Option<String>,
    pub(super) batch: Option<BatchSpec>,
}

/// The value of the ordering field of an event, if it has one.
pub(super) fn order_key_of(event: &Event, field: &str) -> Option<String> {
    let v = match field {
        "type" => return Some(event.event_type.clone()),
        "source" => return event.source.clone(),
        "id" => return Some(event.id.clone()),
        f => event.data.get(f)?,
    };
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// 80 bits for a delivery id, unique per (event seq, subscription) within a millisecond.
pub(super) fn fresh_bits(seq: i64, sub: &str) -> u128 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sub.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ((h as u128) << 32) ^ (seq as u128)
}

impl Subscriptions {
    pub(super) fn load_routes<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        let rows = db.query("SELECT id, pattern, status, settings FROM subscriptions ORDER BY id", &[])?;
        self.routes = rows
            .iter()
            .map(|r| {
                let settings: Settings = serde_json::from_slice(r.bytes(3)).map_err(corrupt)?;
                Ok(Route {
                    id: r.str(0).to_string(),
                    pattern: Pattern::parse(r.str(1))?,
                    enabled: r.str(2) != "disabled",
                    ordering_key: settings.ordering_key,
                    batch: settings.batch,
                })
            })
            .collect::<ObjectResult<_>>()?;
        Ok(())
    }

    /// The patterns of the enabled subscriptions ([`SubsRequest::Patterns`]).
    pub(super) fn patterns(&self) -> SubsResponse {
        SubsResponse::Patterns(
            self.routes.iter().filter(|r| r.enabled).map(|r| r.pattern.as_str().to_string()).collect(),
        )
    }

    /// Routes a batch of events ([`SubsRequest::Route`]) and sets the alarm
    /// for the deliveries it enqueued.
    pub(super) async fn route_events<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        events: &[Event],
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        if self.routes.iter().all(|r| !r.enabled) {
            return Ok(SubsResponse::Routed { enqueued: 0 });
        }
        let enqueued = self.route(db, events, now)?;
        if enqueued > 0
            && let Some(at) = self.wake_at(db, now)?
        {
            self.alarm.arm(cx.storage(), at.max(now)).await?;
        }
        Ok(SubsResponse::Routed { enqueued })
    }

    /// Enqueues deliveries for `events`.
    pub(super) fn route<S: SqlStorage>(&self, db: &S, events: &[Event], now: i64) -> ObjectResult<usize> {
        let mut enqueued = 0;
        let mut batch_subs: HashMap<&str, BatchSpec> = HashMap::new();
        for event in events {
            assert_eq!(event.ns, self.ns, "events reach only their own namespace's router");
            let matching: Vec<&Route> =
                self.routes.iter().filter(|r| r.enabled && r.pattern.matches(&event.event_type)).collect();
            if matching.is_empty() {
                continue;
            }
            log_event(db, event, now)?;
            let seq = db
                .query_one("SELECT seq FROM events WHERE id = ?1", &[event.id.as_str().into()])?
                .expect("event row just written")
                .i64(0);
            for r in matching {
                let key = r.ordering_key.as_deref().and_then(|f| order_key_of(event, f));
                let due = now + r.batch.map_or(0, |b| b.window_ms);
                let id = format!("msg_{}", events_core::id::ulid_string(Timestamp(now), fresh_bits(seq, &r.id)));
                let (shard, status) = self.place(db, &r.id, key.as_deref(), &event.id)?;
                enqueued += db.execute(
                    "INSERT INTO deliveries (id, sub_id, event_id, seq, order_key, status, next_at, created_at, shard)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?8, ?6, ?7, ?9) ON CONFLICT(sub_id, event_id) DO NOTHING",
                    &[
                        id.into(),
                        r.id.as_str().into(),
                        event.id.as_str().into(),
                        seq.into(),
                        key.into(),
                        due.into(),
                        now.into(),
                        status.into(),
                        (shard as i64).into(),
                    ],
                )? as usize;
                if let Some(b) = r.batch {
                    batch_subs.insert(&r.id, b);
                }
            }
        }
        // A full batch is due at once.
        for (sub, b) in batch_subs {
            let waiting = db
                .query_one(
                    "SELECT COUNT(*) FROM deliveries WHERE sub_id = ?1 AND status = 'pending' AND attempts = 0 AND next_at > ?2",
                    &[sub.into(), now.into()],
                )?
                .map_or(0, |r| r.i64(0));
            if waiting as usize >= b.max_size {
                db.execute(
                    "UPDATE deliveries SET next_at = ?2 WHERE sub_id = ?1 AND status = 'pending' AND attempts = 0 AND next_at > ?2",
                    &[sub.into(), now.into()],
                )?;
            }
        }
        Ok(enqueued)
    }
}

/// Keeps `event` in the router's event log (received at `now`) unless the
/// log holds it already; returns whether it was added.
pub(super) fn log_event<S: SqlStorage>(db: &S, event: &Event, now: i64) -> ObjectResult<bool> {
    let added = db.execute(
        "INSERT INTO events (id, ts, type, body, received_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO NOTHING",
        &[
            event.id.as_str().into(),
            event.ts.as_millis().into(),
            event.event_type.as_str().into(),
            event.to_json().to_string().into(),
            now.into(),
        ],
    )?;
    Ok(added > 0)
}
