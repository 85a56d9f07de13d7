//! `GET /health` and `GET /`: liveness, the shared [`events_api::health`] answer.

use axum::extract::State;
use events_api::health::{HOST_NATIVE, Health, health as answer};
use utoipa_axum::routes;

use crate::error::ApiJson;
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(health)).routes(routes!(root))
}

/// The liveness answer (the shape both hosts answer with).
pub type HealthResponse = Health;

fn health_response(state: &AppState) -> HealthResponse {
    answer(HOST_NATIVE, events_core::Timestamp(chrono::Utc::now().timestamp_millis()), &state.config.env)
}

/// Liveness check.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "The server is up", body = Health))
)]
pub async fn health(State(state): State<AppState>) -> ApiJson<HealthResponse> {
    ApiJson(health_response(&state))
}

/// Liveness check (same as `/health`).
#[utoipa::path(
    get,
    path = "/",
    tag = "health",
    responses((status = 200, description = "The server is up", body = Health))
)]
pub async fn root(State(state): State<AppState>) -> ApiJson<HealthResponse> {
    ApiJson(health_response(&state))
}
