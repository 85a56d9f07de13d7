//! NATS JetStream as a peer of the ingest benchmark
//! (`events-bench ingest --against-nats`).
//!
//! `nats-server -js` runs as a child process on a free loopback port, with
//! its store in a temporary directory, and one stream with file storage takes
//! every message. Each connection of the load is one NATS client connection
//! with one publish in flight: it publishes a body (the same bodies as the
//! HTTP load, one message each) and awaits the JetStream publish
//! acknowledgement before the next, as the HTTP client awaits each answer.
//! The same timed loop ([`crate::ingest::timed`]) measures both.
//!
//! The acknowledgements do not promise the same thing: JetStream acknowledges
//! once the message is written to its file store, before any fsync (the store
//! syncs on an interval, `sync_interval`, 2 minutes by default), while
//! events.do answers after the fsync.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;

use crate::ingest::{Connection, IngestBench, Load, timed};

/// The stream every message of the benchmark goes to.
pub const STREAM: &str = "EVENTS_BENCH";
/// The subject the benchmark publishes on (the stream's only subject).
pub const SUBJECT: &str = "events.bench";

/// Longest wait for the server to listen, and for the stream to be created.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// `nats-server` on `PATH`, or in the folders where Debian and manual
/// installs put it (often not on a non-root user's `PATH`).
pub fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// `nats-server`, installed first (`apt-get update`, then
/// `apt-get install -y nats-server`) when it is missing and this process
/// runs as root. The error says why the peer cannot run.
pub fn find_or_install() -> Result<PathBuf, String> {
    if let Some(found) = find_binary() {
        return Ok(found);
    }
    if !running_as_root() {
        return Err("nats-server is not installed, and installing it (apt-get install nats-server) needs root".into());
    }
    eprintln!("nats-server is not installed: running apt-get update, then apt-get install -y nats-server");
    for args in [&["-qq", "update"][..], &["-qq", "install", "-y", "nats-server"][..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("nats-server is not installed, and apt-get could not run: {e}"))?;
        if !status.success() {
            return Err(format!("nats-server is not installed, and `apt-get {}` failed ({status})", args.join(" ")));
        }
    }
    find_binary().ok_or_else(|| "apt-get installed nats-server, but no nats-server binary was found".into())
}

fn running_as_root() -> bool {
    // Linux only; elsewhere the peer is skipped unless nats-server is installed.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().next()) == Some("0")
    })
}

/// A `nats-server -js` child process with its store in a temporary directory.
/// Dropping it kills the process and waits for it, so every path out of the
/// benchmark, errors included, stops it.
pub struct NatsServer {
    child: Child,
    url: String,
    // Dropped after the process is gone (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `binary` with JetStream on 127.0.0.1 and a port the server
    /// picks, and waits until it listens.
    pub async fn start(binary: &Path) -> anyhow::Result<NatsServer> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("nats-server.log");
        let child = Command::new(binary)
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .arg("-sd")
            .arg(dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", binary.display()))?;
        // From here on, `Drop` stops the child on every error.
        let mut server = NatsServer { child, url: String::new(), dir };
        // The server writes its client URL to `nats-server_<pid>.ports` once it listens.
        let ports = server.dir.path().join(format!("nats-server_{}.ports", server.child.id()));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(url) = std::fs::read(&ports).ok().and_then(|json| client_url(&json)) {
                server.url = url;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("nats-server exited at start ({status}): {}", server.log_tail());
            }
            if Instant::now() > deadline {
                anyhow::bail!("nats-server did not listen within {START_TIMEOUT:?}: {}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates the benchmark's stream: file storage, subject [`SUBJECT`],
    /// otherwise the server's defaults (no limits, one replica).
    pub async fn create_stream(&self) -> anyhow::Result<()> {
        let client = async_nats::connect(self.url()).await?;
        let config = jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        tokio::time::timeout(START_TIMEOUT, jetstream::new(client).create_stream(config))
            .await
            .map_err(|_| anyhow::anyhow!("creating the stream took more than {START_TIMEOUT:?}"))??;
        Ok(())
    }

    /// Messages stored in the benchmark's stream.
    pub async fn stored_messages(&self) -> anyhow::Result<u64> {
        let client = async_nats::connect(self.url()).await?;
        let stream = jetstream::new(client).get_stream(STREAM).await?;
        Ok(stream.get_info().await?.state.messages)
    }

    /// The operating system's id of the server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server (the same as dropping it).
    pub fn stop(self) {}

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first client URL of a ports file (`{"nats":["nats://127.0.0.1:4222"], ...}`).
fn client_url(ports_json: &[u8]) -> Option<String> {
    let ports: serde_json::Value = serde_json::from_slice(ports_json).ok()?;
    ports["nats"].get(0)?.as_str().map(str::to_string)
}

/// One NATS client connection publishing to [`SUBJECT`]; accepted means
/// JetStream acknowledged the message as stored.
struct Publisher {
    jetstream: jetstream::Context,
    subject: async_nats::Subject,
}

impl Connection for Publisher {
    async fn send(&mut self, body: Bytes) -> Result<(), String> {
        let ack = self.jetstream.publish(self.subject.clone(), body).await.map_err(|e| format!("publish: {e}"))?;
        ack.await.map(drop).map_err(|e| format!("publish ack: {e}"))
    }
}

/// Publishes `opts.batch`-event bodies over `connections` NATS connections
/// (opened before the clock starts) for `opts.seconds`; `rate` (messages/s
/// in total) paces the load if set. Measured like [`crate::ingest::drive`].
pub(crate) async fn drive(
    url: &str,
    opts: &IngestBench,
    connections: usize,
    rate: Option<f64>,
) -> anyhow::Result<Load> {
    let mut publishers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = async_nats::connect(url).await?;
        publishers.push(Publisher { jetstream: jetstream::new(client), subject: SUBJECT.into() });
    }
    timed(publishers, opts, rate).await
}

/// What the peer measured: the phases of the events.do figures, in the same order.
pub(crate) struct Peer {
    /// `opts.batch`-event messages at full speed.
    pub(crate) peak: Load,
    /// The same at half of `peak`'s rate.
    pub(crate) half: Load,
    /// One-event messages at full speed.
    pub(crate) singles: Load,
}

/// Starts the server, creates the stream, then runs a warm-up, the peak, the
/// half-of-peak and the one-event phases with `opts.connections` connections.
/// The server is stopped before this returns, on errors too.
pub(crate) async fn measure(binary: &Path, opts: &IngestBench) -> anyhow::Result<Peer> {
    let server = NatsServer::start(binary).await?;
    server.create_stream().await?;
    let (url, connections) = (server.url(), opts.connections);
    let warm = IngestBench { seconds: 1.0, ..*opts };
    drive(url, &warm, connections, None).await?;
    let peak = drive(url, opts, connections, None).await?;
    anyhow::ensure!(peak.events_per_s > 0.0, "JetStream acknowledged no message ({} failed publishes)", peak.errors);
    let half = drive(url, opts, connections, Some(peak.events_per_s / 2.0 / opts.batch as f64)).await?;
    let singles = drive(url, &IngestBench { batch: 1, ..*opts }, connections, None).await?;
    server.stop();
    Ok(Peer { peak, half, singles })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_client_url_of_a_ports_file() {
        let json = br#"{"nats":["nats://127.0.0.1:41234"],"monitoring":["http://127.0.0.1:8222"]}"#;
        assert_eq!(client_url(json).as_deref(), Some("nats://127.0.0.1:41234"));
        assert_eq!(client_url(b"{}"), None);
        assert_eq!(client_url(b"{\"nats\":[]}"), None);
        assert_eq!(client_url(b"not json"), None);
    }

    /// Runs only where `nats-server` is installed; elsewhere it says it skipped.
    /// Checks what the benchmark relies on, never how fast it is: every
    /// acknowledged publish is in the stream, and dropping the server stops it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_publish_is_in_the_stream_and_the_server_stops() -> anyhow::Result<()> {
        let Some(binary) = find_binary() else {
            eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
            return Ok(());
        };
        let server = NatsServer::start(&binary).await?;
        server.create_stream().await?;
        let opts = IngestBench { seconds: 0.3, connections: 3, batch: 10, against_nats: true };
        let load = drive(server.url(), &opts, opts.connections, None).await?;
        assert_eq!(load.errors, 0);
        assert!(!load.latencies_ms.is_empty());
        // One latency per acknowledged message.
        assert_eq!(server.stored_messages().await?, load.latencies_ms.len() as u64);

        let pid = server.pid();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let had_proc = proc_dir.exists();
        drop(server);
        if had_proc {
            assert!(!proc_dir.exists(), "nats-server {pid} still runs after the drop");
        }
        Ok(())
    }
}
