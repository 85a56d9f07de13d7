//! Logging and metrics set-up, once per process.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Name of the request counter.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Name of the request latency histogram.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";

/// Name of the gauge of open client connections.
pub const HTTP_CONNECTIONS_OPEN: &str = "events_http_connections_open";
/// Name of the gauge of the connection cap in force.
pub const HTTP_CONNECTIONS_LIMIT: &str = "events_http_connections_limit";
/// Name of the counter of refused connections, by `reason`.
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "events_http_connections_refused_total";
/// Name of the counter of connections closed by a timeout, by `reason`.
pub const HTTP_CONNECTIONS_CLOSED_TOTAL: &str = "events_http_connections_closed_total";

/// Buckets of [`HTTP_REQUEST_DURATION_SECONDS`], in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How often histogram data is drained when nobody scrapes `/metrics`.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the tracing subscriber, writing to stderr (stdout carries only the
/// "listening" line). The filter comes from `RUST_LOG`, default `info`.
///
/// Returns false if a subscriber was already installed (it is then kept).
pub fn init_tracing(format: LogFormat) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    result.is_ok()
}

/// The process-wide Prometheus handle, installing the global recorder on first use.
///
/// Several servers in one process (tests) share it. If some other global
/// recorder was installed first, the handle renders an empty registry.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_REQUEST_DURATION_SECONDS.to_string()), LATENCY_BUCKETS)
                .expect("latency buckets are not empty");
            let handle = match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
            }
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests answered, by method, route template and status.");
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request (until the response head), by method and route template."
    );
    metrics::describe_gauge!(HTTP_CONNECTIONS_OPEN, "Client connections open.");
    metrics::describe_gauge!(
        HTTP_CONNECTIONS_LIMIT,
        "Most client connections open at once ([http] max_connections within the open-file limit)."
    );
    metrics::describe_counter!(
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        "Client connections refused at a cap, by reason (max_connections, max_connections_per_ip)."
    );
    metrics::describe_counter!(
        HTTP_CONNECTIONS_CLOSED_TOTAL,
        "Client connections closed by a timeout, by reason (header_timeout, keep_alive_timeout)."
    );
    use events_api::tail::{METRIC_EVENTS, METRIC_LAGGED, METRIC_OPEN, METRIC_REFUSED};
    metrics::describe_gauge!(METRIC_OPEN, "Live-tail streams open (GET /events/stream).");
    metrics::describe_counter!(METRIC_LAGGED, "Live-tail streams ended with `event: lagged` (the client fell behind).");
    metrics::describe_counter!(METRIC_REFUSED, "Live-tail streams refused at the per-namespace limit (429).");
    metrics::describe_counter!(METRIC_EVENTS, "Events sent to live-tail clients.");
    // Shown from the start, not only once a stream lags or is refused.
    metrics::gauge!(METRIC_OPEN).increment(0.0);
    metrics::counter!(METRIC_LAGGED).absolute(0);
    metrics::counter!(METRIC_REFUSED).absolute(0);
}
