//! Errors of the Iceberg REST catalog (`/iceberg/v1/...`) in the spec's
//! `ErrorModel`: `{"error": {"message", "type", "code"}}`.
//!
//! Iceberg clients choose the exception they raise from the HTTP status and,
//! for some statuses, from `type` (a 404 is `NoSuchTableException` or
//! `NoSuchNamespaceException`, a 409 `CommitFailedException` or
//! `AlreadyExistsException`). The message is the events.do message, so a
//! client shows the server's reason. Every other route keeps the events.do
//! envelope.

use events_core::{ApiError, ErrorCode};
use serde_json::{Value, json};

/// What a catalog request addresses, which names the type of its 404 and 409.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// The catalog itself (config, namespace listing, unknown routes).
    Catalog,
    /// An existing namespace (load, exists, properties, table listing).
    Namespace,
    /// A namespace being created (409: it exists).
    NamespaceCreate,
    /// A namespace being dropped (409: it has tables).
    NamespaceDrop,
    /// An existing table (load, exists, drop).
    Table,
    /// A table being created (404: no namespace; 409: it exists).
    TableCreate,
    /// A commit to a table (409: its requirements failed; 5xx: its outcome is unknown).
    TableCommit,
}

/// What the catalog route `route` (its template, as routed) addresses with `method`.
pub fn resource_of(method: &str, route: &str) -> Resource {
    use Resource::*;
    let Some(rest) = route.strip_prefix("/iceberg/v1/namespaces") else { return Catalog };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        ("POST", []) => NamespaceCreate,
        (_, []) => Catalog,
        ("DELETE", [_]) => NamespaceDrop,
        ("POST", [_, "tables"]) => TableCreate,
        ("POST", [_, "tables", _]) => TableCommit,
        (_, [_, "tables", _, ..]) => Table,
        _ => Namespace,
    }
}

/// A 404 for a namespace the caller cannot see (or that does not exist),
/// whatever the route addresses: its type is `NoSuchNamespaceException`
/// (`details.missing` says so).
pub fn no_such_namespace(ns: &str) -> ApiError {
    ApiError::not_found(format!("no namespace {ns}")).with_details(json!({ "missing": "namespace" }))
}

/// The spec's error `type` of `e` on a request addressing `resource`.
pub fn error_type(e: &ApiError, resource: Resource) -> &'static str {
    use Resource::*;
    let resource =
        if e.code == ErrorCode::NotFound && e.details["missing"] == "namespace" { Namespace } else { resource };
    match e.code.http_status() {
        401 => "NotAuthorizedException",
        403 => "ForbiddenException",
        404 => match resource {
            Table | TableCommit => "NoSuchTableException",
            Namespace | NamespaceCreate | NamespaceDrop | TableCreate => "NoSuchNamespaceException",
            Catalog => "NotFoundException",
        },
        405 => "UnsupportedOperationException",
        409 => match (e.code, resource) {
            (ErrorCode::CommitConflict, _) | (_, TableCommit) => "CommitFailedException",
            (_, NamespaceDrop) => "NamespaceNotEmptyException",
            _ => "AlreadyExistsException",
        },
        429 => "TooManyRequestsException",
        503 => "ServiceUnavailableException",
        500..=599 if resource == TableCommit => "CommitStateUnknownException",
        500..=599 => "InternalServerError",
        _ => "BadRequestException",
    }
}

/// The body of a failing catalog response: the spec's `IcebergErrorResponse`,
/// `{"error": {"message", "type", "code"}}`, `code` the HTTP status.
pub fn error_model(e: &ApiError, resource: Resource) -> Value {
    json!({
        "error": {
            "message": e.message,
            "type": error_type(e, resource),
            "code": e.http_status(),
        }
    })
}

/// Whether `path` is served by the Iceberg REST catalog (and so answers
/// errors in its model).
pub fn is_catalog_path(path: &str) -> bool {
    path == "/iceberg/v1" || path.starts_with("/iceberg/v1/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(code: ErrorCode, resource: Resource) -> &'static str {
        error_type(&ApiError::new(code, "m"), resource)
    }

    #[test]
    fn types_follow_the_spec() {
        use Resource::*;
        assert_eq!(ty(ErrorCode::NotFound, Table), "NoSuchTableException");
        assert_eq!(ty(ErrorCode::NotFound, TableCommit), "NoSuchTableException");
        assert_eq!(ty(ErrorCode::NotFound, Namespace), "NoSuchNamespaceException");
        assert_eq!(ty(ErrorCode::NotFound, TableCreate), "NoSuchNamespaceException");
        assert_eq!(ty(ErrorCode::CommitConflict, TableCommit), "CommitFailedException");
        assert_eq!(ty(ErrorCode::CommitConflict, Catalog), "CommitFailedException");
        assert_eq!(ty(ErrorCode::Conflict, TableCommit), "CommitFailedException");
        assert_eq!(ty(ErrorCode::Conflict, NamespaceCreate), "AlreadyExistsException");
        assert_eq!(ty(ErrorCode::Conflict, TableCreate), "AlreadyExistsException");
        assert_eq!(ty(ErrorCode::Conflict, NamespaceDrop), "NamespaceNotEmptyException");
        assert_eq!(ty(ErrorCode::Forbidden, Table), "ForbiddenException");
        assert_eq!(ty(ErrorCode::InvalidApiKey, Table), "NotAuthorizedException");
        assert_eq!(ty(ErrorCode::AuthRequired, Catalog), "NotAuthorizedException");
        assert_eq!(ty(ErrorCode::InvalidRequest, TableCreate), "BadRequestException");
        assert_eq!(ty(ErrorCode::InvalidJson, TableCommit), "BadRequestException");
        assert_eq!(ty(ErrorCode::PayloadTooLarge, TableCommit), "BadRequestException");
        assert_eq!(ty(ErrorCode::Overloaded, Table), "ServiceUnavailableException");
        assert_eq!(ty(ErrorCode::InternalError, Table), "InternalServerError");
        assert_eq!(ty(ErrorCode::StorageError, TableCommit), "CommitStateUnknownException");
        assert_eq!(ty(ErrorCode::Timeout, TableCommit), "CommitStateUnknownException");
    }

    #[test]
    fn routes_name_what_they_address() {
        use Resource::*;
        let ns = "/iceberg/v1/namespaces/{ns}";
        let table = "/iceberg/v1/namespaces/{ns}/tables/{table}";
        assert_eq!(resource_of("GET", "/iceberg/v1/config"), Catalog);
        assert_eq!(resource_of("GET", "/iceberg/v1/namespaces"), Catalog);
        assert_eq!(resource_of("POST", "/iceberg/v1/namespaces"), NamespaceCreate);
        assert_eq!(resource_of("GET", ns), Namespace);
        assert_eq!(resource_of("HEAD", ns), Namespace);
        assert_eq!(resource_of("DELETE", ns), NamespaceDrop);
        assert_eq!(resource_of("POST", "/iceberg/v1/namespaces/{ns}/properties"), Namespace);
        assert_eq!(resource_of("GET", "/iceberg/v1/namespaces/{ns}/tables"), Namespace);
        assert_eq!(resource_of("POST", "/iceberg/v1/namespaces/{ns}/tables"), TableCreate);
        assert_eq!(resource_of("GET", table), Table);
        assert_eq!(resource_of("DELETE", table), Table);
        assert_eq!(resource_of("POST", table), TableCommit);
        // A table route whose namespace is not the caller's: no such namespace.
        assert_eq!(error_type(&no_such_namespace("other"), Table), "NoSuchNamespaceException");
    }

    #[test]
    fn the_model_carries_message_type_and_status() {
        let e = ApiError::new(ErrorCode::NotFound, "no table orders");
        assert_eq!(
            error_model(&e, Resource::Table),
            json!({"error": {"message": "no table orders", "type": "NoSuchTableException", "code": 404}})
        );
        assert!(is_catalog_path("/iceberg/v1/config"));
        assert!(is_catalog_path("/iceberg/v1"));
        assert!(!is_catalog_path("/iceberg/v10/x"));
        assert!(!is_catalog_path("/query"));
    }
}
