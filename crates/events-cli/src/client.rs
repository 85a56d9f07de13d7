//! A small HTTP client for the client commands: base URL, bearer token, and
//! the API's error envelope turned into readable errors.

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use crate::cli::GlobalArgs;

/// The client commands' connection to a server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for `--url` / `--token`.
    pub fn new(global: &GlobalArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder().build().context("cannot build the HTTP client")?;
        Ok(Client { http, base: global.url.trim_end_matches('/').to_string(), token: global.token.clone() })
    }

    /// A request to `path` (starting with `/`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends and decodes a JSON answer; an error envelope becomes an error.
    pub async fn json(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        decode(response).await
    }
}

/// Decodes a response: JSON body on success, `CODE: message` on failure.
pub async fn decode(response: Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let code = body["code"].as_str().unwrap_or("HTTP_ERROR");
    let message = body["error"].as_str().unwrap_or("request failed");
    bail!("{status}: {code}: {message}")
}
