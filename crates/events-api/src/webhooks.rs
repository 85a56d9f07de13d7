//! Verification of inbound webhooks from third-party providers.
//!
//! Every delivery is verified on its raw body before anything parses it:
//! HMAC-SHA256 with any of the provider's active secrets (constant-time
//! comparison), and, where the provider signs a timestamp, that timestamp
//! within [`TIMESTAMP_TOLERANCE_SECS`] of now. A namespace without a
//! configured secret for the provider accepts nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use events_core::{ApiError, ErrorCode};
use events_objects::webhook_secrets::WebhookConfig;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest accepted webhook body.
pub const WEBHOOK_MAX_BODY_BYTES: usize = 1024 * 1024;
/// How far a signed timestamp may be from now, either way.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;
/// Longest kept delivery id (longer ones are replaced by their hash).
pub const MAX_DELIVERY_ID_LEN: usize = 128;
/// Longest kept provider event type.
pub const MAX_EVENT_TYPE_LEN: usize = 96;
/// Signature header of the generic provider when none is configured.
pub const GENERIC_DEFAULT_HEADER: &str = "x-signature";

/// The supported providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// Stripe: `Stripe-Signature: t=..,v1=..` over `t.body`.
    Stripe,
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:ts:body`.
    Slack,
    /// Linear: `Linear-Signature: <hex>`, `webhookTimestamp` (ms) in the body.
    Linear,
    /// WorkOS: `WorkOS-Signature: t=<ms>, v1=<hex>` over `t.body`.
    Workos,
    /// Svix (`svix-*` or `webhook-*` headers).
    Svix,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks,
    /// HMAC-SHA256 of the body in a configurable header, hex or base64.
    Generic,
}

impl Provider {
    /// Every provider, by its URL name.
    pub const ALL: &'static [(&'static str, Provider)] = &[
        ("github", Provider::Github),
        ("stripe", Provider::Stripe),
        ("slack", Provider::Slack),
        ("linear", Provider::Linear),
        ("workos", Provider::Workos),
        ("svix", Provider::Svix),
        ("standard-webhooks", Provider::StandardWebhooks),
        ("generic", Provider::Generic),
    ];

    /// The provider named `name`.
    pub fn parse(name: &str) -> Result<Provider, ApiError> {
        Provider::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).ok_or_else(|| {
            let names: Vec<&str> = Provider::ALL.iter().map(|(n, _)| *n).collect();
            ApiError::new(ErrorCode::InvalidRequest, format!("unknown webhook provider {name:?}"))
                .with_details(serde_json::json!({"providers": names}))
        })
    }

    /// Its URL name.
    pub fn name(self) -> &'static str {
        Provider::ALL.iter().find(|(_, p)| *p == self).map(|(n, _)| *n).unwrap_or("generic")
    }
}

/// A verified delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The provider's event type, sanitised to `[A-Za-z0-9._-]`.
    pub event_type: String,
    /// The provider's delivery id (or a hash of the body when it sends none).
    pub delivery_id: String,
    /// The body as JSON (a string when it is not JSON).
    pub payload: Value,
    /// Slack's `url_verification` challenge, to echo.
    pub challenge: Option<String>,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSignature, message)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn require<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, ApiError> {
    header(headers, name).ok_or_else(|| unauthorized(format!("missing {name} header")))
}

/// HMAC-SHA256 of the parts, concatenated.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether any `expected` equals any `presented` (constant time per pair).
fn any_match(expected: &[Vec<u8>], presented: &[Vec<u8>]) -> bool {
    let mut ok = subtle::Choice::from(0u8);
    for e in expected {
        for p in presented {
            ok |= e.as_slice().ct_eq(p.as_slice());
        }
    }
    ok.into()
}

fn check_time(ts_secs: i64, now_secs: i64) -> Result<(), ApiError> {
    // `abs_diff`: a signed timestamp may be any i64, and `now - ts` overflows.
    if now_secs.abs_diff(ts_secs) > TIMESTAMP_TOLERANCE_SECS.unsigned_abs() {
        return Err(unauthorized(format!(
            "the signed timestamp is more than {TIMESTAMP_TOLERANCE_SECS} seconds from now"
        ))
        .with_details(serde_json::json!({"toleranceSeconds": TIMESTAMP_TOLERANCE_SECS})));
    }
    Ok(())
}

fn parse_ts(s: &str) -> Result<i64, ApiError> {
    s.trim().parse::<i64>().map_err(|_| unauthorized("the signature timestamp is not a number"))
}

/// `t=..,v1=..,v1=..` (Stripe, WorkOS): the timestamp and the `v1` signatures.
fn parse_t_v1(value: &str) -> Result<(String, Vec<Vec<u8>>), ApiError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in value.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        match k.trim() {
            "t" => t = Some(v.trim().to_string()),
            "v1" => {
                if let Ok(bytes) = hex::decode(v.trim()) {
                    sigs.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or_else(|| unauthorized("the signature header has no t= timestamp"))?;
    if sigs.is_empty() {
        return Err(unauthorized("the signature header has no v1 signature"));
    }
    Ok((t, sigs))
}

/// Keeps `[A-Za-z0-9._-]`, turns anything else into `_`, collapses dots.
pub fn sanitize_type(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars().take(MAX_EVENT_TYPE_LEN) {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' };
        if c == '.' && (out.is_empty() || out.ends_with('.')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() { "unknown".to_string() } else { out }
}

fn sanitize_id(raw: &str, body: &[u8]) -> String {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_DELIVERY_ID_LEN
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if ok { raw.to_string() } else { body_hash(if raw.is_empty() { body } else { raw.as_bytes() }) }
}

fn body_hash(bytes: &[u8]) -> String {
    format!("sha256-{}", &hex::encode(Sha256::digest(bytes))[..32])
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

/// Verifies a delivery of `provider` with `config` (any active secret), at `now_secs`.
pub fn verify(
    provider: Provider,
    config: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<Delivery, ApiError> {
    let secrets: Vec<&[u8]> = config.secrets.iter().map(|s| s.as_bytes()).collect();
    let bad_sig = || unauthorized("the signature does not match any configured secret");
    // Each arm verifies, then names the event type and delivery id.
    let (event_type, delivery_id) = match provider {
        Provider::Github => {
            let sig = require(headers, "x-hub-signature-256")?;
            let presented = sig.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()).ok_or_else(bad_sig)?;
            let expected: Vec<Vec<u8>> = secrets.iter().map(|k| hmac_sha256(k, &[body])).collect();
            if !any_match(&expected, &[presented]) {
                return Err(bad_sig());
            }
            let event = require(headers, "x-github-event")?.to_string();
            (event, header(headers, "x-github-delivery").unwrap_or("").to_string())
        }
        Provider::Stripe | Provider::Workos => {
            let name = if provider == Provider::Stripe { "stripe-signature" } else { "workos-signature" };
            let (t, presented) = parse_t_v1(require(headers, name)?)?;
            let expected: Vec<Vec<u8>> = secrets.iter().map(|k| hmac_sha256(k, &[t.as_bytes(), b".", body])).collect();
            if !any_match(&expected, &presented) {
                return Err(bad_sig());
            }
            let ts = parse_ts(&t)?;
            // WorkOS timestamps are milliseconds; Stripe's are seconds.
            check_time(if provider == Provider::Workos { ts / 1000 } else { ts }, now_secs)?;
            let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let key = if provider == Provider::Stripe { "type" } else { "event" };
            (
                str_at(&payload, &[key]).unwrap_or("unknown").to_string(),
                str_at(&payload, &["id"]).unwrap_or("").to_string(),
            )
        }
        Provider::Slack => {
            let ts = require(headers, "x-slack-request-timestamp")?;
            let sig = require(headers, "x-slack-signature")?;
            let presented = sig.strip_prefix("v0=").and_then(|h| hex::decode(h).ok()).ok_or_else(bad_sig)?;
            let expected: Vec<Vec<u8>> =
                secrets.iter().map(|k| hmac_sha256(k, &[b"v0:", ts.as_bytes(), b":", body])).collect();
            if !any_match(&expected, &[presented]) {
                return Err(bad_sig());
            }
            check_time(parse_ts(ts)?, now_secs)?;
            let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let ty = str_at(&payload, &["event", "type"]).or_else(|| str_at(&payload, &["type"])).unwrap_or("unknown");
            (ty.to_string(), str_at(&payload, &["event_id"]).unwrap_or("").to_string())
        }
        Provider::Linear => {
            let sig = require(headers, "linear-signature")?;
            let presented = hex::decode(sig).map_err(|_| bad_sig())?;
            let expected: Vec<Vec<u8>> = secrets.iter().map(|k| hmac_sha256(k, &[body])).collect();
            if !any_match(&expected, &[presented]) {
                return Err(bad_sig());
            }
            let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let ts_ms = payload
                .get("webhookTimestamp")
                .and_then(Value::as_i64)
                .ok_or_else(|| unauthorized("the body has no webhookTimestamp"))?;
            check_time(ts_ms / 1000, now_secs)?;
            let ty = match (str_at(&payload, &["type"]), str_at(&payload, &["action"])) {
                (Some(t), Some(a)) => format!("{t}.{a}"),
                (Some(t), None) => t.to_string(),
                _ => "unknown".to_string(),
            };
            let id = header(headers, "linear-delivery").unwrap_or("").to_string();
            (ty, id)
        }
        Provider::Svix | Provider::StandardWebhooks => {
            let pick = |suffix: &str| {
                header(headers, &format!("webhook-{suffix}")).or_else(|| header(headers, &format!("svix-{suffix}")))
            };
            let id = pick("id").ok_or_else(|| unauthorized("missing webhook-id (or svix-id) header"))?;
            let ts = pick("timestamp")
                .ok_or_else(|| unauthorized("missing webhook-timestamp (or svix-timestamp) header"))?;
            let sig = pick("signature")
                .ok_or_else(|| unauthorized("missing webhook-signature (or svix-signature) header"))?;
            let presented: Vec<Vec<u8>> =
                sig.split(' ').filter_map(|s| s.strip_prefix("v1,")).filter_map(|b| B64.decode(b).ok()).collect();
            let keys: Vec<Vec<u8>> = config
                .secrets
                .iter()
                .map(|s| {
                    let raw = s.strip_prefix("whsec_").unwrap_or(s);
                    B64.decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec())
                })
                .collect();
            let expected: Vec<Vec<u8>> =
                keys.iter().map(|k| hmac_sha256(k, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])).collect();
            if !any_match(&expected, &presented) {
                return Err(bad_sig());
            }
            check_time(parse_ts(ts)?, now_secs)?;
            let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            (
                str_at(&payload, &["type"])
                    .or_else(|| str_at(&payload, &["eventType"]))
                    .unwrap_or("unknown")
                    .to_string(),
                id.to_string(),
            )
        }
        Provider::Generic => {
            let name = config.header.as_deref().unwrap_or(GENERIC_DEFAULT_HEADER).to_ascii_lowercase();
            let sig = require(headers, &name)?;
            let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
            let presented = match config.encoding.as_deref().unwrap_or("hex") {
                "base64" => B64.decode(sig).map_err(|_| bad_sig())?,
                _ => hex::decode(sig).map_err(|_| bad_sig())?,
            };
            let expected: Vec<Vec<u8>> = secrets.iter().map(|k| hmac_sha256(k, &[body])).collect();
            if !any_match(&expected, &[presented]) {
                return Err(bad_sig());
            }
            let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let ty = header(headers, "x-event-type").or_else(|| str_at(&payload, &["type"])).unwrap_or("event");
            let id = header(headers, "x-delivery-id").or_else(|| str_at(&payload, &["id"])).unwrap_or("");
            (ty.to_string(), id.to_string())
        }
    };
    // A body that is not JSON, or nests too deep to sit inside an event
    // (one level down), is kept whole as text.
    let payload = serde_json::from_slice(body)
        .ok()
        .filter(|p| events_core::event::value_depth(p) < events_core::limits::MAX_EVENT_DEPTH)
        .unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()));
    let challenge = (provider == Provider::Slack && str_at(&payload, &["type"]) == Some("url_verification"))
        .then(|| str_at(&payload, &["challenge"]).map(str::to_string))
        .flatten();
    Ok(Delivery {
        event_type: sanitize_type(&event_type),
        delivery_id: sanitize_id(&delivery_id, body),
        payload,
        challenge,
    })
}

/// The event a verified delivery becomes: `webhook.<provider>.<type>`, id
/// `<provider>:<delivery id>`, the payload and delivery facts as data; and the
/// batch id to store it under, so that a redelivery lands on the same writer
/// shard and is not stored twice.
pub fn delivery_event(
    provider: Provider,
    ns: &str,
    delivery: Delivery,
    now: events_core::Timestamp,
) -> (events_core::Event, String) {
    let mut data = serde_json::Map::new();
    data.insert("provider".into(), serde_json::json!(provider.name()));
    data.insert("eventType".into(), serde_json::json!(delivery.event_type));
    data.insert("deliveryId".into(), serde_json::json!(delivery.delivery_id));
    data.insert("verified".into(), serde_json::json!(true));
    data.insert("payload".into(), delivery.payload);
    let event = events_core::Event {
        id: format!("{}:{}", provider.name(), delivery.delivery_id),
        ns: ns.to_string(),
        ts: now,
        event_type: format!("webhook.{}.{}", provider.name(), delivery.event_type),
        source: Some(format!("webhook:{}", provider.name())),
        data,
    };
    let batch_id = format!("webhook:{}", event.id);
    (event, batch_id)
}

/// The answer to a verified, stored delivery (both hosts). As the original
/// service's, it carries `accepted`, `verified` (always `true` here: an
/// unverified delivery is refused with `INVALID_SIGNATURE`, never accepted)
/// and the provider.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookAccepted {
    /// Always `true`.
    pub ok: bool,
    /// Always `true` (a repeated delivery is accepted and not stored twice).
    pub accepted: bool,
    /// Always `true`: the signature was verified.
    pub verified: bool,
    /// The provider (`github`, `stripe`, ...).
    pub provider: String,
    /// Present (true) when this delivery id was already stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated: Option<bool>,
    /// The stored event: `{type, id, ns, ts, source, webhook: {provider, eventType, deliveryId, verified}}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event: Value,
    /// Slack `url_verification` challenge, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

/// The answer to `event` (made by [`delivery_event`]), stored or found
/// already stored (`deduplicated`), with the Slack `challenge` if any.
pub fn accepted(
    provider: Provider,
    event: &events_core::Event,
    deduplicated: bool,
    challenge: Option<String>,
) -> WebhookAccepted {
    let fact = |k: &str| event.data.get(k).cloned().unwrap_or(Value::Null);
    let webhook = serde_json::json!({
        "provider": provider.name(), "eventType": fact("eventType"), "deliveryId": fact("deliveryId"), "verified": true,
    });
    WebhookAccepted {
        ok: true,
        accepted: true,
        verified: true,
        provider: provider.name().to_string(),
        deduplicated: deduplicated.then_some(true),
        event: serde_json::json!({
            "type": event.event_type, "id": event.id, "ns": event.ns, "ts": event.ts.to_iso(),
            "source": event.source, "webhook": webhook,
        }),
        challenge,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn config(secrets: &[&str]) -> WebhookConfig {
        WebhookConfig { secrets: secrets.iter().map(|s| s.to_string()).collect(), header: None, encoding: None }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn type_sanitising() {
        assert_eq!(sanitize_type("pull_request"), "pull_request");
        assert_eq!(sanitize_type("customer.subscription.updated"), "customer.subscription.updated");
        assert_eq!(sanitize_type("a b/c..d."), "a_b_c.d");
        assert_eq!(sanitize_type("..."), "unknown");
        assert_eq!(sanitize_type(&"x".repeat(500)).len(), MAX_EVENT_TYPE_LEN);
    }

    #[test]
    fn github_rotation_and_tampering() {
        let body = br#"{"zen":"hi"}"#;
        let sig = format!("sha256={}", hex::encode(hmac_sha256(b"old-secret", &[body])));
        let h = headers(&[
            ("x-hub-signature-256", sig),
            ("x-github-event", "ping".into()),
            ("x-github-delivery", "d-1".into()),
        ]);
        let d = verify(Provider::Github, &config(&["new-secret", "old-secret"]), &h, body, 0).unwrap();
        assert_eq!((d.event_type.as_str(), d.delivery_id.as_str()), ("ping", "d-1"));
        assert_eq!(
            verify(Provider::Github, &config(&["new-secret"]), &h, body, 0).unwrap_err().code,
            ErrorCode::InvalidSignature
        );
        assert!(verify(Provider::Github, &config(&["old-secret"]), &h, br#"{"zen":"ho"}"#, 0).is_err());
    }

    /// A payload nested deeper than an event may be is kept as text, so the
    /// stored event always decodes (stored rows sit two levels deeper still).
    #[test]
    fn a_payload_too_deep_for_an_event_is_kept_as_text() {
        let deep = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels)).into_bytes();
        let sign = |body: &[u8]| {
            headers(&[
                ("x-hub-signature-256", format!("sha256={}", hex::encode(hmac_sha256(b"s", &[body])))),
                ("x-github-event", "push".into()),
            ])
        };
        use events_core::limits::MAX_EVENT_DEPTH;
        let fits = deep(MAX_EVENT_DEPTH - 1);
        let payload = verify(Provider::Github, &config(&["s"]), &sign(&fits), &fits, 0).unwrap().payload;
        assert!(payload.is_array());
        let too_deep = deep(MAX_EVENT_DEPTH);
        let payload = verify(Provider::Github, &config(&["s"]), &sign(&too_deep), &too_deep, 0).unwrap().payload;
        assert_eq!(payload, Value::String(String::from_utf8(too_deep).unwrap()));
        let (event, _) = delivery_event(
            Provider::Github,
            "acme",
            Delivery { event_type: "push".into(), delivery_id: "d".into(), payload, challenge: None },
            events_core::Timestamp(0),
        );
        let row = serde_json::to_string(&[event]).unwrap();
        assert!(serde_json::from_str::<Vec<events_core::Event>>(&row).is_ok());
    }

    #[test]
    fn stripe_timestamp_window() {
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let t = 1_700_000_000i64;
        let sig = hex::encode(hmac_sha256(b"whsec_abc12345", &[t.to_string().as_bytes(), b".", body]));
        let h = headers(&[("stripe-signature", format!("t={t},v1={sig}"))]);
        let c = config(&["whsec_abc12345"]);
        assert_eq!(verify(Provider::Stripe, &c, &h, body, t + 300).unwrap().event_type, "charge.succeeded");
        assert!(verify(Provider::Stripe, &c, &h, body, t + 301).is_err());
        assert!(verify(Provider::Stripe, &c, &h, body, t - 301).is_err());
    }

    /// Found by the fuzz target `signed_deliveries_verify_and_tampered_ones_do_not`: a
    /// correctly signed timestamp about 2^63 seconds away from now overflowed
    /// the window check (a panic in debug builds; in release builds the
    /// wrapped difference passed the window).
    #[test]
    fn an_extreme_signed_timestamp_is_refused_not_overflowed() {
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let now = 1_800_000_000i64;
        for t in [i64::MIN, now.wrapping_add(i64::MIN), i64::MAX, -now] {
            let sig = hex::encode(hmac_sha256(b"s3cret", &[t.to_string().as_bytes(), b".", body]));
            let mut h = HeaderMap::new();
            h.insert("stripe-signature", HeaderValue::from_str(&format!("t={t},v1={sig}")).unwrap());
            let config = WebhookConfig { secrets: vec!["s3cret".into()], header: None, encoding: None };
            let err = verify(Provider::Stripe, &config, &h, body, now).expect_err("out of the window");
            assert_eq!(err.code, ErrorCode::InvalidSignature);
        }
        // And a clock far from any plausible time does not overflow either.
        let t = 0i64;
        let sig = hex::encode(hmac_sha256(b"s3cret", &[b"v0:", t.to_string().as_bytes(), b":", body]));
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", HeaderValue::from_static("0"));
        h.insert("x-slack-signature", HeaderValue::from_str(&format!("v0={sig}")).unwrap());
        let config = WebhookConfig { secrets: vec!["s3cret".into()], header: None, encoding: None };
        assert!(verify(Provider::Slack, &config, &h, body, i64::MIN).is_err());
    }

    #[test]
    fn the_answer_says_verified_and_names_the_provider() {
        let delivery = Delivery {
            event_type: "push".into(),
            delivery_id: "d-1".into(),
            payload: serde_json::json!({"n": 1}),
            challenge: None,
        };
        let (event, _) = delivery_event(Provider::Github, "acme", delivery, events_core::Timestamp(0));
        let v = serde_json::to_value(accepted(Provider::Github, &event, false, None)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ok": true, "accepted": true, "verified": true, "provider": "github",
                "event": {"type": "webhook.github.push", "id": "github:d-1", "ns": "acme",
                    "ts": "1970-01-01T00:00:00.000Z", "source": "webhook:github",
                    "webhook": {"provider": "github", "eventType": "push", "deliveryId": "d-1", "verified": true}}})
        );
        let again = serde_json::to_value(accepted(Provider::Github, &event, true, Some("c".into()))).unwrap();
        assert_eq!((&again["deduplicated"], &again["challenge"]), (&serde_json::json!(true), &serde_json::json!("c")));
    }
}
