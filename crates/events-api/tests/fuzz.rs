//! Property-based fuzzing of the host-independent request logic: the ingest
//! body decoder (JSON, NDJSON, gzip), batch validation, and every inbound
//! webhook signature verifier.
//!
//! The number of cases comes from `EVENTS_FUZZ_CASES` (default 512); see
//! `docs/fuzzing.md` for long runs.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use events_api::ingest::{BATCH_ID_HEADER, decode_body, validate_events_with_origin};
use events_api::webhooks::{Provider, TIMESTAMP_TOLERANCE_SECS, hmac_sha256, verify};
use events_core::event::{EventLimits, parse_event};
use events_core::{ErrorCode, Timestamp};
use events_objects::webhook_secrets::WebhookConfig;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("EVENTS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "[a-z.\\n\\r\\u{2028}]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_bytes(v)) {
            h.append(k, v);
        }
    }
    h
}

/// Header values: the meaningful ones, their case and parameter variants, and noise.
fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec![
            "application/json",
            "Application/JSON; charset=utf-8",
            "text/json",
            "",
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
            "text/plain",
            "multipart/form-data; boundary=x",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ])
}

fn content_encoding() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec!["identity", "gzip", " GZIP ", "x-gzip", "br", "deflate", ""])
            .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ])
}

/// Arbitrary bodies, some of them gzip streams (valid, truncated or corrupted).
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        any::<String>().prop_map(String::into_bytes),
        json_value().prop_map(|v| json!({"events": [v]}).to_string().into_bytes()),
        prop::collection::vec(json_value(), 0..4)
            .prop_map(|v| { v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n").into_bytes() }),
        (prop::collection::vec(any::<u8>(), 0..128), any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(b, i, x)| {
                let mut g = gzip(&b);
                let i = i.index(g.len());
                g[i] ^= x;
                g
            }
        ),
        (prop::collection::vec(any::<u8>(), 0..128), any::<prop::sample::Index>()).prop_map(|(b, i)| {
            let g = gzip(&b);
            g[..i.index(g.len())].to_vec()
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bodies and headers never panic the decoder; whatever it
    /// accepts is within the size limit and made of complete JSON values.
    #[test]
    fn decode_body_never_panics(
        body in body_bytes(),
        ct in content_type(),
        ce in content_encoding(),
        batch in prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
        max in prop_oneof![Just(1usize << 20), 0usize..300],
    ) {
        let mut pairs: Vec<(&str, &[u8])> = Vec::new();
        if let Some(ct) = &ct { pairs.push(("content-type", ct)); }
        if let Some(ce) = &ce { pairs.push(("content-encoding", ce)); }
        if let Some(b) = &batch { pairs.push((BATCH_ID_HEADER, b)); }
        let h = headers(&pairs);
        match decode_body(&h, &body, max) {
            Ok(decoded) => {
                prop_assert!(body.len() <= max);
                for raw in &decoded.events {
                    prop_assert!(serde_json::from_str::<Value>(raw.get()).is_ok());
                    prop_assert!(raw.get().len() <= max);
                }
            }
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                if body.len() > max {
                    prop_assert_eq!(e.code, ErrorCode::PayloadTooLarge);
                }
            }
        }
    }

    /// Any batch of events, encoded as a JSON batch or as NDJSON, optionally
    /// gzipped (in one or several gzip members), decodes to exactly the
    /// events sent, in order, with the batch id from the body in preference
    /// to the header's.
    #[test]
    fn decode_body_round_trips(
        events in prop::collection::vec(json_value(), 0..6),
        ndjson in any::<bool>(),
        crlf in any::<bool>(),
        gzip_members in 0usize..4,
        body_batch in prop::option::of("[a-zA-Z0-9_-]{1,20}"),
        header_batch in prop::option::of("[a-zA-Z0-9_-]{1,20}"),
    ) {
        let plain = if ndjson {
            let sep = if crlf { "\r\n" } else { "\n" };
            events.iter().map(|e| format!("{e}{sep}{sep}")).collect::<String>().into_bytes()
        } else {
            let mut b = json!({"events": events});
            if let Some(id) = &body_batch { b["batchId"] = json!(id); }
            serde_json::to_vec(&b).unwrap()
        };
        let body = if gzip_members == 0 {
            plain.clone()
        } else if plain.is_empty() {
            gzip(&plain)
        } else {
            // Split the text into consecutive gzip members.
            let step = plain.len().div_ceil(gzip_members).max(1);
            plain.chunks(step).flat_map(gzip).collect()
        };
        let ct: &[u8] = if ndjson { b"application/x-ndjson" } else { b"application/json; charset=utf-8" };
        let mut pairs: Vec<(&str, &[u8])> = vec![("content-type", ct)];
        if gzip_members > 0 { pairs.push(("content-encoding", b"gzip")); }
        if let Some(b) = &header_batch { pairs.push((BATCH_ID_HEADER, b.as_bytes())); }
        let decoded = decode_body(&headers(&pairs), &body, 1 << 20).unwrap();
        let got: Vec<Value> = decoded.events.iter().map(|r| serde_json::from_str(r.get()).unwrap()).collect();
        prop_assert_eq!(got, events);
        let expected_batch = if ndjson { header_batch.clone() } else { body_batch.clone().or(header_batch.clone()) };
        prop_assert_eq!(decoded.batch_id, expected_batch);

        // One byte under the decompressed size refuses it as too large.
        if gzip_members > 0 && plain.len() > body.len() {
            let err = decode_body(&headers(&pairs), &body, plain.len() - 1).err().unwrap();
            prop_assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        }
    }
}

// ---------------------------------------------------------------- batch validation

fn raw_event() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        (prop::option::of("[a-z]{1,3}(\\.[a-z]{1,3}){0,2}"), prop::option::of("[!-~]{0,4}"), json_value()).prop_map(
            |(ty, id, data)| {
                let mut m = serde_json::Map::new();
                if let Some(t) = ty {
                    m.insert("type".into(), json!(t));
                }
                if let Some(i) = id {
                    m.insert("id".into(), json!(i));
                }
                m.insert("data".into(), data);
                Value::Object(m).to_string()
            }
        ),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// A batch is accepted exactly when every event is; an accepted batch
    /// is the events one by one, in order; a refused one names exactly the
    /// events at fault.
    #[test]
    fn validate_events_agrees_with_parse_event(raw in prop::collection::vec(raw_event(), 0..8), max in prop_oneof![Just(1usize << 20), 0usize..60]) {
        let raw: Vec<Box<RawValue>> = raw.into_iter().map(|s| RawValue::from_string(s).unwrap()).collect();
        let limits = EventLimits { max_event_bytes: max, ..EventLimits::default() };
        let now = Timestamp(1_800_000_000_000);
        let mut seed = 0u128;
        let mut random = || { seed += 1; seed };
        let result = validate_events_with_origin(&raw, "acme", now, &limits, &mut random);
        let singles: Vec<bool> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| parse_event(r.get(), i, "acme", now, &limits, &mut || "x".into()).is_ok())
            .collect();
        match result {
            Ok(v) => {
                prop_assert!(singles.iter().all(|ok| *ok));
                prop_assert_eq!(v.events.len(), raw.len());
                prop_assert_eq!(v.server_ids.len(), raw.len());
                for (i, e) in v.events.iter().enumerate() {
                    let sent: Value = serde_json::from_str(raw[i].get()).unwrap();
                    prop_assert_eq!(Some(&Value::String(e.event_type.clone())), sent.get("type"));
                    prop_assert_eq!(v.server_ids[i], sent.get("id").is_none_or(Value::is_null));
                }
                let mut ids: Vec<&str> = v.events.iter().zip(&v.server_ids).filter(|(_, s)| **s).map(|(e, _)| e.id.as_str()).collect();
                let n = ids.len();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), n, "server-made ids are distinct");
            }
            Err(e) => {
                let bad: Vec<usize> = singles.iter().enumerate().filter(|(_, ok)| !**ok).map(|(i, _)| i).collect();
                prop_assert!(!bad.is_empty());
                prop_assert!(e.code == ErrorCode::InvalidEvent || e.code == ErrorCode::EventTooLarge);
                let indices: Vec<usize> = serde_json::from_value(e.details["indices"].clone()).unwrap();
                prop_assert_eq!(indices, bad);
            }
        }
    }
}

// ---------------------------------------------------------------- webhooks

const PROVIDERS: [Provider; 8] = [
    Provider::Github,
    Provider::Stripe,
    Provider::Slack,
    Provider::Linear,
    Provider::Workos,
    Provider::Svix,
    Provider::StandardWebhooks,
    Provider::Generic,
];

/// Header names any verifier reads.
const HEADER_NAMES: [&str; 20] = [
    "x-hub-signature-256",
    "x-github-event",
    "x-github-delivery",
    "stripe-signature",
    "workos-signature",
    "x-slack-request-timestamp",
    "x-slack-signature",
    "linear-signature",
    "linear-delivery",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "x-signature",
    "x-sig",
    "x-event-type",
    "x-delivery-id",
    "content-type",
];

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "(sha256=|v0=|v1,|t=|v1=|whsec_)?[0-9a-fA-F]{0,70}".prop_map(String::into_bytes),
        "t=-?[0-9]{1,20}, ?v1=[0-9a-f]{0,64}(,v1=[0-9a-f]{64})?".prop_map(String::into_bytes),
        "-?[0-9]{1,20}".prop_map(String::into_bytes),
        "(v1,[A-Za-z0-9+/=]{0,44} ?){0,3}".prop_map(String::into_bytes),
    ]
}

fn webhook_config() -> impl Strategy<Value = WebhookConfig> {
    (
        prop::collection::vec(prop_oneof!["[ -~]{0,24}", "whsec_[A-Za-z0-9+/=]{0,24}", any::<String>()], 0..3),
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["x-sig", "X-Signature"]).prop_map(str::to_string),
            any::<String>()
        ]),
        prop::option::of(prop_oneof![Just("hex".to_string()), Just("base64".to_string()), any::<String>()]),
    )
        .prop_map(|(secrets, header, encoding)| WebhookConfig { secrets, header, encoding })
}

/// The headers of a correctly signed delivery, and the names of the ones
/// that carry signed material (a byte change there must fail).
fn sign(provider: Provider, secret: &str, body: &[u8], ts: i64) -> (HeaderMap, Vec<&'static str>) {
    let k = secret.as_bytes();
    let t = ts.to_string();
    let (pairs, signed): (Vec<(&str, String)>, Vec<&str>) = match provider {
        Provider::Github => (
            vec![
                ("x-hub-signature-256", format!("sha256={}", hex::encode(hmac_sha256(k, &[body])))),
                ("x-github-event", "push".into()),
                ("x-github-delivery", "d-1".into()),
            ],
            vec!["x-hub-signature-256"],
        ),
        Provider::Stripe | Provider::Workos => {
            let name = if provider == Provider::Stripe { "stripe-signature" } else { "workos-signature" };
            let sig = hex::encode(hmac_sha256(k, &[t.as_bytes(), b".", body]));
            (vec![(name, format!("t={t},v1={sig}"))], vec![name])
        }
        Provider::Slack => (
            vec![
                ("x-slack-request-timestamp", t.clone()),
                (
                    "x-slack-signature",
                    format!("v0={}", hex::encode(hmac_sha256(k, &[b"v0:", t.as_bytes(), b":", body]))),
                ),
            ],
            vec!["x-slack-request-timestamp", "x-slack-signature"],
        ),
        Provider::Linear => {
            (vec![("linear-signature", hex::encode(hmac_sha256(k, &[body])))], vec!["linear-signature"])
        }
        Provider::Svix | Provider::StandardWebhooks => {
            let key = svix_key(secret);
            let sig = B64.encode(hmac_sha256(&key, &[b"msg_1", b".", t.as_bytes(), b".", body]));
            let p = if provider == Provider::Svix { "svix" } else { "webhook" };
            let (id, tsn, sn) = if p == "svix" {
                ("svix-id", "svix-timestamp", "svix-signature")
            } else {
                ("webhook-id", "webhook-timestamp", "webhook-signature")
            };
            (vec![(id, "msg_1".into()), (tsn, t.clone()), (sn, format!("v1,{sig}"))], vec![id, tsn, sn])
        }
        Provider::Generic => (vec![("x-signature", hex::encode(hmac_sha256(k, &[body])))], vec!["x-signature"]),
    };
    let mut h = HeaderMap::new();
    for (name, v) in pairs {
        h.insert(name, HeaderValue::from_str(&v).unwrap());
    }
    (h, signed)
}

/// The key of a Standard Webhooks secret: base64 after an optional `whsec_`.
fn svix_key(secret: &str) -> Vec<u8> {
    let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec())
}

/// The time the provider signs, in seconds (WorkOS and Linear sign milliseconds).
fn signed_seconds(provider: Provider, ts: i64) -> i64 {
    if matches!(provider, Provider::Workos | Provider::Linear) { ts / 1000 } else { ts }
}

/// A body; Linear carries its (signed) timestamp inside the body.
fn body_for(provider: Provider, payload: &Value, ts: i64) -> Vec<u8> {
    if provider == Provider::Linear {
        let mut p = json!({"type": "Issue", "action": "create", "data": payload});
        p["webhookTimestamp"] = json!(ts);
        serde_json::to_vec(&p).unwrap()
    } else {
        serde_json::to_vec(payload).unwrap()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary headers, bodies, configurations and clocks never panic any
    /// verifier; anything accepted has a sanitised type and id.
    #[test]
    fn verifiers_never_panic_on_arbitrary_input(
        provider in prop::sample::select(PROVIDERS.to_vec()),
        config in webhook_config(),
        pairs in prop::collection::vec((prop::sample::select(HEADER_NAMES.to_vec()), header_value()), 0..8),
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..200), json_value().prop_map(|v| v.to_string().into_bytes())],
        now in prop_oneof![any::<i64>(), Just(1_800_000_000i64)],
    ) {
        let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        if let Ok(d) = verify(provider, &config, &headers(&pairs), &body, now) {
            prop_assert!(d.event_type.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            prop_assert!(!d.delivery_id.is_empty() && d.delivery_id.len() <= 128);
        }
    }

    /// A correctly signed delivery verifies (exactly when its timestamp is
    /// within the tolerance), with any of the active secrets; changing any
    /// one byte of the body or of a signed header makes it fail.
    #[test]
    fn signed_deliveries_verify_and_tampered_ones_do_not(
        provider in prop::sample::select(PROVIDERS.to_vec()),
        secret in prop_oneof!["[ -~]{1,32}", "whsec_[A-Za-z0-9+/]{8,40}={0,2}"],
        other in "[ -~]{1,32}",
        payload in json_value(),
        now in prop_oneof![Just(1_800_000_000i64), any::<i64>()],
        skew in prop_oneof![
            4 => -TIMESTAMP_TOLERANCE_SECS - 5..TIMESTAMP_TOLERANCE_SECS + 5,
            1 => any::<i64>(),
            1 => prop::sample::select(vec![i64::MIN, i64::MIN + 1, i64::MAX]),
        ],
        mutate_at in any::<prop::sample::Index>(),
        mutate_to in any::<u8>(),
        mutate_header in any::<prop::sample::Index>(),
        mutate_body in any::<bool>(),
    ) {
        // Seconds for the others; WorkOS and Linear sign milliseconds.
        let ts_secs = now.saturating_add(skew);
        let ts = if matches!(provider, Provider::Workos | Provider::Linear) { ts_secs.saturating_mul(1000) } else { ts_secs };
        let body = body_for(provider, &payload, ts);
        let (h, signed) = sign(provider, &secret, &body, ts);
        let config = WebhookConfig { secrets: vec![other.clone(), secret.clone()], header: None, encoding: None };
        // GitHub and the generic scheme sign no timestamp.
        let in_window = matches!(provider, Provider::Github | Provider::Generic) || (i128::from(now) - i128::from(signed_seconds(provider, ts))).abs() <= i128::from(TIMESTAMP_TOLERANCE_SECS);
        let result = verify(provider, &config, &h, &body, now);
        prop_assert_eq!(result.is_ok(), in_window, "{:?} ts {} now {}: {:?}", provider, ts, now, result.as_ref().err());
        if let Ok(d) = &result {
            let expected = serde_json::from_slice::<Value>(&body).unwrap();
            prop_assert_eq!(&d.payload, &expected);
        }

        // The same delivery under a configuration without the secret fails.
        let same_key = other == secret
            || (matches!(provider, Provider::Svix | Provider::StandardWebhooks) && svix_key(&other) == svix_key(&secret));
        if !same_key {
            let wrong = WebhookConfig { secrets: vec![other.clone()], header: None, encoding: None };
            let err = verify(provider, &wrong, &h, &body, now).err();
            let err = err.expect("a delivery signed with another secret is refused");
            prop_assert_eq!(err.code, ErrorCode::InvalidSignature);
        }

        // One changed byte.
        if mutate_body {
            let mut tampered = body.clone();
            let i = mutate_at.index(tampered.len());
            if tampered[i] != mutate_to {
                tampered[i] = mutate_to;
                let err = verify(provider, &config, &h, &tampered, now).err();
                prop_assert!(err.is_some(), "{:?}: a changed body byte at {} verified", provider, i);
                prop_assert_eq!(err.unwrap().code, ErrorCode::InvalidSignature);
            }
        } else {
            let name = signed[mutate_header.index(signed.len())];
            let mut value = h.get(name).unwrap().as_bytes().to_vec();
            let i = mutate_at.index(value.len());
            // Hex digits are read in either case: a case change is the same signature.
            if !value[i].eq_ignore_ascii_case(&mutate_to) {
                value[i] = mutate_to;
                let mut tampered = h.clone();
                match HeaderValue::from_bytes(&value) {
                    Ok(v) => { tampered.insert(name, v); }
                    Err(_) => { tampered.remove(name); }
                }
                let err = verify(provider, &config, &tampered, &body, now).err();
                prop_assert!(err.is_some(), "{:?}: header {} changed at {} to {:?} verified", provider, name, i, mutate_to as char);
                prop_assert_eq!(err.unwrap().code, ErrorCode::InvalidSignature);
            }
        }
    }
}
