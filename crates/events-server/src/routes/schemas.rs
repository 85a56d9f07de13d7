//! `/schemas/{ns}/...`: the schema registry. The admin token, or the namespace's own key.
//! Thin handlers over [`events_api::schemas`] (the wire types and the registry calls).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use events_api::schemas::{
    self as api, ConfigView, RegisterBody, SchemaList, SchemaView, ValidateBody, ValidateResult,
};
use events_core::Timestamp;
use events_core::name::validate_namespace;
use events_objects::schema_registry::SchemaRequest;
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
    let (view, created) = api::register(&state.host, &ns, body.parse()?).await?;
    state.ingest.invalidate_schemas(&ns);
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, ApiJson(view)))
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
    Ok(ApiJson(api::versions(&state.host, &ns, SchemaRequest::List).await?))
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
    Ok(ApiJson(api::get_config(&state.host, &ns).await?))
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
    Ok(ApiJson(api::put_config(&state.host, &ns, body.parse()?).await?))
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
    api::check_batch_size(&body, state.config.ingest.max_events_per_batch)?;
    let now = Timestamp(chrono::Utc::now().timestamp_millis());
    let limits =
        events_core::event::EventLimits { max_event_bytes: state.config.ingest.max_event_bytes, ..Default::default() };
    let events = crate::ingest::validate_events(&body.events, &ns, now, &limits)?;
    Ok(ApiJson(api::validate(&state.host, &ns, events).await?))
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
    Ok(ApiJson(api::get(&state.host, &ns, subject, None).await?))
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
    Ok(ApiJson(api::versions(&state.host, &ns, SchemaRequest::Delete { subject }).await?))
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
    Ok(ApiJson(api::versions(&state.host, &ns, SchemaRequest::Versions { subject }).await?))
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
    let n = api::parse_version(&n)?;
    Ok(ApiJson(api::get(&state.host, &ns, subject, Some(n)).await?))
}
