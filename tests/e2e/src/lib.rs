//! Harness of the cross-crate HTTP behaviour suite.
//!
//! [`TestServer`] runs the real `events` binary (`events serve --config
//! <tmp>/events.toml`) on a free loopback port with a temporary data
//! directory, and offers the HTTP helpers the tests share. The binary is
//! `$EVENTS_BIN`, else `target/<profile>/events` next to the test executable:
//! build it first with `cargo build -p events-cli --bin events` (which
//! `scripts/test.sh` does).
//!
//! With `EVENTS_TEST_BASE_URL` (and `EVENTS_TEST_ADMIN_TOKEN`) set, every
//! test talks to that server instead. Tests that need to configure the
//! server, or to read its data directory, return early there through
//! [`skip_on_external`], which prints why. An external server may declare
//! capabilities in `EVENTS_TEST_CAPABILITIES` (comma-separated), and tests
//! that need one use [`skip_on_external_without`]:
//! - `restart`: `EVENTS_TEST_KILL_CMD` stops the runtime with SIGKILL and
//!   `EVENTS_TEST_RESTART_CMD` starts it again on the same state
//!   ([`TestServer::kill`], [`TestServer::restart`]);
//! - `outbound-loopback`: it may deliver webhooks to 127.0.0.0/8 (a local receiver);
//! - `lake-export`: `EVENTS_TEST_LAKE_EXPORT_CMD <dir>` copies its lake
//!   (bucket) into a directory, one file per key ([`TestServer::lake_snapshot`]).
//!
//! The Python helpers ([`read_parquet`], [`MotoServer`]) run
//! `$EVENTS_PYTHON` (default `python3`) with the packages of
//! `tests/e2e/py/requirements.txt`.

mod events;
mod http;
mod py;
mod requests;
mod server;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
pub use events::{assert_stored_ids, event, sorted_ids};
pub use http::{ApiKey, Auth, Reply};
pub use py::{
    LakeRead, MotoServer, parquet_files, py_script, python, read_parquet, require_python_modules, run_py_json,
};
pub use reqwest;
use reqwest::Client;
pub use serde_json;
pub use server::{SERVER_ENV_VARS, ServerOptions, TestServer, events_bin, raise_open_files_limit};

/// The admin token written into every local server's configuration.
pub const LOCAL_ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";

/// Generous deadline for anything asynchronous (flushes, visibility).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The external server the tests run against, if `EVENTS_TEST_BASE_URL` is set:
/// `(base_url, admin_token)`.
pub fn external_target() -> Option<(String, String)> {
    let base = std::env::var("EVENTS_TEST_BASE_URL").ok().filter(|s| !s.trim().is_empty())?;
    let token = std::env::var("EVENTS_TEST_ADMIN_TOKEN")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .expect("EVENTS_TEST_BASE_URL is set, so EVENTS_TEST_ADMIN_TOKEN must be set too");
    Some((base.trim_end_matches('/').to_string(), token))
}

/// The host under test, as its `/health` names it: `EVENTS_TEST_HOST`
/// (`cloudflare` from `scripts/worker.sh test`), else `native`.
pub fn expected_host() -> String {
    std::env::var("EVENTS_TEST_HOST").ok().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "native".into())
}

/// Returns true (and prints `reason`) when the suite runs against an external
/// server, for tests that need a local process: the caller returns at once.
pub fn skip_on_external(reason: &str) -> bool {
    if external_target().is_some() {
        eprintln!("skipped against EVENTS_TEST_BASE_URL: {reason}");
        true
    } else {
        false
    }
}

/// Whether the external server declared `capability` in `EVENTS_TEST_CAPABILITIES`.
pub fn external_has(capability: &str) -> bool {
    std::env::var("EVENTS_TEST_CAPABILITIES").unwrap_or_default().split(',').any(|c| c.trim() == capability)
}

/// Returns true (and prints `reason`) when the suite runs against an external
/// server that lacks `capability` (see the crate docs): the caller returns at once.
pub fn skip_on_external_without(capability: &str, reason: &str) -> bool {
    if external_target().is_some() && !external_has(capability) {
        eprintln!("skipped against EVENTS_TEST_BASE_URL without the {capability:?} capability: {reason}");
        true
    } else {
        false
    }
}

/// Runs the shell command in the environment variable `var` (an external server's hook).
fn run_hook(var: &str, extra_arg: Option<&Path>) {
    let cmd = std::env::var(var).unwrap_or_else(|_| panic!("the external server has no {var}"));
    let mut line = cmd.clone();
    if let Some(arg) = extra_arg {
        line.push(' ');
        line.push_str(&arg.display().to_string());
    }
    let status = Command::new("sh").arg("-c").arg(&line).status().unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
    assert!(status.success(), "{var} ({line}) failed with {status}");
}

/// A namespace name not used by any other test (nor by an earlier run against
/// an external server): `<prefix>-<random hex>`.
pub fn unique_ns(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// `now + offset_ms` as ISO-8601 UTC with milliseconds.
pub fn iso_at_offset(offset_ms: i64) -> String {
    (Utc::now() + chrono::Duration::milliseconds(offset_ms)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now as ISO-8601 UTC with milliseconds.
pub fn iso_now() -> String {
    iso_at_offset(0)
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding 127.0.0.1:0").port()
}

/// The HTTP client of a test server: a fresh connection pool.
fn new_client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).build().expect("building the HTTP client")
}
