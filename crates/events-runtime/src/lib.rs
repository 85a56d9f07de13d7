//! The durable-object runtime of events.do, as seen by object logic.
//!
//! A *durable object* is a named, single-threaded actor with its own
//! transactional SQLite database and one alarm. This crate defines what an
//! object is ([`DurableObject`]) and everything it may touch
//! ([`ObjectContext`]): its SQL storage, its alarm, other objects through
//! stubs, and the outside world through the [`Host`] (clock, randomness,
//! object storage, outbound HTTP, configuration variables).
//!
//! Nothing here depends on tokio, rusqlite or any other host machinery, so
//! the same object code runs on the native host (`events-host-native`) and,
//! compiled to wasm, on Cloudflare Durable Objects.
//!
//! # Guarantees every host gives
//! - One live instance per (class, name); its requests run one at a time,
//!   and the storage writes of one request never interleave with another's.
//! - A request's storage writes are committed atomically, and durably before
//!   its response is released. A request that returns an error has its writes
//!   rolled back.
//! - One alarm per object, persisted with the object's state; it fires at
//!   least once, after a restart too, and a failing alarm handler is retried
//!   with exponential backoff ([`ALARM_RETRY_BASE_MS`], [`ALARM_MAX_RETRIES`]).
//!
//! # Rule for object authors
//! Object calls form an acyclic graph (server → writer → coordinator, ...):
//! an object never calls, directly or indirectly, an object that may be
//! waiting on it.

pub mod blob;
pub mod context;
pub mod http;
pub mod kv;
pub mod migrate;
pub mod object;
pub mod sql;

pub use blob::{BlobMeta, BlobStore};
pub use context::{Host, Namespace, ObjectContext, ObjectStorage, Stub};
pub use events_core::{ApiError, ErrorCode, Timestamp};
pub use http::{HttpClient, HttpRequest, HttpResponse};
pub use kv::Kv;
pub use migrate::Migration;
pub use object::{Durability, DurableObject, Message, Placement};
pub use sql::{MAX_EXACT_INTEGER, MIN_EXACT_INTEGER, Row, SqlStorage, SqlValue};

/// Result type of everything an object does; errors carry a stable [`ErrorCode`].
pub type ObjectResult<T> = Result<T, ApiError>;

/// First retry delay of a failing alarm handler (as on Cloudflare).
pub const ALARM_RETRY_BASE_MS: i64 = 2_000;
/// Retries of a failing alarm handler before the alarm is dropped.
pub const ALARM_MAX_RETRIES: u32 = 6;
