//! [`ReqwestHttp`]: outbound HTTP with the outbound safety policy.
//!
//! - Redirects are never followed.
//! - Response bodies are read up to [`OutboundPolicy::max_response_bytes`].
//! - Targets that are, or resolve to, loopback, private, link-local,
//!   shared (CGNAT), unspecified, multicast or cloud-metadata addresses are
//!   refused unless an allowlist entry covers them. The check runs in the DNS
//!   resolver, so a name that resolves to a private address is refused too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use events_core::{ApiError, ErrorCode};
use events_runtime::{HttpClient, HttpRequest, HttpResponse, ObjectResult};
use futures::StreamExt;

/// Default cap on the response bytes read.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What outbound requests may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// CIDR blocks (`127.0.0.0/8`, `::1/128`) allowed even though private.
    pub allow: Vec<String>,
    /// Response bytes read at most.
    pub max_response_bytes: usize,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        OutboundPolicy { allow: Vec::new(), max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES }
    }
}

use events_core::outbound::{AddressPolicy, Cidr};

/// Where the native server's operators allow private blocks, named in refusals.
const ALLOW_SETTING: &str = "outbound.allow";

struct GuardedResolver(Arc<AddressPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| guard.permits(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to blocked (private) addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The outbound HTTP client.
#[derive(Clone)]
pub struct ReqwestHttp {
    client: reqwest::Client,
    guard: Arc<AddressPolicy>,
    max_response_bytes: usize,
}

impl ReqwestHttp {
    /// A client enforcing `policy`.
    pub fn new(policy: OutboundPolicy) -> ObjectResult<Self> {
        let allow = policy
            .allow
            .iter()
            .map(|s| Cidr::parse(s).ok_or_else(|| ApiError::new(ErrorCode::InvalidConfig, format!("bad CIDR {s:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let guard = Arc::new(AddressPolicy::new(allow, ALLOW_SETTING));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .user_agent(concat!("events.do/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ApiError::internal(format!("http client: {e}")))?;
        Ok(ReqwestHttp { client, guard, max_response_bytes: policy.max_response_bytes })
    }

    /// Checks a URL before sending: scheme and literal IP addresses
    /// ([`AddressPolicy::check_url`]).
    pub fn check_url(&self, url: &str) -> ObjectResult<reqwest::Url> {
        self.guard.check_url(url)
    }
}

impl HttpClient for ReqwestHttp {
    async fn send(&self, req: HttpRequest) -> ObjectResult<HttpResponse> {
        let url = self.check_url(&req.url)?;
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, format!("bad method {}", req.method)))?;
        let mut builder =
            self.client.request(method, url).timeout(Duration::from_millis(req.timeout_ms)).body(req.body);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let response = builder.send().await.map_err(|e| {
            let code = if e.is_timeout() { ErrorCode::Timeout } else { ErrorCode::ServiceUnavailable };
            ApiError::new(code, format!("request failed: {e}"))
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            let room = self.max_response_bytes - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= self.max_response_bytes {
                break;
            }
        }
        Ok(HttpResponse { status, headers, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_and_literals() {
        let http = ReqwestHttp::new(OutboundPolicy::default()).unwrap();
        assert_eq!(http.check_url("http://127.0.0.1:9/x").unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(http.check_url("http://[::1]/").unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(http.check_url("ftp://example.com/").unwrap_err().code, ErrorCode::Forbidden);
        assert!(http.check_url("https://example.com/hook").is_ok());
        let open =
            ReqwestHttp::new(OutboundPolicy { allow: vec!["127.0.0.0/8".into()], ..Default::default() }).unwrap();
        assert!(open.check_url("http://127.0.0.1:9/x").is_ok());
        assert_eq!(open.check_url("http://10.0.0.1/").unwrap_err().code, ErrorCode::Forbidden);
    }
}
