//! The host-independent request logic of the events.do HTTP API.
//!
//! Everything here is shared by the native server (`events-server`, axum) and
//! the Cloudflare Worker (`workers/`), so both hosts decode, validate, verify
//! and read in exactly the same way:
//! - [`cdc`]: the `/cdc/...` API (query parsing, collection processor calls,
//!   the restore loop, the JSON answers);
//! - [`ingest`]: decoding an ingest body and validating its events;
//! - [`reader`]: reading events back from writer buffers and Parquet files;
//! - [`schemas`]: reporting schema validation failures;
//! - [`webhooks`]: verifying inbound webhook signatures.
//!
//! It builds for `wasm32-unknown-unknown`: no tokio, no sockets, no clocks or
//! randomness of its own (callers pass time and randomness from their host).

pub mod cdc;
pub mod ingest;
pub mod reader;
pub mod schemas;
pub mod webhooks;
