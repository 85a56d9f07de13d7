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
}

/// The rate-limiter object.
pub struct RateLimiter {
    window_start: i64,
    current: (u64, u64),
    previous: (u64, u64),
    day: i64,
    day_events: u64,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "windows",
    sql: "CREATE TABLE windows (window_start INTEGER PRIMARY KEY, requests INTEGER NOT NULL, events INTEGER NOT NULL);
          CREATE TABLE days (day INTEGER PRIMARY KEY, events INTEGER NOT NULL);",
}];

impl RateLimiter {
    fn roll(&mut self, now: Timestamp) {
        let start = now.floor_to(WINDOW_MS).as_millis();
        if start == self.window_start {
            return;
        }
        self.previous = if start - self.window_start == WINDOW_MS { self.current } else { (0, 0) };
        self.current = (0, 0);
        self.window_start = start;
    }

    fn check(&mut self, cx_now: Timestamp, rpm: u64, epm: u64, events: u64) -> RateDecision {
        self.roll(cx_now);
        let elapsed = (cx_now.as_millis() - self.window_start) as f64 / WINDOW_MS as f64;
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
        let reset_ms = self.window_start + WINDOW_MS - cx_now.as_millis();
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
        let start = now.floor_to(WINDOW_MS).as_millis();
        let mut limiter = RateLimiter {
            window_start: start,
            current: (0, 0),
            previous: (0, 0),
            day: now.floor_to(DAY_MS).as_millis(),
            day_events: 0,
        };
        for r in db.query(
            "SELECT window_start, requests, events FROM windows WHERE window_start >= ?1",
            &[(start - WINDOW_MS).into()],
        )? {
            let counts = (r.i64(1) as u64, r.i64(2) as u64);
            if r.i64(0) == start {
                limiter.current = counts;
            } else {
                limiter.previous = counts;
            }
        }
        if let Some(r) = db.query_one("SELECT events FROM days WHERE day = ?1", &[limiter.day.into()])? {
            limiter.day_events = r.i64(0) as u64;
        }
        Ok(limiter)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: LimitRequest) -> ObjectResult<LimitResponse> {
        let db = cx.storage();
        let now = cx.now();
        match req {
            LimitRequest::Check { requests_per_minute, events_per_minute, events } => {
                let decision = self.check(now, requests_per_minute, events_per_minute, events);
                if decision.allowed {
                    db.execute(
                        "INSERT INTO windows (window_start, requests, events) VALUES (?1, ?2, ?3)
                         ON CONFLICT(window_start) DO UPDATE SET requests = excluded.requests, events = excluded.events",
                        &[self.window_start.into(), (self.current.0 as i64).into(), (self.current.1 as i64).into()],
                    )?;
                    db.execute(
                        "DELETE FROM windows WHERE window_start < ?1",
                        &[(self.window_start - WINDOW_MS).into()],
                    )?;
                }
                Ok(LimitResponse::Rate(decision))
            }
            LimitRequest::Quota { events_per_day, events } => {
                let day = now.floor_to(DAY_MS).as_millis();
                if day != self.day {
                    self.day = day;
                    self.day_events = 0;
                }
                let allowed = events_per_day == 0 || self.day_events + events <= events_per_day;
                if allowed {
                    self.day_events += events;
                    db.execute(
                        "INSERT INTO days (day, events) VALUES (?1, ?2) ON CONFLICT(day) DO UPDATE SET events = excluded.events",
                        &[day.into(), (self.day_events as i64).into()],
                    )?;
                    db.execute("DELETE FROM days WHERE day < ?1", &[(day - 30 * DAY_MS).into()])?;
                }
                Ok(LimitResponse::Quota(self.quota(now, events_per_day, allowed)))
            }
            LimitRequest::QuotaUsage => Ok(LimitResponse::Quota(self.quota(now, 0, true))),
        }
    }
}

impl RateLimiter {
    fn quota(&self, now: Timestamp, limit: u64, allowed: bool) -> QuotaDecision {
        let reset_ms = self.day + DAY_MS - now.as_millis();
        QuotaDecision { allowed, used: self.day_events, limit, reset_seconds: ((reset_ms + 999) / 1000).max(1) as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(start: i64) -> RateLimiter {
        RateLimiter { window_start: start, current: (0, 0), previous: (0, 0), day: 0, day_events: 0 }
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
