//! The processor's SQLite schema, its rows as lake types, and the saved counters.

use events_core::cdc::ChangeOp;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_lake::cdc::{DeltaRow, DocState, StateRef};
use events_runtime::{Migration, ObjectResult, Row, SqlStorage, SqlValue};
use serde_json::Value;

use super::*;

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "changes, docs, files, counters",
        sql: "CREATE TABLE changes (
              seq INTEGER PRIMARY KEY,
              event_id TEXT NOT NULL,
              doc_id TEXT NOT NULL,
              op INTEGER NOT NULL,
              ts INTEGER NOT NULL,
              before TEXT,
              after TEXT,
              bookmark TEXT,
              received_at INTEGER NOT NULL
          );
          CREATE UNIQUE INDEX changes_event ON changes (event_id);
          CREATE INDEX changes_doc ON changes (doc_id, ts, seq);
          CREATE TABLE docs (
              doc_id TEXT PRIMARY KEY,
              data TEXT,
              version INTEGER NOT NULL,
              deleted INTEGER NOT NULL,
              ts INTEGER NOT NULL,
              seq INTEGER NOT NULL,
              bookmark TEXT
          ) WITHOUT ROWID;
          CREATE TABLE files (
              key TEXT PRIMARY KEY,
              kind TEXT NOT NULL,
              label TEXT NOT NULL DEFAULT '',
              tombstones_key TEXT,
              first_seq INTEGER NOT NULL,
              last_seq INTEGER NOT NULL,
              rows INTEGER NOT NULL,
              tombstones INTEGER NOT NULL DEFAULT 0,
              bytes INTEGER NOT NULL,
              min_ts INTEGER NOT NULL,
              max_ts INTEGER NOT NULL,
              created_at INTEGER NOT NULL
          );
          CREATE TABLE garbage (key TEXT PRIMARY KEY) WITHOUT ROWID;
          CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    },
    Migration {
        version: 2,
        name: "history index filled by folds, in document order",
        // Changes are appended in arrival order and folded into `docs` and
        // `doc_changes` later, in document-sorted batches; until then they are
        // the unfolded tail (`seq > folded_seq`). Every change of an existing
        // database was folded when it was applied. (The `late` counter that
        // starts here is filled from the history by migration 6.)
        sql: "CREATE TABLE doc_changes (
              doc_id TEXT NOT NULL,
              ts INTEGER NOT NULL,
              seq INTEGER NOT NULL,
              PRIMARY KEY (doc_id, ts, seq)
          ) WITHOUT ROWID;
          INSERT INTO doc_changes (doc_id, ts, seq) SELECT doc_id, ts, seq FROM changes ORDER BY doc_id, ts, seq;
          DROP INDEX changes_doc;
          INSERT INTO counters (name, value) SELECT 'folded_seq', COALESCE(MAX(seq), 0) FROM changes;",
    },
    Migration {
        version: 3,
        name: "state files in several parts; the files the catalog holds",
        // Every base written before was one live and one tombstone file.
        sql: "CREATE TABLE state_parts (
              base_key TEXT NOT NULL,
              tombstones INTEGER NOT NULL,
              part INTEGER NOT NULL,
              key TEXT NOT NULL,
              rows INTEGER NOT NULL,
              bytes INTEGER NOT NULL,
              PRIMARY KEY (base_key, tombstones, part)
          ) WITHOUT ROWID;
          INSERT INTO state_parts (base_key, tombstones, part, key, rows, bytes)
              SELECT key, 0, 0, key, rows, 0 FROM files WHERE kind IN ('current', 'daily', 'monthly');
          INSERT INTO state_parts (base_key, tombstones, part, key, rows, bytes)
              SELECT key, 1, 0, tombstones_key, tombstones, 0 FROM files WHERE kind IN ('current', 'daily', 'monthly');
          CREATE TABLE cataloged (key TEXT PRIMARY KEY) WITHOUT ROWID;",
    },
    Migration {
        version: 4,
        name: "history trimming: a kept change stands for the trimmed ones before it",
        // `merged`: how many changes of its document this row counts for in
        // versions: 1, or more for the change a trim kept in place of the
        // document's older ones (see `CdcProcessor::trim`).
        sql: "ALTER TABLE changes ADD COLUMN merged INTEGER NOT NULL DEFAULT 1;",
    },
    Migration {
        version: 5,
        name: "id range of each state file",
        // NULL for files written before: a lake read then loads every file of the base.
        sql: "ALTER TABLE state_parts ADD COLUMN first_id TEXT;
          ALTER TABLE state_parts ADD COLUMN last_id TEXT;",
    },
    Migration {
        version: 6,
        name: "late changes counted from the history",
        // Migration 2 started the `late` counter at 0, so a collection
        // upgraded from version 1 counted only the late changes folded since.
        // Recount the folded history: a change is late when a change of its
        // document with a later event time arrived first (a smaller `seq`
        // among those after it in `(ts, seq)` order), the fold's rule. A
        // trimmed history undercounts, so the larger count stays.
        sql: "INSERT INTO counters (name, value)
              SELECT 'late', COUNT(*) FROM (
                  SELECT seq, MIN(seq) OVER (
                      PARTITION BY doc_id ORDER BY ts, seq ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
                  ) AS first_arrival_after
                  FROM doc_changes
              ) WHERE first_arrival_after < seq
              ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value);",
    },
];

pub(super) fn corrupt(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::StorageError, format!("cdc state: {e}"))
}

pub(super) fn parse_json(text: Option<&str>) -> ObjectResult<Option<Value>> {
    text.map(|t| serde_json::from_str(t).map_err(corrupt)).transpose()
}

pub(super) fn doc_view(s: DocState) -> ObjectResult<DocView> {
    Ok(DocView {
        data: parse_json(s.data.as_deref())?,
        id: s.id,
        version: s.version,
        deleted: s.deleted,
        last_change: Timestamp(s.ts).to_iso(),
        seq: s.seq,
        bookmark: s.bookmark,
    })
}

fn delta_row(r: &Row) -> ObjectResult<DeltaRow> {
    // Columns: doc_id, op, ts, seq, before, after, bookmark.
    Ok(DeltaRow {
        id: r.str(0).to_string(),
        op: ChangeOp::from_code(r.i64(1)).ok_or_else(|| corrupt("unknown op code"))?,
        ts: r.i64(2),
        seq: r.i64(3),
        before: r.opt_str(4).map(String::from),
        after: r.opt_str(5).map(String::from),
        bookmark: r.opt_str(6).map(String::from),
    })
}

const CHANGE_COLUMNS: &str = "doc_id, op, ts, seq, before, after, bookmark";
/// [`CHANGE_COLUMNS`] of `changes c` found through the history index `doc_changes h`.
/// Column 7 is `merged` (see [`fold_history_row`]).
pub(super) const HISTORY_COLUMNS: &str = "h.doc_id, c.op, h.ts, h.seq, c.before, c.after, c.bookmark, c.merged";

/// Folds one history row (read with [`HISTORY_COLUMNS`]) into a document's
/// state; a row kept by a trim counts for the changes it replaced.
pub(super) fn fold_history_row(state: Option<DocState>, r: &Row) -> ObjectResult<DocState> {
    let row = delta_row(r)?;
    let merged = r.i64(7);
    assert!(merged >= 1, "a history row counts for at least its own change");
    let mut state = match state {
        Some(mut s) => {
            s.fold(&row);
            s
        }
        None => DocState::from_change(&row),
    };
    state.version += merged - 1;
    Ok(state)
}

/// The changes matching `condition` (on `changes`), in `seq` order; the
/// first undecodable row ends the read with its error.
pub(super) fn change_rows<S: SqlStorage>(db: &S, condition: &str, params: &[SqlValue]) -> ObjectResult<Vec<DeltaRow>> {
    let mut rows = Vec::new();
    let mut failure = None;
    db.query_each(&format!("SELECT {CHANGE_COLUMNS} FROM changes WHERE {condition} ORDER BY seq"), params, &mut |r| {
        match delta_row(r) {
            Ok(row) => {
                rows.push(row);
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    failure.map_or(Ok(rows), Err)
}

pub(super) fn doc_state_row(r: &Row) -> DocState {
    // Columns: doc_id, data, version, deleted, ts, seq, bookmark.
    DocState {
        id: r.str(0).to_string(),
        data: r.opt_str(1).map(String::from),
        version: r.i64(2),
        deleted: r.i64(3) != 0,
        ts: r.i64(4),
        seq: r.i64(5),
        bookmark: r.opt_str(6).map(String::from),
    }
}

pub(super) const DOC_COLUMNS: &str = "doc_id, data, version, deleted, ts, seq, bookmark";

/// A base as recorded in `files`, with its parts from `state_parts`.
pub(super) fn state_ref<S: SqlStorage>(db: &S, r: &Row) -> ObjectResult<StateRef> {
    let mut base = state_ref_row(r);
    for p in state_parts(db, &base)? {
        if p.tombstones {
            base.tombstone_files.push(p.key);
        } else {
            base.files.push(p.key);
        }
    }
    Ok(base)
}

/// One file of a base (current table or snapshot).
#[derive(Debug, Clone)]
pub(super) struct StatePart {
    pub(super) tombstones: bool,
    pub(super) part: u32,
    pub(super) key: String,
    pub(super) rows: i64,
    /// 0 when not recorded (bases written before states were split).
    pub(super) bytes: i64,
    /// The first and last document id in the file (`None`: an empty file,
    /// or one written before ranges were recorded).
    pub(super) ids: Option<(String, String)>,
}

/// Every file of `base` (live documents first, each kind in id order); a
/// base recorded before states were split is its two files.
pub(super) fn state_parts<S: SqlStorage>(db: &S, base: &StateRef) -> ObjectResult<Vec<StatePart>> {
    let parts: Vec<StatePart> = db
        .query(
            "SELECT tombstones, part, key, rows, bytes, first_id, last_id FROM state_parts WHERE base_key = ?1
             ORDER BY tombstones, part",
            &[base.key.as_str().into()],
        )?
        .iter()
        .map(|r| StatePart {
            tombstones: r.i64(0) != 0,
            part: r.i64(1) as u32,
            key: r.str(2).to_string(),
            rows: r.i64(3),
            bytes: r.i64(4),
            ids: r.opt_str(5).zip(r.opt_str(6)).map(|(a, b)| (a.to_string(), b.to_string())),
        })
        .collect();
    if !parts.is_empty() {
        return Ok(parts);
    }
    Ok(vec![
        StatePart { tombstones: false, part: 0, key: base.key.clone(), rows: base.rows, bytes: 0, ids: None },
        StatePart {
            tombstones: true,
            part: 0,
            key: base.tombstones_key.clone(),
            rows: base.tombstones,
            bytes: 0,
            ids: None,
        },
    ])
}

pub(super) fn state_ref_row(r: &Row) -> StateRef {
    // Columns: key, kind, label, tombstones_key, last_seq, max_ts, rows, tombstones, bytes, created_at.
    StateRef {
        key: r.str(0).to_string(),
        kind: r.str(1).to_string(),
        label: r.str(2).to_string(),
        tombstones_key: r.str(3).to_string(),
        files: Vec::new(),
        tombstone_files: Vec::new(),
        upto_seq: r.i64(4),
        max_ts: r.i64(5),
        rows: r.i64(6),
        tombstones: r.i64(7),
        bytes: r.i64(8),
        created_at: r.i64(9),
    }
}

pub(super) const STATE_REF_COLUMNS: &str =
    "key, kind, label, tombstones_key, last_seq, max_ts, rows, tombstones, bytes, created_at";

impl CdcProcessor {
    pub(super) fn save_counters<S: SqlStorage>(&mut self, db: &S) -> ObjectResult<()> {
        let mut current = self.counters.clone();
        let mut saved = self.saved.clone();
        for ((name, value), old) in COUNTER_NAMES.iter().zip(current.slots()).zip(saved.slots()) {
            if *value != *old {
                db.execute(
                    "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    &[(*name).into(), (*value).into()],
                )?;
            }
        }
        self.saved = self.counters.clone();
        Ok(())
    }

    pub(super) fn pending(&self) -> i64 {
        self.counters.next_seq - 1 - self.counters.flushed_seq
    }

    pub(super) fn unfolded(&self) -> i64 {
        self.counters.next_seq - 1 - self.counters.folded_seq
    }
}
