//! Authentication: the admin token and namespace API keys.
//!
//! - `Authorization: Bearer <admin token>` is the operator. It may act on
//!   any namespace, named by the `X-Namespace` header (default `default`).
//! - `Authorization: Bearer ns_<namespace>_<secret>` is a tenant: it acts on
//!   its own namespace only, whatever `X-Namespace` says.
//! - `Authorization: Bearer pk_<namespace>_<secret>` (or `?key=pk_...`) is a
//!   publishable key: `POST /e` only ([`Auth::authenticate_ingest`]); every
//!   other route ([`Auth::authenticate`]) refuses it with `403 FORBIDDEN`.
//! - No credentials: refused, unless the server runs with `--dev`, where the
//!   caller acts on `X-Namespace` (default `default`).
//!
//! The rules are the shared [`events_api::auth`] (also used by the Worker):
//! the admin token is compared in constant time, keys are checked against
//! their namespace's `Tenant` object. Verified keys (secret and publishable
//! alike, with a publishable key's origins and limits) are cached here for
//! [`KEY_CACHE_TTL`]; revoking a key through this server evicts it at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use events_api::auth::{Access, Credentials, KeyGrant, credentials_for, verify_key};
pub use events_api::auth::{Caller, DEFAULT_NAMESPACE, NAMESPACE_HEADER, Principal};
use events_core::ApiError;
use events_host_native::NativeHost;

/// How long a verified key is trusted without asking its namespace again:
/// the bound on how long a key revoked elsewhere (another process sharing
/// the namespace's `Tenant`) still works here.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Most cached keys (the cache is cleared when full).
pub const KEY_CACHE_CAPACITY: usize = 10_000;
/// File holding the generated admin token, inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

struct Cached {
    grant: KeyGrant,
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

    /// Authenticates a request to any route but `POST /e` (see
    /// [`events_api::auth::credentials`]): publishable keys are refused.
    pub async fn authenticate(&self, host: &NativeHost, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.authenticate_for(host, headers, None, Access::Full).await
    }

    /// Authenticates a request to `POST /e`, which also admits publishable
    /// keys, in the header or in `query`'s `key` parameter.
    pub async fn authenticate_ingest(
        &self,
        host: &NativeHost,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Caller, ApiError> {
        self.authenticate_for(host, headers, query, Access::Ingest).await
    }

    async fn authenticate_for(
        &self,
        host: &NativeHost,
        headers: &HeaderMap,
        query: Option<&str>,
        access: Access,
    ) -> Result<Caller, ApiError> {
        let (namespace, digest, kind) =
            match credentials_for(headers, query, Some(&self.admin_token), self.dev, access)? {
                Credentials::Resolved(caller) => return Ok(caller),
                Credentials::NamespaceKey { namespace, secret_sha256, kind } => (namespace, secret_sha256, kind),
            };
        let grant = match self.cached(&digest, &namespace, kind) {
            Some(grant) => grant,
            None => {
                let grant = verify_key(host, namespace, digest.clone(), kind).await?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= KEY_CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(digest, Cached { grant: grant.clone(), at: Instant::now() });
                grant
            }
        };
        grant.admit(headers)
    }

    fn cached(&self, digest: &str, ns: &str, kind: events_objects::tenant::KeyKind) -> Option<KeyGrant> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache.get(digest)?;
        // The kind too: a publishable key's secret under the `ns_` prefix is no key.
        (hit.at.elapsed() < KEY_CACHE_TTL && hit.grant.namespace == ns && hit.grant.kind == kind)
            .then(|| hit.grant.clone())
    }

    /// Forgets a revoked key at once.
    pub fn evict_key(&self, key_id: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, c| c.grant.id != key_id);
    }
}
