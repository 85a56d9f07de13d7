//! Starting the object host with every object class, and stopping it cleanly.

use events_host_native::{HostConfig, NativeHost, OutboundPolicy};
use events_objects::event_writer::flush_writer;
use events_objects::{
    Catalog, CdcCollections, CdcProcessor, EventWriter, OutboxRelay, RateLimiter, SchemaRegistry, ShardCoordinator,
    Subscriptions, Tenant, WebhookSecrets,
};

use crate::config::ServerConfig;

/// Starts the native host for `config` and registers every object class.
pub fn start_host(config: &ServerConfig) -> anyhow::Result<NativeHost> {
    let mut host_config = HostConfig::new(&config.data_dir);
    host_config.threads = config.runtime.object_threads;
    host_config.idle_timeout_ms = config.runtime.idle_timeout_ms;
    host_config.max_live_objects = config.runtime.max_live_objects;
    host_config.lake_url = config.lake_url.clone();
    // One descriptor per client socket.
    host_config.client_fds = config.http.max_connections as u64;
    host_config.outbound = OutboundPolicy { allow: config.outbound.allow.clone(), ..Default::default() };
    let vars = [
        ("writer.flush_max_events", config.writer.flush_max_events.to_string()),
        ("writer.flush_max_bytes", config.writer.flush_max_bytes.to_string()),
        ("writer.flush_max_age_ms", config.writer.flush_max_age_ms.to_string()),
        ("writer.compact_grace_ms", config.writer.compact_grace_ms.to_string()),
        ("writer.outbox_max_events", config.writer.outbox_max_events.to_string()),
        ("shards.max", config.shards.max.to_string()),
        ("shards.min", config.shards.effective_min(config.runtime.effective_object_threads()).to_string()),
        ("lake.base_uri", config.lake_base_uri()?),
        ("catalog.maintenance_interval_ms", config.catalog.maintenance_interval_ms.to_string()),
        ("catalog.snapshot_max_age_ms", config.catalog.snapshot_max_age_ms.to_string()),
        ("catalog.min_snapshots", config.catalog.min_snapshots.to_string()),
        ("catalog.orphan_min_age_ms", config.catalog.orphan_min_age_ms.to_string()),
        ("shards.cooldown_ms", config.shards.cooldown_ms.to_string()),
        ("shards.scale_down_quiet_ms", config.shards.scale_down_quiet_ms.to_string()),
        ("subscriptions.split_backlog", config.subscriptions.split_backlog.to_string()),
        ("subscriptions.split_rate", config.subscriptions.split_rate.to_string()),
        ("subscriptions.merge_backlog", config.subscriptions.merge_backlog.to_string()),
        ("subscriptions.merge_rate", config.subscriptions.merge_rate.to_string()),
        ("subscriptions.merge_quiet_ms", config.subscriptions.merge_quiet_ms.to_string()),
        ("subscriptions.cooldown_ms", config.subscriptions.shard_cooldown_ms.to_string()),
        ("subscriptions.max_shards", config.subscriptions.max_shards.to_string()),
        ("subscriptions.report_interval_ms", config.subscriptions.report_interval_ms.to_string()),
    ];
    host_config.vars = vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    host_config.vars.extend(config.cdc.host_vars());
    let host = NativeHost::start(host_config).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    host.register::<EventWriter>()
        .register::<OutboxRelay>()
        .register::<Tenant>()
        .register::<RateLimiter>()
        .register::<ShardCoordinator>();
    host.register::<SchemaRegistry>().register::<WebhookSecrets>();
    host.register::<Subscriptions>().register::<Catalog>();
    host.register::<CdcProcessor>().register::<CdcCollections>();
    Ok(host)
}

/// Flushes every event writer's buffer to the lake; returns the files written.
pub async fn flush_writers(host: &NativeHost) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    for name in host.object_names::<EventWriter>().map_err(|e| anyhow::anyhow!("{e}"))? {
        match flush_writer(host, &name).await {
            Ok(written) => files.extend(written),
            Err(e) => anyhow::bail!("flush of writer {name} failed: {e}"),
        }
    }
    Ok(files)
}

/// Flushes the writers, then stops the host (all objects commit and stop).
pub async fn stop_host(host: &NativeHost) {
    match flush_writers(host).await {
        Ok(files) => tracing::info!(files = files.len(), "writers flushed on shutdown"),
        Err(e) => {
            tracing::error!(error = %e, "flush on shutdown failed; buffered events stay durable and flush at next start")
        }
    }
    host.shutdown().await;
}
