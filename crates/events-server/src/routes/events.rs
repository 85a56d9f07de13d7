//! `GET /events` and `GET /recent`: reading events back (`GET /recent` is the
//! shared [`events_api::recent`]).

use axum::extract::State;
use axum::http::HeaderMap;
use events_api::params::parse_optional_time;
use events_core::limits::{DEFAULT_READ_PAGE, MAX_READ_PAGE};
use events_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use events_api::recent::{Recent, recent_limit};

use crate::error::{ApiErrorResponse, ApiJson, ApiQuery};
use crate::reader::{ReadQuery, read_events};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(list_events)).routes(routes!(recent))
}

/// Query of `GET /events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Event-type pattern: `*` one segment, `**` any number.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Earliest `ts` (ISO-8601), inclusive.
    pub from: Option<String>,
    /// Latest `ts` (ISO-8601), inclusive.
    pub to: Option<String>,
    /// Page size (1-1000, default 100).
    pub limit: Option<usize>,
    /// Cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    /// Events, newest first, as sent plus `id`, `ns` and `ts`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_READ_PAGE) {
        n @ 1..=MAX_READ_PAGE => Ok(n),
        _ => Err(ApiError::new(ErrorCode::InvalidQuery, format!("limit must be 1-{MAX_READ_PAGE}"))),
    }
}

/// Events of the caller's namespace, newest first, from the buffer and the lake.
#[utoipa::path(get, path = "/events", tag = "events", params(EventsParams),
    responses((status = 200, description = "A page", body = EventsPage)),
    security(("bearerAuth" = [])))]
pub async fn list_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: ApiQuery<EventsParams>,
) -> Result<ApiJson<EventsPage>, ApiErrorResponse> {
    let caller = state.auth.authenticate(&state.host, &headers).await?;
    let p = params.parse()?;
    let query = ReadQuery {
        pattern: p.event_type,
        from: parse_optional_time("from", p.from.as_deref())?,
        to: parse_optional_time("to", p.to.as_deref())?,
        limit: page_size(p.limit)?,
        cursor: p.cursor,
    };
    let page =
        read_events(&state.host, state.host.object_names::<events_objects::EventWriter>()?, &caller.namespace, &query)
            .await?;
    Ok(ApiJson(EventsPage { events: page.events.iter().map(|e| e.to_json()).collect(), next_cursor: page.next_cursor }))
}

/// Query of `GET /recent`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecentParams {
    /// How many (default 100); clamped into 1-1000.
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// The latest events of the caller's namespace, with their `count`.
#[utoipa::path(get, path = "/recent", tag = "events", params(RecentParams),
    responses((status = 200, description = "Latest events", body = Recent)),
    security(("bearerAuth" = [])))]
pub async fn recent(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: ApiQuery<RecentParams>,
) -> Result<ApiJson<Recent>, ApiErrorResponse> {
    let caller = state.auth.authenticate(&state.host, &headers).await?;
    let limit = recent_limit(params.parse()?.limit.as_deref())?;
    let writers = state.host.object_names::<events_objects::EventWriter>()?;
    Ok(ApiJson(events_api::recent::recent(&state.host, writers, &caller.namespace, limit).await?))
}
