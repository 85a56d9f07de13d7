//! The durable objects of events.do.
//!
//! Each module is one object kind: its storage schema (migrations), its
//! request and response messages, and its behaviour. Objects see the world
//! only through `events_runtime` (storage, alarm, stubs, host), so this
//! crate builds for the native host and for `wasm32-unknown-unknown` alike.
//!
//! | object | name | job |
//! |---|---|---|
//! | [`EventWriter`] | `<ns>/<shard>` | durable buffer of accepted events; the outbox of the flush and the fan-out |
//! | [`OutboxRelay`] | `<ns>/<shard>/<consumer>` | moves a shard's events to the lake (`lake`) or to one consumer, off the writer's path |
//! | [`RateLimiter`] | `key:<id>`, `ip:<addr>`, `quota:<ns>` | sliding-window limits and daily quotas |
//! | [`ShardCoordinator`] | `<ns>` | how many writer shards a namespace uses |
//! | [`SchemaRegistry`] | `<ns>` | event JSON Schemas, versions, compatibility, validation at ingest |
//! | [`WebhookSecrets`] | `<ns>` | signing secrets of inbound webhook providers |
//! | [`Tenant`] | `<ns>` | API keys, namespace limits |
//! | [`Catalog`] | `<ns>` | Iceberg catalog: table metadata, snapshots of every flushed file, schema evolution, maintenance |
//! | [`Subscriptions`] | `<ns>` | subscription routing, signed webhook delivery, retries, dead letters, replay |
//! | [`CdcProcessor`] | `<ns>/<collection>` | change capture: document state, history, delta files, compaction, snapshots, point-in-time reads |
//! | [`CdcCollections`] | `<ns>` | the namespace's collections that received changes |

mod alarm;
pub mod catalog;
pub mod cdc;
pub mod cdc_fanout;
pub mod event_writer;
pub mod fanout;
pub mod lake_flush;
pub mod outbox;
pub mod outbox_relay;
pub mod rate_limiter;
pub mod schema_compat;
pub mod schema_regex;
pub mod schema_registry;
pub mod shard_coordinator;
pub mod subs_layout;
pub mod subscription;
pub mod tenant;
pub mod webhook_secrets;

pub use catalog::Catalog;
pub use cdc::{CdcCollections, CdcProcessor};
pub use event_writer::EventWriter;
pub use rate_limiter::RateLimiter;
pub use schema_registry::SchemaRegistry;
pub use shard_coordinator::ShardCoordinator;
pub use subscription::Subscriptions;
pub use tenant::Tenant;
pub use webhook_secrets::WebhookSecrets;

/// The relay of the [`EventWriter`]'s outbox (class `OutboxRelay`).
pub type OutboxRelay = outbox_relay::Relay<EventWriter>;

/// Reads a numeric configuration variable, falling back to `default`.
pub(crate) fn var_or<H: events_runtime::Host, T: std::str::FromStr>(host: &H, key: &str, default: T) -> T {
    host.var(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}
