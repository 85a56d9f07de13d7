//! Outbox rows as readers get them, and their decoding.

use events_core::{ApiError, ErrorCode, Event};
use events_runtime::ObjectResult;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One event read from the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Its sequence number in this writer.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// One log row as a relay reads it: `count` events ending at `last_seq`,
/// the JSON array the writer stored, passed on undecoded (relays decode on
/// their own thread, and only what they need).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Sequence number of the row's last event.
    pub last_seq: u64,
    /// Events in the row.
    pub count: u64,
    /// The events, a JSON array.
    pub events: Box<RawValue>,
    /// Every event type in the row (maybe more), when the writer listed
    /// them: a reader that wants none of them skips the row undecoded.
    #[serde(default)]
    pub types: Option<Vec<String>>,
}

impl OutboxRow {
    /// Sequence number of the row's first event.
    pub fn first_seq(&self) -> u64 {
        self.last_seq + 1 - self.count
    }

    /// The row's events with sequence numbers after `after`, undecoded.
    pub fn raw_events(&self, after: u64) -> ObjectResult<Vec<(u64, &RawValue)>> {
        let raw: Vec<&RawValue> = serde_json::from_str(self.events.get()).map_err(corrupt)?;
        if raw.len() as u64 != self.count {
            return Err(corrupt(format!("a log row of {} events holds {}", self.count, raw.len())));
        }
        Ok((self.first_seq()..).zip(raw).filter(|(seq, _)| *seq > after).collect())
    }

    /// The row's events with sequence numbers after `after`, decoded.
    pub fn decode(&self, after: u64) -> ObjectResult<Vec<OutboxEvent>> {
        self.raw_events(after)?
            .into_iter()
            .map(|(seq, raw)| Ok(OutboxEvent { seq, event: serde_json::from_str(raw.get()).map_err(corrupt)? }))
            .collect()
    }
}

/// Every event of `rows` after sequence number `after`, decoded, in order.
pub fn decode_rows(rows: &[OutboxRow], after: u64) -> ObjectResult<Vec<OutboxEvent>> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(row.decode(after)?);
    }
    Ok(out)
}

/// The event type of an outbox event, read without decoding the rest.
#[derive(Deserialize)]
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

/// A stored log row or event that does not decode.
pub fn corrupt(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::StorageError, format!("writer buffer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(e.code, ErrorCode::StorageError, "a wanted type reads the row: {e}");
    }

    #[test]
    fn a_row_whose_count_disagrees_with_its_events_is_an_error() {
        let mut bad = row(3, &["a", "b"]);
        bad.count = 3;
        let e = decode_matching(&[bad], 0, |_| true).unwrap_err();
        assert_eq!(e.code, ErrorCode::StorageError, "{e}");
    }

    #[test]
    fn decode_rows_numbers_every_event_after_the_position() {
        let rows = [row(2, &["a", "b"]), row(3, &["c"])];
        let seqs: Vec<_> = decode_rows(&rows, 1).unwrap().into_iter().map(|o| (o.seq, o.event.event_type)).collect();
        assert_eq!(seqs, [(2, "b".to_string()), (3, "c".to_string())]);
        assert_eq!(rows[0].first_seq(), 1);
    }
}
