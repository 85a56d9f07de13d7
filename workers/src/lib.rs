//! The Cloudflare host of events.do.
//!
//! - [`host`]: the `events-runtime` traits on Durable Object storage, alarms,
//!   stubs, R2 and `fetch`.
//! - [`classes`]: one Durable Object class per object kind.
//! - [`api`]: the Worker's HTTP API (the same routes and wire shapes as the
//!   native server for ingest, reads, keys, schemas, subscriptions, webhooks).

pub mod api;
pub mod classes;
pub mod directory;
pub mod host;

use worker::{Context, Env, Request, Response, event};

/// The Worker's entry point.
#[event(fetch)]
pub async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    api::serve(req, env).await
}
