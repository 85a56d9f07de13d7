//! Settings of the native host and its fixed limits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::http::OutboundPolicy;

/// Requests an object may have queued; past this, callers get `OVERLOADED`.
pub const MAILBOX_CAPACITY: usize = 4_096;
/// Most requests committed together in one group commit.
pub const MAX_REQUESTS_PER_COMMIT: usize = 512;
/// Default idle time before an object hibernates (ms).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Default bound on live (non-hibernated) objects.
pub const DEFAULT_MAX_LIVE_OBJECTS: usize = 10_000;
/// SQLite page cache per object, in KiB (allocated only as used).
pub const SQLITE_CACHE_KIB: i64 = 512;
/// How long a caller waits for an object's answer before `TIMEOUT` (ms).
pub const CALL_TIMEOUT_MS: u64 = 60_000;
/// Longest object name (bytes).
pub const MAX_OBJECT_NAME_BYTES: usize = events_core::limits::MAX_OBJECT_NAME_LEN;

/// How to run the host.
#[derive(Clone)]
pub struct HostConfig {
    /// Root of all durable state.
    pub data_dir: PathBuf,
    /// Executor threads; 0 = one per CPU.
    pub threads: usize,
    /// Idle time before hibernation (ms).
    pub idle_timeout_ms: u64,
    /// Bound on live objects.
    pub max_live_objects: usize,
    /// Configuration variables objects read through `Host::var`.
    pub vars: HashMap<String, String>,
    /// The clock (a [`crate::ManualClock`] in simulation tests).
    pub clock: Arc<dyn Clock>,
    /// Object store URL for the lakehouse (`None`: `<data>/lake`).
    pub lake_url: Option<String>,
    /// Extra object-store options (credentials, endpoint) as key/value pairs.
    pub lake_options: Vec<(String, String)>,
    /// Outbound HTTP policy.
    pub outbound: OutboundPolicy,
    /// File descriptors the embedder wants for its client sockets. The host
    /// raises the open-file limit for them too; after [`crate::NativeHost::start`]
    /// this holds the share granted, which the embedder must keep its sockets within.
    pub client_fds: u64,
}

impl HostConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            data_dir: data_dir.into(),
            threads: 0,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            max_live_objects: DEFAULT_MAX_LIVE_OBJECTS,
            vars: HashMap::new(),
            clock: Arc::new(SystemClock),
            lake_url: None,
            lake_options: Vec::new(),
            outbound: OutboundPolicy::default(),
            client_fds: 0,
        }
    }
}
