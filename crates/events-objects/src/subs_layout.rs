//! When a namespace's [`crate::Subscriptions`] delivery work is split across
//! sub-shards, and when it is merged back.
//!
//! Every sub-shard (and the namespace's main object, sub-shard 0) reports its
//! load (deliveries waiting, deliveries per second) to the namespace's
//! [`crate::ShardCoordinator`] from its alarm. The coordinator keeps the
//! latest report of each and decides with [`SubsLayoutState::report`]:
//!
//! - **split** (the count doubles, up to `max_shards`) when the summed backlog
//!   reaches `split_backlog` or the summed rate reaches `split_rate`;
//! - **merge** (the count halves) when both stayed below `merge_backlog` and
//!   `merge_rate` for `merge_quiet_ms`;
//! - no change within `cooldown_ms` of the last one.
//!
//! Every change grows the epoch. How deliveries follow the layout without
//! being lost, doubled or reordered is the main object's business (see
//! `subscription/sharding.rs`).

use events_runtime::Host;
use serde::{Deserialize, Serialize};

use crate::var_or;

/// Most delivery sub-shards per namespace.
pub const MAX_SUBS_SHARDS: u32 = 16;
/// Default summed backlog that splits.
pub const DEFAULT_SPLIT_BACKLOG: u64 = 50_000;
/// Default summed delivery rate (per second) that splits.
pub const DEFAULT_SPLIT_RATE: u64 = 4_000;
/// Default backlog under which a merge may happen.
pub const DEFAULT_MERGE_BACKLOG: u64 = 1_000;
/// Default rate (per second) under which a merge may happen.
pub const DEFAULT_MERGE_RATE: u64 = 500;
/// Default minimum time between two layout changes.
pub const DEFAULT_SUBS_COOLDOWN_MS: i64 = 10_000;
/// Default quiet time before a merge.
pub const DEFAULT_MERGE_QUIET_MS: i64 = 60_000;
/// A report older than this no longer counts.
pub const REPORT_STALE_MS: i64 = 30_000;

/// The thresholds of the policy (configuration `[subscriptions]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubsThresholds {
    /// Summed backlog that splits.
    pub split_backlog: u64,
    /// Summed deliveries per second that split.
    pub split_rate: u64,
    /// Backlog under which a merge may happen.
    pub merge_backlog: u64,
    /// Rate under which a merge may happen.
    pub merge_rate: u64,
    /// Minimum time between two changes (ms).
    pub cooldown_ms: i64,
    /// Quiet time before a merge (ms).
    pub merge_quiet_ms: i64,
    /// Most sub-shards.
    pub max_shards: u32,
}

impl SubsThresholds {
    /// Reads the thresholds from the host's variables (`subscriptions.*`), with defaults.
    pub fn from_host<H: Host>(host: &H) -> Self {
        SubsThresholds {
            split_backlog: var_or(host, "subscriptions.split_backlog", DEFAULT_SPLIT_BACKLOG),
            split_rate: var_or(host, "subscriptions.split_rate", DEFAULT_SPLIT_RATE),
            merge_backlog: var_or(host, "subscriptions.merge_backlog", DEFAULT_MERGE_BACKLOG),
            merge_rate: var_or(host, "subscriptions.merge_rate", DEFAULT_MERGE_RATE),
            cooldown_ms: var_or(host, "subscriptions.cooldown_ms", DEFAULT_SUBS_COOLDOWN_MS),
            merge_quiet_ms: var_or(host, "subscriptions.merge_quiet_ms", DEFAULT_MERGE_QUIET_MS),
            max_shards: var_or(host, "subscriptions.max_shards", MAX_SUBS_SHARDS).clamp(1, MAX_SUBS_SHARDS),
        }
    }
}

/// The load one sub-shard reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLoad {
    /// Sub-shard number (0 is the main object).
    pub shard: u32,
    /// Deliveries waiting.
    pub backlog: u64,
    /// Deliveries per second since its previous report.
    pub rate: u64,
    /// When it reported (ms).
    pub at: i64,
}

/// The sub-shard layout and the reports it is decided from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsLayoutState {
    /// Sub-shards in use (0 means never set: 1).
    pub shards: u32,
    /// Grows with every change.
    pub epoch: u64,
    /// Time of the last change (ms).
    pub changed_at: i64,
    /// Last time the load was above the merge thresholds (ms).
    pub busy_at: i64,
    /// Latest report of each sub-shard.
    pub loads: Vec<ShardLoad>,
}

impl SubsLayoutState {
    /// Sub-shards in use.
    pub fn count(&self) -> u32 {
        self.shards.max(1)
    }

    /// Summed (backlog, rate) of the fresh reports.
    pub fn totals(&self, now: i64) -> (u64, u64) {
        self.loads
            .iter()
            .filter(|l| now - l.at <= REPORT_STALE_MS)
            .fold((0, 0), |(b, r), l| (b + l.backlog, r + l.rate))
    }

    /// Records a report and applies the policy. Returns whether the layout changed.
    pub fn report(&mut self, t: &SubsThresholds, load: ShardLoad, now: i64) -> bool {
        self.shards = self.count();
        self.loads.retain(|l| l.shard != load.shard && now - l.at <= REPORT_STALE_MS);
        self.loads.push(load);
        self.loads.sort_by_key(|l| l.shard);
        let (backlog, rate) = self.totals(now);
        if backlog > t.merge_backlog || rate > t.merge_rate {
            self.busy_at = now;
        }
        let cooling = self.epoch > 0 && now - self.changed_at < t.cooldown_ms;
        let before = self.shards;
        if cooling {
            return false;
        }
        if (backlog >= t.split_backlog || rate >= t.split_rate) && self.shards < t.max_shards {
            self.shards = (self.shards * 2).min(t.max_shards);
        } else if self.shards > 1 && now - self.busy_at.max(self.changed_at) >= t.merge_quiet_ms {
            self.shards = (self.shards / 2).max(1);
        }
        if self.shards == before {
            return false;
        }
        assert!((1..=t.max_shards.max(before)).contains(&self.shards), "sub-shard count out of range");
        self.epoch += 1;
        self.changed_at = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: SubsThresholds = SubsThresholds {
        split_backlog: 100,
        split_rate: 1_000,
        merge_backlog: 10,
        merge_rate: 100,
        cooldown_ms: 1_000,
        merge_quiet_ms: 5_000,
        max_shards: 4,
    };

    fn load(shard: u32, backlog: u64, rate: u64, at: i64) -> ShardLoad {
        ShardLoad { shard, backlog, rate, at }
    }

    #[test]
    fn splits_on_backlog_or_rate_and_merges_after_quiet() {
        let mut s = SubsLayoutState::default();
        assert!(!s.report(&T, load(0, 50, 10, 0), 0));
        assert_eq!(s.count(), 1);
        assert!(s.report(&T, load(0, 150, 10, 100), 100));
        assert_eq!((s.count(), s.epoch), (2, 1));
        // Cooling down: no change even though still hot.
        assert!(!s.report(&T, load(1, 500, 10, 200), 200));
        // Summed over sub-shards, by rate this time: 600 + 600 >= 1000.
        assert!(!s.report(&T, load(1, 0, 600, 1_050), 1_050));
        assert!(s.report(&T, load(0, 0, 600, 1_100), 1_100));
        assert_eq!(s.count(), 4);
        // Never past the maximum.
        assert!(!s.report(&T, load(2, 10_000, 0, 2_500), 2_500));
        assert_eq!(s.count(), 4);
        // Quiet, but not long enough.
        for sh in 0..4 {
            s.report(&T, load(sh, 0, 0, 3_000), 3_000);
        }
        assert_eq!(s.count(), 4);
        assert!(s.report(&T, load(0, 0, 0, 8_100), 8_100));
        assert_eq!((s.count(), s.epoch), (2, 3));
        assert!(s.report(&T, load(0, 0, 0, 13_200), 13_200));
        assert_eq!(s.count(), 1);
        assert!(!s.report(&T, load(0, 0, 0, 30_000), 30_000));
        assert_eq!((s.count(), s.epoch), (1, 4));
    }
}
