//! The Arrow schema of event files, and the typed columns derived from `data`.
//!
//! The first six columns hold the event exactly; [`decode_events`](crate::decode_events)
//! reads only those. The typed columns after them copy a few well-known
//! fields out of `data` so that query engines can filter and aggregate on
//! them without parsing JSON. They are derived, so they are never read back.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use arrow_array::{Array, RecordBatch, TimestampMicrosecondArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::view::{EventView, MemberPlan, Scalar};

/// Column: the event id (Utf8, non-null).
pub const COL_ID: &str = "id";
/// Column: the namespace (Utf8, non-null).
pub const COL_NS: &str = "ns";
/// Column: the event time (Timestamp(µs, UTC), non-null; see [`TS_UNIT`]).
pub const COL_TS: &str = "ts";
/// Column: the event type (Utf8, non-null).
pub const COL_TYPE: &str = "type";
/// Column: the producer (Utf8, nullable).
pub const COL_SOURCE: &str = "source";
/// Column: every other field of the event, as compact JSON object text (Utf8, non-null).
pub const COL_DATA: &str = "data";
/// Typed column (Utf8): see [`USER_ID_PATHS`].
pub const COL_USER_ID: &str = "user_id";
/// Typed column (Utf8): see [`SESSION_ID_PATHS`].
pub const COL_SESSION_ID: &str = "session_id";
/// Typed column (Utf8): see [`COLLECTION_PATHS`].
pub const COL_COLLECTION: &str = "collection";
/// Typed column (Utf8): see [`DOC_ID_PATHS`].
pub const COL_DOC_ID: &str = "doc_id";
/// Typed column (Utf8): see [`PROVIDER_PATHS`].
pub const COL_PROVIDER: &str = "provider";
/// Typed column (Utf8): see [`URL_PATHS`].
pub const COL_URL: &str = "url";
/// Typed column (Int32): see [`STATUS_CODE_PATHS`].
pub const COL_STATUS_CODE: &str = "status_code";
/// Typed column (Float64): see [`DURATION_MS_PATHS`].
pub const COL_DURATION_MS: &str = "duration_ms";

/// The columns that hold the event itself, in file order; the rest are derived.
pub const EVENT_COLUMNS: [&str; 6] = [COL_ID, COL_NS, COL_TS, COL_TYPE, COL_SOURCE, COL_DATA];

/// The time zone of the `ts` column.
pub const TS_TIMEZONE: &str = "UTC";

/// The unit of the `ts` column in files written now: microseconds, the unit
/// of Iceberg's `timestamptz`, so engines that read the file through the
/// table's schema find the type they expect. Files written before stored
/// milliseconds; every reader here accepts both ([`ts_column`]).
pub const TS_UNIT: TimeUnit = TimeUnit::Microsecond;

/// The Arrow type of `ts` columns written now: `Timestamp(µs, "UTC")`.
pub fn ts_data_type() -> DataType {
    DataType::Timestamp(TS_UNIT, Some(TS_TIMEZONE.into()))
}

/// Event times in milliseconds as a `ts` column of microseconds; fails for a
/// time beyond what microseconds since the epoch hold in 64 bits (±292 000
/// years, far outside what ingest accepts).
pub fn ts_array(millis: Vec<i64>) -> Result<TimestampMicrosecondArray, arrow_schema::ArrowError> {
    let micros = millis
        .into_iter()
        .map(|ms| {
            ms.checked_mul(1000).ok_or_else(|| {
                arrow_schema::ArrowError::InvalidArgumentError(format!(
                    "event time {ms} ms is out of the range of microsecond timestamps"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TimestampMicrosecondArray::from(micros).with_timezone(TS_TIMEZONE))
}

/// A `ts` column as read from a file: microseconds (written now) or
/// milliseconds (files written before), read back as milliseconds.
#[derive(Debug, Clone, Copy)]
pub enum TsColumn<'a> {
    /// A file written with [`TS_UNIT`].
    Micros(&'a TimestampMicrosecondArray),
    /// An older file.
    Millis(&'a TimestampMillisecondArray),
}

impl TsColumn<'_> {
    /// The time of row `i` in ms since the epoch (event times have ms precision).
    pub fn millis(&self, i: usize) -> i64 {
        match self {
            TsColumn::Micros(a) => a.value(i).div_euclid(1000),
            TsColumn::Millis(a) => a.value(i),
        }
    }

    /// The column as an array.
    pub fn array(&self) -> &dyn Array {
        match self {
            TsColumn::Micros(a) => *a,
            TsColumn::Millis(a) => *a,
        }
    }
}

/// The timestamp column `name` of `batch`, in either unit; `None` when it
/// is missing or of another type.
pub fn ts_column<'a>(batch: &'a RecordBatch, name: &str) -> Option<TsColumn<'a>> {
    let col = batch.column_by_name(name)?.as_any();
    col.downcast_ref::<TimestampMicrosecondArray>()
        .map(TsColumn::Micros)
        .or_else(|| col.downcast_ref::<TimestampMillisecondArray>().map(TsColumn::Millis))
}

/// A path into `data`: the keys of nested objects, outermost first.
pub type DataPath = &'static [&'static str];

/// Where `user_id` comes from: the first of these holding a string.
pub const USER_ID_PATHS: &[DataPath] = &[&["userId"], &["user_id"], &["actor", "id"]];
/// Where `session_id` comes from: the first of these holding a string.
pub const SESSION_ID_PATHS: &[DataPath] = &[&["sessionId"], &["session_id"]];
/// Where `collection` comes from: a string.
pub const COLLECTION_PATHS: &[DataPath] = &[&["collection"]];
/// Where `doc_id` comes from: the first of these holding a string.
pub const DOC_ID_PATHS: &[DataPath] = &[&["docId"], &["doc_id"]];
/// Where `provider` comes from: a string.
pub const PROVIDER_PATHS: &[DataPath] = &[&["provider"]];
/// Where `url` comes from: a string.
pub const URL_PATHS: &[DataPath] = &[&["url"]];
/// Where `status_code` comes from: the first of these holding an integer that fits in 32 bits.
pub const STATUS_CODE_PATHS: &[DataPath] = &[&["statusCode"], &["status_code"]];
/// Where `duration_ms` comes from: the first of these holding a number.
pub const DURATION_MS_PATHS: &[DataPath] = &[&["durationMs"], &["duration_ms"]];

static EVENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        utf8(COL_ID, false),
        utf8(COL_NS, false),
        Field::new(COL_TS, ts_data_type(), false),
        utf8(COL_TYPE, false),
        utf8(COL_SOURCE, true),
        utf8(COL_DATA, false),
        utf8(COL_USER_ID, true),
        utf8(COL_SESSION_ID, true),
        utf8(COL_COLLECTION, true),
        utf8(COL_DOC_ID, true),
        utf8(COL_PROVIDER, true),
        utf8(COL_URL, true),
        Field::new(COL_STATUS_CODE, DataType::Int32, true),
        Field::new(COL_DURATION_MS, DataType::Float64, true),
    ]))
});

/// The Arrow schema of every event file, columns in file order.
pub fn event_schema() -> SchemaRef {
    EVENT_SCHEMA.clone()
}

/// The typed columns of one event, as extracted from its `data`.
///
/// A field is `None` when no path leads to a value of the column's type: a
/// `statusCode` of `"200"` (a string) gives no `status_code`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DerivedFields<'a> {
    /// See [`USER_ID_PATHS`].
    pub user_id: Option<Cow<'a, str>>,
    /// See [`SESSION_ID_PATHS`].
    pub session_id: Option<Cow<'a, str>>,
    /// See [`COLLECTION_PATHS`].
    pub collection: Option<Cow<'a, str>>,
    /// See [`DOC_ID_PATHS`].
    pub doc_id: Option<Cow<'a, str>>,
    /// See [`PROVIDER_PATHS`].
    pub provider: Option<Cow<'a, str>>,
    /// See [`URL_PATHS`].
    pub url: Option<Cow<'a, str>>,
    /// See [`STATUS_CODE_PATHS`].
    pub status_code: Option<i32>,
    /// See [`DURATION_MS_PATHS`].
    pub duration_ms: Option<f64>,
}

/// Every typed column's paths, in column order.
const TYPED_PATHS: [&[DataPath]; 8] = [
    USER_ID_PATHS,
    SESSION_ID_PATHS,
    COLLECTION_PATHS,
    DOC_ID_PATHS,
    PROVIDER_PATHS,
    URL_PATHS,
    STATUS_CODE_PATHS,
    DURATION_MS_PATHS,
];

/// The top-level members the typed columns read: the first key of each path.
pub fn typed_member_names<'a>() -> impl Iterator<Item = &'a str> {
    TYPED_PATHS.into_iter().flatten().map(|path| path[0])
}

static TYPED_PLAN: LazyLock<MemberPlan> = LazyLock::new(|| MemberPlan::new(typed_member_names()));

impl<'a> DerivedFields<'a> {
    /// Extracts the typed columns from an event's `data`, in whichever form.
    pub fn of<E: EventView>(event: &'a E) -> DerivedFields<'a> {
        let mut members = vec![None; TYPED_PLAN.len()];
        event.read_members(&TYPED_PLAN, &mut members);
        Self::from_members(event, &TYPED_PLAN, &members)
    }

    /// The same, from the top-level members already read with `plan` (which
    /// holds at least [`typed_member_names`]). A nested path is looked up in
    /// `event` only when its first member is there.
    pub fn from_members<E: EventView>(
        event: &'a E,
        plan: &MemberPlan,
        members: &[Option<Scalar<'a>>],
    ) -> DerivedFields<'a> {
        let at = |path: DataPath| -> Option<Scalar<'a>> {
            let slot = plan.slot(path[0]).expect("the plan holds every typed column's first key");
            let first = members[slot].as_ref()?;
            if path.len() == 1 { Some(first.clone()) } else { event.member_at(path) }
        };
        let string = |paths: &[DataPath]| {
            paths.iter().find_map(|path| match at(path)? {
                Scalar::Str(s) => Some(s),
                _ => None,
            })
        };
        DerivedFields {
            user_id: string(USER_ID_PATHS),
            session_id: string(SESSION_ID_PATHS),
            collection: string(COLLECTION_PATHS),
            doc_id: string(DOC_ID_PATHS),
            provider: string(PROVIDER_PATHS),
            url: string(URL_PATHS),
            status_code: STATUS_CODE_PATHS
                .iter()
                .find_map(|path| at(path)?.as_i64().and_then(|n| i32::try_from(n).ok())),
            duration_ms: DURATION_MS_PATHS.iter().find_map(|path| at(path)?.as_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn derive(v: Value) -> DerivedFields<'static> {
        let Value::Object(map) = v else { panic!("not an object") };
        let event = events_core::Event {
            id: "e".into(),
            ns: "acme".into(),
            ts: events_core::Timestamp(0),
            event_type: "t".into(),
            source: None,
            data: map,
        };
        DerivedFields::of(Box::leak(Box::new(event)))
    }

    #[test]
    fn schema_column_order() {
        let schema = event_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(&names[..6], &EVENT_COLUMNS);
        assert_eq!(names.len(), 14);
    }

    #[test]
    fn extracts_well_known_fields() {
        let d = derive(json!({
            "userId": "u1", "sessionId": "s1", "collection": "posts", "docId": "d1",
            "provider": "stripe", "url": "https://x.test/a", "statusCode": 201, "durationMs": 12.5,
        }));
        assert_eq!(
            d,
            DerivedFields {
                user_id: Some("u1".into()),
                session_id: Some("s1".into()),
                collection: Some("posts".into()),
                doc_id: Some("d1".into()),
                provider: Some("stripe".into()),
                url: Some("https://x.test/a".into()),
                status_code: Some(201),
                duration_ms: Some(12.5),
            }
        );
        let snake =
            derive(json!({"user_id": "u2", "session_id": "s2", "doc_id": "d2", "status_code": 404, "duration_ms": 3}));
        assert_eq!(
            (snake.user_id, snake.session_id, snake.doc_id, snake.status_code, snake.duration_ms),
            (Some("u2".into()), Some("s2".into()), Some("d2".into()), Some(404), Some(3.0))
        );
        assert_eq!(derive(json!({"actor": {"id": "u3", "name": "Ann"}})).user_id, Some("u3".into()));
    }

    #[test]
    fn wrong_types_give_null() {
        let d = derive(json!({
            "userId": 42, "sessionId": null, "collection": ["a"], "docId": {"id": "x"},
            "provider": true, "url": 1, "statusCode": "200", "durationMs": "12",
        }));
        assert_eq!(d, DerivedFields::default());
        assert_eq!(derive(json!({"statusCode": 200.5})).status_code, None, "not an integer");
        assert_eq!(derive(json!({"statusCode": 3_000_000_000_i64})).status_code, None, "beyond i32");
        assert_eq!(derive(json!({"actor": "u1"})).user_id, None, "actor is not an object");
        assert_eq!(derive(json!({"actor": {"id": 7}})).user_id, None);
        // A wrongly typed alias does not hide a well-typed one.
        assert_eq!(derive(json!({"userId": 42, "user_id": "u9"})).user_id, Some("u9".into()));
    }
}
