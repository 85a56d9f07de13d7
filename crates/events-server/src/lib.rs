//! The HTTP server of events.do.
//!
//! - [`config`]: [`ServerConfig`] and its layered loading.
//! - [`error`]: the error envelope as a response, and the [`ApiJson`] extractor.
//! - [`routes`]: the route modules and the OpenAPI document built from them.
//! - [`middleware`]: request id, tracing, metrics, timeout.
//! - [`state`]: [`AppState`], shared by all handlers.
//!
//! [`serve`] binds, prints `events.do listening on http://ADDR` on stdout and
//! serves until the shutdown future completes.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method};
use events_api::ingest::pipeline::Background;
use tokio::net::TcpListener;
use tower_http::cors::{Any, CorsLayer};

pub mod auth;
pub mod config;
pub mod conn;
pub mod error;
pub mod ingest;
pub mod middleware;
pub mod objects;
pub use events_api::reader;
pub mod routes;
pub mod state;
pub mod telemetry;
pub use events_api::webhooks;

pub use config::{ConfigError, ConfigOverrides, LogFormat, ServerConfig};
pub use config::{cdc as cdc_config, http as http_config, query as query_config};
pub use error::{ApiErrorResponse, ApiJson};
pub use state::AppState;
pub use telemetry::init_tracing;

/// The complete application: every route module, fallbacks and middleware.
pub fn router(state: AppState) -> Router {
    let (api, _doc) = routes::api().split();
    let timeout = Duration::from_millis(state.config.request_timeout_ms);
    api.method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        // Innermost first; `Router::layer` wraps each route after routing, so
        // `observe` sees the matched route template.
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(timeout, middleware::timeout))
        .layer(axum::middleware::from_fn(middleware::iceberg_errors))
        .layer(cors())
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(state)
}

/// CORS, as the shared [`events_api::cors`] defines it for both hosts: any
/// origin, the API's methods and request headers, the readable answer
/// headers, preflights cached for a day.
fn cors() -> CorsLayer {
    use events_api::cors::{ALLOW_HEADERS, ALLOW_METHODS, EXPOSE_HEADERS, MAX_AGE_SECONDS};
    let names = |list: &[&'static str]| list.iter().map(|h| HeaderName::from_static(h)).collect::<Vec<_>>();
    let methods: Vec<Method> = ALLOW_METHODS.iter().map(|m| m.parse().expect("a method name")).collect();
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(methods)
        .allow_headers(names(ALLOW_HEADERS))
        .expose_headers(names(EXPOSE_HEADERS))
        .max_age(Duration::from_secs(MAX_AGE_SECONDS))
}

/// A server bound to its address, not yet serving.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
}

impl Server {
    /// Builds the state for `config` and binds `config.listen`.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        Server::bind_with_state(AppState::new(config)?).await
    }

    /// Binds `state.config.listen`, creating `data_dir` if needed.
    pub async fn bind_with_state(state: AppState) -> anyhow::Result<Server> {
        let config = &state.config;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        Ok(Server { listener, addr, state })
    }

    /// The address actually bound (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Prints the listening line and serves until `shutdown` completes, then
    /// lets in-flight requests finish. Connections are timed and capped as
    /// [`conn`] describes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Server { listener, addr, state } = self;
        let config = &state.config;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "events.do listening on http://{addr}").context("cannot write to stdout")?;
            out.flush().context("cannot flush stdout")?;
        }
        tracing::info!(
            %addr,
            env = %config.env,
            data_dir = %config.data_dir.display(),
            version = env!("CARGO_PKG_VERSION"),
            "events.do listening"
        );
        if config.dev {
            tracing::warn!("dev mode: unauthenticated writes are allowed");
        }
        let limit_merges = tokio::spawn(crate::ingest::merge_limits_periodically(state.clone()));
        let limits = conn::ConnLimits::new(&config.http, state.host.config().client_fds);
        // Live-tail streams never end by themselves: end them when shutdown
        // begins, so that their connections drain like the others.
        let streams = state.streams.clone();
        let shutdown = async move {
            shutdown.await;
            streams.close_all();
        };
        conn::serve(listener, router(state.clone()), &config.http, limits, shutdown).await;
        // HTTP is drained: merge the last limit counts, flush the writers and
        // let every object commit and stop.
        limit_merges.abort();
        for job in state.ingest.limits.due(events_runtime::Host::now(&state.host), true) {
            if let Err(e) = Background::MergeLimits(job).run(&state.host, &state.ingest).await {
                tracing::warn!(error = %e, "merging rate-limit counts on shutdown failed");
            }
        }
        crate::objects::stop_host(&state.host).await;
        tracing::info!("events.do stopped");
        Ok(())
    }
}

/// Binds `config.listen`, prints `events.do listening on http://ADDR` (one line,
/// flushed) and serves until `shutdown` completes, then shuts down gracefully.
pub async fn serve(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
