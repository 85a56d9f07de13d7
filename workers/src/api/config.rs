//! The Worker's settings, from its bindings (`[vars]` and secrets in
//! `wrangler.toml`, `bindings` in the workerd config), with the native
//! server's defaults.

use events_core::limits;
use worker::Env;

/// Binding holding the admin token (a secret in production).
pub const ADMIN_TOKEN_BINDING: &str = "ADMIN_TOKEN";

/// Settings of one Worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The operator's token; `None` refuses every admin request.
    pub admin_token: Option<String>,
    /// Unauthenticated writes allowed (`DEV = "true"`); never in production.
    pub dev: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most events per batch.
    pub max_events_per_batch: usize,
    /// Largest single event.
    pub max_event_bytes: usize,
    /// Default requests per minute per key.
    pub requests_per_minute: u64,
    /// Default events per minute per key.
    pub events_per_minute: u64,
    /// Default events per day per namespace.
    pub events_per_day: u64,
    /// Deployment name (`ENV`), as `/health` reports it.
    pub env: String,
}

/// Deployment name when `ENV` is not set (the native server's default).
pub const DEFAULT_ENV: &str = "development";

fn text(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
}

fn number<T: std::str::FromStr>(env: &Env, name: &str, default: T) -> T {
    text(env, name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

impl WorkerConfig {
    /// Reads the settings of `env`.
    pub fn from_env(env: &Env) -> WorkerConfig {
        WorkerConfig {
            admin_token: text(env, ADMIN_TOKEN_BINDING).filter(|t| t.len() >= 16),
            dev: text(env, "DEV").is_some_and(|v| v == "true"),
            max_body_bytes: number(env, "MAX_BODY_BYTES", limits::MAX_INGEST_BODY_BYTES),
            max_events_per_batch: number(env, "INGEST_MAX_EVENTS_PER_BATCH", limits::MAX_EVENTS_PER_BATCH),
            max_event_bytes: number(env, "INGEST_MAX_EVENT_BYTES", limits::MAX_EVENT_BYTES),
            requests_per_minute: number(env, "INGEST_REQUESTS_PER_MINUTE", limits::DEFAULT_REQUESTS_PER_MINUTE),
            events_per_minute: number(env, "INGEST_EVENTS_PER_MINUTE", limits::DEFAULT_EVENTS_PER_MINUTE),
            events_per_day: number(env, "INGEST_EVENTS_PER_DAY", limits::DEFAULT_EVENTS_PER_DAY),
            env: text(env, "ENV").unwrap_or_else(|| DEFAULT_ENV.to_string()),
        }
    }
}
