//! Admin routes: API key lifecycle, who may call them, shards.

use events_e2e::{Auth, TestServer, event, unique_ns};
use serde_json::{Value, json};

fn keys_path(ns: &str) -> String {
    format!("/admin/namespaces/{ns}/keys")
}

fn is_iso(v: &Value) -> bool {
    v.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn key_lifecycle_create_list_revoke() {
    let server = TestServer::start().await;
    let ns = unique_ns("keys");
    let admin = server.admin();

    let r = server.post_json(&keys_path(&ns), &admin, &json!({"name": "ingest-prod"})).await;
    let created = r.expect(201).clone();
    let key = created["key"].as_str().unwrap_or_else(|| panic!("no key: {}", r.text)).to_string();
    let id = created["id"].as_str().unwrap_or_else(|| panic!("no id: {}", r.text)).to_string();
    let secret = key.strip_prefix(&format!("ns_{ns}_")).unwrap_or_else(|| panic!("key {key:?} is not ns_{ns}_<hex>"));
    assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "secret part {secret:?}");
    assert_eq!(created["namespace"], ns.as_str());
    assert_eq!(created["name"], "ingest-prod");
    assert!(is_iso(&created["createdAt"]), "{}", r.text);
    let prefix = created["prefix"].as_str().unwrap_or_else(|| panic!("no prefix: {}", r.text));
    assert!(key.starts_with(prefix) && prefix.len() < key.len(), "prefix {prefix:?} of {key:?}");

    // The name is optional.
    let unnamed = server.post_json(&keys_path(&ns), &admin, &json!({})).await;
    let unnamed_id = unnamed.expect(201)["id"].as_str().unwrap().to_string();
    assert_ne!(unnamed_id, id);
    // So is the body, as the OpenAPI document says: none, or null (another
    // namespace, so that the listing below stays as it is).
    let other = keys_path(&format!("{ns}-b"));
    let bodiless = server.send(server.client().post(server.url(&other)), &admin).await;
    assert_eq!(bodiless.expect(201)["name"], Value::Null);
    let null_body = server.post_json(&other, &admin, &Value::Null).await;
    assert_eq!(null_body.expect(201)["name"], Value::Null);

    // The key works.
    server.ingest_ok(&Auth::Key(key.clone()), &[event("a.b", "k-1")]).await;

    let r = server.get(&keys_path(&ns), &admin).await;
    let listed = r.expect(200)["keys"].as_array().unwrap_or_else(|| panic!("no keys array: {}", r.text)).clone();
    assert_eq!(listed.len(), 2, "{}", r.text);
    let entry = listed.iter().find(|k| k["id"] == id.as_str()).unwrap_or_else(|| panic!("{id} not listed: {}", r.text));
    assert_eq!(entry["namespace"], ns.as_str());
    assert_eq!(entry["name"], "ingest-prod");
    assert_eq!(entry["prefix"], prefix);
    assert!(is_iso(&entry["createdAt"]));
    assert!(entry.get("revokedAt").is_some_and(Value::is_null), "revokedAt must be present and null: {entry}");
    assert!(!r.text.contains(&key), "a listing must never show the secret key: {}", r.text);

    let r = server.send(server.client().delete(server.url(&format!("{}/{id}", keys_path(&ns)))), &admin).await;
    let revoked = r.expect(200);
    assert_eq!(revoked["id"], id.as_str());
    assert!(is_iso(&revoked["revokedAt"]), "{}", r.text);

    let r = server.get(&keys_path(&ns), &admin).await;
    let listed = r.expect(200)["keys"].as_array().unwrap().clone();
    let entry = listed.iter().find(|k| k["id"] == id.as_str()).expect("revoked keys stay listed");
    assert!(is_iso(&entry["revokedAt"]), "{entry}");
    let other = listed.iter().find(|k| k["id"] == unnamed_id.as_str()).expect("other key listed");
    assert!(other["revokedAt"].is_null(), "revoking one key leaves the other: {other}");
}

#[tokio::test]
async fn keys_of_one_namespace_are_not_listed_under_another() {
    let server = TestServer::start().await;
    let a = server.create_key(&unique_ns("list-a")).await;
    let b_ns = unique_ns("list-b");
    let r = server.get(&keys_path(&b_ns), &server.admin()).await;
    let keys = r.expect(200)["keys"].as_array().unwrap().clone();
    assert!(keys.iter().all(|k| k["id"] != a.id.as_str()), "{}", r.text);
}

#[tokio::test]
async fn namespace_keys_are_forbidden_on_admin_routes() {
    let server = TestServer::start().await;
    let key = server.create_key(&unique_ns("forbid")).await;
    let ns = &key.namespace;
    let auth = key.auth();
    let c = server.client();
    let requests = [
        ("POST keys", c.post(server.url(&keys_path(ns))).json(&json!({"name": "x"}))),
        ("GET keys", c.get(server.url(&keys_path(ns)))),
        ("DELETE key", c.delete(server.url(&format!("{}/{}", keys_path(ns), key.id)))),
        ("POST flush", c.post(server.url("/admin/flush")).json(&json!({}))),
        ("GET shards", c.get(server.url("/admin/shards"))),
    ];
    for (what, rb) in requests {
        let r = server.send(rb, &auth).await;
        assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{what}: {}", r.text);
        r.expect_error(403, "FORBIDDEN");
    }
    // The key was not revoked by its own forbidden DELETE.
    server.ingest_ok(&auth, &[event("a.b", "still-works")]).await;
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let server = TestServer::start().await;
    let ns = unique_ns("admin-auth");
    server.post_json(&keys_path(&ns), &Auth::None, &json!({})).await.expect_error(401, "AUTH_REQUIRED");
    server
        .post_json(&keys_path(&ns), &Auth::Key("definitely-not-the-admin-token".into()), &json!({}))
        .await
        .expect_error(401, "INVALID_API_KEY");
    server.get("/admin/shards", &Auth::None).await.expect_error(401, "AUTH_REQUIRED");
    server
        .post_json("/admin/flush", &Auth::Header("Basic YTpi".into()), &json!({}))
        .await
        .expect_error(401, "INVALID_AUTH_FORMAT");
    let r = server.get(&keys_path(&ns), &server.admin()).await;
    assert_eq!(r.expect(200)["keys"], json!([]), "no key was created by the refused calls");
}

#[tokio::test]
async fn shards_lists_namespaces_that_received_events() {
    let server = TestServer::start().await;
    let key = server.create_key(&unique_ns("shards")).await;
    server.ingest_ok(&key.auth(), &[event("a.b", "s-1")]).await;
    let r = server.get("/admin/shards", &server.admin()).await;
    let namespaces = r.expect(200)["namespaces"].as_array().unwrap_or_else(|| panic!("no namespaces: {}", r.text));
    let entry = namespaces
        .iter()
        .find(|n| n["namespace"] == key.namespace.as_str())
        .unwrap_or_else(|| panic!("{} not in {}", key.namespace, r.text));
    assert!(entry["shards"].as_u64().is_some_and(|n| n >= 1), "{entry}");
    assert!(entry.get("epoch").is_some_and(|e| !e.is_null()), "{entry}");
}

#[tokio::test]
async fn limits_outside_the_exact_integer_range_are_refused_and_not_stored() {
    let server = TestServer::start().await;
    let ns = unique_ns("limits");
    let path = format!("/admin/namespaces/{ns}/limits");
    let admin = server.admin();
    server.send(server.client().put(server.url(&path)).json(&json!({"eventsPerDay": 100})), &admin).await.expect(200);
    // Sent as raw text: 2^63 does not fit the JSON builder's integers.
    let huge = r#"{"eventsPerDay": 9223372036854775808}"#;
    let rb = server.client().put(server.url(&path)).header("content-type", "application/json").body(huge);
    server.send(rb, &admin).await.expect_error(400, "INVALID_REQUEST");
    let rb = server.client().put(server.url(&path)).json(&json!({"requestsPerMinute": 9_007_199_254_740_992_u64}));
    server.send(rb, &admin).await.expect_error(400, "INVALID_REQUEST");
    let stored = server.get(&path, &admin).await;
    assert_eq!(stored.expect(200)["eventsPerDay"], 100, "a refused update leaves the limits as they were");
}
