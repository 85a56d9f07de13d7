//! Subscriptions on the native host with simulated time: a target failing
//! for longer than `disableAfterMs` is disabled and the operational event is
//! recorded; resuming re-enables it. Real SQLite, a real local receiver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events_core::{Event, Timestamp};
use events_host_native::{HostConfig, ManualClock, NativeHost, OutboundPolicy};
use events_objects::Subscriptions;
use events_objects::subscription::{SubsRequest, SubsResponse, SubscriptionSpec};

mod http_receiver;

const T0: i64 = 1_800_000_000_000;

/// A receiver that answers every request with HTTP 500; returns its URL and a request counter.
async fn failing_receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let url = http_receiver::serve(move |_| {
        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        false
    })
    .await;
    (url, hits)
}

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        ns: "acme".into(),
        ts: Timestamp(T0),
        event_type: "order.created".into(),
        source: None,
        data: Default::default(),
    }
}

async fn call(host: &NativeHost, req: SubsRequest) -> SubsResponse {
    host.call_object::<Subscriptions>("acme", req).await.unwrap()
}

async fn wait_hits(hits: &std::sync::atomic::AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while hits.load(std::sync::atomic::Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "attempt {n} was not sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_failing_past_the_span_is_disabled_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let mut config = HostConfig::new(dir.path());
    config.threads = 1;
    config.clock = clock.clone();
    config.outbound = OutboundPolicy { allow: vec!["127.0.0.0/8".into()], ..Default::default() };
    let host = NativeHost::start(config).unwrap();
    host.register::<Subscriptions>();
    let (url, hits) = failing_receiver().await;
    let spec = SubscriptionSpec {
        pattern: "order.*".into(),
        url,
        retry_schedule: Some(vec![0, 30_000, 30_000, 30_000, 30_000]),
        disable_after_ms: Some(60_000),
        ..Default::default()
    };
    let id = match call(&host, SubsRequest::Create(spec)).await {
        SubsResponse::Subscription { info, .. } => info.id,
        other => panic!("{other:?}"),
    };
    call(&host, SubsRequest::Route { events: vec![event("e1")] }).await;
    wait_hits(&hits, 1).await;
    // 33 s later (past the 30 s ± 10 % retry): failing for 33 s, still enabled.
    clock.advance(33_001);
    wait_hits(&hits, 2).await;
    // Let the run commit, then check.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call(&host, SubsRequest::Stats { id: id.clone() }).await {
            SubsResponse::Stats(s) if s.attempts == 2 => {
                assert!(s.ops_events.is_empty(), "{s:?}");
                break;
            }
            _ => assert!(Instant::now() < deadline, "second attempt not recorded"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 66 s of failures: past disableAfterMs.
    clock.advance(33_001);
    wait_hits(&hits, 3).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        match call(&host, SubsRequest::Stats { id: id.clone() }).await {
            SubsResponse::Stats(s) if !s.ops_events.is_empty() => break s,
            _ => assert!(Instant::now() < deadline, "subscription was not disabled"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats.ops_events[0].kind, "events.subscription.disabled");
    assert_eq!(stats.pending, 1, "the delivery stays queued for when it is re-enabled");
    let info = match call(&host, SubsRequest::Get { id: id.clone() }).await {
        SubsResponse::Subscription { info, .. } => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(info.status, "disabled");
    assert!(info.disabled_reason.unwrap().contains("failed since"));
    // A disabled subscription neither enqueues nor sends.
    match call(&host, SubsRequest::Route { events: vec![event("e2")] }).await {
        SubsResponse::Routed { enqueued } => assert_eq!(enqueued, 0),
        other => panic!("{other:?}"),
    }
    clock.advance(120_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Resume: active again, the queued delivery goes out.
    match call(&host, SubsRequest::SetActive { id: id.clone(), active: true }).await {
        SubsResponse::Subscription { info, .. } => {
            assert_eq!(info.status, "active");
            assert!(info.failing_since.is_none());
        }
        other => panic!("{other:?}"),
    }
    wait_hits(&hits, 4).await;
    host.shutdown().await;
}
