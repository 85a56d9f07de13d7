//! `/schemas/{ns}/...`: the schema registry, with the admin token or the
//! namespace's own key. Same paths, bodies and answers as the native server:
//! the wire types and the registry calls are [`events_api::schemas`].

use events_api::schemas::{self as api, ConfigView, MAX_SCHEMA_BODY_BYTES, RegisterBody, ValidateBody};
use events_core::ApiError;
use events_core::event::EventLimits;
use events_core::name::validate_namespace;
use events_objects::schema_registry::SchemaRequest;
use events_runtime::Host;

use super::auth::authenticate;
use super::{ApiResult, Call, json, parse_json};

async fn allowed(call: &Call, ns: &str) -> Result<(), ApiError> {
    validate_namespace(ns)?;
    authenticate(call).await?.require_namespace(ns, "manage schemas")
}

/// Routes `/schemas/...`; `None` when no schema route matches.
pub async fn route(call: &mut Call, method: &str, rest: &[&str]) -> Option<ApiResult> {
    Some(match (method, rest) {
        ("POST", [ns]) => register(call, ns).await,
        ("GET", [ns]) => versions(call, ns, SchemaRequest::List).await,
        ("GET", [ns, "config"]) => get_config(call, ns).await,
        ("PUT", [ns, "config"]) => put_config(call, ns).await,
        ("POST", [ns, "validate"]) => validate(call, ns).await,
        ("GET", [ns, subject]) => get(call, ns, subject, None).await,
        ("DELETE", [ns, subject]) => versions(call, ns, SchemaRequest::Delete { subject: subject.to_string() }).await,
        ("GET", [ns, subject, "versions"]) => {
            versions(call, ns, SchemaRequest::Versions { subject: subject.to_string() }).await
        }
        ("GET", [ns, subject, "versions", n]) => match api::parse_version(n) {
            Ok(n) => get(call, ns, subject, Some(n)).await,
            Err(e) => Err(e),
        },
        _ => return None,
    })
}

async fn register(call: &mut Call, ns: &str) -> ApiResult {
    allowed(call, ns).await?;
    let body: RegisterBody = parse_json(&call.body(MAX_SCHEMA_BODY_BYTES).await?)?;
    let (view, created) = api::register(&call.host, ns, body).await?;
    super::ingest::invalidate_schemas(ns);
    json(if created { 201 } else { 200 }, &view)
}

async fn get_config(call: &Call, ns: &str) -> ApiResult {
    allowed(call, ns).await?;
    json(200, &api::get_config(&call.host, ns).await?)
}

async fn put_config(call: &mut Call, ns: &str) -> ApiResult {
    allowed(call, ns).await?;
    let body: ConfigView = parse_json(&call.body(MAX_SCHEMA_BODY_BYTES).await?)?;
    json(200, &api::put_config(&call.host, ns, body).await?)
}

async fn validate(call: &mut Call, ns: &str) -> ApiResult {
    allowed(call, ns).await?;
    let body: ValidateBody = parse_json(&call.body(call.config.max_body_bytes).await?)?;
    api::check_batch_size(&body, call.config.max_events_per_batch)?;
    let limits = EventLimits { max_event_bytes: call.config.max_event_bytes, ..Default::default() };
    let host = call.host.clone();
    let events = events_api::ingest::validate_events(&body.events, ns, host.now(), &limits, &mut || host.random())?;
    json(200, &api::validate(&call.host, ns, events).await?)
}

async fn get(call: &Call, ns: &str, subject: &str, version: Option<u32>) -> ApiResult {
    allowed(call, ns).await?;
    json(200, &api::get(&call.host, ns, subject.to_string(), version).await?)
}

async fn versions(call: &Call, ns: &str, req: SchemaRequest) -> ApiResult {
    allowed(call, ns).await?;
    json(200, &api::versions(&call.host, ns, req).await?)
}
