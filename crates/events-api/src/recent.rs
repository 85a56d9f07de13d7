//! `GET /recent?limit=`: the latest events of the caller's namespace, newest
//! first, with their `count`. As in the original service, `limit` is clamped
//! into `1..=MAX_READ_PAGE` rather than refused; only a `limit` that is not an
//! integer is refused (`INVALID_QUERY`).

use events_core::limits::{DEFAULT_READ_PAGE, MAX_READ_PAGE};
use events_core::{ApiError, ErrorCode};
use events_runtime::context::Host;
use serde::{Deserialize, Serialize};

use crate::reader::{ReadQuery, read_events};

/// The answer of `GET /recent`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recent {
    /// Newest first, as sent plus `id`, `ns` and `ts`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub events: Vec<serde_json::Value>,
    /// How many events `events` holds.
    pub count: usize,
}

/// The page size of `limit`: [`DEFAULT_READ_PAGE`] when absent, any integer
/// clamped into `1..=MAX_READ_PAGE`.
pub fn recent_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = limit else { return Ok(DEFAULT_READ_PAGE) };
    let n: i128 = raw.trim().parse().map_err(|_| ApiError::new(ErrorCode::InvalidQuery, "limit must be an integer"))?;
    Ok(n.clamp(1, MAX_READ_PAGE as i128) as usize)
}

/// The latest `limit` events of namespace `ns` (the caller's, authenticated
/// by the host), read from the writer shards named `writers` and the lake.
pub async fn recent<H: Host>(host: &H, writers: Vec<String>, ns: &str, limit: usize) -> Result<Recent, ApiError> {
    let page = read_events(host, writers, ns, &ReadQuery { limit, ..ReadQuery::default() }).await?;
    let events: Vec<_> = page.events.iter().map(|e| e.to_json()).collect();
    Ok(Recent { count: events.len(), events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_clamped_and_only_non_integers_refused() {
        assert_eq!(recent_limit(None).unwrap(), DEFAULT_READ_PAGE);
        assert_eq!(recent_limit(Some("7")).unwrap(), 7);
        assert_eq!(recent_limit(Some("0")).unwrap(), 1);
        assert_eq!(recent_limit(Some("-5")).unwrap(), 1);
        assert_eq!(recent_limit(Some("5000")).unwrap(), MAX_READ_PAGE);
        assert_eq!(recent_limit(Some("99999999999999999999999")).unwrap(), MAX_READ_PAGE);
        for bad in ["x", "1.5", ""] {
            let err = recent_limit(Some(bad)).unwrap_err();
            assert_eq!((err.code, err.message.as_str()), (ErrorCode::InvalidQuery, "limit must be an integer"));
        }
    }
}
