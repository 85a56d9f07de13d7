//! How a request authenticates ([`Auth`]), a reply read whole ([`Reply`]) and a created API key.

use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <key>` (a namespace key).
    Key(String),
    /// The admin token acting on a namespace (`X-Namespace`).
    Admin {
        /// The admin token.
        token: String,
        /// The namespace sent as `X-Namespace`.
        ns: String,
    },
    /// This exact `Authorization` header value.
    Header(String),
}

impl Auth {
    /// Adds the headers of this authentication to `rb`.
    pub fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        match self {
            Auth::None => rb,
            Auth::Key(key) => rb.bearer_auth(key),
            Auth::Admin { token, ns } => rb.bearer_auth(token).header("X-Namespace", ns),
            Auth::Header(value) => rb.header("Authorization", value),
        }
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
}

impl Reply {
    /// Reads a whole response.
    pub async fn read(res: reqwest::Response) -> Reply {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("reading the response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, body }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("header is not ASCII"))
    }

    /// The `code` of an error body, or "".
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Asserts an error of the Iceberg REST catalog: `status` and the spec's
    /// `ErrorModel`, `{"error": {"message", "type", "code"}}` with `type` and
    /// `code` the status; returns the message.
    #[track_caller]
    pub fn expect_iceberg_error(&self, status: u16, error_type: &str) -> &str {
        let e = &self.body["error"];
        assert_eq!(
            (self.status, e["type"].as_str(), e["code"].as_u64()),
            (status, Some(error_type), Some(u64::from(status))),
            "expected HTTP {status} {error_type}, got {}: {}",
            self.status,
            self.text
        );
        assert_eq!(self.header("content-type"), Some("application/json"), "{}", self.text);
        let message = e["message"].as_str().unwrap_or_else(|| panic!("`message` is not a string: {}", self.text));
        assert!(!message.is_empty(), "empty message: {}", self.text);
        message
    }

    /// Asserts the status, and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "expected HTTP {status}, got {}: {}", self.status, self.text);
        &self.body
    }

    /// Asserts an error reply: this status, and the envelope
    /// `{"error": <text>, "code": <code>, "details": {...}}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "expected HTTP {status} {code}, got {}: {}",
            self.status,
            self.text
        );
        let error = self.body["error"].as_str().unwrap_or_else(|| panic!("`error` is not a string: {}", self.text));
        assert!(!error.is_empty(), "empty `error` message: {}", self.text);
        assert!(self.body["details"].is_object(), "`details` is not an object: {}", self.text);
        &self.body["details"]
    }
}

/// A created API key (`POST /admin/namespaces/{ns}/keys`).
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Key id, for listing and revoking.
    pub id: String,
    /// The secret key, `ns_<namespace>_<64 hex>`.
    pub key: String,
    /// The key's namespace.
    pub namespace: String,
    /// The whole creation reply.
    pub body: Value,
}

impl ApiKey {
    /// Authentication with this key.
    pub fn auth(&self) -> Auth {
        Auth::Key(self.key.clone())
    }
}
