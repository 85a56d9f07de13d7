//! Fan-out: the built-in outbox consumers, the objects that receive every
//! accepted event of a writer shard.
//!
//! One [`crate::OutboxRelay`] per (shard, consumer) reads the events after
//! the consumer's cursor, hands them over with [`deliver`], and advances the
//! cursor only when `deliver` succeeded (see [`crate::outbox`]). This module
//! has the [`SubscriptionsFanout`] consumer and the dispatch by name;
//! [`crate::cdc_fanout`] has the change-capture one.

use events_core::ApiError;
use events_core::pattern::Pattern;
use events_runtime::{Host, ObjectContext, ObjectResult};

use crate::cdc_fanout::CdcFanout;
use crate::outbox::{OutboxConsumer, OutboxRow, decode_matching};
use crate::subscription::{SubsRequest, SubsResponse};

/// Most events a fan-out relay reads (and hands to its consumer) per step.
/// Each step costs a read and a durable cursor update at the writer, so
/// steps of 1,000 could not keep up with one busy writer shard (its
/// subscriptions backlog reached the outbox bound at 300,000 events/s on
/// two cores, even for a namespace without subscriptions); 4,000 events are
/// about 1 MB of stored JSON.
pub const FANOUT_BATCH: usize = 4_000;
/// Delay before retrying a consumer whose delivery failed (ms).
pub const FANOUT_RETRY_MS: i64 = 1_000;

/// The consumer names [`deliver`] dispatches, in the order of
/// [`crate::outbox::CONSUMERS`].
pub const DISPATCHED: &[&str] = &[SubscriptionsFanout::NAME, CdcFanout::NAME];

/// Hands the events of `rows` after `after` (in order) to `consumer`, the
/// namespace `ns`'s. Each consumer decodes only the events it takes. An
/// error leaves the cursor where it was, and the same events are offered
/// again later.
pub async fn deliver<H: Host>(
    cx: &ObjectContext<H>,
    ns: &str,
    consumer: &str,
    rows: &[OutboxRow],
    after: u64,
) -> ObjectResult<()> {
    match consumer {
        SubscriptionsFanout::NAME => SubscriptionsFanout::deliver(cx, ns, rows, after).await,
        CdcFanout::NAME => CdcFanout::deliver(cx, ns, rows, after).await,
        _ => Err(ApiError::internal(format!("unknown outbox consumer {consumer:?}"))),
    }
}

/// The `"subscriptions"` consumer: routes the events some subscription of
/// the namespace matches to its [`crate::Subscriptions`].
pub struct SubscriptionsFanout;

impl OutboxConsumer for SubscriptionsFanout {
    const NAME: &'static str = crate::outbox::SUBSCRIPTIONS;

    async fn deliver<H: Host>(cx: &ObjectContext<H>, ns: &str, rows: &[OutboxRow], after: u64) -> ObjectResult<()> {
        // Asked after the events were read: a subscription made later
        // was made after they were accepted, so it does not want them.
        let subscriptions = cx.stub::<crate::Subscriptions>(ns.to_string());
        let patterns = match subscriptions.call(SubsRequest::Patterns).await? {
            SubsResponse::Patterns(patterns) => patterns,
            other => return Err(ApiError::internal(format!("subscriptions answered out of protocol: {other:?}"))),
        };
        if patterns.is_empty() {
            return Ok(());
        }
        let patterns = patterns.iter().map(|p| Pattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
        let events = decode_matching(rows, after, |ty| patterns.iter().any(|p| p.matches(ty)))?;
        if !events.is_empty() {
            let events = events.into_iter().map(|o| o.event).collect();
            subscriptions.call(SubsRequest::Route { events }).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_consumer_is_dispatched() {
        assert_eq!(DISPATCHED, crate::outbox::CONSUMERS, "a consumer without a deliver arm would never advance");
    }
}
