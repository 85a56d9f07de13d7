//! [`WebhookSecrets`]: one per namespace. Signing secrets of inbound webhook providers.
//!
//! Several secrets may be active at once per provider, so a secret can be
//! rotated without dropping deliveries: add the new one, switch the
//! provider over, remove the old one.

use events_core::{ApiError, ErrorCode};
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult};
use serde::{Deserialize, Serialize};

/// Most secrets active at once for one provider.
pub const MAX_SECRETS_PER_PROVIDER: usize = 5;
/// Longest secret, in bytes.
pub const MAX_SECRET_LEN: usize = 512;
/// Shortest secret, in bytes.
pub const MIN_SECRET_LEN: usize = 8;
/// Longest custom signature header name.
pub const MAX_HEADER_NAME_LEN: usize = 64;

/// How one provider is verified in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    /// Active secrets (any of them verifies a delivery).
    pub secrets: Vec<String>,
    /// Signature header (generic provider only).
    pub header: Option<String>,
    /// Signature encoding, `hex` or `base64` (generic provider only).
    pub encoding: Option<String>,
}

impl WebhookConfig {
    /// Checks the limits of a configuration.
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::new(ErrorCode::InvalidConfig, m));
        if self.secrets.is_empty() || self.secrets.len() > MAX_SECRETS_PER_PROVIDER {
            return bad(format!("give 1 to {MAX_SECRETS_PER_PROVIDER} secrets"));
        }
        if self.secrets.iter().any(|s| s.len() < MIN_SECRET_LEN || s.len() > MAX_SECRET_LEN) {
            return bad(format!("secrets are {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes"));
        }
        if let Some(h) = &self.header
            && (h.is_empty()
                || h.len() > MAX_HEADER_NAME_LEN
                || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return bad("header must be a header name (letters, digits, '-', '_')".into());
        }
        if let Some(e) = &self.encoding
            && e != "hex"
            && e != "base64"
        {
            return bad("encoding is hex or base64".into());
        }
        Ok(())
    }
}

/// Requests to [`WebhookSecrets`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WebhookSecretsRequest {
    /// The configuration of a provider, if any.
    Get {
        /// Provider name.
        provider: String,
    },
    /// Replaces the configuration of a provider.
    Put {
        /// Provider name.
        provider: String,
        /// The new configuration.
        config: WebhookConfig,
    },
}

/// Answers of [`WebhookSecrets`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WebhookSecretsResponse {
    /// A provider's configuration (`None`: not configured).
    Config(Option<WebhookConfig>),
}

/// The namespace's webhook secrets object.
pub struct WebhookSecrets;

impl WebhookSecrets {
    /// Replaces a provider's secrets ([`WebhookSecretsRequest::Put`]).
    fn put<H: Host>(
        cx: &ObjectContext<H>,
        provider: &str,
        config: WebhookConfig,
    ) -> ObjectResult<WebhookSecretsResponse> {
        config.validate()?;
        cx.kv().put(&format!("provider:{provider}"), &config)?;
        Ok(WebhookSecretsResponse::Config(Some(config)))
    }
}

impl DurableObject for WebhookSecrets {
    const CLASS: &'static str = "WebhookSecrets";
    type Request = WebhookSecretsRequest;
    type Response = WebhookSecretsResponse;

    fn migrations() -> &'static [Migration] {
        &[]
    }

    async fn load<H: Host>(_cx: &ObjectContext<H>) -> ObjectResult<Self> {
        Ok(WebhookSecrets)
    }

    async fn handle<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        req: WebhookSecretsRequest,
    ) -> ObjectResult<WebhookSecretsResponse> {
        match req {
            WebhookSecretsRequest::Get { provider } => {
                Ok(WebhookSecretsResponse::Config(cx.kv().get(&format!("provider:{provider}"))?))
            }
            WebhookSecretsRequest::Put { provider, config } => Self::put(cx, &provider, config),
        }
    }
}
