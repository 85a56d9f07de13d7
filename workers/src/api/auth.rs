//! Authentication, with the native server's rules (`events-server/src/auth.rs`):
//! the admin token acts on `X-Namespace` (default `default`); a namespace key
//! `ns_<namespace>_<secret>` acts on its own namespace only; nothing else is
//! accepted unless `DEV = "true"`. Secrets are compared in constant time and
//! keys are checked against their namespace's `Tenant` object (as SHA-256).

use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode};
use events_objects::Tenant;
use events_objects::tenant::{TenantRequest, TenantResponse, parse_key, secret_digest};
use events_runtime::Host;
use subtle::ConstantTimeEq;

use super::Call;

/// The namespace of the admin and of dev-mode callers without `X-Namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator.
    Admin,
    /// A namespace key, by id.
    Key(String),
    /// Unauthenticated, allowed by `DEV`.
    Dev,
}

/// An authenticated caller and the namespace it acts on.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The namespace every read and write of the request is confined to.
    pub namespace: String,
}

impl Caller {
    /// Refuses anyone but the admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.principal {
            Principal::Admin => Ok(()),
            _ => Err(ApiError::new(ErrorCode::Forbidden, "this operation needs the admin token")),
        }
    }

    /// The rate-limiter subject of this caller.
    pub fn limiter_subject(&self, ip: Option<&str>) -> String {
        match &self.principal {
            Principal::Admin => "admin".to_string(),
            Principal::Key(id) => format!("key:{id}"),
            Principal::Dev => format!("ip:{}", ip.unwrap_or("unknown")),
        }
    }

    /// Refuses a caller that may not act on `ns`.
    pub fn require_namespace(&self, ns: &str, what: &str) -> Result<(), ApiError> {
        if self.principal != Principal::Admin && self.namespace != ns {
            return Err(ApiError::new(ErrorCode::Forbidden, format!("this key may not {what} of namespace {ns}")));
        }
        Ok(())
    }
}

/// Authenticates the request of `call`.
pub async fn authenticate(call: &Call) -> Result<Caller, ApiError> {
    let requested_ns = match call.headers.get("x-namespace") {
        Some(v) => {
            let ns = v.to_str().map_err(|_| ApiError::new(ErrorCode::InvalidNamespace, "X-Namespace is not text"))?;
            validate_namespace(ns)?;
            Some(ns.to_string())
        }
        None => None,
    };
    let Some(header) = call.headers.get("authorization") else {
        if call.config.dev {
            return Ok(Caller {
                principal: Principal::Dev,
                namespace: requested_ns.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            });
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
    if let Some(admin) = &call.config.admin_token
        && bool::from(token.as_bytes().ct_eq(admin.as_bytes()))
    {
        return Ok(Caller {
            principal: Principal::Admin,
            namespace: requested_ns.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        });
    }
    let invalid = || ApiError::new(ErrorCode::InvalidApiKey, "invalid API key");
    let (ns, secret) = parse_key(token).ok_or_else(invalid)?;
    validate_namespace(ns).map_err(|_| invalid())?;
    let answer =
        call.host.call::<Tenant>(ns, TenantRequest::Authenticate { secret_sha256: secret_digest(secret) }).await?;
    match answer {
        TenantResponse::Authenticated(Some(info)) => {
            Ok(Caller { principal: Principal::Key(info.id), namespace: ns.to_string() })
        }
        _ => Err(invalid()),
    }
}
