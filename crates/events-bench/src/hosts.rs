//! One host against another on the same machine: the same HTTP ingest load
//! (the client of [`crate::ingest`]) sent to two running servers, typically
//! the Cloudflare Worker in local workerd (`scripts/worker.sh bench`) and the
//! native `events serve`.
//!
//! Informative only: local workerd is a single process on this machine, while
//! Cloudflare spreads Durable Objects over many machines.

use crate::Figure;
use crate::ingest::{IngestBench, Load, drive, percentile};

/// Longest time the setup requests may take.
const SETUP_TIMEOUT_S: u64 = 30;

/// A running server the benchmark drives.
#[derive(Debug, Clone)]
pub struct Target {
    /// What the figures call it.
    pub label: String,
    /// Base URL, without a trailing `/`.
    pub base_url: String,
    /// Its admin token (creates the benchmark's namespace key).
    pub admin_token: String,
}

/// Options of the host comparison.
#[derive(Debug, Clone)]
pub struct HostsBench {
    /// The host measured.
    pub target: Target,
    /// The host it is compared against.
    pub reference: Target,
    /// Seconds per timed phase.
    pub seconds: f64,
    /// Concurrent connections of the batch phase.
    pub connections: usize,
    /// Events per batch in the batch phase.
    pub batch: usize,
}

/// Creates a key for a fresh namespace on `target`.
async fn namespace_key(target: &Target) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(SETUP_TIMEOUT_S)).build()?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let ns = format!("bench-{nanos:08x}");
    let created: serde_json::Value = client
        .post(format!("{}/admin/namespaces/{ns}/keys", target.base_url))
        .bearer_auth(&target.admin_token)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    created["key"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("{}: no key in {created}", target.label))
}

/// The two phases on one host: batches over many connections, then single
/// events over one connection (one request at a time through the
/// namespace's objects: the per-object request rate).
async fn phases(target: &Target, opts: &HostsBench) -> anyhow::Result<(Load, Load)> {
    let key = namespace_key(target).await?;
    let batches =
        IngestBench { seconds: opts.seconds, connections: opts.connections, batch: opts.batch, against_nats: false };
    let singles = IngestBench { seconds: opts.seconds, connections: 1, batch: 1, against_nats: false };
    let warm = IngestBench { seconds: 1.0, ..batches };
    drive(&target.base_url, &key, &warm, warm.connections, None).await?;
    let batch_load = drive(&target.base_url, &key, &batches, batches.connections, None).await?;
    let single_load = drive(&target.base_url, &key, &singles, 1, None).await?;
    Ok((batch_load, single_load))
}

/// Runs the comparison: the reference host first, then the target.
pub async fn run(opts: &HostsBench) -> anyhow::Result<Vec<Figure>> {
    assert!(opts.connections >= 1 && opts.batch >= 1, "at least one connection and one event per batch");
    let (ref_batches, ref_singles) = phases(&opts.reference, opts).await?;
    let (batches, singles) = phases(&opts.target, opts).await?;
    let (t, r) = (&opts.target.label, &opts.reference.label);
    Ok(vec![
        Figure::new(
            &format!("{t}: durable ingest, {}-event batches, {} connections", opts.batch, opts.connections),
            batches.events_per_s,
            "events/s",
        )
        .against(r, ref_batches.events_per_s),
        Figure::new(&format!("{t}: ack latency p50 at peak"), percentile(&batches.latencies_ms, 0.5), "ms")
            .against(r, percentile(&ref_batches.latencies_ms, 0.5)),
        Figure::new(
            &format!("{t}: one-event requests/s on one connection (one namespace's objects)"),
            singles.events_per_s,
            "requests/s",
        )
        .against(r, ref_singles.events_per_s),
        Figure::new(&format!("{t}: one-event request latency p50"), percentile(&singles.latencies_ms, 0.5), "ms")
            .against(r, percentile(&ref_singles.latencies_ms, 0.5)),
        Figure::new(
            &format!("{t}: failed requests (all phases)"),
            (batches.errors + singles.errors) as f64,
            "requests",
        )
        .against(r, (ref_batches.errors + ref_singles.errors) as f64),
    ])
}
