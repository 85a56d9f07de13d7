//! Every error keeps the envelope on the native server: malformed query
//! strings answer `400 INVALID_QUERY` in JSON, and routes authenticate before
//! they parse a query string or a body, so a caller without credentials gets
//! `401` whatever it sent. A path segment that is not UTF-8 answers
//! `400 INVALID_REQUEST` in the envelope too.
//!
//! Native only: the Worker parses query strings its own way (a repeated
//! parameter takes the first value) and still parses some bodies first.

use events_e2e::{Auth, Reply, TestServer, skip_on_external, unique_ns};
use reqwest::Method;

/// Listings whose query string is malformed, each in two ways.
fn bad_queries(ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        "/events".to_string(),
        "/recent".to_string(),
        format!("/cdc/{ns}/orders"),
        format!("/cdc/{ns}/orders/doc-1/history"),
        "/subscriptions".to_string(),
        "/subscriptions/sub-1/attempts".to_string(),
        "/subscriptions/sub-1/events/ev-1/attempts".to_string(),
        "/subscriptions/sub-1/deliveries".to_string(),
        "/subscriptions/sub-1/dead-letters".to_string(),
    ] {
        out.push(format!("{path}?limit=1&limit=2"));
        // (`/recent` clamps a limit out of range, as the original service did.)
        if path == "/events" {
            out.push(format!("{path}?limit=-1"));
        }
    }
    out
}

#[tokio::test]
async fn malformed_query_strings_answer_the_envelope() {
    if skip_on_external("the Worker reads repeated query parameters leniently") {
        return;
    }
    let server = TestServer::start().await;
    let ns = unique_ns("query");
    let auth = server.admin_for(&ns);
    for path in bad_queries(&ns) {
        let r = server.get(&path, &auth).await;
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}: {}", r.text);
        r.expect_error(400, "INVALID_QUERY");
        assert!(r.body["error"].as_str().unwrap().contains("query"), "{path}: {}", r.text);
        let r = server.get(&path, &Auth::None).await;
        assert_eq!((r.status, r.code()), (401, "AUTH_REQUIRED"), "{path} without credentials: {}", r.text);
    }
}

/// Every route that takes a body: `(method, path)`.
fn body_routes(ns: &str) -> Vec<(Method, String)> {
    vec![
        (Method::POST, "/query".into()),
        (Method::POST, "/subscriptions".into()),
        (Method::POST, "/subscriptions/subscribe".into()),
        (Method::POST, "/subscriptions/sub-1/recover".into()),
        (Method::POST, "/subscriptions/sub-1/rotate-secret".into()),
        (Method::PATCH, "/subscriptions/sub-1".into()),
        (Method::PUT, format!("/schemas/{ns}/config")),
        (Method::POST, format!("/schemas/{ns}")),
        (Method::POST, format!("/schemas/{ns}/validate")),
        (Method::POST, "/iceberg/v1/namespaces".into()),
        (Method::POST, format!("/iceberg/v1/namespaces/{ns}/properties")),
        (Method::POST, format!("/iceberg/v1/namespaces/{ns}/tables")),
        (Method::POST, format!("/iceberg/v1/namespaces/{ns}/tables/t1")),
        (Method::POST, format!("/cdc/{ns}/orders/_restore")),
        (Method::POST, "/tables/maintain".into()),
        (Method::POST, format!("/admin/namespaces/{ns}/keys")),
        (Method::PUT, format!("/admin/namespaces/{ns}/limits")),
        (Method::PUT, format!("/admin/namespaces/{ns}/webhooks/github")),
        (Method::POST, "/e".into()),
    ]
}

async fn send(server: &TestServer, method: &Method, path: &str, auth: &Auth, ct: &str, body: &str) -> Reply {
    let rb =
        server.client().request(method.clone(), server.url(path)).header("content-type", ct).body(body.to_string());
    server.send(rb, auth).await
}

#[tokio::test]
async fn routes_with_a_body_authenticate_before_parsing_it() {
    if skip_on_external("the Worker still parses some bodies before it authenticates") {
        return;
    }
    let server = TestServer::start().await;
    let ns = unique_ns("authfirst");
    let bad_key = Auth::Key(format!("ns_{ns}_{}", "0".repeat(64)));
    for (method, path) in body_routes(&ns) {
        for (ct, body) in [("application/json", "{not json"), ("application/json", "[1, 2]"), ("text/plain", "hello")] {
            let what = format!("{method} {path} ({ct}: {body})");
            let r = send(&server, &method, &path, &Auth::None, ct, body).await;
            if path.starts_with("/iceberg/") {
                // The catalog answers in the Iceberg REST ErrorModel.
                r.expect_iceberg_error(401, "NotAuthorizedException");
                let r = send(&server, &method, &path, &bad_key, ct, body).await;
                r.expect_iceberg_error(401, "NotAuthorizedException");
                continue;
            }
            assert_eq!((r.status, r.code()), (401, "AUTH_REQUIRED"), "{what}: {}", r.text);
            let r = send(&server, &method, &path, &bad_key, ct, body).await;
            assert_eq!((r.status, r.code()), (401, "INVALID_API_KEY"), "{what} with an unknown key: {}", r.text);
        }
    }
    // Authenticated, the body is still checked: the admin token reaches every route.
    for (method, path) in body_routes(&ns) {
        let r = send(&server, &method, &path, &server.admin_for(&ns), "application/json", "{not json").await;
        if path.starts_with("/iceberg/") {
            r.expect_iceberg_error(400, "BadRequestException");
            continue;
        }
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text);
        assert!(
            ["INVALID_JSON", "INVALID_REQUEST", "INVALID_BATCH"].contains(&r.code()),
            "{method} {path}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn undecodable_path_segments_answer_the_envelope() {
    if skip_on_external("the Worker decodes path segments its own way") {
        return;
    }
    let server = TestServer::start().await;
    let auth = server.admin_for(&unique_ns("path"));
    for path in [
        "/subscriptions/%FF",
        "/cdc/%FF/orders",
        "/schemas/%FF",
        "/admin/namespaces/%FF/keys",
        "/iceberg/v1/namespaces/%FF",
        "/tables/%FF/snapshots",
    ] {
        let r = server.get(path, &auth).await;
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}: {}", r.text);
        if path.starts_with("/iceberg/") {
            r.expect_iceberg_error(400, "BadRequestException");
        } else {
            r.expect_error(400, "INVALID_REQUEST");
        }
    }
}
