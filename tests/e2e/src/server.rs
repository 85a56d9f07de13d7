//! The server under test: a local `events` process (started, killed,
//! restarted on the same data directory) or an external server.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;

use crate::{Auth, LOCAL_ADMIN_TOKEN, external_target, new_client, run_hook};

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

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
