//! Authentication: the admin token and namespace API keys.
//!
//! - `Authorization: Bearer <admin token>` is the operator. It may act on
//!   any namespace, named by the `X-Namespace` header (default `default`).
//! - `Authorization: Bearer ns_<namespace>_<secret>` is a tenant: it acts on
//!   its own namespace only, whatever `X-Namespace` says.
//! - No credentials: refused, unless the server runs with `--dev`, where the
//!   caller acts on `X-Namespace` (default `default`).
//!
//! Secrets are compared in constant time. Verified keys are cached for
//! [`KEY_CACHE_TTL`]; revoking a key through this server evicts it at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode};
use events_host_native::NativeHost;
use events_objects::Tenant;
use events_objects::tenant::{TenantRequest, TenantResponse, parse_key, secret_digest};
use subtle::ConstantTimeEq;

/// How long a verified key is trusted without asking its namespace again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most cached keys (the cache is cleared when full).
pub const KEY_CACHE_CAPACITY: usize = 10_000;
/// The namespace of the admin and of dev-mode callers without `X-Namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Header naming the namespace an admin acts on.
pub const NAMESPACE_HEADER: &str = "x-namespace";
/// File holding the generated admin token, inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

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
    /// Unauthenticated, allowed by `--dev`.
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
            Principal::Key { id } => format!("key:{id}"),
            Principal::Dev => format!("ip:{}", ip.unwrap_or("unknown")),
        }
    }
}

struct Cached {
    namespace: String,
    key_id: String,
    at: Instant,
}

/// The authenticator.
pub struct Auth {
    admin_token: String,
    dev: bool,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Auth {
    /// An authenticator with the given admin token.
    pub fn new(admin_token: String, dev: bool) -> Auth {
        assert!(admin_token.len() >= 16, "admin tokens are at least 16 characters");
        Auth { admin_token, dev, cache: Mutex::new(HashMap::new()) }
    }

    /// The admin token from the configuration, or the one stored in the data
    /// directory, or a new one (written with mode 0600 and printed once).
    pub fn load_admin_token(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
        if let Some(token) = configured {
            return Ok(token.to_string());
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        if let Ok(token) = std::fs::read_to_string(&path) {
            return Ok(token.trim().to_string());
        }
        std::fs::create_dir_all(data_dir)?;
        let token = format!("adm_{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            writeln!(f, "{token}")?;
            f.sync_all()?;
        }
        eprintln!("events.do: generated an admin token, stored in {} (mode 0600):\n  {token}", path.display());
        Ok(token)
    }

    /// Authenticates a request.
    pub async fn authenticate(&self, host: &NativeHost, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let requested_ns = match headers.get(NAMESPACE_HEADER) {
            Some(v) => {
                let ns =
                    v.to_str().map_err(|_| ApiError::new(ErrorCode::InvalidNamespace, "X-Namespace is not text"))?;
                validate_namespace(ns)?;
                Some(ns.to_string())
            }
            None => None,
        };
        let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
            if self.dev {
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
        if bool::from(token.as_bytes().ct_eq(self.admin_token.as_bytes())) {
            return Ok(Caller {
                principal: Principal::Admin,
                namespace: requested_ns.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            });
        }
        let invalid = || ApiError::new(ErrorCode::InvalidApiKey, "invalid API key");
        let (ns, secret) = parse_key(token).ok_or_else(invalid)?;
        validate_namespace(ns).map_err(|_| invalid())?;
        let digest = secret_digest(secret);
        if let Some(hit) = self.cached(&digest, ns) {
            return Ok(Caller { principal: Principal::Key { id: hit }, namespace: ns.to_string() });
        }
        let answer =
            host.call_object::<Tenant>(ns, TenantRequest::Authenticate { secret_sha256: digest.clone() }).await?;
        match answer {
            TenantResponse::Authenticated(Some(info)) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= KEY_CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(digest, Cached { namespace: ns.to_string(), key_id: info.id.clone(), at: Instant::now() });
                Ok(Caller { principal: Principal::Key { id: info.id }, namespace: ns.to_string() })
            }
            _ => Err(invalid()),
        }
    }

    fn cached(&self, digest: &str, ns: &str) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache.get(digest)?;
        (hit.at.elapsed() < KEY_CACHE_TTL && hit.namespace == ns).then(|| hit.key_id.clone())
    }

    /// Forgets a revoked key at once.
    pub fn evict_key(&self, key_id: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, c| c.key_id != key_id);
    }
}
