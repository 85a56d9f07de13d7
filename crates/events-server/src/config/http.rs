//! The `[http]` table of the server configuration: connection timeouts and limits.

use serde::{Deserialize, Serialize};

/// Default time a client has to send a complete request head (ms).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default time an idle keep-alive connection stays open (ms).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_MS: u64 = 5_000;
/// Default cap on open client connections (further capped by the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// Default cap on open client connections from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_024;

/// Client connection settings (the `[http]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Time a request head may take to arrive complete, counted from when the
    /// connection is ready for it (accepted, or the previous response sent), ms.
    pub header_read_timeout_ms: u64,
    /// Time a connection with no request in progress and nothing received stays open (ms).
    pub keep_alive_timeout_ms: u64,
    /// Most open client connections; beyond, new ones are refused.
    pub max_connections: usize,
    /// Most open client connections from one IP address.
    pub max_connections_per_ip: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            keep_alive_timeout_ms: DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
        }
    }
}

impl HttpConfig {
    /// Checks every value; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.header_read_timeout_ms == 0 {
            return Err("http.header_read_timeout_ms must be greater than 0".into());
        }
        if self.keep_alive_timeout_ms == 0 {
            return Err("http.keep_alive_timeout_ms must be greater than 0".into());
        }
        if self.max_connections == 0 {
            return Err("http.max_connections must be greater than 0".into());
        }
        if self.max_connections_per_ip == 0 {
            return Err("http.max_connections_per_ip must be greater than 0".into());
        }
        Ok(())
    }
}
