//! `POST /e`: validation, authentication, rate limits, quotas, idempotency and
//! the accepted encodings. A rejected batch must leave nothing behind, which
//! every refusal test checks by storing a marker event afterwards and reading
//! back exactly that marker.

use std::io::Write;
use std::time::Duration;

use events_e2e::{
    ApiKey, Auth, Reply, ServerOptions, TestServer, assert_stored_ids, event, iso_at_offset, iso_now, skip_on_external,
    unique_ns,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

async fn server_and_key(prefix: &str) -> (TestServer, ApiKey) {
    let server = TestServer::start().await;
    let key = server.create_key(&unique_ns(prefix)).await;
    (server, key)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn body_of(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const NDJSON: (&str, &str) = ("Content-Type", "application/x-ndjson");
const GZIP: (&str, &str) = ("Content-Encoding", "gzip");

/// Sends the marker event and asserts it is the only event stored.
async fn assert_nothing_but_marker(server: &TestServer, auth: &Auth) {
    server.ingest_ok(auth, &[event("marker.sent", "marker")]).await;
    assert_stored_ids(server, auth, &["marker"]).await;
}

#[tokio::test]
async fn accepted_batch_is_stored_with_every_field() {
    let (server, key) = server_and_key("ok").await;
    let ts = iso_now();
    let events = vec![
        json!({"type": "order.created", "ts": ts, "id": "o-1", "amount": 12.5, "tags": ["a", "b"], "customer": {"id": "c1"}}),
        json!({"type": "order.paid", "ts": ts, "id": "o-2", "source": "checkout"}),
        json!({"type": "page_view", "ts": ts, "url": "https://example.com/x"}),
    ];
    let r = server.ingest_ok(&key.auth(), &events).await;
    assert_eq!(r.body, json!({"ok": true, "received": 3, "namespace": key.namespace}), "{}", r.text);

    let stored = server.wait_for_events(&key.auth(), "", 3).await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    for e in &stored {
        assert!(e["id"].as_str().is_some_and(|id| !id.is_empty()), "every event has an id: {e}");
        assert_eq!(e["ns"], key.namespace.as_str(), "{e}");
        assert!(e["ts"].is_string(), "{e}");
    }
    let by_id = |id: &str| stored.iter().find(|e| e["id"] == id).unwrap_or_else(|| panic!("{id} missing: {stored:?}"));
    let o1 = by_id("o-1");
    assert_eq!(o1["type"], "order.created");
    assert_eq!(o1["amount"], 12.5);
    assert_eq!(o1["tags"], json!(["a", "b"]));
    assert_eq!(o1["customer"], json!({"id": "c1"}));
    assert_eq!(by_id("o-2")["source"], "checkout");
    let pv = stored.iter().find(|e| e["type"] == "page_view").expect("page_view stored");
    assert_eq!(pv["url"], "https://example.com/x");
    // Same instant as sent, whatever the ISO spelling.
    for e in &stored {
        let got = chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().unwrap()).expect("ts is ISO-8601");
        let sent = chrono::DateTime::parse_from_rfc3339(&ts).unwrap();
        assert_eq!(got.timestamp_millis(), sent.timestamp_millis(), "{e}");
    }
}

#[tokio::test]
async fn empty_batch_is_accepted() {
    let (server, key) = server_and_key("empty").await;
    let r = server.ingest(&key.auth(), &[]).await;
    assert_eq!(r.body, json!({"ok": true, "received": 0, "namespace": key.namespace}), "{}", r.text);
    assert_eq!(r.status, 200);
    assert_nothing_but_marker(&server, &key.auth()).await;
}

#[tokio::test]
async fn malformed_bodies_are_refused_and_write_nothing() {
    let (server, key) = server_and_key("malformed").await;
    let auth = key.auth();
    let valid = event("a.b", "would-be-stored");

    let r = server.post_raw("/e", &auth, &[JSON], b"{\"events\": [".to_vec()).await;
    r.expect_error(400, "INVALID_JSON");

    for body in [json!({}), json!({"batchId": "b-1"}), json!({"events": "nope"}), json!({"events": {"0": valid}})] {
        let r = server.post_json("/e", &auth, &body).await;
        r.expect_error(400, "INVALID_BATCH");
    }

    let r = server.post_raw("/e", &auth, &[JSON, GZIP], b"this is not gzip at all".to_vec()).await;
    r.expect_error(400, "UNSUPPORTED_ENCODING");
    // A gzip stream cut in half is broken too.
    let whole = gzip(&body_of(std::slice::from_ref(&valid)));
    let r = server.post_raw("/e", &auth, &[JSON, GZIP], whole[..whole.len() / 2].to_vec()).await;
    r.expect_error(400, "UNSUPPORTED_ENCODING");

    assert_nothing_but_marker(&server, &auth).await;
}

#[tokio::test]
async fn oversized_requests_are_refused_and_write_nothing() {
    let (server, key) = server_and_key("oversized").await;
    let auth = key.auth();

    // 1001 events: over the batch limit.
    let many: Vec<Value> = (0..1001).map(|i| json!({"type": "a.b", "id": format!("many-{i}")})).collect();
    server.ingest(&auth, &many).await.expect_error(400, "INVALID_BATCH");
    // Exactly 1000 is fine (checked last, below, through the marker count).

    // A body over 1 MiB, made of events that are each valid.
    let filler = "x".repeat(8 * 1024);
    let big: Vec<Value> = (0..140).map(|i| json!({"type": "a.b", "id": format!("big-{i}"), "f": filler})).collect();
    let big_body = body_of(&big);
    assert!(big_body.len() > 1024 * 1024);
    let r = server.post_raw("/e", &auth, &[JSON], big_body.clone()).await;
    r.expect_error(413, "PAYLOAD_TOO_LARGE");
    // The same body gzipped is small on the wire but over 1 MiB once decoded.
    let r = server.post_raw("/e", &auth, &[JSON, GZIP], gzip(&big_body)).await;
    r.expect_error(413, "PAYLOAD_TOO_LARGE");

    // One event over 10 KiB among valid ones.
    let huge = json!({"type": "a.b", "id": "huge", "f": "y".repeat(11 * 1024)});
    let batch = vec![event("a.b", "small-0"), huge, event("a.b", "small-2")];
    let details = server.ingest(&auth, &batch).await.expect_error(400, "EVENT_TOO_LARGE").clone();
    assert_eq!(details["indices"], json!([1]), "{details}");

    assert_nothing_but_marker(&server, &auth).await;

    let thousand: Vec<Value> = (0..1000).map(|i| json!({"type": "a.b", "id": format!("k-{i}")})).collect();
    server.ingest_ok(&auth, &thousand).await;
    let stored = server.wait_for_events(&auth, "", 1001).await;
    assert_eq!(stored.len(), 1001, "marker + 1000 events");
}

#[tokio::test]
async fn invalid_events_report_every_failing_index_and_write_nothing() {
    let (server, key) = server_and_key("invalid").await;
    let auth = key.auth();
    let batch = vec![
        event("ok.first", "v-0"),
        json!({"ts": iso_now(), "id": "v-1"}),                      // type missing
        json!({"type": "has space", "ts": iso_now(), "id": "v-2"}), // bad characters
        json!({"type": "t".repeat(129), "ts": iso_now(), "id": "v-3"}), // too long
        json!({"type": "a.b", "ts": "yesterday", "id": "v-4"}),     // not ISO-8601
        json!({"type": "a.b", "ts": iso_at_offset(-8 * 86_400_000), "id": "v-5"}), // > 7 days old
        json!({"type": "a.b", "ts": iso_at_offset(2 * 3_600_000), "id": "v-6"}), // > 1 h ahead
        json!({"type": "a-b_c.D9", "ts": iso_now(), "id": "v-7"}),
        json!({"type": "", "ts": iso_now(), "id": "v-8"}), // empty type
    ];
    let r = server.ingest(&auth, &batch).await;
    let details = r.expect_error(400, "INVALID_EVENT");
    assert_eq!(details["indices"], json!([1, 2, 3, 4, 5, 6, 8]), "{}", r.text);
    let errors = details["errors"].as_array().unwrap_or_else(|| panic!("no details.errors: {}", r.text));
    let fields: Vec<(u64, &str)> =
        errors.iter().map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap())).collect();
    assert_eq!(
        fields,
        vec![(1, "type"), (2, "type"), (3, "type"), (4, "ts"), (5, "ts"), (6, "ts"), (8, "type")],
        "{}",
        r.text
    );
    for e in errors {
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {e}");
    }
    assert_nothing_but_marker(&server, &auth).await;
}

#[tokio::test]
async fn invalid_batch_id_is_refused_and_writes_nothing() {
    let (server, key) = server_and_key("batchid").await;
    let auth = key.auth();
    for batch_id in ["", "has space", "a/b", &"b".repeat(257)] {
        let body = json!({"events": [event("a.b", "x")], "batchId": batch_id});
        server.post_json("/e", &auth, &body).await.expect_error(400, "INVALID_BATCH_ID");
    }
    assert_nothing_but_marker(&server, &auth).await;
}

#[tokio::test]
async fn missing_malformed_and_unknown_credentials_are_refused() {
    let (server, key) = server_and_key("auth").await;
    let batch = [event("a.b", "unauthorized")];

    server.ingest(&Auth::None, &batch).await.expect_error(401, "AUTH_REQUIRED");
    for header in [format!("Basic {}", "dXNlcjpwYXNz"), key.key.clone(), format!("Token {}", key.key)] {
        server.ingest(&Auth::Header(header), &batch).await.expect_error(401, "INVALID_AUTH_FORMAT");
    }
    let unknown = format!("ns_{}_{}", key.namespace, "0".repeat(64));
    server.ingest(&Auth::Key(unknown), &batch).await.expect_error(401, "INVALID_API_KEY");
    // The right prefix with a changed secret.
    let mut tampered = key.key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    server.ingest(&Auth::Key(tampered), &batch).await.expect_error(401, "INVALID_API_KEY");
    // A wrong admin token, with and without X-Namespace.
    let wrong_admin = Auth::Admin { token: "not-the-admin-token-at-all".into(), ns: key.namespace.clone() };
    server.ingest(&wrong_admin, &batch).await.expect_error(401, "INVALID_API_KEY");
    server.ingest(&Auth::Key("not-the-admin-token-at-all".into()), &batch).await.expect_error(401, "INVALID_API_KEY");

    // Reading needs credentials too.
    server.get("/events", &Auth::None).await.expect_error(401, "AUTH_REQUIRED");

    assert_nothing_but_marker(&server, &key.auth()).await;
}

#[tokio::test]
async fn revoked_key_is_refused() {
    let (server, key) = server_and_key("revoke").await;
    server.ingest_ok(&key.auth(), &[event("a.b", "before-revoke")]).await;
    let r = server
        .send(
            server.client().delete(server.url(&format!("/admin/namespaces/{}/keys/{}", key.namespace, key.id))),
            &server.admin(),
        )
        .await;
    assert!(r.expect(200)["revokedAt"].is_string(), "{}", r.text);

    // Revocation must take effect; allow the deadline for any key cache.
    let deadline = std::time::Instant::now() + events_e2e::DEADLINE;
    let refused = loop {
        let r = server.ingest(&key.auth(), &[event("a.b", "after-revoke")]).await;
        if r.status != 200 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    refused.expect_error(401, "INVALID_API_KEY");
    server.get("/events", &key.auth()).await.expect_error(401, "INVALID_API_KEY");

    // What was stored before stays; nothing after the refusal was added by the refused call.
    let admin = server.admin_for(&key.namespace);
    let stored = server.read_all(&admin, "").await;
    assert!(stored.iter().any(|e| e["id"] == "before-revoke"), "{stored:?}");
    assert_eq!(stored.iter().filter(|e| e["id"] == "before-revoke").count(), 1);
}

#[tokio::test]
async fn a_key_never_sees_or_writes_another_namespace() {
    let server = TestServer::start().await;
    let a = server.create_key(&unique_ns("tenant-a")).await;
    let b = server.create_key(&unique_ns("tenant-b")).await;
    server.ingest_ok(&a.auth(), &[event("secret.a", "a-1"), event("secret.a", "a-2")]).await;
    server.ingest_ok(&b.auth(), &[event("public.b", "b-1")]).await;
    assert_stored_ids(&server, &a.auth(), &["a-1", "a-2"]).await;
    assert_stored_ids(&server, &b.auth(), &["b-1"]).await;

    let recent = server.get("/recent?limit=100", &b.auth()).await;
    let recent_ids: Vec<&str> =
        recent.expect(200)["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(recent_ids, vec!["b-1"], "{}", recent.text);

    // X-Namespace does not let a namespace key reach another namespace:
    // refused, or ignored (the key's own namespace).
    let b_into_a = Auth::Header(format!("Bearer {}", b.key));
    let r = server
        .send(server.client().get(server.url("/events?limit=1000")).header("X-Namespace", &a.namespace), &b_into_a)
        .await;
    if r.status == 200 {
        let ids: Vec<&str> = r.body["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec!["b-1"], "{}", r.text);
    } else {
        assert_eq!(r.status, 403, "{}", r.text);
    }
    let r = server
        .send(
            server
                .client()
                .post(server.url("/e"))
                .header("X-Namespace", &a.namespace)
                .json(&json!({"events": [event("sneaky.b", "b-sneaky")]})),
            &b_into_a,
        )
        .await;
    if r.status == 200 {
        assert_eq!(r.body["namespace"], b.namespace.as_str(), "{}", r.text);
    } else {
        assert_eq!(r.status, 403, "{}", r.text);
    }
    assert_stored_ids(&server, &a.auth(), &["a-1", "a-2"]).await;
}

#[tokio::test]
async fn admin_token_writes_to_any_namespace() {
    let server = TestServer::start().await;
    let key = server.create_key(&unique_ns("admin-write")).await;
    let r = server.ingest_ok(&server.admin_for(&key.namespace), &[event("a.b", "by-admin")]).await;
    assert_eq!(r.body["namespace"], key.namespace.as_str(), "{}", r.text);
    assert_stored_ids(&server, &key.auth(), &["by-admin"]).await;
}

/// `"requests";r=4;t=55, "events";r=995;t=55` → {"requests": (4, 55), "events": (995, 55)}.
fn parse_ratelimit(header: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for item in header.split(',') {
        let mut parts = item.trim().split(';');
        let name = parts.next().unwrap().trim().trim_matches('"').to_string();
        let (mut r, mut t) = (None, None);
        for p in parts {
            match p.trim().split_once('=') {
                Some(("r", v)) => r = Some(v.parse().unwrap_or_else(|_| panic!("bad r in {header:?}"))),
                Some(("t", v)) => t = Some(v.parse().unwrap_or_else(|_| panic!("bad t in {header:?}"))),
                _ => {}
            }
        }
        out.insert(
            name,
            (r.unwrap_or_else(|| panic!("no r in {header:?}")), t.unwrap_or_else(|| panic!("no t in {header:?}"))),
        );
    }
    out
}

#[track_caller]
fn assert_rate_headers(r: &Reply, policy: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    assert_eq!(r.header("RateLimit-Policy"), Some(policy), "RateLimit-Policy on HTTP {}: {}", r.status, r.text);
    let limit = r.header("RateLimit").unwrap_or_else(|| panic!("no RateLimit header on HTTP {}: {}", r.status, r.text));
    let parsed = parse_ratelimit(limit);
    assert_eq!(parsed.keys().collect::<Vec<_>>(), vec!["events", "requests"], "{limit}");
    for (_, t) in parsed.values() {
        assert!(*t <= 60, "t beyond the 60 s window: {limit}");
    }
    parsed
}

#[track_caller]
fn retry_after(r: &Reply, max: u64) -> u64 {
    let v = r.header("Retry-After").unwrap_or_else(|| panic!("no Retry-After on HTTP {}: {}", r.status, r.text));
    let secs: u64 = v.parse().unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {v:?}"));
    assert!((1..=max).contains(&secs), "Retry-After {secs} not in 1..={max}");
    secs
}

/// Waits while the wall clock is within 3 s of the next minute, so that a
/// short sequence of requests stays inside one rate window.
async fn avoid_minute_boundary() {
    let second = chrono::Timelike::second(&chrono::Utc::now());
    if second >= 57 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - second))).await;
    }
}

#[tokio::test]
async fn rate_limit_headers_on_every_response_then_429() {
    // Needs its own `[ingest]` limits, which an external server does not have.
    if skip_on_external("needs [ingest] requests_per_minute = 5 in the server config") {
        return;
    }
    let server = TestServer::start_with(
        ServerOptions::new().toml("[ingest]\nrequests_per_minute = 5\nevents_per_minute = 1000"),
    )
    .await;
    let ns = unique_ns("rate");
    let key = server.create_key(&ns).await;
    let policy = "\"requests\";q=5;w=60, \"events\";q=1000;w=60";

    avoid_minute_boundary().await;
    for i in 0..5u64 {
        let r = server.ingest(&key.auth(), &[event("a.b", &format!("r-{i}")), event("a.b", &format!("r-{i}b"))]).await;
        r.expect(200);
        let limits = assert_rate_headers(&r, policy);
        assert_eq!(limits["requests"].0, 4 - i, "requests remaining after request {}", i + 1);
        assert_eq!(limits["events"].0, 1000 - 2 * (i + 1), "events remaining after request {}", i + 1);
    }
    let r = server.ingest(&key.auth(), &[event("a.b", "over")]).await;
    r.expect_error(429, "RATE_LIMITED");
    retry_after(&r, 60);
    let limits = assert_rate_headers(&r, policy);
    assert_eq!(limits["requests"].0, 0);

    // The refused request stored nothing.
    assert_stored_ids(
        &server,
        &key.auth(),
        &["r-0", "r-0b", "r-1", "r-1b", "r-2", "r-2b", "r-3", "r-3b", "r-4", "r-4b"],
    )
    .await;
}

#[tokio::test]
async fn errors_after_authentication_carry_rate_limit_headers() {
    if skip_on_external("needs [ingest] requests_per_minute = 5 in the server config") {
        return;
    }
    let server = TestServer::start_with(
        ServerOptions::new().toml("[ingest]\nrequests_per_minute = 5\nevents_per_minute = 1000"),
    )
    .await;
    let key = server.create_key(&unique_ns("rate-errors")).await;
    let policy = "\"requests\";q=5;w=60, \"events\";q=1000;w=60";
    let cases: Vec<(&str, Reply)> = vec![
        ("INVALID_EVENT", server.ingest(&key.auth(), &[json!({"type": "bad type"})]).await),
        (
            "INVALID_BATCH_ID",
            server.post_json("/e", &key.auth(), &json!({"events": [event("a.b", "x")], "batchId": "a b"})).await,
        ),
        ("INVALID_BATCH", server.post_json("/e", &key.auth(), &json!({"nothing": true})).await),
        ("INVALID_JSON", server.post_raw("/e", &key.auth(), &[JSON], b"{not json".to_vec()).await),
    ];
    let mut without_headers = Vec::new();
    for (code, r) in &cases {
        r.expect_error(400, code);
        if r.header("RateLimit-Policy").is_none() || r.header("RateLimit").is_none() {
            without_headers.push(*code);
        } else {
            assert_rate_headers(r, policy);
        }
    }
    assert!(without_headers.is_empty(), "errors after authentication without RateLimit headers: {without_headers:?}");
}

#[tokio::test]
async fn other_content_types_are_refused_with_415() {
    let (server, key) = server_and_key("media").await;
    let auth = key.auth();
    let body = body_of(&[event("a.b", "wrong-type")]);
    // (`text/plain` is read as JSON, for `navigator.sendBeacon`: see publishable.rs.)
    for content_type in ["text/html", "application/xml", "multipart/form-data; boundary=x"] {
        let r = server.post_raw("/e", &auth, &[("Content-Type", content_type)], body.clone()).await;
        assert_eq!((r.status, r.code()), (415, "UNSUPPORTED_MEDIA_TYPE"), "Content-Type {content_type}: {}", r.text);
        r.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    }
    assert_nothing_but_marker(&server, &auth).await;
}

#[tokio::test]
async fn events_per_minute_limit_gives_429() {
    if skip_on_external("needs [ingest] events_per_minute = 10 in the server config") {
        return;
    }
    let server = TestServer::start_with(
        ServerOptions::new().toml("[ingest]\nrequests_per_minute = 100\nevents_per_minute = 10"),
    )
    .await;
    let key = server.create_key(&unique_ns("epm")).await;
    avoid_minute_boundary().await;
    let six: Vec<Value> = (0..6).map(|i| event("a.b", &format!("e-{i}"))).collect();
    let r = server.ingest_ok(&key.auth(), &six).await;
    assert_eq!(assert_rate_headers(&r, "\"requests\";q=100;w=60, \"events\";q=10;w=60")["events"].0, 4);
    let five: Vec<Value> = (0..5).map(|i| event("a.b", &format!("f-{i}"))).collect();
    let r = server.ingest(&key.auth(), &five).await;
    r.expect_error(429, "RATE_LIMITED");
    retry_after(&r, 60);
    let ids: Vec<String> = (0..6).map(|i| format!("e-{i}")).collect();
    assert_stored_ids(&server, &key.auth(), &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

#[tokio::test]
async fn daily_quota_gives_429_quota_exceeded() {
    if skip_on_external("needs [ingest] events_per_day = 10 in the server config") {
        return;
    }
    let server = TestServer::start_with(ServerOptions::new().toml("[ingest]\nevents_per_day = 10")).await;
    let ns = unique_ns("quota");
    let key = server.create_key(&ns).await;
    let batch =
        |prefix: &str, n: usize| -> Vec<Value> { (0..n).map(|i| event("a.b", &format!("{prefix}-{i}"))).collect() };

    server.ingest_ok(&key.auth(), &batch("q1", 6)).await;
    let r = server.ingest(&key.auth(), &batch("q2", 5)).await;
    r.expect_error(429, "QUOTA_EXCEEDED");
    retry_after(&r, 86_400);
    // The quota is the namespace's: another key of it fills the remaining 4, then is refused.
    let other = server.create_key(&ns).await;
    server.ingest_ok(&other.auth(), &batch("q3", 4)).await;
    server.ingest(&other.auth(), &batch("q4", 1)).await.expect_error(429, "QUOTA_EXCEEDED");

    let mut want: Vec<String> = (0..6).map(|i| format!("q1-{i}")).collect();
    want.extend((0..4).map(|i| format!("q3-{i}")));
    assert_stored_ids(&server, &key.auth(), &want.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

#[tokio::test]
async fn a_quota_set_during_the_day_counts_the_events_already_sent() {
    if skip_on_external("sets namespace limits and restarts the server") {
        return;
    }
    let mut server = TestServer::start().await;
    let batch =
        |prefix: &str, n: usize| -> Vec<Value> { (0..n).map(|i| event("a.b", &format!("{prefix}-{i}"))).collect() };
    let set_quota = |server: &TestServer, ns: &str, per_day: u64| {
        let path = format!("/admin/namespaces/{ns}/limits");
        server.client().put(server.url(&path)).json(&json!({ "eventsPerDay": per_day }))
    };

    // Counted in this process: 100 events without a quota, then a quota of 50.
    let ns = unique_ns("quota-late");
    let key = server.create_key(&ns).await;
    server.ingest_ok(&key.auth(), &batch("before", 100)).await;
    server.send(set_quota(&server, &ns, 50), &server.admin()).await.expect(200);
    let r = server.ingest(&key.auth(), &batch("after", 1)).await;
    let details = r.expect_error(429, "QUOTA_EXCEEDED");
    assert_eq!((details["used"].as_u64(), details["limit"].as_u64()), (Some(100), Some(50)), "{}", r.text);

    // Counted in the namespace's quota object: the count outlives the process.
    let ns = unique_ns("quota-late-restart");
    let key = server.create_key(&ns).await;
    server.ingest_ok(&key.auth(), &batch("before", 60)).await;
    tokio::time::sleep(Duration::from_millis(3 * LIMIT_MERGE_INTERVAL_MS)).await;
    server.restart().await;
    server.send(set_quota(&server, &ns, 50), &server.admin()).await.expect(200);
    server.ingest(&key.auth(), &batch("after", 1)).await.expect_error(429, "QUOTA_EXCEEDED");
}

#[tokio::test]
async fn replayed_batch_id_is_deduplicated() {
    let (server, key) = server_and_key("replay").await;
    // No client ids: only the batchId can make the replay idempotent.
    let body = json!({
        "events": [{"type": "pay.sent", "ts": iso_now(), "n": 1}, {"type": "pay.sent", "ts": iso_now(), "n": 2}],
        "batchId": "batch-0001"
    });
    let first = server.post_json("/e", &key.auth(), &body).await;
    first.expect(200);
    assert_eq!(first.body["received"], 2, "{}", first.text);
    assert_ne!(first.body["deduplicated"], true, "{}", first.text);
    let second = server.post_json("/e", &key.auth(), &body).await;
    assert_eq!(
        second.body,
        json!({"ok": true, "received": 2, "deduplicated": true, "namespace": key.namespace}),
        "{}",
        second.text
    );
    assert_eq!(second.status, 200);

    let stored = server.wait_for_events(&key.auth(), "", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored_later = server.read_all(&key.auth(), "").await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored_later.len(), 2, "{stored_later:?}");
    let mut ns: Vec<i64> = stored_later.iter().map(|e| e["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, vec![1, 2]);
}

#[tokio::test]
async fn client_ids_are_stored_once_when_sent_twice() {
    let (server, key) = server_and_key("ids").await;
    let batch = vec![event("a.b", "dup-1"), event("a.b", "dup-2")];
    server.ingest_ok(&key.auth(), &batch).await;
    server.ingest_ok(&key.auth(), &batch).await;
    // And once more in a later batch together with a new one.
    server.ingest_ok(&key.auth(), &[event("a.b", "dup-1"), event("a.b", "new-3")]).await;
    server.wait_for_events(&key.auth(), "", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_stored_ids(&server, &key.auth(), &["dup-1", "dup-2", "new-3"]).await;
}

#[tokio::test]
async fn ndjson_and_gzip_bodies_are_accepted() {
    let (server, key) = server_and_key("encodings").await;
    let auth = key.auth();
    let ndjson = |ids: &[&str]| -> Vec<u8> {
        let mut out = String::new();
        for id in ids {
            out.push_str(&event("enc.test", id).to_string());
            out.push('\n');
        }
        out.into_bytes()
    };
    let check = |r: Reply, n: usize| {
        assert_eq!(
            r.body,
            json!({"ok": true, "received": n, "namespace": key.namespace}),
            "HTTP {}: {}",
            r.status,
            r.text
        );
    };
    check(server.post_raw("/e", &auth, &[NDJSON], ndjson(&["nd-1", "nd-2", "nd-3"])).await, 3);
    check(server.post_raw("/e", &auth, &[NDJSON, GZIP], gzip(&ndjson(&["ndgz-1", "ndgz-2"]))).await, 2);
    let json_body = body_of(&[event("enc.test", "jsgz-1"), event("enc.test", "jsgz-2")]);
    check(server.post_raw("/e", &auth, &[JSON, GZIP], gzip(&json_body)).await, 2);
    // NDJSON with a charset parameter and no trailing newline.
    let mut last = ndjson(&["nd-last"]);
    last.pop();
    check(server.post_raw("/e", &auth, &[("Content-Type", "application/x-ndjson; charset=utf-8")], last).await, 1);
    // An invalid line in NDJSON is refused with its index, like a JSON batch.
    let mut bad = ndjson(&["nd-bad-0"]);
    bad.extend_from_slice(b"{\"ts\": \"2020-01-01T00:00:00Z\"}\n");
    let r = server.post_raw("/e", &auth, &[NDJSON], bad).await;
    assert_eq!(r.expect_error(400, "INVALID_EVENT")["indices"], json!([1]), "{}", r.text);

    assert_stored_ids(&server, &auth, &["nd-1", "nd-2", "nd-3", "ndgz-1", "ndgz-2", "jsgz-1", "jsgz-2", "nd-last"])
        .await;
}

#[tokio::test]
async fn ingest_alias_is_deprecated_but_works() {
    let (server, key) = server_and_key("alias").await;
    let r = server.post_json("/ingest", &key.auth(), &json!({"events": [event("a.b", "via-alias")]})).await;
    assert_eq!(r.body, json!({"ok": true, "received": 1, "namespace": key.namespace}), "{}", r.text);
    assert_eq!(r.header("Deprecation"), Some("true"));
    assert_eq!(r.header("Link"), Some("</e>; rel=\"successor-version\""));
    // Errors on the alias are the same as on /e.
    server.post_json("/ingest", &Auth::None, &json!({"events": []})).await.expect_error(401, "AUTH_REQUIRED");
    assert_stored_ids(&server, &key.auth(), &["via-alias"]).await;
}

#[tokio::test]
async fn dev_mode_allows_unauthenticated_ingest_into_default() {
    if skip_on_external("needs `events serve --dev`") {
        return;
    }
    let server = TestServer::start_with(ServerOptions::new().arg("--dev")).await;
    let r = server.ingest(&Auth::None, &[event("dev.hello", "dev-1")]).await;
    assert_eq!(r.body, json!({"ok": true, "received": 1, "namespace": "default"}), "HTTP {}: {}", r.status, r.text);
    assert_stored_ids(&server, &server.admin_for("default"), &["dev-1"]).await;
}

#[tokio::test]
async fn without_dev_mode_unauthenticated_ingest_is_refused() {
    if skip_on_external("checks the default (non --dev) local configuration") {
        return;
    }
    let server = TestServer::start().await;
    server.ingest(&Auth::None, &[event("dev.hello", "dev-1")]).await.expect_error(401, "AUTH_REQUIRED");
    let stored = server.read_all(&server.admin_for("default"), "").await;
    assert!(stored.is_empty(), "{stored:?}");
}

/// How often the server merges in-process limit counts into the limiter
/// objects (`events_api::limits::SYNC_INTERVAL_MS`).
const LIMIT_MERGE_INTERVAL_MS: u64 = 1_000;

/// Sends `requests` one-event batches at once, each on its own task (and so
/// its own connection); answers (accepted, refused with `code`).
async fn burst(server: &TestServer, auth: &Auth, requests: usize, code: &str) -> (usize, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests {
        let (client, url, auth) = (server.client().clone(), server.url("/e"), auth.clone());
        let body = json!({"events": [event("a.b", &format!("burst-{i}-{}", unique_ns("id")))]});
        tasks.spawn(async move {
            let r = auth.apply(client.post(url)).json(&body).send().await.expect("request");
            let status = r.status().as_u16();
            let reply: Value = r.json().await.unwrap_or(Value::Null);
            (status, reply["code"].as_str().unwrap_or_default().to_string())
        });
    }
    let (mut accepted, mut refused) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            (200, _) => accepted += 1,
            (429, c) if c == code => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (accepted, refused)
}

#[tokio::test]
async fn rate_limits_are_exact_under_concurrent_connections() {
    if skip_on_external("needs [ingest] requests_per_minute = 20 in the server config") {
        return;
    }
    let server = TestServer::start_with(
        ServerOptions::new().toml("[ingest]\nrequests_per_minute = 20\nevents_per_minute = 100000"),
    )
    .await;
    let key = server.create_key(&unique_ns("overshoot")).await;
    avoid_minute_boundary().await;
    // One process counts in memory: the documented overshoot within one process is zero.
    let (accepted, refused) = burst(&server, &key.auth(), 80, "RATE_LIMITED").await;
    assert_eq!((accepted, refused), (20, 60));
}

#[tokio::test]
async fn a_daily_quota_is_exact_under_concurrent_connections_and_survives_a_crash() {
    if skip_on_external("needs [ingest] events_per_day = 50 and a restart") {
        return;
    }
    let mut server = TestServer::start_with(
        ServerOptions::new()
            .toml("[ingest]\nrequests_per_minute = 100000\nevents_per_minute = 100000\nevents_per_day = 50"),
    )
    .await;
    let ns = unique_ns("quota-burst");
    let key = server.create_key(&ns).await;
    let (accepted, refused) = burst(&server, &key.auth(), 120, "QUOTA_EXCEEDED").await;
    assert_eq!((accepted, refused), (50, 70));
    // Counts reach the quota object within one merge interval; then a crash
    // (SIGKILL, no graceful merge) does not give the quota back.
    tokio::time::sleep(Duration::from_millis(3 * LIMIT_MERGE_INTERVAL_MS)).await;
    server.restart().await;
    server.ingest(&key.auth(), &[event("a.b", "after-crash")]).await.expect_error(429, "QUOTA_EXCEEDED");
}

#[tokio::test]
async fn a_batch_id_replayed_at_once_across_shards_and_after_a_crash_is_stored_once() {
    if skip_on_external("needs [shards] min = 4 and a restart") {
        return;
    }
    let mut server = TestServer::start_with(ServerOptions::new().toml("[shards]\nmin = 4")).await;
    let key = server.create_key(&unique_ns("replay-shards")).await;
    let body = json!({
        "events": [{"type": "pay.sent", "n": 1}, {"type": "pay.sent", "n": 2}],
        "batchId": "batch-across-shards"
    });
    // Sent 16 times at once over a namespace of four shards: every copy goes
    // to the shard its batchId names, whose writer stores one.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, auth, body) = (server.client().clone(), server.url("/e"), key.auth(), body.clone());
        tasks.spawn(async move {
            let r = auth.apply(client.post(url)).json(&body).send().await.expect("request");
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        });
    }
    let mut fresh = 0;
    while let Some(done) = tasks.join_next().await {
        let (status, reply) = done.expect("task");
        assert_eq!(status, 200, "{reply}");
        fresh += usize::from(reply["deduplicated"] != true);
    }
    assert_eq!(fresh, 1, "exactly one copy is stored fresh");
    // A replay after a crash is still recognised.
    server.restart().await;
    let again = server.post_json("/e", &key.auth(), &body).await;
    assert_eq!(again.body["deduplicated"], true, "{}", again.text);
    let stored = server.wait_for_events(&key.auth(), "", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(server.read_all(&key.auth(), "").await.len(), 2);
}
