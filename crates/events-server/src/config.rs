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

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    pub cdc: crate::cdc_config::CdcConfig,
    /// Iceberg catalog maintenance.
    pub catalog: CatalogConfig,
    /// SQL query limits.
    pub query: crate::query_config::QueryConfig,
    /// Client connection timeouts and limits.
    pub http: crate::http_config::HttpConfig,
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

/// Ingest limits (the `[ingest]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Requests per minute per API key.
    pub requests_per_minute: u64,
    /// Events per minute per API key.
    pub events_per_minute: u64,
    /// Events per day per namespace; 0 = unlimited.
    pub events_per_day: u64,
    /// Most events in one batch.
    pub max_events_per_batch: usize,
    /// Largest single event, serialized, in bytes.
    pub max_event_bytes: usize,
    /// Let requests through when the rate limiter fails (default: refuse).
    pub rate_limit_fail_open: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            requests_per_minute: limits::DEFAULT_REQUESTS_PER_MINUTE,
            events_per_minute: limits::DEFAULT_EVENTS_PER_MINUTE,
            events_per_day: limits::DEFAULT_EVENTS_PER_DAY,
            max_events_per_batch: limits::MAX_EVENTS_PER_BATCH,
            max_event_bytes: limits::MAX_EVENT_BYTES,
            rate_limit_fail_open: false,
        }
    }
}

/// Event writer settings (the `[writer]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Flush a writer shard once it buffers this many events.
    pub flush_max_events: u64,
    /// Flush once the buffered JSON reaches this many bytes.
    pub flush_max_bytes: u64,
    /// Flush once the oldest buffered event waited this long (ms).
    pub flush_max_age_ms: i64,
    /// Compact an hour's small files this long after the hour ends (ms).
    pub compact_grace_ms: i64,
    /// Refuse appends to a shard (503, `Retry-After`) once this many of its
    /// events wait for the lake flush or for one consumer (subscriptions, CDC).
    pub outbox_max_events: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        use events_objects::event_writer as w;
        WriterConfig {
            flush_max_events: w::DEFAULT_FLUSH_MAX_EVENTS,
            flush_max_bytes: w::DEFAULT_FLUSH_MAX_BYTES,
            flush_max_age_ms: w::DEFAULT_FLUSH_MAX_AGE_MS,
            compact_grace_ms: w::COMPACT_GRACE_MS,
            outbox_max_events: w::DEFAULT_OUTBOX_MAX_EVENTS,
        }
    }
}

/// Iceberg catalog maintenance, run by each catalog's alarm (the `[catalog]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// How often maintenance runs after a commit (ms).
    pub maintenance_interval_ms: i64,
    /// Snapshots older than this expire (ms).
    pub snapshot_max_age_ms: i64,
    /// The newest snapshots always kept.
    pub min_snapshots: usize,
    /// Unreferenced files younger than this are kept by orphan cleanup (ms).
    pub orphan_min_age_ms: i64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        use events_objects::catalog as c;
        CatalogConfig {
            maintenance_interval_ms: c::DEFAULT_MAINTENANCE_INTERVAL_MS,
            snapshot_max_age_ms: c::DEFAULT_SNAPSHOT_MAX_AGE_MS,
            min_snapshots: c::DEFAULT_MIN_SNAPSHOTS,
            orphan_min_age_ms: c::DEFAULT_ORPHAN_MIN_AGE_MS,
        }
    }
}

/// Outbound HTTP policy (the `[outbound]` table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// CIDR blocks that webhooks may reach although private (e.g. `127.0.0.0/8`).
    pub allow: Vec<String>,
}

/// Webhook subscriptions (the `[subscriptions]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Target of `POST /subscriptions/subscribe`; `{workerId}` and `{rpcMethod}` are replaced.
    pub rpc_url_template: String,
    /// Deliveries waiting (summed over sub-shards) that split a namespace's delivery work.
    pub split_backlog: u64,
    /// Deliveries per second (summed) that split it.
    pub split_rate: u64,
    /// Backlog at or under which it may merge back.
    pub merge_backlog: u64,
    /// Rate at or under which it may merge back.
    pub merge_rate: u64,
    /// Quiet time (under both merge thresholds) before a merge (ms).
    pub merge_quiet_ms: i64,
    /// Minimum time between two sub-shard layout changes (ms).
    pub shard_cooldown_ms: i64,
    /// Most delivery sub-shards per namespace.
    pub max_shards: u32,
    /// Time between two load reports of a sub-shard (ms).
    pub report_interval_ms: i64,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        use events_objects::subs_layout as l;
        SubscriptionsConfig {
            rpc_url_template: "https://{workerId}.workers.dev/rpc/{rpcMethod}".to_string(),
            split_backlog: l::DEFAULT_SPLIT_BACKLOG,
            split_rate: l::DEFAULT_SPLIT_RATE,
            merge_backlog: l::DEFAULT_MERGE_BACKLOG,
            merge_rate: l::DEFAULT_MERGE_RATE,
            merge_quiet_ms: l::DEFAULT_MERGE_QUIET_MS,
            shard_cooldown_ms: l::DEFAULT_SUBS_COOLDOWN_MS,
            max_shards: l::MAX_SUBS_SHARDS,
            report_interval_ms: events_objects::subscription::DEFAULT_LOAD_REPORT_MS,
        }
    }
}

/// Dynamic sharding of event writers (the `[shards]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardsConfig {
    /// Fewest writer shards per namespace; 0: one per executor thread that
    /// runs writers (half the object threads, at least one).
    pub min: u32,
    /// Most writer shards per namespace.
    pub max: u32,
    /// Requests in flight on one shard that count as backpressure.
    pub backpressure_inflight: usize,
    /// Minimum time between two layout changes (ms).
    pub cooldown_ms: i64,
    /// Quiet time after which one shard is removed (ms).
    pub scale_down_quiet_ms: i64,
}

impl Default for ShardsConfig {
    fn default() -> Self {
        use events_objects::shard_coordinator as s;
        ShardsConfig {
            min: 0,
            max: s::MAX_SHARDS,
            backpressure_inflight: events_api::ingest::pipeline::DEFAULT_BACKPRESSURE_INFLIGHT,
            cooldown_ms: s::COOLDOWN_MS,
            scale_down_quiet_ms: s::SCALE_DOWN_QUIET_MS,
        }
    }
}

impl ShardsConfig {
    /// `min`, with 0 resolved from the object threads: writers run on half of
    /// them (the rest run background objects), and one shard keeps one busy.
    pub fn effective_min(&self, object_threads: usize) -> u32 {
        let min = if self.min > 0 { self.min } else { (object_threads / 2).max(1) as u32 };
        min.clamp(1, self.max.max(1))
    }
}

/// Durable-object runtime settings (the `[runtime]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// An object with no activity for this long is unloaded from memory.
    pub idle_timeout_ms: u64,
    /// Most objects held in memory at once.
    pub max_live_objects: usize,
    /// Threads running object code; 0 = one per CPU.
    pub object_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { idle_timeout_ms: 30_000, max_live_objects: 10_000, object_threads: 0 }
    }
}

impl RuntimeConfig {
    /// `object_threads`, with 0 resolved to the number of CPUs.
    pub fn effective_object_threads(&self) -> usize {
        if self.object_threads > 0 {
            self.object_threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
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

/// The environment variables read by [`ServerConfig::load`], with what they set.
///
/// An empty value counts as unset.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("EVENTS_DATA_DIR", "data_dir"),
    ("EVENTS_LISTEN", "listen"),
    ("EVENTS_ENV", "env"),
    ("EVENTS_DEV", "dev (1/0, true/false, yes/no, on/off)"),
    ("EVENTS_ADMIN_TOKEN", "admin_token"),
    ("EVENTS_LAKE_URL", "lake_url"),
    ("EVENTS_LOG_FORMAT", "log_format (text/json)"),
    ("EVENTS_REQUEST_TIMEOUT_MS", "request_timeout_ms"),
    ("EVENTS_MAX_BODY_BYTES", "max_body_bytes"),
    ("EVENTS_HTTP_HEADER_READ_TIMEOUT_MS", "http.header_read_timeout_ms"),
    ("EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS", "http.keep_alive_timeout_ms"),
    ("EVENTS_HTTP_MAX_CONNECTIONS", "http.max_connections"),
    ("EVENTS_HTTP_MAX_CONNECTIONS_PER_IP", "http.max_connections_per_ip"),
];

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The built-in defaults.
    Defaults,
    /// A TOML file.
    File(PathBuf),
    /// The named environment variable.
    Env(String),
    /// The named command-line flag.
    Flag(String),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Defaults => f.write_str("built-in defaults"),
            ConfigSource::File(p) => write!(f, "config file {}", p.display()),
            ConfigSource::Env(v) => write!(f, "environment variable {v}"),
            ConfigSource::Flag(flag) => write!(f, "command-line flag {flag}"),
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value is malformed or out of range.
    #[error("invalid configuration from {origin}: {message}")]
    Invalid {
        /// The layer that brought the value in.
        origin: ConfigSource,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn invalid(origin: ConfigSource, message: impl Into<String>) -> Self {
        ConfigError::Invalid { origin, message: message.into() }
    }

    /// The layer at fault, if the error is about a value.
    pub fn source_layer(&self) -> Option<&ConfigSource> {
        match self {
            ConfigError::Invalid { origin, .. } => Some(origin),
            ConfigError::Read { .. } => None,
        }
    }
}

impl ServerConfig {
    /// Loads the configuration: defaults < `file` < environment (read through `env`) < `overrides`.
    ///
    /// `env` is usually `&|k| std::env::var(k).ok()`; tests pass a fake.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: ConfigOverrides,
    ) -> Result<ServerConfig, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                let config =
                    Self::from_toml(&text).map_err(|m| ConfigError::invalid(ConfigSource::File(path.into()), m))?;
                config.validate().map_err(|m| ConfigError::invalid(ConfigSource::File(path.into()), m))?;
                config
            }
            None => ServerConfig::default(),
        };
        config.apply_env(env)?;
        config.apply_overrides(overrides)?;
        Ok(config)
    }

    /// Parses a TOML document on top of the defaults (no validation).
    pub fn from_toml(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (var, _) in ENV_VARS {
            let Some(value) = env(var).filter(|v| !v.is_empty()) else { continue };
            let source = || ConfigSource::Env(var.to_string());
            let bad = |m: String| ConfigError::invalid(source(), format!("{value:?}: {m}"));
            match *var {
                "EVENTS_DATA_DIR" => self.data_dir = PathBuf::from(&value),
                "EVENTS_LISTEN" => self.listen = parse_listen(&value).map_err(bad)?,
                "EVENTS_ENV" => self.env = value.clone(),
                "EVENTS_DEV" => self.dev = parse_bool(&value).map_err(bad)?,
                // Never echo the token back in an error.
                "EVENTS_ADMIN_TOKEN" => self.admin_token = Some(value.clone()),
                "EVENTS_LAKE_URL" => self.lake_url = Some(value.clone()),
                "EVENTS_LOG_FORMAT" => self.log_format = value.parse().map_err(bad)?,
                "EVENTS_REQUEST_TIMEOUT_MS" => self.request_timeout_ms = parse_number(&value).map_err(bad)?,
                "EVENTS_MAX_BODY_BYTES" => self.max_body_bytes = parse_number(&value).map_err(bad)?,
                "EVENTS_HTTP_HEADER_READ_TIMEOUT_MS" => {
                    self.http.header_read_timeout_ms = parse_number(&value).map_err(bad)?
                }
                "EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS" => {
                    self.http.keep_alive_timeout_ms = parse_number(&value).map_err(bad)?
                }
                "EVENTS_HTTP_MAX_CONNECTIONS" => self.http.max_connections = parse_number(&value).map_err(bad)?,
                "EVENTS_HTTP_MAX_CONNECTIONS_PER_IP" => {
                    self.http.max_connections_per_ip = parse_number(&value).map_err(bad)?
                }
                other => unreachable!("ENV_VARS lists {other} but apply_env does not handle it"),
            }
            self.validate().map_err(|m| ConfigError::invalid(source(), m))?;
        }
        Ok(())
    }

    fn apply_overrides(&mut self, o: ConfigOverrides) -> Result<(), ConfigError> {
        fn step(config: &mut ServerConfig, flag: &str, set: impl FnOnce(&mut ServerConfig)) -> Result<(), ConfigError> {
            set(config);
            config.validate().map_err(|m| ConfigError::invalid(ConfigSource::Flag(flag.to_string()), m))
        }
        if let Some(v) = o.data_dir {
            step(self, "--data-dir", |c| c.data_dir = v)?;
        }
        if let Some(v) = o.listen {
            step(self, "--listen", |c| c.listen = v)?;
        }
        if let Some(v) = o.env {
            step(self, "--env", |c| c.env = v)?;
        }
        if let Some(v) = o.dev {
            step(self, "--dev", |c| c.dev = v)?;
        }
        if let Some(v) = o.admin_token {
            step(self, "--admin-token", |c| c.admin_token = Some(v))?;
        }
        if let Some(v) = o.lake_url {
            step(self, "--lake-url", |c| c.lake_url = Some(v))?;
        }
        if let Some(v) = o.log_format {
            step(self, "--log-format", |c| c.log_format = v)?;
        }
        Ok(())
    }

    /// Checks every value; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        if self.env.trim().is_empty() {
            return Err("env must not be empty".into());
        }
        if !self.env.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            return Err(format!("env must be made of letters, digits, '-', '_' or '.', got {:?}", self.env));
        }
        if let Some(token) = &self.admin_token
            && token.trim().len() < 16
        {
            return Err("admin_token must be at least 16 characters".into());
        }
        if let Some(url) = &self.lake_url {
            let scheme_ok = url.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty() && !rest.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            });
            if !scheme_ok {
                return Err(format!("lake_url must be a URL like s3://bucket/prefix or file:///path, got {url:?}"));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err("request_timeout_ms must be greater than 0".into());
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be greater than 0".into());
        }
        let i = &self.ingest;
        if i.max_events_per_batch == 0 {
            return Err("ingest.max_events_per_batch must be greater than 0".into());
        }
        if i.max_event_bytes == 0 {
            return Err("ingest.max_event_bytes must be greater than 0".into());
        }
        if i.max_event_bytes > self.max_body_bytes {
            return Err(format!(
                "ingest.max_event_bytes ({}) must not exceed max_body_bytes ({})",
                i.max_event_bytes, self.max_body_bytes
            ));
        }
        if i.requests_per_minute == 0 {
            return Err("ingest.requests_per_minute must be greater than 0".into());
        }
        if i.events_per_minute == 0 {
            return Err("ingest.events_per_minute must be greater than 0".into());
        }
        let s = &self.subscriptions;
        let max = events_objects::subs_layout::MAX_SUBS_SHARDS;
        if !(1..=max).contains(&s.max_shards) {
            return Err(format!("subscriptions.max_shards must be between 1 and {max}, got {}", s.max_shards));
        }
        if s.merge_backlog > s.split_backlog || s.merge_rate > s.split_rate {
            return Err(
                "subscriptions.merge_backlog and merge_rate must not exceed split_backlog and split_rate".into()
            );
        }
        if s.report_interval_ms <= 0 || s.merge_quiet_ms < 0 || s.shard_cooldown_ms < 0 {
            return Err(
                "subscriptions.report_interval_ms must be positive, merge_quiet_ms and shard_cooldown_ms not negative"
                    .into(),
            );
        }
        self.cdc.validate()?;
        self.http.validate()?;
        let r = &self.runtime;
        if r.idle_timeout_ms == 0 {
            return Err("runtime.idle_timeout_ms must be greater than 0".into());
        }
        if r.max_live_objects == 0 {
            return Err("runtime.max_live_objects must be greater than 0".into());
        }
        Ok(())
    }

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

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:8787 or [::1]:8787".to_string())
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected one of 1/0, true/false, yes/no, on/off".into()),
    }
}

fn parse_number<T: FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| "expected a non-negative integer".to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults() {
        let c = ServerConfig::load(None, &no_env, ConfigOverrides::default()).unwrap();
        assert_eq!(c, ServerConfig::default());
        assert_eq!(c.data_dir, PathBuf::from("./events-data"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(c.env, "development");
        assert!(!c.dev);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.request_timeout_ms, 30_000);
        assert_eq!(c.max_body_bytes, limits::MAX_INGEST_BODY_BYTES);
        assert_eq!(c.ingest.max_events_per_batch, limits::MAX_EVENTS_PER_BATCH);
        assert_eq!(c.ingest.max_event_bytes, limits::MAX_EVENT_BYTES);
        assert_eq!(c.ingest.requests_per_minute, limits::DEFAULT_REQUESTS_PER_MINUTE);
        assert_eq!(c.runtime, RuntimeConfig { idle_timeout_ms: 30_000, max_live_objects: 10_000, object_threads: 0 });
        assert!(c.runtime.effective_object_threads() >= 1);
        assert_eq!(c.lake_location(), LakeLocation::Dir(PathBuf::from("./events-data/lake")));
        c.validate().unwrap();
    }

    #[test]
    fn file_overrides_defaults_and_keeps_the_rest() {
        let f = file_with(
            r#"
            env = "staging"
            listen = "0.0.0.0:9000"
            log_format = "json"
            [ingest]
            requests_per_minute = 5
            [runtime]
            object_threads = 3
            "#,
        );
        let c = ServerConfig::load(Some(f.path()), &no_env, ConfigOverrides::default()).unwrap();
        assert_eq!(c.env, "staging");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.ingest.requests_per_minute, 5);
        assert_eq!(c.ingest.events_per_minute, limits::DEFAULT_EVENTS_PER_MINUTE);
        assert_eq!(c.runtime.object_threads, 3);
        assert_eq!(c.runtime.effective_object_threads(), 3);
        assert_eq!(c.data_dir, PathBuf::from("./events-data"));
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let f = file_with("env = \"from-file\"\ndata_dir = \"/file\"\nlisten = \"127.0.0.1:1111\"\ndev = false\n");
        let env = env_of(&[("EVENTS_ENV", "from-env"), ("EVENTS_DATA_DIR", "/env"), ("EVENTS_DEV", "yes")]);
        let flags = ConfigOverrides { env: Some("from-flag".into()), ..Default::default() };
        let c = ServerConfig::load(Some(f.path()), &env, flags).unwrap();
        assert_eq!(c.env, "from-flag", "flag beats env and file");
        assert_eq!(c.data_dir, PathBuf::from("/env"), "env beats file");
        assert_eq!(c.listen.to_string(), "127.0.0.1:1111", "file beats defaults");
        assert!(c.dev, "env turns dev on over the file");
        assert_eq!(c.request_timeout_ms, 30_000, "defaults remain");
    }

    #[test]
    fn every_env_var_is_read() {
        let env = env_of(&[
            ("EVENTS_DATA_DIR", "/d"),
            ("EVENTS_LISTEN", "[::1]:0"),
            ("EVENTS_ENV", "production"),
            ("EVENTS_DEV", "TRUE"),
            ("EVENTS_ADMIN_TOKEN", "0123456789abcdef"),
            ("EVENTS_LAKE_URL", "s3://bucket/prefix"),
            ("EVENTS_LOG_FORMAT", "JSON"),
            ("EVENTS_REQUEST_TIMEOUT_MS", "1500"),
            ("EVENTS_MAX_BODY_BYTES", "2097152"),
            ("EVENTS_HTTP_HEADER_READ_TIMEOUT_MS", "1000"),
            ("EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS", "2000"),
            ("EVENTS_HTTP_MAX_CONNECTIONS", "300"),
            ("EVENTS_HTTP_MAX_CONNECTIONS_PER_IP", "20"),
        ]);
        let c = ServerConfig::load(None, &env, ConfigOverrides::default()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.listen.to_string(), "[::1]:0");
        assert_eq!(c.env, "production");
        assert!(c.dev);
        assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(c.lake_location(), LakeLocation::Url("s3://bucket/prefix".into()));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.request_timeout_ms, 1500);
        assert_eq!(c.max_body_bytes, 2 * 1024 * 1024);
        let h = &c.http;
        assert_eq!(
            (h.header_read_timeout_ms, h.keep_alive_timeout_ms, h.max_connections, h.max_connections_per_ip),
            (1000, 2000, 300, 20)
        );
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let env = env_of(&[("EVENTS_ENV", ""), ("EVENTS_LISTEN", "")]);
        let c = ServerConfig::load(None, &env, ConfigOverrides::default()).unwrap();
        assert_eq!(c, ServerConfig::default());
    }

    #[test]
    fn all_flags_apply() {
        let flags = ConfigOverrides {
            data_dir: Some("/flag".into()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            env: Some("test".into()),
            dev: Some(true),
            admin_token: Some("a-long-enough-admin-token".into()),
            lake_url: Some("file:///tmp/lake".into()),
            log_format: Some(LogFormat::Json),
        };
        let env = env_of(&[("EVENTS_LISTEN", "127.0.0.1:5"), ("EVENTS_LOG_FORMAT", "text")]);
        let c = ServerConfig::load(None, &env, flags).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.env, "test");
        assert!(c.dev);
        assert_eq!(c.admin_token.as_deref(), Some("a-long-enough-admin-token"));
        assert_eq!(c.lake_url.as_deref(), Some("file:///tmp/lake"));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    fn invalid_source(e: &ConfigError) -> ConfigSource {
        e.source_layer().cloned().unwrap_or_else(|| panic!("expected an Invalid error, got {e}"))
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        for (var, value, needle) in [
            ("EVENTS_LISTEN", "localhost", "IP:PORT"),
            ("EVENTS_DEV", "maybe", "true/false"),
            ("EVENTS_LOG_FORMAT", "xml", "\"text\" or \"json\""),
            ("EVENTS_REQUEST_TIMEOUT_MS", "-1", "integer"),
            ("EVENTS_REQUEST_TIMEOUT_MS", "0", "request_timeout_ms must be greater than 0"),
            ("EVENTS_LAKE_URL", "bucket", "lake_url"),
            ("EVENTS_ENV", "has space", "env must be"),
            ("EVENTS_HTTP_HEADER_READ_TIMEOUT_MS", "0", "http.header_read_timeout_ms"),
            ("EVENTS_HTTP_MAX_CONNECTIONS", "many", "integer"),
        ] {
            let env = env_of(&[(var, value)]);
            let e = ServerConfig::load(None, &env, ConfigOverrides::default()).unwrap_err();
            assert_eq!(invalid_source(&e), ConfigSource::Env(var.into()), "{var}={value}");
            let msg = e.to_string();
            assert!(msg.contains(var), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn admin_token_is_not_echoed() {
        let env = env_of(&[("EVENTS_ADMIN_TOKEN", "short-secret")]);
        let e = ServerConfig::load(None, &env, ConfigOverrides::default()).unwrap_err();
        assert_eq!(invalid_source(&e), ConfigSource::Env("EVENTS_ADMIN_TOKEN".into()));
        assert!(!e.to_string().contains("short-secret"), "{e}");
    }

    #[test]
    fn bad_file_values_name_the_file() {
        for (text, needle) in [
            ("listen = \"nope\"", "listen"),
            ("unknown_key = 1", "unknown_key"),
            ("[ingest]\nbogus = 1", "bogus"),
            ("[runtime]\nmax_live_objects = 0", "runtime.max_live_objects"),
            ("[subscriptions]\nmax_shards = 0", "subscriptions.max_shards"),
            ("[subscriptions]\nmax_shards = 17", "subscriptions.max_shards"),
            ("[subscriptions]\nsplit_backlog = 10\nmerge_backlog = 20", "merge_backlog"),
            ("[subscriptions]\nreport_interval_ms = 0", "report_interval_ms"),
            ("[http]\nmax_connections_per_ip = 0", "http.max_connections_per_ip"),
            ("[http]\nkeep_alive_timeout_ms = 0", "http.keep_alive_timeout_ms"),
            ("log_format = \"xml\"", "log_format"),
            ("request_timeout_ms = \"soon\"", "request_timeout_ms"),
            ("not toml at all", "not toml"),
        ] {
            let f = file_with(text);
            let e = ServerConfig::load(Some(f.path()), &no_env, ConfigOverrides::default()).unwrap_err();
            assert_eq!(invalid_source(&e), ConfigSource::File(f.path().into()), "{text}");
            let msg = e.to_string();
            assert!(msg.contains(&f.path().display().to_string()), "{msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
        }
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = ServerConfig::load(Some(Path::new("/definitely/not/here.toml")), &no_env, ConfigOverrides::default())
            .unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(e.to_string().contains("/definitely/not/here.toml"), "{e}");
    }

    #[test]
    fn bad_flag_values_name_the_flag() {
        let flags = ConfigOverrides { env: Some(String::new()), ..Default::default() };
        let e = ServerConfig::load(None, &no_env, flags).unwrap_err();
        assert_eq!(invalid_source(&e), ConfigSource::Flag("--env".into()));
        assert!(e.to_string().contains("--env"), "{e}");
    }

    #[test]
    fn cross_field_checks() {
        let f = file_with("max_body_bytes = 100");
        let e = ServerConfig::load(Some(f.path()), &no_env, ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("ingest.max_event_bytes"), "{e}");
    }

    #[test]
    fn debug_redacts_the_admin_token() {
        let c = ServerConfig { admin_token: Some("super-secret-admin-token".into()), ..Default::default() };
        let s = format!("{c:?}");
        assert!(!s.contains("super-secret"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
    }

    #[test]
    fn toml_round_trip() {
        let c = ServerConfig { admin_token: Some("0123456789abcdef".into()), ..Default::default() };
        let text = toml::to_string(&c).unwrap();
        assert_eq!(ServerConfig::from_toml(&text).unwrap(), c);
    }
}
