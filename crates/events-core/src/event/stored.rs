//! Validation straight into the stored form.
//!
//! The writer keeps each accepted event as the JSON of an [`Event`]:
//! `{"data":{…},"id":…,"ns":…,"ts":…,"type":…,"source"?:…}`. Building that
//! through a `serde_json::Map` allocates every key and value twice (once to
//! parse, once to serialise). [`encode_event`] instead reads the submitted
//! object once, member by member, copies every data member's JSON text
//! unchanged into the output, and checks only the envelope fields. Decoding
//! the output as an [`Event`] gives exactly what [`parse_event`] gives: that
//! function is this one followed by a decode, so the rules live here alone.
//!
//! [`parse_event`]: super::parse_event

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::Deserializer;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{EventFault, EventLimits, valid_event_id, valid_event_type};
use crate::limits::{MAX_EVENT_DEPTH, MAX_EVENT_TYPE_LEN, MIN_EVENT_TYPE_LEN};
use crate::time::Timestamp;

/// What the writer needs to know of one encoded event besides its JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncodedHead {
    /// Event time.
    pub ts: Timestamp,
    /// The id the client gave, which the writer deduplicates; `None` when
    /// the server made the id (new and random: nothing to deduplicate).
    pub client_id: Option<String>,
    /// The type may carry a change ([`crate::cdc::may_be_change`]).
    pub maybe_change: bool,
}

/// A submitted object's envelope members, as found (last one wins, as in a
/// `serde_json::Map`), and the data members already written out.
#[derive(Default)]
struct Envelope<'a> {
    event_type: Option<&'a RawValue>,
    ts: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    source: Option<&'a RawValue>,
    ns: Option<&'a RawValue>,
}

/// Validates one raw event and appends its stored form to `out`.
///
/// `new_id` is called only when the event has no `id`. On a fault `out` is
/// left as it was.
pub fn encode_event(
    raw: &str,
    index: usize,
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
    new_id: &mut dyn FnMut() -> String,
    out: &mut String,
) -> Result<EncodedHead, EventFault> {
    encode_with_type(raw, index, ns, now, limits, new_id, out).map(|(head, _)| head)
}

/// [`encode_event`], also answering where in `out` the event's type was written.
fn encode_with_type(
    raw: &str,
    index: usize,
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
    new_id: &mut dyn FnMut() -> String,
    out: &mut String,
) -> Result<(EncodedHead, std::ops::Range<usize>), EventFault> {
    let fault = |field: &str, message: String| EventFault { index, field: field.into(), message, too_large: false };
    if raw.len() > limits.max_event_bytes {
        return Err(EventFault {
            too_large: true,
            ..fault("", format!("event is {} bytes, more than the limit of {}", raw.len(), limits.max_event_bytes))
        });
    }
    if needs_full_check(raw.as_bytes()) {
        if nesting_depth(raw.as_bytes()) > MAX_EVENT_DEPTH {
            return Err(fault("", format!("event nests objects and arrays deeper than {MAX_EVENT_DEPTH} levels")));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(raw) {
            return Err(fault("", format!("invalid JSON: {e}")));
        }
    }
    let start = out.len();
    let result = encode_members(raw, out)
        .map_err(|message| ("", message))
        .and_then(|envelope| finish(envelope, ns, now, limits, new_id, out))
        .map_err(|(field, message)| fault(field, message));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Most `{` and `[` in an event copied without a full check; more may nest
/// deeper than [`MAX_EVENT_DEPTH`].
const MAX_OPENS_WITHOUT_CHECK: usize = MAX_EVENT_DEPTH;
/// Longest run of digits copied without a full decode; a longer integer
/// may be too large for a double, which a decode refuses.
const MAX_DIGITS_WITHOUT_CHECK: usize = 300;

/// Where a byte of JSON text falls, as [`Strings::step`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteAt {
    /// Outside every string (an opening quote counts as outside).
    Outside,
    /// Inside a string, or its closing quote.
    InString,
    /// Inside a string, right after a backslash.
    Escaped,
}

/// Follows the strings of JSON text byte by byte, so scanners can skip them.
#[derive(Default)]
struct Strings {
    in_string: bool,
    escaped: bool,
}

impl Strings {
    /// Classifies `b`, the next byte, and moves past it.
    fn step(&mut self, b: u8) -> ByteAt {
        if !self.in_string {
            self.in_string = b == b'"';
            return ByteAt::Outside;
        }
        if std::mem::take(&mut self.escaped) {
            return ByteAt::Escaped;
        }
        match b {
            b'\\' => self.escaped = true,
            b'"' => self.in_string = false,
            _ => {}
        }
        ByteAt::InString
    }
}

/// Whether `raw` may hold what the syntax check of a raw copy lets through
/// but a decode refuses: nesting past [`MAX_EVENT_DEPTH`], a number out of
/// range, an unpaired surrogate escape. Conservative: any `\u` escape in a
/// string, any exponent or long run of digits in a number, or many brackets
/// send the event through a full check first, so whatever is stored always
/// decodes. Text inside strings is only looked at for escapes, so a URL such
/// as `shop.example.com` (a `.` before an `e`) is no exponent.
fn needs_full_check(raw: &[u8]) -> bool {
    let (mut opens, mut digits, mut prev) = (0usize, 0usize, 0u8);
    let mut strings = Strings::default();
    for &b in raw {
        match strings.step(b) {
            ByteAt::Escaped if b == b'u' => return true,
            ByteAt::Escaped | ByteAt::InString => continue,
            ByteAt::Outside => {}
        }
        match b {
            b'{' | b'[' => opens += 1,
            b'e' | b'E' if prev.is_ascii_digit() || prev == b'.' => return true,
            _ => {}
        }
        digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
        if opens > MAX_OPENS_WITHOUT_CHECK || digits > MAX_DIGITS_WITHOUT_CHECK {
            return true;
        }
        prev = b;
    }
    false
}

/// The deepest nesting of objects and arrays in `json` (valid JSON).
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut strings = Strings::default();
    for &b in json {
        if strings.step(b) != ByteAt::Outside {
            continue;
        }
        match b {
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Writes `{"data":{<data members>` and collects the envelope.
fn encode_members<'a>(raw: &'a str, out: &mut String) -> Result<Envelope<'a>, String> {
    out.push_str("{\"data\":{");
    let mut de = serde_json::Deserializer::from_str(raw);
    let envelope = de.deserialize_map(MembersVisitor { out, first: true }).and_then(|e| de.end().map(|()| e));
    envelope.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => "event must be a JSON object".to_string(),
        _ => format!("invalid JSON: {e}"),
    })
}

struct MembersVisitor<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'de> Visitor<'de> for MembersVisitor<'_> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        let mut envelope = Envelope::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            match key.as_ref() {
                "type" => envelope.event_type = Some(value),
                "ts" => envelope.ts = Some(value),
                "id" => envelope.id = Some(value),
                "source" => envelope.source = Some(value),
                "ns" => envelope.ns = Some(value),
                _ => self.member(&key, value.get()),
            }
        }
        Ok(envelope)
    }
}

impl MembersVisitor<'_> {
    fn member(&mut self, key: &str, json: &str) {
        write_member(self.out, &mut self.first, key, json);
    }
}

fn write_member(out: &mut String, first: &mut bool, key: &str, json: &str) {
    if !std::mem::take(first) {
        out.push(',');
    }
    write_string(out, key);
    out.push(':');
    out.push_str(json);
}

/// Checks the envelope and writes the rest of the object: the members that
/// stay data (`_ns`, a `source` that is not a short string), then the
/// envelope fields.
fn finish(
    envelope: Envelope<'_>,
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
    new_id: &mut dyn FnMut() -> String,
    out: &mut String,
) -> Result<(EncodedHead, std::ops::Range<usize>), (&'static str, String)> {
    let event_type = match envelope.event_type.map(as_string) {
        Some(Some(t)) if valid_event_type(&t) => t,
        Some(Some(_)) => {
            return Err((
                "type",
                format!("must be {MIN_EVENT_TYPE_LEN}-{MAX_EVENT_TYPE_LEN} characters of [A-Za-z0-9._-]"),
            ));
        }
        Some(None) => return Err(("type", "must be a string".into())),
        None => return Err(("type", "is required".into())),
    };
    let ts = match envelope.ts.filter(|v| !is_null(v)) {
        None => now,
        Some(raw) => {
            let Some(s) = as_string(raw) else { return Err(("ts", "must be an ISO-8601 string".into())) };
            match Timestamp::parse_iso(&s) {
                Some(ts) if ts.as_millis() < now.as_millis() - limits.max_age_ms => {
                    return Err((
                        "ts",
                        format!("{s} is more than {} days in the past", limits.max_age_ms / 86_400_000),
                    ));
                }
                Some(ts) if ts.as_millis() > now.as_millis() + limits.max_future_ms => {
                    return Err((
                        "ts",
                        format!("{s} is more than {} minutes in the future", limits.max_future_ms / 60_000),
                    ));
                }
                Some(ts) => ts,
                None => return Err(("ts", format!("{s:?} is not an ISO-8601 date-time with offset"))),
            }
        }
    };
    let client_id = match envelope.id.filter(|v| !is_null(v)) {
        None => None,
        Some(raw) => match as_string(raw) {
            Some(id) if valid_event_id(&id) => Some(id.into_owned()),
            _ => return Err(("id", "must be 1-128 printable ASCII characters without spaces".into())),
        },
    };
    // The data members written so far end the `data` object after these.
    let mut first = out.ends_with('{');
    let source = match envelope.source.filter(|v| !is_null(v)) {
        None => None,
        Some(raw) => match as_string(raw) {
            Some(s) if s.len() <= MAX_EVENT_TYPE_LEN => Some(s),
            // Not a short string: keep it as ordinary data rather than lose it.
            _ => {
                write_member(out, &mut first, "source", raw.get());
                None
            }
        },
    };
    // `ns` is always the authenticated namespace; a client-supplied one is data.
    if let Some(client_ns) = envelope.ns {
        write_member(out, &mut first, "_ns", client_ns.get());
    }
    let server_id;
    let id: &str = match &client_id {
        Some(id) => id,
        None => {
            server_id = new_id();
            &server_id
        }
    };
    out.push_str("},\"id\":");
    write_string(out, id);
    out.push_str(",\"ns\":");
    write_string(out, ns);
    out.push_str(",\"ts\":");
    let _ = write!(out, "{}", ts.as_millis());
    out.push_str(",\"type\":");
    // Valid types need no escaping: the text between the quotes is the type.
    let type_at = out.len() + 1..out.len() + 1 + event_type.len();
    write_string(out, &event_type);
    debug_assert_eq!(&out[type_at.clone()], event_type.as_ref());
    if let Some(source) = &source {
        out.push_str(",\"source\":");
        write_string(out, source);
    }
    out.push('}');
    Ok((EncodedHead { ts, client_id, maybe_change: crate::cdc::may_be_change(&event_type) }, type_at))
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// The string a JSON value holds, borrowed when it has no escapes.
fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Key<'_>>(raw.get()).ok().map(|k| k.0)
}

/// Appends `s` as a JSON string.
fn write_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string serialises"));
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A batch of events in their stored form, ready for the writer: the JSON
/// of each [`Event`], separated by commas (the inside of a JSON array), and
/// what the writer needs to know of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncodedEvents {
    /// The namespace of every event.
    ns: String,
    /// `e1,e2,…`: the events' JSON, comma-separated.
    json: String,
    /// `ends[i]`: the byte offset in `json` where event `i` ends.
    ends: Vec<u32>,
    /// Per event: time, client id, change type.
    heads: Vec<EncodedHead>,
    /// The distinct types, while there are at most [`MAX_SUMMARY_TYPES`].
    types: Vec<String>,
    /// There were more distinct types than that.
    many_types: bool,
}

/// Most distinct event types a batch lists ([`EncodedEvents::types`]).
pub const MAX_SUMMARY_TYPES: usize = 32;

impl EncodedEvents {
    /// An empty batch of namespace `ns` with room for `events` events of
    /// `bytes` bytes in all.
    pub fn with_capacity(ns: &str, events: usize, bytes: usize) -> Self {
        EncodedEvents {
            ns: ns.to_string(),
            json: String::with_capacity(bytes + events * super::STORED_ENVELOPE_BYTES),
            ends: Vec::with_capacity(events),
            heads: Vec::with_capacity(events),
            types: Vec::new(),
            many_types: false,
        }
    }

    /// Validates a raw event ([`encode_event`]) and adds it; a refused
    /// event leaves the batch as it was.
    pub fn push_raw(
        &mut self,
        raw: &str,
        index: usize,
        now: Timestamp,
        limits: &EventLimits,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<(), EventFault> {
        let start = self.json.len();
        if start > 0 {
            self.json.push(',');
        }
        match encode_with_type(raw, index, &self.ns, now, limits, new_id, &mut self.json) {
            Ok((head, type_at)) => {
                let event_type = &self.json[type_at];
                if !self.types.iter().any(|t| t == event_type) {
                    let event_type = event_type.to_string();
                    self.note_type(event_type);
                }
                self.seal(head);
                Ok(())
            }
            Err(fault) => {
                self.json.truncate(start);
                Err(fault)
            }
        }
    }

    /// Adds an event that was validated already. `server_id`: the server
    /// made its id (nothing to deduplicate).
    pub fn push_event(&mut self, event: &super::Event, server_id: bool) {
        assert_eq!(event.ns, self.ns, "a batch holds one namespace's events");
        if !self.json.is_empty() {
            self.json.push(',');
        }
        self.json.push_str(&serde_json::to_string(event).expect("an event serialises"));
        if !self.types.contains(&event.event_type) {
            self.note_type(event.event_type.clone());
        }
        self.seal(EncodedHead {
            ts: event.ts,
            client_id: (!server_id).then(|| event.id.clone()),
            maybe_change: crate::cdc::may_be_change(&event.event_type),
        });
    }

    fn note_type(&mut self, event_type: String) {
        if self.types.len() < MAX_SUMMARY_TYPES {
            self.types.push(event_type);
        } else {
            self.many_types = true;
        }
    }

    /// Every event type of the batch (each once; after [`Self::retain`] maybe
    /// also types no longer in it), or `None` when there are more than
    /// [`MAX_SUMMARY_TYPES`]. Readers that want only some types skip a stored
    /// row whose types they do not want without decoding it.
    pub fn types(&self) -> Option<&[String]> {
        (!self.many_types).then_some(self.types.as_slice())
    }

    fn seal(&mut self, head: EncodedHead) {
        let end = u32::try_from(self.json.len()).expect("a batch is far smaller than 4 GiB");
        self.ends.push(end);
        self.heads.push(head);
        debug_assert_eq!(self.ends.len(), self.heads.len());
    }

    /// Builds a batch from validated events of `ns`; `server_ids[i]`: the
    /// server made the id of `events[i]` (missing entries count as false).
    pub fn from_events(ns: &str, events: &[super::Event], server_ids: &[bool]) -> Self {
        let mut batch = EncodedEvents::with_capacity(ns, events.len(), 0);
        for (i, event) in events.iter().enumerate() {
            batch.push_event(event, server_ids.get(i).copied().unwrap_or(false));
        }
        batch
    }

    /// The namespace of every event.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Per event: time, client id, change type.
    pub fn heads(&self) -> &[EncodedHead] {
        &self.heads
    }

    /// Bytes of JSON of the events `range` (without brackets).
    pub fn json_of(&self, range: std::ops::Range<usize>) -> &str {
        if range.is_empty() {
            return "";
        }
        let start = if range.start == 0 { 0 } else { self.ends[range.start - 1] as usize + 1 };
        &self.json[start..self.ends[range.end - 1] as usize]
    }

    /// The events `range` as one JSON array.
    pub fn array_of(&self, range: std::ops::Range<usize>) -> String {
        let inner = self.json_of(range);
        let mut array = String::with_capacity(inner.len() + 2);
        array.push('[');
        array.push_str(inner);
        array.push(']');
        array
    }

    /// Keeps only the events for which `keep(index)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut kept = EncodedEvents::with_capacity(&self.ns, self.len(), self.json.len());
        for (i, head) in self.heads.iter().enumerate() {
            if keep(i) {
                if !kept.json.is_empty() {
                    kept.json.push(',');
                }
                kept.json.push_str(self.json_of(i..i + 1));
                kept.seal(head.clone());
            }
        }
        // The types stay a superset of what is left, which is all a reader needs.
        kept.types = std::mem::take(&mut self.types);
        kept.many_types = self.many_types;
        *self = kept;
    }

    /// The events, decoded (for the checks that need them whole: change
    /// formats, schemas).
    pub fn decode(&self) -> Result<Vec<super::Event>, serde_json::Error> {
        serde_json::from_str(&self.array_of(0..self.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::needs_full_check;

    #[test]
    fn only_numbers_and_escapes_that_a_decode_may_refuse_need_the_full_check() {
        // Plain events, including text that looks like an exponent inside a
        // string, take the copy path.
        for plain in [
            r#"{"type":"a.b","url":"https://shop.example.com/e1","n":12.5,"ok":true,"no":false}"#,
            r#"{"type":"a.b","s":"1e999 \" 2E5 \\ 3.e4","list":[1,2,{"x":null}]}"#,
        ] {
            assert!(!needs_full_check(plain.as_bytes()), "{plain}");
        }
        for risky in [
            r#"{"type":"a.b","n":1e999}"#,
            r#"{"type":"a.b","n":2.5E-3}"#,
            r#"{"type":"a.b","s":"\ud800"}"#,
            r#"{"type":"a.b","s":"\\\u0041"}"#,
        ] {
            assert!(needs_full_check(risky.as_bytes()), "{risky}");
        }
        let long_number = format!(r#"{{"type":"a.b","n":{}}}"#, "9".repeat(400));
        assert!(needs_full_check(long_number.as_bytes()));
        let long_digits_in_a_string = format!(r#"{{"type":"a.b","s":"{}"}}"#, "9".repeat(400));
        assert!(!needs_full_check(long_digits_in_a_string.as_bytes()));
        let deep = format!(r#"{{"type":"a.b","d":{}{}}}"#, "[".repeat(70), "]".repeat(70));
        assert!(needs_full_check(deep.as_bytes()));
    }
}
