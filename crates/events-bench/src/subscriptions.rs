//! Webhook delivery: deliveries per second to a local receiver, and the
//! end-to-end latency from the ingest answer to the receiver.
//!
//! - **Receiver**: an axum server on 127.0.0.1 that answers 200 at once and
//!   notes when each event id arrived.
//! - **events.do**: the real server in-process (`[outbound] allow` loopback),
//!   one `**` subscription; every delivery's state (attempt, delivered) is
//!   committed with fsync by the router before the next run. Throughput is
//!   timed from `resume` of a subscription with `events` queued deliveries
//!   until the last arrives; latency from single-event ingests at a modest rate.
//! - **Ceiling**: the same receiver driven directly by a plain client with
//!   [`DeliveryBench::ceiling_connections`] concurrent requests (one event each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use bytes::Bytes;

use crate::Figure;

/// Longest wait for every delivery of a phase.
const PHASE_DEADLINE: Duration = Duration::from_secs(300);

/// Options of the delivery benchmark.
pub struct DeliveryBench {
    /// Events of the throughput phase.
    pub events: usize,
    /// Events per ingest request in the throughput phase.
    pub batch: usize,
    /// Single-event ingests of the latency phase.
    pub latency_samples: usize,
    /// Pause between two latency samples.
    pub latency_gap_ms: u64,
    /// Concurrent requests of the ceiling client.
    pub ceiling_connections: usize,
    /// Events per request of the batched subscription.
    pub batch_size: usize,
}

impl Default for DeliveryBench {
    fn default() -> Self {
        DeliveryBench {
            events: 20_000,
            batch: 500,
            latency_samples: 300,
            latency_gap_ms: 20,
            ceiling_connections: 64,
            batch_size: 100,
        }
    }
}

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver() -> anyhow::Result<(String, Arrivals, tokio::sync::oneshot::Sender<()>)> {
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let a = a.clone();
            async move {
                let now = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    // One event, or a batch `{"events": [...]}`.
                    let events = match v["events"].as_array() {
                        Some(list) => list.clone(),
                        None => vec![v],
                    };
                    let mut a = a.lock().unwrap_or_else(|p| p.into_inner());
                    for id in events.iter().filter_map(|e| e["id"].as_str()) {
                        a.entry(id.to_string()).or_insert(now);
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { drop(rx.await) }).await;
    });
    Ok((url, arrivals, tx))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn wait_for(arrivals: &Arrivals, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_DEADLINE;
    while arrivals.lock().unwrap_or_else(|p| p.into_inner()).len() < n {
        anyhow::ensure!(Instant::now() < deadline, "deliveries did not all arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Times one subscription's deliveries: with it paused, ingests `opts.events`
/// events into `ns` and lets the router queue them; then resumes it and
/// times until every delivery arrived. Returns (deliveries/s, ingest time,
/// subscription id).
async fn throughput_phase(
    client: &reqwest::Client,
    url: &str,
    ns: &str,
    spec: serde_json::Value,
    id_prefix: &str,
    opts: &DeliveryBench,
    arrivals: &Arrivals,
) -> anyhow::Result<(f64, Duration, String)> {
    let n = opts.events;
    let admin = |rb: reqwest::RequestBuilder| rb.bearer_auth(crate::ADMIN_TOKEN).header("X-Namespace", ns);
    let created: serde_json::Value =
        admin(client.post(format!("{url}/subscriptions"))).json(&spec).send().await?.json().await?;
    let sub = created["id"].as_str().ok_or_else(|| anyhow::anyhow!("no subscription: {created}"))?.to_string();
    admin(client.post(format!("{url}/subscriptions/{sub}/pause"))).send().await?.error_for_status()?;
    let ingest_start = Instant::now();
    for b in 0..n.div_ceil(opts.batch) {
        let events: Vec<_> = (b * opts.batch..((b + 1) * opts.batch).min(n))
            .map(|i| serde_json::json!({"id": format!("{id_prefix}{i}"), "type": "bench.delivery", "n": i}))
            .collect();
        let r = admin(client.post(format!("{url}/e"))).json(&serde_json::json!({"events": events})).send().await?;
        anyhow::ensure!(r.status().is_success(), "ingest failed: {}", r.text().await?);
    }
    let ingested = ingest_start.elapsed();
    let deadline = Instant::now() + PHASE_DEADLINE;
    loop {
        let stats: serde_json::Value =
            admin(client.get(format!("{url}/subscriptions/{sub}/stats"))).send().await?.json().await?;
        if stats["pending"].as_u64() == Some(n as u64) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "events were not all queued: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    admin(client.post(format!("{url}/subscriptions/{sub}/resume"))).send().await?.error_for_status()?;
    wait_for(arrivals, n).await?;
    Ok((n as f64 / start.elapsed().as_secs_f64(), ingested, sub))
}

/// Runs the delivery figures.
pub async fn run(opts: &DeliveryBench) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let mut config = crate::server_config(dir.path());
    config.outbound.allow = vec!["127.0.0.0/8".into()];
    let server = events_server::Server::bind(config).await?;
    let url = format!("http://{}", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move { drop(stop_rx.await) }));
    let client = reqwest::Client::new();
    let (hook, arrivals, hook_stop) = receiver().await?;

    // Ceiling: the receiver driven directly.
    let n = opts.events;
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..opts.ceiling_connections {
        let (client, hook, next) = (client.clone(), hook.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let body = serde_json::json!({"id": format!("c{i}"), "type": "bench.x"});
                let _ = client.post(&hook).json(&body).send().await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let ceiling = n as f64 / start.elapsed().as_secs_f64();
    arrivals.lock().unwrap_or_else(|p| p.into_inner()).clear();

    // Batched: the same number of events in requests of `batch_size`, in a namespace of its own.
    let batched_sub = serde_json::json!({"pattern": "**", "url": hook,
        "batch": {"maxSize": opts.batch_size, "windowMs": 0}});
    let (batched, _, _) = throughput_phase(&client, &url, "bench-batched", batched_sub, "b", opts, &arrivals).await?;
    arrivals.lock().unwrap_or_else(|p| p.into_inner()).clear();

    let single_sub = serde_json::json!({"pattern": "**", "url": hook});
    let (throughput, ingested, sub) =
        throughput_phase(&client, &url, "bench", single_sub, "t", opts, &arrivals).await?;

    // Latency: single events at a modest rate.
    let mut acks = Vec::new();
    for i in 0..opts.latency_samples {
        let id = format!("l{i}");
        let sent = Instant::now();
        let r = client
            .post(format!("{url}/e"))
            .bearer_auth(crate::ADMIN_TOKEN)
            .header("X-Namespace", "bench")
            .json(&serde_json::json!({"events": [{"id": id, "type": "bench.latency"}]}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "ingest failed");
        acks.push((id, sent, Instant::now()));
        tokio::time::sleep(Duration::from_millis(opts.latency_gap_ms)).await;
    }
    wait_for(&arrivals, n + opts.latency_samples).await?;
    let got = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut from_ack = Vec::new();
    let mut from_send = Vec::new();
    for (id, sent, acked) in &acks {
        let at = got[id];
        from_ack.push(at.saturating_duration_since(*acked).as_secs_f64() * 1000.0);
        from_send.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
    }
    from_ack.sort_by(f64::total_cmp);
    from_send.sort_by(f64::total_cmp);

    // The delivery state is recorded: the router's stats count every one.
    let stats: serde_json::Value = client
        .get(format!("{url}/subscriptions/{sub}/stats"))
        .bearer_auth(crate::ADMIN_TOKEN)
        .header("X-Namespace", "bench")
        .send()
        .await?
        .json()
        .await?;
    let _ = hook_stop.send(());
    let _ = stop_tx.send(());
    serving.await??;

    Ok(vec![
        Figure::new(&format!("signed webhook deliveries, {n} events, one subscription"), throughput, "deliveries/s")
            .against("plain client → same receiver", ceiling),
        Figure::new(
            &format!("signed webhook deliveries in batches of {}, {n} events", opts.batch_size),
            batched,
            "deliveries/s",
        )
        .against("plain client → same receiver, one event per request", ceiling),
        Figure::new("ingest of the throughput phase (for scale)", n as f64 / ingested.as_secs_f64(), "events/s"),
        Figure::new("ingest ack → receiver p50", percentile(&from_ack, 0.5), "ms"),
        Figure::new("ingest ack → receiver p99", percentile(&from_ack, 0.99), "ms"),
        Figure::new("ingest request → receiver p50", percentile(&from_send, 0.5), "ms"),
        Figure::new("ingest request → receiver p99", percentile(&from_send, 0.99), "ms"),
        Figure::new("deliveries recorded as delivered", stats["delivered"].as_f64().unwrap_or(f64::NAN), "deliveries"),
    ])
}
