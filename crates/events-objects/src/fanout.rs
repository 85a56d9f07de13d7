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

use events_core::pattern::Pattern;

use crate::event_writer::{OutboxEvent, OutboxRow, corrupt};
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

/// The event type of an outbox event, read without decoding the rest.
#[derive(serde::Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
}

/// Decodes the events of `rows` after `after` whose type `wanted` accepts;
/// the others are only scanned for their type, and rows whose listed types
/// `wanted` all refuses are skipped unread.
pub fn decode_matching(
    rows: &[OutboxRow],
    after: u64,
    wanted: impl Fn(&str) -> bool,
) -> ObjectResult<Vec<OutboxEvent>> {
    let mut out = Vec::new();
    for row in rows {
        if row.types.as_ref().is_some_and(|types| !types.iter().any(|t| wanted(t))) {
            continue;
        }
        for (seq, raw) in row.raw_events(after)? {
            let head: EventType<'_> = serde_json::from_str(raw.get()).map_err(corrupt)?;
            if wanted(&head.event_type) {
                out.push(OutboxEvent { seq, event: serde_json::from_str(raw.get()).map_err(corrupt)? });
            }
        }
    }
    Ok(out)
}

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
        SUBSCRIPTIONS => {
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
        CDC => {
            let changes = decode_matching(rows, after, events_core::cdc::may_be_change)?;
            crate::cdc_fanout::deliver(cx, &changes).await
        }
        _ => Err(ApiError::internal(format!("unknown outbox consumer {consumer:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn row(last_seq: u64, types: &[&str]) -> OutboxRow {
        let events: Vec<_> = types
            .iter()
            .enumerate()
            .map(
                |(i, t)| serde_json::json!({"id": format!("e{i}"), "ns": "acme", "ts": 1, "type": t, "data": {"n": i}}),
            )
            .collect();
        let events = RawValue::from_string(serde_json::to_string(&events).unwrap()).unwrap();
        OutboxRow { last_seq, count: types.len() as u64, events, types: None }
    }

    #[test]
    fn only_wanted_events_after_the_cursor_are_decoded_with_their_sequence_numbers() {
        let rows = [row(3, &["order.created", "user.signup", "order.paid"]), row(5, &["order.x", "page.view"])];
        let orders = decode_matching(&rows, 1, |t| t.starts_with("order.")).unwrap();
        let got: Vec<_> = orders.iter().map(|o| (o.seq, o.event.event_type.as_str())).collect();
        assert_eq!(got, [(3, "order.paid"), (4, "order.x")], "seq 1 is at the cursor, the rest do not match");
        assert_eq!(orders[0].event.data["n"], 2);
        assert!(decode_matching(&rows, 5, |_| true).unwrap().is_empty());
    }

    #[test]
    fn a_row_whose_listed_types_are_unwanted_is_skipped_unread() {
        let mut listed = row(2, &["order.created", "order.paid"]);
        listed.types = Some(vec!["order.created".into(), "order.paid".into()]);
        // Not even its count is checked: the row is not read.
        listed.count = 7;
        assert!(decode_matching(&[listed.clone()], 0, |t| t.starts_with("user.")).unwrap().is_empty());
        let e = decode_matching(&[listed], 0, |t| t == "order.paid").unwrap_err();
        assert_eq!(e.code, events_core::ErrorCode::StorageError, "a wanted type reads the row: {e}");
    }

    #[test]
    fn a_row_whose_count_disagrees_with_its_events_is_an_error() {
        let mut bad = row(3, &["a", "b"]);
        bad.count = 3;
        let e = decode_matching(&[bad], 0, |_| true).unwrap_err();
        assert_eq!(e.code, events_core::ErrorCode::StorageError, "{e}");
    }
}
