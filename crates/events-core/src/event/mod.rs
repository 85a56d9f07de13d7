//! The event model and ingest validation.
//!
//! A client sends events as JSON objects `{"type", "ts"?, "id"?, "source"?, ...}`.
//! Validation turns each into an [`Event`]: the four envelope fields are
//! lifted out, and every other field is kept, unchanged, in `data`. Reading
//! an event back merges them again, so the round trip is lossless.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod stored;

pub use stored::{EncodedEvents, EncodedHead, encode_event};

use crate::error::{ApiError, ErrorCode};
use crate::limits::*;
use crate::time::Timestamp;

/// An accepted event, as it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique within the namespace; a ULID unless the client gave its own.
    pub id: String,
    /// The tenant namespace that owns the event.
    pub ns: String,
    /// Event time (client-supplied, or the server's receive time).
    pub ts: Timestamp,
    /// Dot-separated event type, e.g. `order.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Optional producer name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Every other field of the submitted event.
    #[serde(default)]
    pub data: Map<String, Value>,
}

impl Event {
    /// The event as a client sees it on read: envelope fields merged back
    /// into the object, with `ts` as ISO-8601 and `ns` added.
    pub fn to_json(&self) -> Value {
        let mut obj = self.data.clone();
        obj.insert("id".into(), Value::String(self.id.clone()));
        obj.insert("ns".into(), Value::String(self.ns.clone()));
        obj.insert("ts".into(), Value::String(self.ts.to_iso()));
        obj.insert("type".into(), Value::String(self.event_type.clone()));
        if let Some(source) = &self.source {
            obj.insert("source".into(), Value::String(source.clone()));
        }
        Value::Object(obj)
    }
}

/// The request body of `POST /e`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBatch {
    /// The events, each kept as raw JSON so its exact size is known.
    pub events: Vec<Box<serde_json::value::RawValue>>,
    /// Optional idempotency key.
    #[serde(default)]
    pub batch_id: Option<String>,
}

/// Limits applied to each event; the defaults are those of [`crate::limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLimits {
    /// Largest event in bytes of JSON.
    pub max_event_bytes: usize,
    /// Oldest accepted `ts`, as an age in ms.
    pub max_age_ms: i64,
    /// Furthest accepted future `ts`, in ms.
    pub max_future_ms: i64,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_event_bytes: MAX_EVENT_BYTES,
            max_age_ms: MAX_EVENT_AGE_MS,
            max_future_ms: MAX_EVENT_FUTURE_MS,
        }
    }
}

/// Why one event of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFault {
    /// Position of the event in the batch.
    pub index: usize,
    /// The field at fault (`"type"`, `"ts"`, ...) or `""` for the whole event.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Whether the event was refused only for its size.
    #[serde(skip)]
    pub too_large: bool,
}

/// Validates one raw event and builds the stored [`Event`]: the stored form
/// of [`encode_event`], decoded.
///
/// `new_id` is called only when the event has no `id`.
pub fn parse_event(
    raw: &str,
    index: usize,
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Event, EventFault> {
    let mut stored = String::with_capacity(raw.len() + STORED_ENVELOPE_BYTES);
    encode_event(raw, index, ns, now, limits, new_id, &mut stored)?;
    // Cannot fail when `encode_event` holds its promise; a fault, never a panic, if not.
    serde_json::from_str(&stored).map_err(|e| EventFault {
        index,
        field: String::new(),
        message: format!("invalid JSON: {e}"),
        too_large: false,
    })
}

/// Room for the envelope fields the stored form adds to an event, in bytes.
pub const STORED_ENVELOPE_BYTES: usize = 96;

/// The nesting depth of `value`: 0 for a scalar, 1 for an object or array
/// of scalars, and so on (see [`MAX_EVENT_DEPTH`]).
pub fn value_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether `t` is a valid event type.
pub fn valid_event_type(t: &str) -> bool {
    (MIN_EVENT_TYPE_LEN..=MAX_EVENT_TYPE_LEN).contains(&t.len())
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn valid_event_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Turns the faults of a batch into the API error: `EVENT_TOO_LARGE` when
/// every fault is a size fault, else `INVALID_EVENT`. Lists at most
/// [`MAX_REPORTED_ERRORS`] faults; `details.indices` has every index at fault.
pub fn batch_error(faults: &[EventFault], limits: &EventLimits) -> ApiError {
    assert!(!faults.is_empty(), "batch_error needs at least one fault");
    let indices: Vec<usize> = faults.iter().map(|f| f.index).collect();
    let errors: Vec<Value> = faults
        .iter()
        .take(MAX_REPORTED_ERRORS)
        .map(|f| serde_json::json!({"index": f.index, "field": f.field, "message": f.message}))
        .collect();
    let listed: Vec<String> = indices.iter().take(10).map(|i| i.to_string()).collect();
    if faults.iter().all(|f| f.too_large) {
        ApiError::new(
            ErrorCode::EventTooLarge,
            format!(
                "events exceed the maximum size of {} bytes at indices: {}",
                limits.max_event_bytes,
                listed.join(", ")
            ),
        )
        .with_details(serde_json::json!({"indices": indices, "maxSize": limits.max_event_bytes, "errors": errors}))
    } else {
        ApiError::new(ErrorCode::InvalidEvent, format!("invalid events at indices: {}", listed.join(", ")))
            .with_details(serde_json::json!({"indices": indices, "errors": errors}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn parse(raw: &str) -> Result<Event, EventFault> {
        let mut n = 0;
        parse_event(raw, 3, "acme", NOW, &EventLimits::default(), &mut || {
            n += 1;
            format!("gen{n}")
        })
    }

    #[test]
    fn accepts_and_lifts_envelope() {
        let e = parse(r#"{"type":"order.created","ts":"2027-01-15T08:00:00Z","amount":5,"ns":"other"}"#).unwrap();
        assert_eq!(e.event_type, "order.created");
        assert_eq!(e.ns, "acme");
        assert_eq!(e.id, "gen1");
        assert_eq!(e.ts, Timestamp::parse_iso("2027-01-15T08:00:00Z").unwrap());
        assert_eq!(e.data.get("amount"), Some(&Value::from(5)));
        assert_eq!(e.data.get("_ns"), Some(&Value::from("other")), "client ns is kept as data, never trusted");
        let back = e.to_json();
        assert_eq!(back["amount"], 5);
        assert_eq!(back["ns"], "acme");
    }

    #[test]
    fn missing_ts_defaults_to_now_and_ids_are_kept() {
        let e = parse(r#"{"type":"a","id":"evt_1"}"#).unwrap();
        assert_eq!(e.ts, NOW);
        assert_eq!(e.id, "evt_1");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (r#"{"ts":"2027-01-15T08:00:00Z"}"#, "type"),
            (r#"{"type":""}"#, "type"),
            (r#"{"type":"a b"}"#, "type"),
            (r#"{"type":5}"#, "type"),
            (r#"{"type":"a","ts":"2020-01-01T00:00:00Z"}"#, "ts"),
            (r#"{"type":"a","ts":"2099-01-01T00:00:00Z"}"#, "ts"),
            (r#"{"type":"a","ts":"soon"}"#, "ts"),
            (r#"{"type":"a","ts":12}"#, "ts"),
            (r#"{"type":"a","id":""}"#, "id"),
            (r#"[1]"#, ""),
        ];
        for (raw, field) in cases {
            let f = parse(raw).unwrap_err();
            assert_eq!((f.index, f.field.as_str()), (3, field), "{raw}");
        }
        let long = format!(r#"{{"type":"{}"}}"#, "a".repeat(129));
        assert_eq!(parse(&long).unwrap_err().field, "type");
    }

    #[test]
    fn size_limit() {
        let big = format!(r#"{{"type":"a","pad":"{}"}}"#, "x".repeat(MAX_EVENT_BYTES));
        let f = parse(&big).unwrap_err();
        assert!(f.too_large);
        let err = batch_error(&[f], &EventLimits::default());
        assert_eq!(err.code, ErrorCode::EventTooLarge);
        assert_eq!(err.details["indices"], serde_json::json!([3]));
    }
}
