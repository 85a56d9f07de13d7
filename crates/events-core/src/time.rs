//! Millisecond timestamps (UTC) and their ISO-8601 form.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 / ISO-8601 date-time with an offset (`Z` or `+hh:mm`).
    pub fn parse_iso(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s).ok().map(|d| Timestamp(d.timestamp_millis()))
    }

    /// The chrono form, for formatting and calendar arithmetic.
    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// `YYYY-MM-DDTHH:MM:SS.sssZ`.
    pub fn to_iso(self) -> String {
        self.to_datetime().to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// This timestamp plus `ms` milliseconds (saturating).
    pub const fn add_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// The start of the UTC minute containing this timestamp.
    pub const fn floor_to(self, period_ms: i64) -> Self {
        Timestamp(self.0 - self.0.rem_euclid(period_ms))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_iso())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let t = Timestamp::parse_iso("2026-11-28T19:12:28.123Z").unwrap();
        assert_eq!(t.to_iso(), "2026-11-28T19:12:28.123Z");
        assert_eq!(Timestamp::parse_iso("2026-11-28T20:12:28.123+01:00"), Some(t));
        assert_eq!(Timestamp::parse_iso("yesterday"), None);
        assert_eq!(Timestamp::parse_iso("2026-11-28"), None);
    }

    #[test]
    fn floor() {
        assert_eq!(Timestamp(125_000).floor_to(60_000), Timestamp(120_000));
        assert_eq!(Timestamp(-1).floor_to(60_000), Timestamp(-60_000));
    }
}
