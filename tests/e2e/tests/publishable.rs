//! Publishable keys (`pk_<ns>_<secret>`): write-only keys safe to embed in a
//! web page. They may only `POST /e`, optionally from listed origins, with
//! their own rate limits; `text/plain` bodies (what `navigator.sendBeacon`
//! sends) and the `key` query parameter serve beacons; CORS lets browsers
//! call the API. Runs against both hosts.

use std::time::{Duration, Instant};

use events_e2e::reqwest::Method;
use events_e2e::{Auth, DEADLINE, Reply, TestServer, event, expected_host, unique_ns};
use serde_json::{Value, json};

/// A created publishable key: its id and the full key.
struct Pk {
    id: String,
    key: String,
    ns: String,
}

impl Pk {
    fn auth(&self) -> Auth {
        Auth::Key(self.key.clone())
    }
}

async fn create_pk(server: &TestServer, ns: &str, body: Value) -> Pk {
    let r = server.post_json(&format!("/admin/namespaces/{ns}/keys"), &server.admin(), &body).await;
    let created = r.expect(201).clone();
    let key = created["key"].as_str().unwrap_or_else(|| panic!("no key: {}", r.text)).to_string();
    Pk { id: created["id"].as_str().unwrap().to_string(), key, ns: ns.to_string() }
}

/// `POST /e` with a JSON body, from `origin` if given.
async fn ingest_from(server: &TestServer, auth: &Auth, origin: Option<&str>, events: &[Value]) -> Reply {
    let mut rb = server.client().post(server.url("/e")).json(&json!({ "events": events }));
    if let Some(o) = origin {
        rb = rb.header("Origin", o);
    }
    server.send(rb, auth).await
}

/// What `navigator.sendBeacon(url, JSON.stringify(batch))` sends: a
/// `text/plain;charset=UTF-8` body, the key in the URL, no `Authorization`.
async fn beacon(server: &TestServer, path: &str, origin: Option<&str>, body: &Value) -> Reply {
    let mut rb = server
        .client()
        .post(server.url(path))
        .header("Content-Type", "text/plain;charset=UTF-8")
        .body(body.to_string());
    if let Some(o) = origin {
        rb = rb.header("Origin", o);
    }
    server.send(rb, &Auth::None).await
}

#[tokio::test]
async fn a_publishable_key_is_created_shown_once_and_listed_with_its_kind_and_origins() {
    let server = TestServer::start().await;
    let ns = unique_ns("pk-admin");
    let r = server
        .post_json(
            &format!("/admin/namespaces/{ns}/keys"),
            &server.admin(),
            &json!({"name": "web", "kind": "publishable", "allowedOrigins": ["https://Shop.Example.com/"],
                    "rateLimit": {"requestsPerMinute": 100}}),
        )
        .await;
    let created = r.expect(201).clone();
    let key = created["key"].as_str().unwrap();
    let secret = key.strip_prefix(&format!("pk_{ns}_")).unwrap_or_else(|| panic!("{key:?} is not pk_{ns}_<hex>"));
    assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret:?}");
    assert_eq!(created["kind"], "publishable", "{}", r.text);
    assert_eq!(created["allowedOrigins"], json!(["https://shop.example.com"]), "origins are normalized");
    assert_eq!(created["rateLimit"], json!({"requestsPerMinute": 100, "eventsPerMinute": 6000}), "{}", r.text);

    let secret_key = server.create_key(&ns).await;
    assert_eq!(secret_key.body["kind"], "secret");
    assert!(secret_key.body.get("allowedOrigins").is_none(), "{}", secret_key.body);

    let r = server.get(&format!("/admin/namespaces/{ns}/keys"), &server.admin()).await;
    let keys = r.expect(200)["keys"].as_array().unwrap().clone();
    let listed = keys.iter().find(|k| k["id"] == created["id"]).unwrap_or_else(|| panic!("not listed: {}", r.text));
    assert_eq!(listed["kind"], "publishable");
    assert_eq!(listed["allowedOrigins"], json!(["https://shop.example.com"]));
    assert_eq!(listed["name"], "web");
    assert!(!r.text.contains(key), "a listing never shows a key: {}", r.text);

    // Bad creations are refused, and create nothing.
    let path = format!("/admin/namespaces/{ns}/keys");
    for (body, code) in [
        (json!({"kind": "publishable", "allowedOrigins": ["not an origin"]}), "INVALID_REQUEST"),
        (json!({"kind": "publishable", "allowedOrigins": ["https://a.example/path"]}), "INVALID_REQUEST"),
        (json!({"kind": "publishable", "rateLimit": {"requestsPerMinute": 0}}), "INVALID_REQUEST"),
        (json!({"allowedOrigins": ["https://a.example"]}), "INVALID_REQUEST"),
        (json!({"kind": "publishable", "allowedOrigin": ["https://a.example"]}), "INVALID_JSON"),
        (json!({"kind": "root"}), "INVALID_JSON"),
    ] {
        server.post_json(&path, &server.admin(), &body).await.expect_error(400, code);
    }
    let r = server.get(&path, &server.admin()).await;
    assert_eq!(r.expect(200)["keys"].as_array().unwrap().len(), 2, "{}", r.text);
}

#[tokio::test]
async fn a_publishable_key_sends_events_that_are_stored() {
    let server = TestServer::start().await;
    let ns = unique_ns("pk-send");
    let pk = create_pk(&server, &ns, json!({"kind": "publishable"})).await;
    let r = server.ingest_ok(&pk.auth(), &[event("page.viewed", "pk-1"), event("page.viewed", "pk-2")]).await;
    assert_eq!(r.body["namespace"], ns.as_str());
    // `X-Namespace` does not move it to another namespace.
    let rb = server.client().post(server.url("/e")).header("X-Namespace", "default").json(&json!({"events": [
        event("page.viewed", "pk-3")
    ]}));
    assert_eq!(server.send(rb, &pk.auth()).await.expect(200)["namespace"], ns.as_str());
    let reader = server.admin_for(&ns);
    let stored = server.wait_for_events(&reader, "type=page.viewed", 3).await;
    let mut ids: Vec<&str> = stored.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["pk-1", "pk-2", "pk-3"]);
}

/// Routes that take no bearer credentials: a key sent to them is ignored.
fn takes_no_credentials(method: &str, template: &str) -> bool {
    matches!((method, template), ("GET", "/health" | "/" | "/metrics" | "/openapi.json"))
        || template.starts_with("/webhooks")
}

#[tokio::test]
async fn a_publishable_key_is_forbidden_on_every_route_but_post_e() {
    let server = TestServer::start().await;
    let ns = unique_ns("pk-routes");
    let pk = create_pk(&server, &ns, json!({"kind": "publishable"})).await;
    // Something to read, so that a read that wrongly succeeded would show it.
    server.ingest_ok(&pk.auth(), &[event("secret.thing", "pk-r1")]).await;
    let doc: Value = server.get("/openapi.json", &Auth::None).await.expect(200).clone();
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template
            .split('/')
            .map(|s| match s {
                "{ns}" | "{namespace}" => ns.as_str(),
                s if s.starts_with('{') => "1",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            if (method == "POST" && template == "/e") || takes_no_credentials(&method, template) {
                continue;
            }
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let mut rb = server.client().request(m, server.url(&path));
            if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                rb = rb.json(&json!({}));
            }
            let r = server.send(rb, &pk.auth()).await;
            let unrouted = r.status == 404 && (method == "HEAD" || r.text.contains("no route for"));
            if expected_host() == "cloudflare" && unrouted {
                continue; // a native-only route (hosts.rs checks which)
            }
            assert_eq!(r.status, 403, "{method} {path} with a publishable key: {}", r.text);
            if method != "HEAD" && !template.starts_with("/iceberg/") {
                r.expect_error(403, "FORBIDDEN");
                assert!(
                    r.text.contains("POST /e"),
                    "{method} {path}: the message says what the key may do: {}",
                    r.text
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} routes checked");
    // Nothing was read or changed: in particular the keys are as they were.
    let r = server.get(&format!("/admin/namespaces/{ns}/keys"), &server.admin()).await;
    let keys = r.expect(200)["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1, "{}", r.text);
    assert!(keys[0]["revokedAt"].is_null(), "{}", r.text);
    // The deprecated alias of `POST /e` does not take it either.
    let r = server.post_json("/ingest", &pk.auth(), &json!({"events": [event("a.b", "pk-alias")]})).await;
    r.expect_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn allowed_origins_admit_listed_origins_only() {
    let server = TestServer::start().await;
    let ns = unique_ns("pk-origin");
    let pk = create_pk(
        &server,
        &ns,
        json!({"kind": "publishable", "allowedOrigins": ["https://shop.example.com", "https://*.example.org"]}),
    )
    .await;
    let auth = pk.auth();
    ingest_from(&server, &auth, Some("https://shop.example.com"), &[event("a.b", "o-1")]).await.expect(200);
    ingest_from(&server, &auth, Some("https://www.example.org"), &[event("a.b", "o-2")]).await.expect(200);
    for origin in ["https://evil.example", "http://shop.example.com", "https://shop.example.com.evil.example", "null"] {
        let r = ingest_from(&server, &auth, Some(origin), &[event("a.b", "o-refused")]).await;
        let details = r.expect_error(403, "ORIGIN_NOT_ALLOWED");
        assert_eq!(details["origin"], origin, "{}", r.text);
    }
    // No Origin at all (a script outside a browser) is refused too.
    ingest_from(&server, &auth, None, &[event("a.b", "o-none")]).await.expect_error(403, "ORIGIN_NOT_ALLOWED");
    // A beacon from a listed origin passes; from another, it is refused.
    let batch = json!({"events": [event("a.b", "o-3")]});
    let path = format!("/e?key={}", pk.key);
    beacon(&server, &path, Some("https://shop.example.com"), &batch).await.expect(200);
    beacon(&server, &path, Some("https://evil.example"), &batch).await.expect_error(403, "ORIGIN_NOT_ALLOWED");

    let stored = server.wait_for_events(&server.admin_for(&ns), "type=a.b", 3).await;
    let mut ids: Vec<&str> = stored.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["o-1", "o-2", "o-3"], "refused requests stored nothing");
    assert_eq!(pk.ns, ns);
}

#[tokio::test]
async fn a_send_beacon_request_is_accepted_with_the_key_in_the_query() {
    let server = TestServer::start().await;
    let ns = unique_ns("pk-beacon");
    let pk = create_pk(&server, &ns, json!({"kind": "publishable"})).await;
    let batch = json!({"events": [event("page.left", "b-1"), event("page.left", "b-2")], "batchId": "beacon-1"});
    let r = beacon(&server, &format!("/e?key={}", pk.key), Some("https://any.example"), &batch).await;
    assert_eq!(r.expect(200)["received"], 2, "{}", r.text);
    // A replayed beacon (same batchId) is not stored twice.
    let r = beacon(&server, &format!("/e?key={}", pk.key), None, &batch).await;
    assert_eq!(r.expect(200)["deduplicated"], true, "{}", r.text);
    // text/plain with the key in the header, as fetch(..., {keepalive: true}) may send it.
    let r = server
        .post_raw(
            "/e",
            &pk.auth(),
            &[("Content-Type", "text/plain")],
            json!({"events": [event("page.left", "b-3")]}).to_string().into_bytes(),
        )
        .await;
    r.expect(200);
    // Bad JSON in a text/plain body: the same error as in a JSON one.
    let r = beacon(&server, &format!("/e?key={}", pk.key), None, &json!("x")).await;
    r.expect_error(400, "INVALID_BATCH");
    let r = server.post_raw("/e", &pk.auth(), &[("Content-Type", "text/plain")], b"{not json".to_vec()).await;
    r.expect_error(400, "INVALID_JSON");

    let stored = server.wait_for_events(&server.admin_for(&ns), "type=page.left", 3).await;
    assert_eq!(stored.len(), 3);

    // The key parameter takes publishable keys only: never a secret key or
    // the admin token (nothing is stored, whatever the key's validity).
    let secret = server.create_key(&ns).await;
    let batch = json!({"events": [event("page.left", "b-never")]});
    beacon(&server, &format!("/e?key={}", secret.key), None, &batch).await.expect_error(401, "INVALID_AUTH_FORMAT");
    let admin = events_e2e::url_encode(server.admin_token());
    beacon(&server, &format!("/e?key={admin}"), None, &batch).await.expect_error(401, "INVALID_AUTH_FORMAT");
    // Nor on another route.
    let r = server.get(&format!("/events?key={}", pk.key), &Auth::None).await;
    r.expect_error(401, "AUTH_REQUIRED");
    // A publishable key's secret under the secret-key prefix is no key.
    let disguised = pk.key.replacen("pk_", "ns_", 1);
    server.get("/events", &Auth::Key(disguised.clone())).await.expect_error(401, "INVALID_API_KEY");
    server.ingest(&Auth::Key(disguised), &[event("page.left", "b-never")]).await.expect_error(401, "INVALID_API_KEY");
    let r = server.read_all(&server.admin_for(&ns), "type=page.left").await;
    assert_eq!(r.len(), 3, "refused requests stored nothing");
}

#[tokio::test]
async fn a_revoked_publishable_key_is_refused() {
    let server = TestServer::start().await;
    let ns = unique_ns("pk-revoke");
    let pk = create_pk(&server, &ns, json!({"kind": "publishable"})).await;
    server.ingest_ok(&pk.auth(), &[event("a.b", "rv-1")]).await;
    let r = server
        .send(server.client().delete(server.url(&format!("/admin/namespaces/{ns}/keys/{}", pk.id))), &server.admin())
        .await;
    let revoked = r.expect(200);
    assert!(revoked["revokedAt"].is_string() && revoked["kind"] == "publishable", "{}", r.text);
    // As for secret keys, allow the deadline for a key cache elsewhere.
    let deadline = Instant::now() + DEADLINE;
    let refused = loop {
        let r = server.ingest(&pk.auth(), &[event("a.b", "rv-2")]).await;
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    refused.expect_error(401, "INVALID_API_KEY");
    let batch = json!({"events": [event("a.b", "rv-3")]});
    beacon(&server, &format!("/e?key={}", pk.key), None, &batch).await.expect_error(401, "INVALID_API_KEY");
}

#[tokio::test]
async fn a_publishable_key_has_its_own_rate_limit() {
    let server = TestServer::start().await;
    let ns = unique_ns("pk-rate");
    let pk = create_pk(&server, &ns, json!({"kind": "publishable", "rateLimit": {"requestsPerMinute": 3}})).await;
    let other = create_pk(&server, &ns, json!({"kind": "publishable", "rateLimit": {"requestsPerMinute": 3}})).await;
    for i in 0..3 {
        let r = server.ingest_ok(&pk.auth(), &[event("a.b", &format!("rl-{i}"))]).await;
        let policy = r.header("ratelimit-policy").unwrap_or_else(|| panic!("no RateLimit-Policy: {:?}", r.headers));
        assert!(policy.contains("\"requests\";q=3;w=60"), "{policy}");
    }
    let r = server.ingest(&pk.auth(), &[event("a.b", "rl-over")]).await;
    let details = r.expect_error(429, "RATE_LIMITED");
    assert_eq!(details["requestsPerMinute"], 3, "{}", r.text);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Per key: another key of the namespace is not limited by this one's use,
    // and the namespace's secret keys keep their own (larger) limits.
    server.ingest_ok(&other.auth(), &[event("a.b", "rl-other")]).await;
    let secret = server.create_key(&ns).await;
    let r = server.ingest_ok(&secret.auth(), &[event("a.b", "rl-secret")]).await;
    assert!(!r.header("ratelimit-policy").unwrap_or_default().contains("q=3;"), "{:?}", r.headers);

    // The default limits of a publishable key are its own, documented ones.
    let default = create_pk(&server, &ns, json!({"kind": "publishable"})).await;
    let r = server.ingest_ok(&default.auth(), &[event("a.b", "rl-default")]).await;
    let policy = r.header("ratelimit-policy").unwrap();
    assert_eq!(policy, "\"requests\";q=600;w=60, \"events\";q=6000;w=60");
}

#[tokio::test]
async fn cors_preflights_allow_what_browsers_send_and_are_cached_for_a_day() {
    let server = TestServer::start().await;
    for (path, method, headers) in [
        ("/e", "POST", "content-type,content-encoding,idempotency-key"),
        ("/subscriptions/x", "PATCH", "authorization,content-type"),
        ("/admin/namespaces/acme/keys/x", "DELETE", "authorization"),
        ("/events/stream", "GET", "authorization,last-event-id"),
    ] {
        let rb = server
            .client()
            .request(Method::OPTIONS, server.url(path))
            .header("Origin", "https://shop.example.com")
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", headers);
        let r = server.send(rb, &Auth::None).await;
        assert!((200..300).contains(&r.status), "preflight of {method} {path}: {} {}", r.status, r.text);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        assert_eq!(r.header("access-control-max-age"), Some("86400"), "{path}");
        let methods = r.header("access-control-allow-methods").unwrap_or_default().to_ascii_uppercase();
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert!(methods.split(',').any(|x| x.trim() == m), "{m} not in {methods}");
        }
        let allowed = r.header("access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
        for h in
            ["authorization", "content-type", "content-encoding", "idempotency-key", "last-event-id", "x-namespace"]
        {
            assert!(allowed.split(',').any(|x| x.trim() == h), "{h} not in {allowed}");
        }
    }
    // Answers let a page read the headers a client needs.
    let pk = create_pk(&server, &unique_ns("pk-cors"), json!({"kind": "publishable"})).await;
    let r = ingest_from(&server, &pk.auth(), Some("https://shop.example.com"), &[event("a.b", "c-1")]).await;
    r.expect(200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let exposed = r.header("access-control-expose-headers").unwrap_or_default().to_ascii_lowercase();
    for h in ["retry-after", "ratelimit", "ratelimit-policy"] {
        assert!(exposed.split(',').any(|x| x.trim() == h), "{h} not in {exposed}");
    }
}
