//! Crash safety: an acknowledged event survives SIGKILL and ends up in the
//! lake exactly once.
//!
//! A client sends 100-event batches with client-side unique ids in a loop
//! while the test kills the server with SIGKILL and restarts it 5 times. A
//! batch answered 200 is acknowledged. At the end, after `POST /admin/flush`,
//! pyarrow reads every Parquet file: each acknowledged id must be there
//! exactly once, and no id (acknowledged or not) twice.
//!
//! Kills and restarts a local process and reads its data directory, so it
//! does not run against an external server (`EVENTS_TEST_BASE_URL`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events_e2e::{
    DEADLINE, ServerOptions, TestServer, iso_now, read_parquet, require_python_modules, skip_on_external,
};
use rand::Rng;
use serde_json::{Value, json};

const KILLS: usize = 5;
const BATCH: usize = 100;

#[derive(Default)]
struct Ledger {
    /// Ids of batches answered 200.
    acked: Vec<String>,
    /// Batches answered otherwise (status or transport error), by outcome.
    failed: BTreeMap<String, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_exactly_once() {
    if skip_on_external("kills and restarts the server process and reads its data directory") {
        return;
    }
    require_python_modules(&["pyarrow"]);
    let mut server = TestServer::start_with(ServerOptions::new().toml(
        "[ingest]\nrequests_per_minute = 1000000\nevents_per_minute = 1000000000\n\n[writer]\nflush_max_age_ms = 200\n",
    ))
    .await;
    let key = server.create_key(&events_e2e::unique_ns("crash")).await;
    let ns = key.namespace.clone();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let acked_batches = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Restarts reuse the address, so the URL stays valid.
    let url = server.url("/e");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let sender = {
        let (ledger, acked_batches, stop, key) = (ledger.clone(), acked_batches.clone(), stop.clone(), key.key.clone());
        tokio::spawn(async move {
            let mut batch_no = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let ids: Vec<String> = (0..BATCH).map(|i| format!("b{batch_no:05}-{i:03}")).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"type": "crash.test", "ts": iso_now(), "id": id, "batch": batch_no}))
                    .collect();
                batch_no += 1;
                let res = client.post(&url).bearer_auth(&key).json(&json!({"events": events})).send().await;
                let outcome = match res {
                    Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                        Ok(body) if body["ok"] == true && body["received"] == BATCH => None,
                        Ok(body) => Some(format!("200 with unexpected body {body}")),
                        Err(e) => Some(format!("200 but body unreadable: {e}")),
                    },
                    Ok(r) => Some(format!("HTTP {}", r.status())),
                    Err(e) => Some(if e.is_connect() { "connect error".into() } else { "transport error".into() }),
                };
                let failed = {
                    let mut l = ledger.lock().unwrap();
                    match outcome {
                        None => {
                            l.acked.extend(ids);
                            acked_batches.fetch_add(1, Ordering::SeqCst);
                            false
                        }
                        Some(why) => {
                            *l.failed.entry(why).or_insert(0) += 1;
                            true
                        }
                    }
                };
                if failed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };

    let mut acked_after_restart = Vec::new();
    for round in 0..=KILLS {
        // Let the client get batches through on this incarnation first.
        let before = acked_batches.load(Ordering::SeqCst);
        let deadline = Instant::now() + DEADLINE;
        while acked_batches.load(Ordering::SeqCst) == before {
            assert!(
                Instant::now() < deadline,
                "no batch acknowledged within {DEADLINE:?} after start #{round}; failures so far: {:?}",
                ledger.lock().unwrap().failed
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked_after_restart.push(acked_batches.load(Ordering::SeqCst) - before);
        if round == KILLS {
            break;
        }
        let pause = rand::rng().random_range(100..=400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill();
        server.restart().await;
    }
    stop.store(true, Ordering::SeqCst);
    sender.await.expect("sender task panicked");

    let (acked, failed) = {
        let l = ledger.lock().unwrap();
        (l.acked.clone(), l.failed.clone())
    };
    eprintln!("acknowledged {} events in {} batches; failed batches: {failed:?}", acked.len(), acked.len() / BATCH);

    // Every acknowledged event is readable over HTTP after the restarts.
    let stored = server.read_all(&key.auth(), "type=crash.test").await;
    let stored_ids: HashSet<&str> = stored.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let lost_http: Vec<&String> = acked.iter().filter(|id| !stored_ids.contains(id.as_str())).collect();
    assert!(
        lost_http.is_empty(),
        "{} acknowledged events not returned by GET /events, e.g. {:?}",
        lost_http.len(),
        &lost_http[..lost_http.len().min(5)]
    );
    assert_eq!(stored.len(), stored_ids.len(), "GET /events returned an id twice");

    server.admin_flush().await;
    // Age-based flushes may still be completing: poll until every acked id is in a file.
    let deadline = Instant::now() + DEADLINE;
    let read = loop {
        let read = read_parquet(&server.lake_dir(), false);
        let counts = read.id_counts();
        if acked.iter().all(|id| counts.contains_key(id)) || Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let counts = read.id_counts();
    let missing: Vec<&String> = acked.iter().filter(|id| !counts.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are in no Parquet file, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        twice.is_empty(),
        "{} ids are in the lake more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert!(read.schemas_agree, "files written across restarts disagree on the schema");
    // Only this namespace was written.
    assert!(read.files.iter().all(|f| f.contains(&format!("ns={ns}/"))), "{:?}", read.files);
    eprintln!("batches acknowledged per incarnation: {acked_after_restart:?}; {} files", read.files.len());
}
