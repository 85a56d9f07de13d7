//! `/schemas/{ns}/...`: the schema registry. The admin token, or the namespace's own key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::SchemaRegistry;
use events_objects::schema_registry::{
    Compatibility, RegisterSchema, RegistryConfig, SchemaRequest, SchemaResponse, SchemaVersion, ValidationMode,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiErrorResponse, ApiJson, ApiPath, JsonBody};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(register_schema, list_schemas))
        .routes(routes!(get_config, put_config))
        .routes(routes!(validate))
        .routes(routes!(latest, delete_schema))
        .routes(routes!(versions))
        .routes(routes!(version))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

/// The caller may manage `ns`: the admin, or a caller confined to `ns`.
async fn allowed(state: &AppState, headers: &HeaderMap, ns: &str) -> Result<Caller> {
    validate_namespace(ns)?;
    let caller = state.auth.authenticate(&state.host, headers).await?;
    caller.require_namespace(ns, "manage schemas")?;
    Ok(caller)
}

async fn call(state: &AppState, ns: &str, req: SchemaRequest) -> Result<SchemaResponse> {
    Ok(state.host.call_object::<SchemaRegistry>(ns, req).await?)
}

fn out_of_protocol() -> ApiErrorResponse {
    ApiError::internal("schema registry answered out of protocol").into()
}

/// One schema version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Compatibility rule: NONE, BACKWARD, FORWARD, FULL or a `_TRANSITIVE` form.
    #[schema(value_type = String)]
    pub compatibility: Compatibility,
    /// The schema's own mode (`off`, `warn`, `strict`); absent: the namespace's.
    #[schema(value_type = Option<String>)]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// An event type (give this or `pattern`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// A type pattern such as `order.*` (give this or `type`).
    pub pattern: Option<String>,
    /// JSON Schema, draft 2020-12 (default) or draft-07 (`$schema`).
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Compatibility rule; default: the subject's current one, else the namespace's.
    #[schema(value_type = Option<String>)]
    pub compatibility: Option<Compatibility>,
    /// Mode of this schema; default: the namespace's.
    #[schema(value_type = Option<String>)]
    pub mode: Option<ValidationMode>,
    /// Free text.
    pub description: Option<String>,
}

/// Schema listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SchemaList {
    /// Latest live version of each subject.
    pub schemas: Vec<SchemaView>,
}

/// Namespace settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigView {
    /// Mode of schemas that set none: `off`, `warn` or `strict` (default).
    #[schema(value_type = String)]
    pub mode: ValidationMode,
    /// Default compatibility of new subjects (default BACKWARD).
    #[schema(value_type = String)]
    pub compatibility: Compatibility,
}

/// Events to test.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidateBody {
    /// Events as they would be sent to `POST /e`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Box<serde_json::value::RawValue>>,
}

/// Outcome of a test validation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidateResult {
    /// Whether every event passed (or had no schema).
    pub valid: bool,
    /// One entry per error: `{index, type, path, message, schema, version, mode}`.
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<Value>,
}

/// Registers a new schema version for an event type or pattern.
#[utoipa::path(post, path = "/schemas/{ns}", tag = "schemas",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    request_body = RegisterBody,
    responses(
        (status = 201, description = "New version", body = SchemaView),
        (status = 200, description = "Identical to the latest version; nothing changed", body = SchemaView),
        (status = 409, description = "SCHEMA_INCOMPATIBLE: details.differences", body = crate::error::ErrorBody),
    ),
    security(("bearerAuth" = [])))]
pub async fn register_schema(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
    body: JsonBody<RegisterBody>,
) -> Result<(StatusCode, ApiJson<SchemaView>)> {
    allowed(&state, &headers, &ns).await?;
    let body = body.parse()?;
    let (subject, is_pattern) = match (body.event_type, body.pattern) {
        (Some(t), None) => (t, false),
        (None, Some(p)) => (p, true),
        _ => {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "give exactly one of \"type\" and \"pattern\"").into());
        }
    };
    let req = RegisterSchema {
        subject,
        is_pattern,
        schema: body.schema,
        compatibility: body.compatibility,
        mode: body.mode,
        description: body.description,
    };
    match call(&state, &ns, SchemaRequest::Register(req)).await? {
        SchemaResponse::Registered { version, created } => {
            state.ingest.invalidate_schemas(&ns);
            Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, ApiJson(version.into())))
        }
        _ => Err(out_of_protocol()),
    }
}

/// Lists the latest live version of every schema of a namespace.
#[utoipa::path(get, path = "/schemas/{ns}", tag = "schemas",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = 200, description = "Schemas", body = SchemaList)),
    security(("bearerAuth" = [])))]
pub async fn list_schemas(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<ApiJson<SchemaList>> {
    allowed(&state, &headers, &ns).await?;
    match call(&state, &ns, SchemaRequest::List).await? {
        SchemaResponse::Versions(v) => Ok(ApiJson(SchemaList { schemas: v.into_iter().map(Into::into).collect() })),
        _ => Err(out_of_protocol()),
    }
}

/// Reads the namespace's validation mode and default compatibility.
#[utoipa::path(get, path = "/schemas/{ns}/config", tag = "schemas",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = 200, description = "Settings", body = ConfigView)),
    security(("bearerAuth" = [])))]
pub async fn get_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<ApiJson<ConfigView>> {
    allowed(&state, &headers, &ns).await?;
    match call(&state, &ns, SchemaRequest::GetConfig).await? {
        SchemaResponse::Config(c) => Ok(ApiJson(ConfigView { mode: c.mode, compatibility: c.compatibility })),
        _ => Err(out_of_protocol()),
    }
}

/// Replaces the namespace's validation mode and default compatibility.
#[utoipa::path(put, path = "/schemas/{ns}/config", tag = "schemas",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    request_body = ConfigView,
    responses((status = 200, description = "Settings", body = ConfigView)),
    security(("bearerAuth" = [])))]
pub async fn put_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
    body: JsonBody<ConfigView>,
) -> Result<ApiJson<ConfigView>> {
    allowed(&state, &headers, &ns).await?;
    let body = body.parse()?;
    let config = RegistryConfig { mode: body.mode, compatibility: body.compatibility };
    call(&state, &ns, SchemaRequest::SetConfig(config)).await?;
    Ok(ApiJson(body))
}

/// Validates events against the namespace's schemas without storing them.
#[utoipa::path(post, path = "/schemas/{ns}/validate", tag = "schemas",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    request_body = ValidateBody,
    responses((status = 200, description = "Outcome", body = ValidateResult)),
    security(("bearerAuth" = [])))]
pub async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
    body: JsonBody<ValidateBody>,
) -> Result<ApiJson<ValidateResult>> {
    allowed(&state, &headers, &ns).await?;
    let body = body.parse()?;
    if body.events.len() > state.config.ingest.max_events_per_batch {
        return Err(ApiError::new(ErrorCode::InvalidBatch, "too many events").into());
    }
    let now = Timestamp(chrono::Utc::now().timestamp_millis());
    let limits =
        events_core::event::EventLimits { max_event_bytes: state.config.ingest.max_event_bytes, ..Default::default() };
    let events = crate::ingest::validate_events(&body.events, &ns, now, &limits)?;
    match call(&state, &ns, SchemaRequest::Validate { events }).await? {
        SchemaResponse::Validated { failures, .. } => {
            let mut errors = events_api::schemas::failure_entries(&failures);
            for (e, f) in errors.iter_mut().zip(failures.iter().flat_map(|f| f.errors.iter().map(move |_| f.mode))) {
                e["mode"] = serde_json::to_value(f).unwrap_or(Value::Null);
            }
            Ok(ApiJson(ValidateResult { valid: errors.is_empty(), errors }))
        }
        _ => Err(out_of_protocol()),
    }
}

/// The latest live version of a type's (or pattern's) schema.
#[utoipa::path(get, path = "/schemas/{ns}/{subject}", tag = "schemas",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("subject" = String, Path, description = "Event type or pattern")),
    responses((status = 200, description = "Latest version", body = SchemaView)),
    security(("bearerAuth" = [])))]
pub async fn latest(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, subject)): ApiPath<(String, String)>,
) -> Result<ApiJson<SchemaView>> {
    allowed(&state, &headers, &ns).await?;
    match call(&state, &ns, SchemaRequest::Get { subject, version: None }).await? {
        SchemaResponse::Version(v) => Ok(ApiJson(v.into())),
        _ => Err(out_of_protocol()),
    }
}

/// Deletes a schema: events of that type are no longer validated. The history stays readable.
#[utoipa::path(delete, path = "/schemas/{ns}/{subject}", tag = "schemas",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("subject" = String, Path, description = "Event type or pattern")),
    responses((status = 200, description = "Deleted; the history", body = SchemaList)),
    security(("bearerAuth" = [])))]
pub async fn delete_schema(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, subject)): ApiPath<(String, String)>,
) -> Result<ApiJson<SchemaList>> {
    allowed(&state, &headers, &ns).await?;
    match call(&state, &ns, SchemaRequest::Delete { subject }).await? {
        SchemaResponse::Versions(v) => Ok(ApiJson(SchemaList { schemas: v.into_iter().map(Into::into).collect() })),
        _ => Err(out_of_protocol()),
    }
}

/// Every version of a schema, oldest first (deleted ones included).
#[utoipa::path(get, path = "/schemas/{ns}/{subject}/versions", tag = "schemas",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("subject" = String, Path, description = "Event type or pattern")),
    responses((status = 200, description = "History", body = SchemaList)),
    security(("bearerAuth" = [])))]
pub async fn versions(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, subject)): ApiPath<(String, String)>,
) -> Result<ApiJson<SchemaList>> {
    allowed(&state, &headers, &ns).await?;
    match call(&state, &ns, SchemaRequest::Versions { subject }).await? {
        SchemaResponse::Versions(v) => Ok(ApiJson(SchemaList { schemas: v.into_iter().map(Into::into).collect() })),
        _ => Err(out_of_protocol()),
    }
}

/// One version of a schema.
#[utoipa::path(get, path = "/schemas/{ns}/{subject}/versions/{n}", tag = "schemas",
    params(
        ("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"),
        ("subject" = String, Path, description = "Event type or pattern"),
        ("n" = u32, Path, description = "Version number"),
    ),
    responses((status = 200, description = "The version", body = SchemaView)),
    security(("bearerAuth" = [])))]
pub async fn version(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, subject, n)): ApiPath<(String, String, String)>,
) -> Result<ApiJson<SchemaView>> {
    allowed(&state, &headers, &ns).await?;
    let n: u32 = n.parse().map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "versions are positive integers"))?;
    match call(&state, &ns, SchemaRequest::Get { subject, version: Some(n) }).await? {
        SchemaResponse::Version(v) => Ok(ApiJson(v.into())),
        _ => Err(out_of_protocol()),
    }
}
