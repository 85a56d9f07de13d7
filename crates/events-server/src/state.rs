//! The state shared by every handler.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::ServerConfig;

/// Shared server state: cheap to clone (one `Arc`), read through `Deref` to [`AppStateInner`].
///
/// Handlers take it as `State(state): State<AppState>` and read `state.config`, `state.metrics`, ...
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

/// The fields of [`AppState`].
pub struct AppStateInner {
    /// The effective configuration.
    pub config: ServerConfig,
    /// The process-wide Prometheus handle (rendered by `GET /metrics`).
    pub metrics: PrometheusHandle,
    /// When this state was built (≈ server start).
    pub started_at: Instant,
    /// The durable-object host running every object.
    pub host: events_host_native::NativeHost,
    /// Authentication (admin token, key cache).
    pub auth: crate::auth::Auth,
    /// The ingest pipeline's shared state.
    pub ingest: crate::ingest::Ingest,
    /// Parquet footers and file statistics cached per namespace for `POST /query`.
    pub query_caches: events_query::QueryCaches,
    /// Open live-tail streams per namespace (`GET /events/stream`); closed on shutdown.
    pub streams: std::sync::Arc<events_api::tail::StreamSlots>,
    // ------------------------------------------------------------------
    // Extension point: subsystems add their handles below and build them
    // in `AppState::new` (e.g. the durable-object host of
    // `events-host-native`, ingest rate limiters, the lake writer).
    // Keep every field cheap to share (`Arc` or a handle type).
    // ------------------------------------------------------------------
}

impl AppState {
    /// Builds the state for `config`.
    /// Starts the object host, so it must run inside a tokio runtime.
    pub fn new(config: ServerConfig) -> anyhow::Result<AppState> {
        let admin_token = crate::auth::Auth::load_admin_token(config.admin_token.as_deref(), &config.data_dir)?;
        let host = crate::objects::start_host(&config)?;
        Ok(AppState(Arc::new(AppStateInner {
            metrics: crate::telemetry::metrics_handle(),
            started_at: Instant::now(),
            host,
            auth: crate::auth::Auth::new(admin_token, config.dev),
            ingest: crate::ingest::Ingest::default(),
            query_caches: events_query::QueryCaches::default(),
            streams: events_api::tail::StreamSlots::new(events_api::tail::MAX_STREAMS_PER_NAMESPACE),
            config,
        })))
    }
}

impl Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.config.listen)
            .field("env", &self.config.env)
            .finish_non_exhaustive()
    }
}
