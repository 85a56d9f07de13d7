//! Durable ingest over loopback HTTP, against a ceiling measured in the same run.
//!
//! - **Ceiling**: an axum server on the same machine whose `POST /e` only
//!   reads and parses the batch (`{"events":[raw...]}`) and answers 200.
//! - **events.do**: the real server (auth, rate limit, validation, writer
//!   append with fsync before the answer).
//!
//! Both are driven by the same client: `connections` keep-alive
//! connections, each sending 100-event batches back to back.
//!
//! With `against_nats`, the same bodies also go to NATS JetStream (see
//! [`crate::nats`]) through the same timed loop, and events.do and JetStream
//! are compared one event per request as well.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::routing::post;
use bytes::Bytes;

use crate::Figure;

/// Options of the ingest benchmark.
pub struct IngestBench {
    /// Seconds per timed phase.
    pub seconds: f64,
    /// Concurrent client connections at peak.
    pub connections: usize,
    /// Events per batch.
    pub batch: usize,
    /// Also measure NATS JetStream with the same bodies and connections.
    pub against_nats: bool,
}

impl Default for IngestBench {
    fn default() -> Self {
        IngestBench { seconds: 5.0, connections: 32, batch: 100, against_nats: false }
    }
}

/// A realistic event of about 250 bytes.
pub(crate) fn body(batch: usize, seq: u64) -> Bytes {
    let events: Vec<serde_json::Value> = (0..batch)
        .map(|i| {
            let event_type = ["page.view", "order.created", "user.signup", "api.request"][i % 4];
            serde_json::json!({
                "type": event_type,
                "userId": format!("user-{}", (seq as usize * 7 + i) % 5000),
                "sessionId": format!("s-{}", seq % 977),
                "url": "https://shop.example.com/products/42?ref=home",
                "statusCode": 200,
                "durationMs": 12.5 + i as f64,
                "properties": {"plan": "pro", "amount": i * 3, "currency": "EUR"},
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&serde_json::json!({ "events": events })).expect("json"))
}

async fn ceiling_server() -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    async fn parse_only(body: Bytes) -> axum::response::Response {
        use axum::response::IntoResponse;
        match serde_json::from_slice::<events_core::EventBatch>(&body) {
            Ok(b) => axum::Json(serde_json::json!({"ok": true, "received": b.events.len(), "namespace": "bench"}))
                .into_response(),
            Err(_) => axum::http::StatusCode::BAD_REQUEST.into_response(),
        }
    }
    let app = axum::Router::new().route("/e", post(parse_only)).layer(axum::extract::DefaultBodyLimit::max(2 << 20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { drop(rx.await) }).await;
    });
    Ok((url, tx))
}

pub(crate) struct Load {
    pub(crate) events_per_s: f64,
    pub(crate) latencies_ms: Vec<f64>,
    pub(crate) errors: u64,
}

/// One client connection of a timed load: one body in flight at a time.
pub(crate) trait Connection: Send + 'static {
    /// Sends `body` and waits for its acknowledgement; a refusal or failure
    /// comes back as what went wrong (`HTTP 503 OVERLOADED`, ...).
    fn send(&mut self, body: Bytes) -> impl Future<Output = Result<(), String>> + Send;
}

/// `POST /e` on a keep-alive connection of a shared client; accepted means a 2xx answer, read to the end.
struct Http {
    client: reqwest::Client,
    url: String,
    auth: String,
}

impl Connection for Http {
    async fn send(&mut self, body: Bytes) -> Result<(), String> {
        let r = self
            .client
            .post(&self.url)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                let _ = resp.bytes().await;
                Ok(())
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                Err(format!(
                    "HTTP {status} {}: {}",
                    body["code"].as_str().unwrap_or(""),
                    body["error"].as_str().unwrap_or("")
                ))
            }
            Err(e) => Err(format!("request failed: {e}")),
        }
    }
}

/// Sends batches for `seconds`; `rate` (batches/s in total) paces the load if set.
pub(crate) async fn drive(
    url: &str,
    token: &str,
    opts: &IngestBench,
    connections: usize,
    rate: Option<f64>,
) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(connections).build()?;
    let http = (0..connections)
        .map(|_| Http { client: client.clone(), url: format!("{url}/e"), auth: format!("Bearer {token}") })
        .collect();
    timed(http, opts, rate).await
}

/// Sends `opts.batch`-event bodies over each connection for `opts.seconds`,
/// one after another; `rate` (bodies/s in total) paces the load if set. Each
/// accepted body counts `opts.batch` events and one latency, from just before
/// the send to its acknowledgement.
pub(crate) async fn timed<C: Connection>(
    connections: Vec<C>,
    opts: &IngestBench,
    rate: Option<f64>,
) -> anyhow::Result<Load> {
    let n = connections.len();
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..64).map(|s| body(opts.batch, s)).collect());
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(opts.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut connection) in connections.into_iter().enumerate() {
        let (bodies, sent, errors) = (bodies.clone(), sent.clone(), errors.clone());
        let batch = opts.batch as u64;
        let interval = rate.map(|r| Duration::from_secs_f64(n as f64 / r));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c as u64;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let t = Instant::now();
                match connection.send(bodies[(i % 64) as usize].clone()).await {
                    Ok(()) => {
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        sent.fetch_add(batch, Ordering::Relaxed);
                    }
                    Err(why) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first failed request of this phase: {why}");
                        }
                    }
                }
                i += n as u64;
            }
            latencies
        });
    }
    let mut latencies_ms = Vec::new();
    while let Some(l) = tasks.join_next().await {
        latencies_ms.extend(l?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(Load {
        events_per_s: sent.load(Ordering::Relaxed) as f64 / elapsed,
        latencies_ms,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// The median time of a 200-byte append followed by `fdatasync`, in a file
/// under `dir`, over `period`.
fn raw_fsync_ms(dir: &std::path::Path, period: Duration) -> anyhow::Result<f64> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("fsync-probe"))?;
    let record = [b'x'; 200];
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < period {
        let t = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(percentile(&times, 0.5))
}

/// Totals of the writer path's metrics, read from the server's `/metrics`,
/// so the benchmark can tell a phase's commits and syncs apart.
#[derive(Debug, Default, Clone, Copy)]
struct WriterPath {
    /// WAL syncs of writer shards.
    syncs: f64,
    /// Seconds spent in WAL syncs (every class that syncs; writers dominate).
    sync_seconds: f64,
    /// Commits of writer shards.
    commits: f64,
    /// Requests in those commits.
    committed_requests: f64,
    /// Events waiting in the outbox for the lake relay, now.
    lake_backlog: f64,
    /// Accepted requests, and their summed time from the pipeline's start to the ack.
    acks: f64,
    ack_seconds: f64,
    /// Commits of every class, and their summed time.
    all_commits: f64,
    commit_seconds: f64,
    /// Calls to writer shards, and their summed time (mailbox, run, commit, sync).
    writer_calls: f64,
    writer_call_seconds: f64,
    /// Summed time from each sync's start to the release of its answers.
    sync_release_seconds: f64,
}

impl WriterPath {
    async fn read(client: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let text = client.get(format!("{url}/metrics")).send().await?.error_for_status()?.text().await?;
        let writer = "class=\"EventWriter\"";
        Ok(WriterPath {
            syncs: metric_sum(&text, "events_runtime_wal_syncs_total", writer),
            sync_seconds: metric_sum(&text, "events_runtime_wal_sync_seconds_sum", ""),
            commits: metric_sum(&text, "events_runtime_batch_requests_count", writer),
            committed_requests: metric_sum(&text, "events_runtime_batch_requests_sum", writer),
            lake_backlog: metric_sum(&text, "events_outbox_backlog", "consumer=\"lake\""),
            acks: metric_sum(&text, "events_ingest_ack_seconds_count", ""),
            ack_seconds: metric_sum(&text, "events_ingest_ack_seconds_sum", ""),
            all_commits: metric_sum(&text, "events_runtime_commit_seconds_count", ""),
            commit_seconds: metric_sum(&text, "events_runtime_commit_seconds_sum", ""),
            writer_calls: metric_sum(&text, "events_runtime_call_seconds_count", writer),
            writer_call_seconds: metric_sum(&text, "events_runtime_call_seconds_sum", writer),
            sync_release_seconds: metric_sum(&text, "events_runtime_wal_sync_release_seconds_sum", ""),
        })
    }

    /// What happened between `before` and `self`, over `seconds`.
    fn since(&self, before: &WriterPath, seconds: f64) -> Vec<Figure> {
        let syncs = self.syncs - before.syncs;
        let commits = self.commits - before.commits;
        vec![
            Figure::new("peak: writer WAL syncs per second", syncs / seconds, "syncs/s"),
            Figure::new("peak: mean WAL sync", 1e3 * (self.sync_seconds - before.sync_seconds) / syncs.max(1.0), "ms"),
            Figure::new(
                "peak: mean WAL sync start to its answers' release",
                1e3 * (self.sync_release_seconds - before.sync_release_seconds) / syncs.max(1.0),
                "ms",
            ),
            Figure::new(
                "peak: appends per writer commit",
                (self.committed_requests - before.committed_requests) / commits.max(1.0),
                "requests",
            ),
            Figure::new(
                "peak: mean commit (every object)",
                1e3 * (self.commit_seconds - before.commit_seconds) / (self.all_commits - before.all_commits).max(1.0),
                "ms",
            ),
            Figure::new(
                "peak: mean writer call (mailbox, run, commit, WAL sync)",
                1e3 * (self.writer_call_seconds - before.writer_call_seconds)
                    / (self.writer_calls - before.writer_calls).max(1.0),
                "ms",
            ),
            Figure::new(
                "peak: mean time in the server's pipeline (validation to ack)",
                1e3 * (self.ack_seconds - before.ack_seconds) / (self.acks - before.acks).max(1.0),
                "ms",
            ),
            Figure::new("peak: events waiting for the lake relay at its end", self.lake_backlog, "events"),
        ]
    }
}

/// The sum of every sample of `name` whose labels contain `label`.
fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() { dir_bytes(&p) } else { e.metadata().map_or(0, |m| m.len()) };
        }
    }
    total
}

/// Runs the ingest figures; with `against_nats`, then the NATS JetStream
/// peer's and the comparison.
pub async fn run(opts: &IngestBench) -> anyhow::Result<Vec<Figure>> {
    // Find (or install) the peer before anything is timed.
    let nats_binary = opts.against_nats.then(crate::nats::find_or_install);
    if let Some(Err(why)) = &nats_binary {
        eprintln!("skipping the NATS JetStream peer: {why}; the events.do figures follow");
    }
    let dir = tempfile::tempdir()?;
    let config = crate::server_config(dir.path());
    let server = events_server::Server::bind(config).await?;
    let url = format!("http://{}", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move { drop(stop_rx.await) }));
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{url}/admin/namespaces/bench/keys"))
        .bearer_auth(crate::ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let key = created["key"].as_str().ok_or_else(|| anyhow::anyhow!("no key: {created}"))?.to_string();

    // One event per request over one connection while the server is idle:
    // the latency floor, next to a bare append + fdatasync on the same disk.
    let fsync_ms = raw_fsync_ms(dir.path(), Duration::from_secs(1))?;
    let idle = IngestBench { batch: 1, seconds: opts.seconds.min(3.0), ..*opts };
    drive(&url, &key, &IngestBench { seconds: 0.5, ..idle }, 1, None).await?;
    let idle_singles = drive(&url, &key, &idle, 1, None).await?;

    let (ceiling_url, ceiling_stop) = ceiling_server().await?;
    // Warm up both, then measure.
    let warm = IngestBench { seconds: 1.0, ..*opts };
    drive(&ceiling_url, "x", &warm, opts.connections, None).await?;
    drive(&url, &key, &warm, opts.connections, None).await?;
    let ceiling = drive(&ceiling_url, "x", opts, opts.connections, None).await?;
    let before_peak = WriterPath::read(&client, &url).await?;
    let peak = drive(&url, &key, opts, opts.connections, None).await?;
    let writer_path = WriterPath::read(&client, &url).await?.since(&before_peak, opts.seconds);
    let half_rate = peak.events_per_s / 2.0 / opts.batch as f64;
    let half = drive(&url, &key, opts, opts.connections, Some(half_rate)).await?;
    let _ = ceiling_stop.send(());

    // Storage efficiency: flush, then compare Parquet bytes with the JSON sent.
    client.post(format!("{url}/admin/flush")).bearer_auth(crate::ADMIN_TOKEN).send().await?;
    let events_stored: u64 = (peak.events_per_s * opts.seconds + half.events_per_s * opts.seconds) as u64;
    let sample = body(opts.batch, 1);
    let json_per_event = (sample.len() as f64 - 12.0) / opts.batch as f64;
    let parquet = dir_bytes(&dir.path().join("data/lake")) as f64;

    // One event per request, for the comparison with the peer only.
    let nats_binary = nats_binary.and_then(Result::ok);
    let singles = match nats_binary {
        Some(_) => Some(drive(&url, &key, &IngestBench { batch: 1, ..*opts }, opts.connections, None).await?),
        None => None,
    };
    // Stopped before the peer runs, so that the two never share the machine.
    let _ = stop_tx.send(());
    serving.await??;

    let failed = peak.errors + half.errors + idle_singles.errors + singles.as_ref().map_or(0, |s| s.errors);
    let mut figures = vec![
        Figure::new(
            &format!("durable ingest, {}-event batches, {} connections", opts.batch, opts.connections),
            peak.events_per_s,
            "events/s",
        )
        .against("parse-only HTTP ceiling", ceiling.events_per_s),
        Figure::new("ack latency p50 at half of peak", percentile(&half.latencies_ms, 0.5), "ms"),
        Figure::new("ack latency p99 at half of peak", percentile(&half.latencies_ms, 0.99), "ms"),
        Figure::new(
            "one event per request, one connection, idle server: ack p50",
            percentile(&idle_singles.latencies_ms, 0.5),
            "ms",
        )
        .against("200-byte append + fdatasync, median", fsync_ms),
        Figure::new(
            "one event per request, one connection, idle server: ack p99",
            percentile(&idle_singles.latencies_ms, 0.99),
            "ms",
        ),
        Figure::new("failed requests (all phases)", failed as f64, "requests"),
    ];
    figures.extend(writer_path);
    if events_stored > 0 {
        figures.push(
            Figure::new("Parquet bytes per event", parquet / events_stored as f64, "bytes")
                .against("raw JSON", json_per_event),
        );
    }

    if let (Some(binary), Some(singles)) = (nats_binary, singles) {
        let nats = crate::nats::measure(&binary, opts).await.map_err(|e| e.context("NATS JetStream peer"))?;
        let jetstream = "NATS JetStream, file storage";
        figures.extend([
            Figure::new(
                &format!(
                    "events.do vs JetStream: {}-event batches (one message each), {} connections",
                    opts.batch, opts.connections
                ),
                peak.events_per_s,
                "events/s",
            )
            .against(jetstream, nats.peak.events_per_s),
            Figure::new(
                "events.do vs JetStream: ack latency p50 at half of each one's peak",
                percentile(&half.latencies_ms, 0.5),
                "ms",
            )
            .against(jetstream, percentile(&nats.half.latencies_ms, 0.5)),
            Figure::new(
                "events.do vs JetStream: ack latency p99 at half of each one's peak",
                percentile(&half.latencies_ms, 0.99),
                "ms",
            )
            .against(jetstream, percentile(&nats.half.latencies_ms, 0.99)),
            Figure::new(
                &format!("events.do vs JetStream: one event per request / message, {} connections", opts.connections),
                singles.events_per_s,
                "events/s",
            )
            .against(jetstream, nats.singles.events_per_s),
            Figure::new(
                "events.do vs JetStream: one-event ack latency p50 at peak",
                percentile(&singles.latencies_ms, 0.5),
                "ms",
            )
            .against(jetstream, percentile(&nats.singles.latencies_ms, 0.5)),
            Figure::new(
                "JetStream failed publishes (all phases)",
                (nats.peak.errors + nats.half.errors + nats.singles.errors) as f64,
                "publishes",
            ),
        ]);
    }
    Ok(figures)
}
