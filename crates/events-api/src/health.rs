//! `GET /health` (and `GET /`): liveness, one answer shape on every host.

use events_core::Timestamp;
use serde::{Deserialize, Serialize};

/// The service name every host answers with.
pub const SERVICE: &str = "events.do";
/// `host` of the native server.
pub const HOST_NATIVE: &str = "native";
/// `host` of the Cloudflare Worker.
pub const HOST_CLOUDFLARE: &str = "cloudflare";

/// The liveness answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok`.
    #[cfg_attr(feature = "openapi", schema(example = "ok"))]
    pub status: String,
    /// Always `events.do`.
    #[cfg_attr(feature = "openapi", schema(example = "events.do"))]
    pub service: String,
    /// Which host answers: `native` (the `events` binary) or `cloudflare` (the Worker).
    #[cfg_attr(feature = "openapi", schema(example = "native"))]
    pub host: String,
    /// The host's time, ISO-8601 UTC with milliseconds.
    #[cfg_attr(feature = "openapi", schema(example = "2026-01-01T00:00:00.000Z"))]
    pub ts: String,
    /// Deployment name from the configuration.
    #[cfg_attr(feature = "openapi", schema(example = "development"))]
    pub env: String,
    /// Version of events.do.
    #[cfg_attr(feature = "openapi", schema(example = "0.1.0"))]
    pub version: String,
}

/// The answer of host `host` ([`HOST_NATIVE`] or [`HOST_CLOUDFLARE`]) at `now`
/// in deployment `env`.
pub fn health(host: &str, now: Timestamp, env: &str) -> Health {
    Health {
        status: "ok".into(),
        service: SERVICE.into(),
        host: host.into(),
        ts: now.to_iso(),
        env: env.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_the_host_and_the_version() {
        let h = serde_json::to_value(health(HOST_CLOUDFLARE, Timestamp(0), "production")).unwrap();
        assert_eq!(
            h,
            serde_json::json!({"status": "ok", "service": "events.do", "host": "cloudflare",
                "ts": "1970-01-01T00:00:00.000Z", "env": "production", "version": env!("CARGO_PKG_VERSION")})
        );
    }
}
