//! The durable-object runtime: call round trip, group commit, activation, memory.

use std::time::{Duration, Instant};

use events_host_native::{HostConfig, NativeHost};
use events_runtime::context::Host;
use events_runtime::{DurableObject, Migration, ObjectContext, ObjectResult, SqlStorage};

use crate::Figure;

/// A tiny object: `true` writes a row, `false` only reads.
pub struct BenchObject;

const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "bench", sql: "CREATE TABLE hits (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);" }];

impl DurableObject for BenchObject {
    const CLASS: &'static str = "Bench";
    type Request = bool;
    type Response = i64;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(_: &ObjectContext<H>) -> ObjectResult<Self> {
        Ok(BenchObject)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, write: bool) -> ObjectResult<i64> {
        if write {
            cx.storage().execute("INSERT INTO hits (v) VALUES (1)", &[])?;
        }
        Ok(1)
    }
}

/// Options of the runtime benchmark.
pub struct RuntimeBench {
    /// Seconds per timed phase.
    pub seconds: f64,
    /// Concurrent callers for the group-commit phase.
    pub concurrency: usize,
    /// Objects for the activation and memory phases.
    pub objects: usize,
}

impl Default for RuntimeBench {
    fn default() -> Self {
        RuntimeBench { seconds: 3.0, concurrency: 256, objects: 2_000 }
    }
}

/// Raw fsyncs per second: a 100-byte append plus `fdatasync`, serially.
pub fn raw_fsync_rate(dir: &std::path::Path, seconds: f64) -> anyhow::Result<f64> {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("fsync.bin"))?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        f.write_all(&[7u8; 100])?;
        f.sync_data()?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Raw SQLite commits per second (WAL, synchronous=FULL, one row each).
pub fn raw_sqlite_commit_rate(dir: &std::path::Path, seconds: f64) -> anyhow::Result<f64> {
    let conn = rusqlite::Connection::open(dir.join("raw.sqlite"))?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t (v INTEGER);")?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        conn.execute("INSERT INTO t VALUES (1)", [])?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Runs every runtime figure.
pub async fn run(opts: &RuntimeBench) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let mut config = HostConfig::new(dir.path().join("host"));
    config.idle_timeout_ms = 3_600_000;
    config.max_live_objects = opts.objects * 2;
    let host = NativeHost::start(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    host.register::<BenchObject>();
    let mut figures = Vec::new();
    let phase = Duration::from_secs_f64(opts.seconds);

    // 1. In-memory call round trip (no writes, so no fsync), one caller.
    host.call_object::<BenchObject>("rt", false).await?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < phase {
        host.call_object::<BenchObject>("rt", false).await?;
        n += 1;
    }
    let per_call_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    figures.push(Figure::new("object call round trip (read-only, 1 caller)", per_call_us, "µs"));

    // 2. Durable commits: serial writes vs concurrent (group-committed) writes.
    let fsync = raw_fsync_rate(dir.path(), opts.seconds)?;
    let raw_sqlite = raw_sqlite_commit_rate(dir.path(), opts.seconds)?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < phase {
        host.call_object::<BenchObject>("serial", true).await?;
        n += 1;
    }
    let serial = n as f64 / start.elapsed().as_secs_f64();
    figures.push(
        Figure::new("durable writes/s, 1 caller (one fsync each)", serial, "writes/s").against("raw fsync", fsync),
    );
    figures.push(
        Figure::new("raw SQLite commits/s (WAL, synchronous=FULL)", raw_sqlite, "commits/s")
            .against("raw fsync", fsync),
    );
    let commits_before = host.stats().commits;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency {
        let host = host.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < phase {
                host.call_object::<BenchObject>("group", true).await.expect("write");
                n += 1;
            }
            n
        });
    }
    let mut total = 0u64;
    while let Some(n) = tasks.join_next().await {
        total += n?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let group = total as f64 / elapsed;
    let commits = host.stats().commits - commits_before;
    figures.push(
        Figure::new(
            &format!("durable writes/s, {} callers, one object (group commit)", opts.concurrency),
            group,
            "writes/s",
        )
        .against("raw fsync", fsync),
    );
    figures.push(Figure::new("writes per group commit", total as f64 / commits.max(1) as f64, "writes"));

    // 3. Activation: create objects, hibernate them all, wake each once.
    let before = rss_bytes();
    let start = Instant::now();
    for i in 0..opts.objects {
        host.call_object::<BenchObject>(&format!("idle-{i}"), false).await?;
    }
    let create_us = start.elapsed().as_secs_f64() * 1e6 / opts.objects as f64;
    let per_object = rss_bytes().saturating_sub(before) as f64 / opts.objects as f64;
    figures.push(Figure::new("first activation (new object: file, schema)", create_us, "µs"));
    figures.push(Figure::new("memory per live idle object", per_object / 1024.0, "KiB"));
    host.hibernate_all();
    while host.stats().live_objects > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    for i in 0..opts.objects {
        host.call_object::<BenchObject>(&format!("idle-{i}"), false).await?;
    }
    let wake_us = start.elapsed().as_secs_f64() * 1e6 / opts.objects as f64;
    figures.push(Figure::new("activation of a hibernated object (incl. first call)", wake_us, "µs"));
    figures.push(Figure::new("memory per hibernated object", 0.0, "KiB"));
    host.shutdown().await;
    Ok(figures)
}
