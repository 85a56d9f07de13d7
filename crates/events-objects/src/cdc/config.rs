//! [`CdcConfig`]: the change-capture tunables of the server's `[cdc]` table.

use events_runtime::Host;
use serde::{Deserialize, Serialize};

use super::*;
use crate::var_or;

/// Change-capture tunables: the server's `[cdc]` configuration table, carried
/// to each processor as host variables `cdc.*` (defaults above).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdcConfig {
    /// Write a delta file once this many changes are pending (1-100,000).
    pub flush_max_changes: i64,
    /// Write a delta file once the oldest pending change waited this long (ms).
    pub flush_max_age_ms: i64,
    /// Compact once this many delta files hold changes the current table
    /// does not (and those are a tenth of the documents; see `COMPACT_MIN_SHARE_DIVISOR`).
    pub compact_min_deltas: i64,
    /// Fold the changes appended since the last fold into the documents'
    /// state once this many are waiting (1-200,000; reads and the alarm fold sooner).
    pub fold_max_changes: i64,
    /// Most documents per state file (current table, snapshot): larger
    /// states are several files, written one at a time (1-1,000,000).
    pub state_file_rows: i64,
    /// Daily snapshots kept per collection (0: none taken).
    pub keep_daily: i64,
    /// Monthly snapshots kept per collection (0: none taken).
    pub keep_monthly: i64,
    /// How long a change stays in the object's history after it arrived
    /// (ms, at least [`MIN_HISTORY_KEEP_MS`]); older changes are trimmed to
    /// each document's winning one, and earlier times are read from the lake.
    pub history_keep_ms: i64,
    /// Crash tests only: `compact-after-write` aborts the process after a
    /// compaction wrote its files and before it recorded them.
    pub failpoint: Option<String>,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            flush_max_changes: DEFAULT_FLUSH_MAX_CHANGES,
            flush_max_age_ms: DEFAULT_FLUSH_MAX_AGE_MS,
            compact_min_deltas: DEFAULT_COMPACT_MIN_DELTAS,
            fold_max_changes: DEFAULT_FOLD_MAX_CHANGES,
            state_file_rows: DEFAULT_STATE_FILE_ROWS,
            keep_daily: DEFAULT_KEEP_DAILY,
            keep_monthly: DEFAULT_KEEP_MONTHLY,
            history_keep_ms: DEFAULT_HISTORY_KEEP_MS,
            failpoint: None,
        }
    }
}

impl CdcConfig {
    /// The host variables (`cdc.*`) that carry this configuration to every
    /// processor (see [`CdcConfig::from_host`]).
    pub fn host_vars(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("flush_max_changes", self.flush_max_changes),
            ("flush_max_age_ms", self.flush_max_age_ms),
            ("compact_min_deltas", self.compact_min_deltas),
            ("fold_max_changes", self.fold_max_changes),
            ("state_file_rows", self.state_file_rows),
            ("keep_daily", self.keep_daily),
            ("keep_monthly", self.keep_monthly),
            ("history_keep_ms", self.history_keep_ms),
        ]
        .into_iter()
        .map(|(name, value)| (format!("cdc.{name}"), value.to_string()))
        .collect();
        if let Some(f) = &self.failpoint {
            vars.push(("cdc.failpoint".to_string(), f.clone()));
        }
        vars
    }

    /// Checks every value is in its range (the message names the key).
    pub fn validate(&self) -> Result<(), String> {
        let ranges = [
            ("flush_max_changes", self.flush_max_changes, 1, MAX_CHANGES_PER_DELTA),
            ("flush_max_age_ms", self.flush_max_age_ms, 1, i64::MAX),
            ("compact_min_deltas", self.compact_min_deltas, 1, i64::MAX),
            ("fold_max_changes", self.fold_max_changes, 1, MAX_FOLD_CHANGES),
            ("state_file_rows", self.state_file_rows, 1, MAX_STATE_FILE_ROWS),
            ("keep_daily", self.keep_daily, 0, i64::MAX),
            ("keep_monthly", self.keep_monthly, 0, i64::MAX),
            ("history_keep_ms", self.history_keep_ms, MIN_HISTORY_KEEP_MS, i64::MAX),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                let upper = if max == i64::MAX { String::new() } else { format!(" and at most {max}") };
                return Err(format!("cdc.{name} must be at least {min}{upper}, got {value}"));
            }
        }
        Ok(())
    }

    /// The configuration the host's variables give, each value brought into its range.
    pub fn from_host<H: Host>(host: &H) -> Self {
        let d = CdcConfig::default();
        CdcConfig {
            flush_max_changes: var_or(host, "cdc.flush_max_changes", d.flush_max_changes)
                .clamp(1, MAX_CHANGES_PER_DELTA),
            flush_max_age_ms: var_or(host, "cdc.flush_max_age_ms", d.flush_max_age_ms).max(1),
            compact_min_deltas: var_or(host, "cdc.compact_min_deltas", d.compact_min_deltas).max(1),
            fold_max_changes: var_or(host, "cdc.fold_max_changes", d.fold_max_changes).clamp(1, MAX_FOLD_CHANGES),
            state_file_rows: var_or(host, "cdc.state_file_rows", d.state_file_rows).clamp(1, MAX_STATE_FILE_ROWS),
            keep_daily: var_or(host, "cdc.keep_daily", d.keep_daily).max(0),
            keep_monthly: var_or(host, "cdc.keep_monthly", d.keep_monthly).max(0),
            history_keep_ms: var_or(host, "cdc.history_keep_ms", d.history_keep_ms).max(MIN_HISTORY_KEEP_MS),
            failpoint: host.var("cdc.failpoint").filter(|f| !f.is_empty()),
        }
    }
}
