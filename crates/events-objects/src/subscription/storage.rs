//! Storage of [`Subscriptions`](super::Subscriptions): schema, stored settings and their validation, retention.

use events_core::{ApiError, ErrorCode};
use events_runtime::{Migration, ObjectResult, SqlStorage};
use serde::{Deserialize, Serialize};

use super::*;

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "subscriptions, event log, deliveries, attempts, jobs",
        sql: "CREATE TABLE subscriptions (
              id TEXT PRIMARY KEY,
              pattern TEXT NOT NULL,
              url TEXT NOT NULL,
              status TEXT NOT NULL,
              settings TEXT NOT NULL,
              created_at INTEGER NOT NULL,
              updated_at INTEGER NOT NULL,
              failing_since INTEGER,
              disabled_at INTEGER,
              disabled_reason TEXT
          );
          CREATE TABLE secrets (
              sub_id TEXT NOT NULL,
              secret TEXT NOT NULL,
              created_at INTEGER NOT NULL,
              expires_at INTEGER,
              PRIMARY KEY (sub_id, secret)
          );
          CREATE TABLE events (
              seq INTEGER PRIMARY KEY AUTOINCREMENT,
              id TEXT NOT NULL UNIQUE,
              ts INTEGER NOT NULL,
              type TEXT NOT NULL,
              body TEXT NOT NULL,
              received_at INTEGER NOT NULL
          );
          CREATE INDEX events_received ON events (received_at);
          CREATE TABLE deliveries (
              id TEXT PRIMARY KEY,
              sub_id TEXT NOT NULL,
              event_id TEXT NOT NULL,
              seq INTEGER NOT NULL,
              order_key TEXT,
              status TEXT NOT NULL,
              attempts INTEGER NOT NULL DEFAULT 0,
              next_at INTEGER NOT NULL,
              created_at INTEGER NOT NULL,
              delivered_at INTEGER,
              latency_ms INTEGER,
              dead_at INTEGER,
              dead_reason TEXT,
              last_error TEXT,
              UNIQUE (sub_id, event_id)
          );
          CREATE INDEX deliveries_due ON deliveries (status, next_at);
          CREATE INDEX deliveries_sub ON deliveries (sub_id, status, id);
          CREATE INDEX deliveries_key ON deliveries (sub_id, order_key, status, seq);
          CREATE INDEX deliveries_done ON deliveries (status, delivered_at);
          CREATE TABLE attempts (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              delivery_id TEXT NOT NULL,
              sub_id TEXT NOT NULL,
              event_id TEXT NOT NULL,
              attempt INTEGER NOT NULL,
              at INTEGER NOT NULL,
              status INTEGER,
              duration_ms INTEGER NOT NULL,
              ok INTEGER NOT NULL,
              response TEXT,
              error TEXT,
              error_code TEXT,
              batch_id TEXT
          );
          CREATE INDEX attempts_sub ON attempts (sub_id, id);
          CREATE INDEX attempts_event ON attempts (sub_id, event_id, id);
          CREATE INDEX attempts_at ON attempts (at);
          CREATE TABLE jobs (
              id TEXT PRIMARY KEY,
              sub_id TEXT NOT NULL,
              since INTEGER NOT NULL,
              cursor INTEGER NOT NULL,
              last_seq INTEGER NOT NULL,
              total INTEGER NOT NULL,
              processed INTEGER NOT NULL,
              requeued INTEGER NOT NULL,
              status TEXT NOT NULL,
              created_at INTEGER NOT NULL,
              finished_at INTEGER
          );
          CREATE TABLE ops_events (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              sub_id TEXT NOT NULL,
              kind TEXT NOT NULL,
              at INTEGER NOT NULL,
              message TEXT NOT NULL
          );",
    },
    Migration {
        version: 2,
        name: "delivery sub-shards: owner and generation of a delivery",
        sql: "ALTER TABLE deliveries ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
              ALTER TABLE deliveries ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
              CREATE INDEX deliveries_key_seq ON deliveries (sub_id, order_key, seq);
              CREATE INDEX deliveries_shard ON deliveries (status, shard, seq);",
    },
    Migration {
        version: 3,
        name: "recovery from the lake: the hours left to import",
        sql: "ALTER TABLE jobs ADD COLUMN lake_next INTEGER;
              ALTER TABLE jobs ADD COLUMN lake_end INTEGER;
              ALTER TABLE jobs ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
              ALTER TABLE jobs ADD COLUMN error TEXT;",
    },
];

/// Settings stored with a subscription (JSON column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Settings {
    pub(super) retry_schedule: Vec<i64>,
    pub(super) timeout_ms: u64,
    pub(super) batch: Option<BatchSpec>,
    pub(super) ordering_key: Option<String>,
    pub(super) disable_after_ms: i64,
    pub(super) description: Option<String>,
    pub(super) worker_id: Option<String>,
    pub(super) rpc_method: Option<String>,
}

/// Validates a retry schedule.
pub(super) fn check_schedule(s: &[i64]) -> ObjectResult<()> {
    if s.is_empty() || s.len() > MAX_RETRY_SCHEDULE_LEN {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            format!("retrySchedule needs 1-{MAX_RETRY_SCHEDULE_LEN} delays"),
        ));
    }
    if s.iter().any(|d| !(0..=MAX_RETRY_DELAY_MS).contains(d)) {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            format!("retrySchedule delays are 0-{MAX_RETRY_DELAY_MS} ms"),
        ));
    }
    Ok(())
}

/// A subscription's target: an http(s) URL with a host
/// ([`events_core::outbound::parse_target`]), of at most [`MAX_URL_LEN`]
/// characters. Its address is checked by the host's outbound policy, when
/// it is set and again when it is sent to.
pub(super) fn check_url(url: &str) -> ObjectResult<()> {
    if url.len() > MAX_URL_LEN || events_core::outbound::parse_target(url).is_err() {
        return Err(invalid(format!("url must be an http(s) URL of at most {MAX_URL_LEN} characters")));
    }
    Ok(())
}

pub(super) fn check_settings(s: &Settings) -> ObjectResult<()> {
    check_schedule(&s.retry_schedule)?;
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&s.timeout_ms) {
        return Err(ApiError::new(ErrorCode::InvalidConfig, format!("timeoutMs is {MIN_TIMEOUT_MS}-{MAX_TIMEOUT_MS}")));
    }
    if let Some(b) = s.batch
        && (b.max_size == 0 || b.max_size > MAX_BATCH_SIZE || !(0..=MAX_BATCH_WINDOW_MS).contains(&b.window_ms))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            format!("batch.maxSize is 1-{MAX_BATCH_SIZE}, batch.windowMs 0-{MAX_BATCH_WINDOW_MS}"),
        ));
    }
    if let Some(k) = &s.ordering_key
        && (k.is_empty() || k.len() > MAX_ORDERING_KEY_LEN)
    {
        return Err(ApiError::new(ErrorCode::InvalidConfig, "orderingKey is a field name of 1-128 characters"));
    }
    if s.disable_after_ms <= 0 {
        return Err(ApiError::new(ErrorCode::InvalidConfig, "disableAfterMs must be positive"));
    }
    Ok(())
}

impl Subscriptions {
    pub(super) fn prune<S: SqlStorage>(db: &S, now: i64) -> ObjectResult<()> {
        let horizon = now - EVENT_LOG_RETENTION_MS;
        db.execute(
            "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE at < ?1 ORDER BY at LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        db.execute(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE (status = 'delivered'
             AND delivered_at < ?1) OR (status = 'forwarded' AND created_at < ?1) LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events e WHERE received_at < ?1 AND NOT EXISTS
             (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status NOT IN ('delivered', 'forwarded')) ORDER BY seq LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        db.execute("DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at <= ?1", &[now.into()])?;
        Ok(())
    }
}
