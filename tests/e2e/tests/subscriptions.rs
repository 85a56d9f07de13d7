//! Subscriptions: pattern routing and at-least-once signed webhook delivery,
//! against a real receiver (an axum server on 127.0.0.1) and the real binary.

mod receiver;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events_e2e::serde_json::{Value, json};
use events_e2e::*;
use receiver::{Answer, Received, Receiver, ok};

/// Skips against an external server that cannot deliver to a receiver on
/// 127.0.0.1 (one without the `outbound-loopback` capability).
fn skip_without_loopback() -> bool {
    skip_on_external_without("outbound-loopback", "needs [outbound] allow for a loopback receiver")
}

async fn loopback_server() -> TestServer {
    TestServer::start_with(ServerOptions::new().toml("[outbound]\nallow = [\"127.0.0.0/8\"]")).await
}

async fn create_sub(server: &TestServer, auth: &Auth, body: Value) -> Value {
    let r = server.post_json("/subscriptions", auth, &body).await;
    r.expect(201).clone()
}

fn verify_signatures(secret: &str, messages: &[Received]) -> Value {
    require_python_modules(&["standardwebhooks"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.json");
    let messages: Vec<Value> = messages.iter().map(|m| json!({ "headers": m.headers, "body": m.body })).collect();
    std::fs::write(&path, serde_json::to_vec(&json!({ "secret": secret, "messages": messages })).unwrap()).unwrap();
    run_py_json("verify_webhooks.py", &[path.to_str().unwrap()])
}

/// Polls a JSON GET until `check` holds.
async fn poll(server: &TestServer, auth: &Auth, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = server.get(path, auth).await;
        let body = r.expect(200).clone();
        if check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out polling {path}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_signatures_retries_and_rotation() {
    if skip_without_loopback() {
        return;
    }
    let server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    // Fails twice per message, then succeeds.
    let rx = Receiver::start(|_, seen| if seen <= 2 { Answer::status(500) } else { ok() }).await;
    let orders = create_sub(
        &server,
        &auth,
        json!({"pattern": "order.*", "url": rx.url("/orders"), "retrySchedule": [0, 100, 100, 100]}),
    )
    .await;
    let secret = orders["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{orders}");
    let sub = orders["id"].as_str().unwrap().to_string();
    // Catch-all and leading wildcard route on the same pass.
    let all_rx = Receiver::start(|_, _| ok()).await;
    let all = create_sub(&server, &auth, json!({"pattern": "**", "url": all_rx.url("/all")})).await;
    let created_rx = Receiver::start(|_, _| ok()).await;
    create_sub(&server, &auth, json!({"pattern": "*.created", "url": created_rx.url("/c")})).await;
    // The secret is shown once.
    let shown = server.get(&format!("/subscriptions/{sub}"), &auth).await;
    assert!(shown.expect(200)["secret"].is_null(), "{}", shown.text);

    server
        .ingest_ok(
            &auth,
            &[
                event("order.created", "o1"),
                event("order.paid", "o2"),
                event("user.created", "u1"),
                event("order.line.added", "o3"),
            ],
        )
        .await;
    let log = rx.wait("both order events delivered", |l| l.iter().filter(|r| r.status == 200).count() == 2).await;
    let mut ids: Vec<_> = log.iter().flat_map(|r| r.event_ids()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["o1", "o2"], "order.* matches one segment only");
    for id in ["o1", "o2"] {
        let tries: Vec<_> = log.iter().filter(|r| r.event_ids() == [id]).collect();
        assert_eq!(tries.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 500, 200], "{id}");
        assert!(tries.iter().all(|r| r.id() == tries[0].id()), "webhook-id is stable across retries");
        assert_eq!(tries[0].json()["type"], if id == "o1" { "order.created" } else { "order.paid" });
    }
    let verified = verify_signatures(&secret, &log);
    assert_eq!(verified["verified"], log.len(), "{verified}");
    // A wrong secret does not verify (the check is real).
    let wrong = verify_signatures("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &log[..1]);
    assert_eq!(wrong["verified"], 0);

    all_rx.wait("catch-all got every event", |l| l.len() == 4).await;
    created_rx
        .wait("*.created got both", |l| {
            let mut ids: Vec<_> = l.iter().flat_map(|r| r.event_ids()).collect();
            ids.sort();
            ids == ["o1", "u1"]
        })
        .await;

    // Attempts, per subscription and per event, and stats.
    let attempts = server.get(&format!("/subscriptions/{sub}/events/o1/attempts"), &auth).await;
    let attempts = attempts.expect(200)["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.iter().map(|a| a["status"].as_u64().unwrap()).collect::<Vec<_>>(), [200, 500, 500]);
    assert_eq!(attempts.iter().map(|a| a["attempt"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(attempts[1]["error"], "HTTP 500");
    let all_attempts = server.get(&format!("/subscriptions/{sub}/attempts?limit=4"), &auth).await;
    let page = all_attempts.expect(200);
    assert_eq!(page["attempts"].as_array().unwrap().len(), 4);
    assert!(page["nextCursor"].is_number(), "{page}");
    let stats = server.get(&format!("/subscriptions/{sub}/stats"), &auth).await;
    let stats = stats.expect(200);
    assert_eq!((stats["delivered"].as_u64(), stats["failedAttempts"].as_u64()), (Some(2), Some(4)), "{stats}");
    assert_eq!(stats["pending"], 0);
    assert!((stats["successRate"].as_f64().unwrap() - 2.0 / 6.0).abs() < 1e-9, "{stats}");
    assert!(stats["latencyMs"]["p99"].is_number(), "{stats}");

    // Rotation: during the overlap both the old and the new secret verify.
    let all_id = all["id"].as_str().unwrap();
    let old = all["secret"].as_str().unwrap().to_string();
    let rotated =
        server.post_json(&format!("/subscriptions/{all_id}/rotate-secret"), &auth, &json!({"overlapMs": 60_000})).await;
    let new = rotated.expect(200)["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    server.ingest_ok(&auth, &[event("x.y", "after-rotation")]).await;
    let l = all_rx.wait("event after rotation", |l| l.len() == 5).await;
    let last = &l[4..];
    assert_eq!(last[0].headers["webhook-signature"].split(' ').count(), 2, "{:?}", last[0].headers);
    assert_eq!(verify_signatures(&new, last)["verified"], 1);
    assert_eq!(verify_signatures(&old, last)["verified"], 1);

    // Listing, pause/resume, tenant isolation, delete.
    let list = server.get("/subscriptions?limit=2", &auth).await;
    let list = list.expect(200);
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 2);
    let next = list["nextCursor"].as_str().unwrap();
    let rest = server.get(&format!("/subscriptions?cursor={next}"), &auth).await;
    assert_eq!(rest.expect(200)["subscriptions"].as_array().unwrap().len(), 1);
    // Malformed queries and worker names are refused in the envelope, on every host.
    server.get("/subscriptions?limit=many", &auth).await.expect_error(400, "INVALID_QUERY");
    server.get(&format!("/subscriptions/{sub}/attempts?cursor=latest"), &auth).await.expect_error(400, "INVALID_QUERY");
    // A cursor beyond what storage holds exactly (found by the OpenAPI fuzzer: it was a 500).
    for path in [format!("/subscriptions/{sub}/attempts"), format!("/subscriptions/{sub}/events/o1/attempts")] {
        let r = server.get(&format!("{path}?cursor=-9223372036854775808"), &auth).await;
        r.expect_error(400, "INVALID_QUERY");
    }
    server.get(&format!("/subscriptions/{sub}/deliveries?limit=-1"), &auth).await.expect_error(400, "INVALID_QUERY");
    let bad_worker = json!({"workerId": "evil.example/x", "pattern": "**", "rpcMethod": "run"});
    server.post_json("/subscriptions/subscribe", &auth, &bad_worker).await.expect_error(400, "INVALID_REQUEST");
    let other = server.create_key(&unique_ns("other")).await;
    server.get(&format!("/subscriptions/{sub}"), &other.auth()).await.expect_error(404, "NOT_FOUND");
    assert_eq!(server.get("/subscriptions", &other.auth()).await.expect(200)["subscriptions"], json!([]));
    let paused = server.post_json(&format!("/subscriptions/{all_id}/pause"), &auth, &json!({})).await;
    assert_eq!(paused.expect(200)["status"], "paused");
    server.ingest_ok(&auth, &[event("x.y", "while-paused")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(all_rx.log().len(), 5, "a paused subscription sends nothing");
    server.post_json(&format!("/subscriptions/{all_id}/resume"), &auth, &json!({})).await.expect(200);
    all_rx.wait("queued event after resume", |l| l.len() == 6 && l[5].event_ids() == ["while-paused"]).await;
    let del = server.send(server.client().delete(server.url(&format!("/subscriptions/{all_id}"))), &auth).await;
    del.expect(200);
    server.get(&format!("/subscriptions/{all_id}"), &auth).await.expect_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_retry_after_and_stop_retries() {
    if skip_without_loopback() {
        return;
    }
    let server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    let rx = Receiver::start(|r, seen| match (r.json()["type"].as_str().unwrap(), seen) {
        ("slow.x", 1) => Answer { delay: Duration::from_secs(3), ..ok() },
        ("limited.x", 1) => Answer { headers: vec![("retry-after", "2".into())], ..Answer::status(429) },
        ("stop.x", _) => Answer {
            headers: vec![("webhook-stop-retries", "true".into())],
            body: "gone for good".into(),
            ..Answer::status(410)
        },
        _ => ok(),
    })
    .await;
    let schedule = json!([0, 50, 50, 50]);
    let slow = create_sub(
        &server,
        &auth,
        json!({"pattern": "slow.*", "url": rx.url("/"), "timeoutMs": 300, "retrySchedule": schedule}),
    )
    .await;
    create_sub(&server, &auth, json!({"pattern": "limited.*", "url": rx.url("/"), "retrySchedule": schedule})).await;
    let stop =
        create_sub(&server, &auth, json!({"pattern": "stop.*", "url": rx.url("/"), "retrySchedule": schedule})).await;
    server.ingest_ok(&auth, &[event("slow.x", "s1"), event("limited.x", "l1"), event("stop.x", "x1")]).await;

    let log = rx
        .wait("slow and limited delivered", |l| {
            let d: Vec<_> = l.iter().filter(|r| r.status == 200).flat_map(|r| r.event_ids()).collect();
            d.contains(&"s1".to_string()) && d.contains(&"l1".to_string())
        })
        .await;
    // The timed-out attempt is logged with the TIMEOUT code.
    let slow_id = slow["id"].as_str().unwrap();
    let a = server.get(&format!("/subscriptions/{slow_id}/events/s1/attempts"), &auth).await;
    let a = a.expect(200)["attempts"].as_array().unwrap().clone();
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[1]["errorCode"], "TIMEOUT", "{a:?}");
    assert!(a[1]["status"].is_null());
    assert_eq!(a[0]["ok"], true);
    // Retry-After: 2 wins over the 50 ms schedule.
    let limited: Vec<_> = log.iter().filter(|r| r.event_ids() == ["l1"]).collect();
    assert_eq!(limited.len(), 2);
    let gap = limited[1].at - limited[0].at;
    assert!(gap >= Duration::from_millis(1_800), "retry came after {gap:?}, before Retry-After");

    // Stop: one request only, then a dead letter with the reason.
    let stop_id = stop["id"].as_str().unwrap();
    let dl = poll(&server, &auth, &format!("/subscriptions/{stop_id}/dead-letters"), |b| {
        b["deadLetters"].as_array().unwrap().len() == 1
    })
    .await;
    let dead = &dl["deadLetters"][0];
    assert_eq!(dead["eventId"], "x1");
    assert_eq!(dead["attempts"], 1);
    assert!(dead["deadReason"].as_str().unwrap().contains("webhook-stop-retries"), "{dead}");
    assert_eq!(rx.log().iter().filter(|r| r.event_ids() == ["x1"]).count(), 1);
    let attempts = server.get(&format!("/subscriptions/{stop_id}/attempts"), &auth).await;
    assert_eq!(attempts.expect(200)["attempts"][0]["response"], "gone for good");
    // Replaying it after the receiver changed its mind delivers it.
    rx.set(|_, _| ok());
    let dl_id = dead["id"].as_str().unwrap();
    let r = server.post_json(&format!("/subscriptions/{stop_id}/dead-letters/{dl_id}/replay"), &auth, &json!({})).await;
    assert_eq!(r.expect(200)["replayed"], 1);
    rx.wait("replayed dead letter", |l| l.iter().any(|r| r.status == 200 && r.event_ids() == ["x1"])).await;
    let again =
        server.post_json(&format!("/subscriptions/{stop_id}/dead-letters/{dl_id}/replay"), &auth, &json!({})).await;
    again.expect_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_dead_letters_replay_and_recover() {
    if skip_without_loopback() {
        return;
    }
    let server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    let rx = Receiver::start(|_, _| Answer::status(503)).await;
    // Short schedule: dead letters after 3 attempts.
    let short =
        create_sub(&server, &auth, json!({"pattern": "a.*", "url": rx.url("/a"), "retrySchedule": [0, 50, 50]})).await;
    // Longer schedule: survives an outage of a few hundred ms.
    let long = create_sub(
        &server,
        &auth,
        json!({"pattern": "b.*", "url": rx.url("/b"), "retrySchedule": [0, 200, 400, 800, 1600, 3200, 6400]}),
    )
    .await;
    let t0 = iso_at_offset(-1_000);
    let a_events: Vec<_> = (0..5).map(|i| event("a.x", &format!("a{i}"))).collect();
    server.ingest_ok(&auth, &a_events).await;
    server.ingest_ok(&auth, &[event("b.x", "b0"), event("b.x", "b1")]).await;
    let short_id = short["id"].as_str().unwrap();
    let long_id = long["id"].as_str().unwrap();
    let dl = poll(&server, &auth, &format!("/subscriptions/{short_id}/dead-letters"), |b| {
        b["deadLetters"].as_array().unwrap().len() == 5
    })
    .await;
    assert!(dl["deadLetters"].as_array().unwrap().iter().all(|d| d["attempts"] == 3), "{dl}");
    // The outage ends; the long-schedule deliveries get through on a retry.
    rx.wait("b events attempted twice", |l| l.iter().filter(|r| r.event_ids()[0].starts_with('b')).count() >= 4).await;
    rx.set(|_, _| ok());
    rx.wait("b delivered after the outage", |l| {
        l.iter().filter(|r| r.status == 200 && r.event_ids()[0].starts_with('b')).count() == 2
    })
    .await;
    let stats = server.get(&format!("/subscriptions/{long_id}/stats"), &auth).await;
    assert_eq!((stats.expect(200)["delivered"].as_u64(), stats.body["dead"].as_u64()), (Some(2), Some(0)));

    // Replay one, then all.
    let first = dl["deadLetters"][0]["id"].as_str().unwrap();
    let r =
        server.post_json(&format!("/subscriptions/{short_id}/dead-letters/{first}/replay"), &auth, &json!({})).await;
    assert_eq!(r.expect(200)["replayed"], 1);
    rx.wait("one replayed", |l| l.iter().filter(|r| r.status == 200 && r.event_ids()[0].starts_with('a')).count() == 1)
        .await;
    let r = server.post_json(&format!("/subscriptions/{short_id}/dead-letters/replay"), &auth, &json!({})).await;
    assert_eq!(r.expect(200)["replayed"], 4);
    rx.wait("all replayed", |l| l.iter().filter(|r| r.status == 200 && r.event_ids()[0].starts_with('a')).count() == 5)
        .await;
    let stats = server.get(&format!("/subscriptions/{short_id}/stats"), &auth).await;
    assert_eq!((stats.expect(200)["delivered"].as_u64(), stats.body["dead"].as_u64()), (Some(5), Some(0)));

    // Recover since T: every matching event is sent again, delivered ones included.
    let job = server.post_json(&format!("/subscriptions/{short_id}/recover"), &auth, &json!({"since": t0})).await;
    let job = job.expect(202).clone();
    let job_id = job["id"].as_str().unwrap();
    let done =
        poll(&server, &auth, &format!("/subscriptions/{short_id}/recover/{job_id}"), |j| j["status"] == "done").await;
    assert_eq!(done["requeued"], 5, "{done}");
    rx.wait("recovered", |l| l.iter().filter(|r| r.status == 200 && r.event_ids()[0].starts_with('a')).count() == 10)
        .await;
    let mut recovered: Vec<_> = rx.delivered().into_iter().filter(|id| id.starts_with('a')).collect();
    recovered.sort();
    assert_eq!(recovered, ["a0", "a0", "a1", "a1", "a2", "a2", "a3", "a3", "a4", "a4"]);
    // A bad time is refused.
    let bad =
        server.post_json(&format!("/subscriptions/{short_id}/recover"), &auth, &json!({"since": "yesterday"})).await;
    bad.expect_error(400, "INVALID_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_retry_only_failed_items() {
    if skip_without_loopback() {
        return;
    }
    let server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    let seen_flaky = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let seen = seen_flaky.clone();
    let rx = Receiver::start(move |r, _| {
        // Each event whose id starts with "f" fails the first time it is seen.
        let mut seen = seen.lock().unwrap();
        let results: Vec<Value> = r.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let id = e["id"].as_str().unwrap().to_string();
                let n = seen.entry(id.clone()).or_default();
                *n += 1;
                json!({"id": id, "ok": !(id.starts_with('f') && *n == 1)})
            })
            .collect();
        Answer { body: json!({ "results": results }).to_string(), ..ok() }
    })
    .await;
    let sub = create_sub(
        &server,
        &auth,
        json!({"pattern": "**", "url": rx.url("/batch"), "batch": {"maxSize": 10, "windowMs": 300}, "retrySchedule": [0, 100, 100]}),
    )
    .await;
    let events: Vec<_> = ["g1", "f1", "g2", "f2", "g3"].iter().map(|id| event("b.x", id)).collect();
    server.ingest_ok(&auth, &events).await;
    let retried = |l: &[Received]| {
        let mut ids: Vec<String> = l.iter().skip(1).flat_map(|r| r.event_ids()).collect();
        ids.sort();
        ids
    };
    let log = rx.wait("the failed items retried", |l| retried(l).len() >= 2).await;
    assert_eq!(log[0].event_ids(), ["g1", "f1", "g2", "f2", "g3"], "one batch, in ingest order");
    assert!(log[0].id().starts_with("batch_"));
    // Each failed item retries on its own (jittered) schedule: one or two requests.
    assert_eq!(retried(&log), ["f1", "f2"], "only the failed items are retried");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let log = rx.log();
    assert_eq!(retried(&log), ["f1", "f2"], "nothing more to send");
    let sub_id = sub["id"].as_str().unwrap();
    let stats = server.get(&format!("/subscriptions/{sub_id}/stats"), &auth).await;
    assert_eq!(stats.expect(200)["delivered"], 5);
    assert_eq!(stats.body["failedAttempts"], 2);
    let verified = verify_signatures(sub["secret"].as_str().unwrap(), &log);
    assert_eq!(verified["verified"], log.len(), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_key_orders_per_key_without_blocking_others() {
    if skip_without_loopback() {
        return;
    }
    let server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    // The first event of account A fails three times.
    let rx =
        Receiver::start(|r, seen| if r.json()["id"] == "A1" && seen <= 3 { Answer::status(500) } else { ok() }).await;
    create_sub(
        &server,
        &auth,
        json!({"pattern": "acct.*", "url": rx.url("/o"), "orderingKey": "account", "retrySchedule": [0, 300, 300, 300, 300]}),
    )
    .await;
    let ev = |id: &str, account: &str| json!({"type": "acct.tx", "id": id, "account": account});
    server
        .ingest_ok(&auth, &[ev("A1", "A"), ev("B1", "B"), ev("A2", "A"), ev("B2", "B"), ev("A3", "A"), ev("B3", "B")])
        .await;
    let log = rx.wait("all six delivered", |l| l.iter().filter(|r| r.status == 200).count() == 6).await;
    let order: Vec<String> = log.iter().flat_map(|r| r.event_ids()).collect();
    let delivered = rx.delivered();
    let a: Vec<_> = delivered.iter().filter(|id| id.starts_with('A')).cloned().collect();
    let b: Vec<_> = delivered.iter().filter(|id| id.starts_with('B')).cloned().collect();
    assert_eq!(a, ["A1", "A2", "A3"], "{order:?}");
    assert_eq!(b, ["B1", "B2", "B3"], "{order:?}");
    // A2 is never sent before A1 succeeded.
    let a1_ok = log.iter().position(|r| r.status == 200 && r.event_ids() == ["A1"]).unwrap();
    let a2_first = order.iter().position(|id| id == "A2").unwrap();
    assert!(a2_first > a1_ok, "{order:?}");
    // B is not held back by A's failures.
    let b3 = delivered.iter().position(|id| id == "B3").unwrap();
    let a1 = delivered.iter().position(|id| id == "A1").unwrap();
    assert!(b3 < a1, "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_without_allowlist() {
    if skip_on_external("needs a server without [outbound] allow") {
        return;
    }
    let server = TestServer::start().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    for url in
        ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://169.254.169.254/latest", "http://[::1]:9/"]
    {
        let r = server.post_json("/subscriptions", &auth, &json!({"pattern": "**", "url": url})).await;
        let details = r.expect_error(400, "TARGET_NOT_ALLOWED");
        assert_eq!(details["url"], url);
    }
    let r = server.post_json("/subscriptions", &auth, &json!({"pattern": "**", "url": "ftp://example.com/"})).await;
    r.expect_error(400, "INVALID_REQUEST");
    let r = server.post_json("/subscriptions", &auth, &json!({"pattern": "a..b", "url": "https://example.com/"})).await;
    r.expect_error(400, "INVALID_PATTERN");
    let r = server
        .post_json(
            "/subscriptions",
            &auth,
            &json!({"pattern": "**", "url": "https://example.com/", "retrySchedule": []}),
        )
        .await;
    r.expect_error(400, "INVALID_CONFIG");
    // The worker shape uses the template (a public name: accepted).
    let r = server
        .post_json(
            "/subscriptions/subscribe",
            &auth,
            &json!({"workerId": "billing", "pattern": "order.*", "rpcMethod": "onOrder"}),
        )
        .await;
    let body = r.expect(200);
    assert_eq!(body["subscription"]["url"], "https://billing.workers.dev/rpc/onOrder");
    assert_eq!(body["subscription"]["workerId"], "billing");
    // No credentials, no subscriptions.
    server.get("/subscriptions", &Auth::None).await.expect_error(401, "AUTH_REQUIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_receiver_attempts_are_logged_with_a_code() {
    if skip_without_loopback() {
        return;
    }
    // A port with no listener: the transport error is logged and, with a
    // one-attempt schedule, the delivery is a dead letter at once.
    let server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    let port = free_port();
    let sub = create_sub(
        &server,
        &auth,
        json!({"pattern": "**", "url": format!("http://127.0.0.1:{port}/"), "retrySchedule": [0]}),
    )
    .await;
    server.ingest_ok(&auth, &[event("a.b", "e1")]).await;
    let id = sub["id"].as_str().unwrap();
    let dl = poll(&server, &auth, &format!("/subscriptions/{id}/dead-letters"), |b| {
        !b["deadLetters"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(dl["deadLetters"][0]["lastError"].as_str().unwrap().contains("request failed"), "{dl}");
    let a = server.get(&format!("/subscriptions/{id}/attempts"), &auth).await;
    assert_eq!(a.expect(200)["attempts"][0]["errorCode"], "SERVICE_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_retries_survive_a_restart() {
    if skip_without_loopback() || skip_on_external_without("restart", "kills and restarts the runtime") {
        return;
    }
    let mut server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    let rx = Receiver::start(|_, seen| if seen == 1 { Answer::status(500) } else { ok() }).await;
    // The retry is due 3 s after the first failure: the server is down then.
    create_sub(&server, &auth, json!({"pattern": "**", "url": rx.url("/"), "retrySchedule": [0, 3000]})).await;
    server.ingest_ok(&auth, &[event("r.x", "r1"), event("r.x", "r2")]).await;
    rx.wait("first attempts", |l| l.len() == 2).await;
    // Give the run its commit (the attempts are recorded once it ends).
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.restart().await;
    let log = rx.wait("retries after restart", |l| l.iter().filter(|r| r.status == 200).count() == 2).await;
    let mut ids: Vec<_> = log.iter().filter(|r| r.status == 200).flat_map(|r| r.event_ids()).collect();
    ids.sort();
    assert_eq!(ids, ["r1", "r2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_during_delivery_under_load_every_event_arrives() {
    if skip_without_loopback() || skip_on_external_without("restart", "kills and restarts the runtime") {
        return;
    }
    let mut server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    let rx = Receiver::start(|_, _| Answer { delay: Duration::from_millis(5), ..ok() }).await;
    create_sub(
        &server,
        &auth,
        json!({"pattern": "load.**", "url": rx.url("/"), "retrySchedule": [0, 200, 500, 1000, 2000]}),
    )
    .await;
    let mut expected = Vec::new();
    for batch in 0..10 {
        let events: Vec<_> = (0..200)
            .map(|i| {
                let id = format!("L{batch:02}-{i:03}");
                expected.push(id.clone());
                event("load.x", &id)
            })
            .collect();
        server.ingest_ok(&auth, &events).await;
        if batch == 5 {
            // Mid-delivery: some events reached the receiver, others not yet.
            rx.wait("deliveries under way", |l| !l.is_empty()).await;
            server.kill();
            server.restart().await;
        }
    }
    expected.sort();
    let log = rx
        .wait("every event at least once", |l| {
            let got: std::collections::HashSet<String> =
                l.iter().filter(|r| r.status == 200).flat_map(|r| r.event_ids()).collect();
            expected.iter().all(|id| got.contains(id))
        })
        .await;
    let total = log.len();
    eprintln!("{} events, {total} requests (duplicates from the crash: {})", expected.len(), total - expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_reads_events_the_log_never_held_from_the_lake() {
    if skip_without_loopback() {
        return;
    }
    let server = loopback_server().await;
    let ns = unique_ns("subs");
    let auth = server.admin_for(&ns);
    // Six days old (ingest takes up to 7), and ingested before any subscription matched them: the
    // router's log never held them; only the lake does. The user event,
    // routed after them, shows when the router has seen (and dropped) them.
    let users = Receiver::start(|_, _| ok()).await;
    create_sub(&server, &auth, json!({"pattern": "user.*", "url": users.url("/u")})).await;
    let old_ts = iso_at_offset(-6 * 86_400_000);
    let mut old: Vec<_> =
        (0..10).map(|i| json!({"type": "order.created", "id": format!("o{i}"), "ts": old_ts})).collect();
    old.push(json!({"type": "user.created", "id": "u0", "ts": old_ts}));
    server.ingest_ok(&auth, &old).await;
    users.wait("the user event", |l| l.iter().any(|r| r.status == 200)).await;
    assert!(!server.admin_flush().await.is_empty(), "the old events are written to the lake");

    let rx = Receiver::start(|_, _| ok()).await;
    let sub = create_sub(&server, &auth, json!({"pattern": "order.*", "url": rx.url("/o")})).await;
    let id = sub["id"].as_str().unwrap();
    server.ingest_ok(&auth, &[event("order.created", "n0")]).await;
    rx.wait("the new event", |l| l.iter().any(|r| r.status == 200 && r.event_ids() == ["n0"])).await;

    let job = server
        .post_json(&format!("/subscriptions/{id}/recover"), &auth, &json!({"since": iso_at_offset(-7 * 86_400_000)}))
        .await;
    let job_id = job.expect(202)["id"].as_str().unwrap().to_string();
    let done =
        poll(&server, &auth, &format!("/subscriptions/{id}/recover/{job_id}"), |j| j["status"] != "running").await;
    assert_eq!((done["status"].as_str(), done["phase"].as_str()), (Some("done"), Some("done")), "{done}");
    assert_eq!(done["imported"], 10, "the ten old order events came from the lake: {done}");
    assert_eq!(done["requeued"], 11, "the old events and the new one are sent again: {done}");
    rx.wait("everything recovered", |l| l.iter().filter(|r| r.status == 200).count() == 12).await;
    let mut got = rx.delivered();
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("o{i}")).collect();
    want.extend(["n0".to_string(), "n0".to_string()]);
    want.sort();
    assert_eq!(got, want, "each old order event once, the new one twice, no user event");

    // A second recovery finds the imported events in the log: nothing new from the lake.
    let again = server
        .post_json(&format!("/subscriptions/{id}/recover"), &auth, &json!({"since": iso_at_offset(-7 * 86_400_000)}))
        .await;
    let again_id = again.expect(202)["id"].as_str().unwrap().to_string();
    let again =
        poll(&server, &auth, &format!("/subscriptions/{id}/recover/{again_id}"), |j| j["status"] != "running").await;
    assert_eq!((again["imported"].as_u64(), again["requeued"].as_u64()), (Some(0), Some(11)), "{again}");

    // Recovery reaches back at most 90 days.
    let far = server
        .post_json(&format!("/subscriptions/{id}/recover"), &auth, &json!({"since": iso_at_offset(-91 * 86_400_000)}))
        .await;
    far.expect_error(400, "INVALID_REQUEST");
}
