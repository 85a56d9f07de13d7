//! Authentication: the admin token and namespace API keys.
//!
//! - `Authorization: Bearer <admin token>` is the operator. It may act on
//!   any namespace, named by the `X-Namespace` header (default `default`).
//! - `Authorization: Bearer ns_<namespace>_<secret>` is a tenant: it acts on
//!   its own namespace only, whatever `X-Namespace` says.
//! - No credentials: refused, unless the server runs with `--dev`, where the
//!   caller acts on `X-Namespace` (default `default`).
//!
//! The rules are the shared [`events_api::auth`] (also used by the Worker):
//! the admin token is compared in constant time, keys are checked against
//! their namespace's `Tenant` object. Verified keys are cached here for
//! [`KEY_CACHE_TTL`]; revoking a key through this server evicts it at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
pub use events_api::auth::{Caller, DEFAULT_NAMESPACE, NAMESPACE_HEADER, Principal};
use events_api::auth::{Credentials, credentials, verify_key};
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

    /// Authenticates a request (see [`events_api::auth::credentials`]).
    pub async fn authenticate(&self, host: &NativeHost, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let (namespace, digest) = match credentials(headers, Some(&self.admin_token), self.dev)? {
            Credentials::Resolved(caller) => return Ok(caller),
            Credentials::NamespaceKey { namespace, secret_sha256 } => (namespace, secret_sha256),
        };
        if let Some(hit) = self.cached(&digest, &namespace) {
            return Ok(Caller { principal: Principal::Key { id: hit }, namespace });
        }
        let caller = verify_key(host, namespace, digest.clone()).await?;
        let Principal::Key { id } = &caller.principal else {
            unreachable!("a verified namespace key is a key principal");
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= KEY_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(digest, Cached { namespace: caller.namespace.clone(), key_id: id.clone(), at: Instant::now() });
        Ok(caller)
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
