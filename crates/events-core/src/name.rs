//! Validation of user-supplied names: namespaces, batch ids.

use crate::error::{ApiError, ErrorCode};
use crate::limits::{MAX_BATCH_ID_LEN, MAX_NAMESPACE_LEN};

/// Namespace names that may not be used by tenants.
pub const RESERVED_NAMESPACES: &[&str] =
    &["admin", "system", "internal", "_system", "events", "con", "prn", "aux", "nul"];

/// The namespace rule of [`validate_namespace`] as a regular expression, for
/// the OpenAPI document (reserved names aside).
pub const NAMESPACE_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,63}$";

/// Checks a namespace name: 1–64 characters of `[a-z0-9-]`, starting with a
/// letter or digit, not reserved. Namespaces appear in file paths and API keys
/// (`ns_<namespace>_<secret>`), hence the strict alphabet.
pub fn validate_namespace(ns: &str) -> Result<(), ApiError> {
    let bad = |why: &str| Err(ApiError::new(ErrorCode::InvalidNamespace, format!("invalid namespace {ns:?}: {why}")));
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN {
        return bad("must be 1-64 characters");
    }
    let first = ns.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return bad("must start with a lowercase letter or digit");
    }
    if !ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return bad("only lowercase letters, digits and '-' are allowed");
    }
    if RESERVED_NAMESPACES.contains(&ns) {
        return bad("reserved name");
    }
    Ok(())
}

/// Checks a `batchId`: 1–256 printable ASCII characters, no `/`, `\` or whitespace.
pub fn validate_batch_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_BATCH_ID_LEN
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidBatchId,
            format!("batchId must be 1-{MAX_BATCH_ID_LEN} printable ASCII characters without '/', '\\' or spaces"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(validate_namespace("acme").is_ok());
        assert!(validate_namespace("acme-prod-2").is_ok());
        for bad in ["", "Acme", "a_b", "-a", "admin", "a/b", &"x".repeat(65)] {
            assert_eq!(validate_namespace(bad).unwrap_err().code, ErrorCode::InvalidNamespace, "{bad}");
        }
    }

    #[test]
    fn batch_ids() {
        assert!(validate_batch_id("batch-01:2026").is_ok());
        assert!(validate_batch_id("").is_err());
        assert!(validate_batch_id("a/b").is_err());
        assert!(validate_batch_id("a b").is_err());
    }
}
