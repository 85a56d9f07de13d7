//! Peak resident memory of the benchmark process, to set against the
//! design's memory budget per object. Linux only (`/proc/self/status`
//! `VmHWM`, reset through `/proc/self/clear_refs`); `None` elsewhere.

/// The memory budget of one object in the design (MiB).
pub const OBJECT_BUDGET_MIB: f64 = 128.0;

/// Resets the process's peak resident memory to its current size; `false`
/// where that is not possible (then [`peak_mib`] is the peak since start).
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The peak resident memory since the last [`reset_peak`] (MiB).
pub fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `phase`, then returns its result and the process's peak resident
/// memory during it (MiB), if this platform reports one.
pub async fn peak_during<T>(phase: impl Future<Output = T>) -> (T, Option<f64>) {
    let reset = reset_peak();
    let out = phase.await;
    (out, peak_mib().filter(|_| reset))
}
