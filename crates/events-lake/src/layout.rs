//! The partition layout of the events table in object storage.
//!
//! Events are stored one folder per namespace and UTC hour:
//!
//! ```text
//! {prefix}/ns={ns}/date=YYYY-MM-DD/hour=HH/{file_id}.parquet
//! ```
//!
//! The `key=value` folder names are the Hive convention, so query engines
//! (DuckDB, Spark, DataFusion) discover `ns`, `date` and `hour` as partition
//! columns on their own. Namespaces are `[a-z0-9-]` (see
//! [`events_core::name::validate_namespace`]), so they never need escaping.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use events_core::Timestamp;

/// The default prefix of the events table, under which every namespace folder lives.
pub const EVENTS_TABLE_PREFIX: &str = "events";

/// Milliseconds in one partition: an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// The file-name extension of event files.
pub const EVENT_FILE_EXTENSION: &str = ".parquet";

/// The `chrono` format of the `date=` folder.
const DATE_FORMAT: &str = "%Y-%m-%d";

/// The parts of an event file's key, as [`parse_event_file_key`] finds them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventFileKey {
    /// The namespace folder (`ns=...`).
    pub ns: String,
    /// The start of the UTC hour of the partition (`date=` and `hour=`).
    pub hour_start: Timestamp,
    /// The file name without its `.parquet` extension.
    pub file_id: String,
}

/// The start of the UTC hour that contains `ts`.
pub const fn hour_start(ts: Timestamp) -> Timestamp {
    ts.floor_to(HOUR_MS)
}

/// The folder of one namespace and hour, ending in `/`:
/// `{prefix}/ns={ns}/date=YYYY-MM-DD/hour=HH/`.
///
/// `hour_start` is floored to its hour. A trailing `/` on `prefix` is ignored,
/// and an empty prefix yields a key relative to the bucket root.
pub fn hour_prefix(prefix: &str, ns: &str, hour_start: Timestamp) -> String {
    let dt = self::hour_start(hour_start).to_datetime();
    let prefix = prefix.trim_end_matches('/');
    let sep = if prefix.is_empty() { "" } else { "/" };
    format!("{prefix}{sep}ns={ns}/date={}/hour={}/", dt.format(DATE_FORMAT), dt.format("%H"))
}

/// The object key of one event file:
/// `{prefix}/ns={ns}/date=YYYY-MM-DD/hour=HH/{file_id}.parquet` (UTC).
///
/// `hour_start` is floored to its hour; `file_id` must not contain `/`.
pub fn event_file_key(prefix: &str, ns: &str, hour_start: Timestamp, file_id: &str) -> String {
    format!("{}{file_id}{EVENT_FILE_EXTENSION}", hour_prefix(prefix, ns, hour_start))
}

/// Parses a key made by [`event_file_key`], whatever its prefix.
///
/// Returns `None` for any key that is not laid out as an event file: a
/// missing or empty `ns=`, a malformed `date=` or `hour=`, another extension.
pub fn parse_event_file_key(key: &str) -> Option<EventFileKey> {
    let mut parts = key.rsplitn(5, '/');
    let file = parts.next()?;
    let hour = parts.next()?.strip_prefix("hour=")?;
    let date = parts.next()?.strip_prefix("date=")?;
    let ns = parts.next()?.strip_prefix("ns=")?;
    // What remains (if anything) is the prefix, which may itself contain `/`.

    let file_id = file.strip_suffix(EVENT_FILE_EXTENSION)?;
    if ns.is_empty() || file_id.is_empty() {
        return None;
    }
    if hour.len() != 2 || !hour.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hour: u32 = hour.parse().ok()?;
    let day = NaiveDate::parse_from_str(date, DATE_FORMAT).ok()?;
    if day.format(DATE_FORMAT).to_string() != date {
        return None; // e.g. `2026-1-01`: parses, but is not a key this module writes
    }
    let start = day.and_hms_opt(hour, 0, 0)?.and_utc().timestamp_millis();
    Some(EventFileKey { ns: ns.to_string(), hour_start: Timestamp(start), file_id: file_id.to_string() })
}

/// Groups events by `(namespace, start of the UTC hour of their ts)`: one
/// group per event file to write. Within a group, events keep their input order.
pub fn partition_by_hour<E: crate::view::EventView>(events: &[E]) -> BTreeMap<(String, Timestamp), Vec<&E>> {
    let mut parts: BTreeMap<(String, Timestamp), Vec<&E>> = BTreeMap::new();
    for event in events {
        let key = (event.ns().to_string(), hour_start(event.ts()));
        parts.entry(key).or_default().push(event);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_core::Event;
    use serde_json::Map;

    fn at(iso: &str) -> Timestamp {
        Timestamp::parse_iso(iso).unwrap()
    }

    fn event(ns: &str, id: &str, iso: &str) -> Event {
        Event { id: id.into(), ns: ns.into(), ts: at(iso), event_type: "t".into(), source: None, data: Map::new() }
    }

    #[test]
    fn key_layout_is_hive_style_utc() {
        let ts = at("2026-03-07T05:59:59.999+02:00"); // 03:59:59.999Z
        assert_eq!(
            event_file_key(EVENTS_TABLE_PREFIX, "acme", ts, "01J0000000000000000000000A"),
            "events/ns=acme/date=2026-03-07/hour=03/01J0000000000000000000000A.parquet"
        );
        assert_eq!(hour_prefix("lake/events/", "acme", ts), "lake/events/ns=acme/date=2026-03-07/hour=03/");
        assert_eq!(hour_prefix("", "acme", ts), "ns=acme/date=2026-03-07/hour=03/");
        // Every file of an hour lies under that hour's folder.
        let key = event_file_key("p", "n", ts, "f");
        assert!(key.starts_with(&hour_prefix("p", "n", ts)));
    }

    #[test]
    fn keys_parse_back() {
        let cases = [
            ("events", "acme", "2026-01-01T00:00:00Z", "a"),
            ("lake/v1/events", "tenant-42", "2026-12-31T23:30:00Z", "01JABCDEF.part-0"),
            ("", "x", "1999-02-28T12:00:00.001Z", "file"),
            ("events", "acme", "1969-12-31T23:59:59Z", "before-epoch"),
        ];
        for (prefix, ns, iso, file_id) in cases {
            let key = event_file_key(prefix, ns, at(iso), file_id);
            let parsed = parse_event_file_key(&key).unwrap_or_else(|| panic!("{key} should parse"));
            assert_eq!(
                parsed,
                EventFileKey { ns: ns.into(), hour_start: hour_start(at(iso)), file_id: file_id.into() },
                "{key}"
            );
            assert_eq!(event_file_key(prefix, &parsed.ns, parsed.hour_start, &parsed.file_id), key);
        }
    }

    #[test]
    fn foreign_keys_are_refused() {
        for key in [
            "events/ns=acme/date=2026-01-01/hour=03/a.json",
            "events/ns=acme/date=2026-01-01/hour=3/a.parquet",
            "events/ns=acme/date=2026-01-01/hour=24/a.parquet",
            "events/ns=acme/date=2026-13-01/hour=03/a.parquet",
            "events/ns=acme/date=2026-1-01/hour=03/a.parquet",
            "events/ns=/date=2026-01-01/hour=03/a.parquet",
            "events/ns=acme/date=2026-01-01/hour=03/.parquet",
            "events/acme/date=2026-01-01/hour=03/a.parquet",
            "events/ns=acme/date=2026-01-01/a.parquet",
            "events/ns=acme/date=2026-01-01/hour=03/",
            "",
        ] {
            assert_eq!(parse_event_file_key(key), None, "{key}");
        }
    }

    #[test]
    fn partitions_by_namespace_and_utc_hour() {
        let events = vec![
            event("b", "1", "2026-01-01T10:59:59.999Z"),
            event("a", "2", "2026-01-01T11:00:00Z"),
            event("a", "3", "2026-01-01T10:00:00Z"),
            event("a", "4", "2026-01-01T11:59:00Z"),
            event("b", "5", "2026-01-01T10:00:00.000Z"),
        ];
        let parts = partition_by_hour(&events);
        let summary: Vec<(String, String, Vec<&str>)> = parts
            .iter()
            .map(|((ns, hour), evs)| (ns.clone(), hour.to_iso(), evs.iter().map(|e| e.id.as_str()).collect()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a".into(), "2026-01-01T10:00:00.000Z".into(), vec!["3"]),
                ("a".into(), "2026-01-01T11:00:00.000Z".into(), vec!["2", "4"]),
                ("b".into(), "2026-01-01T10:00:00.000Z".into(), vec!["1", "5"]),
            ]
        );
        assert!(partition_by_hour::<Event>(&[]).is_empty());
    }
}
