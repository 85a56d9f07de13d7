//! The native side of `POST /e`: the settings of the shared pipeline
//! ([`events_api::ingest::pipeline`]) from the server configuration, and the
//! background work it leaves, run on the tokio runtime.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use events_api::ingest::pipeline::{Background, IngestSettings, rate_headers};
use events_core::event::EventLimits;
use events_core::{ApiError, Event, Timestamp};
use events_objects::rate_limiter::RateDecision;
use events_objects::tenant::NamespaceLimits;
use serde_json::value::RawValue;

use crate::config::ServerConfig;
use crate::state::AppState;

pub use events_api::ingest::BATCH_ID_HEADER;
pub use events_api::ingest::pipeline::Ingest;

/// The pipeline settings of this server's configuration.
pub fn settings(config: &ServerConfig) -> IngestSettings {
    IngestSettings {
        max_body_bytes: config.max_body_bytes,
        max_events_per_batch: config.ingest.max_events_per_batch,
        max_event_bytes: config.ingest.max_event_bytes,
        defaults: NamespaceLimits {
            requests_per_minute: Some(config.ingest.requests_per_minute),
            events_per_minute: Some(config.ingest.events_per_minute),
            events_per_day: Some(config.ingest.events_per_day),
        },
        rate_limit_fail_open: config.ingest.rate_limit_fail_open,
        backpressure_inflight: config.shards.backpressure_inflight,
    }
}

/// Validates every event; all faults are reported together (ids from this process's randomness).
pub fn validate_events(
    raw: &[Box<RawValue>],
    ns: &str,
    now: Timestamp,
    limits: &EventLimits,
) -> Result<Vec<Event>, ApiError> {
    events_api::ingest::validate_events(raw, ns, now, limits, &mut rand::random)
}

/// Adds `RateLimit-Policy`, `RateLimit` (and `Retry-After` when refused).
pub fn apply_rate_headers(decision: &RateDecision, headers: &mut HeaderMap) {
    for (name, value) in rate_headers(decision) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// Runs a request's background work without holding up its answer.
pub fn spawn_background(state: &AppState, work: Vec<Background>) {
    for item in work {
        let state = state.clone();
        tokio::spawn(async move {
            let what = match &item {
                Background::MergeLimits(_) => "merging rate-limit counts",
                Background::ReportBackpressure { .. } => "reporting backpressure",
            };
            if let Err(e) = item.run(&state.host, &state.ingest).await {
                metrics::counter!("events_ingest_background_failures_total").increment(1);
                tracing::warn!(error = %e, "{what} failed");
            }
        });
    }
}

/// Merges due limit counts every [`events_api::limits::SYNC_INTERVAL_MS`],
/// so a quiet subject's last counts reach its object too.
pub async fn merge_limits_periodically(state: AppState) {
    let period = Duration::from_millis(events_api::limits::SYNC_INTERVAL_MS as u64);
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        let now = events_runtime::Host::now(&state.host);
        let due = state.ingest.limits.due(now, false);
        spawn_background(&state, due.into_iter().map(Background::MergeLimits).collect());
    }
}
