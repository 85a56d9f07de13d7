//! Version 1 of the CdcProcessor, replayed: the data directory it left
//! behind for `acme/users` (its SQLite file, its lake files, its catalog
//! commits), built with the statements, file keys and encoders that
//! version ran. Used by `cdc_upgrade.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use events_core::Timestamp;
use events_core::cdc::{Change, ChangeOp};
use events_lake::cdc::{
    CdcManifest, DeltaRef, DeltaRow, DocState, MANIFEST_FORMAT, StateRef, current_keys, delta_key, encode_delta_file,
    encode_state_file, manifest_key, snapshot_keys,
};
use events_objects::CdcProcessor;
use events_objects::catalog::NewFile;
use events_objects::cdc::processor_name;
use events_runtime::DurableObject;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cdc_support::{COLLECTION, NS};

/// 2027-01-15T08:00:00Z.
pub const T0: i64 = 1_800_000_000_000;
pub const HOUR: i64 = 3_600_000;
/// 2027-01-16T00:00:00Z: the first midnight after T0.
pub const DAY2: i64 = T0 + 16 * HOUR;
/// The first daily snapshot version 1 took (of the day of T0).
pub const V1_SNAPSHOT_LABEL: &str = "2027-01-15";
/// Version 1's flush age (its default): the alarm it set for pending changes.
pub const V1_FLUSH_MAX_AGE_MS: i64 = 5_000;

/// The version-1 counters (`Counters`/`COUNTER_NAMES` of that version).
const V1_COUNTERS: [&str; 12] = [
    "next_seq",
    "flushed_seq",
    "live",
    "deleted",
    "changes",
    "max_ts",
    "compactions",
    "last_compaction",
    "registered",
    "plan_first",
    "plan_last",
    "cataloged_seq",
];

pub fn change(event_id: &str, doc: &str, op: ChangeOp, ts: i64, before: Option<Value>, after: Option<Value>) -> Change {
    Change {
        event_id: event_id.into(),
        collection: COLLECTION.into(),
        doc_id: doc.into(),
        op,
        ts: Timestamp(ts),
        before,
        after,
        bookmark: Some(format!("bm-{event_id}")),
    }
}

/// Where the native host keeps the database of object `name` of class `O`:
/// `<data>/objects/<class>/<sha256(name) hex, 2>/<sha256(name) hex, 40>.sqlite`.
pub fn object_db_path<O: DurableObject>(data: &Path, name: &str) -> PathBuf {
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    data.join("objects").join(O::CLASS).join(&digest[..2]).join(format!("{}.sqlite", &digest[..40]))
}

/// The folder of the host's default bucket (`<data>/lake`).
pub fn lake_dir(data: &Path) -> PathBuf {
    data.join("lake")
}

/// A catalog commit version 1 made after a compaction.
pub struct CatalogCommit {
    pub added: NewFile,
    pub removed: Vec<String>,
}

/// The version-1 processor of `acme/users`, replayed: the same SQL
/// statements, file keys and encoders that version ran, against a fresh
/// database created from the version-1 schema fixture.
struct V1Processor {
    db: Connection,
    lake: PathBuf,
    counters: BTreeMap<&'static str, i64>,
    catalog_commits: Vec<CatalogCommit>,
}

const V1_DOC_COLUMNS: &str = "doc_id, data, version, deleted, ts, seq, bookmark";

fn v1_doc_state(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocState> {
    Ok(DocState {
        id: r.get(0)?,
        data: r.get(1)?,
        version: r.get(2)?,
        deleted: r.get::<_, i64>(3)? != 0,
        ts: r.get(4)?,
        seq: r.get(5)?,
        bookmark: r.get(6)?,
    })
}

impl V1Processor {
    fn create(db_path: &Path, lake: PathBuf) -> Self {
        std::fs::create_dir_all(db_path.parent().unwrap()).unwrap();
        assert!(!db_path.exists(), "the version-1 database is built from scratch");
        let db = Connection::open(db_path).unwrap();
        db.execute_batch(include_str!("../fixtures/cdc_processor_v1.sql")).unwrap();
        let mut counters: BTreeMap<&'static str, i64> = V1_COUNTERS.iter().map(|n| (*n, 0)).collect();
        counters.insert("next_seq", 1);
        V1Processor { db, lake, counters, catalog_commits: Vec::new() }
    }

    fn get(&self, name: &str) -> i64 {
        self.counters[name]
    }

    fn set(&mut self, name: &'static str, value: i64) {
        assert!(V1_COUNTERS.contains(&name), "{name} is a version-1 counter");
        self.counters.insert(name, value);
    }

    fn save_counters(&self) {
        for (name, value) in &self.counters {
            self.db
                .execute(
                    "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    params![name, value],
                )
                .unwrap();
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        let path = self.lake.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Version 1's apply: each change recorded (a known event id skipped)
    /// and folded into `docs` at once.
    fn apply(&mut self, now: i64, changes: &[Change]) {
        for c in changes {
            let seq = self.get("next_seq");
            let before = c.before.as_ref().map(|v| v.to_string());
            let after = c.after.as_ref().map(|v| v.to_string());
            let fresh = self
                .db
                .execute(
                    "INSERT INTO changes (seq, event_id, doc_id, op, ts, before, after, bookmark, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(event_id) DO NOTHING",
                    params![seq, c.event_id, c.doc_id, c.op.code(), c.ts.as_millis(), before, after, c.bookmark, now],
                )
                .unwrap();
            if fresh == 0 {
                continue;
            }
            self.set("next_seq", seq + 1);
            self.set("changes", self.get("changes") + 1);
            self.set("max_ts", self.get("max_ts").max(c.ts.as_millis()));
            let row = DeltaRow {
                id: c.doc_id.clone(),
                op: c.op,
                ts: c.ts.as_millis(),
                seq,
                before,
                after,
                bookmark: c.bookmark.clone(),
            };
            let existing = self
                .db
                .query_row(
                    &format!("SELECT {V1_DOC_COLUMNS} FROM docs WHERE doc_id = ?1"),
                    params![row.id],
                    v1_doc_state,
                )
                .optional()
                .unwrap();
            let (live, deleted) = (self.get("live"), self.get("deleted"));
            let state = match existing {
                Some(mut state) => {
                    let was_deleted = state.deleted;
                    state.fold(&row);
                    match (was_deleted, state.deleted) {
                        (false, true) => (self.set("live", live - 1), self.set("deleted", deleted + 1)),
                        (true, false) => (self.set("live", live + 1), self.set("deleted", deleted - 1)),
                        _ => ((), ()),
                    };
                    state
                }
                None => {
                    let state = DocState::from_change(&row);
                    if state.deleted {
                        self.set("deleted", deleted + 1);
                    } else {
                        self.set("live", live + 1);
                    }
                    state
                }
            };
            self.db
                .execute(
                    "INSERT OR REPLACE INTO docs (doc_id, data, version, deleted, ts, seq, bookmark) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![state.id, state.data, state.version, state.deleted, state.ts, state.seq, state.bookmark],
                )
                .unwrap();
        }
        // Its first change registered the collection with CdcCollections (done on the host below).
        self.set("registered", 1);
        self.save_counters();
    }

    /// Version 1's flush: one planned delta file of every pending change.
    fn flush(&mut self, now: i64) {
        let (first, last) = (self.get("flushed_seq") + 1, self.get("next_seq") - 1);
        if last < first {
            return;
        }
        self.set("plan_first", first);
        self.set("plan_last", last);
        self.save_counters();
        let mut rows: Vec<DeltaRow> = self
            .db
            .prepare("SELECT doc_id, op, ts, seq, before, after, bookmark FROM changes WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq")
            .unwrap()
            .query_map(params![first, last], |r| {
                Ok(DeltaRow {
                    id: r.get(0)?,
                    op: ChangeOp::from_code(r.get(1)?).unwrap(),
                    ts: r.get(2)?,
                    seq: r.get(3)?,
                    before: r.get(4)?,
                    after: r.get(5)?,
                    bookmark: r.get(6)?,
                })
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let min_ts = rows.iter().map(|r| r.ts).min().unwrap();
        let max_ts = rows.iter().map(|r| r.ts).max().unwrap();
        let count = rows.len() as i64;
        let bytes = encode_delta_file(&mut rows).unwrap();
        let key = delta_key(NS, COLLECTION, first);
        self.put(&key, &bytes);
        self.db
            .execute(
                "INSERT OR REPLACE INTO files (key, kind, first_seq, last_seq, rows, bytes, min_ts, max_ts, created_at)
                 VALUES (?1, 'delta', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![key, first, last, count, bytes.len() as i64, min_ts, max_ts, now],
            )
            .unwrap();
        self.set("flushed_seq", last);
        self.set("plan_first", 0);
        self.set("plan_last", 0);
        self.save_counters();
        self.write_manifest(now);
    }

    /// Version 1's state file: every document of `docs` with one tombstone flag, in id order.
    fn state_file(&self, deleted: bool, upto: i64) -> (Vec<u8>, i64) {
        let rows: Vec<DocState> = self
            .db
            .prepare(&format!("SELECT {V1_DOC_COLUMNS} FROM docs WHERE deleted = ?1 ORDER BY doc_id"))
            .unwrap()
            .query_map(params![deleted], v1_doc_state)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let n = rows.len() as i64;
        (encode_state_file(rows, upto).unwrap(), n)
    }

    /// Version 1's retirement of the deltas every retained base folds.
    fn retire_deltas(&self) {
        let horizon: i64 = self
            .db
            .query_row("SELECT MIN(last_seq) FROM files WHERE kind IN ('current', 'daily', 'monthly')", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .unwrap()
            .unwrap_or(0);
        self.db
            .execute(
                "INSERT OR IGNORE INTO garbage (key) SELECT key FROM files WHERE kind = 'delta' AND last_seq <= ?1",
                params![horizon],
            )
            .unwrap();
        self.db.execute("DELETE FROM files WHERE kind = 'delta' AND last_seq <= ?1", params![horizon]).unwrap();
    }

    /// Version 1's compaction: one live and one tombstones file, then the
    /// catalog commit of the live file.
    fn compact(&mut self, now: i64) {
        self.flush(now);
        let upto = self.get("flushed_seq");
        let old: Option<(String, String, i64)> = self
            .db
            .query_row("SELECT key, tombstones_key, last_seq FROM files WHERE kind = 'current'", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .unwrap();
        if old.as_ref().is_some_and(|o| o.2 == upto) || upto == 0 {
            return;
        }
        let (live_key, tomb_key) = current_keys(NS, COLLECTION, upto);
        let (live_bytes, live_rows) = self.state_file(false, upto);
        let (tomb_bytes, tomb_rows) = self.state_file(true, upto);
        self.put(&live_key, &live_bytes);
        self.put(&tomb_key, &tomb_bytes);
        if let Some((old_key, old_tomb, old_upto)) = &old {
            self.db.execute("DELETE FROM files WHERE key = ?1", params![old_key]).unwrap();
            self.db.execute("INSERT OR IGNORE INTO garbage (key) VALUES (?1)", params![old_tomb]).unwrap();
            if *old_upto != self.get("cataloged_seq") {
                self.db.execute("INSERT OR IGNORE INTO garbage (key) VALUES (?1)", params![old_key]).unwrap();
            }
        }
        self.db
            .execute(
                "INSERT OR REPLACE INTO files (key, kind, tombstones_key, first_seq, last_seq, rows, tombstones, bytes, min_ts, max_ts, created_at)
                 VALUES (?1, 'current', ?2, 1, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
                params![
                    live_key,
                    tomb_key,
                    upto,
                    live_rows,
                    tomb_rows,
                    (live_bytes.len() + tomb_bytes.len()) as i64,
                    self.get("max_ts"),
                    now
                ],
            )
            .unwrap();
        self.retire_deltas();
        self.set("compactions", self.get("compactions") + 1);
        self.set("last_compaction", now);
        self.save_counters();
        self.write_manifest(now);
        // The commit to the catalog replaced the previously committed live file.
        let removed = match self.get("cataloged_seq") {
            0 => Vec::new(),
            seq => vec![current_keys(NS, COLLECTION, seq).0],
        };
        let added = NewFile { key: live_key, rows: live_rows, bytes: live_bytes.len() as i64 };
        self.catalog_commits.push(CatalogCommit { added, removed });
        self.set("cataloged_seq", upto);
        self.save_counters();
    }

    /// Version 1's daily snapshot: a compaction, then a copy of its two files.
    fn daily_snapshot(&mut self, now: i64, label: &str) {
        let last: i64 = self
            .db
            .query_row("SELECT MAX(last_seq) FROM files WHERE kind = 'daily'", [], |r| r.get::<_, Option<i64>>(0))
            .unwrap()
            .unwrap_or(0);
        assert!(self.get("next_seq") - 1 > last, "the scenario snapshots a changed collection");
        self.compact(now);
        let (cur_key, cur_tomb, upto, rows, tombstones, bytes, max_ts): (String, String, i64, i64, i64, i64, i64) = self
            .db
            .query_row(
                "SELECT key, tombstones_key, last_seq, rows, tombstones, bytes, max_ts FROM files WHERE kind = 'current'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .unwrap();
        let (key, tomb_key) = snapshot_keys(NS, COLLECTION, "daily", label);
        for (from, to) in [(&cur_key, &key), (&cur_tomb, &tomb_key)] {
            let bytes = std::fs::read(self.lake.join(from)).unwrap();
            self.put(to, &bytes);
        }
        self.db.execute("DELETE FROM files WHERE key = ?1", params![key]).unwrap();
        self.db
            .execute(
                "INSERT INTO files (key, kind, label, tombstones_key, first_seq, last_seq, rows, tombstones, bytes, min_ts, max_ts, created_at)
                 VALUES (?1, 'daily', ?2, ?3, 1, ?4, ?5, ?6, ?7, 0, ?8, ?9)",
                params![key, label, tomb_key, upto, rows, tombstones, bytes, max_ts, now],
            )
            .unwrap();
        self.retire_deltas();
        self.write_manifest(now);
    }

    /// Version 1's alarm deleting garbage files.
    fn collect_garbage(&self) {
        let keys: Vec<String> = self
            .db
            .prepare("SELECT key FROM garbage")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for key in keys {
            std::fs::remove_file(self.lake.join(&key)).unwrap();
            self.db.execute("DELETE FROM garbage WHERE key = ?1", params![key]).unwrap();
        }
    }

    /// Version 1's alarm row (the native host's `_alarm`).
    fn set_alarm(&self, at: i64) {
        self.db.execute("INSERT OR REPLACE INTO _alarm (id, fire_at, retries) VALUES (1, ?1, 0)", params![at]).unwrap();
    }

    /// Version 1's manifest: its bases had no `files` / `tombstoneFiles` lists.
    fn write_manifest(&self, now: i64) {
        let deltas = self
            .db
            .prepare("SELECT key, first_seq, last_seq, rows, bytes, min_ts, max_ts FROM files WHERE kind = 'delta' ORDER BY first_seq")
            .unwrap()
            .query_map([], |r| {
                Ok(DeltaRef {
                    key: r.get(0)?,
                    first_seq: r.get(1)?,
                    last_seq: r.get(2)?,
                    rows: r.get(3)?,
                    bytes: r.get(4)?,
                    min_ts: r.get(5)?,
                    max_ts: r.get(6)?,
                })
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let bases: Vec<StateRef> = self
            .db
            .prepare(
                "SELECT key, kind, label, tombstones_key, last_seq, max_ts, rows, tombstones, bytes, created_at
                 FROM files WHERE kind IN ('current', 'daily', 'monthly') ORDER BY last_seq, kind",
            )
            .unwrap()
            .query_map([], |r| {
                Ok(StateRef {
                    key: r.get(0)?,
                    kind: r.get(1)?,
                    label: r.get(2)?,
                    tombstones_key: r.get(3)?,
                    files: Vec::new(),
                    tombstone_files: Vec::new(),
                    upto_seq: r.get(4)?,
                    max_ts: r.get(5)?,
                    rows: r.get(6)?,
                    tombstones: r.get(7)?,
                    bytes: r.get(8)?,
                    created_at: r.get(9)?,
                })
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let (current, snapshots): (Vec<StateRef>, Vec<StateRef>) = bases.into_iter().partition(|b| b.kind == "current");
        let manifest = CdcManifest {
            format: MANIFEST_FORMAT.to_string(),
            namespace: NS.into(),
            collection: COLLECTION.into(),
            flushed_seq: self.get("flushed_seq"),
            deltas,
            current: current.into_iter().next(),
            snapshots,
            updated_at: now,
        };
        let mut json = serde_json::to_value(&manifest).unwrap();
        let strip = |base: &mut Value| {
            let base = base.as_object_mut().unwrap();
            base.remove("files");
            base.remove("tombstoneFiles");
        };
        if !json["current"].is_null() {
            strip(&mut json["current"]);
        }
        json["snapshots"].as_array_mut().unwrap().iter_mut().for_each(strip);
        self.put(&manifest_key(NS, COLLECTION), &serde_json::to_vec_pretty(&json).unwrap());
    }
}

/// Every change version 1 received, by arrival, with the moment it was received.
pub struct History {
    /// (received at, change), in arrival order.
    received: Vec<(i64, Change)>,
}

impl History {
    pub fn changes(&self) -> Vec<Change> {
        self.received.iter().map(|(_, c)| c.clone()).collect()
    }
}

pub fn doc(name: &str, v: Value) -> Option<Value> {
    Some(json!({"name": name, "v": v}))
}

/// Builds the version-1 data directory. The collection's life:
/// - day 1, 08:00: a, b, c, d inserted, a updated; flushed a minute later;
/// - day 2, 00:00: the midnight alarm took the daily snapshot of day 1
///   (compacting first: current table up to seq 5, committed to the
///   catalog), and a later alarm deleted the delta it made obsolete;
/// - day 2, 10:00: b updated, c deleted, a updated twice — the second
///   (`e9`) with an older event time than the first (`e8`): late; an
///   explicit compaction wrote the current table up to seq 9 (the
///   snapshot still needs the delta of 6..9, so it stayed), retiring the
///   old table's tombstones (deleted by a later alarm) but not its live
///   file, which the catalog holds;
/// - day 2, 11:00: e inserted, d deleted; flushed by the alarm;
/// - day 2, 12:00: c inserted again, b updated late (`e13`), f inserted,
///   a deleted, e updated with the same event time as its insert (a tie:
///   not late, and it wins): pending, with the alarm set to flush them.
///
/// With `last_publish_failed`, the commit of the second current table to
/// the catalog failed (version 1 retried it at a later alarm, which never
/// ran before the upgrade).
pub fn build_v1_data_dir(data: &Path, last_publish_failed: bool) -> (History, Vec<CatalogCommit>) {
    let db_path = object_db_path::<CdcProcessor>(data, &processor_name(NS, COLLECTION));
    let mut v1 = V1Processor::create(&db_path, lake_dir(data));
    let mut history = History { received: Vec::new() };
    let mut apply = |v1: &mut V1Processor, now: i64, batch: Vec<Change>| {
        v1.apply(now, &batch);
        history.received.extend(batch.into_iter().map(|c| (now, c)));
    };
    use ChangeOp::{Delete, Insert, Update};
    apply(
        &mut v1,
        T0,
        vec![
            change("e1", "a", Insert, T0 + 10, None, doc("Ann", json!(1))),
            change("e2", "b", Insert, T0 + 10, None, doc("Bob", json!(1))),
            change("e3", "c", Insert, T0 + 20, None, doc("Cy", json!(1))),
            change("e4", "a", Update, T0 + 30, doc("Ann", json!(1)), doc("Ann", json!(2))),
            change("e5", "d", Insert, T0 + 40, None, doc("Di", json!(1))),
        ],
    );
    v1.flush(T0 + 60_000);
    v1.daily_snapshot(DAY2 + 1_000, V1_SNAPSHOT_LABEL);
    v1.collect_garbage();
    let day2 = T0 + 26 * HOUR;
    apply(
        &mut v1,
        day2,
        vec![
            change("e6", "b", Update, day2 + 100, doc("Bob", json!(1)), doc("Bob", json!(2))),
            change("e7", "c", Delete, day2 + 200, doc("Cy", json!(1)), None),
            change("e8", "a", Update, day2 + 300, doc("Ann", json!(2)), doc("Ann", json!(3))),
            change("e9", "a", Update, day2 + 150, doc("Ann", json!(2)), doc("Ann", json!("late"))),
        ],
    );
    v1.compact(day2 + 60_000);
    if last_publish_failed {
        // The catalog could not be reached: its table keeps the first
        // current table, and the processor's record says so.
        v1.catalog_commits.pop();
        v1.set("cataloged_seq", 5);
        v1.save_counters();
    }
    v1.collect_garbage();
    let hour11 = T0 + 27 * HOUR;
    apply(
        &mut v1,
        hour11,
        vec![
            change("e10", "e", Insert, hour11, None, doc("Eve", json!(1))),
            change("e11", "d", Delete, hour11 + 10, doc("Di", json!(1)), None),
        ],
    );
    v1.flush(hour11 + V1_FLUSH_MAX_AGE_MS);
    let noon = T0 + 28 * HOUR;
    apply(
        &mut v1,
        noon,
        vec![
            change("e12", "c", Insert, noon, None, doc("Cy", json!(2))),
            change("e13", "b", Update, T0 + 25 * HOUR, doc("Bob", json!(1)), doc("Bob", json!("late"))),
            change("e14", "f", Insert, noon + 5, None, doc("Fay", json!(1))),
            change("e15", "a", Delete, noon + 20, doc("Ann", json!(3)), None),
            change("e16", "e", Update, hour11, doc("Eve", json!(1)), doc("Eve", json!("tie"))),
        ],
    );
    v1.set_alarm(noon + V1_FLUSH_MAX_AGE_MS);
    let commits = std::mem::take(&mut v1.catalog_commits);
    drop(v1); // closes the database
    (history, commits)
}
