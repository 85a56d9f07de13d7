//! The `/schemas/{ns}/...` API (the schema registry's admin) between the
//! host's routing and the namespace's [`SchemaRegistry`]: the wire types of
//! its bodies and answers, the registry calls, and how validation failures
//! are reported to clients (also by ingest).
//!
//! A host authenticates the caller and checks that it may manage the
//! namespace (the admin, or a key of that namespace), parses the body into
//! the types here, calls one of the `async` functions with itself as the
//! [`Host`], and sends the answer with status 200 (a registration that made
//! a new version: 201). After a registration it drops its cached schemas of
//! the namespace. `POST /schemas/{ns}/validate` takes events the host has
//! validated as ingest would ([`crate::ingest::validate_events`] or its own
//! equivalent), refused beyond its batch limit with [`check_batch_size`].

use events_core::{ApiError, ErrorCode, Event, Timestamp};
use events_objects::SchemaRegistry;
use events_objects::schema_registry::{
    Compatibility, EventFailure, RegisterSchema, RegistryConfig, SchemaRequest, SchemaResponse, SchemaVersion,
    ValidationMode,
};
use events_runtime::context::Host;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Largest schema request body a host reads (registrations, settings).
pub const MAX_SCHEMA_BODY_BYTES: usize = 1024 * 1024;

/// One schema version.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SchemaView {
    /// The event type, for a type schema.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The pattern, for a pattern schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Version number (1, 2, ...).
    pub version: u32,
    /// The JSON Schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: Value,
    /// Compatibility rule: NONE, BACKWARD, FORWARD, FULL or a `_TRANSITIVE` form.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub compatibility: Compatibility,
    /// The schema's own mode (`off`, `warn`, `strict`); absent: the namespace's.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub mode: Option<ValidationMode>,
    /// Free text.
    pub description: Option<String>,
    /// Registration time (ISO-8601).
    pub created_at: String,
    /// Whether the subject was deleted after this version.
    pub deleted: bool,
}

impl From<SchemaVersion> for SchemaView {
    fn from(v: SchemaVersion) -> Self {
        SchemaView {
            event_type: (!v.is_pattern).then(|| v.subject.clone()),
            pattern: v.is_pattern.then_some(v.subject),
            version: v.version,
            schema: v.schema,
            compatibility: v.compatibility,
            mode: v.mode,
            description: v.description,
            created_at: Timestamp::to_iso(v.created_at),
            deleted: v.deleted,
        }
    }
}

/// A registration.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// An event type (give this or `pattern`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// A type pattern such as `order.*` (give this or `type`).
    pub pattern: Option<String>,
    /// JSON Schema, draft 2020-12 (default) or draft-07 (`$schema`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: Value,
    /// Compatibility rule; default: the subject's current one, else the namespace's.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub compatibility: Option<Compatibility>,
    /// Mode of this schema; default: the namespace's.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub mode: Option<ValidationMode>,
    /// Free text.
    pub description: Option<String>,
}

/// Schema listing.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaList {
    /// Latest live version of each subject.
    pub schemas: Vec<SchemaView>,
}

impl From<Vec<SchemaVersion>> for SchemaList {
    fn from(versions: Vec<SchemaVersion>) -> Self {
        SchemaList { schemas: versions.into_iter().map(Into::into).collect() }
    }
}

/// Namespace settings.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfigView {
    /// Mode of schemas that set none: `off`, `warn` or `strict` (default).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub mode: ValidationMode,
    /// Default compatibility of new subjects (default BACKWARD).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub compatibility: Compatibility,
}

/// Events to test.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateBody {
    /// Events as they would be sent to `POST /e`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub events: Vec<Box<RawValue>>,
}

/// Outcome of a test validation.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateResult {
    /// Whether every event passed (or had no schema).
    pub valid: bool,
    /// One entry per error: `{index, type, path, message, schema, version, mode}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub errors: Vec<Value>,
}

/// One failure per error, as reported to clients (`details.errors`, `warnings`).
pub fn failure_entries(failures: &[EventFailure]) -> Vec<Value> {
    failures
        .iter()
        .flat_map(|f| {
            f.errors.iter().map(move |e| {
                json!({
                    "index": f.index, "type": f.event_type, "path": e.path, "message": e.message,
                    "schema": f.subject, "version": f.version,
                })
            })
        })
        .collect()
}

/// Parses the `{n}` of `/schemas/{ns}/{subject}/versions/{n}`.
pub fn parse_version(n: &str) -> Result<u32, ApiError> {
    n.parse().map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "versions are positive integers"))
}

/// Refuses a validation request of more than `max_events` events (the host's ingest batch limit).
pub fn check_batch_size(body: &ValidateBody, max_events: usize) -> Result<(), ApiError> {
    if body.events.len() > max_events {
        return Err(ApiError::new(ErrorCode::InvalidBatch, "too many events"));
    }
    Ok(())
}

async fn call<H: Host>(host: &H, ns: &str, req: SchemaRequest) -> Result<SchemaResponse, ApiError> {
    host.call::<SchemaRegistry>(ns, req).await
}

fn out_of_protocol() -> ApiError {
    ApiError::internal("schema registry answered out of protocol")
}

/// Registers a new version of a type's or pattern's schema; answers it and
/// whether it is new (an identical latest version changes nothing).
pub async fn register<H: Host>(host: &H, ns: &str, body: RegisterBody) -> Result<(SchemaView, bool), ApiError> {
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
    match call(host, ns, SchemaRequest::Register(req)).await? {
        SchemaResponse::Registered { version, created } => Ok((version.into(), created)),
        _ => Err(out_of_protocol()),
    }
}

/// A registry request answered with versions (`List`, `Delete`, `Versions`).
pub async fn versions<H: Host>(host: &H, ns: &str, req: SchemaRequest) -> Result<SchemaList, ApiError> {
    match call(host, ns, req).await? {
        SchemaResponse::Versions(v) => Ok(v.into()),
        _ => Err(out_of_protocol()),
    }
}

/// One version of `subject` (`None`: the latest live one).
pub async fn get<H: Host>(host: &H, ns: &str, subject: String, version: Option<u32>) -> Result<SchemaView, ApiError> {
    match call(host, ns, SchemaRequest::Get { subject, version }).await? {
        SchemaResponse::Version(v) => Ok(v.into()),
        _ => Err(out_of_protocol()),
    }
}

/// The namespace's validation mode and default compatibility.
pub async fn get_config<H: Host>(host: &H, ns: &str) -> Result<ConfigView, ApiError> {
    match call(host, ns, SchemaRequest::GetConfig).await? {
        SchemaResponse::Config(c) => Ok(ConfigView { mode: c.mode, compatibility: c.compatibility }),
        _ => Err(out_of_protocol()),
    }
}

/// Replaces the namespace's validation mode and default compatibility.
pub async fn put_config<H: Host>(host: &H, ns: &str, body: ConfigView) -> Result<ConfigView, ApiError> {
    let config = RegistryConfig { mode: body.mode, compatibility: body.compatibility };
    call(host, ns, SchemaRequest::SetConfig(config)).await?;
    Ok(body)
}

/// Validates `events` against the namespace's schemas without storing
/// them: one entry per error, with the mode that applied.
pub async fn validate<H: Host>(host: &H, ns: &str, events: Vec<Event>) -> Result<ValidateResult, ApiError> {
    match call(host, ns, SchemaRequest::Validate { events }).await? {
        SchemaResponse::Validated { failures, .. } => {
            let mut errors = failure_entries(&failures);
            let modes = failures.iter().flat_map(|f| f.errors.iter().map(move |_| f.mode));
            for (e, mode) in errors.iter_mut().zip(modes) {
                e["mode"] = serde_json::to_value(mode).unwrap_or(Value::Null);
            }
            Ok(ValidateResult { valid: errors.is_empty(), errors })
        }
        _ => Err(out_of_protocol()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_positive_integers() {
        assert_eq!(parse_version("3").unwrap(), 3);
        for bad in ["x", "-1", "", "1.0"] {
            let e = parse_version(bad).unwrap_err();
            assert_eq!((e.code, e.message.as_str()), (ErrorCode::InvalidRequest, "versions are positive integers"));
        }
    }

    #[test]
    fn a_view_names_its_subject_as_a_type_or_a_pattern() {
        let version = |is_pattern| SchemaVersion {
            subject: "order.*".into(),
            is_pattern,
            version: 2,
            schema: json!({"type": "object"}),
            compatibility: Compatibility::Backward,
            mode: None,
            description: None,
            created_at: Timestamp(0),
            deleted: false,
        };
        let pattern = serde_json::to_value(SchemaView::from(version(true))).unwrap();
        assert_eq!((pattern["pattern"].as_str(), pattern.get("type")), (Some("order.*"), None));
        let typed = serde_json::to_value(SchemaView::from(version(false))).unwrap();
        assert_eq!((typed["type"].as_str(), typed.get("pattern")), (Some("order.*"), None));
        assert_eq!(typed["createdAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(typed["mode"], Value::Null, "an unset mode is sent as null");
    }

    #[test]
    fn too_many_events_are_an_invalid_batch() {
        let body: ValidateBody = serde_json::from_str(r#"{"events": [{}, {}]}"#).unwrap();
        assert!(check_batch_size(&body, 2).is_ok());
        assert_eq!(check_batch_size(&body, 1).unwrap_err().code, ErrorCode::InvalidBatch);
    }
}
