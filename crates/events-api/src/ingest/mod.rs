//! Ingest: decoding a request body, validating its events, and the whole
//! pipeline behind `POST /e` ([`pipeline`]). The native server and the
//! Worker both run it.

pub mod pipeline;

use std::io::Read;

use events_core::event::{EncodedEvents, EventFault, EventLimits, batch_error, parse_event};
use events_core::{ApiError, ErrorCode, Event, Timestamp};
use http::{HeaderMap, header};
use serde_json::value::RawValue;

/// Header carrying a `batchId` for NDJSON bodies (or JSON ones without it).
pub const BATCH_ID_HEADER: &str = "idempotency-key";

/// A decoded ingest body.
pub struct DecodedBatch {
    /// The raw events.
    pub events: Vec<Box<RawValue>>,
    /// The idempotency key, if any.
    pub batch_id: Option<String>,
}

/// Decodes the request body: size limit, `Content-Encoding`, `Content-Type`.
/// `max` is the largest body accepted, before and after decompression.
/// `text/plain` is read as JSON (`navigator.sendBeacon` sends strings as
/// `text/plain;charset=UTF-8` and cannot choose), with the same limits and errors.
pub fn decode_body(headers: &HeaderMap, body: &[u8], max: usize) -> Result<DecodedBatch, ApiError> {
    let too_large = |size: usize| {
        ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than {max} bytes"))
            .with_details(serde_json::json!({"maxSize": max, "size": size}))
    };
    if body.len() > max {
        return Err(too_large(body.len()));
    }
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let body = match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => std::borrow::Cow::Borrowed(body),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(body.len() * 4);
            let mut reader = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
            reader.read_to_end(&mut out).map_err(|e| {
                ApiError::new(ErrorCode::UnsupportedEncoding, format!("the gzip body could not be decoded: {e}"))
            })?;
            if out.len() > max {
                return Err(too_large(out.len()));
            }
            std::borrow::Cow::Owned(out)
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedEncoding,
                format!("Content-Encoding {other:?} is not supported; use gzip"),
            ));
        }
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let header_batch_id = headers.get(BATCH_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    match mime.as_str() {
        "application/json" | "text/json" | "text/plain" | "" => {
            let batch: events_core::EventBatch = serde_json::from_slice(&body).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::new(
                    ErrorCode::InvalidBatch,
                    format!("the body must be {{\"events\": [...], \"batchId\"?: string}}: {e}"),
                ),
                _ => ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")),
            })?;
            Ok(DecodedBatch { events: batch.events, batch_id: batch.batch_id.or(header_batch_id) })
        }
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
            let text = std::str::from_utf8(&body)
                .map_err(|_| ApiError::new(ErrorCode::InvalidJson, "NDJSON must be UTF-8"))?;
            let mut events = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let raw: Box<RawValue> = serde_json::from_str(line)
                    .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("line {}: invalid JSON: {e}", i + 1)))?;
                events.push(raw);
            }
            Ok(DecodedBatch { events, batch_id: header_batch_id })
        }
        other => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {other:?} is not supported; use application/json (or text/plain holding JSON) or application/x-ndjson"
            ),
        )),
    }
}

/// Validates every event; all faults are reported together. New event ids
/// take their randomness from `random`.
pub fn validate_events(
    raw: &[Box<RawValue>],
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
    random: &mut dyn FnMut() -> u128,
) -> Result<Vec<Event>, ApiError> {
    validate_events_with_origin(raw, ns, now, limits, random).map(|v| v.events)
}

/// Validates every event straight into the writer's stored form (no maps
/// are built: see [`events_core::event::encode_event`]); all faults are
/// reported together. New event ids take their randomness from `random`.
pub fn encode_events(
    raw: &[Box<RawValue>],
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
    random: &mut dyn FnMut() -> u128,
) -> Result<EncodedEvents, ApiError> {
    let bytes = raw.iter().map(|r| r.get().len()).sum();
    let mut events = EncodedEvents::with_capacity(ns, raw.len(), bytes);
    let mut faults: Vec<EventFault> = Vec::new();
    let mut new_id = || events_core::id::ulid_string(now, random());
    for (index, r) in raw.iter().enumerate() {
        if let Err(fault) = events.push_raw(r.get(), index, now, limits, &mut new_id) {
            faults.push(fault);
        }
    }
    if faults.is_empty() { Ok(events) } else { Err(batch_error(&faults, limits)) }
}

/// Validated events, and which of their ids the server made.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedEvents {
    /// The events, in the order sent.
    pub events: Vec<Event>,
    /// `server_ids[i]`: the client sent no id for `events[i]`, so the id is
    /// new and random: no earlier event can have it, and no retry can resend
    /// it, so it needs no deduplication entry.
    pub server_ids: Vec<bool>,
}

/// [`validate_events`], also telling which ids the server made.
pub fn validate_events_with_origin(
    raw: &[Box<RawValue>],
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
    random: &mut dyn FnMut() -> u128,
) -> Result<ValidatedEvents, ApiError> {
    let mut events = Vec::with_capacity(raw.len());
    let mut server_ids = Vec::with_capacity(raw.len());
    let mut faults: Vec<EventFault> = Vec::new();
    let generated = std::cell::Cell::new(false);
    let mut new_id = || {
        generated.set(true);
        events_core::id::ulid_string(now, random())
    };
    for (index, r) in raw.iter().enumerate() {
        generated.set(false);
        match parse_event(r.get(), index, ns, now, limits, &mut new_id) {
            Ok(e) => {
                events.push(e);
                server_ids.push(generated.get());
            }
            Err(f) => faults.push(f),
        }
    }
    if faults.is_empty() { Ok(ValidatedEvents { events, server_ids }) } else { Err(batch_error(&faults, limits)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_plain_body_is_json_with_the_same_errors() {
        let body = br#"{"events":[{"type":"page.viewed"}],"batchId":"b-1"}"#;
        for ct in ["text/plain", "text/plain;charset=UTF-8", "Text/Plain; charset=utf-8", "application/json"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            let batch = decode_body(&h, body, 1024).unwrap_or_else(|e| panic!("{ct}: {e}"));
            assert_eq!((batch.events.len(), batch.batch_id.as_deref()), (1, Some("b-1")), "{ct}");
            let bad = decode_body(&h, b"{not json", 1024).err().unwrap();
            assert_eq!(bad.code, ErrorCode::InvalidJson, "{ct}");
            assert_eq!(decode_body(&h, body, 10).err().unwrap().code, ErrorCode::PayloadTooLarge, "{ct}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        assert_eq!(decode_body(&h, body, 1024).err().unwrap().code, ErrorCode::UnsupportedMediaType);
    }

    #[test]
    fn the_origin_of_each_id_is_reported() {
        let raw: Vec<Box<RawValue>> =
            [r#"{"type":"a.b","id":"mine"}"#, r#"{"type":"a.b"}"#, r#"{"type":"a.b","id":null}"#]
                .iter()
                .map(|s| RawValue::from_string(s.to_string()).unwrap())
                .collect();
        let mut seed = 0u128;
        let mut random = || {
            seed += 1;
            seed
        };
        let now = Timestamp(1_800_000_000_000);
        let v = validate_events_with_origin(&raw, "acme", now, &EventLimits::default(), &mut random).unwrap();
        assert_eq!(v.server_ids, [false, true, true]);
        assert_eq!(v.events[0].id, "mine");
        assert_ne!(v.events[1].id, v.events[2].id, "each missing id gets a fresh one");
    }
}
