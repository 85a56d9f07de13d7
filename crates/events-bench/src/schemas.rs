//! Schema validation cost at ingest, as a ratio to validation-free ingest measured in the same run.
//!
//! One in-process server, two namespaces: `plain` (no schema) and `validated`
//! (a strict 20-field schema for `order.created`, with formats, a pattern,
//! enums, bounds and a `$ref`). The same client load of 20-field events goes
//! to each, in alternating phases (plain, validated, plain, validated) so
//! drift on a noisy machine hits both. A second figure is the raw
//! validator rate on one core (no HTTP, no storage).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::Figure;

/// Options of the schema benchmark.
pub struct SchemaBench {
    /// Seconds per timed phase (two phases per namespace).
    pub seconds: f64,
    /// Concurrent client connections.
    pub connections: usize,
    /// Events per batch.
    pub batch: usize,
}

impl Default for SchemaBench {
    fn default() -> Self {
        SchemaBench { seconds: 4.0, connections: 32, batch: 100 }
    }
}

/// A realistic 20-field order schema.
pub fn order_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"money": {"type": "number", "minimum": 0}},
        "type": "object",
        "properties": {
            "orderId": {"type": "string", "pattern": "^ord_[0-9]{1,12}$"},
            "customerId": {"type": "string", "minLength": 1, "maxLength": 64},
            "email": {"type": "string", "format": "email"},
            "createdAt": {"type": "string", "format": "date-time"},
            "currency": {"enum": ["EUR", "USD", "GBP"]},
            "subtotal": {"$ref": "#/$defs/money"},
            "tax": {"$ref": "#/$defs/money"},
            "shipping": {"$ref": "#/$defs/money"},
            "total": {"$ref": "#/$defs/money"},
            "items": {"type": "integer", "minimum": 1, "maximum": 500},
            "channel": {"enum": ["web", "ios", "android", "pos"]},
            "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
            "city": {"type": "string", "maxLength": 100},
            "postalCode": {"type": "string", "maxLength": 16},
            "coupon": {"type": ["string", "null"]},
            "giftWrap": {"type": "boolean"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 9},
            "notes": {"type": "string", "maxLength": 500},
            "sessionId": {"type": "string"},
            "ip": {"type": "string", "format": "ipv4"}
        },
        "required": ["orderId", "customerId", "email", "currency", "total", "items"],
        "additionalProperties": false
    })
}

/// A valid 20-field order event.
pub fn order_event(i: u64) -> Value {
    json!({
        "type": "order.created",
        "orderId": format!("ord_{i}"),
        "customerId": format!("cus-{}", i % 5000),
        "email": format!("buyer{}@shop.example.com", i % 5000),
        "createdAt": "2026-11-28T12:00:00Z",
        "currency": "EUR",
        "subtotal": 40.0, "tax": 8.0, "shipping": 4.5, "total": 52.5,
        "items": 3, "channel": "web", "country": "DE", "city": "Berlin", "postalCode": "10115",
        "coupon": null, "giftWrap": false, "priority": 1, "notes": "leave at the door",
        "sessionId": format!("s-{}", i % 977), "ip": "203.0.113.7"
    })
}

fn body(batch: usize, seq: u64) -> Bytes {
    let events: Vec<Value> = (0..batch as u64).map(|i| order_event(seq * batch as u64 + i)).collect();
    Bytes::from(serde_json::to_vec(&json!({ "events": events })).expect("json"))
}

/// Sends batches for `seconds` from `connections` connections; events/s accepted, and failures.
async fn drive(url: &str, key: &str, opts: &SchemaBench) -> anyhow::Result<(f64, u64)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(opts.connections).build()?;
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..64).map(|s| body(opts.batch, s)).collect());
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(opts.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..opts.connections {
        let (client, bodies, sent, errors) = (client.clone(), bodies.clone(), sent.clone(), errors.clone());
        let (url, auth, batch, step) =
            (format!("{url}/e"), format!("Bearer {key}"), opts.batch as u64, opts.connections);
        tasks.spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let r = client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(bodies[i % 64].clone())
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        sent.fetch_add(batch, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += step;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r?;
    }
    Ok((sent.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(), errors.load(Ordering::Relaxed)))
}

async fn key(client: &reqwest::Client, url: &str, ns: &str) -> anyhow::Result<String> {
    let created: Value = client
        .post(format!("{url}/admin/namespaces/{ns}/keys"))
        .bearer_auth(crate::ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    Ok(created["key"].as_str().ok_or_else(|| anyhow::anyhow!("no key: {created}"))?.to_string())
}

/// Validator throughput on one core, events/s (compiled once, as the registry caches it).
pub fn raw_validation_rate(seconds: f64) -> anyhow::Result<f64> {
    let validator =
        events_objects::schema_registry::compile_schema(&order_schema()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let events: Vec<Value> = (0..256)
        .map(|i| {
            let mut e = order_event(i);
            e.as_object_mut().map(|o| o.remove("type"));
            e
        })
        .collect();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for e in &events {
            let errors = events_objects::schema_registry::violations(&validator, e);
            assert!(errors.is_empty(), "the benchmark event must be valid: {errors:?}");
            n += 1;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs the schema figures.
pub async fn run(opts: &SchemaBench) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let config = crate::server_config(dir.path());
    let server = events_server::Server::bind(config).await?;
    let url = format!("http://{}", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move { drop(stop_rx.await) }));
    let client = reqwest::Client::new();
    let plain = key(&client, &url, "plain").await?;
    let validated = key(&client, &url, "validated").await?;
    let r = client
        .post(format!("{url}/schemas/validated"))
        .bearer_auth(crate::ADMIN_TOKEN)
        .json(&json!({"type": "order.created", "schema": order_schema(), "mode": "strict"}))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "schema registration failed: {}", r.text().await?);

    let warm = SchemaBench { seconds: 1.0, ..*opts };
    drive(&url, &plain, &warm).await?;
    drive(&url, &validated, &warm).await?;
    let (mut plain_rate, mut validated_rate, mut failures) = (0.0, 0.0, 0);
    for _ in 0..2 {
        let (p, e1) = drive(&url, &plain, opts).await?;
        let (v, e2) = drive(&url, &validated, opts).await?;
        plain_rate += p / 2.0;
        validated_rate += v / 2.0;
        failures += e1 + e2;
    }
    let _ = stop_tx.send(());
    serving.await??;
    let raw = raw_validation_rate(opts.seconds.min(2.0))?;
    Ok(vec![
        Figure::new(
            &format!(
                "durable ingest with a strict 20-field schema, {}-event batches, {} connections",
                opts.batch, opts.connections
            ),
            validated_rate,
            "events/s",
        )
        .against("same run, namespace without schemas", plain_rate),
        Figure::new("schema validation alone, one core (20-field event)", raw, "events/s"),
        Figure::new("failed requests (all phases)", failures as f64, "requests"),
    ])
}
