//! Core types of events.do, shared by every other crate.
//!
//! This crate does no I/O and knows nothing of HTTP, SQLite or tokio, so it
//! compiles for the native host and for `wasm32-unknown-unknown` alike.
//!
//! - [`cdc`]: the change-capture input formats, normalised to one change record.
//! - [`error`]: the one error envelope and stable error-code set of the API.
//! - [`limits`]: every input limit, as a named constant.
//! - [`event`]: the event model and ingest validation.
//! - [`name`]: validation of namespaces and other user-supplied names.
//! - [`pattern`]: dot-separated event-type patterns (`*`, `**`).
//! - [`time`]: millisecond timestamps and ISO-8601 helpers.
//! - [`id`]: ULID generation.

pub mod cdc;
pub mod error;
pub mod event;
pub mod hash;
pub mod id;
pub mod limits;
pub mod name;
pub mod outbound;
pub mod pattern;
pub mod time;

pub use error::{ApiError, ErrorCode};
pub use event::{Event, EventBatch};
pub use time::Timestamp;
