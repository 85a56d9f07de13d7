//! A CdcProcessor upgrades a data directory written by version 1 of its
//! schema and keeps working.
//!
//! Version 1 folded every change into `docs` when it was applied, wrote each
//! current table and snapshot as exactly one live file and one tombstones
//! file, and kept no history index. This test builds, on disk, what that
//! version left behind for a small collection — the object's SQLite file at
//! the path the native host opens (schema from
//! `fixtures/cdc_processor_v1.sql`, rows written by the statements version 1
//! ran), its Parquet files in the host's local bucket (written with the
//! public `events_lake::cdc` encoders), the manifest, and the Iceberg table
//! it had committed — then starts the current code on it and checks what a
//! user relies on: the state now and in the past, a document's history, the
//! statistics, reads from the lake files, new changes (and redeliveries of
//! old ones), and a compaction into the new multi-part layout.
//!
//! Nothing here depends on how many migrations the current code has: only
//! that it brings a version-1 database to its newest version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use events_core::cdc::{Change, ChangeOp};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_host_native::{Clock, HostConfig, ManualClock, NativeHost};
use events_lake::cdc::{
    CdcManifest, DeltaRef, DeltaRow, DocState, MANIFEST_FORMAT, StateRef, current_keys, decode_state_file, delta_key,
    encode_delta_file, encode_state_file, manifest_key, part_key, snapshot_keys, state_schema,
};
use events_objects::catalog::{CatalogRequest, NewFile, ScanFile, cdc_table_name, iceberg_schema};
use events_objects::cdc::{
    CDC_COLLECTION_PROPERTY, CdcRequest, CdcResponse, CollectionsRequest, FileBase, SnapshotKind, processor_name,
};
use events_objects::{Catalog, CdcCollections, CdcProcessor};
use events_runtime::{BlobStore, DurableObject, context::Host};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

mod cdc_support;
use cdc_support::{COLLECTION, Expected, NS, call, catalog_files, catalog_scan, live, replay, stats};
use sha2::{Digest, Sha256};

/// 2027-01-15T08:00:00Z.
const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
/// 2027-01-16T00:00:00Z: the first midnight after T0.
const DAY2: i64 = T0 + 16 * HOUR;
/// The first daily snapshot version 1 took (of the day of T0).
const V1_SNAPSHOT_LABEL: &str = "2027-01-15";
/// Version 1's flush age (its default): the alarm it set for pending changes.
const V1_FLUSH_MAX_AGE_MS: i64 = 5_000;
/// Documents per state file after the upgrade: small, so that a compaction
/// of this collection writes several files.
const STATE_FILE_ROWS: i64 = 2;

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

fn change(event_id: &str, doc: &str, op: ChangeOp, ts: i64, before: Option<Value>, after: Option<Value>) -> Change {
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
fn object_db_path<O: DurableObject>(data: &Path, name: &str) -> PathBuf {
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    data.join("objects").join(O::CLASS).join(&digest[..2]).join(format!("{}.sqlite", &digest[..40]))
}

/// The folder of the host's default bucket (`<data>/lake`).
fn lake_dir(data: &Path) -> PathBuf {
    data.join("lake")
}

/// A catalog commit version 1 made after a compaction.
struct CatalogCommit {
    added: NewFile,
    removed: Vec<String>,
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
        db.execute_batch(include_str!("fixtures/cdc_processor_v1.sql")).unwrap();
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
struct History {
    /// (received at, change), in arrival order.
    received: Vec<(i64, Change)>,
}

impl History {
    fn changes(&self) -> Vec<Change> {
        self.received.iter().map(|(_, c)| c.clone()).collect()
    }
}

fn doc(name: &str, v: Value) -> Option<Value> {
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
fn build_v1_data_dir(data: &Path, last_publish_failed: bool) -> (History, Vec<CatalogCommit>) {
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

// ---------------------------------------------------------------- expectations

/// Every event time of `changes`, and a moment before and after all of them.
fn times(changes: &[Change]) -> Vec<i64> {
    let mut times: Vec<i64> = changes.iter().map(|c| c.ts.as_millis()).collect();
    times.extend([T0 - 1, i64::from(i32::MAX) * 1_000]);
    times.sort();
    times.dedup();
    times
}

// ---------------------------------------------------------------- calls

fn start_host(data: &Path, clock: Arc<ManualClock>) -> NativeHost {
    let mut config = HostConfig::new(data);
    config.vars.insert("cdc.state_file_rows".into(), STATE_FILE_ROWS.to_string());
    config.threads = 1;
    config.clock = clock;
    let host = NativeHost::start(config).unwrap();
    host.register::<CdcProcessor>().register::<CdcCollections>().register::<Catalog>();
    host
}

async fn manifest(host: &NativeHost) -> CdcManifest {
    let CdcResponse::Manifest(m) = call(host, CdcRequest::Manifest).await.unwrap() else { panic!() };
    m
}

/// Every document at `at` (default now), tombstones included, from the object's state.
async fn read_state(host: &NativeHost, at: Option<i64>) -> Expected {
    cdc_support::read_state(host, at, true, 2).await.unwrap()
}

/// Every live document at `at` rebuilt from the lake files.
async fn read_files(host: &NativeHost, at: i64, base: FileBase) -> Result<Expected, ApiError> {
    cdc_support::read_files(host, at, base, 2).await
}

async fn history_ids(host: &NativeHost, id: &str) -> Vec<(String, ChangeOp, i64)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let req = CdcRequest::History { id: id.into(), after, limit: 2 };
        let CdcResponse::History { changes, next, history_from } = call(host, req).await.unwrap() else { panic!() };
        assert_eq!(history_from, None, "the whole history is kept: nothing was trimmed");
        for c in changes {
            out.push((c.event_id, c.op, Timestamp::parse_iso(&c.ts).unwrap().as_millis()));
        }
        match next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// Replays version 1's catalog commits and its registration of the
/// collection: the state of the other objects it talked to.
async fn restore_v1_neighbours(host: &NativeHost, commits: Vec<CatalogCommit>) {
    let table = cdc_table_name(COLLECTION);
    for commit in commits {
        let properties = BTreeMap::from([(CDC_COLLECTION_PROPERTY.to_string(), COLLECTION.to_string())]);
        let schema = iceberg_schema(&state_schema());
        let req = CatalogRequest::EnsureManagedTable { table: table.clone(), schema, properties };
        host.call_object::<Catalog>(NS, req).await.unwrap();
        let req =
            CatalogRequest::CommitFiles { table: table.clone(), added: vec![commit.added], removed: commit.removed };
        host.call_object::<Catalog>(NS, req).await.unwrap();
    }
    let req = CollectionsRequest::Register { collection: COLLECTION.into() };
    host.call_object::<CdcCollections>(NS, req).await.unwrap();
}

async fn wait_until_gone(host: &NativeHost, key: &str) {
    for _ in 0..500 {
        if host.blobs().get(key).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{key} was not deleted");
}

/// Every read path of the object's state equals the replay of `changes`, at every time.
async fn assert_state_reads(host: &NativeHost, changes: &[Change], context: &str) {
    assert_eq!(read_state(host, None).await, replay(changes, i64::MAX), "{context}: state now");
    for at in times(changes) {
        let expected = replay(changes, at);
        assert_eq!(read_state(host, Some(at)).await, expected, "{context}: state at {at}");
        for (id, want) in &expected {
            let req = CdcRequest::ReadDoc { id: id.clone(), at: Some(Timestamp(at)) };
            let CdcResponse::Doc(Some(d)) = call(host, req).await.unwrap() else { panic!("{context}: {id} at {at}") };
            assert_eq!(&(d.data, d.version, d.deleted), want, "{context}: {id} at {at}");
        }
    }
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_collection_is_upgraded_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (history, commits) = build_v1_data_dir(data, false);
    let mut changes = history.changes();
    let noon = T0 + 28 * HOUR;
    let (v1_live, v1_tombstones) = current_keys(NS, COLLECTION, 9);
    assert!(lake_dir(data).join(&v1_live).exists() && !lake_dir(data).join(current_keys(NS, COLLECTION, 5).1).exists());

    // The new version starts a second after the last changes arrived (before
    // the flush alarm version 1 set for them is due).
    let clock = Arc::new(ManualClock::new(Timestamp(noon + 1_000)));
    let host = start_host(data, clock.clone());
    restore_v1_neighbours(&host, commits).await;

    // ---- Statistics carry over.
    let s = stats(&host).await;
    assert_eq!((s.documents, s.deleted), (4, 2), "live: b, c, e, f; tombstones: a, d");
    assert_eq!((s.changes, s.pending), (16, 5), "e12..e16 were never flushed");
    assert_eq!(s.late, 2, "e9 and e13 arrived after changes of their documents with later event times");
    assert_eq!((s.delta_files, s.compactions, s.snapshots), (2, 2, 1));
    assert_eq!(s.last_change, Some(Timestamp(noon + 20).to_iso()));
    assert_eq!(s.last_compaction, Some(Timestamp(T0 + 26 * HOUR + 60_000).to_iso()));
    assert_eq!(s.catalog_error, None);

    // ---- The state now and at every past time, from the object.
    let now = replay(&changes, i64::MAX);
    assert_eq!(now["a"], (doc("Ann", json!(3)), 5, true), "a tombstone keeps the delete's before");
    assert_eq!(now["b"], (doc("Bob", json!(2)), 3, false), "the late e13 does not overwrite e6");
    assert_eq!(now["c"], (doc("Cy", json!(2)), 3, false), "re-inserted after its delete");
    assert_eq!(now["e"], (doc("Eve", json!("tie")), 2, false), "of two changes at one time, the later arrival wins");
    assert_state_reads(&host, &changes, "after the upgrade").await;

    // ---- One document's history: event-time order, the late change in place, the tombstone last.
    let a: Vec<(String, ChangeOp, i64)> = history_ids(&host, "a").await;
    let day2 = T0 + 26 * HOUR;
    assert_eq!(
        a,
        [
            ("e1".to_string(), ChangeOp::Insert, T0 + 10),
            ("e4".to_string(), ChangeOp::Update, T0 + 30),
            ("e9".to_string(), ChangeOp::Update, day2 + 150),
            ("e8".to_string(), ChangeOp::Update, day2 + 300),
            ("e15".to_string(), ChangeOp::Delete, noon + 20),
        ]
    );

    // ---- Reads from the lake files version 1 wrote (plus the pending changes).
    let current_max_ts = day2 + 300; // the newest change the current table (up to seq 9) folds
    let snapshot_max_ts = T0 + 40;
    let v1_snapshot = FileBase::Snapshot { kind: SnapshotKind::Daily, label: V1_SNAPSHOT_LABEL.into() };
    for at in times(&changes) {
        let expected = live(&replay(&changes, at));
        if at >= current_max_ts {
            let got = read_files(&host, at, FileBase::Current).await.unwrap();
            assert_eq!(got, expected, "current table + deltas + pending at {at}");
        } else {
            let e = read_files(&host, at, FileBase::Current).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidQuery, "the current table is no base before its newest change");
        }
        if at >= snapshot_max_ts {
            let got = read_files(&host, at, v1_snapshot.clone()).await.unwrap();
            assert_eq!(got, expected, "snapshot + deltas + pending at {at}");
            assert_eq!(read_files(&host, at, FileBase::Auto).await.unwrap(), expected, "newest usable base at {at}");
        } else {
            // The delta of seq 1..5 was deleted after the first compaction.
            let e = read_files(&host, at, FileBase::Auto).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidQuery, "{e:?}");
        }
    }
    let e = read_files(&host, noon + 1_000, FileBase::DeltasOnly).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidQuery, "{e:?}");
    let m = manifest(&host).await;
    let current = m.current.as_ref().unwrap();
    assert_eq!(
        (current.files.clone(), current.tombstone_files.clone()),
        (vec![v1_live.clone()], vec![v1_tombstones.clone()])
    );
    assert_eq!((current.upto_seq, current.rows, current.tombstones), (9, 3, 1));

    // ---- New changes apply on top; redelivered old events are recognised.
    let hour13 = T0 + 29 * HOUR;
    let redelivered = [changes[2].clone(), changes[12].clone()]; // e3 (compacted), e13 (was pending)
    assert_eq!((redelivered[0].event_id.as_str(), redelivered[1].event_id.as_str()), ("e3", "e13"));
    let fresh = vec![
        change("e17", "e", ChangeOp::Update, hour13, doc("Eve", json!("tie")), doc("Eve", json!(2))),
        change("e18", "g", ChangeOp::Insert, hour13 + 1, None, doc("Gus", json!(1))),
        change("e19", "f", ChangeOp::Update, T0 + 27 * HOUR, None, doc("Fay", json!("late"))),
    ];
    let mut batch = redelivered.to_vec();
    batch.extend(fresh.clone());
    let CdcResponse::Applied(applied) = call(&host, CdcRequest::Apply { changes: batch }).await.unwrap() else {
        panic!()
    };
    assert_eq!((applied.applied, applied.duplicates), (3, 2));
    changes.extend(fresh);
    let s = stats(&host).await;
    assert_eq!((s.documents, s.deleted, s.changes, s.pending, s.late), (5, 2, 19, 8, 3));
    assert_state_reads(&host, &changes, "after new changes").await;

    // ---- A compaction writes the new layout: several files per state.
    clock.advance(HOUR);
    call(&host, CdcRequest::Compact).await.unwrap();
    let m = manifest(&host).await;
    let current = m.current.clone().unwrap();
    let (live_key, tomb_key) = current_keys(NS, COLLECTION, 19);
    assert_eq!((current.upto_seq, current.rows, current.tombstones), (19, 5, 2));
    assert_eq!(current.files, (0..3).map(|p| part_key(&live_key, p)).collect::<Vec<_>>(), "5 documents, 2 per file");
    assert_eq!(current.tombstone_files, [part_key(&tomb_key, 0)]);
    let mut rows_per_file = Vec::new();
    for key in current.files.iter().chain(&current.tombstone_files) {
        rows_per_file.push(decode_state_file(&host.blobs().get(key).await.unwrap().unwrap()).unwrap().len());
    }
    assert_eq!(rows_per_file, [2, 2, 1, 2]);
    let at = clock.now().as_millis();
    let expected = live(&replay(&changes, at));
    assert_eq!(read_files(&host, at, FileBase::Current).await.unwrap(), expected, "the new current table");
    assert_eq!(read_files(&host, at, FileBase::Auto).await.unwrap(), expected);
    assert_eq!(read_files(&host, at, v1_snapshot.clone()).await.unwrap(), expected, "version 1's snapshot + deltas");
    assert_state_reads(&host, &changes, "after compacting").await;
    let s = stats(&host).await;
    assert_eq!((s.pending, s.compactions, s.catalog_error), (0, 3, None));

    // The catalog's table now holds the new files instead of version 1's;
    // version 1's tombstones file is deleted, its live file stays (the
    // catalog's, expired with its snapshots).
    let mut want = current.files.clone();
    want.sort();
    assert_eq!(catalog_files(&host).await, (want, 5));
    wait_until_gone(&host, &v1_tombstones).await;
    assert!(host.blobs().get(&v1_live).await.unwrap().is_some());
    // The manifest in the bucket lists the parts.
    let json = host.blobs().get(&manifest_key(NS, COLLECTION)).await.unwrap().unwrap();
    let written: CdcManifest = serde_json::from_slice(&json).unwrap();
    assert_eq!(written.current.unwrap().files, current.files);

    // ---- A snapshot after the upgrade is multi-part too, and reads back the same.
    let CdcResponse::Snapshot(Some(_)) = call(&host, CdcRequest::Snapshot { kind: SnapshotKind::Daily }).await.unwrap()
    else {
        panic!("the collection changed since the last snapshot")
    };
    let label = clock.now().to_datetime().format("%Y-%m-%d").to_string();
    let m = manifest(&host).await;
    assert_eq!(m.snapshots.len(), 2);
    let snapshot = m.snapshots.iter().find(|s| s.label == label).unwrap();
    assert_eq!((snapshot.files.len(), snapshot.tombstone_files.len()), (3, 1));
    let base = FileBase::Snapshot { kind: SnapshotKind::Daily, label };
    assert_eq!(read_files(&host, at, base).await.unwrap(), expected);
    let before_restart = stats(&host).await;
    host.shutdown().await;

    // ---- The database records every migration once, in order; version 1's record is kept.
    let db = Connection::open(object_db_path::<CdcProcessor>(data, &processor_name(NS, COLLECTION))).unwrap();
    let versions: Vec<(i64, i64)> = db
        .prepare("SELECT version, applied_at FROM _migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(versions.len() >= 3, "{versions:?}");
    assert_eq!(versions.iter().map(|v| v.0).collect::<Vec<_>>(), (1..=versions.len() as i64).collect::<Vec<_>>());
    assert_eq!(versions[0].1, T0, "migration 1 was not applied again");
    assert!(versions[1..].iter().all(|v| v.1 == noon + 1_000), "the rest were applied at the upgrade: {versions:?}");
    drop(db);

    // ---- A restart of the upgraded data directory migrates nothing more and reads the same.
    let host = start_host(data, clock.clone());
    assert_eq!(stats(&host).await, before_restart);
    assert_eq!(read_files(&host, at, FileBase::Current).await.unwrap(), expected);
    assert_eq!(history_ids(&host, "a").await, a);
    host.shutdown().await;
}

/// Version 1's last commit to the catalog failed. After the upgrade, the
/// flush alarm it had set flushes the pending changes and retries that
/// commit from the migrated record of the current table (one live file, its
/// size not recorded then), and the next compaction replaces it in the
/// catalog by the new files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_commit_version_1_left_failed_is_retried_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (history, commits) = build_v1_data_dir(data, true);
    let changes = history.changes();
    let noon = T0 + 28 * HOUR;
    let clock = Arc::new(ManualClock::new(Timestamp(noon + 1_000)));
    let host = start_host(data, clock.clone());
    restore_v1_neighbours(&host, commits).await;
    let (v1_first, _) = current_keys(NS, COLLECTION, 5);
    let (v1_live, _) = current_keys(NS, COLLECTION, 9);
    assert_eq!(catalog_files(&host).await, (vec![v1_first.clone()], 4), "the catalog still has the first table");
    assert_eq!(stats(&host).await.pending, 5);

    // Version 1's alarm comes due: the pending changes are flushed and the
    // current table (up to seq 9) is committed.
    clock.advance(V1_FLUSH_MAX_AGE_MS);
    cdc_support::wait_for(&host, |s| s.pending == 0).await;
    let mut files = Vec::new();
    for _ in 0..500 {
        files = catalog_scan(&host).await;
        if files.iter().any(|f| f.key == v1_live) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let size = std::fs::metadata(lake_dir(data).join(&v1_live)).unwrap().len() as i64;
    assert_eq!(files, [ScanFile { key: v1_live.clone(), rows: 3, bytes: size }]);
    assert_eq!(stats(&host).await.catalog_error, None);
    // The first table's live file left the catalog's current snapshot; the
    // catalog, not the processor, deletes it when that snapshot expires.
    assert!(host.blobs().get(&v1_first).await.unwrap().is_some());

    // The flushed changes read back from the lake.
    let at = clock.now().as_millis();
    assert_eq!(read_files(&host, at, FileBase::Current).await.unwrap(), live(&replay(&changes, at)));

    // A compaction after the upgrade replaces version 1's file in the catalog by its parts.
    call(&host, CdcRequest::Compact).await.unwrap();
    let current = manifest(&host).await.current.unwrap();
    assert_eq!((current.upto_seq, current.files.len()), (16, 2), "4 documents, 2 per file");
    let mut want = current.files.clone();
    want.sort();
    assert_eq!(catalog_files(&host).await, (want, 4));
    assert_eq!(read_files(&host, at, FileBase::Current).await.unwrap(), live(&replay(&changes, at)));
    host.shutdown().await;
}
