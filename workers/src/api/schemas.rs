//! `/schemas/{ns}/...`: the schema registry, with the admin token or the
//! namespace's own key. Same paths, bodies and answers as the native server.

use events_core::event::EventLimits;
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::SchemaRegistry;
use events_objects::schema_registry::{
    Compatibility, RegisterSchema, RegistryConfig, SchemaRequest, SchemaResponse, SchemaVersion, ValidationMode,
};
use events_runtime::Host;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::authenticate;
use super::{ApiResult, Call, json, parse_json};

/// Largest schema request body.
const MAX_SCHEMA_BODY_BYTES: usize = 1024 * 1024;

async fn allowed(call: &Call, ns: &str) -> Result<(), ApiError> {
    validate_namespace(ns)?;
    authenticate(call).await?.require_namespace(ns, "manage schemas")
}

async fn registry(call: &Call, ns: &str, req: SchemaRequest) -> Result<SchemaResponse, ApiError> {
    call.host.call::<SchemaRegistry>(ns, req).await
}

fn out_of_protocol() -> ApiError {
    ApiError::internal("schema registry answered out of protocol")
}

fn view(v: SchemaVersion) -> Value {
    let mut out = json!({
        "version": v.version, "schema": v.schema, "compatibility": v.compatibility, "mode": v.mode,
        "description": v.description, "createdAt": Timestamp::to_iso(v.created_at), "deleted": v.deleted,
    });
    out[if v.is_pattern { "pattern" } else { "type" }] = json!(v.subject);
    out
}

fn list(versions: Vec<SchemaVersion>) -> ApiResult {
    json(200, &json!({"schemas": versions.into_iter().map(view).collect::<Vec<_>>()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    #[serde(rename = "type")]
    event_type: Option<String>,
    pattern: Option<String>,
    schema: Value,
    compatibility: Option<Compatibility>,
    mode: Option<ValidationMode>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    mode: ValidationMode,
    compatibility: Compatibility,
}

#[derive(Deserialize)]
struct ValidateBody {
    events: Vec<Box<serde_json::value::RawValue>>,
}

/// Routes `/schemas/...`; `None` when no schema route matches.
pub async fn route(call: &mut Call, method: &str, rest: &[&str]) -> Option<ApiResult> {
    Some(match (method, rest) {
        ("POST", [ns]) => register(call, ns).await,
        ("GET", [ns]) => match allowed(call, ns).await {
            Ok(()) => match registry(call, ns, SchemaRequest::List).await {
                Ok(SchemaResponse::Versions(v)) => list(v),
                Ok(_) => Err(out_of_protocol()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        ("GET", [ns, "config"]) => get_config(call, ns).await,
        ("PUT", [ns, "config"]) => put_config(call, ns).await,
        ("POST", [ns, "validate"]) => validate(call, ns).await,
        ("GET", [ns, subject]) => get(call, ns, subject, None).await,
        ("DELETE", [ns, subject]) => versions(call, ns, SchemaRequest::Delete { subject: subject.to_string() }).await,
        ("GET", [ns, subject, "versions"]) => {
            versions(call, ns, SchemaRequest::Versions { subject: subject.to_string() }).await
        }
        ("GET", [ns, subject, "versions", n]) => match n.parse::<u32>() {
            Ok(n) => get(call, ns, subject, Some(n)).await,
            Err(_) => Err(ApiError::new(ErrorCode::InvalidRequest, "versions are positive integers")),
        },
        _ => return None,
    })
}

async fn register(call: &mut Call, ns: &str) -> ApiResult {
    allowed(call, ns).await?;
    let body: RegisterBody = parse_json(&call.body(MAX_SCHEMA_BODY_BYTES).await?)?;
    let (subject, is_pattern) = match (body.event_type, body.pattern) {
        (Some(t), None) => (t, false),
        (None, Some(p)) => (p, true),
        _ => return Err(ApiError::new(ErrorCode::InvalidRequest, "give exactly one of \"type\" and \"pattern\"")),
    };
    let req = RegisterSchema {
        subject,
        is_pattern,
        schema: body.schema,
        compatibility: body.compatibility,
        mode: body.mode,
        description: body.description,
    };
    match registry(call, ns, SchemaRequest::Register(req)).await? {
        SchemaResponse::Registered { version, created } => {
            super::ingest::invalidate_schemas(ns);
            json(if created { 201 } else { 200 }, &view(version))
        }
        _ => Err(out_of_protocol()),
    }
}

async fn get_config(call: &Call, ns: &str) -> ApiResult {
    allowed(call, ns).await?;
    match registry(call, ns, SchemaRequest::GetConfig).await? {
        SchemaResponse::Config(c) => json(200, &json!({"mode": c.mode, "compatibility": c.compatibility})),
        _ => Err(out_of_protocol()),
    }
}

async fn put_config(call: &mut Call, ns: &str) -> ApiResult {
    allowed(call, ns).await?;
    let body: ConfigBody = parse_json(&call.body(MAX_SCHEMA_BODY_BYTES).await?)?;
    let config = RegistryConfig { mode: body.mode, compatibility: body.compatibility };
    registry(call, ns, SchemaRequest::SetConfig(config)).await?;
    json(200, &json!({"mode": body.mode, "compatibility": body.compatibility}))
}

async fn validate(call: &mut Call, ns: &str) -> ApiResult {
    allowed(call, ns).await?;
    let body: ValidateBody = parse_json(&call.body(call.config.max_body_bytes).await?)?;
    if body.events.len() > call.config.max_events_per_batch {
        return Err(ApiError::new(ErrorCode::InvalidBatch, "too many events"));
    }
    let limits = EventLimits { max_event_bytes: call.config.max_event_bytes, ..Default::default() };
    let host = call.host.clone();
    let events = events_api::ingest::validate_events(&body.events, ns, host.now(), &limits, &mut || host.random())?;
    match registry(call, ns, SchemaRequest::Validate { events }).await? {
        SchemaResponse::Validated { failures, .. } => {
            let mut errors = events_api::schemas::failure_entries(&failures);
            for (e, mode) in errors.iter_mut().zip(failures.iter().flat_map(|f| f.errors.iter().map(move |_| f.mode))) {
                e["mode"] = serde_json::to_value(mode).unwrap_or(Value::Null);
            }
            json(200, &json!({"valid": errors.is_empty(), "errors": errors}))
        }
        _ => Err(out_of_protocol()),
    }
}

async fn get(call: &Call, ns: &str, subject: &str, version: Option<u32>) -> ApiResult {
    allowed(call, ns).await?;
    match registry(call, ns, SchemaRequest::Get { subject: subject.to_string(), version }).await? {
        SchemaResponse::Version(v) => json(200, &view(v)),
        _ => Err(out_of_protocol()),
    }
}

async fn versions(call: &Call, ns: &str, req: SchemaRequest) -> ApiResult {
    allowed(call, ns).await?;
    match registry(call, ns, req).await? {
        SchemaResponse::Versions(v) => list(v),
        _ => Err(out_of_protocol()),
    }
}
