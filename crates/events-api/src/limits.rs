//! Rate limits and daily quotas counted in process, reconciled with the
//! [`RateLimiter`] objects in the background.
//!
//! An ingest request must not wait on a limiter object (it would be two more
//! object calls per batch), so each process keeps, per subject, its view of
//! the counts: the totals the object last answered plus what this process
//! admitted since. Decisions are made on that view, with the same sliding
//! window as the object ([`WindowCounts`]). Every [`SYNC_INTERVAL_MS`] a
//! request that finds its subject due hands back a [`SyncJob`], and a host
//! with timers also collects due jobs every interval ([`LocalLimits::due`]);
//! the host runs them in the background: a job merges the local counts into
//! the object ([`LimitRequest::Merge`]) and replaces the view with the totals.
//!
//! # Bound on overshoot
//! Within one process decisions are exact: the view holds every request the
//! process admitted. Across processes (Worker isolates, or several servers
//! sharing a data directory's objects), a process does not see what the
//! others admitted since their last merge, so a limit can be exceeded by at
//! most what the *other* processes admit in one sync interval plus one
//! object round trip. A crash loses at most the counts of the last interval
//! on a host that merges on a timer (the native server; a graceful stop
//! merges everything), and on the Worker the counts a request made after an
//! isolate's last merge of that subject (they are soft state; see
//! [`RateLimiter`]). The first request of a subject in a process loads the
//! totals from the object (one call).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use events_core::{ApiError, Timestamp};
use events_objects::RateLimiter;
use events_objects::rate_limiter::{
    DayCounts, LimitRequest, LimitResponse, QuotaDecision, RateDecision, WINDOW_MS, WindowCounts,
};
use events_runtime::Host;

/// How often a process merges its counts of one subject into the object (ms).
pub const SYNC_INTERVAL_MS: i64 = 1_000;
/// Most subjects whose counts a process keeps; past it, subjects with
/// nothing left to merge are forgotten.
pub const MAX_SUBJECTS: usize = 100_000;

/// One subject's view and what this process counted but has not merged.
#[derive(Debug)]
struct Subject {
    window: WindowCounts,
    day: DayCounts,
    /// Counted since the last merge started: (window start, requests, events).
    unsent_windows: Vec<(i64, u64, u64)>,
    /// Counted since the last merge started: (day start, events).
    unsent_days: Vec<(i64, u64)>,
    /// When the last merge started (ms).
    last_sync: i64,
    syncing: bool,
}

impl Subject {
    fn new(window: WindowCounts, day: DayCounts, now: i64) -> Self {
        Subject { window, day, unsent_windows: Vec::new(), unsent_days: Vec::new(), last_sync: now, syncing: false }
    }

    fn note_window(&mut self, requests: u64, events: u64) {
        let start = self.window.window_start;
        match self.unsent_windows.iter_mut().find(|(s, _, _)| *s == start) {
            Some(entry) => {
                entry.1 += requests;
                entry.2 += events;
            }
            None => self.unsent_windows.push((start, requests, events)),
        }
        // Counts older than the previous window no longer matter to anyone.
        self.unsent_windows.retain(|(s, _, _)| *s >= start - WINDOW_MS);
    }

    fn note_day(&mut self, events: u64) {
        let day = self.day.day;
        match self.unsent_days.iter_mut().find(|(d, _)| *d == day) {
            Some(entry) => entry.1 += events,
            None => self.unsent_days.push((day, events)),
        }
        self.unsent_days.retain(|(d, _)| *d == day);
    }

    fn has_unsent(&self) -> bool {
        !self.unsent_windows.is_empty() || !self.unsent_days.is_empty()
    }

    /// Starts a merge if one is due: takes the unsent counts.
    fn take_due(&mut self, subject: &str, now: i64) -> Option<SyncJob> {
        if self.syncing || !self.has_unsent() || now - self.last_sync < SYNC_INTERVAL_MS {
            return None;
        }
        self.syncing = true;
        self.last_sync = now;
        Some(SyncJob {
            subject: subject.to_string(),
            windows: std::mem::take(&mut self.unsent_windows),
            days: std::mem::take(&mut self.unsent_days),
        })
    }
}

/// A merge of one subject's local counts into its object, for the host to
/// run in the background ([`LocalLimits::sync`]).
#[derive(Debug)]
#[must_use = "a sync job carries counts that are lost if it is not run"]
pub struct SyncJob {
    subject: String,
    windows: Vec<(i64, u64, u64)>,
    days: Vec<(i64, u64)>,
}

/// The in-process limit counts of one host process. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct LocalLimits {
    subjects: Arc<Mutex<HashMap<String, Subject>>>,
}

impl LocalLimits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subject>> {
        self.subjects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads a subject's totals from its object unless this process knows it.
    async fn ensure<H: Host>(&self, host: &H, subject: &str, now: Timestamp) -> Result<(), ApiError> {
        if self.lock().contains_key(subject) {
            return Ok(());
        }
        let (window, day) = match host
            .call::<RateLimiter>(subject, LimitRequest::Merge { windows: Vec::new(), days: Vec::new() })
            .await?
        {
            LimitResponse::Counts { window, day } => (window, day),
            _ => (WindowCounts::new(now), DayCounts::new(now)),
        };
        let mut map = self.lock();
        if map.len() >= MAX_SUBJECTS {
            map.retain(|_, s| s.has_unsent() || s.syncing);
        }
        map.entry(subject.to_string()).or_insert_with(|| Subject::new(window, day, now.as_millis()));
        Ok(())
    }

    /// Counts one request of `events` events against `subject`'s per-minute
    /// limits if it fits; also answers a merge to run when one is due.
    pub async fn check_rate<H: Host>(
        &self,
        host: &H,
        subject: &str,
        requests_per_minute: u64,
        events_per_minute: u64,
        events: u64,
    ) -> Result<(RateDecision, Option<SyncJob>), ApiError> {
        let now = host.now();
        self.ensure(host, subject, now).await?;
        let mut map = self.lock();
        let Some(s) = map.get_mut(subject) else {
            return Err(ApiError::internal("rate-limit subject vanished"));
        };
        let decision = s.window.check(now, requests_per_minute, events_per_minute, events);
        if decision.allowed {
            s.note_window(1, events);
        }
        Ok((decision, s.take_due(subject, now.as_millis())))
    }

    /// Counts `events` against `subject`'s daily quota (0 = unlimited) if
    /// they fit; also answers a merge to run when one is due.
    pub async fn check_quota<H: Host>(
        &self,
        host: &H,
        subject: &str,
        events_per_day: u64,
        events: u64,
    ) -> Result<(QuotaDecision, Option<SyncJob>), ApiError> {
        let now = host.now();
        self.ensure(host, subject, now).await?;
        let mut map = self.lock();
        let Some(s) = map.get_mut(subject) else {
            return Err(ApiError::internal("quota subject vanished"));
        };
        let decision = s.day.check(now, events_per_day, events);
        if decision.allowed {
            s.note_day(events);
        }
        Ok((decision, s.take_due(subject, now.as_millis())))
    }

    /// Runs a merge: sends the counts, then takes the object's totals plus
    /// whatever this process counted while the merge was under way. On
    /// failure the counts go back to be sent with the next merge.
    pub async fn sync<H: Host>(&self, host: &H, job: SyncJob) -> Result<(), ApiError> {
        let request = LimitRequest::Merge { windows: job.windows.clone(), days: job.days.clone() };
        let answer = host.call::<RateLimiter>(&job.subject, request).await;
        let now = host.now();
        let mut map = self.lock();
        let Some(s) = map.get_mut(&job.subject) else { return answer.map(|_| ()) };
        s.syncing = false;
        match answer {
            Ok(LimitResponse::Counts { mut window, mut day }) => {
                window.roll(now);
                day.roll(now);
                for &(start, requests, events) in &s.unsent_windows {
                    window.add(start, requests, events);
                }
                for &(d, events) in &s.unsent_days {
                    if d == day.day {
                        day.events += events;
                    }
                }
                s.window = window;
                s.day = day;
                Ok(())
            }
            Ok(_) => Err(ApiError::internal("rate limiter answered out of protocol")),
            Err(e) => {
                for (start, requests, events) in job.windows {
                    s.unsent_windows.push((start, requests, events));
                }
                s.unsent_days.extend(job.days);
                Err(e)
            }
        }
    }

    /// Merge jobs for every subject whose counts are due at `now` (ms), for
    /// a host that merges on a timer as well; with `all`, every subject with
    /// unsent counts (at shutdown).
    pub fn due(&self, now: Timestamp, all: bool) -> Vec<SyncJob> {
        let now = now.as_millis();
        let mut map = self.lock();
        map.iter_mut()
            .filter_map(|(name, s)| {
                if all {
                    s.last_sync = now - SYNC_INTERVAL_MS;
                }
                s.take_due(name, now)
            })
            .collect()
    }
}
