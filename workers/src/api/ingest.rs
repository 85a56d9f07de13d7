//! `POST /e` (and the deprecated `POST /ingest`): authentication and the
//! body here; everything else is the shared pipeline
//! ([`events_api::ingest::pipeline`]), as on the native server.

use std::cell::RefCell;
use std::collections::HashSet;

use events_api::ingest::pipeline::{Background, Ingest, IngestHooks, IngestRequest, IngestSettings, rate_headers};
use events_core::{ApiError, Event};
use events_objects::event_writer::Appended;
use events_objects::tenant::NamespaceLimits;
use events_runtime::Host;

use super::auth::{authenticate, authenticate_ingest};
use super::config::WorkerConfig;
use super::{ApiResult, Call, json};
use crate::directory::{DIRECTORY_NAME, DirectoryRequest};
use crate::host::CfHost;

thread_local! {
    /// Writer names this isolate already recorded in the directory.
    static KNOWN_WRITERS: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// This isolate's pipeline state: cached layouts, in-flight counts, limit counts.
    static INGEST: Ingest = Ingest::default();
}

/// Most writer names remembered per isolate (cleared when full).
const KNOWN_WRITERS_CAPACITY: usize = 10_000;

/// The Worker's hook: writers are listed in the [`crate::directory`] object
/// (Durable Objects cannot be enumerated), recorded before their first append.
struct DirectoryHooks<'a>(&'a CfHost);

impl IngestHooks for DirectoryHooks<'_> {
    async fn before_append(&self, writer: &str) -> Result<(), ApiError> {
        if KNOWN_WRITERS.with(|k| k.borrow().contains(writer)) {
            return Ok(());
        }
        self.0
            .call::<crate::directory::Directory>(DIRECTORY_NAME, DirectoryRequest::AddWriter(writer.to_string()))
            .await?;
        KNOWN_WRITERS.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() >= KNOWN_WRITERS_CAPACITY {
                k.clear();
            }
            k.insert(writer.to_string());
        });
        Ok(())
    }
}

fn ingest_state() -> Ingest {
    INGEST.with(Ingest::clone)
}

/// Forgets that `ns` had no schemas (after a registration through this isolate).
pub fn invalidate_schemas(ns: &str) {
    ingest_state().invalidate_schemas(ns);
}

/// Forgets this isolate's cached layout and limits of `ns` (after a limits change).
pub fn invalidate_limits(ns: &str) {
    ingest_state().invalidate(ns);
}

/// The pipeline settings of the Worker's configuration.
fn settings(config: &WorkerConfig) -> IngestSettings {
    IngestSettings {
        max_body_bytes: config.max_body_bytes,
        max_events_per_batch: config.max_events_per_batch,
        max_event_bytes: config.max_event_bytes,
        defaults: NamespaceLimits {
            requests_per_minute: Some(config.requests_per_minute),
            events_per_minute: Some(config.events_per_minute),
            events_per_day: Some(config.events_per_day),
        },
        rate_limit_fail_open: false,
        backpressure_inflight: events_api::ingest::pipeline::DEFAULT_BACKPRESSURE_INFLIGHT,
    }
}

/// Runs background work after the answer (the writer's and limiters' own
/// alarms cover an isolate that goes away first).
fn spawn_background(host: &CfHost, work: Vec<Background>) {
    for item in work {
        let host = host.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = item.run(&host, &ingest_state()).await {
                worker::console_warn!("ingest background work failed: {e}");
            }
        });
    }
}

/// Serves `POST /e`; `deprecated` adds the headers of the `/ingest` alias.
pub async fn ingest(call: &mut Call, deprecated: bool) -> ApiResult {
    let mut response = run(call, deprecated).await?;
    if deprecated {
        let _ = response.headers_mut().set("deprecation", "true");
        let _ = response.headers_mut().set("link", "</e>; rel=\"successor-version\"");
    }
    Ok(response)
}

async fn run(call: &mut Call, deprecated: bool) -> ApiResult {
    // Publishable keys are for `POST /e` only, not its deprecated alias.
    let caller = if deprecated { authenticate(call).await? } else { authenticate_ingest(call).await? };
    let host = call.host.clone();
    let settings = settings(&call.config);
    let body = match call.body(settings.max_body_bytes).await {
        Ok(body) => body,
        Err(e) => return super::error_response(&e).map_err(|e| crate::host::platform("answer", e)),
    };
    let request = IngestRequest {
        namespace: &caller.namespace,
        limiter_subject: &caller.limiter_subject(call.client_ip.as_deref()),
        key_rate_limit: caller.key_rate_limit(),
        headers: &call.headers,
        body: &body,
    };
    let outcome = ingest_state().run(&host, &DirectoryHooks(&host), &settings, request).await;
    spawn_background(&host, outcome.background);
    let mut response = match &outcome.result {
        Ok(accepted) => json(200, &accepted.body())?,
        Err(error) => super::error_response(error).map_err(|e| crate::host::platform("answer", e))?,
    };
    let headers = response.headers_mut();
    if let Some(secs) = outcome.retry_after {
        let _ = headers.set("retry-after", &secs.to_string());
    }
    for (name, value) in outcome.rate.as_ref().map(rate_headers).unwrap_or_default() {
        let _ = headers.set(name, &value);
    }
    Ok(response)
}

/// Appends events the Worker made itself (inbound webhooks) through the
/// pipeline's append step.
pub async fn store(
    call: &Call,
    ns: &str,
    events: Vec<Event>,
    server_ids: Vec<bool>,
    batch_id: Option<String>,
) -> Result<Appended, ApiError> {
    let host = &call.host;
    let (appended, _, background) = ingest_state()
        .store(host, &DirectoryHooks(host), &settings(&call.config), ns, events, server_ids, batch_id)
        .await?;
    spawn_background(host, background);
    Ok(appended)
}
