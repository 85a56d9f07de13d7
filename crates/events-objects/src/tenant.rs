//! [`Tenant`]: one per namespace. API keys and namespace limits.
//!
//! API keys have the form `ns_<namespace>_<secret>`, where the secret is 64
//! hex digits (256 random bits). Only the SHA-256 of the secret is stored;
//! the full key is shown once, when it is created.

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

/// The namespace object.
pub struct Tenant;

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
        /// The full key, `ns_<namespace>_<secret>`.
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
];

/// The SHA-256 of a key secret, as stored.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits `ns_<namespace>_<secret>` into its namespace and secret.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("ns_")?;
    let (ns, secret) = rest.split_once('_')?;
    (!ns.is_empty() && secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit())).then_some((ns, secret))
}

fn key_info(ns: &str, r: &Row) -> KeyInfo {
    KeyInfo {
        id: r.str(0).to_string(),
        namespace: ns.to_string(),
        name: r.opt_str(1).map(str::to_string),
        created_at: Timestamp(r.i64(2)),
        revoked_at: r.opt_i64(3).map(Timestamp),
        prefix: r.str(4).to_string(),
    }
}

const KEY_COLUMNS: &str = "id, name, created_at, revoked_at, prefix";

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
            TenantRequest::CreateKey { name } => Self::create_key(cx, name),
            TenantRequest::ListKeys => Self::list_keys(cx),
            TenantRequest::RevokeKey { id } => Self::revoke_key(cx, &id),
            TenantRequest::Authenticate { secret_sha256 } => Self::authenticate(cx, &secret_sha256),
            TenantRequest::GetLimits => Ok(TenantResponse::Limits(cx.kv().get("limits")?.unwrap_or_default())),
            TenantRequest::SetLimits(limits) => Self::set_limits(cx, limits),
        }
    }
}

impl Tenant {
    /// Creates a key ([`TenantRequest::CreateKey`]); the answer holds its only copy of the secret.
    fn create_key<H: Host>(cx: &ObjectContext<H>, name: Option<String>) -> ObjectResult<TenantResponse> {
        let db = cx.storage();
        let ns = cx.name();
        if name.as_ref().is_some_and(|n| n.len() > MAX_KEY_NAME_LEN) {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "key names are at most 128 characters"));
        }
        let count = db.query_one("SELECT COUNT(*) FROM api_keys", &[])?.map_or(0, |r| r.i64(0));
        if count as usize >= MAX_KEYS_PER_NAMESPACE {
            return Err(ApiError::new(ErrorCode::Conflict, "this namespace has the maximum number of keys"));
        }
        let secret = format!("{:032x}{:032x}", cx.host().random(), cx.host().random());
        let key = format!("ns_{ns}_{secret}");
        let id = cx.ulid();
        let prefix: String = key.chars().take(ns.len() + 8).collect();
        let now = cx.now();
        db.execute(
            "INSERT INTO api_keys (id, secret_sha256, name, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[
                id.as_str().into(),
                secret_digest(&secret).into(),
                name.clone().into(),
                prefix.as_str().into(),
                now.as_millis().into(),
            ],
        )?;
        let info = KeyInfo { id, namespace: ns.to_string(), name, created_at: now, revoked_at: None, prefix };
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

    /// The key whose secret has this digest, if it is not revoked ([`TenantRequest::Authenticate`]).
    fn authenticate<H: Host>(cx: &ObjectContext<H>, secret_sha256: &str) -> ObjectResult<TenantResponse> {
        let ns = cx.name();
        let row = cx.storage().query_one(
            &format!("SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys WHERE secret_sha256 = ?1"),
            &[secret_sha256.into()],
        )?;
        let valid = row.filter(|r| {
            // The index lookup already matched; compare again in constant time.
            let stored = r.str(5).as_bytes();
            bool::from(stored.ct_eq(secret_sha256.as_bytes())) && r.opt_i64(3).is_none()
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
    }
}
