//! The `[query]` table of the server configuration: limits of `POST /query`.

use serde::{Deserialize, Serialize};

/// SQL query limits (the `[query]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Default per-query timeout (ms); a request may ask for another, up to
    /// [`crate::routes::query::MAX_QUERY_TIMEOUT_MS`].
    pub timeout_ms: u64,
    /// Most rows one query may return (more is an error, not a truncation).
    pub max_rows: usize,
    /// Memory pool of one query (bytes): sorts, joins and aggregates beyond it fail.
    pub max_memory_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout_ms: events_query::DEFAULT_TIMEOUT.as_millis() as u64,
            max_rows: events_query::DEFAULT_MAX_ROWS,
            max_memory_bytes: events_query::DEFAULT_MAX_MEMORY,
        }
    }
}
