//! [`ShardCoordinator`]: how many [`crate::EventWriter`] shards a namespace uses.
//!
//! A namespace starts with `shards.min` writer shards (default one, `<ns>/0`;
//! the native server sets it from its cores: one per executor thread that
//! runs writers, as one shard keeps one such thread busy). When callers report
//! backpressure (a shard had too many requests in flight, or refused one as
//! overloaded) often enough, the coordinator adds a shard, up to
//! [`MAX_SHARDS`]; after a quiet spell it removes the newest one again (never
//! going below `shards.min`). A
//! removed shard keeps flushing what it holds: only routing changes.
//! The layout carries an `epoch` that grows with every change.
//!
//! Batches sent with a `batchId` do not follow the load: each goes to the
//! shard [`batch_shard`] names among the namespace's first `batch_shards`
//! shards, a count fixed when the namespace is first seen. Those shards
//! exist in every layout, so a replay (at once, after a restart, or after
//! the layout grew or shrank) meets the writer that took the original, whose
//! own record of batch ids deduplicates it, with no call beyond the append.
//!
//! It also keeps the sub-shard layout of the namespace's
//! [`crate::Subscriptions`] (see [`crate::subs_layout`]), from the load each
//! sub-shard reports with [`ShardRequest::SubsLoad`].

use events_core::Timestamp;
use events_runtime::context::ObjectStorage;
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult};
use serde::{Deserialize, Serialize};

use crate::subs_layout::{ShardLoad, SubsLayoutState, SubsThresholds};
use crate::var_or;

/// Most writer shards per namespace.
pub const MAX_SHARDS: u32 = 16;
/// Backpressure reports within [`REPORT_WINDOW_MS`] that add a shard.
pub const SCALE_UP_REPORTS: usize = 3;
/// Window over which backpressure reports are counted.
pub const REPORT_WINDOW_MS: i64 = 30_000;
/// Minimum time between two layout changes.
pub const COOLDOWN_MS: i64 = 60_000;
/// Quiet time (no backpressure) after which one shard is removed.
pub const SCALE_DOWN_QUIET_MS: i64 = 300_000;

/// The current shard layout of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLayout {
    /// Active shard numbers, `0..count`.
    pub shards: u32,
    /// Grows with every change.
    pub epoch: u64,
    /// The shards `batchId` batches are spread over ([`batch_shard`]); fixed
    /// for the namespace's life, never more than `shards`.
    #[serde(default = "one")]
    pub batch_shards: u32,
    /// When the layout last changed.
    pub changed_at: Timestamp,
    /// Backpressure reports in the current window.
    pub recent_reports: usize,
    /// Delivery sub-shards of the namespace's subscriptions.
    #[serde(default)]
    pub subscription_shards: u32,
    /// Grows with every change of `subscription_shards`.
    #[serde(default)]
    pub subscription_epoch: u64,
    /// Summed deliveries waiting, as last reported by the sub-shards.
    #[serde(default)]
    pub subscription_backlog: u64,
    /// Summed deliveries per second, as last reported by the sub-shards.
    #[serde(default)]
    pub subscription_rate: u64,
}

/// Requests to a [`ShardCoordinator`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardRequest {
    /// The current layout.
    Layout,
    /// A caller saw backpressure on `shard`.
    Backpressure {
        /// The shard number.
        shard: u32,
    },
    /// A [`crate::Subscriptions`] sub-shard reports its load; the answer
    /// carries the sub-shard layout to follow.
    SubsLoad {
        /// Sub-shard number (0 is the main object).
        shard: u32,
        /// Deliveries waiting.
        backlog: u64,
        /// Deliveries per second since its previous report.
        rate: u64,
    },
}

fn one() -> u32 {
    1
}

/// The writer shard of a batch sent with `batch_id`, among a namespace's
/// `batch_shards` ([`ShardLayout::batch_shards`]). Stable across processes,
/// releases and hosts: FNV-1a of the id's bytes.
pub fn batch_shard(batch_id: &str, batch_shards: u32) -> u32 {
    assert!(batch_shards > 0, "a namespace has at least one batch shard");
    (events_core::hash::fnv1a(batch_id.as_bytes()) % u64::from(batch_shards)) as u32
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    shards: u32,
    epoch: u64,
    /// Fixed on first load (0 in a state saved before it existed).
    #[serde(default)]
    batch_shards: u32,
    changed_at: i64,
    reports: Vec<i64>,
    last_report: i64,
    #[serde(default)]
    subs: SubsLayoutState,
}

/// The coordinator object (one per namespace).
pub struct ShardCoordinator {
    state: State,
    cooldown_ms: i64,
    quiet_ms: i64,
    max_shards: u32,
    /// The fewest shards a namespace has (`shards.min`, at most `max_shards`).
    min_shards: u32,
    subs_thresholds: SubsThresholds,
    now: i64,
}

const MIGRATIONS: &[Migration] = &[];

impl ShardCoordinator {
    fn layout(&self) -> ShardLayout {
        ShardLayout {
            shards: self.state.shards,
            epoch: self.state.epoch,
            batch_shards: self.state.batch_shards,
            changed_at: Timestamp(self.state.changed_at),
            recent_reports: self.state.reports.len(),
            subscription_shards: self.state.subs.count(),
            subscription_epoch: self.state.subs.epoch,
            subscription_backlog: self.state.subs.totals(self.now).0,
            subscription_rate: self.state.subs.totals(self.now).1,
        }
    }

    fn change(&mut self, shards: u32, now: i64) {
        assert!((1..=self.max_shards).contains(&shards), "shard count out of range");
        self.state.shards = shards;
        self.state.epoch += 1;
        self.state.changed_at = now;
        self.state.reports.clear();
    }

    /// Records a writer shard's backpressure report ([`ShardRequest::Backpressure`]);
    /// enough of them within the report window add a shard, outside the cooldown.
    async fn backpressure<H: Host>(&mut self, cx: &ObjectContext<H>, shard: u32, now: i64) -> ObjectResult<()> {
        self.state.reports.retain(|t| now - t < REPORT_WINDOW_MS);
        self.state.reports.push(now);
        self.state.last_report = now;
        let cooling = now - self.state.changed_at < self.cooldown_ms && self.state.epoch > 0;
        if self.state.reports.len() >= SCALE_UP_REPORTS && self.state.shards < self.max_shards && !cooling {
            let shards = self.state.shards + 1;
            self.change(shards, now);
            cx.storage().set_alarm(Timestamp(now + self.quiet_ms)).await?;
            let _ = shard;
        }
        Ok(())
    }
}

impl DurableObject for ShardCoordinator {
    const CLASS: &'static str = "ShardCoordinator";
    /// Answers the ingest path's layout lookups (cached for a few seconds).
    const PLACEMENT: events_runtime::Placement = events_runtime::Placement::Latency;
    type Request = ShardRequest;
    type Response = ShardLayout;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let mut state: State = cx.kv().get("state")?.unwrap_or_default();
        let max_shards = var_or(cx.host(), "shards.max", MAX_SHARDS).clamp(1, MAX_SHARDS);
        let mut min_shards = var_or(cx.host(), "shards.min", 1u32).clamp(1, max_shards);
        if state.batch_shards == 0 {
            // Fixed once: later changes of `shards.min` must not move a batch id's shard.
            state.batch_shards = min_shards;
            cx.kv().put("state", &state)?;
        }
        // The batch shards stay in the layout, whatever the configured floor.
        min_shards = min_shards.max(state.batch_shards).min(max_shards);
        // Grown to the floor at once; a lowered floor is left to the quiet-time scale-down.
        state.shards = state.shards.max(min_shards).min(max_shards);
        Ok(ShardCoordinator {
            min_shards,
            state,
            cooldown_ms: var_or(cx.host(), "shards.cooldown_ms", COOLDOWN_MS),
            quiet_ms: var_or(cx.host(), "shards.scale_down_quiet_ms", SCALE_DOWN_QUIET_MS),
            max_shards,
            subs_thresholds: SubsThresholds::from_host(cx.host()),
            now: cx.now().as_millis(),
        })
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: ShardRequest) -> ObjectResult<ShardLayout> {
        let now = cx.now().as_millis();
        self.now = now;
        match req {
            ShardRequest::Layout => return Ok(self.layout()),
            ShardRequest::SubsLoad { shard, backlog, rate } => {
                let load = ShardLoad { shard, backlog, rate, at: now };
                self.state.subs.report(&self.subs_thresholds, load, now);
            }
            ShardRequest::Backpressure { shard } => self.backpressure(cx, shard, now).await?,
        }
        cx.kv().put("state", &self.state)?;
        let layout = self.layout();
        export_layout(cx.name(), &layout);
        Ok(layout)
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let now = cx.now().as_millis();
        let quiet_since = self.state.last_report.max(self.state.changed_at);
        if self.state.shards > self.min_shards {
            if now - quiet_since >= self.quiet_ms {
                let shards = self.state.shards - 1;
                self.change(shards, now);
                cx.kv().put("state", &self.state)?;
                export_layout(cx.name(), &self.layout());
            }
            let next = self.state.last_report.max(self.state.changed_at) + self.quiet_ms;
            cx.storage().set_alarm(Timestamp(next.max(now + 1_000))).await?;
        }
        Ok(())
    }
}

/// Exports a namespace's layout as Prometheus gauges (`/metrics`).
fn export_layout(namespace: &str, layout: &ShardLayout) {
    let ns = namespace.to_string();
    metrics::gauge!("events_writer_shards", "namespace" => ns.clone()).set(layout.shards as f64);
    metrics::gauge!("events_subscription_shards", "namespace" => ns.clone()).set(layout.subscription_shards as f64);
    metrics::gauge!("events_subscription_backlog", "namespace" => ns).set(layout.subscription_backlog as f64);
}
