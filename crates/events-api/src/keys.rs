//! `/admin/namespaces/{ns}/keys`: creating, listing and revoking a
//! namespace's API keys through its `Tenant` object, in the answer shapes of
//! both hosts. The hosts require the admin token first; the native server
//! also evicts a revoked key from its cache.
//!
//! A key is a secret key (`ns_...`, every route of its namespace) or a
//! publishable key (`pk_...`, `POST /e` only), created with
//! `{"kind": "publishable", "allowedOrigins": [...], "rateLimit": {...}}`.
//! The full key is in the creation answer only.

use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::Tenant;
use events_objects::tenant::{KeyInfo, KeyKind, KeyRateLimit, TenantRequest, TenantResponse};
use events_runtime::context::Host;
use serde::{Deserialize, Serialize};

/// What a key may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyKindView {
    /// `ns_<namespace>_<secret>`: every route of its namespace. Keep it on servers.
    #[default]
    Secret,
    /// `pk_<namespace>_<secret>`: `POST /e` only, maybe from listed origins
    /// only, with its own rate limits. Safe to embed in web pages.
    Publishable,
}

impl From<KeyKind> for KeyKindView {
    fn from(k: KeyKind) -> Self {
        match k {
            KeyKind::Secret => KeyKindView::Secret,
            KeyKind::Publishable => KeyKindView::Publishable,
        }
    }
}

/// A publishable key's per-minute limits (all of its users together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRateLimitView {
    /// Requests per minute (default 600).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 9007199254740991_u64))]
    pub requests_per_minute: Option<u64>,
    /// Events per minute (default 6,000).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 9007199254740991_u64))]
    pub events_per_minute: Option<u64>,
}

/// A namespace API key, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// Key id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Label.
    pub name: Option<String>,
    /// What the key may do.
    pub kind: KeyKindView,
    /// Creation time (ISO-8601).
    pub created_at: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
    /// The key's first characters.
    pub prefix: String,
    /// Publishable keys: the origins it is accepted from (empty: any).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub allowed_origins: Option<Vec<String>>,
    /// Publishable keys: its per-minute limits, defaults filled in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rate_limit: Option<KeyRateLimitView>,
}

impl From<KeyInfo> for KeyView {
    fn from(k: KeyInfo) -> Self {
        let publishable = k.kind == KeyKind::Publishable;
        let limit = k.rate_limit.effective();
        KeyView {
            id: k.id,
            namespace: k.namespace,
            name: k.name,
            kind: k.kind.into(),
            created_at: k.created_at.to_iso(),
            revoked_at: k.revoked_at.map(Timestamp::to_iso),
            prefix: k.prefix,
            allowed_origins: publishable.then_some(k.allowed_origins),
            rate_limit: publishable.then_some(KeyRateLimitView {
                requests_per_minute: limit.requests_per_minute,
                events_per_minute: limit.events_per_minute,
            }),
        }
    }
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The full key, `ns_<namespace>_<secret>` or `pk_<namespace>_<secret>`.
    /// Store it now; it is not shown again.
    pub key: String,
    /// The key's facts.
    #[serde(flatten)]
    pub info: KeyView,
}

/// Body of key creation (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Optional label (at most 128 characters).
    pub name: Option<String>,
    /// `secret` (default) or `publishable`.
    pub kind: Option<KeyKindView>,
    /// Publishable keys only: the origins (`https://shop.example.com`,
    /// `https://*.example.com` for every subdomain) it is accepted from, at
    /// most 100. Absent or empty: any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Publishable keys only: its own per-minute limits (defaults 600
    /// requests and 6,000 events per minute).
    pub rate_limit: Option<KeyRateLimitView>,
}

impl CreateKeyRequest {
    /// Parses a creation body: empty (or `null`) is a secret key without a
    /// label; a body that is not this shape is `INVALID_JSON`.
    pub fn parse(body: &[u8]) -> Result<CreateKeyRequest, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(CreateKeyRequest::default());
        }
        serde_json::from_slice::<Option<CreateKeyRequest>>(body)
            .map(Option::unwrap_or_default)
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid key request: {e}")))
    }

    fn into_tenant_request(self) -> Result<TenantRequest, ApiError> {
        let CreateKeyRequest { name, kind, allowed_origins, rate_limit } = self;
        match kind.unwrap_or_default() {
            KeyKindView::Secret => {
                if allowed_origins.is_some() || rate_limit.is_some() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        "allowedOrigins and rateLimit apply to publishable keys only (\"kind\": \"publishable\")",
                    ));
                }
                Ok(TenantRequest::CreateKey { name })
            }
            KeyKindView::Publishable => {
                let limit = rate_limit.unwrap_or_default();
                Ok(TenantRequest::CreatePublishableKey {
                    name,
                    allowed_origins: allowed_origins.unwrap_or_default(),
                    rate_limit: KeyRateLimit {
                        requests_per_minute: limit.requests_per_minute,
                        events_per_minute: limit.events_per_minute,
                    },
                })
            }
        }
    }
}

/// Key listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    /// Every key of the namespace, revoked ones included, oldest first.
    pub keys: Vec<KeyView>,
}

/// `POST /admin/namespaces/{ns}/keys` (the caller is the admin).
pub async fn create_key<H: Host>(host: &H, ns: &str, request: CreateKeyRequest) -> Result<CreatedKey, ApiError> {
    validate_namespace(ns)?;
    match host.call::<Tenant>(ns, request.into_tenant_request()?).await? {
        TenantResponse::KeyCreated { info, key } => Ok(CreatedKey { key, info: info.into() }),
        _ => Err(ApiError::internal("unexpected answer")),
    }
}

/// `GET /admin/namespaces/{ns}/keys` (the caller is the admin).
pub async fn list_keys<H: Host>(host: &H, ns: &str) -> Result<KeyList, ApiError> {
    validate_namespace(ns)?;
    match host.call::<Tenant>(ns, TenantRequest::ListKeys).await? {
        TenantResponse::Keys(keys) => Ok(KeyList { keys: keys.into_iter().map(Into::into).collect() }),
        _ => Err(ApiError::internal("unexpected answer")),
    }
}

/// `DELETE /admin/namespaces/{ns}/keys/{id}` (the caller is the admin).
pub async fn revoke_key<H: Host>(host: &H, ns: &str, id: &str) -> Result<KeyView, ApiError> {
    validate_namespace(ns)?;
    match host.call::<Tenant>(ns, TenantRequest::RevokeKey { id: id.to_string() }).await? {
        TenantResponse::Key(info) => Ok(info.into()),
        _ => Err(ApiError::internal("unexpected answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_bodies() {
        assert_eq!(CreateKeyRequest::parse(b"").unwrap(), CreateKeyRequest::default());
        assert_eq!(CreateKeyRequest::parse(b"null").unwrap(), CreateKeyRequest::default());
        let pk = CreateKeyRequest::parse(
            br#"{"kind":"publishable","allowedOrigins":["https://a.example"],"rateLimit":{"requestsPerMinute":5}}"#,
        )
        .unwrap();
        match pk.into_tenant_request().unwrap() {
            TenantRequest::CreatePublishableKey { allowed_origins, rate_limit, .. } => {
                assert_eq!(allowed_origins, ["https://a.example"]);
                assert_eq!(rate_limit.requests_per_minute, Some(5));
            }
            other => panic!("{other:?}"),
        }
        // A misspelt field must not silently make an unrestricted key.
        let e = CreateKeyRequest::parse(br#"{"kind":"publishable","allowedOrigin":["https://a.example"]}"#);
        assert_eq!(e.unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(CreateKeyRequest::parse(br#"{"kind":"admin"}"#).unwrap_err().code, ErrorCode::InvalidJson);
        let secret_with_origins = CreateKeyRequest::parse(br#"{"allowedOrigins":[]}"#).unwrap();
        assert_eq!(secret_with_origins.into_tenant_request().unwrap_err().code, ErrorCode::InvalidRequest);
    }
}
