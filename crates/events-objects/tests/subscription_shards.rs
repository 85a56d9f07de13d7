//! Subscriptions sub-shards on the native host (real SQLite, a real local
//! receiver, the real coordinator): a backlog splits the delivery work, a
//! quiet spell merges it back; across both, every event reaches the
//! receiver exactly once with success, and the events of one ordering key
//! arrive in the order they were routed, although keys move between
//! sub-shards while they still have deliveries pending (the fence).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events_core::{Event, Timestamp};
use events_host_native::{HostConfig, NativeHost, OutboundPolicy};
use events_objects::shard_coordinator::{ShardLayout, ShardRequest};
use events_objects::subscription::{SubsRequest, SubsResponse, SubscriptionSpec};
use events_objects::{ShardCoordinator, Subscriptions};

mod http_receiver;

/// What the receiver saw: successes in arrival order as (key, event id), and failed attempts.
#[derive(Default)]
struct Seen {
    ok: Vec<(String, String)>,
    failed: usize,
}

/// A receiver that answers 500 while `down`, else 200 and records the event.
async fn receiver(down: Arc<AtomicBool>) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let url = http_receiver::serve(move |body| {
        if down.load(Ordering::SeqCst) {
            s.lock().unwrap().failed += 1;
            return false;
        }
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        let key = v["k"].as_str().unwrap().to_string();
        s.lock().unwrap().ok.push((key, v["id"].as_str().unwrap().to_string()));
        true
    })
    .await;
    (url, seen)
}

fn event(id: &str, key: &str) -> Event {
    let mut data = serde_json::Map::new();
    data.insert("k".into(), key.into());
    Event {
        id: id.into(),
        ns: "acme".into(),
        ts: Timestamp(1_800_000_000_000),
        event_type: "order.created".into(),
        source: None,
        data,
    }
}

async fn subs(host: &NativeHost, name: &str, req: SubsRequest) -> events_runtime::ObjectResult<SubsResponse> {
    host.call_object::<Subscriptions>(name, req).await
}

async fn coordinator(host: &NativeHost) -> ShardLayout {
    host.call_object::<ShardCoordinator>("acme", ShardRequest::Layout).await.unwrap()
}

/// Routes `n` events over keys k0..k9, appending (key, id) to `routed` in routing order.
async fn route_round(host: &NativeHost, tag: &str, n: usize, routed: &mut Vec<(String, String)>) {
    let events: Vec<Event> = (0..n).map(|i| event(&format!("{tag}-{i:04}"), &format!("k{}", i % 10))).collect();
    routed.extend(events.iter().map(|e| (e.data["k"].as_str().unwrap().to_string(), e.id.clone())));
    subs(host, "acme", SubsRequest::Route { events }).await.unwrap();
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The layout the main object follows.
async fn followed(host: &NativeHost) -> u32 {
    match subs(host, "acme", SubsRequest::Layout).await.unwrap() {
        SubsResponse::Layout { shards, .. } => shards,
        other => panic!("{other:?}"),
    }
}

fn check(seen: &Seen, routed: &[(String, String)]) {
    let ids: Vec<&String> = seen.ok.iter().map(|(_, id)| id).collect();
    let unique: HashSet<&String> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event was delivered with success more than once");
    assert_eq!(ids.len(), routed.len(), "every routed event is delivered once");
    let mut by_key_routed: HashMap<&str, Vec<&str>> = HashMap::new();
    for (k, id) in routed {
        by_key_routed.entry(k).or_default().push(id);
    }
    let mut by_key_seen: HashMap<&str, Vec<&str>> = HashMap::new();
    for (k, id) in &seen.ok {
        by_key_seen.entry(k).or_default().push(id);
    }
    assert_eq!(by_key_seen, by_key_routed, "per-key order is the routing order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_and_a_merge_lose_double_and_reorder_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HostConfig::new(dir.path());
    config.threads = 2;
    config.outbound = OutboundPolicy { allow: vec!["127.0.0.0/8".into()], ..Default::default() };
    config.vars = [
        ("subscriptions.split_backlog", "150"),
        ("subscriptions.merge_backlog", "100"),
        ("subscriptions.split_rate", "1000000000000"),
        ("subscriptions.merge_rate", "1000000000000"),
        ("subscriptions.cooldown_ms", "0"),
        ("subscriptions.merge_quiet_ms", "3000"),
        ("subscriptions.max_shards", "4"),
        ("subscriptions.report_interval_ms", "20"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let host = NativeHost::start(config).unwrap();
    host.register::<Subscriptions>();
    host.register::<ShardCoordinator>();
    let down = Arc::new(AtomicBool::new(true));
    let (url, seen) = receiver(down.clone()).await;
    let spec = SubscriptionSpec {
        pattern: "order.*".into(),
        url,
        ordering_key: Some("k".into()),
        retry_schedule: Some([0].into_iter().chain(std::iter::repeat_n(1_000, 19)).collect()),
        ..Default::default()
    };
    let id = match subs(&host, "acme", SubsRequest::Create(spec)).await.unwrap() {
        SubsResponse::Subscription { info, .. } => info.id,
        other => panic!("{other:?}"),
    };
    let mut routed = Vec::new();

    // A backlog (the receiver is down) splits the work: 1 -> 2 -> 4 sub-shards.
    route_round(&host, "a", 200, &mut routed).await;
    wait_until("the backlog split the layout", async || coordinator(&host).await.subscription_shards == 4).await;
    wait_until("the main object follows it", async || followed(&host).await == 4).await;
    assert!(coordinator(&host).await.subscription_epoch >= 2);

    // Every key k0..k9 has deliveries pending in the main object; the new
    // ones of keys now mapped elsewhere must wait for them (the fence).
    route_round(&host, "b", 100, &mut routed).await;
    down.store(false, Ordering::SeqCst);
    wait_until("rounds a and b are delivered", async || seen.lock().unwrap().ok.len() == routed.len()).await;
    // Deliveries pending in sub-shards when the load falls and the layout
    // merges back (routed before the quiet spell ends).
    down.store(true, Ordering::SeqCst);
    route_round(&host, "c", 60, &mut routed).await;
    check(&seen.lock().unwrap(), &routed[..300]);
    let mut on_sub_shards = 0;
    for k in 1..4 {
        if let Ok(SubsResponse::Stats(s)) =
            subs(&host, &format!("acme/{k}"), SubsRequest::Stats { id: id.clone() }).await
        {
            on_sub_shards += s.delivered;
        }
    }
    assert!(on_sub_shards > 0, "sub-shards delivered part of the work");
    wait_until("the quiet spell merged the layout", async || coordinator(&host).await.subscription_shards == 1).await;
    wait_until("the main object follows it", async || followed(&host).await == 1).await;
    route_round(&host, "d", 40, &mut routed).await;
    down.store(false, Ordering::SeqCst);
    wait_until("every round is delivered", async || seen.lock().unwrap().ok.len() == routed.len()).await;
    check(&seen.lock().unwrap(), &routed);
    assert!(seen.lock().unwrap().failed > 0, "the receiver was down for part of the test");

    // The operations API of the main object covers every sub-shard.
    let stats = match subs(&host, "acme", SubsRequest::Stats { id: id.clone() }).await.unwrap() {
        SubsResponse::Stats(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!((stats.delivered, stats.pending, stats.dead), (routed.len() as i64, 0, 0), "{stats:?}");
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let req = SubsRequest::Deliveries { id: id.clone(), status: None, after: after.clone(), limit: 70 };
        match subs(&host, "acme", req).await.unwrap() {
            SubsResponse::Deliveries { items, next } => {
                listed.extend(items);
                if next.is_none() {
                    break;
                }
                after = next;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(listed.len(), routed.len(), "one delivery per event, listed once");
    assert!(listed.iter().all(|d| d.status == "delivered"));
    let events: HashSet<&str> = listed.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(events.len(), routed.len());
    host.shutdown().await;
}
