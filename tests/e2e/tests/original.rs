//! The original service's routes, kept for its users, with the shapes of
//! its behaviour inventory: the Worker-RPC subscription routes (§1.13),
//! `GET /recent` (§1.8). Runs against both hosts. (Inbound webhook answers,
//! §1.3, are checked in webhooks.rs.)

use events_e2e::serde_json::{Value, json};
use events_e2e::{Auth, TestServer, iso_at_offset, unique_ns};

fn ids(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect()
}

async fn subscribe(server: &TestServer, auth: &Auth, worker: &str, pattern: &str, method: &str) -> Value {
    let body = json!({"workerId": worker, "pattern": pattern, "rpcMethod": method});
    server.post_json("/subscriptions/subscribe", auth, &body).await.expect(200).clone()
}

#[tokio::test]
async fn recent_answers_a_count_and_clamps_the_limit() {
    let server = TestServer::start().await;
    let key = server.create_key(&unique_ns("recent")).await;
    let auth = key.auth();
    let events: Vec<Value> =
        (0..3).map(|i| json!({"type": "r.x", "ts": iso_at_offset(-1000 * (3 - i)), "id": format!("r-{i}")})).collect();
    server.ingest_ok(&auth, &events).await;
    server.wait_for_events(&auth, "", 3).await;

    let r = server.get("/recent?limit=2", &auth).await;
    let v = r.expect(200);
    assert_eq!((ids(&v["events"]), &v["count"]), (vec!["r-2", "r-1"], &json!(2)), "{}", r.text);
    // Out of range: clamped into 1-1000, not refused.
    let v = server.get("/recent?limit=0", &auth).await.expect(200).clone();
    assert_eq!((ids(&v["events"]), &v["count"]), (vec!["r-2"], &json!(1)));
    let v = server.get("/recent?limit=-3", &auth).await.expect(200).clone();
    assert_eq!(v["count"], 1);
    let v = server.get("/recent?limit=5000", &auth).await.expect(200).clone();
    assert_eq!((ids(&v["events"]), &v["count"]), (vec!["r-2", "r-1", "r-0"], &json!(3)));
    let v = server.get("/recent", &auth).await.expect(200).clone();
    assert_eq!(v["count"], 3);
    // Not a number at all: refused in the envelope.
    server.get("/recent?limit=lots", &auth).await.expect_error(400, "INVALID_QUERY");
    // Another tenant sees none of them.
    let other = server.create_key(&unique_ns("recent-other")).await;
    let v = server.get("/recent", &other.auth()).await.expect(200).clone();
    assert_eq!((&v["events"], &v["count"]), (&json!([]), &json!(0)));
    server.get("/recent", &Auth::None).await.expect_error(401, "AUTH_REQUIRED");
}

#[tokio::test]
async fn subscribe_answers_the_id_and_shard_and_refuses_a_duplicate() {
    let server = TestServer::start().await;
    let auth = server.create_key(&unique_ns("rpc-sub")).await.auth();
    let first = subscribe(&server, &auth, "billing", "order.*", "onOrder").await;
    assert_eq!(first["ok"], true);
    let id = first["subscriptionId"].as_str().unwrap().to_string();
    assert_eq!(first["shard"], "order", "the shard is the pattern's first segment: {first}");
    assert!(first["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{first}");
    assert_eq!(first["subscription"]["url"], "https://billing.workers.dev/rpc/onOrder");
    assert_eq!(first["subscription"]["active"], true);
    let catch_all = subscribe(&server, &auth, "billing", "**", "onAny").await;
    assert_eq!(catch_all["shard"], "default");

    // The same (workerId, pattern, rpcMethod) again: refused, naming the existing one.
    let body = json!({"workerId": "billing", "pattern": "order.*", "rpcMethod": "onOrder"});
    let r = server.post_json("/subscriptions/subscribe", &auth, &body).await;
    assert_eq!(r.expect_error(409, "CONFLICT")["subscriptionId"], id.as_str());
    // Another method, worker or pattern is another subscription.
    subscribe(&server, &auth, "billing", "order.*", "onOrderToo").await;
    subscribe(&server, &auth, "shipping", "order.*", "onOrder").await;
    // Invalid settings are refused with their codes.
    let bad = json!({"workerId": "billing", "pattern": "order.paid", "rpcMethod": "m", "maxRetries": 0});
    server.post_json("/subscriptions/subscribe", &auth, &bad).await.expect_error(400, "INVALID_CONFIG");
    let bad = json!({"workerId": "billing", "pattern": "a..b", "rpcMethod": "m"});
    server.post_json("/subscriptions/subscribe", &auth, &bad).await.expect_error(400, "INVALID_PATTERN");
    server.post_json("/subscriptions/subscribe", &Auth::None, &body).await.expect_error(401, "AUTH_REQUIRED");
}

#[tokio::test]
async fn list_match_and_status_answer_in_the_original_shapes() {
    let server = TestServer::start().await;
    let ns = unique_ns("rpc-list");
    let auth = server.create_key(&ns).await.auth();
    let order = subscribe(&server, &auth, "billing", "order.*", "onOrder").await;
    let all = subscribe(&server, &auth, "audit", "**", "onAny").await;
    let user = subscribe(&server, &auth, "crm", "user.signup", "onSignup").await;
    let [order, all, user] = [&order, &all, &user].map(|s| s["subscriptionId"].as_str().unwrap().to_string());

    // Newest first, with the namespace.
    let v = server.get("/subscriptions/list", &auth).await.expect(200).clone();
    assert_eq!(v["namespace"], ns.as_str());
    assert_eq!(ids(&v["subscriptions"]), [user.as_str(), all.as_str(), order.as_str()]);
    let first = &v["subscriptions"][2];
    assert_eq!(
        (&first["workerId"], &first["rpcMethod"], &first["pattern"]),
        (&json!("billing"), &json!("onOrder"), &json!("order.*"))
    );
    assert_eq!((&first["active"], &first["shard"]), (&json!(true), &json!("order")));
    // Filters, offset and limit.
    let q = |query: &str| format!("/subscriptions/list?{query}");
    let v = server.get(&q("workerId=crm"), &auth).await.expect(200).clone();
    assert_eq!(ids(&v["subscriptions"]), [user.as_str()]);
    let v = server.get(&q("patternPrefix=order"), &auth).await.expect(200).clone();
    assert_eq!(ids(&v["subscriptions"]), [order.as_str()]);
    let v = server.get(&q("shard=default"), &auth).await.expect(200).clone();
    assert_eq!((ids(&v["subscriptions"]), &v["shard"]), (vec![all.as_str()], &json!("default")));
    let v = server.get(&q("offset=1&limit=1"), &auth).await.expect(200).clone();
    assert_eq!(ids(&v["subscriptions"]), [all.as_str()]);
    server.get(&q("active=maybe"), &auth).await.expect_error(400, "INVALID_QUERY");
    server.get(&q("offset=-1"), &auth).await.expect_error(400, "INVALID_QUERY");

    // Match: by query (GET) or body (POST); active subscriptions only.
    let v = server.get("/subscriptions/match?eventType=order.created", &auth).await.expect(200).clone();
    let mut found = ids(&v["subscriptions"]);
    found.sort();
    let mut want = vec![order.as_str(), all.as_str()];
    want.sort();
    assert_eq!((found, &v["namespace"]), (want, &json!(ns)));
    let r = server.post_json("/subscriptions/match", &auth, &json!({"eventType": "user.signup"})).await;
    let mut found = ids(&r.expect(200)["subscriptions"]);
    found.sort();
    let mut want = vec![user.as_str(), all.as_str()];
    want.sort();
    assert_eq!(found, want);
    server.get("/subscriptions/match", &auth).await.expect_error(400, "INVALID_REQUEST");
    server
        .post_json("/subscriptions/match", &auth, &json!({"eventType": ""}))
        .await
        .expect_error(400, "INVALID_REQUEST");

    // Status: the subscription and its statistics; an unknown id answers null and zeros.
    let v = server.get(&format!("/subscriptions/status/{order}"), &auth).await.expect(200).clone();
    assert_eq!(v["subscription"]["id"], order.as_str());
    assert_eq!(
        v["stats"],
        json!({"pendingDeliveries": 0, "failedDeliveries": 0, "deadLetters": 0, "successRate": 0.0,
            "totalDelivered": 0, "totalAttempts": 0})
    );
    let v = server.get("/subscriptions/status/sub_NOSUCH", &auth).await.expect(200).clone();
    assert_eq!(v["subscription"], Value::Null);
    assert_eq!(v["stats"]["totalAttempts"], 0);

    // Another tenant sees nothing of them.
    let other = server.create_key(&unique_ns("rpc-other")).await.auth();
    let v = server.get("/subscriptions/list", &other).await.expect(200).clone();
    assert_eq!(v["subscriptions"], json!([]));
    let v = server.get("/subscriptions/match?eventType=order.created", &other).await.expect(200).clone();
    assert_eq!(v["subscriptions"], json!([]));
    let v = server.get(&format!("/subscriptions/status/{order}"), &other).await.expect(200).clone();
    assert_eq!(v["subscription"], Value::Null);
    server.get("/subscriptions/list", &Auth::None).await.expect_error(401, "AUTH_REQUIRED");
}

#[tokio::test]
async fn unsubscribe_reactivate_and_put_change_a_worker_subscription() {
    let server = TestServer::start().await;
    let auth = server.create_key(&unique_ns("rpc-put")).await.auth();
    let sub = subscribe(&server, &auth, "billing", "order.*", "onOrder").await;
    let id = sub["subscriptionId"].as_str().unwrap().to_string();
    let by_id = json!({"subscriptionId": id, "shard": "order"});

    // Unsubscribe: inactive, no longer matched; reactivate: back.
    let r = server.post_json("/subscriptions/unsubscribe", &auth, &by_id).await;
    assert_eq!(r.expect(200), &json!({"ok": true}));
    let v = server.get("/subscriptions/list?active=false", &auth).await.expect(200).clone();
    assert_eq!(ids(&v["subscriptions"]), [id.as_str()]);
    assert_eq!(v["subscriptions"][0]["active"], false);
    let v = server.get("/subscriptions/match?eventType=order.paid", &auth).await.expect(200).clone();
    assert_eq!(v["subscriptions"], json!([]));
    let r = server.post_json("/subscriptions/reactivate", &auth, &json!({"subscriptionId": id})).await;
    assert_eq!(r.expect(200), &json!({"ok": true}));
    let v = server.get("/subscriptions/list?active=true", &auth).await.expect(200).clone();
    assert_eq!(ids(&v["subscriptions"]), [id.as_str()]);
    let unknown = json!({"subscriptionId": "sub_NOSUCH"});
    server.post_json("/subscriptions/unsubscribe", &auth, &unknown).await.expect_error(404, "NOT_FOUND");
    server.post_json("/subscriptions/reactivate", &auth, &unknown).await.expect_error(404, "NOT_FOUND");
    // A body without the id (or with fields it does not know): the JSON does not have the shape.
    server.post_json("/subscriptions/unsubscribe", &auth, &json!({})).await.expect_error(400, "INVALID_JSON");
    // Another tenant cannot touch it.
    let other = server.create_key(&unique_ns("rpc-put-other")).await.auth();
    server.post_json("/subscriptions/unsubscribe", &other, &by_id).await.expect_error(404, "NOT_FOUND");

    // PUT: attempts, timeout and method; the URL follows the method.
    let put = |body: Value| {
        let rb = server.client().put(server.url(&format!("/subscriptions/{id}"))).json(&body);
        server.send(rb, &auth)
    };
    let r = put(json!({"maxRetries": 3, "timeoutMs": 5000, "rpcMethod": "onOrderV2"})).await;
    assert_eq!(r.expect(200), &json!({"ok": true}));
    let v = server.get(&format!("/subscriptions/{id}"), &auth).await.expect(200).clone();
    assert_eq!(v["retrySchedule"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!((&v["timeoutMs"], &v["rpcMethod"]), (&json!(5000), &json!("onOrderV2")));
    assert_eq!(v["url"], "https://billing.workers.dev/rpc/onOrderV2");
    put(json!({"maxRetries": 0})).await.expect_error(400, "INVALID_CONFIG");
    put(json!({"timeoutMs": 1})).await.expect_error(400, "INVALID_CONFIG");
    put(json!({"rpcMethod": "a/b"})).await.expect_error(400, "INVALID_REQUEST");
    put(json!({"color": "red"})).await.expect_error(400, "INVALID_JSON");
    // A method that makes it a duplicate of another subscription: refused.
    let twin = subscribe(&server, &auth, "billing", "order.*", "onOrderV3").await;
    let r = put(json!({"rpcMethod": "onOrderV3"})).await;
    assert_eq!(r.expect_error(409, "CONFLICT")["subscriptionId"], twin["subscriptionId"]);
    let rb = server.client().put(server.url("/subscriptions/sub_NOSUCH")).json(&json!({"maxRetries": 2}));
    server.send(rb, &auth).await.expect_error(404, "NOT_FOUND");
    // The method of a URL subscription is not a thing; PATCH never changes it.
    let hook = json!({"pattern": "x.*", "url": "https://example.com/hook"});
    let hook = server.post_json("/subscriptions", &auth, &hook).await.expect(201)["id"].as_str().unwrap().to_string();
    let rb = server.client().put(server.url(&format!("/subscriptions/{hook}"))).json(&json!({"rpcMethod": "m"}));
    server.send(rb, &auth).await.expect_error(400, "INVALID_REQUEST");
    let rb = server.client().patch(server.url(&format!("/subscriptions/{id}"))).json(&json!({"rpcMethod": "m"}));
    server.send(rb, &auth).await.expect_error(400, "INVALID_REQUEST");
}
