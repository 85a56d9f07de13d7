//! What the encoder reads of an event, in whichever form the event is.
//!
//! The lake relay reads events in the writer's stored form (the JSON of an
//! [`Event`]). Decoding each into an [`Event`] builds a map of every `data`
//! member, and writing the file then serialises `data` again. A
//! [`StoredEvent`] instead borrows from the stored text: the envelope fields,
//! the `data` object's text as is (the `data` column), and its top-level
//! members undecoded, of which the encoder reads only the few scalars that
//! become typed columns. Both forms implement [`EventView`], and the encoder
//! takes either with the same result.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use events_core::{Event, Timestamp};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// A scalar `data` member, as the typed columns read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// `true` or `false`.
    Bool(bool),
    /// A number: its value as a 64-bit integer when it is one, and as a double.
    Number {
        /// The integer, when the number is one that fits.
        int: Option<i64>,
        /// The number as a double.
        float: f64,
    },
    /// A string.
    Str(Cow<'a, str>),
    /// `null`, an object or an array.
    Other,
}

impl<'a> Scalar<'a> {
    fn of_value(v: &'a Value) -> Self {
        match v {
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => Scalar::Number { int: n.as_i64(), float: n.as_f64().unwrap_or(f64::NAN) },
            Value::String(s) => Scalar::Str(Cow::Borrowed(s)),
            _ => Scalar::Other,
        }
    }

    /// Reads a member's JSON text the way `serde_json::Value` would.
    fn of_json(raw: &'a RawValue) -> Self {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b't') => Scalar::Bool(true),
            Some(b'f') => Scalar::Bool(false),
            // Without an escape, the text between the quotes is the string.
            Some(b'"') if !text.contains('\\') => Scalar::Str(Cow::Borrowed(&text[1..text.len() - 1])),
            Some(b'"') => serde_json::from_str::<String>(text).map_or(Scalar::Other, |s| Scalar::Str(Cow::Owned(s))),
            Some(b'-' | b'0'..=b'9') => match serde_json::from_str::<serde_json::Number>(text) {
                Ok(n) => Scalar::Number { int: n.as_i64(), float: n.as_f64().unwrap_or(f64::NAN) },
                Err(_) => Scalar::Other,
            },
            _ => Scalar::Other,
        }
    }

    /// The number as a 64-bit integer, if it is one that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Scalar::Number { int, .. } => *int,
            _ => None,
        }
    }

    /// The number as a double, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Number { float, .. } => Some(*float),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What the encoder reads of one event.
pub trait EventView {
    /// The event id.
    fn id(&self) -> &str;
    /// The namespace.
    fn ns(&self) -> &str;
    /// The event time.
    fn ts(&self) -> Timestamp;
    /// The event type.
    fn event_type(&self) -> &str;
    /// The producer, if any.
    fn source(&self) -> Option<&str>;
    /// The `data` object as JSON text.
    fn data_json(&self) -> Cow<'_, str>;
    /// The top-level `data` member `key` (the last one when repeated).
    fn member(&self, key: &str) -> Option<Scalar<'_>> {
        self.member_at(&[key])
    }
    /// The `data` value at `path`, if every step before the last is an
    /// object holding the key.
    fn member_at(&self, path: &[&str]) -> Option<Scalar<'_>>;
    /// Every top-level `data` member, each name once (with its last value).
    fn for_each_member(&self, f: &mut dyn FnMut(&str, Scalar<'_>));
    /// Sets `out[plan.slot(name)]` to the value of each top-level member
    /// `plan` names (the last one, when a name repeats), in one pass over
    /// the members; slots of absent members are left as they are.
    fn read_members<'s>(&'s self, plan: &MemberPlan, out: &mut [Option<Scalar<'s>>]);
}

/// FNV-1a, for the few short member names of a [`MemberPlan`].
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(events_core::hash::FNV1A_OFFSET)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = events_core::hash::fnv1a_extend(self.0, bytes);
    }
}

/// The top-level `data` members an encoder reads, each with a slot in a
/// per-event array filled by [`EventView::read_members`]: one pass over an
/// event's members, instead of a search of them for every column.
#[derive(Debug, Clone, Default)]
pub struct MemberPlan {
    slots: HashMap<String, usize, BuildHasherDefault<Fnv>>,
}

impl MemberPlan {
    /// A plan for `names` (each gets one slot, repeats share it).
    pub fn new<'n>(names: impl IntoIterator<Item = &'n str>) -> Self {
        let mut slots: HashMap<String, usize, BuildHasherDefault<Fnv>> = HashMap::default();
        for name in names {
            let next = slots.len();
            slots.entry(name.to_string()).or_insert(next);
        }
        MemberPlan { slots }
    }

    /// The slot of `name`, if the plan reads it.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.slots.get(name).copied()
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the plan reads no member.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl EventView for Event {
    fn id(&self) -> &str {
        &self.id
    }
    fn ns(&self) -> &str {
        &self.ns
    }
    fn ts(&self) -> Timestamp {
        self.ts
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
    fn data_json(&self) -> Cow<'_, str> {
        Cow::Owned(serde_json::to_string(&self.data).expect("a JSON map serialises"))
    }
    fn member_at(&self, path: &[&str]) -> Option<Scalar<'_>> {
        let (last, outer) = path.split_last()?;
        let mut members = &self.data;
        for key in outer {
            members = members.get(*key)?.as_object()?;
        }
        members.get(*last).map(Scalar::of_value)
    }
    fn for_each_member(&self, f: &mut dyn FnMut(&str, Scalar<'_>)) {
        for (key, value) in &self.data {
            f(key, Scalar::of_value(value));
        }
    }
    fn read_members<'s>(&'s self, plan: &MemberPlan, out: &mut [Option<Scalar<'s>>]) {
        assert_eq!(out.len(), plan.len(), "one slot per planned member");
        for (key, value) in &self.data {
            if let Some(slot) = plan.slot(key) {
                out[slot] = Some(Scalar::of_value(value));
            }
        }
    }
}

/// An event borrowed from its stored JSON (see the module documentation).
#[derive(Debug)]
pub struct StoredEvent<'a> {
    id: Cow<'a, str>,
    ns: Cow<'a, str>,
    ts: Timestamp,
    event_type: Cow<'a, str>,
    source: Option<Cow<'a, str>>,
    data: &'a RawValue,
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

#[derive(Deserialize)]
struct StoredFields<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    ns: Cow<'a, str>,
    ts: Timestamp,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(default, borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// An empty `data` object, for stored events without one.
fn empty_data() -> &'static RawValue {
    static EMPTY: std::sync::LazyLock<Box<RawValue>> =
        std::sync::LazyLock::new(|| RawValue::from_string("{}".into()).expect("valid JSON"));
    &EMPTY
}

impl<'a> StoredEvent<'a> {
    /// Reads one stored event; its `data` members are split but not decoded.
    pub fn parse(json: &'a str) -> Result<Self, serde_json::Error> {
        let fields: StoredFields<'a> = serde_json::from_str(json)?;
        let data: &'a RawValue = fields.data.unwrap_or_else(|| empty_data());
        let members: Vec<(BorrowedKey<'a>, &'a RawValue)> = serde_json::from_str::<MemberList<'a>>(data.get())?.0;
        Ok(StoredEvent {
            id: fields.id,
            ns: fields.ns,
            ts: fields.ts,
            event_type: fields.event_type,
            source: fields.source,
            data,
            members: members.into_iter().map(|(k, v)| (k.0, v)).collect(),
        })
    }

    /// The event, decoded whole.
    pub fn to_event(&self) -> Result<Event, serde_json::Error> {
        Ok(Event {
            id: self.id.to_string(),
            ns: self.ns.to_string(),
            ts: self.ts,
            event_type: self.event_type.to_string(),
            source: self.source.as_ref().map(|s| s.to_string()),
            data: serde_json::from_str(self.data.get())?,
        })
    }
}

impl EventView for StoredEvent<'_> {
    fn id(&self) -> &str {
        &self.id
    }
    fn ns(&self) -> &str {
        &self.ns
    }
    fn ts(&self) -> Timestamp {
        self.ts
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
    fn data_json(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.data.get())
    }
    fn member_at(&self, path: &[&str]) -> Option<Scalar<'_>> {
        let (first, rest) = path.split_first()?;
        let mut value: &RawValue = self.members.iter().rev().find(|(k, _)| k == first)?.1;
        for key in rest {
            if !value.get().starts_with('{') {
                return None;
            }
            let members = serde_json::from_str::<MemberList<'_>>(value.get()).ok()?.0;
            value = members.into_iter().rev().find(|(k, _)| k.0 == *key)?.1;
        }
        Some(Scalar::of_json(value))
    }
    fn for_each_member(&self, f: &mut dyn FnMut(&str, Scalar<'_>)) {
        for (i, (key, value)) in self.members.iter().enumerate() {
            // A repeated name counts once, with its last value (as a map keeps it).
            if self.members[i + 1..].iter().any(|(later, _)| later == key) {
                continue;
            }
            f(key, Scalar::of_json(value));
        }
    }
    fn read_members<'s>(&'s self, plan: &MemberPlan, out: &mut [Option<Scalar<'s>>]) {
        assert_eq!(out.len(), plan.len(), "one slot per planned member");
        // In order, so a repeated name ends with its last value.
        for (key, value) in &self.members {
            if let Some(slot) = plan.slot(key) {
                out[slot] = Some(Scalar::of_json(value));
            }
        }
    }
}

/// A JSON string borrowed from the input when it has no escapes.
struct BorrowedKey<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BorrowedKey<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<BorrowedKey<'de>, E> {
                Ok(BorrowedKey(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<BorrowedKey<'de>, E> {
                Ok(BorrowedKey(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The members of a JSON object in order, values undecoded.
struct MemberList<'a>(Vec<(BorrowedKey<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for MemberList<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MemberList<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<MemberList<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<BorrowedKey<'de>, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(MemberList(members))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_events;
    use crate::encode::encode_events_with;
    use crate::testdata::{realistic_events, varied_events};
    use crate::{DataColumn, observe_columns, partition_by_hour};
    use arrow_array::RecordBatch;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn batches(file: Vec<u8>) -> Vec<RecordBatch> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap().build().unwrap();
        reader.map(Result::unwrap).collect()
    }

    /// The same events, encoded from decoded events and from their stored
    /// JSON, give files with the same rows and typed columns; only the text
    /// of `data` may differ in layout, never in meaning.
    #[test]
    fn stored_events_encode_like_decoded_ones() {
        let mut events = varied_events(300, 7);
        events.extend(realistic_events(300, 8));
        let stored: Vec<String> = events.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
        let views: Vec<StoredEvent<'_>> = stored.iter().map(|s| StoredEvent::parse(s).unwrap()).collect();
        for (view, event) in views.iter().zip(&events) {
            assert_eq!(&view.to_event().unwrap(), event);
        }
        let observed = observe_columns(&events);
        assert_eq!(observe_columns(&views), observed);
        let columns: Vec<DataColumn> = observed.into_iter().map(|(name, kind)| DataColumn { name, kind }).collect();
        let by_event = partition_by_hour(&events);
        let by_view = partition_by_hour(&views);
        assert_eq!(by_event.keys().collect::<Vec<_>>(), by_view.keys().collect::<Vec<_>>());
        for (part, group) in &by_event {
            let a = encode_events_with(group, &columns).unwrap();
            let b = encode_events_with(&by_view[part], &columns).unwrap();
            assert_eq!(decode_events(&a).unwrap(), decode_events(&b).unwrap());
            let (a, b) = (batches(a), batches(b));
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                for name in x.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n != "data") {
                    assert_eq!(x.column_by_name(&name), y.column_by_name(&name), "column {name}");
                }
            }
        }
    }

    /// Stored text keeps a client's layout: whitespace, member order and a
    /// repeated name (whose last value counts, as in a map).
    #[test]
    fn members_are_read_as_a_map_reads_them() {
        let text = r#"{"data":{ "statusCode" : 200 , "userId":"u\u0031","userId":"u2","n":1.5,"big":18446744073709551615,"x":null,"o":{"a":1}},"id":"e","ns":"acme","ts":5,"type":"t"}"#;
        let view = StoredEvent::parse(text).unwrap();
        let event: Event = serde_json::from_str(text).unwrap();
        assert_eq!(view.to_event().unwrap(), event);
        for key in ["statusCode", "userId", "n", "big", "x", "o", "missing"] {
            assert_eq!(view.member(key), event.member(key), "{key}");
        }
        let mut seen = Vec::new();
        view.for_each_member(&mut |k, v| seen.push((k.to_string(), v.as_str().map(str::to_string))));
        assert_eq!(seen.iter().filter(|(k, _)| k == "userId").count(), 1);
        assert!(seen.contains(&("userId".to_string(), Some("u2".to_string()))));
        assert_eq!(crate::schema::DerivedFields::of(&view), crate::schema::DerivedFields::of(&event));
    }
}
