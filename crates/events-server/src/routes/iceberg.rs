//! `/iceberg/v1/...`: the Apache Iceberg REST catalog (the spec's default
//! endpoint set, without a prefix), backed by the namespace's
//! [`Catalog`] object, so Spark, Trino, DuckDB and PyIceberg read the
//! namespace's tables with their own clients.
//!
//! Auth is the namespace key (which sees only its own namespace: any other
//! namespace is reported as not found) or the admin token (every namespace).
//! Errors use the spec's `ErrorModel` (`{"error": {"message", "type",
//! "code"}}`, see [`events_api::iceberg`]) with its statuses and types
//! (`NoSuchTableException`, `CommitFailedException`, ...): handlers fail with
//! the events.do error as everywhere, and the `iceberg_errors` middleware
//! answers it in the model.
//! Multipart namespaces do not exist here: a namespace is one level.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use events_api::iceberg::no_such_namespace;
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode};
use events_iceberg::commit::{TableRequirement, TableUpdate};
use events_iceberg::metadata::Schema;
use events_objects::Catalog;
use events_objects::catalog::{CatalogRequest, CatalogResponse, LoadedTable};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::auth::{Caller, Principal};
use crate::error::{ApiErrorResponse, ApiJson, ApiPath, JsonBody};
use crate::routes::ApiRouter;
use crate::state::AppState;

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(config))
        .routes(routes!(list_namespaces, create_namespace))
        .routes(routes!(load_namespace, namespace_exists, drop_namespace))
        .routes(routes!(update_properties))
        .routes(routes!(list_tables, create_table))
        .routes(routes!(load_table, table_exists, commit_table, drop_table))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

/// Most namespaces listed for the admin.
pub const MAX_LISTED_NAMESPACES: usize = 10_000;

/// The caller, if it may see `ns`. A tenant asking for another namespace
/// gets the same 404 as for one that does not exist.
async fn caller_for(state: &AppState, headers: &HeaderMap, ns: &str) -> Result<Caller> {
    let caller = state.auth.authenticate(&state.host, headers).await?;
    validate_namespace(ns).map_err(|_| no_such_namespace(ns))?;
    if caller.principal != Principal::Admin && caller.namespace != ns {
        return Err(no_such_namespace(ns).into());
    }
    Ok(caller)
}

/// Sends `req` to the catalog of `ns`.
pub async fn call_catalog(state: &AppState, ns: &str, req: CatalogRequest) -> Result<CatalogResponse> {
    Ok(state.host.call_object::<Catalog>(ns, req).await?)
}

fn out_of_protocol() -> ApiErrorResponse {
    ApiError::internal("catalog answered out of protocol").into()
}

/// A failing catalog response: the Iceberg REST spec's `IcebergErrorResponse`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IcebergErrorResponse {
    /// The error.
    pub error: ErrorModel,
}

/// The Iceberg REST spec's `ErrorModel`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorModel {
    /// Human-readable message (the events.do message).
    pub message: String,
    /// The exception type: `NoSuchTableException`, `NoSuchNamespaceException`,
    /// `AlreadyExistsException`, `NamespaceNotEmptyException`,
    /// `CommitFailedException`, `CommitStateUnknownException`,
    /// `BadRequestException`, `NotAuthorizedException`, `ForbiddenException`,
    /// `ServiceUnavailableException`, `InternalServerError`, ...
    #[serde(rename = "type")]
    pub error_type: String,
    /// The HTTP status.
    pub code: u16,
}

/// `GET /v1/config`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CatalogConfig {
    /// Defaults for client properties.
    #[schema(value_type = Object)]
    pub defaults: BTreeMap<String, String>,
    /// Overrides of client properties.
    #[schema(value_type = Object)]
    pub overrides: BTreeMap<String, String>,
}

/// A namespace and its properties.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NamespaceBody {
    /// The namespace levels (one here).
    pub namespace: Vec<String>,
    /// Its properties.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: BTreeMap<String, String>,
}

/// Namespace listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NamespaceList {
    /// Namespaces, each a list of levels.
    pub namespaces: Vec<Vec<String>>,
}

/// A property update.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PropertiesUpdate {
    /// Keys to remove.
    #[serde(default)]
    pub removals: Vec<String>,
    /// Keys to set.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub updates: BTreeMap<String, String>,
}

/// What a property update did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PropertiesUpdated {
    /// Keys set.
    pub updated: Vec<String>,
    /// Keys removed.
    pub removed: Vec<String>,
    /// Keys asked to be removed that did not exist.
    pub missing: Vec<String>,
}

/// A table identifier.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TableIdentifier {
    /// Its namespace levels.
    pub namespace: Vec<String>,
    /// Its name.
    pub name: String,
}

/// Table listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TableList {
    /// Tables.
    pub identifiers: Vec<TableIdentifier>,
}

/// `LoadTableResult`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoadTableResult {
    /// The current metadata file.
    #[serde(rename = "metadata-location")]
    pub metadata_location: String,
    /// The table metadata (Iceberg v2 JSON).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Table-specific client configuration.
    #[schema(value_type = Object)]
    pub config: BTreeMap<String, String>,
}

impl LoadTableResult {
    fn of(t: LoadedTable) -> Result<Self> {
        let metadata = serde_json::to_value(&t.metadata).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(LoadTableResult { metadata_location: t.metadata_location, metadata, config: BTreeMap::new() })
    }
}

/// `CreateTableRequest`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct CreateTableBody {
    /// The table name.
    pub name: String,
    /// Its schema (Iceberg JSON).
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Ignored: tables live under the namespace's folder.
    pub location: Option<String>,
    /// Only unpartitioned specs are accepted at creation.
    #[schema(value_type = Option<Object>)]
    pub partition_spec: Option<Value>,
    /// Only unsorted orders are accepted at creation.
    #[schema(value_type = Option<Object>)]
    pub write_order: Option<Value>,
    /// Staged creation is not supported.
    #[serde(default)]
    pub stage_create: bool,
    /// Properties.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: BTreeMap<String, String>,
}

/// `CommitTableRequest`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CommitTableBody {
    /// The table (optional; the path names it).
    #[schema(value_type = Option<Object>)]
    pub identifier: Option<Value>,
    /// Conditions on the current metadata.
    #[schema(value_type = Vec<Object>)]
    pub requirements: Vec<TableRequirement>,
    /// Changes.
    #[schema(value_type = Vec<Object>)]
    pub updates: Vec<TableUpdate>,
}

/// `CommitTableResponse`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommitTableResult {
    /// The new metadata file.
    #[serde(rename = "metadata-location")]
    pub metadata_location: String,
    /// The new metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// Catalog configuration for clients.
#[utoipa::path(get, path = "/iceberg/v1/config", tag = "iceberg",
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Configuration", body = CatalogConfig)),
    security(("bearerAuth" = [])))]
pub async fn config(State(state): State<AppState>, headers: HeaderMap) -> Result<ApiJson<CatalogConfig>> {
    state.auth.authenticate(&state.host, &headers).await?;
    Ok(ApiJson(CatalogConfig { defaults: BTreeMap::new(), overrides: BTreeMap::new() }))
}

/// Lists namespaces: a tenant sees its own (once it has a table or was created); the admin sees all.
#[utoipa::path(get, path = "/iceberg/v1/namespaces", tag = "iceberg",
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Namespaces", body = NamespaceList)),
    security(("bearerAuth" = [])))]
pub async fn list_namespaces(State(state): State<AppState>, headers: HeaderMap) -> Result<ApiJson<NamespaceList>> {
    let caller = state.auth.authenticate(&state.host, &headers).await?;
    let candidates = if caller.principal == Principal::Admin {
        let mut names = state.host.object_names::<Catalog>()?;
        names.truncate(MAX_LISTED_NAMESPACES);
        names
    } else {
        vec![caller.namespace.clone()]
    };
    let mut namespaces = Vec::new();
    for ns in candidates {
        if let CatalogResponse::Namespace(Some(_)) = call_catalog(&state, &ns, CatalogRequest::NamespaceInfo).await? {
            namespaces.push(vec![ns]);
        }
    }
    Ok(ApiJson(NamespaceList { namespaces }))
}

/// Creates a namespace (a tenant: only its own).
#[utoipa::path(post, path = "/iceberg/v1/namespaces", tag = "iceberg",
    request_body = NamespaceBody,
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Created", body = NamespaceBody), (status = 409, description = "Exists")),
    security(("bearerAuth" = [])))]
pub async fn create_namespace(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: JsonBody<NamespaceBody>,
) -> Result<ApiJson<NamespaceBody>> {
    let caller = state.auth.authenticate(&state.host, &headers).await?;
    let body = body.parse()?;
    let [ns] = body.namespace.as_slice() else {
        return Err(ApiError::new(ErrorCode::InvalidNamespace, "namespaces have exactly one level").into());
    };
    validate_namespace(ns)?;
    if caller.principal != Principal::Admin && caller.namespace != *ns {
        return Err(ApiError::new(ErrorCode::Forbidden, "a key may create only its own namespace").into());
    }
    match call_catalog(&state, ns, CatalogRequest::CreateNamespace { properties: body.properties }).await? {
        CatalogResponse::Namespace(Some(properties)) => {
            Ok(ApiJson(NamespaceBody { namespace: vec![ns.clone()], properties }))
        }
        _ => Err(out_of_protocol()),
    }
}

async fn namespace_props(state: &AppState, headers: &HeaderMap, ns: &str) -> Result<BTreeMap<String, String>> {
    caller_for(state, headers, ns).await?;
    match call_catalog(state, ns, CatalogRequest::NamespaceInfo).await? {
        CatalogResponse::Namespace(Some(p)) => Ok(p),
        CatalogResponse::Namespace(None) => Err(no_such_namespace(ns).into()),
        _ => Err(out_of_protocol()),
    }
}

/// A namespace's properties.
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{ns}", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Namespace", body = NamespaceBody)),
    security(("bearerAuth" = [])))]
pub async fn load_namespace(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<ApiJson<NamespaceBody>> {
    let properties = namespace_props(&state, &headers, &ns).await?;
    Ok(ApiJson(NamespaceBody { namespace: vec![ns], properties }))
}

/// Whether a namespace exists (204) or not (404).
#[utoipa::path(head, path = "/iceberg/v1/namespaces/{ns}", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 204, description = "Exists")),
    security(("bearerAuth" = [])))]
pub async fn namespace_exists(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<StatusCode> {
    namespace_props(&state, &headers, &ns).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Drops an empty namespace.
#[utoipa::path(delete, path = "/iceberg/v1/namespaces/{ns}", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 204, description = "Dropped"), (status = 409, description = "Has tables")),
    security(("bearerAuth" = [])))]
pub async fn drop_namespace(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<StatusCode> {
    caller_for(&state, &headers, &ns).await?;
    call_catalog(&state, &ns, CatalogRequest::DropNamespace).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets and removes namespace properties.
#[utoipa::path(post, path = "/iceberg/v1/namespaces/{ns}/properties", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    request_body = PropertiesUpdate,
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Updated", body = PropertiesUpdated)),
    security(("bearerAuth" = [])))]
pub async fn update_properties(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
    body: JsonBody<PropertiesUpdate>,
) -> Result<ApiJson<PropertiesUpdated>> {
    caller_for(&state, &headers, &ns).await?;
    let body = body.parse()?;
    match call_catalog(
        &state,
        &ns,
        CatalogRequest::UpdateNamespaceProperties { removals: body.removals, updates: body.updates },
    )
    .await?
    {
        CatalogResponse::PropertiesUpdated { updated, removed, missing } => {
            Ok(ApiJson(PropertiesUpdated { updated, removed, missing }))
        }
        _ => Err(out_of_protocol()),
    }
}

/// Lists a namespace's tables.
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{ns}/tables", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Tables", body = TableList)),
    security(("bearerAuth" = [])))]
pub async fn list_tables(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
) -> Result<ApiJson<TableList>> {
    namespace_props(&state, &headers, &ns).await?;
    match call_catalog(&state, &ns, CatalogRequest::ListTables).await? {
        CatalogResponse::Tables(tables) => Ok(ApiJson(TableList {
            identifiers: tables
                .into_iter()
                .map(|t| TableIdentifier { namespace: vec![ns.clone()], name: t.name })
                .collect(),
        })),
        _ => Err(out_of_protocol()),
    }
}

/// Creates an external table (its engine writes its files and commits its snapshots).
#[utoipa::path(post, path = "/iceberg/v1/namespaces/{ns}/tables", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$")),
    request_body = CreateTableBody,
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Created", body = LoadTableResult), (status = 409, description = "Exists")),
    security(("bearerAuth" = [])))]
pub async fn create_table(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(ns): ApiPath<String>,
    body: JsonBody<CreateTableBody>,
) -> Result<ApiJson<LoadTableResult>> {
    caller_for(&state, &headers, &ns).await?;
    let body = body.parse()?;
    if body.stage_create {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "staged table creation is not supported").into());
    }
    let partitioned = body.partition_spec.as_ref().and_then(|s| s["fields"].as_array()).is_some_and(|f| !f.is_empty());
    let sorted = body.write_order.as_ref().and_then(|s| s["fields"].as_array()).is_some_and(|f| !f.is_empty());
    if partitioned || sorted {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "tables are created unpartitioned and unsorted").into());
    }
    let mut schema: Schema = serde_json::from_value(body.schema)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("schema is not an Iceberg schema: {e}")))?;
    schema.schema_id = 0;
    match call_catalog(
        &state,
        &ns,
        CatalogRequest::CreateTable { name: body.name, schema, properties: body.properties },
    )
    .await?
    {
        CatalogResponse::Table(t) => Ok(ApiJson(LoadTableResult::of(*t)?)),
        _ => Err(out_of_protocol()),
    }
}

async fn loaded(state: &AppState, headers: &HeaderMap, ns: &str, table: &str) -> Result<LoadedTable> {
    caller_for(state, headers, ns).await?;
    match call_catalog(state, ns, CatalogRequest::LoadTable { table: table.to_string() }).await? {
        CatalogResponse::Table(t) => Ok(*t),
        _ => Err(out_of_protocol()),
    }
}

/// Loads a table: its metadata location and metadata.
#[utoipa::path(get, path = "/iceberg/v1/namespaces/{ns}/tables/{table}", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("table" = String, Path, description = "Table")),
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Table", body = LoadTableResult)),
    security(("bearerAuth" = [])))]
pub async fn load_table(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, table)): ApiPath<(String, String)>,
) -> Result<ApiJson<LoadTableResult>> {
    Ok(ApiJson(LoadTableResult::of(loaded(&state, &headers, &ns, &table).await?)?))
}

/// Whether a table exists (204) or not (404).
#[utoipa::path(head, path = "/iceberg/v1/namespaces/{ns}/tables/{table}", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("table" = String, Path, description = "Table")),
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 204, description = "Exists")),
    security(("bearerAuth" = [])))]
pub async fn table_exists(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, table)): ApiPath<(String, String)>,
) -> Result<StatusCode> {
    loaded(&state, &headers, &ns, &table).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Commits requirements and updates to a table; a requirement that no longer holds answers 409 `COMMIT_CONFLICT`.
#[utoipa::path(post, path = "/iceberg/v1/namespaces/{ns}/tables/{table}", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("table" = String, Path, description = "Table")),
    request_body = CommitTableBody,
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 200, description = "Committed", body = CommitTableResult), (status = 409, description = "COMMIT_CONFLICT: reload and retry")),
    security(("bearerAuth" = [])))]
pub async fn commit_table(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, table)): ApiPath<(String, String)>,
    body: JsonBody<CommitTableBody>,
) -> Result<ApiJson<CommitTableResult>> {
    caller_for(&state, &headers, &ns).await?;
    let body = body.parse()?;
    let req = CatalogRequest::CommitTable { table, requirements: body.requirements, updates: body.updates };
    match call_catalog(&state, &ns, req).await? {
        CatalogResponse::Table(t) => {
            let r = LoadTableResult::of(*t)?;
            Ok(ApiJson(CommitTableResult { metadata_location: r.metadata_location, metadata: r.metadata }))
        }
        _ => Err(out_of_protocol()),
    }
}

/// Drops an external table (its files are left to their engine); managed tables cannot be dropped.
#[utoipa::path(delete, path = "/iceberg/v1/namespaces/{ns}/tables/{table}", tag = "iceberg",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("table" = String, Path, description = "Table")),
    responses((status = "default", description = "The Iceberg REST `ErrorModel` (`NoSuchTableException`, `CommitFailedException`, ...)", body = IcebergErrorResponse), (status = 204, description = "Dropped")),
    security(("bearerAuth" = [])))]
pub async fn drop_table(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, table)): ApiPath<(String, String)>,
) -> Result<StatusCode> {
    caller_for(&state, &headers, &ns).await?;
    call_catalog(&state, &ns, CatalogRequest::DropTable { table }).await?;
    Ok(StatusCode::NO_CONTENT)
}
