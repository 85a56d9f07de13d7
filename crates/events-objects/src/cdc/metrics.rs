//! Prometheus metrics of change capture (`events_cdc_*`).

/// Changes applied, duplicates skipped.
pub fn applied(a: &super::Applied) {
    metrics::counter!("events_cdc_changes_applied_total").increment(a.applied as u64);
    metrics::counter!("events_cdc_changes_duplicate_total").increment(a.duplicates as u64);
}

/// Late changes found by a fold.
pub fn late(n: usize) {
    metrics::counter!("events_cdc_changes_late_total").increment(n as u64);
}

/// A delta file was written.
pub fn flushed(rows: i64, bytes: i64) {
    metrics::counter!("events_cdc_delta_files_total").increment(1);
    metrics::counter!("events_cdc_delta_rows_total").increment(rows as u64);
    metrics::counter!("events_cdc_delta_bytes_total").increment(bytes as u64);
}

/// Changes removed from the history by a trim.
pub fn trimmed(rows: usize) {
    metrics::counter!("events_cdc_history_trimmed_total").increment(rows as u64);
}

/// A compaction ran.
pub fn compaction() {
    metrics::counter!("events_cdc_compactions_total").increment(1);
}

/// A commit of the current table to the Iceberg catalog failed (retried by the alarm).
pub fn publish_failed() {
    metrics::counter!("events_cdc_catalog_publish_failures_total").increment(1);
}

/// A snapshot was taken or skipped.
pub fn snapshot(kind: &'static str, outcome: &'static str) {
    metrics::counter!("events_cdc_snapshots_total", "kind" => kind, "outcome" => outcome).increment(1);
}
