//! Fan-out: which objects receive every accepted event, through the
//! [`crate::EventWriter`] outbox.
//!
//! Each writer shard keeps one cursor per consumer listed in [`CONSUMERS`].
//! One [`crate::OutboxRelay`] per (shard, consumer) reads the events after
//! the cursor, hands them to the consumer with [`deliver`], and advances the
//! cursor only when `deliver` succeeded. So every accepted event reaches
//! every consumer at least once, in the writer's order, across crashes;
//! consumers make redelivery harmless by keying on the event id. The writer
//! itself never waits on a consumer.

use events_core::ApiError;
use events_runtime::{Host, ObjectContext, ObjectResult};

use crate::event_writer::OutboxEvent;

/// Most events handed to a consumer in one call.
pub const FANOUT_BATCH: usize = 1_000;
/// Delay before retrying a consumer whose delivery failed (ms).
pub const FANOUT_RETRY_MS: i64 = 1_000;

/// The built-in consumers, registered by every writer when it loads.
/// A capability that needs every event adds its name here and an arm in [`deliver`].
pub const CONSUMERS: &[&str] = &[SUBSCRIPTIONS, CDC];

/// The relay that flushes a writer's buffer to the lake. Not a cursor
/// consumer: its progress is the writer's flush plan.
pub const LAKE: &str = "lake";

/// Every relay of a writer shard: the lake flush and the built-in consumers.
pub const RELAYED: &[&str] = &[LAKE, SUBSCRIPTIONS, CDC];

/// The consumer that routes events to the namespace's [`crate::Subscriptions`].
pub const SUBSCRIPTIONS: &str = "subscriptions";

/// The consumer that applies collection changes to each collection's [`crate::CdcProcessor`].
pub const CDC: &str = "cdc";

/// Hands `events` (in order) to `consumer`. An error leaves the cursor where
/// it was, and the same events are offered again later.
pub async fn deliver<H: Host>(cx: &ObjectContext<H>, consumer: &str, events: &[OutboxEvent]) -> ObjectResult<()> {
    match consumer {
        SUBSCRIPTIONS => {
            let Some(first) = events.first() else { return Ok(()) };
            let events: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
            cx.stub::<crate::Subscriptions>(first.event.ns.clone())
                .call(crate::subscription::SubsRequest::Route { events })
                .await?;
            Ok(())
        }
        CDC => crate::cdc_fanout::deliver(cx, events).await,
        _ => Err(ApiError::internal(format!("unknown outbox consumer {consumer:?}"))),
    }
}
