//! Inbound webhooks: `POST /webhooks/{provider}?ns=` (and `POST /webhooks?provider=&ns=`),
//! and their per-namespace secrets under `/admin/namespaces/{ns}/webhooks/{provider}`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::WebhookSecrets;
use events_objects::webhook_secrets::{WebhookConfig, WebhookSecretsRequest, WebhookSecretsResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::auth::DEFAULT_NAMESPACE;
use crate::error::{ApiErrorResponse, ApiJson, ApiPath, ApiQuery, JsonBody};
use crate::routes::ApiRouter;
use crate::state::AppState;
use crate::webhooks::{Provider, WEBHOOK_MAX_BODY_BYTES, WebhookAccepted, accepted, delivery_event, verify};

/// Registers this module's routes.
pub fn register(api: ApiRouter) -> ApiRouter {
    api.routes(routes!(receive)).routes(routes!(receive_query)).routes(routes!(get_webhook_config, put_webhook_config))
}

type Result<T> = std::result::Result<T, ApiErrorResponse>;

async fn handle(
    state: AppState,
    provider: &str,
    ns: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<ApiJson<WebhookAccepted>> {
    let provider = Provider::parse(provider)?;
    let ns = ns.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    validate_namespace(&ns)?;
    let bytes = axum::body::to_bytes(body, WEBHOOK_MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(ErrorCode::PayloadTooLarge, format!("webhook bodies are at most {WEBHOOK_MAX_BODY_BYTES} bytes"))
            .with_details(json!({"maxSize": WEBHOOK_MAX_BODY_BYTES}))
    })?;
    let answer = state
        .host
        .call_object::<WebhookSecrets>(&ns, WebhookSecretsRequest::Get { provider: provider.name().to_string() })
        .await?;
    let WebhookSecretsResponse::Config(Some(config)) = answer else {
        // Never accept an unverifiable delivery.
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!("no {} webhook secret is configured for this namespace", provider.name()),
        )
        .into());
    };
    let now = chrono::Utc::now();
    let delivery = verify(provider, &config, &headers, &bytes, now.timestamp()).inspect_err(|e| {
        metrics::counter!("events_webhooks_rejected_total", "provider" => provider.name()).increment(1);
        tracing::info!(provider = provider.name(), ns = %ns, error = %e.message, "webhook refused");
    })?;
    let challenge = delivery.challenge.clone();
    let (event, batch_id) = delivery_event(provider, &ns, delivery, Timestamp(now.timestamp_millis()));
    let settings = crate::ingest::settings(&state.config);
    let (appended, _, background) = state
        .ingest
        .store(&state.host, &(), &settings, &ns, vec![event.clone()], Vec::new(), Some(batch_id))
        .await
        .map_err(ApiErrorResponse)?;
    crate::ingest::spawn_background(&state, background);
    metrics::counter!("events_webhooks_accepted_total", "provider" => provider.name()).increment(1);
    Ok(ApiJson(accepted(provider, &event, appended.deduplicated || appended.stored == 0, challenge)))
}

/// Query of the webhook routes.
#[derive(Debug, Deserialize)]
pub struct WebhookQuery {
    /// Namespace (default `default`).
    pub ns: Option<String>,
    /// Provider (for `POST /webhooks`).
    pub provider: Option<String>,
}

/// Receives a provider's webhook; verified deliveries become `webhook.<provider>.<type>` events.
#[utoipa::path(post, path = "/webhooks/{provider}", tag = "webhooks",
    params(
        ("provider" = String, Path, description = "github, stripe, slack, linear, workos, svix, standard-webhooks or generic"),
        ("ns" = Option<String>, Query, description = "Namespace (default `default`)", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"),
    ),
    request_body(content = String, description = "The provider's raw body (at most 1 MiB)"),
    responses(
        (status = 200, description = "Verified and stored", body = WebhookAccepted),
        (status = 401, description = "INVALID_SIGNATURE: bad, missing or stale signature, or no secret configured", body = crate::error::ErrorBody),
    ))]
pub async fn receive(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    params: ApiQuery<WebhookQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<ApiJson<WebhookAccepted>> {
    let q = params.parse()?;
    handle(state, &provider, q.ns, headers, body).await
}

/// As `POST /webhooks/{provider}`, with the provider in the query.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks",
    params(
        ("provider" = String, Query, description = "Provider name"),
        ("ns" = Option<String>, Query, description = "Namespace (default `default`)", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"),
    ),
    request_body(content = String, description = "The provider's raw body (at most 1 MiB)"),
    responses((status = 200, description = "Verified and stored", body = WebhookAccepted)))]
pub async fn receive_query(
    State(state): State<AppState>,
    params: ApiQuery<WebhookQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<ApiJson<WebhookAccepted>> {
    let q = params.parse()?;
    let provider = q.provider.ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "give ?provider="))?;
    handle(state, &provider, q.ns, headers, body).await
}

/// A provider's secrets, as set.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfigBody {
    /// Active secrets (1-5); any of them verifies a delivery, so rotation is: add, switch, remove.
    pub secrets: Vec<String>,
    /// Signature header (generic provider; default `X-Signature`).
    pub header: Option<String>,
    /// `hex` (default) or `base64` (generic provider).
    pub encoding: Option<String>,
}

/// A provider's configuration, secrets masked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookConfigView {
    /// Provider name.
    pub provider: String,
    /// Whether it is configured.
    pub configured: bool,
    /// Secrets, masked to their last 4 characters.
    pub secrets: Vec<String>,
    /// Signature header (generic provider).
    pub header: Option<String>,
    /// Signature encoding (generic provider).
    pub encoding: Option<String>,
}

fn mask(secret: &str) -> String {
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("****{tail}")
}

fn view(provider: Provider, config: Option<WebhookConfig>) -> WebhookConfigView {
    let configured = config.is_some();
    let c = config.unwrap_or(WebhookConfig { secrets: Vec::new(), header: None, encoding: None });
    WebhookConfigView {
        provider: provider.name().to_string(),
        configured,
        secrets: c.secrets.iter().map(|s| mask(s)).collect(),
        header: c.header,
        encoding: c.encoding,
    }
}

/// Reads a provider's webhook configuration (secrets masked).
#[utoipa::path(get, path = "/admin/namespaces/{ns}/webhooks/{provider}", tag = "admin",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("provider" = String, Path, description = "Provider")),
    responses((status = 200, description = "Configuration", body = WebhookConfigView)),
    security(("bearerAuth" = [])))]
pub async fn get_webhook_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, provider)): ApiPath<(String, String)>,
) -> Result<ApiJson<WebhookConfigView>> {
    state.auth.authenticate(&state.host, &headers).await?.require_admin()?;
    validate_namespace(&ns)?;
    let provider = Provider::parse(&provider)?;
    let WebhookSecretsResponse::Config(c) = state
        .host
        .call_object::<WebhookSecrets>(&ns, WebhookSecretsRequest::Get { provider: provider.name().to_string() })
        .await?;
    Ok(ApiJson(view(provider, c)))
}

/// Sets a provider's webhook secrets for a namespace.
#[utoipa::path(put, path = "/admin/namespaces/{ns}/webhooks/{provider}", tag = "admin",
    params(("ns" = String, Path, description = "Namespace", pattern = "^[a-z0-9][a-z0-9-]{0,63}$"), ("provider" = String, Path, description = "Provider")),
    request_body = WebhookConfigBody,
    responses((status = 200, description = "Configuration", body = WebhookConfigView)),
    security(("bearerAuth" = [])))]
pub async fn put_webhook_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((ns, provider)): ApiPath<(String, String)>,
    body: JsonBody<WebhookConfigBody>,
) -> Result<ApiJson<WebhookConfigView>> {
    state.auth.authenticate(&state.host, &headers).await?.require_admin()?;
    let body = body.parse()?;
    validate_namespace(&ns)?;
    let provider = Provider::parse(&provider)?;
    if provider != Provider::Generic && (body.header.is_some() || body.encoding.is_some()) {
        return Err(
            ApiError::new(ErrorCode::InvalidConfig, "header and encoding apply to the generic provider only").into()
        );
    }
    let config = WebhookConfig { secrets: body.secrets, header: body.header, encoding: body.encoding };
    let WebhookSecretsResponse::Config(c) = state
        .host
        .call_object::<WebhookSecrets>(
            &ns,
            WebhookSecretsRequest::Put { provider: provider.name().to_string(), config },
        )
        .await?;
    Ok(ApiJson(view(provider, c)))
}
