//! `GET /events` and `GET /recent`: the shared reader (`events_api::reader`)
//! over the writer shards' buffers and the Parquet files in R2.

use events_api::params::parse_optional_time;
use events_api::reader::{ReadQuery, read_events};
use events_api::recent::recent_limit;
use events_core::limits::{DEFAULT_READ_PAGE, MAX_READ_PAGE};
use events_core::{ApiError, ErrorCode};
use serde_json::json;

use super::auth::authenticate;
use super::{ApiResult, Call, json, query_param};

fn page_size(call: &Call) -> Result<usize, ApiError> {
    let bad = || ApiError::new(ErrorCode::InvalidQuery, format!("limit must be 1-{MAX_READ_PAGE}"));
    let limit = match query_param(&call.query, "limit") {
        Some(s) => s.parse::<usize>().map_err(|_| bad())?,
        None => DEFAULT_READ_PAGE,
    };
    if (1..=MAX_READ_PAGE).contains(&limit) { Ok(limit) } else { Err(bad()) }
}

/// `GET /events?type=&from=&to=&limit=&cursor=`.
pub async fn list(call: &Call) -> ApiResult {
    let caller = authenticate(call).await?;
    let query = ReadQuery {
        pattern: query_param(&call.query, "type"),
        from: parse_optional_time("from", query_param(&call.query, "from").as_deref())?,
        to: parse_optional_time("to", query_param(&call.query, "to").as_deref())?,
        limit: page_size(call)?,
        cursor: query_param(&call.query, "cursor"),
    };
    let writers = super::admin::writer_names(&call.host).await?;
    let page = read_events(&call.host, writers, &caller.namespace, &query).await?;
    let events: Vec<_> = page.events.iter().map(|e| e.to_json()).collect();
    json(200, &json!({"events": events, "nextCursor": page.next_cursor}))
}

/// `GET /recent?limit=`: the shared [`events_api::recent`].
pub async fn recent(call: &Call) -> ApiResult {
    let caller = authenticate(call).await?;
    let limit = recent_limit(query_param(&call.query, "limit").as_deref())?;
    let writers = super::admin::writer_names(&call.host).await?;
    json(200, &events_api::recent::recent(&call.host, writers, &caller.namespace, limit).await?)
}
