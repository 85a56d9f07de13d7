//! Inbound webhooks (`POST /webhooks/{provider}?ns=`, `POST /webhooks?provider=&ns=`)
//! and their secrets (`/admin/namespaces/{ns}/webhooks/{provider}`). The raw
//! body is verified by the shared `events_api::webhooks::verify` before
//! anything parses it; a namespace without a secret accepts nothing.

use events_api::webhooks::{Provider, WEBHOOK_MAX_BODY_BYTES, accepted, delivery_event, verify};
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode};
use events_objects::WebhookSecrets;
use events_objects::webhook_secrets::{WebhookConfig, WebhookSecretsRequest, WebhookSecretsResponse};
use events_runtime::Host;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{DEFAULT_NAMESPACE, authenticate};
use super::{ApiResult, Call, json, parse_json, query_param};

/// Largest secrets configuration body.
const MAX_CONFIG_BODY_BYTES: usize = 16 * 1024;

/// `POST /webhooks/{provider}` (`provider` from the path) or `POST /webhooks` (from the query).
pub async fn receive(call: &mut Call, provider: Option<&str>) -> ApiResult {
    let provider = match provider {
        Some(p) => p.to_string(),
        None => query_param(&call.query, "provider")
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "give ?provider="))?,
    };
    let provider = Provider::parse(&provider)?;
    let ns = query_param(&call.query, "ns").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    validate_namespace(&ns)?;
    let bytes = call.body(WEBHOOK_MAX_BODY_BYTES).await?;
    let answer = call
        .host
        .call::<WebhookSecrets>(&ns, WebhookSecretsRequest::Get { provider: provider.name().to_string() })
        .await?;
    let WebhookSecretsResponse::Config(Some(config)) = answer else {
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!("no {} webhook secret is configured for this namespace", provider.name()),
        ));
    };
    let now = call.host.now();
    let delivery = verify(provider, &config, &call.headers, &bytes, now.0.div_euclid(1000))?;
    let challenge = delivery.challenge.clone();
    let (event, batch_id) = delivery_event(provider, &ns, delivery, now);
    let appended = super::ingest::store(call, &ns, vec![event.clone()], Vec::new(), Some(batch_id)).await?;
    json(200, &accepted(provider, &event, appended.deduplicated || appended.stored == 0, challenge))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    secrets: Vec<String>,
    header: Option<String>,
    encoding: Option<String>,
}

fn mask(secret: &str) -> String {
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("****{tail}")
}

fn view(provider: Provider, config: Option<WebhookConfig>) -> Value {
    let configured = config.is_some();
    let c = config.unwrap_or(WebhookConfig { secrets: Vec::new(), header: None, encoding: None });
    json!({
        "provider": provider.name(), "configured": configured,
        "secrets": c.secrets.iter().map(|s| mask(s)).collect::<Vec<_>>(),
        "header": c.header, "encoding": c.encoding,
    })
}

/// `GET` / `PUT /admin/namespaces/{ns}/webhooks/{provider}`.
pub async fn config(call: &mut Call, put: bool, ns: &str, provider: &str) -> ApiResult {
    authenticate(call).await?.require_admin()?;
    validate_namespace(ns)?;
    let provider = Provider::parse(provider)?;
    let request = if put {
        let body: ConfigBody = parse_json(&call.body(MAX_CONFIG_BODY_BYTES).await?)?;
        if provider != Provider::Generic && (body.header.is_some() || body.encoding.is_some()) {
            return Err(ApiError::new(
                ErrorCode::InvalidConfig,
                "header and encoding apply to the generic provider only",
            ));
        }
        let config = WebhookConfig { secrets: body.secrets, header: body.header, encoding: body.encoding };
        WebhookSecretsRequest::Put { provider: provider.name().to_string(), config }
    } else {
        WebhookSecretsRequest::Get { provider: provider.name().to_string() }
    };
    let WebhookSecretsResponse::Config(c) = call.host.call::<WebhookSecrets>(ns, request).await?;
    json(200, &view(provider, c))
}
