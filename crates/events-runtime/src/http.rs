//! Outbound HTTP, as objects see it.

use std::future::Future;

use crate::ObjectResult;

/// An outbound request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute `http(s)://` URL.
    pub url: String,
    /// Header name/value pairs.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Give up after this many milliseconds.
    pub timeout_ms: u64,
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header name/value pairs (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The start of the body, capped by the client.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends outbound requests. Hosts enforce outbound safety here: no redirects
/// followed, response bodies capped, private addresses refused unless allowed.
pub trait HttpClient {
    /// Sends `req`. A transport failure (refused, timed out, blocked) is an error;
    /// any HTTP status is a response.
    fn send(&self, req: HttpRequest) -> impl Future<Output = ObjectResult<HttpResponse>>;
}
