//! `GET /health` and `GET /`: liveness.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::error::ApiJson;
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(health)).routes(routes!(root))
}

/// The liveness answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
    /// Always `events.do`.
    #[schema(example = "events.do")]
    pub service: String,
    /// Server time, ISO-8601 UTC with milliseconds.
    #[schema(example = "2026-01-01T00:00:00.000Z")]
    pub ts: String,
    /// Deployment name from the configuration.
    #[schema(example = "development")]
    pub env: String,
    /// Server version.
    #[schema(example = "0.1.0")]
    pub version: String,
}

fn health_response(state: &AppState) -> HealthResponse {
    HealthResponse {
        status: "ok".into(),
        service: "events.do".into(),
        ts: events_core::Timestamp(chrono::Utc::now().timestamp_millis()).to_iso(),
        env: state.config.env.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Liveness check.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "The server is up", body = HealthResponse))
)]
pub async fn health(State(state): State<AppState>) -> ApiJson<HealthResponse> {
    ApiJson(health_response(&state))
}

/// Liveness check (same as `/health`).
#[utoipa::path(
    get,
    path = "/",
    tag = "health",
    responses((status = 200, description = "The server is up", body = HealthResponse))
)]
pub async fn root(State(state): State<AppState>) -> ApiJson<HealthResponse> {
    ApiJson(health_response(&state))
}
