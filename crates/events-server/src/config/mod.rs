//! Server configuration.
//!
//! Values are layered, each layer overriding the one before:
//!
//! 1. built-in defaults ([`ServerConfig::default`]),
//! 2. a TOML file (`events serve --config FILE`),
//! 3. `EVENTS_*` environment variables (see [`ENV_VARS`]),
//! 4. command-line flags ([`ConfigOverrides`]).
//!
//! Every layer is checked as it is applied, so an error names the layer (file
//! path, environment variable or flag) that brought the bad value in.
//!
//! An example file:
//!
//! ```toml
//! data_dir = "/var/lib/events"
//! listen = "0.0.0.0:8787"
//! env = "production"
//! log_format = "json"
//!
//! [ingest]
//! requests_per_minute = 2000
//!
//! [runtime]
//! idle_timeout_ms = 60000
//! ```

pub mod cdc;
pub mod http;
mod load;
pub mod query;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use load::{ConfigError, ConfigSource, ENV_VARS};
pub use sections::*;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use events_core::limits;
use serde::{Deserialize, Serialize};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected \"text\" or \"json\", got {s:?}")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The whole configuration of one server process.
///
/// `Debug` prints `admin_token` as `"<redacted>"`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where durable objects and local state live. Default `./events-data`.
    pub data_dir: PathBuf,
    /// Address to listen on. Port 0 picks a free port. Default `127.0.0.1:8787`.
    pub listen: SocketAddr,
    /// Deployment name reported by `/health` (`development`, `production`, ...).
    pub env: String,
    /// Development mode: allows unauthenticated writes. Never use in production.
    pub dev: bool,
    /// Token for admin operations (`Authorization: Bearer <token>`). None = no admin access over HTTP.
    pub admin_token: Option<String>,
    /// Object-store URL of the lakehouse (`s3://bucket/prefix`, `file:///path`).
    /// None = the directory `<data_dir>/lake`; see [`ServerConfig::lake_location`].
    pub lake_url: Option<String>,
    /// Log format on stderr.
    pub log_format: LogFormat,
    /// Longest time one request may take before it is answered with `TIMEOUT` (504).
    pub request_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Ingest limits.
    pub ingest: IngestConfig,
    /// Durable-object runtime settings.
    pub runtime: RuntimeConfig,
    /// Event writer flush and compaction settings.
    pub writer: WriterConfig,
    /// Outbound HTTP policy (webhook delivery).
    pub outbound: OutboundConfig,
    /// Dynamic sharding of event writers.
    pub shards: ShardsConfig,
    /// Webhook subscriptions.
    pub subscriptions: SubscriptionsConfig,
    /// Change capture.
    pub cdc: cdc::CdcConfig,
    /// Iceberg catalog maintenance.
    pub catalog: CatalogConfig,
    /// SQL query limits.
    pub query: query::QueryConfig,
    /// Client connection timeouts and limits.
    pub http: http::HttpConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./events-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            env: "development".to_string(),
            dev: false,
            admin_token: None,
            lake_url: None,
            log_format: LogFormat::Text,
            request_timeout_ms: 30_000,
            max_body_bytes: limits::MAX_INGEST_BODY_BYTES,
            ingest: IngestConfig::default(),
            runtime: RuntimeConfig::default(),
            writer: WriterConfig::default(),
            outbound: OutboundConfig::default(),
            shards: ShardsConfig::default(),
            subscriptions: SubscriptionsConfig::default(),
            cdc: Default::default(),
            catalog: CatalogConfig::default(),
            query: Default::default(),
            http: Default::default(),
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("env", &self.env)
            .field("dev", &self.dev)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("lake_url", &self.lake_url)
            .field("log_format", &self.log_format)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("ingest", &self.ingest)
            .field("runtime", &self.runtime)
            .field("writer", &self.writer)
            .field("outbound", &self.outbound)
            .field("shards", &self.shards)
            .field("subscriptions", &self.subscriptions)
            .field("cdc", &self.cdc)
            .field("catalog", &self.catalog)
            .field("query", &self.query)
            .field("http", &self.http)
            .finish()
    }
}

/// Where the lakehouse lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    /// An object-store URL given by `lake_url`.
    Url(String),
    /// A local directory (`<data_dir>/lake` when `lake_url` is unset).
    Dir(PathBuf),
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigOverrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--env`
    pub env: Option<String>,
    /// `--dev` (only ever turns dev mode on)
    pub dev: Option<bool>,
    /// `--admin-token`
    pub admin_token: Option<String>,
    /// `--lake-url`
    pub lake_url: Option<String>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

impl ServerConfig {
    /// Where the lakehouse lives: `lake_url`, or the directory `<data_dir>/lake`.
    pub fn lake_location(&self) -> LakeLocation {
        match &self.lake_url {
            Some(url) => LakeLocation::Url(url.clone()),
            None => LakeLocation::Dir(self.data_dir.join("lake")),
        }
    }

    /// The lake's root as an absolute URI (`file:///abs/dir`, `s3://bucket/prefix`),
    /// as written into Iceberg metadata for external readers.
    pub fn lake_base_uri(&self) -> anyhow::Result<String> {
        Ok(match self.lake_location() {
            LakeLocation::Url(url) => url.trim_end_matches('/').to_string(),
            LakeLocation::Dir(dir) => {
                let abs = std::path::absolute(&dir)?;
                format!("file://{}", abs.display().to_string().trim_end_matches('/'))
            }
        })
    }
}
