//! Change data capture: the three input formats of collection changes,
//! normalised to one [`Change`].
//!
//! An event is a change of a collection when it has one of these shapes:
//!
//! 1. **Collection events** (the original's): `type` is
//!    `collection.insert|update|delete` (also `collection.created|updated|deleted`),
//!    with fields `collection`, `docId`, `doc` (the new document), `prev`
//!    (the previous one) and `bookmark`.
//! 2. **Unified `cdc` events**: `type: "cdc"`, `event: "<Noun>.created|updated|deleted"`,
//!    `data: {type: <Noun>, id, ...document fields}`, `meta: {prev, bookmark}`.
//!    The collection is `data.type` (else the noun of `event`); the document
//!    is `data` without `type` and `id`.
//! 3. **Debezium envelopes**: `type` is `debezium` or starts with `debezium.`;
//!    the envelope (`op` c/u/d/r, `before`, `after`, `source.ts_ms`) is at the
//!    top level or inside `payload`. The collection is a top-level
//!    `collection`, else `source.collection`, else `source.table`; the
//!    document id is the top-level `key` (a scalar, or an object with one
//!    field), else the `id` (or `_id`) of `after`, else of `before`.
//!
//! The change's time is the event's `ts`, except for Debezium where it is
//! `source.ts_ms` (the time of the change in the source database) when present.
//! Any other event is not a change ([`parse_change`] returns `Ok(None)`).
//! An event of one of these shapes that is malformed — an unknown
//! operation, no collection, no document id, no document on insert or
//! update — is refused at ingest with [`crate::ErrorCode::InvalidCdcEvent`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Event;
use crate::time::Timestamp;

/// Longest collection name (it is a path segment of the lake layout).
pub const MAX_COLLECTION_NAME_LEN: usize = 64;
/// Longest document id, in bytes.
pub const MAX_DOC_ID_LEN: usize = 512;
/// Longest bookmark, in bytes.
pub const MAX_BOOKMARK_LEN: usize = 512;

/// The type prefix of collection events (format 1).
pub const COLLECTION_TYPE_PREFIX: &str = "collection.";
/// The type of unified change events (format 2).
pub const UNIFIED_CDC_TYPE: &str = "cdc";
/// The type (or type prefix, followed by `.`) of Debezium envelopes (format 3).
pub const DEBEZIUM_TYPE: &str = "debezium";

/// What a change does to its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// The document is created (or replaced, if it existed).
    Insert,
    /// The document is replaced by `after` (created if unseen).
    Update,
    /// The document is deleted: it becomes a tombstone.
    Delete,
}

impl ChangeOp {
    /// The name used in files and on the wire: `insert`, `update`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Insert => "insert",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }

    /// Parses [`ChangeOp::as_str`].
    pub fn parse(s: &str) -> Option<ChangeOp> {
        match s {
            "insert" => Some(ChangeOp::Insert),
            "update" => Some(ChangeOp::Update),
            "delete" => Some(ChangeOp::Delete),
            _ => None,
        }
    }

    /// A small integer for storage (0, 1, 2).
    pub fn code(self) -> i64 {
        match self {
            ChangeOp::Insert => 0,
            ChangeOp::Update => 1,
            ChangeOp::Delete => 2,
        }
    }

    /// The inverse of [`ChangeOp::code`].
    pub fn from_code(code: i64) -> Option<ChangeOp> {
        match code {
            0 => Some(ChangeOp::Insert),
            1 => Some(ChangeOp::Update),
            2 => Some(ChangeOp::Delete),
            _ => None,
        }
    }
}

/// One change of one document, whatever format it arrived in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The id of the event that carried it: a redelivered change is applied once.
    pub event_id: String,
    /// The collection.
    pub collection: String,
    /// The document id.
    pub doc_id: String,
    /// What happened.
    pub op: ChangeOp,
    /// When it happened (event time, ms).
    pub ts: Timestamp,
    /// The document before the change, if the producer sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The document after the change (`None` for deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The producer's bookmark (e.g. a SQLite bookmark), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookmark: Option<String>,
}

/// Why an event of a change format could not be read: the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeFault {
    /// The field at fault, e.g. `"type"`, `"docId"`, `"op"`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn fault(field: &'static str, message: impl Into<String>) -> ChangeFault {
    ChangeFault { field, message: message.into() }
}

/// Checks a collection name: 1-64 characters of `[A-Za-z0-9_-]`, starting with a letter or digit.
pub fn valid_collection_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COLLECTION_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a document id: 1-512 bytes without control characters.
pub fn valid_doc_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_DOC_ID_LEN && !id.chars().any(char::is_control)
}

/// Whether an event type is one of the change formats (so must parse as a change).
pub fn is_change_type(event_type: &str) -> bool {
    event_type.starts_with(COLLECTION_TYPE_PREFIX)
        || event_type == UNIFIED_CDC_TYPE
        || event_type == DEBEZIUM_TYPE
        || event_type.strip_prefix(DEBEZIUM_TYPE).is_some_and(|rest| rest.starts_with('.'))
}

/// Whether events of this type are read as changes ([`parse_change`]
/// answers `None` for every other type).
pub fn may_be_change(event_type: &str) -> bool {
    event_type.starts_with(COLLECTION_TYPE_PREFIX) || event_type == UNIFIED_CDC_TYPE || is_change_type(event_type)
}

/// Reads the change carried by `event`: `Ok(None)` when the event is not a
/// change, `Err` when it has a change format but is malformed.
pub fn parse_change(event: &Event) -> Result<Option<Change>, ChangeFault> {
    let ty = event.event_type.as_str();
    let change = if let Some(op) = ty.strip_prefix(COLLECTION_TYPE_PREFIX) {
        parse_collection_event(event, op)?
    } else if ty == UNIFIED_CDC_TYPE {
        parse_unified(event)?
    } else if is_change_type(ty) {
        parse_debezium(event)?
    } else {
        return Ok(None);
    };
    if !valid_collection_name(&change.collection) {
        return Err(fault(
            "collection",
            format!(
                "{:?} is not a collection name: 1-{MAX_COLLECTION_NAME_LEN} characters of [A-Za-z0-9_-], starting with a letter or digit",
                change.collection
            ),
        ));
    }
    if !valid_doc_id(&change.doc_id) {
        return Err(fault("docId", format!("document ids are 1-{MAX_DOC_ID_LEN} bytes without control characters")));
    }
    if change.bookmark.as_ref().is_some_and(|b| b.len() > MAX_BOOKMARK_LEN) {
        return Err(fault("bookmark", format!("bookmarks are at most {MAX_BOOKMARK_LEN} bytes")));
    }
    if change.op != ChangeOp::Delete && change.after.is_none() {
        return Err(fault("doc", format!("a {} needs the new document", change.op.as_str())));
    }
    Ok(Some(change))
}

/// Checks every change-format event of a validated batch; the error lists
/// each malformed one (`details.errors[] = {index, field, message}`, at most
/// [`crate::limits::MAX_REPORTED_ERRORS`]), so a refused batch stores nothing.
pub fn check_batch(events: &[Event]) -> Result<(), crate::ApiError> {
    let faults: Vec<(usize, ChangeFault)> =
        events.iter().enumerate().filter_map(|(i, e)| parse_change(e).err().map(|f| (i, f))).collect();
    let Some((first_index, first)) = faults.first() else { return Ok(()) };
    let errors: Vec<Value> = faults
        .iter()
        .take(crate::limits::MAX_REPORTED_ERRORS)
        .map(|(i, f)| serde_json::json!({"index": i, "field": f.field, "message": f.message}))
        .collect();
    let indices: Vec<usize> = faults.iter().map(|(i, _)| *i).collect();
    Err(crate::ApiError::new(
        crate::ErrorCode::InvalidCdcEvent,
        format!("invalid change event at index {first_index}: {} ({} in all)", first.message, faults.len()),
    )
    .with_details(serde_json::json!({"indices": indices, "errors": errors})))
}

/// A document id given as a string or a number.
fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn present(v: Option<&Value>) -> Option<Value> {
    v.filter(|v| !v.is_null()).cloned()
}

fn bookmark_of(v: Option<&Value>) -> Result<Option<String>, ChangeFault> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(fault("bookmark", "must be a string")),
    }
}

fn parse_collection_event(event: &Event, op: &str) -> Result<Change, ChangeFault> {
    let op = match op {
        "insert" | "created" | "create" => ChangeOp::Insert,
        "update" | "updated" => ChangeOp::Update,
        "delete" | "deleted" => ChangeOp::Delete,
        other => {
            return Err(fault(
                "type",
                format!(
                    "unknown collection operation {other:?}: use collection.insert, collection.update or collection.delete"
                ),
            ));
        }
    };
    let d = &event.data;
    let collection = match d.get("collection") {
        Some(Value::String(c)) => c.clone(),
        _ => return Err(fault("collection", "collection events need a string `collection`")),
    };
    let doc_id =
        id_of(d.get("docId")).ok_or_else(|| fault("docId", "collection events need `docId` (string or number)"))?;
    Ok(Change {
        event_id: event.id.clone(),
        collection,
        doc_id,
        op,
        ts: event.ts,
        before: present(d.get("prev")),
        after: if op == ChangeOp::Delete { None } else { present(d.get("doc")) },
        bookmark: bookmark_of(d.get("bookmark"))?,
    })
}

fn parse_unified(event: &Event) -> Result<Change, ChangeFault> {
    let d = &event.data;
    let name = match d.get("event") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(fault("event", "cdc events need `event`: \"<Noun>.created|updated|deleted\"")),
    };
    let (noun, op) = name.rsplit_once('.').unwrap_or(("", name));
    let op = match op {
        "created" => ChangeOp::Insert,
        "updated" => ChangeOp::Update,
        "deleted" => ChangeOp::Delete,
        other => {
            return Err(fault(
                "event",
                format!("unknown cdc operation {other:?}: use <Noun>.created, .updated or .deleted"),
            ));
        }
    };
    let mut data: Map<String, Value> = match d.get("data") {
        Some(Value::Object(m)) => m.clone(),
        _ => return Err(fault("data", "cdc events need an object `data` with the document and its `id`")),
    };
    let collection = match data.remove("type") {
        Some(Value::String(t)) => t,
        _ => noun.to_string(),
    };
    let doc_id =
        id_of(data.get("id")).ok_or_else(|| fault("data.id", "cdc events need `data.id` (string or number)"))?;
    data.remove("id");
    let meta = d.get("meta").and_then(Value::as_object);
    Ok(Change {
        event_id: event.id.clone(),
        collection,
        doc_id,
        op,
        ts: event.ts,
        before: present(meta.and_then(|m| m.get("prev"))),
        after: if op == ChangeOp::Delete { None } else { Some(Value::Object(data)) },
        bookmark: bookmark_of(meta.and_then(|m| m.get("bookmark")))?,
    })
}

fn parse_debezium(event: &Event) -> Result<Change, ChangeFault> {
    let top = &event.data;
    let envelope = match top.get("payload") {
        Some(Value::Object(p)) if p.contains_key("op") => p,
        _ => top,
    };
    let op = match envelope.get("op") {
        Some(Value::String(s)) => match s.as_str() {
            "c" | "r" => ChangeOp::Insert,
            "u" => ChangeOp::Update,
            "d" => ChangeOp::Delete,
            "t" => {
                return Err(fault("op", "Debezium truncate (op \"t\") is not supported: send one delete per document"));
            }
            other => return Err(fault("op", format!("unknown Debezium operation {other:?}: use c, u, d or r"))),
        },
        _ => return Err(fault("op", "Debezium envelopes need `op` (c, u, d or r)")),
    };
    let before = present(envelope.get("before"));
    let after = present(envelope.get("after"));
    let source = envelope.get("source").and_then(Value::as_object);
    let collection = match top.get("collection").or_else(|| source.and_then(|s| s.get("collection").or(s.get("table"))))
    {
        Some(Value::String(c)) => c.clone(),
        _ => {
            return Err(fault(
                "collection",
                "Debezium envelopes need `collection`, `source.collection` or `source.table`",
            ));
        }
    };
    let key_id = match top.get("key") {
        Some(Value::Object(k)) if k.len() == 1 => id_of(k.values().next()),
        Some(Value::Object(k)) if k.contains_key("payload") => match k.get("payload") {
            Some(Value::Object(p)) if p.len() == 1 => id_of(p.values().next()),
            other => id_of(other),
        },
        other => id_of(other),
    };
    let doc_of = |v: &Option<Value>| v.as_ref().and_then(|d| id_of(d.get("id")).or_else(|| id_of(d.get("_id"))));
    let doc_id = key_id
        .or_else(|| doc_of(&after))
        .or_else(|| doc_of(&before))
        .ok_or_else(|| fault("key", "Debezium envelopes need `key`, or an `id`/`_id` in `after` or `before`"))?;
    let ts = match source.and_then(|s| s.get("ts_ms")).and_then(Value::as_i64) {
        Some(ms) => Timestamp(ms),
        None => event.ts,
    };
    Ok(Change {
        event_id: event.id.clone(),
        collection,
        doc_id,
        op,
        ts,
        before,
        after: if op == ChangeOp::Delete { None } else { after },
        bookmark: bookmark_of(top.get("bookmark"))?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(ty: &str, data: Value) -> Event {
        Event {
            id: "e1".into(),
            ns: "acme".into(),
            ts: Timestamp(1_000),
            event_type: ty.into(),
            source: None,
            data: data.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn collection_events() {
        let c = parse_change(&event(
            "collection.update",
            json!({"collection":"users","docId":"u1","doc":{"n":2},"prev":{"n":1},"bookmark":"b7"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!((c.collection.as_str(), c.doc_id.as_str(), c.op), ("users", "u1", ChangeOp::Update));
        assert_eq!((c.before, c.after, c.bookmark), (Some(json!({"n":1})), Some(json!({"n":2})), Some("b7".into())));
        let d = parse_change(&event("collection.deleted", json!({"collection":"users","docId":7}))).unwrap().unwrap();
        assert_eq!((d.op, d.doc_id.as_str(), d.after), (ChangeOp::Delete, "7", None));
    }

    #[test]
    fn unified_events() {
        let c = parse_change(&event(
            "cdc",
            json!({"event":"User.created","data":{"type":"User","id":"u1","name":"Ada"},"meta":{"bookmark":"x"}}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!((c.collection.as_str(), c.doc_id.as_str(), c.op), ("User", "u1", ChangeOp::Insert));
        assert_eq!(c.after, Some(json!({"name":"Ada"})));
        assert_eq!(c.bookmark.as_deref(), Some("x"));
    }

    #[test]
    fn debezium_envelopes() {
        let c = parse_change(&event(
            "debezium",
            json!({"payload":{"op":"u","before":{"id":3,"v":1},"after":{"id":3,"v":2},"source":{"table":"orders","ts_ms":5000}}}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.collection.as_str(), c.doc_id.as_str(), c.op, c.ts),
            ("orders", "3", ChangeOp::Update, Timestamp(5000))
        );
        let d = parse_change(&event(
            "debezium.inventory.orders",
            json!({"op":"d","before":{"id":3},"key":{"id":3},"source":{"table":"orders"}}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!((d.op, d.ts, d.after), (ChangeOp::Delete, Timestamp(1_000), None));
        let r = parse_change(&event("debezium", json!({"op":"r","after":{"_id":"m1"},"source":{"collection":"m"}})))
            .unwrap()
            .unwrap();
        assert_eq!((r.op, r.doc_id.as_str()), (ChangeOp::Insert, "m1"));
    }

    #[test]
    fn other_events_are_not_changes() {
        assert_eq!(parse_change(&event("order.created", json!({"op":"x"}))).unwrap(), None);
        assert_eq!(parse_change(&event("debeziumish", json!({}))).unwrap(), None);
    }

    #[test]
    fn malformed_changes_name_the_field() {
        let cases = [
            ("collection.upsert", json!({"collection":"u","docId":"1","doc":{}}), "type"),
            ("collection.insert", json!({"docId":"1","doc":{}}), "collection"),
            ("collection.insert", json!({"collection":"u","doc":{}}), "docId"),
            ("collection.insert", json!({"collection":"u","docId":"1"}), "doc"),
            ("collection.insert", json!({"collection":"a/b","docId":"1","doc":{}}), "collection"),
            ("cdc", json!({"event":"User.merged","data":{"id":"1"}}), "event"),
            ("cdc", json!({"event":"User.created","data":{"name":"x"}}), "data.id"),
            ("debezium", json!({"op":"x","after":{"id":1},"source":{"table":"t"}}), "op"),
            ("debezium", json!({"op":"t","source":{"table":"t"}}), "op"),
            ("debezium", json!({"op":"c","after":{"id":1}}), "collection"),
            ("debezium", json!({"op":"c","after":{"v":1},"source":{"table":"t"}}), "key"),
        ];
        for (ty, data, field) in cases {
            let f = parse_change(&event(ty, data.clone())).unwrap_err();
            assert_eq!(f.field, field, "{ty} {data}: {}", f.message);
        }
    }
}
