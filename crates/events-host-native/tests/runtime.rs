//! Behaviour of the native durable-object host, against real SQLite files.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use events_core::{ApiError, ErrorCode, Timestamp};
use events_host_native::{Clock, HostConfig, ManualClock, NativeHost};
use events_runtime::context::{Host, ObjectStorage};
use events_runtime::{DurableObject, Migration, ObjectContext, ObjectResult, SqlStorage};
use serde::{Deserialize, Serialize};

/// A counter with an alarm that counts its own runs.
struct Counter {
    failures_left: i64,
}

#[derive(Debug, Serialize, Deserialize)]
enum CounterReq {
    Increment,
    IncrementThenFail,
    Get,
    SetAlarm(Timestamp),
    /// Make the next `n` alarm runs fail.
    FailAlarms(i64),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum CounterResp {
    Value { count: i64, alarms: i64 },
    Done,
}

const COUNTER_V1: &[Migration] = &[Migration {
    version: 1,
    name: "counter",
    sql:
        "CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER NOT NULL, alarms INTEGER NOT NULL);
          INSERT INTO counter VALUES (1, 0, 0);",
}];

impl DurableObject for Counter {
    const CLASS: &'static str = "Counter";
    type Request = CounterReq;
    type Response = CounterResp;

    fn migrations() -> &'static [Migration] {
        COUNTER_V1
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        Ok(Counter { failures_left: cx.kv().get("failures_left")?.unwrap_or(0) })
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: CounterReq) -> ObjectResult<CounterResp> {
        let db = cx.storage();
        match req {
            CounterReq::Increment => {
                db.execute("UPDATE counter SET count = count + 1", &[])?;
                Ok(CounterResp::Done)
            }
            CounterReq::IncrementThenFail => {
                db.execute("UPDATE counter SET count = count + 1", &[])?;
                Err(ApiError::new(ErrorCode::Conflict, "refused after writing"))
            }
            CounterReq::Get => {
                let row = db.query_one("SELECT count, alarms FROM counter", &[])?.expect("row");
                Ok(CounterResp::Value { count: row.i64(0), alarms: row.i64(1) })
            }
            CounterReq::SetAlarm(at) => {
                db.set_alarm(at).await?;
                Ok(CounterResp::Done)
            }
            CounterReq::FailAlarms(n) => {
                self.failures_left = n;
                cx.kv().put("failures_left", &n)?;
                Ok(CounterResp::Done)
            }
        }
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        if self.failures_left > 0 {
            self.failures_left -= 1;
            cx.kv().put("failures_left", &self.failures_left)?;
            // The write above is rolled back with the failure, so persist the
            // countdown in memory only for this test's purpose.
            return Err(ApiError::internal("alarm failed on purpose"));
        }
        cx.storage().execute("UPDATE counter SET alarms = alarms + 1", &[])?;
        Ok(())
    }
}

async fn start(dir: &std::path::Path, tweak: impl FnOnce(&mut HostConfig)) -> NativeHost {
    let mut config = HostConfig::new(dir);
    config.threads = 2;
    tweak(&mut config);
    let host = NativeHost::start(config).expect("host starts");
    host.register::<Counter>();
    host
}

async fn get(host: &NativeHost, name: &str) -> (i64, i64) {
    match host.call_object::<Counter>(name, CounterReq::Get).await.unwrap() {
        CounterResp::Value { count, alarms } => (count, alarms),
        other => panic!("unexpected {other:?}"),
    }
}

/// Polls `check` every 10 ms for up to `limit`; panics with `what` if it never holds.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut check: F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_on_one_object_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |_| {}).await;
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.call_object::<Counter>("c", CounterReq::Increment).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), CounterResp::Done);
    }
    assert_eq!(get(&host, "c").await, (1000, 0));
    let stats = host.stats();
    println!("1000 increments took {} commits and {} WAL syncs", stats.commits, stats.wal_syncs);
    assert!(stats.commits <= 1001, "one commit per batch at most");
    // Every answer waited for a sync, and a sync covers every commit before it.
    assert!((1..=stats.commits).contains(&stats.wal_syncs), "{stats:?}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_released_only_once_its_commit_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |_| {}).await;
    for i in 1..=20 {
        let before = host.stats().wal_syncs;
        host.call_object::<Counter>("c", CounterReq::Increment).await.unwrap();
        // One request at a time: its answer came after a sync that began after its commit.
        assert!(host.stats().wal_syncs > before, "answer {i} left before a WAL sync");
    }
    // A read after the writes waits for nothing more: it saw only synced data.
    let before = host.stats().wal_syncs;
    assert_eq!(get(&host, "c").await, (20, 0));
    assert_eq!(host.stats().wal_syncs, before, "a read of synced data needs no sync");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_leaves_no_writes_behind() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |_| {}).await;
    host.call_object::<Counter>("c", CounterReq::Increment).await.unwrap();
    let err = host.call_object::<Counter>("c", CounterReq::IncrementThenFail).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert_eq!(get(&host, "c").await, (1, 0));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernated_object_comes_back_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |c| c.idle_timeout_ms = 50).await;
    for _ in 0..3 {
        host.call_object::<Counter>("sleepy", CounterReq::Increment).await.unwrap();
    }
    eventually("the idle object hibernates", Duration::from_secs(10), async || host.stats().live_objects == 0).await;
    assert_eq!(host.stats().hibernations, 1);
    assert_eq!(get(&host, "sleepy").await, (3, 0));
    assert_eq!(host.stats().activations, 2, "the object was activated again");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_file_outlived_its_index_entry_is_listed_again() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |_| {}).await;
    host.call_object::<Counter>("kept", CounterReq::Increment).await.unwrap();
    assert_eq!(host.object_names::<Counter>().unwrap(), ["kept"]);
    host.shutdown().await;
    // A crash between creating an object's file and indexing it leaves this.
    let index = rusqlite::Connection::open(dir.path().join("host.sqlite")).unwrap();
    assert_eq!(index.execute("DELETE FROM objects WHERE name = 'kept'", []).unwrap(), 1);
    drop(index);

    let host = start(dir.path(), |_| {}).await;
    assert_eq!(get(&host, "kept").await, (1, 0), "the object's state survived");
    assert_eq!(host.object_names::<Counter>().unwrap(), ["kept"], "and enumerations see it again");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_objects_are_bounded_by_lru() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |c| c.max_live_objects = 20).await;
    for i in 0..200 {
        host.call_object::<Counter>(&format!("o{i}"), CounterReq::Increment).await.unwrap();
    }
    eventually("LRU sheds objects down to the bound", Duration::from_secs(10), async || {
        host.stats().live_objects <= 20
    })
    .await;
    for i in 0..200 {
        assert_eq!(get(&host, &format!("o{i}")).await, (1, 0));
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_fires_and_failing_alarm_retries_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000_000)));
    let host = start(dir.path(), |c| c.clock = clock.clone()).await;
    let t0 = clock.now();
    host.call_object::<Counter>("a", CounterReq::FailAlarms(2)).await.unwrap();
    host.call_object::<Counter>("a", CounterReq::SetAlarm(t0.add_millis(1_000))).await.unwrap();
    clock.advance(1_000);
    // First run fails: retried 2 s later; second fails: 4 s after that.
    eventually("first failing run", Duration::from_secs(10), async || host.stats().alarm_runs == 1).await;
    clock.advance(1_999);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(host.stats().alarm_runs, 1, "no retry before the 2 s backoff");
    clock.advance(1);
    eventually("second failing run", Duration::from_secs(10), async || host.stats().alarm_runs == 2).await;
    clock.advance(4_000);
    eventually("third run succeeds", Duration::from_secs(10), async || get(&host, "a").await.1 == 1).await;
    assert_eq!(host.stats().pending_alarms, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_set_in_the_past_fires_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000_000)));
    let host = start(dir.path(), |c| c.clock = clock.clone()).await;
    let due = clock.now().add_millis(3_600_000);
    host.call_object::<Counter>("later", CounterReq::SetAlarm(due)).await.unwrap();
    host.shutdown().await;
    drop(host);
    // Two hours later, the host starts again: the alarm is overdue.
    clock.advance(7_200_000);
    let host = start(dir.path(), |c| c.clock = clock.clone()).await;
    eventually("the overdue alarm fires", Duration::from_secs(10), async || host.stats().alarm_runs == 1).await;
    assert_eq!(get(&host, "later").await, (0, 1));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_adds_a_column_to_existing_objects() {
    struct CounterV2;
    const COUNTER_V2: &[Migration] = &[
        COUNTER_V1[0],
        Migration {
            version: 2,
            name: "label",
            sql: "ALTER TABLE counter ADD COLUMN label TEXT NOT NULL DEFAULT 'none'",
        },
    ];
    impl DurableObject for CounterV2 {
        const CLASS: &'static str = "Counter";
        type Request = ();
        type Response = (i64, String);
        fn migrations() -> &'static [Migration] {
            COUNTER_V2
        }
        async fn load<H: Host>(_: &ObjectContext<H>) -> ObjectResult<Self> {
            Ok(CounterV2)
        }
        async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, _: ()) -> ObjectResult<(i64, String)> {
            let row = cx.storage().query_one("SELECT count, label FROM counter", &[])?.expect("row");
            Ok((row.i64(0), row.str(1).to_string()))
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |_| {}).await;
    for _ in 0..7 {
        host.call_object::<Counter>("m", CounterReq::Increment).await.unwrap();
    }
    host.shutdown().await;
    drop(host);
    let host = NativeHost::start(HostConfig::new(dir.path())).unwrap();
    assert_eq!(host.call_object::<CounterV2>("m", ()).await.unwrap(), (7, "none".to_string()));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_cannot_open_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |_| {}).await;
    let err = NativeHost::start(HostConfig::new(dir.path())).err().expect("second host refused");
    assert_eq!(err.code, ErrorCode::StorageError);
    host.shutdown().await;
}

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Stated bound: a live, idle object costs at most this much memory.
const MAX_BYTES_PER_LIVE_OBJECT: u64 = 96 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_objects_stay_within_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), |c| {
        c.max_live_objects = 20_000;
        c.idle_timeout_ms = 3_600_000;
    })
    .await;
    // Warm up allocator and thread pools before measuring.
    for i in 0..200 {
        host.call_object::<Counter>(&format!("warm{i}"), CounterReq::Increment).await.unwrap();
    }
    let before = rss_bytes();
    let n = 10_000;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..10 {
        let host = host.clone();
        tasks.spawn(async move {
            for i in 0..n / 10 {
                host.call_object::<Counter>(&format!("obj-{chunk}-{i}"), CounterReq::Increment).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // The host may cap live objects below the request (open-file limit); the
    // rest hibernated and cost no memory.
    let live = host.stats().live_objects;
    assert!(live <= host.config().max_live_objects, "{live} live objects");
    let per_object = rss_bytes().saturating_sub(before) / live as u64;
    println!("{live} live objects; memory per live idle object: {per_object} bytes");
    assert!(per_object <= MAX_BYTES_PER_LIVE_OBJECT, "{per_object} bytes per live object");
    host.hibernate_all();
    eventually("all objects hibernate", Duration::from_secs(60), async || host.stats().live_objects == 0).await;
    assert_eq!(get(&host, "obj-3-7").await, (1, 0));
    host.shutdown().await;
}

const CHILD_ENV: &str = "EVENTS_HOST_TEST_CHILD_DIR";

/// The child half of the crash test: writes, sets an alarm, then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run only as the child process of state_and_pending_alarm_survive_a_killed_process"]
async fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("child mode");
    let host = start(std::path::Path::new(&dir), |_| {}).await;
    for _ in 0..5 {
        host.call_object::<Counter>("survivor", CounterReq::Increment).await.unwrap();
    }
    let at = host.now().add_millis(2_000);
    host.call_object::<Counter>("survivor", CounterReq::SetAlarm(at)).await.unwrap();
    println!("READY");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_pending_alarm_survive_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout.lines().map_while(Result::ok).any(|l| l.contains("READY"));
    assert!(ready, "child reached READY");
    // SIGKILL: no shutdown code runs.
    child.kill().unwrap();
    child.wait().unwrap();

    let host = start(dir.path(), |_| {}).await;
    assert_eq!(get(&host, "survivor").await, (5, 0), "acknowledged writes survived");
    eventually("the pending alarm fires after the restart", Duration::from_secs(15), async || {
        get(&host, "survivor").await.1 == 1
    })
    .await;
    host.shutdown().await;
}
