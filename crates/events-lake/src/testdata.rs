//! Deterministic events for the tests: varied ones that probe every corner
//! of the encoding, and realistic ones for measuring file sizes.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use bytes::Bytes;
use events_core::id::ulid_string;
use events_core::{Event, Timestamp};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value, json};

/// 2026-09-21T…Z: the time around which test events fall.
pub const BASE_MS: i64 = 1_790_000_000_000;

/// A small deterministic generator (splitmix64), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const STRINGS: &[&str] = &[
    "",
    "plain",
    "héllo wörld",
    "日本語のテキスト",
    "emoji 🚀🔥👩‍💻",
    "quote \" backslash \\ slash /",
    "line\nbreak\ttab\r",
    "control \u{0}\u{1}\u{1f} chars",
    "\u{2028}\u{2029} separators",
    "right-to-left עברית العربية",
];

const KEYS: &[&str] = &["a", "amount", "ключ", "", "with space", "nested", "list", "userId", "statusCode", "tags"];

fn scalar(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => Value::from(rng.next() as i64),
        3 => Value::from(rng.next() | (1 << 63)), // beyond i64
        4 => {
            // Any finite double, by its bits: the hard case for lossless JSON.
            let f = f64::from_bits(rng.next());
            if f.is_finite() { Value::from(f) } else { Value::from(0.1 + 0.2) }
        }
        5 => Value::from(*rng.pick(&[0.1, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, 123.456])),
        6 => Value::from("x".repeat(rng.below(600) as usize)),
        _ => Value::from(*rng.pick(STRINGS)),
    }
}

fn value(rng: &mut Rng, depth: u32) -> Value {
    if depth == 0 || rng.chance(60) {
        return scalar(rng);
    }
    if rng.chance(50) {
        Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect())
    } else {
        Value::Object(object(rng, depth - 1))
    }
}

fn object(rng: &mut Rng, depth: u32) -> Map<String, Value> {
    (0..rng.below(6)).map(|_| (rng.pick(KEYS).to_string(), value(rng, depth))).collect()
}

/// `n` events varied in every field: unicode, nested and empty data, missing
/// and empty sources, shared timestamps, extreme times, custom ids.
pub fn varied_events(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let ts = match rng.below(20) {
                // The extremes of microsecond timestamps, as ms.
                0 => *rng.pick(&[i64::MIN / 1000, -1, 0, 1, i64::MAX / 1000, 4_102_444_800_000]),
                1..=4 => BASE_MS, // many events in the same millisecond
                _ => BASE_MS + rng.below(3 * 3_600_000) as i64,
            };
            let ts = Timestamp(ts);
            let id = if rng.chance(80) { ulid_string(ts, rng.next() as u128) } else { format!("custom-{i}") };
            Event {
                id,
                ns: rng.pick(&["acme", "tenant-2"]).to_string(),
                ts,
                event_type: rng.pick(&["order.created", "user.signup", "a", "doc.updated"]).to_string(),
                source: match rng.below(4) {
                    0 => None,
                    1 => Some(String::new()),
                    2 => Some("ソース".into()),
                    _ => Some("web".into()),
                },
                data: object(&mut rng, 3),
            }
        })
        .collect()
}

/// `n` events as a product would send them: page views, API calls, document
/// changes and webhooks, a few hundred ms apart, from a few hundred users.
pub fn realistic_events(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut ms = BASE_MS;
    let paths = ["/", "/pricing", "/docs/getting-started", "/blog/2026/lakehouse", "/account/settings", "/checkout"];
    (0..n)
        .map(|_| {
            ms += rng.below(400) as i64;
            let ts = Timestamp(ms);
            let user = format!("user_{:04}", rng.below(500));
            let session = format!("sess_{:06}", rng.below(3_000));
            let (event_type, source, data) = match rng.below(10) {
                0..=3 => (
                    "page.view",
                    "web",
                    json!({
                        "userId": user, "sessionId": session,
                        "url": format!("https://acme.example{}", rng.pick(&paths)),
                        "referrer": rng.pick(&["https://www.google.com/", "", "https://news.ycombinator.com/"]),
                        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
                        "viewport": {"w": 1440, "h": 900},
                    }),
                ),
                4..=6 => (
                    "api.request",
                    "api",
                    json!({
                        "userId": user,
                        "method": rng.pick(&["GET", "POST", "PATCH"]),
                        "url": format!("https://api.acme.example/v1/orders/{}", rng.below(100_000)),
                        "statusCode": *rng.pick(&[200, 200, 200, 201, 204, 400, 404, 500]),
                        "durationMs": rng.below(250_000) as f64 / 1000.0,
                    }),
                ),
                7..=8 => (
                    "doc.updated",
                    "cdc",
                    json!({
                        "collection": rng.pick(&["orders", "customers", "invoices"]),
                        "docId": format!("doc_{}", rng.below(20_000)),
                        "actor": {"id": user, "kind": "user"},
                        "after": {"status": rng.pick(&["pending", "paid", "shipped"]), "total": rng.below(100_000) as f64 / 100.0, "currency": "USD"},
                        "changed": ["status"],
                    }),
                ),
                _ => (
                    "webhook.received",
                    "webhooks",
                    json!({
                        "provider": rng.pick(&["stripe", "github", "shopify"]),
                        "eventId": format!("evt_{:016x}", rng.next()),
                        "amount": rng.below(100_000), "currency": "usd", "livemode": true,
                    }),
                ),
            };
            let Value::Object(data) = data else { unreachable!("json! object") };
            Event {
                id: ulid_string(ts, rng.next() as u128),
                ns: "acme".into(),
                ts,
                event_type: event_type.into(),
                source: Some(source.into()),
                data,
            }
        })
        .collect()
}

/// `events` sorted as event files hold them: by `(ts, id)`, ties in input order.
pub fn sorted(events: &[Event]) -> Vec<Event> {
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
    sorted
}

/// References to every event, as [`encode_events`](crate::encode_events) takes them.
pub fn refs(events: &[Event]) -> Vec<&Event> {
    events.iter().collect()
}

/// `file` rewritten as files were before `ts` was stored in
/// microseconds: the same columns and footer, `ts` in milliseconds.
pub fn with_millisecond_ts(file: &[u8]) -> Vec<u8> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(file)).unwrap();
    let kv = builder.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    let old_type = arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into()));
    let schema = batches[0].schema();
    let fields: Vec<arrow_schema::Field> = schema
        .fields()
        .iter()
        .map(
            |f| if f.name() == "ts" { f.as_ref().clone().with_data_type(old_type.clone()) } else { f.as_ref().clone() },
        )
        .collect();
    let old_schema = Arc::new(arrow_schema::Schema::new(fields));
    let mut writer = ArrowWriter::try_new(Vec::new(), old_schema.clone(), None).unwrap();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .zip(old_schema.fields())
            .map(|(c, f)| arrow_cast_ts(c, f.data_type()))
            .collect::<Vec<ArrayRef>>();
        writer.write(&RecordBatch::try_new(old_schema.clone(), columns).unwrap()).unwrap();
    }
    for entry in kv {
        writer.append_key_value_metadata(entry);
    }
    writer.into_inner().unwrap()
}

/// `ts` microseconds to milliseconds; other columns as they are.
fn arrow_cast_ts(c: &ArrayRef, to: &arrow_schema::DataType) -> ArrayRef {
    match c.as_any().downcast_ref::<arrow_array::TimestampMicrosecondArray>() {
        Some(us) if c.data_type() != to => Arc::new(
            arrow_array::TimestampMillisecondArray::from(us.values().iter().map(|v| v / 1000).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        _ => c.clone(),
    }
}
