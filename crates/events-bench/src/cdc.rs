//! Change capture: changes applied per second into collection state
//! (batched, durable), reconstruction of a large collection at a past time
//! (snapshot + deltas from the lake files, and from the object's history
//! index), and bytes per change in delta files.
//!
//! The apply rates are sustained rates: the clock stops once every change is
//! durably accepted *and* folded into the documents' state (the processor
//! appends changes and folds them in sorted batches; the run ends with a
//! read, which folds what is left). The ceiling: raw SQLite inserts of the
//! same rows into one table in transactions of the same size, same
//! durability, one prepared statement; for the random updates, also raw
//! SQLite upserts of the same documents by id (a table of current state only,
//! no history).

use std::time::Instant;

use bytes::Bytes;
use events_core::Timestamp;
use events_core::cdc::{Change, ChangeOp};
use events_host_native::{HostConfig, NativeHost};
use events_lake::cdc::{ReconstructInput, reconstruct};
use events_objects::cdc::{CdcRequest, CdcResponse, CdcStats, SnapshotKind, processor_name};
use events_objects::{CdcCollections, CdcProcessor};
use events_runtime::BlobStore;
use events_runtime::context::Host;

use crate::Figure;
use crate::memory::{OBJECT_BUDGET_MIB, peak_during, peak_mib, reset_peak};

/// Options of the CDC benchmark.
pub struct CdcBench {
    /// Documents inserted (then reconstructed).
    pub docs: usize,
    /// Updates applied after the snapshot.
    pub updates: usize,
    /// Changes per apply (one durable commit each).
    pub batch: usize,
}

impl Default for CdcBench {
    fn default() -> Self {
        CdcBench { docs: 1_000_000, updates: 200_000, batch: events_objects::cdc::MAX_CHANGES_PER_APPLY }
    }
}

const T0: i64 = 1_800_000_000_000;

fn doc(i: usize, rev: usize) -> serde_json::Value {
    serde_json::json!({"name": format!("user-{i}"), "n": i, "rev": rev, "plan": if i.is_multiple_of(3) { "pro" } else { "free" }})
}

fn change(seq: usize, i: usize, op: ChangeOp, rev: usize) -> Change {
    Change {
        event_id: format!("ev-{seq:010}"),
        collection: "users".into(),
        doc_id: format!("u{i:08}"),
        op,
        ts: Timestamp(T0 + seq as i64),
        before: None,
        after: Some(doc(i, rev)),
        bookmark: None,
    }
}

/// The document touched by the `k`-th update of `docs` documents: a stride
/// through the ids, so consecutive updates hit distant pages.
fn updated_doc(k: usize, docs: usize) -> usize {
    1 + (k * 7_919) % docs
}

fn raw_connection(path: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
    Ok(conn)
}

/// Raw SQLite inserts per second of rows like the changes, in transactions
/// of `batch` rows (WAL, synchronous=FULL): the ceiling of durable batched apply.
pub fn raw_sqlite_insert_rate(dir: &std::path::Path, rows: usize, batch: usize) -> anyhow::Result<f64> {
    let mut conn = raw_connection(&dir.join("raw-cdc.sqlite"))?;
    conn.execute_batch(
        "CREATE TABLE changes (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, doc_id TEXT NOT NULL, ts INTEGER NOT NULL, after TEXT);",
    )?;
    let start = Instant::now();
    let mut seq = 0;
    while seq < rows {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO changes VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for _ in 0..batch.min(rows - seq) {
                seq += 1;
                let c = change(seq, seq, ChangeOp::Insert, 0);
                stmt.execute(rusqlite::params![
                    seq as i64,
                    c.event_id,
                    c.doc_id,
                    c.ts.as_millis(),
                    c.after.map(|a| a.to_string())
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// Raw SQLite upserts per second of `updates` documents (the update
/// sequence of the benchmark) into a table of `docs` documents keyed by id,
/// in transactions of `batch` (WAL, synchronous=FULL): current state only,
/// no history, no event-time order.
pub fn raw_sqlite_upsert_rate(dir: &std::path::Path, docs: usize, updates: usize, batch: usize) -> anyhow::Result<f64> {
    let mut conn = raw_connection(&dir.join("raw-docs.sqlite"))?;
    conn.execute_batch("CREATE TABLE docs (doc_id TEXT PRIMARY KEY, data TEXT, ts INTEGER NOT NULL) WITHOUT ROWID;")?;
    let write =
        |conn: &mut rusqlite::Connection, ids: &mut dyn Iterator<Item = (usize, usize)>| -> anyhow::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO docs VALUES (?1, ?2, ?3)")?;
                for (seq, i) in ids {
                    let c = change(seq, i, ChangeOp::Update, seq);
                    stmt.execute(rusqlite::params![c.doc_id, c.after.map(|a| a.to_string()), c.ts.as_millis()])?;
                }
            }
            tx.commit()?;
            Ok(())
        };
    for first in (1..=docs).step_by(100_000) {
        write(&mut conn, &mut (first..=(first + 99_999).min(docs)).map(|i| (i, i)))?;
    }
    let start = Instant::now();
    let mut k = 0;
    while k < updates {
        let end = (k + batch).min(updates);
        write(&mut conn, &mut (k..end).map(|k| (docs + 1 + k, updated_doc(k, docs))))?;
        k = end;
    }
    Ok(updates as f64 / start.elapsed().as_secs_f64())
}

async fn call(host: &NativeHost, req: CdcRequest) -> anyhow::Result<CdcResponse> {
    Ok(host.call_object::<CdcProcessor>(&processor_name("bench", "users"), req).await?)
}

/// Applies `changes` in batches, then reads the statistics (which folds
/// whatever is still unfolded into the state); returns changes per second
/// over the whole, with the statistics.
async fn apply_all(
    host: &NativeHost,
    changes: impl Iterator<Item = Change>,
    batch: usize,
) -> anyhow::Result<(f64, CdcStats)> {
    let start = Instant::now();
    let mut n = 0usize;
    let mut chunk = Vec::with_capacity(batch);
    let send = async |chunk: Vec<Change>| -> anyhow::Result<()> {
        call(host, CdcRequest::Apply { changes: chunk }).await?;
        Ok(())
    };
    for c in changes {
        chunk.push(c);
        n += 1;
        if chunk.len() == batch {
            send(std::mem::take(&mut chunk)).await?;
        }
    }
    if !chunk.is_empty() {
        send(chunk).await?;
    }
    let CdcResponse::Stats(stats) = call(host, CdcRequest::Stats).await? else { anyhow::bail!("no statistics") };
    Ok((n as f64 / start.elapsed().as_secs_f64(), stats))
}

/// Adds the process's peak resident memory during `phase`, against the
/// design's budget for one object (the process holds the host, the object
/// and the benchmark's client; the lake reconstruction, which holds its
/// input files, is not one of these phases).
fn memory_figure(figures: &mut Vec<Figure>, phase: &str, peak: Option<f64>) {
    if let Some(mib) = peak {
        figures.push(
            Figure::new(&format!("peak resident memory of the whole process during {phase}"), mib, "MiB")
                .against("the design's memory budget of one object", OBJECT_BUDGET_MIB),
        );
    }
}

/// Runs every CDC figure.
pub async fn run(opts: &CdcBench) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let mut figures = Vec::new();
    let raw = raw_sqlite_insert_rate(dir.path(), opts.docs.min(500_000), opts.batch)?;
    let raw_upserts = raw_sqlite_upsert_rate(dir.path(), opts.docs, opts.updates, opts.batch)?;

    let mut config = HostConfig::new(dir.path().join("host"));
    config.idle_timeout_ms = 3_600_000;
    let host = NativeHost::start(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    host.register::<CdcProcessor>().register::<CdcCollections>();

    // 1. Inserts of every document, then a snapshot (the base of past reads).
    let inserts = (1..=opts.docs).map(|i| change(i, i, ChangeOp::Insert, 0));
    let (applied, insert_memory) = peak_during(apply_all(&host, inserts, opts.batch)).await;
    let (insert_rate, stats) = applied?;
    anyhow::ensure!(stats.documents == opts.docs as i64, "{} documents after the inserts", stats.documents);
    figures.push(
        Figure::new(
            &format!(
                "changes applied/s, sustained (inserts of {} new documents, {} per commit, all folded into state)",
                opts.docs, opts.batch
            ),
            insert_rate,
            "changes/s",
        )
        .against("raw SQLite inserts, same batches", raw),
    );
    memory_figure(&mut figures, &format!("inserts of {} documents", opts.docs), insert_memory);
    let start = Instant::now();
    let (snapshot, snapshot_memory) =
        peak_during(call(&host, CdcRequest::Snapshot { kind: SnapshotKind::Daily })).await;
    snapshot?;
    figures.push(Figure::new(
        &format!("compaction + snapshot of {} documents", opts.docs),
        start.elapsed().as_secs_f64(),
        "s",
    ));
    memory_figure(&mut figures, &format!("compaction + snapshot of {} documents", opts.docs), snapshot_memory);

    // 2. Updates of existing documents (random-ish order), with late ones.
    let updates = (0..opts.updates).map(|k| {
        let seq = opts.docs + 1 + k;
        let i = updated_doc(k, opts.docs);
        let mut c = change(seq, i, ChangeOp::Update, k + 1);
        if k % 10 == 0 {
            c.ts = Timestamp(T0 - 1); // late: older than the document's insert
        }
        c
    });
    let (applied, update_memory) = peak_during(apply_all(&host, updates, opts.batch)).await;
    let (update_rate, stats) = applied?;
    anyhow::ensure!(stats.late == opts.updates.div_ceil(10) as i64, "{} late changes counted", stats.late);
    let label = format!(
        "changes applied/s, sustained ({} updates of random existing documents, 10% late, {} per commit, all folded)",
        opts.updates, opts.batch
    );
    figures.push(Figure::new(&label, update_rate, "changes/s").against("raw SQLite inserts, same batches", raw));
    figures.push(
        Figure::new(&label, update_rate, "changes/s")
            .against("raw SQLite upserts of the same documents by id, same batches (state only)", raw_upserts),
    );
    memory_figure(&mut figures, &format!("{} updates", opts.updates), update_memory);
    call(&host, CdcRequest::Flush).await?;

    // 3. Bytes per change in delta files.
    let CdcResponse::Manifest(manifest) = call(&host, CdcRequest::Manifest).await? else {
        anyhow::bail!("no manifest")
    };
    let (rows, bytes) = manifest.deltas.iter().fold((0, 0), |(r, b), d| (r + d.rows, b + d.bytes));
    figures.push(Figure::new(
        "delta file bytes per change (Parquet, Snappy)",
        bytes as f64 / rows.max(1) as f64,
        "bytes",
    ));

    // 4. The state at a past time (after the inserts, amid the updates), read
    // from the object's history index a page at a time (as the HTTP route
    // does), then rebuilt from the lake files (snapshot + deltas). The
    // history read comes first: the lake rebuild holds its input files.
    let at = T0 + (opts.docs + opts.updates / 2) as i64;
    let start = Instant::now();
    let mut after = None;
    let mut count = 0usize;
    let reset = reset_peak();
    loop {
        let req = CdcRequest::ReadState {
            at: Some(Timestamp(at)),
            after,
            limit: events_objects::cdc::MAX_READ_PAGE,
            include_deleted: false,
        };
        let CdcResponse::Docs { docs, next } = call(&host, req).await? else { anyhow::bail!("unexpected answer") };
        count += docs.len();
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    anyhow::ensure!(count == opts.docs, "read {count} documents, expected {}", opts.docs);
    figures.push(Figure::new(
        &format!("read {} documents at a past time from the object's history index (pages of 1000)", opts.docs),
        start.elapsed().as_secs_f64(),
        "s",
    ));
    memory_figure(
        &mut figures,
        &format!("the read of {} documents from the history index", opts.docs),
        peak_mib().filter(|_| reset),
    );
    let snapshot = manifest.snapshots.last().ok_or_else(|| anyhow::anyhow!("no snapshot"))?;
    let start = Instant::now();
    let blobs = host.blobs();
    let get = async |key: &str| -> anyhow::Result<Bytes> {
        Ok(Bytes::from(blobs.get(key).await?.ok_or_else(|| anyhow::anyhow!("{key} missing"))?))
    };
    let mut base = Vec::new();
    for key in snapshot.files.iter().chain(&snapshot.tombstone_files) {
        base.push(get(key).await?);
    }
    let mut input =
        ReconstructInput { base, base_upto_seq: snapshot.upto_seq, deltas: Vec::new(), pending: Vec::new() };
    for d in manifest.deltas.iter().filter(|d| d.last_seq > snapshot.upto_seq) {
        input.deltas.push(get(&d.key).await?);
    }
    let mut live = 0usize;
    reconstruct(input, at, &mut |s| {
        live += usize::from(!s.deleted);
        true
    })?;
    let lake_secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(live == opts.docs, "reconstructed {live} documents, expected {}", opts.docs);
    figures.push(Figure::new(
        &format!("reconstruct {} documents at a past time from lake files (snapshot + deltas)", opts.docs),
        lake_secs,
        "s",
    ));

    host.shutdown().await;
    Ok(figures)
}
