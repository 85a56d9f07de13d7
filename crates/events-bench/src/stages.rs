//! The ingest path taken apart: each stage's cost per event, measured alone
//! on one thread in the same run, with the same 100-event batches as
//! [`crate::ingest`].
//!
//! A stage's figure is the rate one core sustains doing only that stage. The
//! end-to-end rate on `c` cores can be no higher than `c` over the sum of the
//! per-event costs, so the table shows which stage holds ingest back. The
//! writer stage is different: it is one object (one thread) taking appends
//! from many callers with group commit, fsync included, so it is the ceiling
//! of one writer shard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events_api::ingest::{decode_body, encode_events, validate_events_with_origin};
use events_core::event::EventLimits;
use events_core::{Event, Timestamp};
use events_lake::StoredEvent;
use events_lake::columns::DataColumn;
use events_objects::EventWriter;
use events_objects::event_writer::{WriterRequest, writer_name};
use events_objects::outbox::{OutboxRow, decode_matching};
use serde_json::value::RawValue;

use crate::Figure;

/// Events per batch, as in the ingest benchmark.
const BATCH: usize = 100;
/// Callers appending to the writer at once (the ingest benchmark's connections).
const WRITER_CALLERS: usize = 32;

/// Options of the stage benchmark.
pub struct StagesBench {
    /// Seconds per stage.
    pub seconds: f64,
}

impl Default for StagesBench {
    fn default() -> Self {
        StagesBench { seconds: 1.0 }
    }
}

/// Runs `step` (which handles `events` events) for `seconds`; answers events/s.
fn rate(seconds: f64, events: usize, mut step: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        step();
        done += events;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The same, for async steps.
async fn rate_async<F: std::future::Future<Output = ()>>(
    seconds: f64,
    events: usize,
    mut step: impl FnMut() -> F,
) -> f64 {
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        step().await;
        done += events;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Runs the stage figures.
pub async fn run(opts: &StagesBench) -> anyhow::Result<Vec<Figure>> {
    let seconds = opts.seconds;
    let dir = tempfile::tempdir()?;
    let config = crate::server_config(dir.path());
    let state = events_server::state::AppState::new(config.clone())?;
    let host = state.host.clone();
    let body = crate::ingest::body(BATCH, 7);
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let now = Timestamp(chrono_now_ms());
    let limits = EventLimits { max_event_bytes: config.ingest.max_event_bytes, ..EventLimits::default() };
    let mut stages: Vec<(&str, f64)> = Vec::new();

    // HTTP body → raw events.
    let decoded = decode_body(&headers, &body, config.max_body_bytes)?;
    stages.push((
        "decode (body → raw events)",
        rate(seconds, BATCH, || {
            std::hint::black_box(decode_body(&headers, &body, config.max_body_bytes).expect("decodes"));
        }),
    ));
    // Raw events → validated events.
    let mut random = || 0x1234_5678_9abc_def0_u128;
    let validated = validate_events_with_origin(&decoded.events, "bench", now, &limits, &mut random)?;
    let encoded = encode_events(&decoded.events, "bench", now, &limits, &mut random)?;
    stages.push((
        "validate (raw → stored form, ids, checks)",
        rate(seconds, BATCH, || {
            std::hint::black_box(encode_events(&decoded.events, "bench", now, &limits, &mut random).expect("valid"));
        }),
    ));
    // Authentication from the verified-key cache.
    let created = host
        .call_object::<events_objects::Tenant>(
            "bench",
            events_objects::tenant::TenantRequest::CreateKey { name: Some("stages".into()) },
        )
        .await?;
    let events_objects::tenant::TenantResponse::KeyCreated { key, .. } = created else {
        anyhow::bail!("the tenant made no key: {created:?}");
    };
    let mut auth_headers = headers.clone();
    auth_headers.insert(http::header::AUTHORIZATION, format!("Bearer {key}").parse()?);
    state.auth.authenticate(&host, &auth_headers).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    stages.push((
        "authenticate (cached key)",
        rate_async(seconds, BATCH, || async {
            std::hint::black_box(state.auth.authenticate(&host, &auth_headers).await.expect("known key"));
        })
        .await,
    ));
    // Rate limit counted in process.
    let limits_state = state.ingest.limits.clone();
    stages.push((
        "rate limit (in process)",
        rate_async(seconds, BATCH, || async {
            let (decision, _) = limits_state
                .check_rate(&host, "key:bench", u64::MAX / 4, u64::MAX / 4, BATCH as u64)
                .await
                .expect("checks");
            std::hint::black_box(decision);
        })
        .await,
    ));

    // Parquet encoding of a flush (runs on a relay, off the request path).
    let flush: Vec<Event> = (0..200).flat_map(|_| validated.events.iter().cloned()).collect();
    let columns: Vec<DataColumn> =
        events_lake::observe_columns(&flush).into_iter().map(|(name, kind)| DataColumn { name, kind }).collect();
    // The relay reads the stored JSON without decoding `data`, then encodes.
    let stored: Vec<String> = flush.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    stages.push((
        "flush: read stored events (relay)",
        rate(seconds, flush.len(), || {
            let views: Vec<StoredEvent<'_>> = stored.iter().map(|s| StoredEvent::parse(s).expect("reads")).collect();
            std::hint::black_box(views);
        }),
    ));
    let views: Vec<StoredEvent<'_>> = stored.iter().map(|s| StoredEvent::parse(s)).collect::<Result<_, _>>()?;
    let refs: Vec<&StoredEvent<'_>> = views.iter().collect();
    stages.push((
        "flush: Parquet encode (relay)",
        rate(seconds, flush.len(), || {
            std::hint::black_box(events_lake::encode_events_with(&refs, &columns).expect("encodes"));
        }),
    ));
    // Fan-out: a consumer scans a row for types, and decodes what it takes.
    let row = OutboxRow {
        last_seq: BATCH as u64,
        count: BATCH as u64,
        events: RawValue::from_string(serde_json::to_string(&validated.events)?)?,
        types: None,
    };
    let listed = OutboxRow { types: Some(vec!["bench.other".into()]), ..row.clone() };
    let rows = [row];
    stages.push((
        "fan-out: type scan, nothing taken (relay)",
        rate(seconds, BATCH, || {
            std::hint::black_box(decode_matching(&rows, 0, |_| false).expect("scans"));
        }),
    ));
    let listed = [listed];
    stages.push((
        "fan-out: row with listed types, nothing taken (relay)",
        rate(seconds, BATCH, || {
            std::hint::black_box(decode_matching(&listed, 0, |t| t.starts_with("cdc.")).expect("skips"));
        }),
    ));
    stages.push((
        "fan-out: full decode (relay)",
        rate(seconds, BATCH, || {
            std::hint::black_box(decode_matching(&rows, 0, |_| true).expect("decodes"));
        }),
    ));

    // One writer shard: appends from many callers, group commit, fsync.
    let writer = Arc::new(writer_name("bench", 0));
    let events = Arc::new(encoded);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..WRITER_CALLERS {
        let (host, writer, events) = (host.clone(), writer.clone(), events.clone());
        callers.spawn(async move {
            let mut appended = 0usize;
            while Instant::now() < deadline {
                let request = WriterRequest::Append { events: (*events).clone(), batch_id: None };
                host.call_object::<EventWriter>(&writer, request).await.expect("appends");
                appended += BATCH;
            }
            appended
        });
    }
    let mut appended = 0;
    while let Some(n) = callers.join_next().await {
        appended += n?;
    }
    let writer_rate = appended as f64 / started.elapsed().as_secs_f64();

    let mut figures = Vec::new();
    let request_path = ["decode", "validate", "authenticate", "rate limit"];
    let mut path_cost_us = 0.0;
    for (name, per_s) in &stages {
        if request_path.iter().any(|p| name.starts_with(p)) {
            path_cost_us += 1e6 / per_s;
        }
        figures.push(Figure::new(&format!("{name}, one core"), *per_s, "events/s").against("target", 1e6));
    }
    figures.push(
        Figure::new(
            &format!("one writer shard: append + group commit + fsync, {WRITER_CALLERS} callers"),
            writer_rate,
            "events/s",
        )
        .against("target", 1e6),
    );
    figures.push(Figure::new("request-path CPU before the append (sum of the first four)", path_cost_us, "µs/event"));
    events_server::objects::stop_host(&state.host).await;
    Ok(figures)
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
