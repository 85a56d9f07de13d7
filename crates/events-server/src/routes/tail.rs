//! `GET /events/stream`: the live tail, Server-Sent Events over
//! [`events_api::tail`]. This module only authenticates, runs the stream's
//! reading task on tokio and maps the body; positions, resuming, limits and
//! the messages are the shared module's.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use events_api::tail::{self, TailEnv};
use events_core::{ApiError, ErrorCode};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::error::{ApiErrorResponse, ApiQuery};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// The resume header, `Last-Event-ID`.
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static(tail::LAST_EVENT_ID_HEADER);

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(stream_events))
}

/// Query of `GET /events/stream`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Event-type pattern: `*` one segment, `**` any number. All events without.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Resume after this message id, for clients that cannot send the
    /// `Last-Event-ID` header (the header wins when both are sent).
    #[serde(rename = "lastEventId")]
    #[param(rename = "lastEventId")]
    pub last_event_id: Option<String>,
}

/// One message of the stream, as an SSE client parses it (the document's
/// schema of `text/event-stream` describes each message, not the whole body;
/// `: heartbeat` comments are not messages).
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamMessage {
    /// The message's name: `ready` (the first, `data` the namespace, the
    /// pattern and the starting position), `gap`, `lagged` or `error`;
    /// absent on an event.
    #[schema(nullable = false, value_type = Option<StreamMessageName>)]
    pub event: Option<String>,
    /// JSON text: the event as `GET /events` shows it, or the named message's body.
    pub data: String,
    /// `<event id>@<position>` on an event, `@<position>` on `ready` and `gap`.
    #[schema(nullable = false)]
    pub id: Option<String>,
    /// The reconnection delay in milliseconds, on the first message.
    #[schema(nullable = false, minimum = 0)]
    pub retry: Option<u64>,
}

/// The names of the stream's named messages.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamMessageName {
    /// The first message: the stream's starting position.
    Ready,
    /// Events were trimmed from the buffers before the stream read them.
    Gap,
    /// The client or the stream fell behind; the stream ends.
    Lagged,
    /// A read failed for good; the stream ends.
    Error,
}

/// What a stream needs from this server.
#[derive(Clone)]
struct NativeTail(AppState);

impl TailEnv for NativeTail {
    async fn writers(&self) -> Result<Vec<String>, ApiError> {
        self.0.host.object_names::<events_objects::EventWriter>()
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// The live tail of the caller's namespace as Server-Sent Events.
///
/// Messages: `event: ready` first (its id is the starting position); then
/// one unnamed message per event, `data` the event as `GET /events` shows it
/// and `id` `<event id>@<position>`; `: heartbeat` comments every 15 s
/// without events; `event: gap` when a resumed position is older than the
/// writers' buffers; a final `event: lagged` when the client (or the
/// stream) fell behind, or `event: error`. Send the last id received as
/// `Last-Event-ID` to resume with no gap and no duplicate.
#[utoipa::path(get, path = "/events/stream", tag = "events",
    params(StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this message id (the `id` of the last message received).")),
    responses(
        (status = 200, description = "The stream (text/event-stream; never ends by itself)", content_type = "text/event-stream", body = StreamMessage),
        (status = 429, description = "The namespace has the most open streams allowed (`RATE_LIMITED`, see Retry-After)", body = crate::error::ErrorBody)),
    security(("bearerAuth" = [])))]
pub async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: ApiQuery<StreamParams>,
) -> Result<Response, ApiErrorResponse> {
    let caller = state.auth.authenticate(&state.host, &headers).await?;
    let p = params.parse()?;
    let last_event_id = headers
        .get(&LAST_EVENT_ID)
        .map(|v| v.to_str().map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "Last-Event-ID is not text")))
        .transpose()?;
    let req = tail::parse_request(p.event_type.as_deref(), last_event_id, p.last_event_id.as_deref())?;
    let slot = match state.streams.acquire(&caller.namespace) {
        Ok(slot) => slot,
        Err(e) => {
            let mut res = ApiErrorResponse(e).into_response();
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(tail::STREAM_LIMIT_RETRY_AFTER_SECS));
            return Ok(res);
        }
    };
    let (task, body) = tail::open(state.host.clone(), NativeTail(state.clone()), slot, &caller.namespace, req).await?;
    tokio::spawn(task.run());
    let mut res = Body::from_stream(body.map(Ok::<_, Infallible>)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) would hold the messages back.
    h.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    Ok(res)
}
