//! Schema registry: registration, versions, compatibility, validation at ingest (strict and warn).

use events_e2e::{Auth, TestServer, iso_now, unique_ns};
use serde_json::{Value, json};

fn order_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {
            "money": {"type": "integer", "minimum": 0},
            "email": {"type": "string", "format": "email"}
        },
        "type": "object",
        "properties": {
            "orderId": {"type": "string", "pattern": "^ord_[0-9]+$"},
            "total": {"$ref": "#/$defs/money"},
            "customer": {"type": "object", "properties": {"email": {"$ref": "#/$defs/email"}}, "required": ["email"]},
            "status": {"enum": ["new", "paid"]}
        },
        "required": ["orderId", "total"]
    })
}

async fn register(server: &TestServer, auth: &Auth, ns: &str, body: Value) -> events_e2e::Reply {
    server.post_json(&format!("/schemas/{ns}"), auth, &body).await
}

fn ev(ty: &str, fields: Value) -> Value {
    let mut e = json!({"type": ty, "ts": iso_now()});
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[tokio::test]
async fn strict_mode_refuses_the_batch_with_json_pointer_paths() {
    let server = TestServer::start().await;
    let ns = unique_ns("schema-strict");
    let key = server.create_key(&ns).await.auth();
    let r = register(&server, &key, &ns, json!({"type": "order.created", "schema": order_schema()})).await;
    let v = r.expect(201);
    assert_eq!(v["version"], 1, "{}", r.text);
    assert_eq!(v["type"], "order.created");
    assert_eq!(v["compatibility"], "BACKWARD");

    let good = ev("order.created", json!({"orderId": "ord_1", "total": 5, "customer": {"email": "a@b.example"}}));
    let bad = ev("order.created", json!({"orderId": "x", "total": -1, "customer": {"email": "not-an-email"}}));
    let other = ev("page.viewed", json!({"anything": true}));
    let r = server.ingest(&key, &[good.clone(), bad, other.clone()]).await;
    let body = r.expect_error(400, "SCHEMA_VALIDATION_ERROR");
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("{}", r.text));
    assert!(errors.iter().all(|e| e["index"] == 1 && e["type"] == "order.created"), "{}", r.text);
    let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
    for want in ["/orderId", "/total", "/customer/email"] {
        assert!(paths.contains(&want), "no error at {want}: {}", r.text);
    }
    assert!(errors.iter().all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())));
    // Nothing of the refused batch was stored.
    let page = server.read_page(&key, "type=page.viewed").await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(0), "{page}");

    // A missing required field, reported at the object's path.
    let r = server.ingest(&key, &[ev("order.created", json!({"orderId": "ord_2"}))]).await;
    let body = r.expect_error(400, "SCHEMA_VALIDATION_ERROR");
    assert_eq!(body["errors"][0]["path"], "", "{}", r.text);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("total"), "{}", r.text);

    // Valid events pass; types without a schema are not checked.
    server.ingest_ok(&key, &[good, other]).await;

    // The test endpoint reports without storing.
    let r = server
        .post_json(
            &format!("/schemas/{ns}/validate"),
            &key,
            &json!({"events": [{"type": "order.created", "total": "x"}]}),
        )
        .await;
    let v = r.expect(200);
    assert_eq!(v["valid"], false);
    assert!(
        v["errors"].as_array().unwrap().iter().any(|e| e["path"] == "/total" && e["mode"] == "strict"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn warn_mode_accepts_reports_and_marks() {
    let server = TestServer::start().await;
    let ns = unique_ns("schema-warn");
    let key = server.create_key(&ns).await.auth();
    let r = register(&server, &key, &ns, json!({"pattern": "order.*", "schema": order_schema(), "mode": "warn"})).await;
    assert_eq!(r.expect(201)["pattern"], "order.*");
    let bad = ev("order.updated", json!({"id": "w-1", "orderId": "ord_1", "total": "ten"}));
    let r = server.ingest(&key, &[bad]).await;
    let v = r.expect(200);
    let warnings = v["warnings"].as_array().unwrap_or_else(|| panic!("no warnings: {}", r.text));
    assert_eq!(warnings.len(), 1, "{}", r.text);
    assert_eq!(warnings[0]["path"], "/total");
    assert_eq!(warnings[0]["schema"], "order.*");
    let stored = server.wait_for_events(&key, "type=order.updated", 1).await;
    let marks = stored[0]["_schemaErrors"].as_array().unwrap_or_else(|| panic!("not marked: {}", stored[0]));
    assert!(marks[0].as_str().unwrap().starts_with("/total"), "{marks:?}");

    // The namespace mode applies to schemas without their own; switching it to strict
    // does not change this schema (its own mode is warn), but an exact-type schema wins lookup.
    let r = server
        .send(
            server
                .client()
                .put(server.url(&format!("/schemas/{ns}/config")))
                .json(&json!({"mode": "strict", "compatibility": "FULL"})),
            &key,
        )
        .await;
    r.expect(200);
    let r = register(
        &server,
        &key,
        &ns,
        json!({"type": "order.updated", "schema": {"type": "object", "required": ["orderId"]}}),
    )
    .await;
    assert_eq!(r.expect(201)["compatibility"], "FULL", "{}", r.text);
    server.ingest(&key, &[ev("order.updated", json!({"total": 1}))]).await.expect_error(400, "SCHEMA_VALIDATION_ERROR");
    // order.paid still falls under the warn pattern.
    server.ingest(&key, &[ev("order.paid", json!({"total": "x"}))]).await.expect(200);
}

#[tokio::test]
async fn versions_history_delete_and_auth() {
    let server = TestServer::start().await;
    let ns = unique_ns("schema-ver");
    let other_ns = unique_ns("schema-other");
    let key = server.create_key(&ns).await.auth();
    let other_key = server.create_key(&other_ns).await.auth();
    let s1 = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let s2 = json!({"type": "object", "properties": {"a": {"type": ["string", "null"]}}});
    register(&server, &key, &ns, json!({"type": "t.x", "schema": s1})).await.expect(201);
    // Re-registering the same schema creates nothing.
    assert_eq!(register(&server, &key, &ns, json!({"type": "t.x", "schema": s1})).await.expect(200)["version"], 1);
    assert_eq!(register(&server, &key, &ns, json!({"type": "t.x", "schema": s2})).await.expect(201)["version"], 2);
    assert_eq!(server.get(&format!("/schemas/{ns}/t.x"), &key).await.expect(200)["version"], 2);
    assert_eq!(server.get(&format!("/schemas/{ns}/t.x/versions/1"), &key).await.expect(200)["schema"], s1);
    let h = server.get(&format!("/schemas/{ns}/t.x/versions"), &key).await;
    assert_eq!(h.expect(200)["schemas"].as_array().unwrap().len(), 2);
    assert_eq!(server.get(&format!("/schemas/{ns}"), &key).await.expect(200)["schemas"].as_array().unwrap().len(), 1);

    // Another namespace's key: 403. The admin: allowed.
    register(&server, &other_key, &ns, json!({"type": "t.y", "schema": s1})).await.expect_error(403, "FORBIDDEN");
    server.get(&format!("/schemas/{ns}"), &other_key).await.expect_error(403, "FORBIDDEN");
    server.get(&format!("/schemas/{ns}"), &server.admin()).await.expect(200);
    server.get(&format!("/schemas/{ns}"), &Auth::None).await.expect_error(401, "AUTH_REQUIRED");

    server.send(server.client().delete(server.url(&format!("/schemas/{ns}/t.x"))), &key).await.expect(200);
    server.get(&format!("/schemas/{ns}/t.x"), &key).await.expect_error(404, "NOT_FOUND");
    // The history survives; a new registration continues the numbering without a compatibility check.
    let s3 = json!({"type": "integer"});
    assert_eq!(register(&server, &key, &ns, json!({"type": "t.x", "schema": s3})).await.expect(201)["version"], 3);
}

#[tokio::test]
async fn compatibility_modes_accept_and_refuse() {
    let server = TestServer::start().await;
    let ns = unique_ns("schema-compat");
    let key = server.create_key(&ns).await.auth();
    let base = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "maximum": 10}}, "additionalProperties": false});
    let add_required = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "maximum": 10}}, "required": ["a"], "additionalProperties": false});
    let drop_b = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
    let widen_b = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}, "additionalProperties": false});

    let cases: &[(&str, &Value, bool, &str)] = &[
        // (compatibility, new schema, accepted, expected difference kind)
        ("BACKWARD", &widen_b, true, ""),
        ("BACKWARD", &add_required, false, "FIELD_MADE_REQUIRED"),
        ("BACKWARD", &drop_b, false, "FIELD_REMOVED"),
        ("FORWARD", &add_required, true, ""),
        ("FORWARD", &drop_b, true, ""),
        ("FORWARD", &widen_b, false, "TYPE_NARROWED"),
        ("FULL", &widen_b, false, "TYPE_NARROWED"),
        ("FULL", &add_required, false, "FIELD_MADE_REQUIRED"),
        ("FULL", &base, true, ""),
        ("NONE", &drop_b, true, ""),
    ];
    for (i, (compat, schema, accepted, kind)) in cases.iter().enumerate() {
        let ty = format!("c.case{i}");
        register(&server, &key, &ns, json!({"type": ty, "schema": base, "compatibility": compat})).await.expect(201);
        let r = register(&server, &key, &ns, json!({"type": ty, "schema": schema, "compatibility": compat})).await;
        if *accepted {
            assert!(r.status == 201 || r.status == 200, "{compat} {schema} should be accepted: {}", r.text);
        } else {
            let body = r.expect_error(409, "SCHEMA_INCOMPATIBLE");
            let diffs = body["differences"].as_array().unwrap_or_else(|| panic!("{}", r.text));
            assert!(diffs.iter().any(|d| d["kind"] == *kind), "{compat}: expected {kind}: {}", r.text);
            // Refused registrations create no version.
            assert_eq!(server.get(&format!("/schemas/{ns}/{ty}"), &key).await.expect(200)["version"], 1);
        }
    }
    // FULL refuses a tightened maximum (a FORWARD-safe but BACKWARD-breaking change).
    let tighter = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer", "maximum": 5}}, "additionalProperties": false});
    let r = register(&server, &key, &ns, json!({"type": "c.case8", "schema": tighter})).await;
    let body = r.expect_error(409, "SCHEMA_INCOMPATIBLE");
    assert!(body["differences"].as_array().unwrap().iter().any(|d| d["kind"] == "MAX_TIGHTENED"), "{}", r.text);
}

#[tokio::test]
async fn transitive_checks_every_live_version() {
    let server = TestServer::start().await;
    let ns = unique_ns("schema-trans");
    let key = server.create_key(&ns).await.auth();
    // w1: any integer; w2: n >= 0 (registered without checks). w4 widens w2 to numbers,
    // so it is BACKWARD compatible with w2 (the latest), but not with w1 (negative integers).
    let w1 = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    let w2 = json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}});
    for (ty, compat) in [("w.plain", "BACKWARD"), ("w.trans", "BACKWARD_TRANSITIVE")] {
        register(&server, &key, &ns, json!({"type": ty, "schema": w1, "compatibility": "NONE"})).await.expect(201);
        register(&server, &key, &ns, json!({"type": ty, "schema": w2, "compatibility": "NONE"})).await.expect(201);
        let w4 = json!({"type": "object", "properties": {"n": {"type": "number", "minimum": 0}}});
        let r = register(&server, &key, &ns, json!({"type": ty, "schema": w4, "compatibility": compat})).await;
        if compat == "BACKWARD" {
            assert_eq!(r.expect(201)["version"], 3, "latest-only check accepts: {}", r.text);
        } else {
            let body = r.expect_error(409, "SCHEMA_INCOMPATIBLE");
            let diffs = body["differences"].as_array().unwrap();
            assert!(diffs.iter().all(|d| d["version"] == 1), "only v1 is incompatible: {}", r.text);
            assert!(diffs.iter().any(|d| d["kind"] == "MIN_TIGHTENED"), "{}", r.text);
        }
    }
}

#[tokio::test]
async fn unsafe_or_invalid_schemas_are_refused_at_registration() {
    let server = TestServer::start().await;
    let ns = unique_ns("schema-bad");
    let key = server.create_key(&ns).await.auth();
    for (schema, needle) in [
        (json!({"type": "string", "pattern": "^(a+)+$"}), "nested quantifier"),
        (json!({"type": "object", "patternProperties": {"^(x|xy)*$": {}}}), "overlapping"),
        (json!({"type": "string", "pattern": "(a)\\1"}), "back-reference"),
        (json!({"type": "string", "pattern": "a".repeat(300)}), "longer"),
        (json!({"$ref": "https://example.com/s.json"}), "only local references"),
        (json!({"$schema": "http://json-schema.org/draft-04/schema#"}), "draft"),
        (json!({"type": "no-such-type"}), "invalid JSON Schema"),
    ] {
        let r = register(&server, &key, &ns, json!({"type": "bad.schema", "schema": schema})).await;
        r.expect_error(400, "INVALID_REQUEST");
        assert!(r.body["error"].as_str().unwrap().contains(needle), "{needle}: {}", r.text);
    }
    // Draft-07 with definitions is accepted.
    let d7 = json!({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"code": {"type": "string"}}, "properties": {"code": {"$ref": "#/definitions/code"}}});
    register(&server, &key, &ns, json!({"type": "ok.d7", "schema": d7})).await.expect(201);
    server.ingest(&key, &[ev("ok.d7", json!({"code": 5}))]).await.expect_error(400, "SCHEMA_VALIDATION_ERROR");
}
