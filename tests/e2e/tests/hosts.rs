//! Host parity: the native server and the Worker answer the same API. The
//! differences left between them are listed in docs/cloudflare.md; those a
//! client can observe are asserted here, on both hosts (`scripts/worker.sh test` runs this suite against the
//! Worker with `EVENTS_TEST_HOST=cloudflare`).

use events_e2e::serde_json::Value;
use events_e2e::{Auth, TestServer, expected_host};

/// The documented routes the Worker does not serve (docs/cloudflare.md,
/// "What does not run in a Worker"): method and path template.
const NATIVE_ONLY: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("POST", "/query"),
    ("GET", "/tables"),
    ("POST", "/tables/maintain"),
    ("GET", "/tables/{table}/changes"),
    ("GET", "/tables/{table}/snapshots"),
    ("GET", "/iceberg/v1/config"),
    ("GET", "/iceberg/v1/namespaces"),
    ("POST", "/iceberg/v1/namespaces"),
    ("DELETE", "/iceberg/v1/namespaces/{ns}"),
    ("GET", "/iceberg/v1/namespaces/{ns}"),
    ("HEAD", "/iceberg/v1/namespaces/{ns}"),
    ("POST", "/iceberg/v1/namespaces/{ns}/properties"),
    ("GET", "/iceberg/v1/namespaces/{ns}/tables"),
    ("POST", "/iceberg/v1/namespaces/{ns}/tables"),
    ("DELETE", "/iceberg/v1/namespaces/{ns}/tables/{table}"),
    ("GET", "/iceberg/v1/namespaces/{ns}/tables/{table}"),
    ("HEAD", "/iceberg/v1/namespaces/{ns}/tables/{table}"),
    ("POST", "/iceberg/v1/namespaces/{ns}/tables/{table}"),
];

#[tokio::test]
async fn health_has_one_shape_that_names_the_host() {
    let server = TestServer::start().await;
    let doc = server.get("/openapi.json", &Auth::None).await;
    let version = doc.expect(200)["info"]["version"].clone();
    for path in ["/health", "/"] {
        let r = server.get(path, &Auth::None).await;
        let v = r.expect(200);
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["env", "host", "service", "status", "ts", "version"], "{path}: {}", r.text);
        assert_eq!(v["status"], "ok");
        assert_eq!(v["service"], "events.do");
        assert_eq!(v["host"], expected_host().as_str(), "{path}: {}", r.text);
        assert_eq!(v["version"], version, "the version of /health and of the OpenAPI document");
        assert!(v["env"].as_str().is_some_and(|e| !e.is_empty()), "{}", r.text);
        let ts = v["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000Z".len(), "{ts}");
    }
}

#[tokio::test]
async fn both_hosts_serve_the_openapi_document() {
    let server = TestServer::start().await;
    let r = server.get("/openapi.json", &Auth::None).await;
    assert_eq!(r.header("content-type"), Some("application/json"), "{:?}", r.headers);
    let doc = r.expect(200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "events.do");
    for path in ["/health", "/admin/namespaces/{ns}/limits", "/subscriptions/list", "/subscriptions/status/{id}"] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
}

/// Whether the host has no route for `method path`: the routing fallback's
/// `404 no route for ...` (for `HEAD`, which has no body: any 404, as every
/// routed `HEAD` refuses an unauthenticated caller first).
async fn unrouted(server: &TestServer, method: &str, path: &str) -> bool {
    let m = events_e2e::reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let r = server.send(server.client().request(m, server.url(path)), &Auth::None).await;
    if method == "HEAD" {
        return r.status == 404;
    }
    r.status == 404 && r.body["error"].as_str().is_some_and(|e| e.starts_with("no route for"))
}

#[tokio::test]
async fn the_routes_missing_on_the_worker_are_exactly_the_documented_ones() {
    let server = TestServer::start().await;
    let doc: Value = server.get("/openapi.json", &Auth::None).await.expect(200).clone();
    let mut missing = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        // Placeholders: no credentials are sent, so a routed request is
        // refused (401, 400) before it touches anything.
        let path = template.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/");
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            if unrouted(&server, &method, &path).await {
                missing.push((method, template.clone()));
            }
        }
    }
    missing.sort();
    let mut expected: Vec<(String, String)> = match expected_host().as_str() {
        "cloudflare" => NATIVE_ONLY.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect(),
        _ => Vec::new(),
    };
    expected.sort();
    assert_eq!(missing, expected, "documented routes this host does not serve");
}

#[tokio::test]
async fn a_repeated_query_parameter_is_refused_natively_and_the_first_one_read_on_the_worker() {
    let server = TestServer::start().await;
    let key = server.create_key(&events_e2e::unique_ns("repeat")).await;
    let r = server.get("/events?limit=1&limit=2", &key.auth()).await;
    match expected_host().as_str() {
        "cloudflare" => assert_eq!(r.expect(200)["events"], events_e2e::serde_json::json!([])),
        _ => {
            r.expect_error(400, "INVALID_QUERY");
        }
    }
}

#[tokio::test]
async fn a_json_body_needs_its_content_type_natively_only() {
    let server = TestServer::start().await;
    let key = server.create_key(&events_e2e::unique_ns("ctype")).await;
    let rb = server
        .client()
        .post(server.url("/subscriptions/unsubscribe"))
        .header("content-type", "text/plain")
        .body(r#"{"subscriptionId": "sub_NOSUCH"}"#);
    let r = server.send(rb, &key.auth()).await;
    match expected_host().as_str() {
        // The Worker parses the body whatever its type: the id is unknown.
        "cloudflare" => {
            r.expect_error(404, "NOT_FOUND");
        }
        _ => {
            r.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
        }
    }
}
