//! The native host: runs durable objects on one machine.
//!
//! - Each object instance lives on one of a few **executor threads** (a
//!   single-threaded tokio runtime each), so its requests run one at a time,
//!   and object code needs no `Send`.
//! - Each object owns **one SQLite file** (WAL, `synchronous=FULL`) under
//!   `<data>/objects/<Class>/`. The requests queued for an object are run in
//!   one transaction, each inside its own savepoint, and committed together
//!   (**group commit**); their replies are released only after the commit's
//!   fsync.
//! - Each object has **one alarm**, stored in its own database and indexed in
//!   `<data>/host.sqlite` so the host can wake it after a restart.
//! - Idle objects **hibernate** (are dropped from memory) after an idle time,
//!   and at most `max_live_objects` are live at once (least recently used
//!   go first); the next call transparently reactivates them.
//!
//! Entry point: [`NativeHost::start`].

mod alarms;
mod blobs;
mod clock;
mod config;
mod host;
mod http;
mod instance;
mod registry;
mod storage;

pub use blobs::ObjectStoreBlobs;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_LIVE_OBJECTS, HostConfig, MAILBOX_CAPACITY, MAX_REQUESTS_PER_COMMIT,
};
pub use host::{HostStats, NativeHost};
pub use http::{OutboundPolicy, ReqwestHttp};
pub use storage::SqliteStorage;
