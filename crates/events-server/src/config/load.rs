//! Loading: the layers (file, environment, flags) applied in order, and the
//! errors that name the layer at fault.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{ConfigOverrides, ServerConfig};

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
