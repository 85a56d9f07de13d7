//! The host-independent request logic of the events.do HTTP API.
//!
//! Everything here is shared by the native server (`events-server`, axum) and
//! the Cloudflare Worker (`workers/`), so both hosts decode, validate, verify
//! and read in exactly the same way:
//! - [`admin`]: namespace limits (`/admin/namespaces/{ns}/limits`);
//! - [`auth`]: reading credentials (admin token, namespace keys, publishable
//!   keys, dev mode), verifying keys, origin checks, the caller and its
//!   namespace checks;
//! - [`cors`]: the CORS headers of both hosts;
//! - [`cdc`]: the `/cdc/...` API (query parsing, collection processor calls,
//!   the restore loop, the JSON answers);
//! - [`health`]: the `/health` answer, one shape naming the host;
//! - [`iceberg`]: the Iceberg REST catalog's error model (`ErrorModel`);
//! - [`ingest`]: decoding an ingest body and validating its events;
//! - [`keys`]: `/admin/namespaces/{ns}/keys` (secret and publishable keys);
//! - [`limits`]: rate limits and quotas counted in process, merged into the limiter objects in the background;
//! - [`params`]: query parameters read alike everywhere (times, `limit`);
//! - [`reader`]: reading events back from writer buffers and Parquet files;
//! - [`recent`]: `GET /recent` (the latest events and their count);
//! - [`schemas`]: reporting schema validation failures;
//! - [`tables`]: incremental reads of a table (`/tables/{table}/changes`);
//! - [`tail`]: the live tail (`/events/stream`, Server-Sent Events): positions,
//!   resuming, the stream limit, the reading task and the response body;
//! - [`subscriptions`]: the `/subscriptions` API (query and body parsing,
//!   the subscription object calls, the JSON answers);
//! - [`webhooks`]: verifying inbound webhook signatures, and the answer to one;
//! - [`worker_rpc`]: the original service's Worker-RPC subscription routes.
//!
//! It builds for `wasm32-unknown-unknown`: no tokio, no sockets, no clocks or
//! randomness of its own (callers pass time and randomness from their host).

pub mod admin;
pub mod auth;
pub mod cdc;
pub mod cors;
pub mod health;
pub mod iceberg;
pub mod ingest;
pub mod keys;
pub mod limits;
pub mod params;
pub mod reader;
pub mod recent;
pub mod schemas;
pub mod subscriptions;
pub mod tables;
pub mod tail;
pub mod webhooks;
pub mod worker_rpc;
