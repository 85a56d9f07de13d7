//! CORS, one definition for both hosts: any origin (credentials travel in
//! `Authorization` or the `key` query parameter, never in cookies), the
//! methods and request headers the API's routes use, the headers a browser
//! client needs to read, and preflights cached for a day.
//!
//! Publishable keys restrict origins themselves ([`crate::auth::KeyGrant::admit`]):
//! CORS only decides what a browser lets a page read, not what the server accepts.

/// Methods a browser may use (`Access-Control-Allow-Methods`).
pub const ALLOW_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Request headers a browser may send (`Access-Control-Allow-Headers`).
pub const ALLOW_HEADERS: &[&str] =
    &["authorization", "content-type", "content-encoding", "idempotency-key", "last-event-id", "x-namespace"];
/// Response headers a page may read (`Access-Control-Expose-Headers`).
pub const EXPOSE_HEADERS: &[&str] = &["x-request-id", "retry-after", "ratelimit", "ratelimit-policy"];
/// How long a browser may cache a preflight answer (`Access-Control-Max-Age`), in seconds.
pub const MAX_AGE_SECONDS: u64 = 86_400;

/// The headers of every answer.
pub fn response_headers() -> Vec<(&'static str, String)> {
    vec![("access-control-allow-origin", "*".to_string()), ("access-control-expose-headers", EXPOSE_HEADERS.join(","))]
}

/// The headers of a preflight answer (`OPTIONS`, `200` with an empty body).
pub fn preflight_headers() -> Vec<(&'static str, String)> {
    vec![
        ("access-control-allow-origin", "*".to_string()),
        ("access-control-allow-methods", ALLOW_METHODS.join(",")),
        ("access-control-allow-headers", ALLOW_HEADERS.join(",")),
        ("access-control-max-age", MAX_AGE_SECONDS.to_string()),
        ("vary", "origin, access-control-request-method, access-control-request-headers".to_string()),
    ]
}
