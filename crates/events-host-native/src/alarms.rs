//! Alarm index and scheduler.
//!
//! Each object's alarm is stored in its own database (`_alarm`), so setting
//! it commits atomically with the request that set it. The host keeps an
//! index, `<data>/host.sqlite`, of which objects have an alarm and when, so
//! that after a restart it can wake them without opening every database.
//!
//! Invariant: before an object commit that sets an alarm, the index already
//! holds an entry at or before that time (an *intent*). The entry is written
//! only when needed (none known, or a later one), and is not removed when an
//! alarm fires or is deleted: a stale entry costs one spurious wake-up after
//! a restart, at which the object finds nothing due and the entry is deleted.
//! So the index may hold stale entries, but never lacks a committed alarm,
//! and steady alarm traffic costs no extra fsync.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use events_core::{ApiError, Timestamp};
use rusqlite::{Connection, params};
use tokio::sync::Notify;

use crate::registry::ObjectKey;
use crate::storage::storage_error;

/// The host's own database: the alarm index and the object directory.
pub(crate) struct HostIndex {
    conn: Mutex<Connection>,
}

impl HostIndex {
    pub(crate) fn open(path: &Path) -> Result<Self, ApiError> {
        let conn = Connection::open(path).map_err(storage_error)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS alarms (
                 class TEXT NOT NULL, name TEXT NOT NULL, fire_at INTEGER NOT NULL,
                 PRIMARY KEY (class, name)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS objects (
                 class TEXT NOT NULL, name TEXT NOT NULL, created_at INTEGER NOT NULL,
                 PRIMARY KEY (class, name)) WITHOUT ROWID;",
        )
        .map_err(storage_error)?;
        Ok(HostIndex { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `key` has an alarm at `at` (durably, before the object commits it).
    pub(crate) fn upsert_alarm(&self, key: &ObjectKey, at: Timestamp) -> Result<(), ApiError> {
        self.conn()
            .execute(
                "INSERT INTO alarms (class, name, fire_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(class, name) DO UPDATE SET fire_at = excluded.fire_at",
                params![key.0, key.1, at.as_millis()],
            )
            .map(drop)
            .map_err(storage_error)
    }

    /// Forgets `key`'s alarm.
    pub(crate) fn delete_alarm(&self, key: &ObjectKey) -> Result<(), ApiError> {
        self.conn()
            .execute("DELETE FROM alarms WHERE class = ?1 AND name = ?2", params![key.0, key.1])
            .map(drop)
            .map_err(storage_error)
    }

    /// Every indexed alarm.
    pub(crate) fn alarms(&self) -> Result<Vec<(String, String, Timestamp)>, ApiError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT class, name, fire_at FROM alarms").map_err(storage_error)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, Timestamp(r.get(2)?))))
            .map_err(storage_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage_error)?;
        Ok(rows)
    }

    /// Records that the object `key` exists (idempotent). Enumerations rely
    /// on it (the writer shards a read visits, the objects a flush reaches),
    /// so a new object is recorded `durable`ly, fsynced before its file is
    /// created; re-recording a known one is not fsynced by itself (the next
    /// alarm write syncs it).
    pub(crate) fn record_object(&self, key: &ObjectKey, now: Timestamp, durable: bool) -> Result<(), ApiError> {
        let conn = self.conn();
        if !durable {
            conn.execute_batch("PRAGMA synchronous = NORMAL").map_err(storage_error)?;
        }
        let result = conn
            .execute(
                "INSERT OR IGNORE INTO objects (class, name, created_at) VALUES (?1, ?2, ?3)",
                params![key.0, key.1, now.as_millis()],
            )
            .map(drop)
            .map_err(storage_error);
        if !durable {
            conn.execute_batch("PRAGMA synchronous = FULL").map_err(storage_error)?;
        }
        result
    }

    /// Names of every object of `class` ever created.
    pub(crate) fn objects(&self, class: &str) -> Result<Vec<String>, ApiError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name FROM objects WHERE class = ?1 ORDER BY name").map_err(storage_error)?;
        let rows = stmt
            .query_map([class], |r| r.get(0))
            .map_err(storage_error)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(storage_error)?;
        Ok(rows)
    }
}

#[derive(Default)]
struct Schedule {
    heap: BinaryHeap<Reverse<(i64, ObjectKey)>>,
    current: HashMap<ObjectKey, i64>,
}

/// In-memory timer wheel of pending alarms.
#[derive(Default)]
pub(crate) struct AlarmScheduler {
    state: Mutex<Schedule>,
    pub(crate) notify: Notify,
}

impl AlarmScheduler {
    /// (Re)schedules `key` at `at`.
    pub(crate) fn schedule(&self, key: ObjectKey, at: Timestamp) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.current.get(&key) == Some(&at.as_millis()) {
            return;
        }
        s.current.insert(key.clone(), at.as_millis());
        s.heap.push(Reverse((at.as_millis(), key)));
        drop(s);
        self.notify.notify_one();
    }

    /// Forgets `key`.
    pub(crate) fn cancel(&self, key: &ObjectKey) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).current.remove(key);
    }

    /// Removes and returns the alarms due at `now`, and the time of the next one.
    pub(crate) fn take_due(&self, now: Timestamp) -> (Vec<ObjectKey>, Option<Timestamp>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = s.heap.peek() {
            if *at > now.as_millis() {
                break;
            }
            let Reverse((at, key)) = s.heap.pop().expect("peeked");
            // Stale heap entries (rescheduled or cancelled) are skipped.
            if s.current.get(&key) == Some(&at) {
                s.current.remove(&key);
                due.push(key);
            }
        }
        let next = s.heap.peek().map(|Reverse((at, _))| Timestamp(*at));
        (due, next)
    }

    /// Number of scheduled alarms.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).current.len()
    }
}
