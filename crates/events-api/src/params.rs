//! Query parameters every area of the API reads the same way: times and
//! page sizes, as the client sent them (strings). Errors carry
//! `INVALID_QUERY` and name the parameter and the value refused.

use events_core::{ApiError, ErrorCode, Timestamp};

/// Page size of a listing when the query has no `limit` (the object asked
/// clamps any limit to its own bounds).
pub const DEFAULT_PAGE: usize = 100;

/// Parses the time parameter `name`: ISO-8601 with offset (RFC 3339).
pub fn parse_time(name: &str, value: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_iso(value).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidQuery, format!("{name}={value:?} is not an ISO-8601 date-time with offset"))
    })
}

/// Parses the optional time parameter `name` ([`parse_time`]); `None` when absent.
pub fn parse_optional_time(name: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value.map(|v| parse_time(name, v)).transpose()
}

/// Parses a `limit` parameter: a whole number; [`DEFAULT_PAGE`] when absent.
pub fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(s) => {
            s.parse().map_err(|_| ApiError::new(ErrorCode::InvalidQuery, format!("limit={s:?} is not a number")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_8601_with_an_offset() {
        assert_eq!(parse_time("from", "2026-03-01T12:00:00Z").unwrap(), Timestamp(1_772_366_400_000));
        assert_eq!(parse_time("from", "2026-03-01T13:00:00+01:00").unwrap(), Timestamp(1_772_366_400_000));
        for bad in ["yesterday", "2026-03-01", "2026-03-01T12:00:00", "1772366400000", ""] {
            let e = parse_time("to", bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::InvalidQuery, "{bad}");
            assert_eq!(e.message, format!("to={bad:?} is not an ISO-8601 date-time with offset"));
        }
        assert_eq!(parse_optional_time("from", None).unwrap(), None);
        assert_eq!(
            parse_optional_time("from", Some("2026-03-01T12:00:00Z")).unwrap(),
            Some(Timestamp(1_772_366_400_000))
        );
        assert_eq!(parse_optional_time("from", Some("x")).unwrap_err().code, ErrorCode::InvalidQuery);
    }

    #[test]
    fn limits_are_whole_numbers_with_a_default() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(parse_limit(Some("7")).unwrap(), 7);
        assert_eq!(parse_limit(Some("0")).unwrap(), 0, "bounds are the object's to apply");
        for bad in ["x", "-1", "1.5", ""] {
            let e = parse_limit(Some(bad)).unwrap_err();
            assert_eq!((e.code, e.message), (ErrorCode::InvalidQuery, format!("limit={bad:?} is not a number")));
        }
    }
}
