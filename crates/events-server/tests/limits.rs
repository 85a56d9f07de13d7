//! In-process rate limits and quotas ([`events_api::limits`]) against real
//! RateLimiter objects: exact within one process, and across processes
//! over the limit by at most what the others admitted since their last merge.

use std::sync::Arc;

use events_api::limits::{LocalLimits, SYNC_INTERVAL_MS};
use events_core::Timestamp;
use events_host_native::{HostConfig, ManualClock, NativeHost};
use events_objects::RateLimiter;

/// 2027-01-15T08:00:10Z: well inside a minute window.
const T0: i64 = 1_800_000_010_000;

fn host(dir: &std::path::Path, clock: Arc<ManualClock>) -> NativeHost {
    let mut config = HostConfig::new(dir);
    config.threads = 1;
    config.clock = clock;
    let host = NativeHost::start(config).unwrap();
    host.register::<RateLimiter>();
    host
}

/// Requests admitted out of `tries`, each of one event, at 10 requests/minute.
async fn admit(limits: &LocalLimits, host: &NativeHost, tries: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..tries {
        let (decision, job) = limits.check_rate(host, "key:k1", 10, 1_000, 1).await.unwrap();
        if let Some(job) = job {
            limits.sync(host, job).await.unwrap();
        }
        admitted += decision.allowed as usize;
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_overshoot_by_at_most_what_the_other_admitted_since_its_last_merge() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let host = host(dir.path(), clock.clone());
    let (a, b) = (LocalLimits::default(), LocalLimits::default());
    // Within one process the limit is exact.
    assert_eq!(admit(&a, &host, 15).await, 10);
    // A second process that has not seen A's merge yet admits on its own view:
    // the overshoot is what A admitted since its last merge (all 10 here).
    assert_eq!(admit(&b, &host, 15).await, 10);
    // One interval later both have merged: the totals are shared, nothing more fits.
    clock.advance(SYNC_INTERVAL_MS);
    for limits in [&a, &b] {
        for job in limits.due(clock_now(&clock), false) {
            limits.sync(&host, job).await.unwrap();
        }
    }
    assert_eq!(admit(&a, &host, 5).await, 0);
    assert_eq!(admit(&b, &host, 5).await, 0);
    // A third process starting now loads the totals first: it admits nothing.
    let c = LocalLimits::default();
    assert_eq!(admit(&c, &host, 5).await, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_counts_merged_before_a_restart_still_count_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let host = host(dir.path(), clock.clone());
    let limits = LocalLimits::default();
    let (first, _) = limits.check_quota(&host, "quota:acme", 100, 70).await.unwrap();
    assert!(first.allowed);
    for job in limits.due(clock_now(&clock), true) {
        limits.sync(&host, job).await.unwrap();
    }
    host.shutdown().await;
    drop(host);
    let host = self::host(dir.path(), clock);
    let fresh = LocalLimits::default();
    let (over, _) = fresh.check_quota(&host, "quota:acme", 100, 40).await.unwrap();
    assert!(!over.allowed, "70 of 100 were used before the restart: {over:?}");
    let (fits, _) = fresh.check_quota(&host, "quota:acme", 100, 30).await.unwrap();
    assert_eq!((fits.allowed, fits.used), (true, 100));
    host.shutdown().await;
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    events_host_native::Clock::now(clock)
}
