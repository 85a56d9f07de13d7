//! [`RateLimiter`]: sliding-window rate limits and daily quotas.
//!
//! One object per subject: `key:<key id>` or `ip:<address>` for request and
//! event rates, `quota:<namespace>` for the daily event quota.
//!
//! The window is a *sliding-window counter* over one-minute buckets: the
//! estimate is `current + previous × (1 − elapsed fraction of the current
//! minute)`. A request is allowed if one more request and `events` more
//! events fit under both limits; a refused request is not counted.
//!
//! Counters are soft state: the class runs with relaxed durability.
//!
//! Hosts count in process ([`WindowCounts`] per subject, see
//! `events_api::limits`) and reconcile with the object in the background
//! ([`LimitRequest::Merge`]): the object sums what every process counted and
//! answers the totals.

use events_core::Timestamp;
use events_runtime::{Durability, DurableObject, Host, Migration, ObjectContext, ObjectResult, SqlStorage};
use serde::{Deserialize, Serialize};

/// Window length.
pub const WINDOW_MS: i64 = 60_000;
/// Length of a quota day.
pub const DAY_MS: i64 = 86_400_000;

/// Requests to a [`RateLimiter`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LimitRequest {
    /// Counts one request carrying `events` events, if it fits.
    Check {
        /// Requests allowed per minute.
        requests_per_minute: u64,
        /// Events allowed per minute.
        events_per_minute: u64,
        /// Events in this request.
        events: u64,
    },
    /// Counts `events` against a daily quota, if they fit (0 = unlimited).
    Quota {
        /// Events allowed per UTC day.
        events_per_day: u64,
        /// Events in this request.
        events: u64,
    },
    /// Today's quota usage.
    QuotaUsage,
    /// Adds what a process counted locally since its last merge and answers
    /// the totals ([`LimitResponse::Counts`]). Counts of a window or day that
    /// is no longer current or previous are dropped.
    Merge {
        /// Requests and events counted per window (by window start, ms).
        windows: Vec<(i64, u64, u64)>,
        /// Events counted per quota day (by day start, ms).
        days: Vec<(i64, u64)>,
    },
}

/// Sliding-window counts over one-minute buckets (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCounts {
    /// Start of the current window (ms).
    pub window_start: i64,
    /// Requests and events of the current window.
    pub current: (u64, u64),
    /// Requests and events of the window before it.
    pub previous: (u64, u64),
}

impl WindowCounts {
    /// Empty counts with the window of `now` current.
    pub fn new(now: Timestamp) -> Self {
        WindowCounts { window_start: now.floor_to(WINDOW_MS).as_millis(), current: (0, 0), previous: (0, 0) }
    }

    /// Makes the window of `now` current.
    pub fn roll(&mut self, now: Timestamp) {
        let start = now.floor_to(WINDOW_MS).as_millis();
        if start <= self.window_start {
            return;
        }
        self.previous = if start - self.window_start == WINDOW_MS { self.current } else { (0, 0) };
        self.current = (0, 0);
        self.window_start = start;
    }

    /// Adds counts made in the window starting at `window_start` (dropped
    /// when that window is neither the current nor the previous one).
    pub fn add(&mut self, window_start: i64, requests: u64, events: u64) {
        let slot = if window_start == self.window_start {
            &mut self.current
        } else if window_start == self.window_start - WINDOW_MS {
            &mut self.previous
        } else {
            return;
        };
        slot.0 += requests;
        slot.1 += events;
    }

    /// Counts one request of `events` events if it fits under both limits.
    pub fn check(&mut self, now: Timestamp, rpm: u64, epm: u64, events: u64) -> RateDecision {
        self.roll(now);
        let elapsed = (now.as_millis() - self.window_start) as f64 / WINDOW_MS as f64;
        let weight = 1.0 - elapsed;
        let est_requests = self.current.0 as f64 + self.previous.0 as f64 * weight;
        let est_events = self.current.1 as f64 + self.previous.1 as f64 * weight;
        let allowed = est_requests + 1.0 <= rpm as f64 && est_events + events as f64 <= epm as f64;
        if allowed {
            self.current.0 += 1;
            self.current.1 += events;
        }
        let used_requests = (est_requests + if allowed { 1.0 } else { 0.0 }).ceil() as u64;
        let used_events = (est_events + if allowed { events as f64 } else { 0.0 }).ceil() as u64;
        let reset_ms = self.window_start + WINDOW_MS - now.as_millis();
        let reset_seconds = ((reset_ms + 999) / 1000).max(1) as u64;
        RateDecision {
            allowed,
            request_limit: rpm,
            requests_remaining: rpm.saturating_sub(used_requests),
            event_limit: epm,
            events_remaining: epm.saturating_sub(used_events),
            reset_seconds,
            retry_after_seconds: if allowed { 0 } else { reset_seconds },
        }
    }
}

/// Daily quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    /// Start of the quota day (UTC, ms).
    pub day: i64,
    /// Events counted that day.
    pub events: u64,
}

impl DayCounts {
    /// Empty counts for the day of `now`.
    pub fn new(now: Timestamp) -> Self {
        DayCounts { day: now.floor_to(DAY_MS).as_millis(), events: 0 }
    }

    /// Makes the day of `now` current.
    pub fn roll(&mut self, now: Timestamp) {
        let day = now.floor_to(DAY_MS).as_millis();
        if day > self.day {
            *self = DayCounts { day, events: 0 };
        }
    }

    /// Counts `events` against `events_per_day` (0 = unlimited) if they fit.
    pub fn check(&mut self, now: Timestamp, events_per_day: u64, events: u64) -> QuotaDecision {
        self.roll(now);
        let allowed = events_per_day == 0 || self.events + events <= events_per_day;
        if allowed {
            self.events += events;
        }
        self.decision(now, events_per_day, allowed)
    }

    /// The quota state as a decision.
    pub fn decision(&self, now: Timestamp, limit: u64, allowed: bool) -> QuotaDecision {
        let reset_ms = self.day + DAY_MS - now.as_millis();
        QuotaDecision { allowed, used: self.events, limit, reset_seconds: ((reset_ms + 999) / 1000).max(1) as u64 }
    }
}

/// The outcome of a [`LimitRequest::Check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateDecision {
    /// Whether the request was allowed (and counted).
    pub allowed: bool,
    /// Requests per minute allowed.
    pub request_limit: u64,
    /// Requests left in the window after this one.
    pub requests_remaining: u64,
    /// Events per minute allowed.
    pub event_limit: u64,
    /// Events left in the window after this one.
    pub events_remaining: u64,
    /// Seconds until the current window ends.
    pub reset_seconds: u64,
    /// When refused: seconds to wait before retrying.
    pub retry_after_seconds: u64,
}

/// The outcome of a [`LimitRequest::Quota`] or [`LimitRequest::QuotaUsage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaDecision {
    /// Whether the events were allowed (and counted).
    pub allowed: bool,
    /// Events counted today, after this request.
    pub used: u64,
    /// The daily limit (0 = unlimited).
    pub limit: u64,
    /// Seconds until the quota day (UTC) ends.
    pub reset_seconds: u64,
}

/// Answers of a [`RateLimiter`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LimitResponse {
    /// A rate decision.
    Rate(RateDecision),
    /// A quota decision.
    Quota(QuotaDecision),
    /// Totals after a [`LimitRequest::Merge`].
    Counts {
        /// The sliding window.
        window: WindowCounts,
        /// The quota day.
        day: DayCounts,
    },
}

/// The rate-limiter object.
pub struct RateLimiter {
    window: WindowCounts,
    day: DayCounts,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "windows",
    sql: "CREATE TABLE windows (window_start INTEGER PRIMARY KEY, requests INTEGER NOT NULL, events INTEGER NOT NULL);
          CREATE TABLE days (day INTEGER PRIMARY KEY, events INTEGER NOT NULL);",
}];

impl RateLimiter {
    /// Stores the current window and day.
    fn save<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        let w = &self.window;
        for (start, (requests, events)) in [(w.window_start - WINDOW_MS, w.previous), (w.window_start, w.current)] {
            db.execute(
                "INSERT INTO windows (window_start, requests, events) VALUES (?1, ?2, ?3)
                 ON CONFLICT(window_start) DO UPDATE SET requests = excluded.requests, events = excluded.events",
                &[start.into(), (requests as i64).into(), (events as i64).into()],
            )?;
        }
        db.execute("DELETE FROM windows WHERE window_start < ?1", &[(w.window_start - WINDOW_MS).into()])?;
        db.execute(
            "INSERT INTO days (day, events) VALUES (?1, ?2) ON CONFLICT(day) DO UPDATE SET events = excluded.events",
            &[self.day.day.into(), (self.day.events as i64).into()],
        )?;
        db.execute("DELETE FROM days WHERE day < ?1", &[(self.day.day - 30 * DAY_MS).into()])?;
        Ok(())
    }

    /// Counts a request against the per-minute limits, if they allow it ([`LimitRequest::Check`]).
    fn check_rate<S: SqlStorage>(
        &mut self,
        db: &S,
        now: Timestamp,
        requests_per_minute: u64,
        events_per_minute: u64,
        events: u64,
    ) -> ObjectResult<LimitResponse> {
        let decision = self.window.check(now, requests_per_minute, events_per_minute, events);
        if decision.allowed {
            self.save(db)?;
        }
        Ok(LimitResponse::Rate(decision))
    }

    /// Counts events against the daily quota, if it allows them ([`LimitRequest::Quota`]).
    fn check_quota<S: SqlStorage>(
        &mut self,
        db: &S,
        now: Timestamp,
        events_per_day: u64,
        events: u64,
    ) -> ObjectResult<LimitResponse> {
        let decision = self.day.check(now, events_per_day, events);
        if decision.allowed {
            self.save(db)?;
        }
        Ok(LimitResponse::Quota(decision))
    }

    /// Today's usage of the quota ([`LimitRequest::QuotaUsage`]).
    fn quota_usage(&mut self, now: Timestamp) -> LimitResponse {
        self.day.roll(now);
        LimitResponse::Quota(self.day.decision(now, 0, true))
    }

    /// Adds counts made elsewhere and answers the totals ([`LimitRequest::Merge`]).
    fn merge<S: SqlStorage>(
        &mut self,
        db: &S,
        now: Timestamp,
        windows: Vec<(i64, u64, u64)>,
        days: Vec<(i64, u64)>,
    ) -> ObjectResult<LimitResponse> {
        self.window.roll(now);
        self.day.roll(now);
        for (start, requests, events) in windows {
            self.window.add(start, requests, events);
        }
        for (day, events) in days {
            if day == self.day.day {
                self.day.events += events;
            }
        }
        self.save(db)?;
        Ok(LimitResponse::Counts { window: self.window, day: self.day })
    }
}

impl DurableObject for RateLimiter {
    const CLASS: &'static str = "RateLimiter";
    type Request = LimitRequest;
    type Response = LimitResponse;
    const DURABILITY: Durability = Durability::Relaxed;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let db = cx.storage();
        let now = cx.now();
        let mut limiter = RateLimiter { window: WindowCounts::new(now), day: DayCounts::new(now) };
        let start = limiter.window.window_start;
        for r in db.query(
            "SELECT window_start, requests, events FROM windows WHERE window_start >= ?1",
            &[(start - WINDOW_MS).into()],
        )? {
            limiter.window.add(r.i64(0), r.i64(1) as u64, r.i64(2) as u64);
        }
        if let Some(r) = db.query_one("SELECT events FROM days WHERE day = ?1", &[limiter.day.day.into()])? {
            limiter.day.events = r.i64(0) as u64;
        }
        Ok(limiter)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: LimitRequest) -> ObjectResult<LimitResponse> {
        let (db, now) = (cx.storage(), cx.now());
        match req {
            LimitRequest::Check { requests_per_minute, events_per_minute, events } => {
                self.check_rate(db, now, requests_per_minute, events_per_minute, events)
            }
            LimitRequest::Quota { events_per_day, events } => self.check_quota(db, now, events_per_day, events),
            LimitRequest::QuotaUsage => Ok(self.quota_usage(now)),
            LimitRequest::Merge { windows, days } => self.merge(db, now, windows, days),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(start: i64) -> WindowCounts {
        WindowCounts { window_start: start, current: (0, 0), previous: (0, 0) }
    }

    #[test]
    fn allows_up_to_the_limit_then_refuses() {
        let mut l = limiter(0);
        for i in 0..5 {
            let d = l.check(Timestamp(1_000), 5, 1_000, 10);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.requests_remaining, 4 - i);
        }
        let d = l.check(Timestamp(1_000), 5, 1_000, 10);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_seconds, 59);
    }

    #[test]
    fn previous_window_weighs_in_and_fades() {
        let mut l = limiter(0);
        for _ in 0..10 {
            assert!(l.check(Timestamp(59_000), 10, 1_000, 1).allowed);
        }
        // Just after the window turns, the previous 10 still count almost fully.
        assert!(!l.check(Timestamp(61_000), 10, 1_000, 1).allowed);
        // Half way through, half of them count: 5 fit.
        let allowed = (0..10).filter(|_| l.check(Timestamp(90_000), 10, 1_000, 1).allowed).count();
        assert_eq!(allowed, 5);
        // Two windows later the old ones are gone.
        assert!(l.check(Timestamp(181_000), 10, 1_000, 1).allowed);
    }

    #[test]
    fn event_limit_counts_batch_sizes() {
        let mut l = limiter(0);
        assert!(l.check(Timestamp(0), 100, 250, 200).allowed);
        let d = l.check(Timestamp(0), 100, 250, 100);
        assert!(!d.allowed, "200 + 100 > 250");
        assert_eq!(d.events_remaining, 50);
        assert!(l.check(Timestamp(0), 100, 250, 50).allowed, "a refused request is not counted");
    }
}
