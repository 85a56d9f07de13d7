//! The API's error envelope and its stable error codes.
//!
//! Every failing HTTP response of events.do has the body
//! `{"error": "<message>", "code": "<STABLE_CODE>", "details": {...}}`.
//! Codes never change meaning once published; messages may be reworded.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Declares [`ErrorCode`] from one table: each code's doc, name, wire name and
/// HTTP status are written once, and the enum, [`ErrorCode::as_str`],
/// [`ErrorCode::http_status`], [`ErrorCode::ALL`] and [`ErrorCode::from_wire`]
/// follow from it.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $code:ident = $wire:literal => $status:literal, )+) => {
        /// A stable, machine-readable error code. Each maps to one HTTP status.
        ///
        /// Published codes never change meaning; new codes are appended.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $code, )+
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$( ErrorCode::$code, )+];

            /// The HTTP status this code is always sent with.
            pub const fn http_status(self) -> u16 {
                match self {
                    $( ErrorCode::$code => $status, )+
                }
            }

            /// The code as it appears on the wire, e.g. `"INVALID_EVENT"`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$code => $wire, )+
                }
            }

            /// The code whose wire name is `wire`, if any.
            pub fn from_wire(wire: &str) -> Option<ErrorCode> {
                match wire {
                    $( $wire => Some(ErrorCode::$code), )+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// The request was malformed in a way no more specific code describes.
    InvalidRequest = "INVALID_REQUEST" => 400,
    /// The body is not valid JSON (or NDJSON).
    InvalidJson = "INVALID_JSON" => 400,
    /// The batch envelope is wrong: no `events` array, too many events.
    InvalidBatch = "INVALID_BATCH" => 400,
    /// One or more events failed validation; `details.errors` lists them.
    InvalidEvent = "INVALID_EVENT" => 400,
    /// One or more events exceed the per-event size limit.
    EventTooLarge = "EVENT_TOO_LARGE" => 400,
    /// The `batchId` is not an acceptable identifier.
    InvalidBatchId = "INVALID_BATCH_ID" => 400,
    /// A namespace name is invalid or reserved.
    InvalidNamespace = "INVALID_NAMESPACE" => 400,
    /// A query parameter is invalid.
    InvalidQuery = "INVALID_QUERY" => 400,
    /// A pattern is invalid.
    InvalidPattern = "INVALID_PATTERN" => 400,
    /// A configuration value is invalid.
    InvalidConfig = "INVALID_CONFIG" => 400,
    /// Events failed schema validation in strict mode.
    SchemaValidationError = "SCHEMA_VALIDATION_ERROR" => 400,
    /// The content encoding is not supported or the body could not be decoded.
    UnsupportedEncoding = "UNSUPPORTED_ENCODING" => 400,
    /// No credentials were given.
    AuthRequired = "AUTH_REQUIRED" => 401,
    /// The `Authorization` header is not `Bearer <token>`.
    InvalidAuthFormat = "INVALID_AUTH_FORMAT" => 401,
    /// The key is unknown, revoked or does not match.
    InvalidApiKey = "INVALID_API_KEY" => 401,
    /// A webhook signature is missing, wrong or stale.
    InvalidSignature = "INVALID_SIGNATURE" => 401,
    /// The credentials are valid but do not allow this operation.
    Forbidden = "FORBIDDEN" => 403,
    /// The resource does not exist (or belongs to another tenant).
    NotFound = "NOT_FOUND" => 404,
    /// The route exists but not with this method.
    MethodNotAllowed = "METHOD_NOT_ALLOWED" => 405,
    /// The request conflicts with current state.
    Conflict = "CONFLICT" => 409,
    /// The body exceeds the size limit.
    PayloadTooLarge = "PAYLOAD_TOO_LARGE" => 413,
    /// The content type is not supported.
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE" => 415,
    /// A rate limit was crossed; see `Retry-After`.
    RateLimited = "RATE_LIMITED" => 429,
    /// The namespace's daily quota is used up.
    QuotaExceeded = "QUOTA_EXCEEDED" => 429,
    /// An unexpected failure inside events.do.
    InternalError = "INTERNAL_ERROR" => 500,
    /// Local durable storage failed.
    StorageError = "STORAGE_ERROR" => 500,
    /// A dependency is unavailable; retry later.
    ServiceUnavailable = "SERVICE_UNAVAILABLE" => 503,
    /// A bounded queue or buffer is full; retry later.
    Overloaded = "OVERLOADED" => 503,
    /// The operation did not finish in time.
    Timeout = "TIMEOUT" => 504,
    /// An outbound target (webhook URL) is refused by the outbound policy:
    /// a private, loopback or metadata address that `[outbound] allow` does not cover.
    TargetNotAllowed = "TARGET_NOT_ALLOWED" => 400,
    /// A new schema version breaks the subject's compatibility rule; `details.differences` lists why.
    SchemaIncompatible = "SCHEMA_INCOMPATIBLE" => 409,
    /// An event of a change-capture format (`collection.*`, `cdc`, `debezium`)
    /// is malformed: an unknown operation, no collection, no document id, no
    /// new document on insert or update. `details.errors` lists each event at fault.
    InvalidCdcEvent = "INVALID_CDC_EVENT" => 400,
    /// An Iceberg commit's requirements do not hold: the table changed since
    /// the commit was built. Reload the table and retry.
    CommitConflict = "COMMIT_CONFLICT" => 409,
    /// A SQL statement is not a read-only query (DDL, DML, `SET`, `COPY`...).
    ReadOnlyQuery = "READ_ONLY_QUERY" => 400,
    /// A SQL query exceeded its row or memory limit.
    QueryLimitExceeded = "QUERY_LIMIT_EXCEEDED" => 400,
    /// A data file the table's snapshot names is absent from the lake (deleted
    /// or lost behind events.do's back). The read fails rather than miss its
    /// rows; `details.key` names the file.
    DataFileMissing = "DATA_FILE_MISSING" => 500,
    /// A publishable key with allowed origins was used from another origin,
    /// or without an `Origin` header; `details.origin` is what was sent.
    OriginNotAllowed = "ORIGIN_NOT_ALLOWED" => 403,
}

impl ErrorCode {
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
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ErrorCode::from_wire(&wire).ok_or_else(|| serde::de::Error::custom(format!("unknown error code {wire:?}")))
    }
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
    fn every_code_round_trips_through_its_wire_name() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?}: wire name used twice");
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, Value::String(code.as_str().to_string()));
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), code);
            assert!(matches!(code.http_status(), 400..=599), "{code:?}: not an error status");
        }
        assert!(serde_json::from_value::<ErrorCode>(Value::String("NO_SUCH_CODE".into())).is_err());
    }

    /// docs/api.md lists the codes by status; it must say what the table says.
    #[test]
    fn the_api_docs_list_every_code_under_its_status() {
        let docs = include_str!("../../../docs/api.md");
        let mut documented = std::collections::BTreeMap::<&str, u16>::new();
        for row in docs.lines().filter(|l| l.starts_with("| 4") || l.starts_with("| 5")) {
            let mut cells = row.split('|').map(str::trim).filter(|c| !c.is_empty());
            let Some(Ok(status)) = cells.next().map(str::parse::<u16>) else { continue };
            let quoted = cells.flat_map(|c| c.split('`').skip(1).step_by(2));
            for code in quoted.filter(|q| q.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_')) {
                assert!(documented.insert(code, status).is_none(), "{code} documented twice");
            }
        }
        for &code in ErrorCode::ALL {
            assert_eq!(documented.remove(code.as_str()), Some(code.http_status()), "{code} in docs/api.md");
        }
        assert!(documented.is_empty(), "docs/api.md lists codes that do not exist: {documented:?}");
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
