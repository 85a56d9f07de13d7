//! Authentication rules shared by both hosts: who a request's credentials
//! name, and the namespace it may act on.
//!
//! - `Authorization: Bearer <admin token>` is the operator. It may act on
//!   any namespace, named by the `X-Namespace` header (default `default`).
//! - `Authorization: Bearer ns_<namespace>_<secret>` is a tenant: it acts on
//!   its own namespace only, whatever `X-Namespace` says. The key is checked
//!   (as SHA-256) against its namespace's `Tenant` object by [`verify_key`].
//! - `Authorization: Bearer pk_<namespace>_<secret>` is a publishable key:
//!   write-only, for browsers. It is accepted by `POST /e` alone
//!   ([`Access::Ingest`]), where it may also come as the `key` query
//!   parameter (`navigator.sendBeacon` cannot set headers); every other
//!   route refuses it with `403 FORBIDDEN` before looking it up. A key with
//!   allowed origins is refused (`403 ORIGIN_NOT_ALLOWED`) unless the
//!   request's `Origin` header is one of them; a request without `Origin`
//!   is refused too. It has its own per-minute rate limits.
//! - No credentials: refused, unless the host runs in dev mode, where the
//!   caller acts on `X-Namespace` (default `default`).
//!
//! The admin token is compared in constant time. A host reads its headers
//! into [`credentials`] (or [`credentials_for`] on `POST /e`), verifies a
//! key with [`verify_key`] (the native server keeps verified keys in a
//! short cache in between), and lets the [`KeyGrant`] admit the request.

use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode};
use events_objects::Tenant;
use events_objects::tenant::{KeyKind, KeyRateLimit, TenantRequest, TenantResponse, parse_any_key, secret_digest};
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
    /// A publishable (write-only) key; only `POST /e` admits it.
    Publishable {
        /// Key id.
        id: String,
        /// Its own per-minute limits, defaults filled in.
        rate_limit: KeyRateLimit,
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

    /// The per-minute limits of this caller's key that replace the
    /// namespace's (publishable keys).
    pub fn key_rate_limit(&self) -> Option<KeyRateLimit> {
        match &self.principal {
            Principal::Publishable { rate_limit, .. } => Some(*rate_limit),
            _ => None,
        }
    }

    /// The rate-limiter subject of this caller (`ip` identifies dev callers).
    pub fn limiter_subject(&self, ip: Option<&str>) -> String {
        match &self.principal {
            Principal::Admin => "admin".to_string(),
            Principal::Key { id } | Principal::Publishable { id, .. } => format!("key:{id}"),
            Principal::Dev => format!("ip:{}", ip.unwrap_or("unknown")),
        }
    }
}

/// What a request's headers claim, before a namespace key is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The admin token or a dev-mode caller: nothing left to verify.
    Resolved(Caller),
    /// A namespace key (secret or publishable), to verify with [`verify_key`].
    NamespaceKey {
        /// The namespace the key names (valid).
        namespace: String,
        /// SHA-256 of the key's secret (hex), as the `Tenant` object stores it.
        secret_sha256: String,
        /// The kind its prefix names.
        kind: KeyKind,
    },
}

/// What a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every credential but publishable keys (every route but `POST /e`).
    Full,
    /// `POST /e`: publishable keys too, in the header or the `key` query parameter.
    Ingest,
}

/// The query parameter that may carry a publishable key on `POST /e`.
pub const KEY_QUERY_PARAM: &str = "key";

/// The namespace named by `X-Namespace`, if sent (`INVALID_NAMESPACE` when
/// it is not text or not a valid name).
pub fn requested_namespace(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(NAMESPACE_HEADER) else { return Ok(None) };
    let ns = value.to_str().map_err(|_| ApiError::new(ErrorCode::InvalidNamespace, "X-Namespace is not text"))?;
    validate_namespace(ns)?;
    Ok(Some(ns.to_string()))
}

/// Reads the credentials of a request to any route but `POST /e`:
/// `AUTH_REQUIRED` without an `Authorization` header (unless `dev`),
/// `INVALID_AUTH_FORMAT` when it is not `Bearer <token>`, `INVALID_API_KEY`
/// for a token that is neither the `admin_token` (`None`: there is none) nor
/// shaped like a namespace key, `FORBIDDEN` for a publishable key.
pub fn credentials(headers: &HeaderMap, admin_token: Option<&str>, dev: bool) -> Result<Credentials, ApiError> {
    credentials_for(headers, None, admin_token, dev, Access::Full)
}

/// The publishable key of the `key` query parameter, if there is one;
/// `INVALID_QUERY` when it is repeated.
pub fn key_param(query: &str) -> Result<Option<String>, ApiError> {
    let mut found = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == KEY_QUERY_PARAM {
            if found.is_some() {
                return Err(ApiError::new(ErrorCode::InvalidQuery, "the key query parameter is repeated"));
            }
            found = Some(value.into_owned());
        }
    }
    Ok(found)
}

/// [`credentials`] for a route that admits `access`. With [`Access::Ingest`],
/// `query` (the URL's query string) may carry a publishable key as
/// `key=pk_...`: only a publishable key (anything else there is refused with
/// `INVALID_AUTH_FORMAT`, unchecked, so that no secret works from a URL), and
/// only without an `Authorization` header.
pub fn credentials_for(
    headers: &HeaderMap,
    query: Option<&str>,
    admin_token: Option<&str>,
    dev: bool,
    access: Access,
) -> Result<Credentials, ApiError> {
    let requested_ns = requested_namespace(headers)?;
    let from_query = match (access, query) {
        (Access::Ingest, Some(q)) => key_param(q)?,
        _ => None,
    };
    if let Some(key) = from_query {
        if headers.contains_key(http::header::AUTHORIZATION) {
            return Err(ApiError::new(
                ErrorCode::InvalidAuthFormat,
                "send the key either as Authorization: Bearer or as the key query parameter, not both",
            ));
        }
        return match parse_any_key(&key) {
            Some((KeyKind::Publishable, ns, secret)) => {
                validate_namespace(ns).map_err(|_| invalid_key())?;
                Ok(Credentials::NamespaceKey {
                    namespace: ns.to_string(),
                    secret_sha256: secret_digest(secret),
                    kind: KeyKind::Publishable,
                })
            }
            _ => Err(ApiError::new(
                ErrorCode::InvalidAuthFormat,
                "the key query parameter takes publishable keys (pk_...) only; send other keys as Authorization: Bearer",
            )),
        };
    }
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
    let (kind, ns, secret) = parse_any_key(token).ok_or_else(invalid_key)?;
    if kind == KeyKind::Publishable && access != Access::Ingest {
        return Err(publishable_forbidden());
    }
    validate_namespace(ns).map_err(|_| invalid_key())?;
    Ok(Credentials::NamespaceKey { namespace: ns.to_string(), secret_sha256: secret_digest(secret), kind })
}

fn invalid_key() -> ApiError {
    ApiError::new(ErrorCode::InvalidApiKey, "invalid API key")
}

/// Whether the request's `Authorization` header carries a publishable key:
/// a host whose handlers may read a request before authenticating it (the
/// Worker's) refuses such requests with [`publishable_forbidden`] before
/// routing them anywhere but `POST /e`.
pub fn bearer_is_publishable(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .and_then(|t| parse_any_key(t.trim()))
        .is_some_and(|(kind, _, _)| kind == KeyKind::Publishable)
}

/// The refusal of a publishable key on any route but `POST /e`.
pub fn publishable_forbidden() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "publishable keys (pk_...) may only send events (POST /e); use a secret key (ns_...) or the admin token",
    )
}

/// A verified key: what it may do, before the request is admitted
/// ([`KeyGrant::admit`]). Hosts may cache it by the secret's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// Key id.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its kind.
    pub kind: KeyKind,
    /// Publishable keys: the origins it is accepted from (empty: any).
    pub allowed_origins: Vec<String>,
    /// Publishable keys: its per-minute limits, defaults filled in.
    pub rate_limit: KeyRateLimit,
}

impl KeyGrant {
    /// The caller of a request with this key, or `ORIGIN_NOT_ALLOWED` for a
    /// publishable key with allowed origins and a request whose `Origin`
    /// header is missing or not one of them.
    pub fn admit(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let principal = match self.kind {
            KeyKind::Secret => Principal::Key { id: self.id.clone() },
            KeyKind::Publishable => {
                if !self.allowed_origins.is_empty() {
                    let origin = headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok());
                    if !origin.is_some_and(|o| events_objects::tenant::origin_allowed(&self.allowed_origins, o)) {
                        let message = match origin {
                            Some(o) => format!("this publishable key is not allowed from origin {o}"),
                            None => "this publishable key is allowed from listed origins only, and the request has no Origin header".to_string(),
                        };
                        return Err(ApiError::new(ErrorCode::OriginNotAllowed, message)
                            .with_details(serde_json::json!({"origin": origin})));
                    }
                }
                Principal::Publishable { id: self.id.clone(), rate_limit: self.rate_limit }
            }
        };
        Ok(Caller { principal, namespace: self.namespace.clone() })
    }
}

/// Verifies a key against its namespace's `Tenant` object: its grant, or
/// `INVALID_API_KEY` (unknown, revoked, or of another kind than `kind`).
pub async fn verify_key<H: Host>(
    host: &H,
    namespace: String,
    secret_sha256: String,
    kind: KeyKind,
) -> Result<KeyGrant, ApiError> {
    match host.call::<Tenant>(&namespace, TenantRequest::Authenticate { secret_sha256, kind }).await? {
        // The object matched the kind; check again, since a grant of the
        // wrong kind would give a publishable key every route.
        TenantResponse::Authenticated(Some(info)) if info.kind == kind => Ok(KeyGrant {
            id: info.id,
            namespace,
            kind,
            allowed_origins: info.allowed_origins,
            rate_limit: info.rate_limit.effective(),
        }),
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
            Credentials::NamespaceKey { namespace, secret_sha256, kind } => {
                assert_eq!(namespace, "acme");
                assert_eq!(secret_sha256, secret_digest(&secret));
                assert_eq!(kind, KeyKind::Secret);
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

    fn ingest(h: &HeaderMap, query: Option<&str>) -> Result<Credentials, ApiError> {
        credentials_for(h, query, Some(ADMIN), false, Access::Ingest)
    }

    #[test]
    fn a_publishable_key_is_forbidden_everywhere_but_ingest() {
        let pk = format!("pk_acme_{}", "cd".repeat(32));
        let h = headers(&[("authorization", &format!("Bearer {pk}"))]);
        assert!(bearer_is_publishable(&h));
        assert!(!bearer_is_publishable(&headers(&[("authorization", &format!("Bearer ns_acme_{}", "cd".repeat(32)))])));
        assert!(!bearer_is_publishable(&HeaderMap::new()));
        let e = credentials(&h, Some(ADMIN), false).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("POST /e"), "{e}");
        // Even in dev mode, where no credentials would be let through.
        assert_eq!(code(credentials(&h, Some(ADMIN), true)), ErrorCode::Forbidden);
        match ingest(&h, None).unwrap() {
            Credentials::NamespaceKey { namespace, kind, .. } => {
                assert_eq!((namespace.as_str(), kind), ("acme", KeyKind::Publishable));
            }
            other => panic!("expected a publishable key, got {other:?}"),
        }
    }

    #[test]
    fn the_key_query_parameter_takes_publishable_keys_only() {
        let pk = format!("pk_acme_{}", "cd".repeat(32));
        let none = HeaderMap::new();
        let q = format!("key={pk}");
        assert!(matches!(ingest(&none, Some(&q)), Ok(Credentials::NamespaceKey { kind: KeyKind::Publishable, .. })));
        // Other routes never read the query string for keys.
        assert_eq!(code(credentials_for(&none, Some(&q), Some(ADMIN), false, Access::Full)), ErrorCode::AuthRequired);
        let sk = format!("key=ns_acme_{}", "cd".repeat(32));
        let admin = format!("key={ADMIN}");
        for q in [sk.as_str(), admin.as_str(), "key=nonsense", "key="] {
            assert_eq!(code(ingest(&none, Some(q))), ErrorCode::InvalidAuthFormat, "{q}");
        }
        let both = headers(&[("authorization", &format!("Bearer {pk}"))]);
        assert_eq!(code(ingest(&both, Some(&q))), ErrorCode::InvalidAuthFormat);
        assert_eq!(code(ingest(&none, Some(&format!("{q}&{q}")))), ErrorCode::InvalidQuery);
        // Without the parameter, the header rules apply.
        assert_eq!(code(ingest(&none, Some("other=1"))), ErrorCode::AuthRequired);
    }

    fn grant(origins: &[&str]) -> KeyGrant {
        KeyGrant {
            id: "k1".into(),
            namespace: "acme".into(),
            kind: KeyKind::Publishable,
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            rate_limit: KeyRateLimit::default().effective(),
        }
    }

    #[test]
    fn a_publishable_key_with_origins_admits_those_origins_only() {
        let any = grant(&[]);
        assert!(any.admit(&HeaderMap::new()).is_ok(), "no list: any origin, or none");
        let listed = grant(&["https://shop.example.com"]);
        let from = |o: &str| headers(&[("origin", o)]);
        let caller = listed.admit(&from("https://shop.example.com")).unwrap();
        assert_eq!(caller.limiter_subject(None), "key:k1");
        assert_eq!(caller.key_rate_limit(), Some(KeyRateLimit::default().effective()));
        assert!(caller.require_admin().is_err());
        let e = listed.admit(&from("https://evil.example")).unwrap_err();
        assert_eq!((e.code, e.http_status()), (ErrorCode::OriginNotAllowed, 403));
        assert_eq!(e.details["origin"], "https://evil.example");
        assert_eq!(listed.admit(&HeaderMap::new()).unwrap_err().code, ErrorCode::OriginNotAllowed);
        // A secret key has no origin rule.
        let secret = KeyGrant { kind: KeyKind::Secret, ..listed };
        assert_eq!(secret.admit(&from("https://evil.example")).unwrap().principal, Principal::Key { id: "k1".into() });
    }
}
