//! Change capture: changes applied per second into collection state
//! (batched, durable), reconstruction of a large collection at a past time
//! (snapshot + deltas from the lake files, and from the object's history
//! index), and bytes per change in delta files. The ceiling: raw SQLite
//! inserts of the same rows in transactions of the same size, same durability.

use std::time::Instant;

use bytes::Bytes;
use events_core::Timestamp;
use events_core::cdc::{Change, ChangeOp};
use events_host_native::{HostConfig, NativeHost};
use events_lake::cdc::{ReconstructInput, reconstruct};
use events_objects::cdc::{CdcRequest, CdcResponse, SnapshotKind, processor_name};
use events_objects::{CdcCollections, CdcProcessor};
use events_runtime::BlobStore;
use events_runtime::context::Host;

use crate::Figure;

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

/// Raw SQLite inserts per second of rows like the changes, in transactions
/// of `batch` rows (WAL, synchronous=FULL): the ceiling of durable batched apply.
pub fn raw_sqlite_insert_rate(dir: &std::path::Path, rows: usize, batch: usize) -> anyhow::Result<f64> {
    let mut conn = rusqlite::Connection::open(dir.join("raw-cdc.sqlite"))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE changes (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, doc_id TEXT NOT NULL, ts INTEGER NOT NULL, after TEXT);",
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

async fn call(host: &NativeHost, req: CdcRequest) -> anyhow::Result<CdcResponse> {
    Ok(host.call_object::<CdcProcessor>(&processor_name("bench", "users"), req).await?)
}

/// Applies `changes` in batches; returns changes per second.
async fn apply_all(host: &NativeHost, changes: impl Iterator<Item = Change>, batch: usize) -> anyhow::Result<f64> {
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
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs every CDC figure.
pub async fn run(opts: &CdcBench) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let mut figures = Vec::new();
    let raw = raw_sqlite_insert_rate(dir.path(), opts.docs.min(500_000), opts.batch)?;

    let mut config = HostConfig::new(dir.path().join("host"));
    config.idle_timeout_ms = 3_600_000;
    let host = NativeHost::start(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    host.register::<CdcProcessor>().register::<CdcCollections>();

    // 1. Inserts of every document, then a snapshot (the base of past reads).
    let inserts = (1..=opts.docs).map(|i| change(i, i, ChangeOp::Insert, 0));
    let insert_rate = apply_all(&host, inserts, opts.batch).await?;
    figures.push(
        Figure::new(
            &format!("changes applied/s (inserts of {} new documents, {} per commit)", opts.docs, opts.batch),
            insert_rate,
            "changes/s",
        )
        .against("raw SQLite inserts, same batches", raw),
    );
    let start = Instant::now();
    call(&host, CdcRequest::Snapshot { kind: SnapshotKind::Daily }).await?;
    figures.push(Figure::new(
        &format!("compaction + snapshot of {} documents", opts.docs),
        start.elapsed().as_secs_f64(),
        "s",
    ));

    // 2. Updates of existing documents (random-ish order), with late ones.
    let updates = (0..opts.updates).map(|k| {
        let seq = opts.docs + 1 + k;
        let i = 1 + (k * 7_919) % opts.docs;
        let mut c = change(seq, i, ChangeOp::Update, k + 1);
        if k % 10 == 0 {
            c.ts = Timestamp(c.ts.as_millis() - 1_000); // late
        }
        c
    });
    let update_rate = apply_all(&host, updates, opts.batch).await?;
    figures.push(
        Figure::new(
            &format!("changes applied/s (updates of existing documents, 10% late, {} per commit)", opts.batch),
            update_rate,
            "changes/s",
        )
        .against("raw SQLite inserts, same batches", raw),
    );
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

    // 4. Reconstruction at a past time (after the inserts, amid the updates):
    // the snapshot plus the deltas, streamed from the lake files.
    let at = T0 + (opts.docs + opts.updates / 2) as i64;
    let snapshot = manifest.snapshots.last().ok_or_else(|| anyhow::anyhow!("no snapshot"))?;
    let start = Instant::now();
    let blobs = host.blobs();
    let get = async |key: &str| -> anyhow::Result<Bytes> {
        Ok(Bytes::from(blobs.get(key).await?.ok_or_else(|| anyhow::anyhow!("{key} missing"))?))
    };
    let mut input = ReconstructInput {
        base: vec![get(&snapshot.key).await?, get(&snapshot.tombstones_key).await?],
        base_upto_seq: snapshot.upto_seq,
        deltas: Vec::new(),
        pending: Vec::new(),
    };
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

    // The same read from the object's history index, a page at a time (as the HTTP route does).
    let start = Instant::now();
    let mut after = None;
    let mut count = 0usize;
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
    host.shutdown().await;
    Ok(figures)
}
