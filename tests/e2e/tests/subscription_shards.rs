//! Subscription hot spots against the real binary and a real receiver: a
//! delivery backlog splits a namespace's delivery work across sub-shards,
//! a quiet spell merges it back (both visible at `GET /admin/shards`), and
//! through both every event gets exactly one successful delivery and the
//! events of one ordering key arrive in ingest order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use events_e2e::serde_json::{Value, json};
use events_e2e::*;

/// Successes the receiver answered, in arrival order: (ordering key, event id).
type Successes = Arc<Mutex<Vec<(String, String)>>>;

/// A receiver that answers 500 while `down`, else 200 (recording the event).
async fn receiver(down: Arc<AtomicBool>) -> (String, Successes) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let ok: Successes = Arc::default();
    let seen = ok.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let (seen, down) = (seen.clone(), down.clone());
        async move {
            if down.load(Ordering::SeqCst) {
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            let v: Value = serde_json::from_slice(&body).unwrap();
            let entry = (v["account"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string());
            seen.lock().unwrap().push(entry);
            StatusCode::OK
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, ok)
}

/// Ingests `n` events over 20 accounts (the ordering key), in batches of 100.
async fn ingest_round(server: &TestServer, auth: &Auth, tag: &str, n: usize, sent: &mut Vec<(String, String)>) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "acct.tx", "id": format!("{tag}-{i:04}"), "account": format!("acct{}", i % 20)}))
        .collect();
    for chunk in events.chunks(100) {
        server.ingest_ok(auth, chunk).await;
        sent.extend(
            chunk.iter().map(|e| (e["account"].as_str().unwrap().to_string(), e["id"].as_str().unwrap().into())),
        );
    }
}

/// The namespace's entry of `GET /admin/shards`.
async fn layout(server: &TestServer, ns: &str) -> Value {
    let r = server.get("/admin/shards", &server.admin()).await;
    let body = r.expect(200);
    body["namespaces"].as_array().unwrap().iter().find(|v| v["namespace"] == ns).cloned().unwrap_or(Value::Null)
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + DEADLINE;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exactly one success per event, and per account the ingest order.
fn check(successes: &[(String, String)], sent: &[(String, String)]) {
    let ids: HashSet<&String> = successes.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), successes.len(), "an event got more than one successful delivery");
    assert_eq!(successes.len(), sent.len(), "every event is delivered");
    let per_key = |list: &[(String, String)]| {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, id) in list {
            m.entry(k.clone()).or_default().push(id.clone());
        }
        m
    };
    assert_eq!(per_key(successes), per_key(sent), "per-account order is the ingest order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_namespace_splits_and_merges_without_losing_doubling_or_reordering() {
    if skip_on_external("needs [outbound] allow and [subscriptions] thresholds") {
        return;
    }
    let server = TestServer::start_with(ServerOptions::new().toml(
        "[outbound]\nallow = [\"127.0.0.0/8\"]\n\n[subscriptions]\nsplit_backlog = 300\nmerge_backlog = 150\n\
         split_rate = 1000000000\nmerge_rate = 1000000000\nmerge_quiet_ms = 1500\nshard_cooldown_ms = 0\n\
         max_shards = 4\nreport_interval_ms = 50",
    ))
    .await;
    let ns = unique_ns("hot");
    let auth = server.admin_for(&ns);
    let down = Arc::new(AtomicBool::new(true));
    let (url, successes) = receiver(down.clone()).await;
    let schedule: Vec<i64> = std::iter::once(0).chain(std::iter::repeat_n(2_000, 19)).collect();
    let sub = server
        .post_json(
            "/subscriptions",
            &auth,
            &json!({"pattern": "acct.*", "url": url, "orderingKey": "account", "retrySchedule": schedule}),
        )
        .await
        .expect(201)
        .clone();
    let id = sub["id"].as_str().unwrap().to_string();
    let mut sent = Vec::new();

    // The receiver is down: the backlog grows past split_backlog, 1 -> 2 -> 4 sub-shards.
    ingest_round(&server, &auth, "a", 600, &mut sent).await;
    wait_until("the backlog split the delivery work", async || layout(&server, &ns).await["subscriptionShards"] == 4)
        .await;
    // The layout is also exported for monitoring.
    let metrics = server.get("/metrics", &Auth::None).await;
    let gauge = format!("events_subscription_shards{{namespace=\"{ns}\"}} 4");
    assert!(metrics.text.contains(&gauge), "{gauge} not in /metrics");
    // More events of the same accounts while their earlier ones still wait in the main object.
    ingest_round(&server, &auth, "b", 200, &mut sent).await;
    down.store(false, Ordering::SeqCst);
    wait_until("rounds a and b are delivered", async || successes.lock().unwrap().len() >= sent.len()).await;
    check(&successes.lock().unwrap(), &sent);

    // Down again with a small backlog spread over the sub-shards: the quiet
    // spell merges 4 -> 2 -> 1 while those deliveries are still pending.
    down.store(true, Ordering::SeqCst);
    ingest_round(&server, &auth, "c", 100, &mut sent).await;
    wait_until("the quiet spell merged the delivery work", async || {
        layout(&server, &ns).await["subscriptionShards"] == 1
    })
    .await;
    ingest_round(&server, &auth, "d", 100, &mut sent).await;
    down.store(false, Ordering::SeqCst);
    wait_until("every round is delivered", async || successes.lock().unwrap().len() >= sent.len()).await;
    // Let any late duplicate show up before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(&successes.lock().unwrap(), &sent);

    let shards = layout(&server, &ns).await;
    assert!(shards["subscriptionEpoch"].as_u64().unwrap() >= 4, "two splits and two merges: {shards}");
    let stats = server.get(&format!("/subscriptions/{id}/stats"), &auth).await;
    let stats = stats.expect(200);
    assert_eq!(stats["delivered"], sent.len(), "{stats}");
    assert_eq!(stats["pending"], 0, "{stats}");
    assert_eq!(stats["dead"], 0, "{stats}");
}
