//! `GET /events/stream`: the live tail over the shared [`events_api::tail`],
//! as a streamed response. The reading task runs inside the body (it reads
//! the writer shards only while the client reads the stream), so a client
//! that stops reading is cut off once the writers' buffers no longer hold
//! its position, with the same final `event: lagged`. The stream limit is
//! counted per isolate.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use events_api::tail::{self, MAX_STREAMS_PER_NAMESPACE, StreamSlots, TailEnv};
use events_core::{ApiError, ErrorCode};
use futures::StreamExt;
use worker::Response;

use super::auth::authenticate;
use super::{ApiResult, Call, error_response, query_param};
use crate::host::{CfHost, platform};

/// The open streams of this isolate.
fn slots() -> &'static Arc<StreamSlots> {
    static SLOTS: OnceLock<Arc<StreamSlots>> = OnceLock::new();
    SLOTS.get_or_init(|| StreamSlots::new(MAX_STREAMS_PER_NAMESPACE))
}

/// What a stream needs from the Worker: the writer directory and a timer.
struct WorkerTail(CfHost);

impl TailEnv for WorkerTail {
    async fn writers(&self) -> Result<Vec<String>, ApiError> {
        super::admin::writer_names(&self.0).await
    }

    async fn sleep(&self, ms: u64) {
        worker::Delay::from(Duration::from_millis(ms)).await;
    }
}

/// `GET /events/stream?type=&lastEventId=`.
pub async fn stream(call: &Call) -> ApiResult {
    let caller = authenticate(call).await?;
    let last_event_id = call
        .headers
        .get(tail::LAST_EVENT_ID_HEADER)
        .map(|v| v.to_str().map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "Last-Event-ID is not text")))
        .transpose()?;
    let pattern = query_param(&call.query, "type");
    let param = query_param(&call.query, tail::LAST_EVENT_ID_PARAM);
    let req = tail::parse_request(pattern.as_deref(), last_event_id, param.as_deref())?;
    let slot = match slots().acquire(&caller.namespace) {
        Ok(slot) => slot,
        Err(e) => {
            let mut response = error_response(&e).map_err(|e| platform("building the answer", e))?;
            let _ = response.headers_mut().set("retry-after", &tail::STREAM_LIMIT_RETRY_AFTER_SECS.to_string());
            return Ok(response);
        }
    };
    let (task, body) =
        tail::open(call.host.clone(), WorkerTail(call.host.clone()), slot, &caller.namespace, req).await?;
    let messages = tail::drive(task, body).map(Ok::<String, worker::Error>);
    let mut response = Response::from_stream(messages).map_err(|e| platform("starting the stream", e))?;
    let headers = response.headers_mut();
    let _ = headers.set("content-type", "text/event-stream");
    let _ = headers.set("cache-control", "no-cache");
    Ok(response)
}
