//! The API's error envelope and its stable error codes.
//!
//! Every failing HTTP response of events.do has the body
//! `{"error": "<message>", "code": "<STABLE_CODE>", "details": {...}}`.
//! Codes never change meaning once published; messages may be reworded.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A stable, machine-readable error code. Each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    // 400
    /// The request was malformed in a way no more specific code describes.
    InvalidRequest,
    /// The body is not valid JSON (or NDJSON).
    InvalidJson,
    /// The batch envelope is wrong: no `events` array, too many events.
    InvalidBatch,
    /// One or more events failed validation; `details.errors` lists them.
    InvalidEvent,
    /// One or more events exceed the per-event size limit.
    EventTooLarge,
    /// The `batchId` is not an acceptable identifier.
    InvalidBatchId,
    /// A namespace name is invalid or reserved.
    InvalidNamespace,
    /// A query parameter is invalid.
    InvalidQuery,
    /// A pattern is invalid.
    InvalidPattern,
    /// A configuration value is invalid.
    InvalidConfig,
    /// Events failed schema validation in strict mode.
    SchemaValidationError,
    /// The content encoding is not supported or the body could not be decoded.
    UnsupportedEncoding,
    // 401
    /// No credentials were given.
    AuthRequired,
    /// The `Authorization` header is not `Bearer <token>`.
    InvalidAuthFormat,
    /// The key is unknown, revoked or does not match.
    InvalidApiKey,
    /// A webhook signature is missing, wrong or stale.
    InvalidSignature,
    // 403
    /// The credentials are valid but do not allow this operation.
    Forbidden,
    // 404
    /// The resource does not exist (or belongs to another tenant).
    NotFound,
    // 405
    /// The route exists but not with this method.
    MethodNotAllowed,
    // 409
    /// The request conflicts with current state.
    Conflict,
    // 413
    /// The body exceeds the size limit.
    PayloadTooLarge,
    // 415
    /// The content type is not supported.
    UnsupportedMediaType,
    // 429
    /// A rate limit was crossed; see `Retry-After`.
    RateLimited,
    /// The namespace's daily quota is used up.
    QuotaExceeded,
    // 500
    /// An unexpected failure inside events.do.
    InternalError,
    /// Local durable storage failed.
    StorageError,
    // 503
    /// A dependency is unavailable; retry later.
    ServiceUnavailable,
    /// A bounded queue or buffer is full; retry later.
    Overloaded,
    // 504
    /// The operation did not finish in time.
    Timeout,
    // 400 (appended)
    /// An outbound target (webhook URL) is refused by the outbound policy:
    /// a private, loopback or metadata address that `[outbound] allow` does not cover.
    TargetNotAllowed,
    // 409 (appended)
    /// A new schema version breaks the subject's compatibility rule; `details.differences` lists why.
    SchemaIncompatible,
    // 400 (appended)
    /// An event of a change-capture format (`collection.*`, `cdc`, `debezium`)
    /// is malformed: an unknown operation, no collection, no document id, no
    /// new document on insert or update. `details.errors` lists each event at fault.
    InvalidCdcEvent,
    // 409 (appended)
    /// An Iceberg commit's requirements do not hold: the table changed since
    /// the commit was built. Reload the table and retry.
    CommitConflict,
    // 400 (appended)
    /// A SQL statement is not a read-only query (DDL, DML, `SET`, `COPY`...).
    ReadOnlyQuery,
    /// A SQL query exceeded its row or memory limit.
    QueryLimitExceeded,
    // 500 (appended)
    /// A data file the table's snapshot names is absent from the lake (deleted
    /// or lost behind events.do's back). The read fails rather than miss its
    /// rows; `details.key` names the file.
    DataFileMissing,
}

impl ErrorCode {
    /// The HTTP status this code is always sent with.
    pub const fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest
            | InvalidJson
            | InvalidBatch
            | InvalidEvent
            | EventTooLarge
            | InvalidBatchId
            | InvalidNamespace
            | InvalidQuery
            | InvalidPattern
            | InvalidConfig
            | SchemaValidationError
            | UnsupportedEncoding => 400,
            AuthRequired | InvalidAuthFormat | InvalidApiKey | InvalidSignature => 401,
            Forbidden => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            Conflict => 409,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            RateLimited | QuotaExceeded => 429,
            InternalError | StorageError => 500,
            ServiceUnavailable | Overloaded => 503,
            Timeout => 504,
            SchemaIncompatible => 409,
            TargetNotAllowed => 400,
            InvalidCdcEvent => 400,
            CommitConflict => 409,
            ReadOnlyQuery | QueryLimitExceeded => 400,
            DataFileMissing => 500,
        }
    }

    /// Whether a client may retry the same request later and expect success.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::ServiceUnavailable
                | ErrorCode::Overloaded
                | ErrorCode::Timeout
                | ErrorCode::StorageError
        )
    }

    /// The code as it appears on the wire, e.g. `"INVALID_EVENT"`.
    pub fn as_str(self) -> &'static str {
        // Serialising a unit variant through serde_json gives its wire name;
        // keep one source of truth by listing them once here.
        use ErrorCode::*;
        match self {
            InvalidRequest => "INVALID_REQUEST",
            InvalidJson => "INVALID_JSON",
            InvalidBatch => "INVALID_BATCH",
            InvalidEvent => "INVALID_EVENT",
            EventTooLarge => "EVENT_TOO_LARGE",
            InvalidBatchId => "INVALID_BATCH_ID",
            InvalidNamespace => "INVALID_NAMESPACE",
            InvalidQuery => "INVALID_QUERY",
            InvalidPattern => "INVALID_PATTERN",
            InvalidConfig => "INVALID_CONFIG",
            SchemaValidationError => "SCHEMA_VALIDATION_ERROR",
            UnsupportedEncoding => "UNSUPPORTED_ENCODING",
            AuthRequired => "AUTH_REQUIRED",
            InvalidAuthFormat => "INVALID_AUTH_FORMAT",
            InvalidApiKey => "INVALID_API_KEY",
            InvalidSignature => "INVALID_SIGNATURE",
            Forbidden => "FORBIDDEN",
            NotFound => "NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Conflict => "CONFLICT",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            RateLimited => "RATE_LIMITED",
            QuotaExceeded => "QUOTA_EXCEEDED",
            InternalError => "INTERNAL_ERROR",
            StorageError => "STORAGE_ERROR",
            ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Overloaded => "OVERLOADED",
            Timeout => "TIMEOUT",
            SchemaIncompatible => "SCHEMA_INCOMPATIBLE",
            TargetNotAllowed => "TARGET_NOT_ALLOWED",
            InvalidCdcEvent => "INVALID_CDC_EVENT",
            CommitConflict => "COMMIT_CONFLICT",
            ReadOnlyQuery => "READ_ONLY_QUERY",
            QueryLimitExceeded => "QUERY_LIMIT_EXCEEDED",
            DataFileMissing => "DATA_FILE_MISSING",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = {
        use ErrorCode::*;
        &[
            InvalidRequest,
            InvalidJson,
            InvalidBatch,
            InvalidEvent,
            EventTooLarge,
            InvalidBatchId,
            InvalidNamespace,
            InvalidQuery,
            InvalidPattern,
            InvalidConfig,
            SchemaValidationError,
            UnsupportedEncoding,
            AuthRequired,
            InvalidAuthFormat,
            InvalidApiKey,
            InvalidSignature,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            RateLimited,
            QuotaExceeded,
            InternalError,
            StorageError,
            ServiceUnavailable,
            Overloaded,
            Timeout,
            TargetNotAllowed,
            SchemaIncompatible,
            InvalidCdcEvent,
            CommitConflict,
            ReadOnlyQuery,
            QueryLimitExceeded,
            DataFileMissing,
        ]
    };
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the API reports it: the envelope `{"error","code","details"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A human-readable message.
    #[serde(rename = "error")]
    pub message: String,
    /// Structured context (indices at fault, limits, ...). `{}` when none.
    #[serde(default = "empty_object", skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl ApiError {
    /// An error with a code and message and empty details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), details: empty_object() }
    }

    /// Replaces the details with `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The HTTP status of this error.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// Shorthand for an [`ErrorCode::InternalError`].
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InternalError, message)
    }

    /// Shorthand for an [`ErrorCode::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// A [`ErrorCode::DataFileMissing`] for the lake key `key`, named in the
    /// message and in `details.key`.
    pub fn data_file_missing(key: &str) -> Self {
        ApiError::new(
            ErrorCode::DataFileMissing,
            format!("data file {key} is named by the table's snapshot but missing from the lake"),
        )
        .with_details(serde_json::json!({ "key": key }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, Value::String(code.as_str().to_string()));
        }
    }

    #[test]
    fn envelope_shape() {
        let e = ApiError::new(ErrorCode::InvalidEvent, "bad").with_details(serde_json::json!({"indices":[1]}));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v, serde_json::json!({"error":"bad","code":"INVALID_EVENT","details":{"indices":[1]}}));
        let back: ApiError = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
