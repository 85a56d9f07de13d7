//! The writer's storage: the schema, its counters, the positions reloaded
//! at activation, and the reads of log rows.

use events_core::Event;
use events_core::limits::BATCH_ID_TTL_MS;
use events_runtime::{Migration, ObjectResult, SqlStorage};
use serde_json::value::RawValue;

use super::{EventWriter, PRUNE_BATCH};
use crate::outbox::{CONSUMERS, OutboxRow, corrupt};

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
    version: 1,
    name: "buffer, dedup, flush plan, outbox",
    sql: "CREATE TABLE buffer (
              seq INTEGER PRIMARY KEY AUTOINCREMENT,
              ts INTEGER NOT NULL,
              bytes INTEGER NOT NULL,
              body TEXT NOT NULL,
              flushed INTEGER NOT NULL DEFAULT 0,
              received_at INTEGER NOT NULL
          );
          CREATE INDEX buffer_unflushed_ts ON buffer (flushed, ts);
          CREATE TABLE event_ids (id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
          CREATE INDEX event_ids_at ON event_ids (at);
          CREATE TABLE batches (batch_id TEXT PRIMARY KEY, received INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;
          CREATE INDEX batches_at ON batches (at);
          CREATE TABLE flush_plan (id INTEGER PRIMARY KEY CHECK (id = 1), first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL);
          CREATE TABLE dirty_hours (prefix TEXT PRIMARY KEY, hour INTEGER NOT NULL) WITHOUT ROWID;
          CREATE TABLE consumers (name TEXT PRIMARY KEY, cursor INTEGER NOT NULL, registered_at INTEGER NOT NULL);
          CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    },
    Migration {
        version: 2,
        name: "consumer errors",
        sql: "ALTER TABLE consumers ADD COLUMN last_error TEXT;",
    },
    Migration {
        version: 3,
        name: "one log row per appended batch, a flush watermark",
        // Old rows become one-event rows under their own sequence number; the
        // flushed ones form a prefix, so a watermark replaces the flag. With
        // no rows left, the highest cursor is at least the last sequence
        // number ever assigned (rows go only once every cursor passed them),
        // so sequence numbers (and the file keys named by them) never repeat.
        sql: "CREATE TABLE log (
                  last_seq INTEGER PRIMARY KEY,
                  count INTEGER NOT NULL CHECK (count > 0),
                  bytes INTEGER NOT NULL,
                  min_ts INTEGER NOT NULL,
                  max_ts INTEGER NOT NULL,
                  received_at INTEGER NOT NULL,
                  body BLOB NOT NULL
              );
              INSERT INTO log (last_seq, count, bytes, min_ts, max_ts, received_at, body)
                  SELECT seq, 1, bytes, ts, ts, received_at, CAST('[' || body || ']' AS BLOB) FROM buffer;
              INSERT INTO counters (name, value) VALUES ('flushed_upto', COALESCE(
                  (SELECT MIN(seq) - 1 FROM buffer WHERE flushed = 0),
                  (SELECT MAX(seq) FROM buffer),
                  (SELECT MAX(cursor) FROM consumers),
                  0)) ON CONFLICT(name) DO UPDATE SET value = excluded.value;
              DROP TABLE buffer;",
    },
    Migration {
        version: 4,
        name: "the event types of each log row",
        // A JSON array of every type in the row; NULL when not listed (too
        // many types, or a row written before): readers then look at each event.
        sql: "ALTER TABLE log ADD COLUMN types TEXT;",
    },
];

impl EventWriter {
    pub(super) fn counter<S: SqlStorage>(db: &S, name: &str) -> ObjectResult<u64> {
        Ok(db.query_one("SELECT value FROM counters WHERE name = ?1", &[name.into()])?.map_or(0, |r| r.i64(0) as u64))
    }

    pub(super) fn bump<S: SqlStorage>(db: &S, name: &str, by: u64) -> ObjectResult<()> {
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            &[name.into(), (by as i64).into()],
        )?;
        Ok(())
    }

    pub(super) fn set_counter<S: SqlStorage>(db: &S, name: &str, value: u64) -> ObjectResult<()> {
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            &[name.into(), (value as i64).into()],
        )?;
        Ok(())
    }

    /// Reloads the flush watermark and the highest sequence number assigned
    /// (at least every row's, the watermark and every cursor: rows leave the
    /// log only once flushed and passed by every cursor).
    pub(super) fn load_positions<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        self.flushed_upto = Self::counter(db, "flushed_upto")?;
        let highest = db
            .query_one(
                "SELECT MAX(COALESCE((SELECT MAX(last_seq) FROM log), 0), (SELECT COALESCE(MAX(cursor), 0) FROM consumers))",
                &[],
            )?
            .map_or(0, |r| r.i64(0) as u64);
        self.last_seq = highest.max(self.flushed_upto);
        Ok(())
    }

    /// Reloads the built-in consumers' cursors.
    pub(super) fn load_cursors<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        for &consumer in CONSUMERS {
            let cursor = db
                .query_one("SELECT cursor FROM consumers WHERE name = ?1", &[consumer.into()])?
                .map_or(0, |r| r.i64(0) as u64);
            self.cursors.insert(consumer, cursor);
        }
        Ok(())
    }

    /// Reloads the unflushed totals from storage.
    pub(super) fn refresh<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        let r = db
            .query_one(
                "SELECT COALESCE(SUM(count), 0), COALESCE(SUM(bytes), 0), MIN(received_at) FROM log WHERE last_seq > ?1",
                &[(self.flushed_upto as i64).into()],
            )?
            .expect("aggregate row");
        self.buffered = r.i64(0) as u64;
        self.buffered_bytes = r.i64(1) as u64;
        self.oldest_received = r.opt_i64(2);
        Ok(())
    }

    /// The rows holding the events with sequence numbers in `(after, upto]`,
    /// in order, whole rows, until they hold at least `limit` such events.
    pub(super) fn read_rows<S: SqlStorage>(
        db: &S,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> ObjectResult<Vec<OutboxRow>> {
        let mut rows = Vec::new();
        let mut failure = None;
        if limit == 0 || after >= upto {
            return Ok(rows);
        }
        let mut events = 0;
        db.query_each(
            "SELECT last_seq, count, body, types FROM log WHERE last_seq > ?1 AND last_seq - count < ?2 ORDER BY last_seq",
            &[(after as i64).into(), (upto.min(events_runtime::MAX_EXACT_INTEGER as u64) as i64).into()],
            &mut |r| {
                let (last_seq, count) = (r.i64(0) as u64, r.i64(1) as u64);
                let body = String::from_utf8(r.bytes(2).to_vec())
                    .map_err(corrupt)
                    .and_then(|text| RawValue::from_string(text).map_err(corrupt));
                let types = r.opt_str(3).map(serde_json::from_str::<Vec<String>>).transpose().map_err(corrupt);
                match body.and_then(|events| Ok((events, types?))) {
                    Ok((events, types)) => rows.push(OutboxRow { last_seq, count, events, types }),
                    Err(e) => {
                        failure = Some(e);
                        return false;
                    }
                }
                let first = last_seq + 1 - count;
                events += last_seq.min(upto) - first.max(after + 1) + 1;
                events < limit as u64
            },
        )?;
        match failure {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    pub(super) fn prune<S: SqlStorage>(db: &S, now: i64) -> ObjectResult<()> {
        let horizon = now - BATCH_ID_TTL_MS;
        db.execute(
            "DELETE FROM event_ids WHERE id IN (SELECT id FROM event_ids WHERE at < ?1 ORDER BY at LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        db.execute(
            "DELETE FROM batches WHERE batch_id IN (SELECT batch_id FROM batches WHERE at < ?1 ORDER BY at LIMIT ?2)",
            &[horizon.into(), PRUNE_BATCH.into()],
        )?;
        Ok(())
    }
}

/// The events of one log row, checked against its count.
pub(super) fn decode_row(body: &[u8], count: u64) -> ObjectResult<Vec<Event>> {
    let events: Vec<Event> = serde_json::from_slice(body).map_err(corrupt)?;
    if events.len() as u64 != count {
        return Err(corrupt(format!("a log row of {count} events holds {}", events.len())));
    }
    Ok(events)
}
