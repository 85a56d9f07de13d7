//! The life of one object instance: activation, the request loop with group
//! commit, alarms, hibernation and shutdown.
//!
//! # Pipelined group commit
//! The loop takes every queued request (up to [`MAX_REQUESTS_PER_COMMIT`]),
//! runs them in one transaction and commits it, which only writes the WAL.
//! Their answers then wait at the [`SyncGate`] while one `fdatasync` of the
//! WAL runs on the blocking pool, and the loop goes on with the next batch
//! meanwhile. A sync covers every commit written before it started, so the
//! answers of the batches committed while one sync runs all leave after the
//! next one. No answer ever leaves before the commit it reports, and every
//! commit before it, is on disk; answers of batches that only read wait too,
//! since they may have seen data not yet synced.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use events_core::{ApiError, ErrorCode};
use events_runtime::context::ObjectContext;
use events_runtime::{ALARM_MAX_RETRIES, ALARM_RETRY_BASE_MS, Durability, DurableObject, ObjectResult};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::MAX_REQUESTS_PER_COMMIT;
use crate::host::NativeHost;
use crate::registry::{Control, ObjectKey, Signal};
use crate::storage::{SqliteStorage, open_connection, set_durability, storage_error, sync_wal, wal_path};

/// A message in an object's mailbox.
pub(crate) enum Envelope<O: DurableObject> {
    /// A request and where to send its answer.
    Request { req: O::Request, reply: oneshot::Sender<ObjectResult<O::Response>> },
    /// The alarm may be due.
    Alarm,
}

type Reply<O> =
    (oneshot::Sender<ObjectResult<<O as DurableObject>::Response>>, ObjectResult<<O as DurableObject>::Response>);

/// Runs one instance until it hibernates, stops or fails.
pub(crate) async fn run<O: DurableObject>(
    host: NativeHost,
    name: String,
    generation: u64,
    mut rx: mpsc::Receiver<Envelope<O>>,
    control: Arc<Control>,
) {
    let key: ObjectKey = (O::CLASS, name);
    let started = Instant::now();
    let (cx, mut object) = match activate::<O>(&host, &key).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(class = O::CLASS, name = %key.1, error = %e, "activation failed");
            leave(&host, &key, generation, &mut rx, Some(e));
            return;
        }
    };
    host.0.counters.activations.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("events_runtime_activations_total", "class" => O::CLASS).increment(1);
    metrics::histogram!("events_runtime_activation_seconds", "class" => O::CLASS)
        .record(started.elapsed().as_secs_f64());

    let idle = Duration::from_millis(host.config().idle_timeout_ms);
    let mut gate = SyncGate::<O>::new(&host, &host.object_path(O::CLASS, &key.1));
    let mut stopping = false;
    loop {
        if rx.is_empty() && !gate.syncing() {
            // Going idle: an idle object should cost as little memory as possible.
            cx.storage().release_memory();
        }
        let first = if stopping {
            match rx.try_recv() {
                Ok(m) => m,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                synced = gate.synced(), if gate.syncing() => {
                    if let Err(e) = gate.release(synced) {
                        tracing::error!(class = O::CLASS, name = %key.1, error = %e, "object reset after a failed WAL sync");
                        gate.fail_all(&e);
                        leave(&host, &key, generation, &mut rx, None);
                        return;
                    }
                    continue;
                }
                msg = rx.recv() => match msg {
                    Some(m) => m,
                    None => break,
                },
                _ = control.notify.notified() => {
                    match control.take() {
                        Signal::Shutdown => {
                            // Leave the table first, so nothing new arrives; then drain.
                            host.0.registry.remove_if(&key, generation, || true);
                            stopping = true;
                        }
                        Signal::Hibernate => {
                            if host.0.registry.remove_if(&key, generation, || rx.is_empty()) {
                                host.0.counters.hibernations.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        Signal::None => {}
                    }
                    continue;
                }
                _ = tokio::time::sleep(idle) => {
                    if host.0.registry.remove_if(&key, generation, || rx.is_empty()) {
                        host.0.counters.hibernations.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    continue;
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_REQUESTS_PER_COMMIT {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if let Err(e) = process_batch(&host, &key, &cx, &mut object, batch, &mut gate).await {
            // The in-memory object may no longer match storage: drop it; the
            // next call reloads it from what was committed.
            tracing::error!(class = O::CLASS, name = %key.1, error = %e, "object reset after a failed batch");
            gate.drain().await;
            leave(&host, &key, generation, &mut rx, None);
            return;
        }
    }
    gate.drain().await;
    leave(&host, &key, generation, &mut rx, None);
}

/// A WAL sync running on the blocking pool.
type WalSync = JoinHandle<std::io::Result<()>>;

/// Answers waiting until their commits are on disk, and the one WAL sync in
/// flight (see the module documentation). Objects with
/// [`Durability::Relaxed`] pass their answers straight through.
struct SyncGate<O: DurableObject> {
    host: NativeHost,
    /// The WAL to sync, or `None` for relaxed durability.
    wal: Option<PathBuf>,
    /// The sync running, the answers it releases, and when it was started.
    in_flight: Option<(WalSync, Vec<Reply<O>>, Instant)>,
    /// Answers for the next sync.
    waiting: Vec<Reply<O>>,
    /// A commit wrote since the sync in flight (if any) started.
    dirty: bool,
}

impl<O: DurableObject> SyncGate<O> {
    fn new(host: &NativeHost, db: &std::path::Path) -> Self {
        let wal = (O::DURABILITY == Durability::Fsync).then(|| wal_path(db));
        // Activation may have written (migrations): the first batch syncs.
        SyncGate { host: host.clone(), wal, in_flight: None, waiting: Vec::new(), dirty: true }
    }

    /// Whether a sync is running.
    fn syncing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Takes the answers of a committed batch; `wrote`: the commit changed rows.
    fn submit(&mut self, replies: Vec<Reply<O>>, wrote: bool) {
        if self.wal.is_none() {
            send_all::<O>(replies);
            return;
        }
        self.dirty |= wrote;
        match &mut self.in_flight {
            // Nothing written since the running sync started: it covers this batch too.
            Some((_, riding, _)) if !self.dirty => riding.extend(replies),
            Some(_) => self.waiting.extend(replies),
            None if !self.dirty => send_all::<O>(replies),
            None => {
                self.waiting.extend(replies);
                self.start();
            }
        }
    }

    /// Starts a sync for everything committed so far and the waiting answers.
    fn start(&mut self) {
        debug_assert!(self.in_flight.is_none(), "one WAL sync at a time");
        let Some(wal) = self.wal.clone() else { return };
        if !self.dirty {
            send_all::<O>(std::mem::take(&mut self.waiting));
            return;
        }
        self.dirty = false;
        let started = Instant::now();
        let sync = tokio::task::spawn_blocking(move || {
            let result = sync_wal(&wal);
            metrics::histogram!("events_runtime_wal_sync_seconds").record(started.elapsed().as_secs_f64());
            result
        });
        self.in_flight = Some((sync, std::mem::take(&mut self.waiting), started));
    }

    /// Waits for the running sync (pending forever when there is none).
    async fn synced(&mut self) -> ObjectResult<()> {
        let Some((sync, _, _)) = &mut self.in_flight else { return std::future::pending().await };
        match sync.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::new(ErrorCode::StorageError, format!("WAL sync failed: {e}"))),
            Err(e) => Err(ApiError::internal(format!("WAL sync task: {e}"))),
        }
    }

    /// Releases the answers of the running sync if it has ended, without
    /// waiting: a batch calls this between its requests, so that answers
    /// synced while a long request (a relay's large read) runs leave at once
    /// instead of after the whole batch.
    async fn release_if_synced(&mut self) -> ObjectResult<()> {
        match &self.in_flight {
            Some((sync, _, _)) if sync.is_finished() => {
                let result = self.synced().await;
                let released = self.release(result);
                if let Err(e) = &released {
                    // As after any failed sync: nothing waiting is acknowledged.
                    self.fail_all(e);
                }
                released
            }
            _ => Ok(()),
        }
    }

    /// Releases the answers of the sync that ended with `result` and starts
    /// the next one. A failed sync answers its requests with the error.
    fn release(&mut self, result: ObjectResult<()>) -> ObjectResult<()> {
        let (_, replies, started) = self.in_flight.take().expect("release follows a sync");
        match result {
            Ok(()) => {
                // The sync's own time plus the executor's wait to see it end.
                metrics::histogram!("events_runtime_wal_sync_release_seconds").record(started.elapsed().as_secs_f64());
                self.host.0.counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("events_runtime_wal_syncs_total", "class" => O::CLASS).increment(1);
                metrics::histogram!("events_runtime_synced_requests", "class" => O::CLASS).record(replies.len() as f64);
                send_all::<O>(replies);
                self.start();
                Ok(())
            }
            Err(e) => {
                for (reply, _) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// After a failed sync: what the disk holds is unknown, so every waiting
    /// answer becomes the error (the requests are not acknowledged).
    fn fail_all(&mut self, e: &ApiError) {
        for (reply, _) in self.waiting.drain(..) {
            let _ = reply.send(Err(e.clone()));
        }
        self.dirty = false;
    }

    /// Syncs and releases everything before the instance stops.
    async fn drain(&mut self) {
        if self.in_flight.is_none() {
            self.start();
        }
        while self.in_flight.is_some() {
            let result = self.synced().await;
            if let Err(e) = self.release(result) {
                tracing::error!(class = O::CLASS, error = %e, "WAL sync failed while stopping");
                self.fail_all(&e);
            }
        }
    }
}

fn send_all<O: DurableObject>(replies: Vec<Reply<O>>) {
    for (reply, result) in replies {
        let _ = reply.send(result);
    }
}

/// Opens the database, applies migrations and loads the object.
async fn activate<O: DurableObject>(
    host: &NativeHost,
    key: &ObjectKey,
) -> ObjectResult<(ObjectContext<NativeHost>, O)> {
    let path = host.object_path(O::CLASS, &key.1);
    let now = host.config().clock.now();
    let class = O::CLASS;
    // The index learns of an object before its file exists, durably so when
    // the file is new, and again on every activation: a crash between the
    // two would otherwise hide an object, and its acknowledged writes, from
    // every enumeration (reads of writer shards, flushes) for good.
    let new = !path.exists();
    host.0.index.record_object(key, now, new)?;
    let conn = tokio::task::spawn_blocking(move || -> ObjectResult<_> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ApiError::new(ErrorCode::StorageError, format!("{e}")))?;
        }
        let conn = open_connection(&path).map_err(storage_error)?;
        let storage = SqliteStorage::new(conn);
        events_runtime::migrate::apply(&storage, class, O::migrations(), now.as_millis())?;
        let conn = storage.take();
        set_durability(&conn, O::DURABILITY).map_err(storage_error)?;
        if let Some(kib) = O::STORAGE_CACHE_KIB {
            conn.execute_batch(&format!("PRAGMA cache_size = -{kib}")).map_err(storage_error)?;
        }
        Ok(conn)
    })
    .await
    .map_err(|e| ApiError::internal(format!("activation task: {e}")))??;
    let storage = SqliteStorage::new(conn);
    let cx = ObjectContext::new(key.1.clone(), storage.clone(), host.clone());
    storage.begin()?;
    let loaded = AssertUnwindSafe(O::load(&cx)).catch_unwind().await;
    let object = match loaded {
        Ok(Ok(object)) => object,
        Ok(Err(e)) => {
            storage.raw("ROLLBACK")?;
            return Err(e);
        }
        Err(_) => {
            storage.raw("ROLLBACK")?;
            return Err(ApiError::internal(format!("{class} {} panicked while loading", key.1)));
        }
    };
    // Loading answers nobody, so the next sync can carry its writes.
    commit(host, key, &storage).await?;
    if let Some((at, _)) = storage.alarm_row()? {
        host.0.scheduler.schedule(key.clone(), at);
    }
    Ok((cx, object))
}

/// Runs a batch in one transaction, each message in its own savepoint, then
/// commits once and hands the answers to the gate.
async fn process_batch<O: DurableObject>(
    host: &NativeHost,
    key: &ObjectKey,
    cx: &ObjectContext<NativeHost>,
    object: &mut O,
    batch: Vec<Envelope<O>>,
    gate: &mut SyncGate<O>,
) -> ObjectResult<()> {
    let storage = cx.storage();
    storage.begin()?;
    let mut replies: Vec<Reply<O>> = Vec::with_capacity(batch.len());
    let mut poisoned = None;
    for envelope in batch {
        gate.release_if_synced().await?;
        if let Some(e) = &poisoned {
            if let Envelope::Request { reply, .. } = envelope {
                replies.push((reply, Err(ApiError::clone(e))));
            }
            continue;
        }
        match envelope {
            Envelope::Request { req, reply } => {
                storage.raw("SAVEPOINT request")?;
                let outcome = AssertUnwindSafe(object.handle(cx, req)).catch_unwind().await;
                host.0.counters.requests.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Ok(Ok(response)) => {
                        storage.raw("RELEASE request")?;
                        replies.push((reply, Ok(response)));
                    }
                    Ok(Err(e)) => {
                        storage.raw("ROLLBACK TO request; RELEASE request")?;
                        replies.push((reply, Err(e)));
                    }
                    Err(_) => {
                        storage.raw("ROLLBACK TO request; RELEASE request")?;
                        let e = ApiError::internal(format!("{} {} panicked", O::CLASS, key.1));
                        replies.push((reply, Err(e.clone())));
                        poisoned = Some(e);
                    }
                }
            }
            Envelope::Alarm => run_alarm(host, key, cx, object).await?,
        }
    }
    let size = replies.len();
    // While the commit runs on the blocking pool, answers of the sync in
    // flight (which covers only earlier commits) may leave.
    let committing = commit(host, key, storage);
    tokio::pin!(committing);
    let committed = loop {
        tokio::select! {
            biased;
            done = &mut committing => break done,
            synced = gate.synced(), if gate.syncing() => {
                if let Err(e) = gate.release(synced) {
                    gate.fail_all(&e);
                    return Err(e);
                }
            }
        }
    };
    match committed {
        Ok(wrote) => {
            metrics::histogram!("events_runtime_batch_requests", "class" => O::CLASS).record(size as f64);
            gate.submit(replies, wrote);
        }
        Err(e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return Err(e);
        }
    }
    match poisoned {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs the alarm handler if the stored alarm is due.
async fn run_alarm<O: DurableObject>(
    host: &NativeHost,
    key: &ObjectKey,
    cx: &ObjectContext<NativeHost>,
    object: &mut O,
) -> ObjectResult<()> {
    let storage = cx.storage();
    let now = host.config().clock.now();
    let (due_at, retries) = match storage.alarm_row()? {
        Some((at, retries)) if at <= now => (at, retries),
        Some((at, _)) => {
            host.0.scheduler.schedule(key.clone(), at);
            return Ok(());
        }
        None => {
            // A stale index entry woke us: make the commit remove it.
            storage.clear_alarm()?;
            storage.mark_index_stale();
            return Ok(());
        }
    };
    storage.raw("SAVEPOINT alarm")?;
    storage.clear_alarm()?;
    let outcome = AssertUnwindSafe(object.alarm(cx)).catch_unwind().await;
    host.0.counters.alarm_runs.fetch_add(1, Ordering::Relaxed);
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("alarm handler panicked".to_string()),
    };
    match failure {
        None => {
            storage.raw("RELEASE alarm")?;
            metrics::counter!("events_runtime_alarm_runs_total", "class" => O::CLASS, "outcome" => "ok").increment(1);
        }
        Some(error) => {
            storage.raw("ROLLBACK TO alarm; RELEASE alarm")?;
            if retries < ALARM_MAX_RETRIES {
                let delay = ALARM_RETRY_BASE_MS << retries;
                tracing::warn!(class = O::CLASS, name = %key.1, %error, retry = retries + 1, delay_ms = delay, "alarm failed; retrying");
                storage.set_alarm_retry(now.add_millis(delay), retries + 1)?;
                metrics::counter!("events_runtime_alarm_runs_total", "class" => O::CLASS, "outcome" => "retry")
                    .increment(1);
            } else {
                tracing::error!(class = O::CLASS, name = %key.1, %error, scheduled = %due_at, "alarm failed after all retries; dropped");
                storage.clear_alarm()?;
                metrics::counter!("events_runtime_alarm_runs_total", "class" => O::CLASS, "outcome" => "dropped")
                    .increment(1);
            }
        }
    }
    Ok(())
}

/// Commits the open transaction (to the WAL; [`SyncGate`] makes it durable),
/// keeping the alarm index in step. Answers whether the commit wrote.
async fn commit(host: &NativeHost, key: &ObjectKey, storage: &SqliteStorage) -> ObjectResult<bool> {
    let alarm_changed = storage.take_alarm_changed();
    let alarm = if alarm_changed { storage.alarm_row()?.map(|(at, _)| at) } else { None };
    if !alarm_changed && !storage.wrote_since_begin() {
        // Nothing to make durable: a read-only commit writes no WAL frame.
        storage.raw("COMMIT")?;
        return Ok(false);
    }
    // The index only has to hold a time at or before the alarm (alarms.rs):
    // write it when it holds nothing known or something later.
    let index_write = alarm.filter(|at| storage.indexed_alarm().is_none_or(|i| *at < i));
    // A stale entry is removed only when a wake-up found nothing to run.
    let index_delete = alarm.is_none() && storage.take_index_stale();
    let started = Instant::now();
    let conn = storage.take();
    let host2 = host.clone();
    let key2 = key.clone();
    let (returned, result) = tokio::task::spawn_blocking(move || {
        let result = (|| {
            if let Some(at) = index_write {
                host2.0.index.upsert_alarm(&key2, at)?; // intent first (alarms.rs)
            }
            conn.execute_batch("COMMIT").map_err(storage_error)?;
            if index_delete {
                host2.0.index.delete_alarm(&key2)?;
            }
            Ok(())
        })();
        if result.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        (conn, result)
    })
    .await
    .map_err(|e| ApiError::internal(format!("commit task: {e}")))?;
    storage.restore(returned);
    result?;
    if let Some(at) = index_write {
        storage.set_indexed_alarm(Some(at));
    }
    if index_delete {
        storage.set_indexed_alarm(None);
    }
    host.0.counters.commits.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("events_runtime_commits_total", "class" => key.0).increment(1);
    metrics::histogram!("events_runtime_commit_seconds").record(started.elapsed().as_secs_f64());
    if alarm_changed {
        match alarm {
            Some(at) => host.0.scheduler.schedule(key.clone(), at),
            None => host.0.scheduler.cancel(key),
        }
    }
    Ok(true)
}

/// Leaves the live table and answers whatever is still queued.
fn leave<O: DurableObject>(
    host: &NativeHost,
    key: &ObjectKey,
    generation: u64,
    rx: &mut mpsc::Receiver<Envelope<O>>,
    error: Option<ApiError>,
) {
    host.0.registry.remove_if(key, generation, || true);
    rx.close();
    let error = error.unwrap_or_else(|| ApiError::new(ErrorCode::ServiceUnavailable, "object restarted; retry"));
    while let Ok(envelope) = rx.try_recv() {
        if let Envelope::Request { reply, .. } = envelope {
            let _ = reply.send(Err(error.clone()));
        }
    }
    let live = host.0.registry.dec_live();
    metrics::gauge!("events_runtime_live_objects").set(live as f64);
    host.0.stopped.notify_waiters();
}
