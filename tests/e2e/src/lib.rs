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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
pub use reqwest;
use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder};
pub use serde_json;
use serde_json::{Value, json};

/// The admin token written into every local server's configuration.
pub const LOCAL_ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Generous deadline for anything asynchronous (flushes, visibility).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `EVENTS_*` variables the server reads; removed from the child's
/// environment so that the developer's shell cannot change a test's setup.
pub const SERVER_ENV_VARS: &[&str] = &[
    "EVENTS_DATA_DIR",
    "EVENTS_LISTEN",
    "EVENTS_ENV",
    "EVENTS_DEV",
    "EVENTS_ADMIN_TOKEN",
    "EVENTS_LAKE_URL",
    "EVENTS_LOG_FORMAT",
    "EVENTS_REQUEST_TIMEOUT_MS",
    "EVENTS_MAX_BODY_BYTES",
    "EVENTS_HTTP_HEADER_READ_TIMEOUT_MS",
    "EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS",
    "EVENTS_HTTP_MAX_CONNECTIONS",
    "EVENTS_HTTP_MAX_CONNECTIONS_PER_IP",
];

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

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <key>` (a namespace key).
    Key(String),
    /// The admin token acting on a namespace (`X-Namespace`).
    Admin {
        /// The admin token.
        token: String,
        /// The namespace sent as `X-Namespace`.
        ns: String,
    },
    /// This exact `Authorization` header value.
    Header(String),
}

impl Auth {
    /// Adds the headers of this authentication to `rb`.
    pub fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        match self {
            Auth::None => rb,
            Auth::Key(key) => rb.bearer_auth(key),
            Auth::Admin { token, ns } => rb.bearer_auth(token).header("X-Namespace", ns),
            Auth::Header(value) => rb.header("Authorization", value),
        }
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
}

impl Reply {
    /// Reads a whole response.
    pub async fn read(res: reqwest::Response) -> Reply {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("reading the response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, body }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("header is not ASCII"))
    }

    /// The `code` of an error body, or "".
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Asserts an error of the Iceberg REST catalog: `status` and the spec's
    /// `ErrorModel`, `{"error": {"message", "type", "code"}}` with `type` and
    /// `code` the status; returns the message.
    #[track_caller]
    pub fn expect_iceberg_error(&self, status: u16, error_type: &str) -> &str {
        let e = &self.body["error"];
        assert_eq!(
            (self.status, e["type"].as_str(), e["code"].as_u64()),
            (status, Some(error_type), Some(u64::from(status))),
            "expected HTTP {status} {error_type}, got {}: {}",
            self.status,
            self.text
        );
        assert_eq!(self.header("content-type"), Some("application/json"), "{}", self.text);
        let message = e["message"].as_str().unwrap_or_else(|| panic!("`message` is not a string: {}", self.text));
        assert!(!message.is_empty(), "empty message: {}", self.text);
        message
    }

    /// Asserts the status, and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "expected HTTP {status}, got {}: {}", self.status, self.text);
        &self.body
    }

    /// Asserts an error reply: this status, and the envelope
    /// `{"error": <text>, "code": <code>, "details": {...}}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "expected HTTP {status} {code}, got {}: {}",
            self.status,
            self.text
        );
        let error = self.body["error"].as_str().unwrap_or_else(|| panic!("`error` is not a string: {}", self.text));
        assert!(!error.is_empty(), "empty `error` message: {}", self.text);
        assert!(self.body["details"].is_object(), "`details` is not an object: {}", self.text);
        &self.body["details"]
    }
}

/// A created API key (`POST /admin/namespaces/{ns}/keys`).
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Key id, for listing and revoking.
    pub id: String,
    /// The secret key, `ns_<namespace>_<64 hex>`.
    pub key: String,
    /// The key's namespace.
    pub namespace: String,
    /// The whole creation reply.
    pub body: Value,
}

impl ApiKey {
    /// Authentication with this key.
    pub fn auth(&self) -> Auth {
        Auth::Key(self.key.clone())
    }
}

/// Settings of a local test server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    top_level: Vec<String>,
    tables: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
    open_files: Option<u64>,
}

impl ServerOptions {
    /// Default settings: `data_dir`, `listen = "127.0.0.1:0"` and `admin_token` only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds TOML tables (e.g. `"[ingest]\nrequests_per_minute = 5"`) after the
    /// top-level keys.
    pub fn toml(mut self, tables: &str) -> Self {
        self.tables.push_str(tables);
        self.tables.push('\n');
        self
    }

    /// Adds a top-level TOML line (e.g. `lake_url = "s3://b/p"`).
    pub fn top_level(mut self, line: &str) -> Self {
        self.top_level.push(line.to_string());
        self
    }

    /// Sets an environment variable of the server process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds a command-line argument after `serve --config FILE`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Starts the server with this open-file limit (soft and hard, at most
    /// the test process's hard limit), so that it cannot raise it.
    pub fn open_files_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }
}

/// Raises this process's soft open-file limit to `wanted` (or to the hard
/// limit if lower); returns the soft limit now in force.
pub fn raise_open_files_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit { rlim_cur: wanted.min(limit.rlim_max), rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// One run of the local binary.
struct Process {
    child: Child,
    addr: SocketAddr,
}

/// A local server: the temp directory and the current process.
struct Local {
    dir: tempfile::TempDir,
    bin: PathBuf,
    options: ServerOptions,
    process: Option<Process>,
    /// The address of the first run; restarts listen there again.
    addr: SocketAddr,
}

/// The server under test: a local `events` process, or an external server.
pub struct TestServer {
    base_url: String,
    admin_token: String,
    client: Client,
    local: Option<Local>,
    snapshots: Vec<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a local server with default settings (or uses the external one).
    pub async fn start() -> TestServer {
        TestServer::start_with(ServerOptions::new()).await
    }

    /// Starts a local server with `options` (or uses the external one, where
    /// `options` cannot apply: tests that depend on them skip themselves).
    pub async fn start_with(options: ServerOptions) -> TestServer {
        let client = new_client();
        if let Some((base_url, admin_token)) = external_target() {
            return TestServer { base_url, admin_token, client, local: None, snapshots: Vec::new() };
        }
        let dir = tempfile::Builder::new().prefix("events-e2e-").tempdir().expect("creating a temp dir");
        let data_dir = dir.path().join("data");
        let mut config = String::new();
        config.push_str(&format!("data_dir = {}\n", toml_string(&data_dir.display().to_string())));
        config.push_str("listen = \"127.0.0.1:0\"\n");
        config.push_str(&format!("admin_token = {}\n", toml_string(LOCAL_ADMIN_TOKEN)));
        for line in &options.top_level {
            config.push_str(line);
            config.push('\n');
        }
        config.push_str(&options.tables);
        std::fs::write(dir.path().join("events.toml"), config).expect("writing events.toml");
        let bin = events_bin();
        let config_path = dir.path().join("events.toml");
        let stderr_path = dir.path().join("stderr.log");
        let (o, b, c, s) = (options.clone(), bin.clone(), config_path, stderr_path);
        let process = tokio::task::spawn_blocking(move || spawn_server(&b, &c, &s, &o, None))
            .await
            .expect("start task panicked")
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = process.addr;
        TestServer {
            base_url: format!("http://{addr}"),
            admin_token: LOCAL_ADMIN_TOKEN.to_string(),
            client,
            local: Some(Local { dir, bin, options, process: Some(process), addr }),
            snapshots: Vec::new(),
        }
    }

    /// `http://IP:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The admin token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The shared HTTP client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether this is an external server.
    pub fn is_external(&self) -> bool {
        self.local.is_none()
    }

    fn local(&self) -> &Local {
        self.local.as_ref().expect("this test needs a local server (see skip_on_external)")
    }

    fn local_mut(&mut self) -> &mut Local {
        self.local.as_mut().expect("this test needs a local server (see skip_on_external)")
    }

    /// The server's data directory (local servers only).
    pub fn data_dir(&self) -> PathBuf {
        self.local().dir.path().join("data")
    }

    /// The local lakehouse directory, `<data_dir>/lake`.
    pub fn lake_dir(&self) -> PathBuf {
        self.data_dir().join("lake")
    }

    /// A directory holding the lake as it is now, one file per key: the local
    /// lake directory itself, or, for an external server with `lake-export`,
    /// a fresh copy of its bucket (kept until the server is dropped).
    pub fn lake_snapshot(&mut self) -> PathBuf {
        if self.local.is_some() {
            return self.lake_dir();
        }
        let dir = tempfile::Builder::new().prefix("events-lake-").tempdir().expect("creating a temp dir");
        run_hook("EVENTS_TEST_LAKE_EXPORT_CMD", Some(dir.path()));
        let path = dir.path().to_path_buf();
        self.snapshots.push(dir);
        path
    }

    /// The server's configuration file (local servers only); a test may
    /// rewrite it before [`TestServer::restart`].
    pub fn config_path(&self) -> PathBuf {
        self.local().dir.path().join("events.toml")
    }

    /// Everything the server wrote to stderr so far (local servers only).
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.local().dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.local().process.as_ref().expect("the server is not running").child.id()
    }

    /// Kills the server with SIGKILL and reaps it. No-op if it is not running.
    /// An external server with the `restart` capability runs its kill hook.
    pub fn kill(&mut self) {
        if self.local.is_none() {
            run_hook("EVENTS_TEST_KILL_CMD", None);
            self.client = new_client();
            return;
        }
        if let Some(mut p) = self.local_mut().process.take() {
            let _ = p.child.kill(); // SIGKILL on Unix
            let _ = p.child.wait();
        }
        // Pooled keep-alive connections died with the process; a request on
        // one would fail with "incomplete message" after a restart.
        self.client = new_client();
    }

    /// Sends SIGTERM and waits (up to a minute) for a clean exit; panics with
    /// the server's stderr if it does not exit, or exits unsuccessfully.
    pub async fn terminate(&mut self) {
        let Some(mut p) = self.local_mut().process.take() else { return };
        let status = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match p.child.try_wait().expect("waiting for the server") {
                Some(status) => {
                    assert!(status.success(), "server exited with {status} after SIGTERM\n{}", self.stderr_log());
                    return;
                }
                None if Instant::now() > deadline => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    panic!("server did not exit within 60 s of SIGTERM\n{}", self.stderr_log());
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Starts the server again on the same data directory and address (killing
    /// it first if it still runs). Retries for a while if the port is busy.
    /// An external server with the `restart` capability runs its restart hook.
    pub async fn restart(&mut self) {
        if self.local.is_none() {
            tokio::task::spawn_blocking(|| run_hook("EVENTS_TEST_RESTART_CMD", None))
                .await
                .expect("restart hook panicked");
            self.client = new_client();
            return;
        }
        self.kill();
        let local = self.local();
        let (bin, options, addr) = (local.bin.clone(), local.options.clone(), local.addr);
        let config_path = local.dir.path().join("events.toml");
        let stderr_path = local.dir.path().join("stderr.log");
        let process = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match spawn_server(&bin, &config_path, &stderr_path, &options, Some(addr)) {
                    Ok(p) => return Ok(p),
                    Err(e) if Instant::now() < deadline && e.contains("cannot listen") => {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("restart task panicked")
        .unwrap_or_else(|e| panic!("{e}"));
        self.local_mut().process = Some(process);
    }

    /// An [`Auth`] of the admin token acting on `ns`.
    pub fn admin_for(&self, ns: &str) -> Auth {
        Auth::Admin { token: self.admin_token.clone(), ns: ns.to_string() }
    }

    /// Makes every later request of [`TestServer::client`] leave from `ip`
    /// (e.g. `127.0.0.2`: Linux routes all of 127.0.0.0/8 to loopback).
    pub fn bind_client_to(&mut self, ip: std::net::IpAddr) {
        self.client = Client::builder()
            .timeout(Duration::from_secs(60))
            .local_address(ip)
            .build()
            .expect("building the HTTP client");
    }

    /// The admin token alone.
    pub fn admin(&self) -> Auth {
        Auth::Key(self.admin_token.clone())
    }

    /// Sends `rb` with `auth` and reads the reply.
    pub async fn send(&self, rb: RequestBuilder, auth: &Auth) -> Reply {
        Reply::read(auth.apply(rb).send().await.expect("sending the request")).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.send(self.client.get(self.url(path)), auth).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, auth: &Auth, body: &Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(body), auth).await
    }

    /// `POST path` with raw bytes and headers.
    pub async fn post_raw(&self, path: &str, auth: &Auth, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut rb = self.client.post(self.url(path)).body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        self.send(rb, auth).await
    }

    /// `POST /e` with `{"events": events}`.
    pub async fn ingest(&self, auth: &Auth, events: &[Value]) -> Reply {
        self.post_json("/e", auth, &json!({ "events": events })).await
    }

    /// `POST /e`, asserting `200 {"ok": true, "received": events.len()}`.
    pub async fn ingest_ok(&self, auth: &Auth, events: &[Value]) -> Reply {
        let r = self.ingest(auth, events).await;
        assert_eq!(r.status, 200, "ingest of {} events failed: {}", events.len(), r.text);
        assert_eq!(r.body["ok"], true, "{}", r.text);
        assert_eq!(r.body["received"], events.len(), "{}", r.text);
        r
    }

    /// Creates a key for `ns` with the admin token; panics unless 201.
    pub async fn create_key(&self, ns: &str) -> ApiKey {
        let r = self.post_json(&format!("/admin/namespaces/{ns}/keys"), &self.admin(), &json!({ "name": "e2e" })).await;
        let body = r.expect(201).clone();
        let field = |name: &str| {
            body[name].as_str().unwrap_or_else(|| panic!("key reply has no string {name:?}: {}", r.text)).to_string()
        };
        ApiKey { id: field("id"), key: field("key"), namespace: field("namespace"), body: body.clone() }
    }

    /// `GET /events?query`, one page; panics unless 200.
    pub async fn read_page(&self, auth: &Auth, query: &str) -> Value {
        let r = self.get(&format!("/events?{query}"), auth).await;
        let body = r.expect(200).clone();
        assert!(body["events"].is_array(), "no events array: {}", r.text);
        assert!(body["nextCursor"].is_null() || body["nextCursor"].is_string(), "bad nextCursor: {}", r.text);
        body
    }

    /// Every event of `GET /events?query`, following `nextCursor` (pages of
    /// 1000); panics on a page that is not 200 or a cursor that loops.
    pub async fn read_all(&self, auth: &Auth, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen_cursors = std::collections::HashSet::new();
        loop {
            let mut q = format!("limit=1000&{query}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={}", url_encode(c)));
            }
            let page = self.read_page(auth, q.trim_end_matches('&')).await;
            out.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["nextCursor"].as_str() {
                Some(c) => {
                    assert!(seen_cursors.insert(c.to_string()), "cursor {c:?} returned twice");
                    cursor = Some(c.to_string());
                }
                None => return out,
            }
        }
    }

    /// Polls `GET /events?query` until it returns at least `count` events (or
    /// [`DEADLINE`] passes), and returns the last read.
    pub async fn wait_for_events(&self, auth: &Auth, query: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = self.read_all(auth, query).await;
            if events.len() >= count || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /admin/flush`; returns the written file keys.
    pub async fn admin_flush(&self) -> Vec<String> {
        let r = self.post_json("/admin/flush", &self.admin(), &json!({})).await;
        let body = r.expect(200);
        body["files"]
            .as_array()
            .unwrap_or_else(|| panic!("flush reply has no files array: {}", r.text))
            .iter()
            .map(|f| f.as_str().unwrap_or_else(|| panic!("non-string file key: {}", r.text)).to_string())
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(local) = self.local.as_mut() {
            if let Some(mut p) = local.process.take() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
            if std::thread::panicking() {
                let log = std::fs::read_to_string(local.dir.path().join("stderr.log")).unwrap_or_default();
                eprintln!(
                    "----- events server stderr ({}) -----\n{log}\n----- end of server stderr -----",
                    self.base_url
                );
            }
        }
    }
}

/// The `events` binary: `$EVENTS_BIN`, else `<dir of the test executable>/../events`.
pub fn events_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EVENTS_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe.parent().and_then(Path::parent).expect("test executable has no grandparent directory").join("events");
    assert!(
        bin.is_file(),
        "the events binary is missing at {}: build it with `cargo build -p events-cli --bin events` \
         (or run `bash scripts/test.sh`), or point EVENTS_BIN at it",
        bin.display()
    );
    bin
}

/// Starts the binary and waits for `events.do listening on http://ADDR`.
fn spawn_server(
    bin: &Path,
    config: &Path,
    stderr_path: &Path,
    options: &ServerOptions,
    listen: Option<SocketAddr>,
) -> Result<Process, String> {
    let mut stderr = OpenOptions::new().create(true).append(true).open(stderr_path).map_err(|e| e.to_string())?;
    let _ = writeln!(stderr, "===== starting {} serve --config {} =====", bin.display(), config.display());
    let stderr_start = stderr.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg("--config").arg(config);
    if let Some(addr) = listen {
        cmd.arg("--listen").arg(addr.to_string());
    }
    cmd.args(&options.args);
    for var in SERVER_ENV_VARS {
        cmd.env_remove(var);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
    if let Some(n) = options.open_files {
        use std::os::unix::process::CommandExt;
        // Never above this process's hard limit, which a child cannot exceed.
        let mut own = libc::rlimit { rlim_cur: 0, rlim_max: n };
        // SAFETY: getrlimit only writes the struct passed.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) };
        let n = n.min(own.rlim_max);
        let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
        // SAFETY: setrlimit is async-signal-safe and only reads `limit`.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Reads the first line, then drains stdout until the process ends.
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        if reader.read_line(&mut line).is_ok() {
            let _ = tx.send(line);
        }
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let failure = |child: &mut Child, what: String| {
        let _ = child.kill();
        let _ = child.wait();
        let log = read_from(stderr_path, stderr_start);
        format!("{what}\n----- server stderr -----\n{log}\n----- end -----")
    };
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) if line.is_empty() => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let log = read_from(stderr_path, stderr_start);
            Err(format!("server exited before listening ({status})\n----- server stderr -----\n{log}\n----- end -----"))
        }
        Ok(line) => {
            let Some(url) = line.trim_end().strip_prefix("events.do listening on http://") else {
                return Err(failure(&mut child, format!("unexpected first stdout line {line:?}")));
            };
            let addr: SocketAddr = match url.parse() {
                Ok(a) => a,
                Err(_) => return Err(failure(&mut child, format!("cannot parse the address in {line:?}"))),
            };
            Ok(Process { child, addr })
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(failure(&mut child, format!("server printed no listening line within {START_TIMEOUT:?}")))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let log = read_from(stderr_path, stderr_start);
            Err(format!("server exited before listening ({status})\n----- server stderr -----\n{log}\n----- end -----"))
        }
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s.get(offset as usize..).unwrap_or(&s).to_string()
}

fn toml_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
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

// ---------------------------------------------------------------------------
// Python tools

/// The Python interpreter: `$EVENTS_PYTHON`, default `python3`.
pub fn python() -> String {
    std::env::var("EVENTS_PYTHON").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "python3".to_string())
}

/// A script of `tests/e2e/py/`.
pub fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join(name)
}

/// Panics, saying how to install them, unless `python()` can import `modules`.
pub fn require_python_modules(modules: &[&str]) {
    let py = python();
    let code = format!("import {}", modules.join(", "));
    let out = Command::new(&py).args(["-c", &code]).output();
    let problem = match out {
        Ok(o) if o.status.success() => return,
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run {py}: {e}"),
    };
    panic!(
        "the Python modules {modules:?} are missing for `{py}` ($EVENTS_PYTHON): {problem}\n\
         Run the suite with `bash scripts/test.sh` (it creates a venv with the pinned packages and sets \
         EVENTS_PYTHON), or install them: `{py} -m pip install -r {}`",
        py_script("requirements.txt").display()
    );
}

/// Runs a Python script of `tests/e2e/py/` and parses its stdout as JSON;
/// panics with its stderr if it fails.
pub fn run_py_json(script: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(py_script(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", python()));
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// What `py/read_parquet.py` found under a directory.
#[derive(Debug, Clone)]
pub struct LakeRead {
    /// The `.parquet` files, relative to the directory.
    pub files: Vec<String>,
    /// Rows over all files.
    pub row_count: usize,
    /// Column name → Arrow type (as pyarrow prints it), of the first file.
    pub columns: Vec<(String, String)>,
    /// Whether every file has the same schema.
    pub schemas_agree: bool,
    /// The `id` of every row, file by file.
    pub ids: Vec<String>,
    /// Every row (when asked for): the columns, `ts` as ms since the epoch in
    /// `ts_ms`, and `_file` (relative path).
    pub rows: Vec<Value>,
}

impl LakeRead {
    /// How many times each id occurs.
    pub fn id_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for id in &self.ids {
            *counts.entry(id.clone()).or_insert(0) += 1;
        }
        counts
    }
}

/// Reads every Parquet file under `dir` with pyarrow (`py/read_parquet.py`).
pub fn read_parquet(dir: &Path, with_rows: bool) -> LakeRead {
    let dir = dir.display().to_string();
    let mut args = vec![dir.as_str()];
    if !with_rows {
        args.push("--no-rows");
    }
    let v = run_py_json("read_parquet.py", &args);
    let strings = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key}: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    LakeRead {
        files: strings("files"),
        row_count: v["row_count"].as_u64().expect("row_count") as usize,
        columns: v["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["type"].as_str().unwrap().to_string()))
            .collect(),
        schemas_agree: v["schemas_agree"].as_bool().expect("schemas_agree"),
        ids: strings("ids"),
        rows: v["rows"].as_array().cloned().unwrap_or_default(),
    }
}

/// Lists the `.parquet` files under `dir` (recursively), relative to it.
pub fn parquet_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A running moto S3 server (`python -m moto.server`), killed on drop.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    log: tempfile::NamedTempFile,
}

impl MotoServer {
    /// Starts moto on a free port and waits until it answers.
    pub async fn start() -> MotoServer {
        require_python_modules(&["moto", "boto3"]);
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("temp file");
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("reopen log"))
            .stderr(log.reopen().expect("reopen log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} -m moto.server: {e}", python()));
        let mut moto = MotoServer { child, endpoint: format!("http://127.0.0.1:{port}"), log };
        let client = Client::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = client.get(&moto.endpoint).send().await
                && r.status().is_success()
            {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited with {status}:\n{}", moto.log_text());
            }
            assert!(Instant::now() < deadline, "moto did not answer within {DEADLINE:?}:\n{}", moto.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// moto's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates a bucket (`py/s3.py create-bucket`).
    pub fn create_bucket(&self, bucket: &str) {
        run_py_json("s3.py", &["--endpoint", &self.endpoint, "create-bucket", bucket]);
    }

    /// Lists the keys of `bucket` under `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let v = run_py_json("s3.py", &["--endpoint", &self.endpoint, "list", bucket, prefix]);
        v["keys"].as_array().expect("keys").iter().map(|k| k.as_str().unwrap().to_string()).collect()
    }

    /// Downloads every object of `bucket` under `prefix` into `dest` (keys as
    /// relative paths) and returns the keys.
    pub fn download(&self, bucket: &str, prefix: &str, dest: &Path) -> Vec<String> {
        let dest = dest.display().to_string();
        let v = run_py_json("s3.py", &["--endpoint", &self.endpoint, "download", bucket, prefix, &dest]);
        v["keys"].as_array().expect("keys").iter().map(|k| k.as_str().unwrap().to_string()).collect()
    }

    /// The AWS_* variables that point a client at this server.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- moto output -----\n{}\n----- end of moto output -----", self.log_text());
        }
    }
}

// ---------------------------------------------------------------------------
// Event helpers

/// An event of type `ty` with the client id `id`, timestamped now.
pub fn event(ty: &str, id: &str) -> Value {
    json!({ "type": ty, "ts": iso_now(), "id": id })
}

/// The `id`s of `events`, sorted (duplicates kept).
pub fn sorted_ids(events: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_else(|| panic!("event without a string id: {e}")).to_string())
        .collect();
    ids.sort();
    ids
}

/// Asserts that `GET /events` with `auth` returns exactly the events with
/// `expected` ids (each once), polling up to [`DEADLINE`] for them to appear.
pub async fn assert_stored_ids(server: &TestServer, auth: &Auth, expected: &[&str]) -> Vec<Value> {
    let events = server.wait_for_events(auth, "", expected.len()).await;
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(sorted_ids(&events), want, "stored events: {}", Value::Array(events.clone()));
    events
}

/// The HTTP client of a test server: a fresh connection pool.
fn new_client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).build().expect("building the HTTP client")
}
