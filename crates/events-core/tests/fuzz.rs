//! Property-based fuzzing of the pure parsers of events-core: event-type
//! patterns, ingest event validation and the change-capture formats.
//!
//! The number of cases comes from `EVENTS_FUZZ_CASES` (default 512); see
//! `docs/fuzzing.md` for long runs.

use events_core::cdc::{ChangeOp, is_change_type, parse_change, valid_collection_name, valid_doc_id};
use events_core::event::{EventLimits, encode_event, parse_event, valid_event_type};
use events_core::pattern::{Pattern, Segment};
use events_core::{Event, Timestamp};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn cases() -> u32 {
    std::env::var("EVENTS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------- patterns

/// A reference matcher written independently of the crate's: plain recursion
/// over (pattern segments, type parts).
fn reference_match(pattern: &[&str], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((&"**", rest)) => (0..=parts.len()).any(|k| reference_match(rest, &parts[k..])),
        Some((&"*", rest)) => !parts.is_empty() && reference_match(rest, &parts[1..]),
        Some((lit, rest)) => parts.first() == Some(lit) && reference_match(rest, &parts[1..]),
    }
}

/// Segments drawn from a small alphabet so that literals collide often.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ab]{1,2}",
        1 => "[a-zA-Z0-9_-]{1,6}",
        2 => Just("*".to_string()),
        2 => Just("**".to_string()),
    ]
}

fn pattern_text() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..8).prop_map(|s| s.join("."))
}

fn event_type() -> impl Strategy<Value = String> {
    prop::collection::vec("[ab]{1,2}", 1..8).prop_map(|s| s.join("."))
}

/// Arbitrary text biased towards the characters patterns care about.
fn pattern_noise() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(vec!['a', 'b', '.', '*', '_', '-', ' ', '$', 'é', '\0']), 0..40)
            .prop_map(|c| c.into_iter().collect()),
        any::<String>(),
        prop::collection::vec(segment(), 10..24).prop_map(|s| s.join(".")),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Parsing arbitrary text never panics, and whatever is accepted
    /// respects the documented limits and keeps its source text.
    #[test]
    fn pattern_parse_never_panics(src in pattern_noise()) {
        if let Ok(p) = Pattern::parse(&src) {
            prop_assert_eq!(p.as_str(), src.as_str());
            prop_assert!(!src.is_empty() && src.len() <= 256);
            prop_assert!(p.segments().len() <= 16);
            prop_assert_eq!(p.segments().len(), src.split('.').count());
            // No two `**` in a row.
            prop_assert!(!p.segments().windows(2).any(|w| w[0] == Segment::Any && w[1] == Segment::Any));
            // Matching never panics, whatever the type.
            let _ = p.matches(&src);
            let _ = p.matches("");
        }
    }

    /// The matcher agrees with the reference matcher on every accepted pattern.
    #[test]
    fn pattern_matches_like_the_reference(p in pattern_text(), ty in event_type()) {
        if let Ok(pattern) = Pattern::parse(&p) {
            let segs: Vec<&str> = p.split('.').collect();
            let parts: Vec<&str> = ty.split('.').collect();
            prop_assert_eq!(pattern.matches(&ty), reference_match(&segs, &parts), "{} vs {}", p, ty);
        }
    }

    /// `**` matches every event type (and any text at all).
    #[test]
    fn double_star_matches_everything(ty in prop_oneof![event_type(), any::<String>()]) {
        prop_assert!(Pattern::parse("**").unwrap().matches(&ty));
    }

    /// A pattern without wildcards matches exactly itself.
    #[test]
    fn a_literal_pattern_matches_exactly_itself(
        lit in prop::collection::vec("[ab]{1,2}", 1..6).prop_map(|s| s.join(".")),
        ty in prop_oneof![event_type(), any::<String>()],
    ) {
        let p = Pattern::parse(&lit).unwrap();
        prop_assert!(p.matches(&lit));
        prop_assert_eq!(p.matches(&ty), ty == lit);
        prop_assert_eq!(p.literal_prefix(), lit);
    }

    /// `prefix.**` matches the prefix itself and everything below it, and
    /// nothing else; the literal prefix is reported.
    #[test]
    fn a_prefix_pattern_matches_its_subtree(
        prefix in prop::collection::vec("[ab]{1,2}", 1..4).prop_map(|s| s.join(".")),
        ty in event_type(),
    ) {
        let p = Pattern::parse(&format!("{prefix}.**")).unwrap();
        let below = ty == prefix || ty.starts_with(&format!("{prefix}."));
        prop_assert_eq!(p.matches(&ty), below);
        prop_assert_eq!(p.literal_prefix(), prefix);
    }
}

// ---------------------------------------------------------------- events

const NOW: Timestamp = Timestamp(1_800_000_000_000);

/// Arbitrary JSON values of bounded size.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "[a-z.]{0,8}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values for the envelope fields, mixing valid and invalid ones.
fn envelope_value(valid: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        4 => valid.prop_map(Some),
        2 => json_value().prop_map(Some),
    ]
}

fn ts_value() -> BoxedStrategy<Value> {
    prop_oneof![
        (-40i64 * 86_400_000..10 * 60_000).prop_map(|d| Value::String(Timestamp(NOW.0 + d).to_iso())),
        Just(json!("2026-11-28T19:12:28.123+01:00")),
        Just(json!("not a date")),
        Just(json!("+262142-12-31T23:59:59Z")),
        Just(json!("-262143-01-01T00:00:00Z")),
        Just(Value::Null),
    ]
    .boxed()
}

/// An event object built field by field, so that most cases get past the
/// JSON syntax and exercise the field rules.
fn event_object() -> impl Strategy<Value = Value> {
    (
        envelope_value(
            prop_oneof![event_type().prop_map(Value::String), "[ -~]{0,140}".prop_map(Value::String)].boxed(),
        ),
        envelope_value(ts_value()),
        envelope_value(prop_oneof!["[!-~]{1,130}".prop_map(Value::String), Just(json!(""))].boxed()),
        envelope_value("[a-z]{0,140}".prop_map(Value::String).boxed()),
        envelope_value(json_value().boxed()),
        prop::collection::btree_map("[a-z_]{1,6}", json_value(), 0..4),
    )
        .prop_map(|(ty, ts, id, source, ns, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [("type", ty), ("ts", ts), ("id", id), ("source", source), ("ns", ns)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

/// Raw text: arbitrary strings, arbitrary JSON, or mutated event objects.
fn raw_event() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => json_value().prop_map(|v| v.to_string()),
        6 => event_object().prop_map(|v| v.to_string()),
        2 => (event_object(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, at, b)| {
            // One byte replaced, kept UTF-8 by replacing with ASCII.
            let mut bytes = v.to_string().into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = b & 0x7f;
            String::from_utf8_lossy(&bytes).into_owned()
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Validation never panics; an accepted event obeys every rule of the
    /// envelope, keeps every other field, and reading it back gives the
    /// submitted object (with `ns` moved to `_ns` and `ts` normalised).
    #[test]
    fn parse_event_accepts_only_valid_events(raw in raw_event(), max_bytes in prop_oneof![Just(1_000_000usize), 0usize..200]) {
        let limits = EventLimits { max_event_bytes: max_bytes, ..EventLimits::default() };
        let mut minted = 0;
        let mut new_id = || { minted += 1; format!("minted{minted}") };
        let result = parse_event(&raw, 3, "acme", NOW, &limits, &mut new_id);
        let parsed: Option<Map<String, Value>> = serde_json::from_str::<Value>(&raw).ok().and_then(|v| v.as_object().cloned());
        match result {
            Ok(event) => {
                prop_assert!(raw.len() <= max_bytes);
                let sent = parsed.expect("an accepted event is a JSON object");
                prop_assert!(valid_event_type(&event.event_type));
                prop_assert_eq!(Some(&Value::String(event.event_type.clone())), sent.get("type"));
                prop_assert_eq!(event.ns.as_str(), "acme");
                prop_assert!(event.ts.0 >= NOW.0 - limits.max_age_ms && event.ts.0 <= NOW.0 + limits.max_future_ms);
                prop_assert!(!event.id.is_empty() && event.id.len() <= 128 && event.id.bytes().all(|b| b.is_ascii_graphic()));
                match sent.get("id") {
                    None | Some(Value::Null) => prop_assert_eq!(event.id.as_str(), "minted1"),
                    Some(id) => {
                        prop_assert_eq!(id, &Value::String(event.id.clone()));
                        prop_assert_eq!(minted, 0);
                    }
                }
                for reserved in ["type", "ts", "id", "ns"] {
                    prop_assert!(!event.data.contains_key(reserved), "{} left in data", reserved);
                }
                // Every other field is kept unchanged.
                for (k, v) in &sent {
                    match k.as_str() {
                        "type" | "ts" | "id" => {}
                        "ns" => prop_assert_eq!(event.data.get("_ns"), Some(v)),
                        "source" if event.source.is_some() => prop_assert_eq!(v, &Value::String(event.source.clone().unwrap())),
                        "source" if v.is_null() => {}
                        "_ns" if sent.contains_key("ns") => {}
                        _ => prop_assert_eq!(event.data.get(k), Some(v), "field {} changed", k),
                    }
                }
                // The stored event survives a JSON round trip.
                let back: Event = serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
                prop_assert_eq!(&back, &event);
                // Reading it back gives the envelope fields again.
                let read = event.to_json();
                prop_assert_eq!(read.get("type"), sent.get("type"));
                prop_assert_eq!(read.get("ns"), Some(&json!("acme")));
                prop_assert_eq!(read["ts"].as_str().and_then(Timestamp::parse_iso), Some(event.ts));
            }
            Err(fault) => {
                prop_assert_eq!(fault.index, 3);
                prop_assert!(["", "type", "ts", "id"].contains(&fault.field.as_str()), "field {}", fault.field);
                prop_assert_eq!(fault.too_large, raw.len() > max_bytes);
                prop_assert_eq!(minted, 0, "no id is minted for a refused event");
            }
        }
    }
}

/// The validation rules written plainly over a `serde_json::Map`, as a
/// reference for the streaming encoder.
fn reference_event(
    raw: &str,
    now: Timestamp,
    limits: &EventLimits,
) -> Result<(Map<String, Value>, Option<String>), &'static str> {
    if raw.len() > limits.max_event_bytes {
        return Err("");
    }
    let Ok(Value::Object(mut data)) = serde_json::from_str::<Value>(raw) else { return Err("") };
    // Nesting counts every member written, also one a later duplicate key replaces.
    if serde_json::from_str::<Depth>(raw).map_or(true, |d| d.0 > events_core::limits::MAX_EVENT_DEPTH) {
        return Err("");
    }
    match data.remove("type") {
        Some(Value::String(t)) if valid_event_type(&t) => data.insert("\u{0}type".into(), Value::String(t)),
        _ => return Err("type"),
    };
    match data.remove("ts") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => match Timestamp::parse_iso(&s) {
            Some(ts) if ts.0 >= now.0 - limits.max_age_ms && ts.0 <= now.0 + limits.max_future_ms => {
                data.insert("\u{0}ts".into(), json!(ts.0));
            }
            _ => return Err("ts"),
        },
        Some(_) => return Err("ts"),
    }
    let id = match data.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(id)
        }
        Some(_) => return Err("id"),
    };
    match data.remove("source") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.len() <= 128 => {
            data.insert("\u{0}source".into(), Value::String(s));
        }
        Some(other) => {
            data.insert("source".into(), other);
        }
    }
    if let Some(ns) = data.remove("ns") {
        data.insert("_ns".into(), ns);
    }
    Ok((data, id))
}

/// The deepest nesting of arrays and objects of a JSON text, as read.
struct Depth(usize);

impl<'de> serde::Deserialize<'de> for Depth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Depth;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_unit<E>(self) -> Result<Depth, E> {
                Ok(Depth(0))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Depth, A::Error> {
                let mut deepest = 0;
                while let Some(Depth(d)) = seq.next_element()? {
                    deepest = deepest.max(d);
                }
                Ok(Depth(deepest + 1))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Depth, A::Error> {
                let mut deepest = 0;
                while let Some((serde::de::IgnoredAny, Depth(d))) = map.next_entry()? {
                    deepest = deepest.max(d);
                }
                Ok(Depth(deepest + 1))
            }
        }
        d.deserialize_any(V)
    }
}

/// Raw events that stress what a copy of the JSON text must not let
/// through: deep nesting, huge numbers, escapes, duplicate and escaped keys.
fn tricky_event() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        (60usize..68).prop_map(|d| format!("{}1{}", "[".repeat(d), "]".repeat(d))),
        (60usize..68).prop_map(|d| format!("{}\"]}}[{{\"{}", "[".repeat(d), "]".repeat(d))),
        (1usize..3).prop_map(|_| "1e400".to_string()),
        Just("-1e308".to_string()),
        Just("1E-999".to_string()),
        (300usize..330).prop_map(|n| "9".repeat(n)),
        Just("18446744073709551616".to_string()),
        Just("\"\\ud800\"".to_string()),
        Just("\"\\ud83d\\ude00\"".to_string()),
        Just("\"\\u00e9\\n\\t\\\"\"".to_string()),
        Just("{\"a\" : [ 1 , 2 ] }".to_string()),
        Just("\"\\\\u\"".to_string()),
    ];
    let key = prop_oneof![
        Just("x".to_string()),
        Just("x".to_string()),
        Just("t\\u0079pe".to_string()),
        Just("n\\u0073".to_string()),
        Just("source".to_string()),
        Just("_ns".to_string()),
        Just("ns".to_string()),
        Just("k\\\"q".to_string()),
    ];
    (
        prop::collection::vec((key, member), 0..4),
        prop_oneof![Just(r#""type":"a.b""#), Just(r#""type":"a.b","id":"i1""#)],
    )
        .prop_map(|(members, envelope)| {
            let mut text = format!("{{{envelope}");
            for (k, v) in members {
                text.push_str(&format!(",\"{k}\":{v}"));
            }
            text.push('}');
            text
        })
}

proptest! {
    #![proptest_config(config())]

    /// The streaming encoder accepts exactly what the plain reference
    /// accepts, and what it stores decodes to the reference's event.
    #[test]
    fn encode_event_agrees_with_the_reference(
        raw in prop_oneof![raw_event(), tricky_event()],
        max_bytes in prop_oneof![4 => Just(1_000_000usize), 1 => 0usize..200],
    ) {
        let limits = EventLimits { max_event_bytes: max_bytes, ..EventLimits::default() };
        let mut out = String::from("[");
        let before = out.clone();
        let result = encode_event(&raw, 0, "acme", NOW, &limits, &mut || "minted".to_string(), &mut out);
        match (result, reference_event(&raw, NOW, &limits)) {
            (Ok(head), Ok((mut data, id))) => {
                // The stored form decodes as a writer's log row does: an array of events.
                out.push(']');
                let row: Vec<Event> = serde_json::from_str(&out).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
                let stored = row.into_iter().next().unwrap();
                prop_assert_eq!(Some(Value::String(stored.event_type.clone())), data.remove("\u{0}type"));
                prop_assert_eq!(data.remove("\u{0}ts").map_or(NOW.0, |v| v.as_i64().unwrap()), stored.ts.0);
                prop_assert_eq!(data.remove("\u{0}source").map(|v| v.as_str().unwrap().to_string()), stored.source.clone());
                prop_assert_eq!(id.clone().unwrap_or_else(|| "minted".into()), stored.id.clone());
                prop_assert_eq!(&data, &stored.data);
                prop_assert_eq!(stored.ns.as_str(), "acme");
                prop_assert_eq!(head.ts, stored.ts);
                prop_assert_eq!(head.client_id, id);
            }
            (Err(fault), Err(field)) => {
                prop_assert_eq!(fault.field.as_str(), field);
                prop_assert_eq!(&out, &before, "a refused event leaves nothing in the output");
            }
            (got, want) => prop_assert!(false, "encoder {:?}, reference {:?} for {}", got.map(|_| ()), want.map(|_| ()), raw),
        }
    }
}

// ---------------------------------------------------------------- change capture

fn scalar_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z0-9]{1,6}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!("")),
        Just(json!("a\u{7}b")),
        json_value(),
    ]
}

fn collection_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[a-z][a-z0-9_-]{0,8}".prop_map(Value::String),
        1 => Just(json!("a/b")),
        1 => Just(json!("-x")),
        1 => Just(Value::String("c".repeat(65))),
        1 => json_value(),
    ]
}

fn maybe(v: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.7, v)
}

fn doc() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::collection::btree_map("[a-z_]{1,4}", json_value(), 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        2 => (scalar_id(), prop::sample::select(vec!["id", "_id", "k"])).prop_map(|(id, k)| json!({ k: id })),
        1 => json_value(),
    ]
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect())
}

/// A change-format event (or a near miss) of one of the three formats.
fn change_event() -> impl Strategy<Value = (String, Value)> {
    let bookmark = || {
        maybe(
            prop_oneof![3 => "[a-z0-9]{0,8}".prop_map(Value::String), 1 => Just(Value::String("b".repeat(513))), 1 => json_value()],
        )
    };
    let collection = (
        prop::sample::select(vec![
            "insert", "created", "create", "update", "updated", "delete", "deleted", "upsert", "",
        ]),
        maybe(collection_name()),
        maybe(scalar_id()),
        maybe(doc()),
        maybe(doc()),
        bookmark(),
    )
        .prop_map(|(op, c, id, d, prev, b)| {
            (
                format!("collection.{op}"),
                object(vec![("collection", c), ("docId", id), ("doc", d), ("prev", prev), ("bookmark", b)]),
            )
        });
    let unified = (
        maybe(prop_oneof![
            ("[A-Z][a-z]{0,5}", prop::sample::select(vec!["created", "updated", "deleted", "merged"]))
                .prop_map(|(n, op)| Value::String(format!("{n}.{op}"))),
            Just(json!("created")),
            json_value(),
        ]),
        maybe(prop_oneof![
            (
                maybe(collection_name()),
                maybe(scalar_id()),
                prop::collection::btree_map("[a-z]{1,4}", json_value(), 0..3)
            )
                .prop_map(|(t, id, rest)| {
                    let mut m: Map<String, Value> = rest.into_iter().collect();
                    if let Some(t) = t {
                        m.insert("type".into(), t);
                    }
                    if let Some(id) = id {
                        m.insert("id".into(), id);
                    }
                    Value::Object(m)
                }),
            json_value(),
        ]),
        maybe(prop_oneof![
            (maybe(doc()), bookmark()).prop_map(|(p, b)| object(vec![("prev", p), ("bookmark", b)])),
            json_value()
        ]),
    )
        .prop_map(|(e, d, m)| ("cdc".to_string(), object(vec![("event", e), ("data", d), ("meta", m)])));
    let debezium = (
        prop::sample::select(vec!["debezium", "debezium.inv.orders"]),
        maybe(prop_oneof![
            prop::sample::select(vec!["c", "u", "d", "r", "t", "x"]).prop_map(|s| json!(s)),
            json_value()
        ]),
        maybe(doc()),
        maybe(doc()),
        maybe(prop_oneof![
            (maybe(collection_name()), maybe(collection_name()), maybe(any::<i64>().prop_map(|n| json!(n))))
                .prop_map(|(c, t, ts)| object(vec![("collection", c), ("table", t), ("ts_ms", ts)])),
            json_value(),
        ]),
        maybe(collection_name()),
        maybe(prop_oneof![
            scalar_id(),
            scalar_id().prop_map(|v| json!({"id": v})),
            scalar_id().prop_map(|v| json!({"payload": {"id": v}})),
            json_value()
        ]),
        any::<bool>(),
        bookmark(),
    )
        .prop_map(|(ty, op, before, after, source, coll, key, wrap, b)| {
            let envelope = object(vec![("op", op), ("before", before), ("after", after), ("source", source)]);
            let mut top = if wrap { json!({"payload": envelope}) } else { envelope };
            let m = top.as_object_mut().unwrap();
            for (k, v) in [("collection", coll), ("key", key), ("bookmark", b)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            (ty.to_string(), top)
        });
    prop_oneof![collection, unified, debezium, ("[a-z.]{1,12}", json_value()).prop_map(|(t, v)| (t, v))]
}

fn as_event(ty: String, data: Value) -> Event {
    let data = match data {
        Value::Object(m) => m,
        other => [("value".to_string(), other)].into_iter().collect(),
    };
    Event { id: "e1".into(), ns: "acme".into(), ts: Timestamp(1_000), event_type: ty, source: None, data }
}

proptest! {
    #![proptest_config(config())]

    /// The change parsers never panic; a change-format event either parses
    /// to a change that obeys every documented rule or is refused; any other
    /// event is not a change; batch checking agrees with the single parser.
    #[test]
    fn change_parsers_accept_only_well_formed_changes((ty, data) in change_event()) {
        let event = as_event(ty, data);
        let parsed = parse_change(&event);
        if !is_change_type(&event.event_type) {
            prop_assert_eq!(parsed.clone(), Ok(None));
        }
        match &parsed {
            Ok(Some(c)) => {
                prop_assert!(is_change_type(&event.event_type));
                prop_assert_eq!(c.event_id.as_str(), "e1");
                prop_assert!(valid_collection_name(&c.collection), "collection {:?}", c.collection);
                prop_assert!(valid_doc_id(&c.doc_id), "doc id {:?}", c.doc_id);
                prop_assert!(c.bookmark.as_ref().is_none_or(|b| b.len() <= 512));
                prop_assert_eq!(c.after.is_some(), c.op != ChangeOp::Delete);
                prop_assert!(c.after.as_ref().is_none_or(|a| !a.is_null()));
                prop_assert!(c.before.as_ref().is_none_or(|b| !b.is_null()));
                if !event.event_type.starts_with("debezium") {
                    prop_assert_eq!(c.ts, event.ts);
                }
                // A change survives its own serialisation.
                let back: events_core::cdc::Change = serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap();
                prop_assert_eq!(&back, c);
                prop_assert_eq!(ChangeOp::parse(c.op.as_str()), Some(c.op));
                prop_assert_eq!(ChangeOp::from_code(c.op.code()), Some(c.op));
            }
            Ok(None) => prop_assert!(!is_change_type(&event.event_type)),
            Err(f) => {
                prop_assert!(is_change_type(&event.event_type));
                prop_assert!(!f.message.is_empty());
            }
        }
        let batch = events_core::cdc::check_batch(std::slice::from_ref(&event));
        prop_assert_eq!(batch.is_err(), parsed.is_err());
    }

    /// A well-formed collection event always parses, to exactly what was sent.
    #[test]
    fn well_formed_collection_events_round_trip(
        op in prop::sample::select(vec![ChangeOp::Insert, ChangeOp::Update, ChangeOp::Delete]),
        collection in "[a-z0-9][a-z0-9_-]{0,63}",
        doc_id in "[^\\p{Cc}]{1,40}",
        doc in prop::collection::btree_map("[a-z]{1,4}", json_value(), 0..4),
        bookmark in prop::option::of("[a-z0-9]{0,40}"),
    ) {
        let doc = Value::Object(doc.into_iter().collect());
        let data = json!({"collection": collection, "docId": doc_id, "doc": doc, "bookmark": bookmark});
        let c = parse_change(&as_event(format!("collection.{}", op.as_str()), data)).unwrap().unwrap();
        prop_assert_eq!((c.collection.as_str(), c.doc_id.as_str(), c.op), (collection.as_str(), doc_id.as_str(), op));
        prop_assert_eq!(c.after, (op != ChangeOp::Delete).then_some(doc));
        prop_assert_eq!(c.bookmark, bookmark);
    }
}
