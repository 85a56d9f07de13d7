//! A small HTTP client for the client commands: base URL, bearer token, the
//! namespace header, and the API's error envelope turned into readable errors.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use crate::cli::ClientArgs;
use crate::output::Doc;

/// Longest time one API call may take unless a command says otherwise.
const REQUEST_TIMEOUT_SECS: u64 = 60;

/// The client commands' connection to a server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    namespace: Option<String>,
}

impl Client {
    /// A client for `--url` / `--token`.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        Client::with_timeout(args, Duration::from_secs(REQUEST_TIMEOUT_SECS))
    }

    /// A client whose calls may take up to `timeout`.
    pub fn with_timeout(args: &ClientArgs, timeout: Duration) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder().timeout(timeout).build().context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base: args.url.trim_end_matches('/').to_string(),
            token: args.token.clone(),
            namespace: None,
        })
    }

    /// Sends `X-Namespace: ns` (an admin token acting on a namespace).
    pub fn namespace(mut self, ns: Option<String>) -> Client {
        self.namespace = ns;
        self
    }

    /// A request to `path` (starting with `/`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(ns) = &self.namespace {
            r = r.header("X-Namespace", ns);
        }
        r
    }

    /// Sends and decodes the answer; an error envelope becomes an error.
    pub async fn doc(&self, request: RequestBuilder) -> anyhow::Result<Doc> {
        let response = self.send(request).await?;
        let status = response.status();
        let text = response.text().await.context("the answer was cut short")?;
        if !status.is_success() {
            return Err(error(status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Doc::Null);
        }
        Doc::parse(&text).with_context(|| format!("the server's answer is not JSON: {text}"))
    }

    /// `method path` with an optional JSON body, decoded.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Doc> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.doc(request).await
    }

    /// Sends; answers the response whatever its status.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.with_context(|| format!("cannot reach {}", self.base))
    }
}

/// `STATUS: CODE: message` from an error answer.
pub fn error(status: reqwest::StatusCode, text: &str) -> anyhow::Error {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = body["code"].as_str().unwrap_or("HTTP_ERROR");
    let message = match body["error"].as_str() {
        Some(m) => m.to_string(),
        None if text.trim().is_empty() => "request failed".to_string(),
        None => text.trim().to_string(),
    };
    anyhow::anyhow!("{status}: {code}: {message}")
}

/// Percent-encodes a path segment or a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
