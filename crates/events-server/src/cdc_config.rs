//! The `[cdc]` table of the server configuration: change-capture tunables,
//! passed to every `CdcProcessor` as host variables `cdc.*`.

use events_objects::cdc as c;
use serde::{Deserialize, Serialize};

/// Change capture (the `[cdc]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdcConfig {
    /// Write a delta file once this many changes are pending (1-100,000).
    pub flush_max_changes: i64,
    /// Write a delta file once the oldest pending change waited this long (ms).
    pub flush_max_age_ms: i64,
    /// Compact once a collection has this many delta files.
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
    /// Crash tests only: `compact-after-write` aborts the process after a
    /// compaction wrote its files and before it recorded them.
    pub failpoint: Option<String>,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            flush_max_changes: c::DEFAULT_FLUSH_MAX_CHANGES,
            flush_max_age_ms: c::DEFAULT_FLUSH_MAX_AGE_MS,
            compact_min_deltas: c::DEFAULT_COMPACT_MIN_DELTAS,
            fold_max_changes: c::DEFAULT_FOLD_MAX_CHANGES,
            state_file_rows: c::DEFAULT_STATE_FILE_ROWS,
            keep_daily: c::DEFAULT_KEEP_DAILY,
            keep_monthly: c::DEFAULT_KEEP_MONTHLY,
            failpoint: None,
        }
    }
}

impl CdcConfig {
    /// The host variables read by `CdcProcessor`.
    pub fn host_vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("cdc.flush_max_changes".to_string(), self.flush_max_changes.to_string()),
            ("cdc.flush_max_age_ms".to_string(), self.flush_max_age_ms.to_string()),
            ("cdc.compact_min_deltas".to_string(), self.compact_min_deltas.to_string()),
            ("cdc.fold_max_changes".to_string(), self.fold_max_changes.to_string()),
            ("cdc.state_file_rows".to_string(), self.state_file_rows.to_string()),
            ("cdc.keep_daily".to_string(), self.keep_daily.to_string()),
            ("cdc.keep_monthly".to_string(), self.keep_monthly.to_string()),
        ];
        if let Some(f) = &self.failpoint {
            vars.push(("cdc.failpoint".to_string(), f.clone()));
        }
        vars
    }
}
