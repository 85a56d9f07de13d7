//! [`Tenant`]: one per namespace. API keys and namespace limits.
//!
//! API keys have the form `ns_<namespace>_<secret>` (secret keys) or
//! `pk_<namespace>_<secret>` (publishable keys, write-only, for browsers),
//! where the secret is 64 hex digits (256 random bits). Only the SHA-256 of
//! the secret is stored, with the key's kind; the full key is shown once,
//! when it is created. A secret authenticates only under the prefix of its
//! own kind, so a publishable key's secret never passes as a secret key.
//!
//! A publishable key may carry the origins it is used from
//! ([`normalize_origin`]) and its own per-minute rate limits
//! ([`KeyRateLimit`]; [`DEFAULT_PUBLISHABLE_REQUESTS_PER_MINUTE`] and
//! [`DEFAULT_PUBLISHABLE_EVENTS_PER_MINUTE`] when unset).

use events_core::limits::{DEFAULT_EVENTS_PER_DAY, DEFAULT_EVENTS_PER_MINUTE, DEFAULT_REQUESTS_PER_MINUTE};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, Row, SqlStorage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Most API keys a namespace may hold (revoked ones included).
pub const MAX_KEYS_PER_NAMESPACE: usize = 1_000;
/// Longest key name.
pub const MAX_KEY_NAME_LEN: usize = 128;

/// Most allowed origins of one publishable key.
pub const MAX_ALLOWED_ORIGINS: usize = 100;
/// Longest allowed origin.
pub const MAX_ORIGIN_LEN: usize = 256;
/// Default requests per minute of a publishable key (all of its users together).
pub const DEFAULT_PUBLISHABLE_REQUESTS_PER_MINUTE: u64 = 600;
/// Default events per minute of a publishable key (all of its users together).
pub const DEFAULT_PUBLISHABLE_EVENTS_PER_MINUTE: u64 = 6_000;

/// The namespace object.
pub struct Tenant;

/// What a key may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// `ns_<namespace>_<secret>`: every route of its namespace.
    #[default]
    Secret,
    /// `pk_<namespace>_<secret>`: `POST /e` only, maybe from listed origins only.
    Publishable,
}

impl KeyKind {
    /// The key prefix of this kind (`ns` or `pk`).
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyKind::Secret => "ns",
            KeyKind::Publishable => "pk",
        }
    }

    /// The stored and wire name (`secret`, `publishable`).
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Publishable => "publishable",
        }
    }

    fn from_stored(s: &str) -> KeyKind {
        if s == "publishable" { KeyKind::Publishable } else { KeyKind::Secret }
    }
}

/// A publishable key's own per-minute limits; `None` fields take
/// [`DEFAULT_PUBLISHABLE_REQUESTS_PER_MINUTE`] and
/// [`DEFAULT_PUBLISHABLE_EVENTS_PER_MINUTE`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRateLimit {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Events per minute.
    pub events_per_minute: Option<u64>,
}

impl KeyRateLimit {
    /// These limits with the publishable-key defaults filled in.
    pub fn effective(self) -> KeyRateLimit {
        KeyRateLimit {
            requests_per_minute: Some(self.requests_per_minute.unwrap_or(DEFAULT_PUBLISHABLE_REQUESTS_PER_MINUTE)),
            events_per_minute: Some(self.events_per_minute.unwrap_or(DEFAULT_PUBLISHABLE_EVENTS_PER_MINUTE)),
        }
    }

    /// Refuses a limit of 0 or above [`MAX_LIMIT`], naming the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        for (name, value) in
            [("requestsPerMinute", self.requests_per_minute), ("eventsPerMinute", self.events_per_minute)]
        {
            if value.is_some_and(|v| v == 0 || v > MAX_LIMIT) {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("rateLimit.{name} must be between 1 and {MAX_LIMIT}"),
                ));
            }
        }
        Ok(())
    }
}

/// The canonical form of an allowed origin, or why it is not one: `scheme://host[:port]`
/// with scheme `http` or `https`, lower-cased, no path (one trailing `/` is dropped).
/// The host may start with `*.` to allow every subdomain of the rest (not the rest itself).
pub fn normalize_origin(origin: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        Err(ApiError::new(ErrorCode::InvalidRequest, format!("allowed origin {origin:?} is not valid: {why}")))
    };
    if origin.len() > MAX_ORIGIN_LEN {
        return bad("longer than 256 characters");
    }
    let lower = origin.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('/').unwrap_or(&lower);
    let Some((scheme, authority)) = lower.split_once("://") else {
        return bad("expected scheme://host[:port], e.g. https://shop.example.com");
    };
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return bad("the port must be a number");
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid_name = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !valid_name {
        return bad("expected a host name without a path, query or credentials");
    }
    Ok(lower.to_string())
}

/// Whether `origin` (an `Origin` header value) is one of `allowed`
/// (canonical forms, see [`normalize_origin`]): equal to an entry, or a
/// subdomain of a `*.` entry with the same scheme and port.
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let origin = origin.trim().to_ascii_lowercase();
    allowed.iter().any(|entry| {
        if *entry == origin {
            return true;
        }
        let Some((scheme, rest)) = entry.split_once("://*.") else { return false };
        let Some(suffix_host) = origin.strip_prefix(scheme).and_then(|o| o.strip_prefix("://")) else {
            return false;
        };
        // `suffix_host` is `<sub>.<rest>`: at least one label before `rest`.
        suffix_host.strip_suffix(rest).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
    })
}

/// Public facts about one API key (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Key id (a ULID).
    pub id: String,
    /// Namespace the key belongs to.
    pub namespace: String,
    /// Optional label.
    pub name: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Revocation time, if revoked.
    pub revoked_at: Option<Timestamp>,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// What the key may do.
    #[serde(default)]
    pub kind: KeyKind,
    /// Publishable keys: the origins it is accepted from (empty: any).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Publishable keys: its own per-minute limits, as set (see [`KeyRateLimit::effective`]).
    #[serde(default)]
    pub rate_limit: KeyRateLimit,
}

/// Per-namespace limits; `None` fields take the server defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceLimits {
    /// Requests per minute per key.
    pub requests_per_minute: Option<u64>,
    /// Events per minute per key.
    pub events_per_minute: Option<u64>,
    /// Events per UTC day for the namespace (0 = unlimited).
    pub events_per_day: Option<u64>,
}

/// The largest limit a namespace may set: the largest integer every host
/// (and a JavaScript client) holds exactly.
pub const MAX_LIMIT: u64 = events_runtime::MAX_EXACT_INTEGER as u64;

impl NamespaceLimits {
    /// Refuses a limit above [`MAX_LIMIT`], naming the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        let fields = [
            ("requestsPerMinute", self.requests_per_minute),
            ("eventsPerMinute", self.events_per_minute),
            ("eventsPerDay", self.events_per_day),
        ];
        for (name, value) in fields {
            if value.is_some_and(|v| v > MAX_LIMIT) {
                return Err(ApiError::new(ErrorCode::InvalidRequest, format!("{name} must be at most {MAX_LIMIT}")));
            }
        }
        Ok(())
    }

    /// These limits with server defaults filled in.
    pub fn or_defaults(self, defaults: NamespaceLimits) -> NamespaceLimits {
        NamespaceLimits {
            requests_per_minute: self
                .requests_per_minute
                .or(defaults.requests_per_minute)
                .or(Some(DEFAULT_REQUESTS_PER_MINUTE)),
            events_per_minute: self
                .events_per_minute
                .or(defaults.events_per_minute)
                .or(Some(DEFAULT_EVENTS_PER_MINUTE)),
            events_per_day: self.events_per_day.or(defaults.events_per_day).or(Some(DEFAULT_EVENTS_PER_DAY)),
        }
    }
}

/// Requests to a [`Tenant`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TenantRequest {
    /// Creates a key; the answer carries the full key, once.
    CreateKey {
        /// Optional label.
        name: Option<String>,
    },
    /// Creates a publishable key (`pk_`); the answer carries the full key, once.
    CreatePublishableKey {
        /// Optional label.
        name: Option<String>,
        /// Origins it is accepted from (empty: any); normalized and checked.
        allowed_origins: Vec<String>,
        /// Its own per-minute limits.
        rate_limit: KeyRateLimit,
    },
    /// Lists every key.
    ListKeys,
    /// Revokes a key by id.
    RevokeKey {
        /// Key id.
        id: String,
    },
    /// Checks a presented secret (hex SHA-256 of the part after the namespace).
    Authenticate {
        /// Hex SHA-256 of the secret.
        secret_sha256: String,
        /// The kind the presented key's prefix names; a key of another kind does not match.
        #[serde(default)]
        kind: KeyKind,
    },
    /// Reads the namespace limits.
    GetLimits,
    /// Replaces the namespace limits.
    SetLimits(NamespaceLimits),
}

/// Answers of a [`Tenant`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TenantResponse {
    /// A new key and its one-time secret.
    KeyCreated {
        /// The key's public facts.
        info: KeyInfo,
        /// The full key, `ns_<namespace>_<secret>` or `pk_<namespace>_<secret>`.
        key: String,
    },
    /// Key listing.
    Keys(Vec<KeyInfo>),
    /// One key.
    Key(KeyInfo),
    /// Result of authentication: the key, if valid and not revoked.
    Authenticated(Option<KeyInfo>),
    /// Namespace limits.
    Limits(NamespaceLimits),
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "keys, batches",
        sql: "CREATE TABLE api_keys (
              id TEXT PRIMARY KEY,
              secret_sha256 TEXT NOT NULL UNIQUE,
              name TEXT,
              prefix TEXT NOT NULL,
              created_at INTEGER NOT NULL,
              revoked_at INTEGER
          );
          CREATE TABLE batches (
              batch_id TEXT PRIMARY KEY,
              shard INTEGER NOT NULL,
              reserved_at INTEGER NOT NULL
          ) WITHOUT ROWID;
          CREATE INDEX batches_reserved_at ON batches (reserved_at);",
    },
    // `batchId` batches now go to the shard their id names, and the writer
    // deduplicates them: the reservations are no longer needed.
    Migration { version: 2, name: "drop batch reservations", sql: "DROP TABLE batches;" },
    // Publishable keys: the kind, and for publishable keys their origins and
    // limits (JSON). Existing keys are secret keys.
    Migration {
        version: 3,
        name: "key kinds",
        sql: "ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'secret';
          ALTER TABLE api_keys ADD COLUMN allowed_origins TEXT;
          ALTER TABLE api_keys ADD COLUMN rate_limit TEXT;",
    },
];

/// The SHA-256 of a key secret, as stored.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits `ns_<namespace>_<secret>` into its namespace and secret.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    match parse_any_key(key)? {
        (KeyKind::Secret, ns, secret) => Some((ns, secret)),
        _ => None,
    }
}

/// Splits `ns_<namespace>_<secret>` or `pk_<namespace>_<secret>` into its
/// kind, namespace and secret.
pub fn parse_any_key(key: &str) -> Option<(KeyKind, &str, &str)> {
    let (kind, rest) = if let Some(rest) = key.strip_prefix("ns_") {
        (KeyKind::Secret, rest)
    } else {
        (KeyKind::Publishable, key.strip_prefix("pk_")?)
    };
    let (ns, secret) = rest.split_once('_')?;
    (!ns.is_empty() && secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((kind, ns, secret))
}

fn key_info(ns: &str, r: &Row) -> KeyInfo {
    KeyInfo {
        id: r.str(0).to_string(),
        namespace: ns.to_string(),
        name: r.opt_str(1).map(str::to_string),
        created_at: Timestamp(r.i64(2)),
        revoked_at: r.opt_i64(3).map(Timestamp),
        prefix: r.str(4).to_string(),
        kind: KeyKind::from_stored(r.str(5)),
        allowed_origins: r.opt_str(6).and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default(),
        rate_limit: r.opt_str(7).and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default(),
    }
}

const KEY_COLUMNS: &str = "id, name, created_at, revoked_at, prefix, kind, allowed_origins, rate_limit";

/// A new key's settings ([`Tenant::create_key`]).
struct NewKey {
    name: Option<String>,
    kind: KeyKind,
    allowed_origins: Vec<String>,
    rate_limit: KeyRateLimit,
}

impl DurableObject for Tenant {
    const CLASS: &'static str = "Tenant";
    /// Answers the request path's key checks and limit lookups on cache misses.
    const PLACEMENT: events_runtime::Placement = events_runtime::Placement::Latency;
    type Request = TenantRequest;
    type Response = TenantResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(_cx: &ObjectContext<H>) -> ObjectResult<Self> {
        Ok(Tenant)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: TenantRequest) -> ObjectResult<TenantResponse> {
        match req {
            TenantRequest::CreateKey { name } => Self::create_key(
                cx,
                NewKey {
                    name,
                    kind: KeyKind::Secret,
                    allowed_origins: Vec::new(),
                    rate_limit: KeyRateLimit::default(),
                },
            ),
            TenantRequest::CreatePublishableKey { name, allowed_origins, rate_limit } => {
                Self::create_key(cx, NewKey { name, kind: KeyKind::Publishable, allowed_origins, rate_limit })
            }
            TenantRequest::ListKeys => Self::list_keys(cx),
            TenantRequest::RevokeKey { id } => Self::revoke_key(cx, &id),
            TenantRequest::Authenticate { secret_sha256, kind } => Self::authenticate(cx, &secret_sha256, kind),
            TenantRequest::GetLimits => Ok(TenantResponse::Limits(cx.kv().get("limits")?.unwrap_or_default())),
            TenantRequest::SetLimits(limits) => Self::set_limits(cx, limits),
        }
    }
}

impl Tenant {
    /// Creates a key ([`TenantRequest::CreateKey`], [`TenantRequest::CreatePublishableKey`]);
    /// the answer holds its only copy of the secret.
    fn create_key<H: Host>(cx: &ObjectContext<H>, new: NewKey) -> ObjectResult<TenantResponse> {
        let db = cx.storage();
        let ns = cx.name();
        let NewKey { name, kind, allowed_origins, rate_limit } = new;
        if name.as_ref().is_some_and(|n| n.len() > MAX_KEY_NAME_LEN) {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "key names are at most 128 characters"));
        }
        if allowed_origins.len() > MAX_ALLOWED_ORIGINS {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a key has at most {MAX_ALLOWED_ORIGINS} allowed origins"),
            ));
        }
        let mut origins = Vec::with_capacity(allowed_origins.len());
        for origin in &allowed_origins {
            let origin = normalize_origin(origin)?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        rate_limit.validate()?;
        if kind == KeyKind::Secret && (!origins.is_empty() || rate_limit != KeyRateLimit::default()) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "allowedOrigins and rateLimit apply to publishable keys only",
            ));
        }
        let count = db.query_one("SELECT COUNT(*) FROM api_keys", &[])?.map_or(0, |r| r.i64(0));
        if count as usize >= MAX_KEYS_PER_NAMESPACE {
            return Err(ApiError::new(ErrorCode::Conflict, "this namespace has the maximum number of keys"));
        }
        let secret = format!("{:032x}{:032x}", cx.host().random(), cx.host().random());
        let key = format!("{}_{ns}_{secret}", kind.prefix());
        let id = cx.ulid();
        let prefix: String = key.chars().take(ns.len() + 8).collect();
        let now = cx.now();
        let publishable = kind == KeyKind::Publishable;
        let json = |v: String| if publishable { Some(v) } else { None };
        let origins_json = json(serde_json::to_string(&origins).unwrap_or_default());
        let limit_json = json(serde_json::to_string(&rate_limit).unwrap_or_default());
        db.execute(
            "INSERT INTO api_keys (id, secret_sha256, name, prefix, created_at, kind, allowed_origins, rate_limit)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                id.as_str().into(),
                secret_digest(&secret).into(),
                name.clone().into(),
                prefix.as_str().into(),
                now.as_millis().into(),
                kind.as_str().into(),
                origins_json.into(),
                limit_json.into(),
            ],
        )?;
        let info = KeyInfo {
            id,
            namespace: ns.to_string(),
            name,
            created_at: now,
            revoked_at: None,
            prefix,
            kind,
            allowed_origins: origins,
            rate_limit,
        };
        Ok(TenantResponse::KeyCreated { info, key })
    }

    /// Every key, oldest first ([`TenantRequest::ListKeys`]).
    fn list_keys<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<TenantResponse> {
        let ns = cx.name();
        let rows = cx.storage().query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"), &[])?;
        Ok(TenantResponse::Keys(rows.iter().map(|r| key_info(ns, r)).collect()))
    }

    /// Revokes a key ([`TenantRequest::RevokeKey`]); revoking it again keeps the first time.
    fn revoke_key<H: Host>(cx: &ObjectContext<H>, id: &str) -> ObjectResult<TenantResponse> {
        let db = cx.storage();
        let ns = cx.name();
        db.execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            &[id.into(), cx.now().as_millis().into()],
        )?;
        let row = db.query_one(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"), &[id.into()])?;
        row.map(|r| TenantResponse::Key(key_info(ns, &r)))
            .ok_or_else(|| ApiError::not_found(format!("no key {id} in namespace {ns}")))
    }

    /// The key whose secret has this digest, if it is not revoked and of
    /// this kind ([`TenantRequest::Authenticate`]).
    fn authenticate<H: Host>(
        cx: &ObjectContext<H>,
        secret_sha256: &str,
        kind: KeyKind,
    ) -> ObjectResult<TenantResponse> {
        let ns = cx.name();
        let row = cx.storage().query_one(
            &format!("SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys WHERE secret_sha256 = ?1"),
            &[secret_sha256.into()],
        )?;
        let valid = row.filter(|r| {
            // The index lookup already matched; compare again in constant time.
            let stored = r.str(8).as_bytes();
            bool::from(stored.ct_eq(secret_sha256.as_bytes()))
                && r.opt_i64(3).is_none()
                && KeyKind::from_stored(r.str(5)) == kind
        });
        Ok(TenantResponse::Authenticated(valid.map(|r| key_info(ns, &r))))
    }

    /// Replaces the namespace limits ([`TenantRequest::SetLimits`]).
    fn set_limits<H: Host>(cx: &ObjectContext<H>, limits: NamespaceLimits) -> ObjectResult<TenantResponse> {
        limits.validate()?;
        cx.kv().put("limits", &limits)?;
        Ok(TenantResponse::Limits(limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_above_the_exact_integer_range_are_refused() {
        let exact = NamespaceLimits { events_per_day: Some(MAX_LIMIT), ..Default::default() };
        assert!(exact.validate().is_ok());
        let over = NamespaceLimits { requests_per_minute: Some(MAX_LIMIT + 1), ..Default::default() };
        let e = over.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("requestsPerMinute"), "{e}");
        let huge = NamespaceLimits { events_per_minute: Some(u64::MAX), ..Default::default() };
        assert!(huge.validate().is_err());
    }

    #[test]
    fn key_format() {
        let secret = "ab".repeat(32);
        let key = format!("ns_acme-prod_{secret}");
        assert_eq!(parse_key(&key), Some(("acme-prod", secret.as_str())));
        assert_eq!(parse_key("ns_acme_short"), None);
        assert_eq!(parse_key("sk_acme_x"), None);
        assert_eq!(parse_key(&format!("ns__{secret}")), None);
        let pk = format!("pk_acme_{secret}");
        assert_eq!(parse_key(&pk), None, "a publishable key is not a secret key");
        assert_eq!(parse_any_key(&pk), Some((KeyKind::Publishable, "acme", secret.as_str())));
        assert_eq!(parse_any_key(&key), Some((KeyKind::Secret, "acme-prod", secret.as_str())));
        assert_eq!(parse_any_key(&format!("sk_acme_{secret}")), None);
    }

    #[test]
    fn origins_are_normalized_or_refused() {
        assert_eq!(normalize_origin("https://Shop.Example.com/").unwrap(), "https://shop.example.com");
        assert_eq!(normalize_origin("http://localhost:3000").unwrap(), "http://localhost:3000");
        assert_eq!(normalize_origin("https://*.example.com").unwrap(), "https://*.example.com");
        for bad in
            ["example.com", "ftp://example.com", "https://example.com/path", "https://a@b.com", "https://x:y", "*"]
        {
            assert_eq!(normalize_origin(bad).unwrap_err().code, ErrorCode::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let allowed = vec!["https://shop.example.com".to_string(), "https://*.example.org".to_string()];
        assert!(origin_allowed(&allowed, "https://shop.example.com"));
        assert!(origin_allowed(&allowed, "HTTPS://SHOP.EXAMPLE.COM"));
        assert!(!origin_allowed(&allowed, "http://shop.example.com"), "the scheme counts");
        assert!(!origin_allowed(&allowed, "https://shop.example.com:8443"), "the port counts");
        assert!(!origin_allowed(&allowed, "https://evil.com"));
        assert!(!origin_allowed(&allowed, "https://shop.example.com.evil.com"));
        assert!(origin_allowed(&allowed, "https://www.example.org"));
        assert!(origin_allowed(&allowed, "https://a.b.example.org"));
        assert!(!origin_allowed(&allowed, "https://example.org"), "a wildcard is for subdomains only");
        assert!(!origin_allowed(&allowed, "https://badexample.org"));
        assert!(!origin_allowed(&allowed, "null"));
    }

    #[test]
    fn publishable_key_limits_default_and_are_bounded() {
        let unset = KeyRateLimit::default().effective();
        assert_eq!(unset.requests_per_minute, Some(DEFAULT_PUBLISHABLE_REQUESTS_PER_MINUTE));
        assert_eq!(unset.events_per_minute, Some(DEFAULT_PUBLISHABLE_EVENTS_PER_MINUTE));
        assert!(KeyRateLimit { requests_per_minute: Some(0), events_per_minute: None }.validate().is_err());
        assert!(KeyRateLimit { requests_per_minute: None, events_per_minute: Some(MAX_LIMIT + 1) }.validate().is_err());
        assert!(KeyRateLimit { requests_per_minute: Some(5), events_per_minute: Some(50) }.validate().is_ok());
    }
}
