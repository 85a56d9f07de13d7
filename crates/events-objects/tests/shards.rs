//! ShardCoordinator: scale up on backpressure, down after a quiet spell, never past the bounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events_core::Timestamp;
use events_host_native::{HostConfig, ManualClock, NativeHost};
use events_objects::ShardCoordinator;
use events_objects::shard_coordinator::{ShardLayout, ShardRequest};

const T0: i64 = 1_800_000_000_000;

async fn layout(host: &NativeHost, req: ShardRequest) -> ShardLayout {
    host.call_object::<ShardCoordinator>("acme", req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_adds_shards_and_quiet_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let mut config = HostConfig::new(dir.path());
    config.clock = clock.clone();
    config.vars = [("shards.max", "3"), ("shards.cooldown_ms", "1000"), ("shards.scale_down_quiet_ms", "60000")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let host = NativeHost::start(config).unwrap();
    host.register::<ShardCoordinator>();

    assert_eq!(layout(&host, ShardRequest::Layout).await.shards, 1);
    // Two reports are not enough; the third within the window adds a shard.
    layout(&host, ShardRequest::Backpressure { shard: 0 }).await;
    assert_eq!(layout(&host, ShardRequest::Backpressure { shard: 0 }).await.shards, 1);
    let grown = layout(&host, ShardRequest::Backpressure { shard: 0 }).await;
    assert_eq!((grown.shards, grown.epoch), (2, 1));
    // During the cooldown, more reports change nothing.
    for _ in 0..5 {
        assert_eq!(layout(&host, ShardRequest::Backpressure { shard: 1 }).await.shards, 2);
    }
    clock.advance(1_000);
    for _ in 0..3 {
        layout(&host, ShardRequest::Backpressure { shard: 1 }).await;
    }
    assert_eq!(layout(&host, ShardRequest::Layout).await.shards, 3);
    // The maximum holds.
    clock.advance(1_000);
    for _ in 0..6 {
        layout(&host, ShardRequest::Backpressure { shard: 2 }).await;
    }
    assert_eq!(layout(&host, ShardRequest::Layout).await.shards, 3);
    // After a quiet minute the alarm removes one shard, then another.
    clock.advance(60_000);
    let start = Instant::now();
    while layout(&host, ShardRequest::Layout).await.shards != 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "scale-down after the quiet spell");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.advance(60_000);
    while layout(&host, ShardRequest::Layout).await.shards != 1 {
        assert!(start.elapsed() < Duration::from_secs(20), "second scale-down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The layout survives a restart.
    host.shutdown().await;
    drop(host);
    let mut config = HostConfig::new(dir.path());
    config.clock = clock.clone();
    let host = NativeHost::start(config).unwrap();
    host.register::<ShardCoordinator>();
    let after = layout(&host, ShardRequest::Layout).await;
    assert_eq!((after.shards, after.epoch), (1, 4));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_starts_at_the_shard_floor_and_quiet_never_goes_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let mut config = HostConfig::new(dir.path());
    config.clock = clock.clone();
    config.vars =
        [("shards.min", "2"), ("shards.max", "3"), ("shards.cooldown_ms", "0"), ("shards.scale_down_quiet_ms", "1000")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let host = NativeHost::start(config).unwrap();
    host.register::<ShardCoordinator>();
    assert_eq!(layout(&host, ShardRequest::Layout).await.shards, 2, "the floor from the first request on");
    for _ in 0..3 {
        layout(&host, ShardRequest::Backpressure { shard: 0 }).await;
    }
    assert_eq!(layout(&host, ShardRequest::Layout).await.shards, 3);
    // Quiet spells remove the extra shard, and stop at the floor.
    let start = Instant::now();
    while layout(&host, ShardRequest::Layout).await.shards != 2 {
        clock.advance(1_000);
        assert!(start.elapsed() < Duration::from_secs(10), "scale-down after the quiet spell");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        clock.advance(10_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(layout(&host, ShardRequest::Layout).await.shards, 2);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_shards_are_fixed_when_a_namespace_is_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let start_with = |min: &str| {
        let mut config = HostConfig::new(dir.path());
        config.vars = [("shards.min", min)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let host = NativeHost::start(config).unwrap();
        host.register::<ShardCoordinator>();
        host
    };
    let host = start_with("3");
    let first = layout(&host, ShardRequest::Layout).await;
    assert_eq!((first.shards, first.batch_shards), (3, 3));
    host.shutdown().await;
    drop(host);
    // A lower floor later neither moves a batch id's shard nor drops the
    // batch shards from the layout; a higher one adds shards but not batch shards.
    let host = start_with("1");
    let lowered = layout(&host, ShardRequest::Layout).await;
    assert_eq!((lowered.shards, lowered.batch_shards), (3, 3));
    host.shutdown().await;
    drop(host);
    let host = start_with("5");
    let raised = layout(&host, ShardRequest::Layout).await;
    assert_eq!((raised.shards, raised.batch_shards), (5, 3));
    host.shutdown().await;
}

#[test]
fn a_batch_id_always_maps_to_the_same_shard() {
    use events_objects::shard_coordinator::batch_shard;
    // Fixed values: the mapping is part of the stored state's meaning and must
    // not change between releases.
    assert_eq!(batch_shard("anything", 1), 0);
    let shards: Vec<u32> = ["a", "b", "c", "batch-1", "batch-2"].iter().map(|id| batch_shard(id, 4)).collect();
    assert_eq!(shards, [0, 1, 2, 1, 0], "FNV-1a of the id, modulo the batch shards");
    let spread = (0..1_000).map(|i| batch_shard(&format!("batch-{i}"), 4)).fold([0; 4], |mut n, s| {
        n[s as usize] += 1;
        n
    });
    assert!(spread.iter().all(|&n| n > 150), "ids spread over the shards: {spread:?}");
}
