//! Authentication rules shared by both hosts: who a request's credentials
//! name, and the namespace it may act on.
//!
//! - `Authorization: Bearer <admin token>` is the operator. It may act on
//!   any namespace, named by the `X-Namespace` header (default `default`).
//! - `Authorization: Bearer ns_<namespace>_<secret>` is a tenant: it acts on
//!   its own namespace only, whatever `X-Namespace` says. The key is checked
//!   (as SHA-256) against its namespace's `Tenant` object by [`verify_key`].
//! - No credentials: refused, unless the host runs in dev mode, where the
//!   caller acts on `X-Namespace` (default `default`).
//!
//! The admin token is compared in constant time. A host reads its headers
//! into [`credentials`], and verifies a namespace key with [`verify_key`]
//! (the native server keeps verified keys in a short cache in between).

use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode};
use events_objects::Tenant;
use events_objects::tenant::{TenantRequest, TenantResponse, parse_key, secret_digest};
use events_runtime::context::Host;
use http::HeaderMap;
use subtle::ConstantTimeEq;

/// The namespace of the admin and of dev-mode callers without `X-Namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Header naming the namespace an admin acts on.
pub const NAMESPACE_HEADER: &str = "x-namespace";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator (admin token).
    Admin,
    /// A namespace API key.
    Key {
        /// Key id.
        id: String,
    },
    /// Unauthenticated, allowed by dev mode.
    Dev,
}

/// An authenticated caller and the namespace it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The namespace every read and write of this request is confined to.
    pub namespace: String,
}

impl Caller {
    /// Refuses anyone but the admin (`FORBIDDEN`).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.principal {
            Principal::Admin => Ok(()),
            _ => Err(ApiError::new(ErrorCode::Forbidden, "this operation needs the admin token")),
        }
    }

    /// Refuses (`FORBIDDEN`) a caller other than the admin acting on a
    /// namespace `ns` that is not its own; `what` names the operation in the
    /// message ("this key may not {what} of namespace {ns}").
    pub fn require_namespace(&self, ns: &str, what: &str) -> Result<(), ApiError> {
        if self.principal != Principal::Admin && self.namespace != ns {
            return Err(ApiError::new(ErrorCode::Forbidden, format!("this key may not {what} of namespace {ns}")));
        }
        Ok(())
    }

    /// The rate-limiter subject of this caller (`ip` identifies dev callers).
    pub fn limiter_subject(&self, ip: Option<&str>) -> String {
        match &self.principal {
            Principal::Admin => "admin".to_string(),
            Principal::Key { id } => format!("key:{id}"),
            Principal::Dev => format!("ip:{}", ip.unwrap_or("unknown")),
        }
    }
}

/// What a request's headers claim, before a namespace key is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The admin token or a dev-mode caller: nothing left to verify.
    Resolved(Caller),
    /// A namespace key, to verify with [`verify_key`].
    NamespaceKey {
        /// The namespace the key names (valid).
        namespace: String,
        /// SHA-256 of the key's secret (hex), as the `Tenant` object stores it.
        secret_sha256: String,
    },
}

/// The namespace named by `X-Namespace`, if sent (`INVALID_NAMESPACE` when
/// it is not text or not a valid name).
pub fn requested_namespace(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(NAMESPACE_HEADER) else { return Ok(None) };
    let ns = value.to_str().map_err(|_| ApiError::new(ErrorCode::InvalidNamespace, "X-Namespace is not text"))?;
    validate_namespace(ns)?;
    Ok(Some(ns.to_string()))
}

/// Reads the credentials of a request: `AUTH_REQUIRED` without an
/// `Authorization` header (unless `dev`), `INVALID_AUTH_FORMAT` when it is
/// not `Bearer <token>`, `INVALID_API_KEY` for a token that is neither the
/// `admin_token` (`None`: there is none) nor shaped like a namespace key.
pub fn credentials(headers: &HeaderMap, admin_token: Option<&str>, dev: bool) -> Result<Credentials, ApiError> {
    let requested_ns = requested_namespace(headers)?;
    let Some(header) = headers.get(http::header::AUTHORIZATION) else {
        if dev {
            return Ok(Credentials::Resolved(Caller {
                principal: Principal::Dev,
                namespace: requested_ns.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            }));
        }
        return Err(ApiError::new(ErrorCode::AuthRequired, "send Authorization: Bearer <api key>"));
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidAuthFormat, "use Authorization: Bearer <api key>"))?;
    if let Some(admin) = admin_token
        && bool::from(token.as_bytes().ct_eq(admin.as_bytes()))
    {
        return Ok(Credentials::Resolved(Caller {
            principal: Principal::Admin,
            namespace: requested_ns.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        }));
    }
    let (ns, secret) = parse_key(token).ok_or_else(invalid_key)?;
    validate_namespace(ns).map_err(|_| invalid_key())?;
    Ok(Credentials::NamespaceKey { namespace: ns.to_string(), secret_sha256: secret_digest(secret) })
}

fn invalid_key() -> ApiError {
    ApiError::new(ErrorCode::InvalidApiKey, "invalid API key")
}

/// Verifies a namespace key against its namespace's `Tenant` object: the
/// caller acting on `namespace` with the key's id, or `INVALID_API_KEY`
/// (unknown or revoked).
pub async fn verify_key<H: Host>(host: &H, namespace: String, secret_sha256: String) -> Result<Caller, ApiError> {
    match host.call::<Tenant>(&namespace, TenantRequest::Authenticate { secret_sha256 }).await? {
        TenantResponse::Authenticated(Some(info)) => {
            Ok(Caller { principal: Principal::Key { id: info.id }, namespace })
        }
        _ => Err(invalid_key()),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const ADMIN: &str = "adm_0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn code(r: Result<Credentials, ApiError>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn the_admin_acts_on_the_requested_namespace_or_the_default() {
        let bearer = format!("Bearer {ADMIN}");
        let admin = |ns: &str| Credentials::Resolved(Caller { principal: Principal::Admin, namespace: ns.into() });
        let plain = headers(&[("authorization", &bearer)]);
        assert_eq!(credentials(&plain, Some(ADMIN), false).unwrap(), admin(DEFAULT_NAMESPACE));
        let named = headers(&[("authorization", &bearer), ("x-namespace", "acme")]);
        assert_eq!(credentials(&named, Some(ADMIN), false).unwrap(), admin("acme"));
    }

    #[test]
    fn a_namespace_key_is_confined_to_its_namespace_whatever_x_namespace_says() {
        let secret = "ab".repeat(32);
        let bearer = format!("Bearer ns_acme_{secret}");
        let h = headers(&[("authorization", &bearer), ("x-namespace", "other")]);
        match credentials(&h, Some(ADMIN), false).unwrap() {
            Credentials::NamespaceKey { namespace, secret_sha256 } => {
                assert_eq!(namespace, "acme");
                assert_eq!(secret_sha256, secret_digest(&secret));
            }
            other => panic!("expected a namespace key, got {other:?}"),
        }
    }

    #[test]
    fn missing_or_malformed_credentials_have_stable_codes() {
        assert_eq!(code(credentials(&HeaderMap::new(), Some(ADMIN), false)), ErrorCode::AuthRequired);
        for bad in ["Basic abc", "Bearer ", "Bearer    "] {
            let h = headers(&[("authorization", bad)]);
            assert_eq!(code(credentials(&h, Some(ADMIN), false)), ErrorCode::InvalidAuthFormat, "{bad:?}");
        }
        let secret = "ab".repeat(32);
        let bad_namespace = format!("Bearer ns_Not!Valid_{secret}");
        let short_secret = "Bearer ns_acme_abab".to_string();
        for bad in ["Bearer adm_0123456789abcdeX", "Bearer nonsense", &short_secret, &bad_namespace] {
            let h = headers(&[("authorization", bad)]);
            assert_eq!(code(credentials(&h, Some(ADMIN), false)), ErrorCode::InvalidApiKey, "{bad:?}");
        }
        let h = headers(&[("authorization", &format!("Bearer {ADMIN}")), ("x-namespace", "Not Valid!")]);
        assert_eq!(code(credentials(&h, Some(ADMIN), false)), ErrorCode::InvalidNamespace);
    }

    #[test]
    fn without_an_admin_token_no_token_is_the_admin() {
        let h = headers(&[("authorization", "Bearer adm_anything_at_all")]);
        assert!(!matches!(credentials(&h, None, false), Ok(Credentials::Resolved(_))));
    }

    #[test]
    fn dev_mode_admits_callers_without_credentials_on_the_requested_namespace() {
        let h = headers(&[("x-namespace", "acme")]);
        let dev = Credentials::Resolved(Caller { principal: Principal::Dev, namespace: "acme".into() });
        assert_eq!(credentials(&h, Some(ADMIN), true).unwrap(), dev);
        // Credentials that are sent are still checked in dev mode.
        let h = headers(&[("authorization", "Basic x")]);
        assert_eq!(code(credentials(&h, Some(ADMIN), true)), ErrorCode::InvalidAuthFormat);
    }

    #[test]
    fn a_key_may_act_only_on_its_own_namespace() {
        let key = Caller { principal: Principal::Key { id: "k1".into() }, namespace: "acme".into() };
        assert!(key.require_namespace("acme", "manage schemas").is_ok());
        let err = key.require_namespace("other", "manage schemas").unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
        assert_eq!(err.message, "this key may not manage schemas of namespace other");
        assert_eq!(key.require_admin().unwrap_err().code, ErrorCode::Forbidden);
        let admin = Caller { principal: Principal::Admin, namespace: "acme".into() };
        assert!(admin.require_namespace("other", "manage schemas").is_ok());
    }
}
