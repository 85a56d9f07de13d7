//! [`NativeHost`]: starts executors, routes calls to objects, runs alarms.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use events_core::{ApiError, ErrorCode, Timestamp};
use events_runtime::context::Host;
use events_runtime::{DurableObject, ObjectResult, Placement};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::alarms::{AlarmScheduler, HostIndex};
use crate::blobs::ObjectStoreBlobs;
use crate::config::{CALL_TIMEOUT_MS, HostConfig, MAILBOX_CAPACITY, MAX_OBJECT_NAME_BYTES};
use crate::http::ReqwestHttp;
use crate::instance::{self, Envelope};
use crate::registry::{Control, Entry, ObjectKey, Registry, Signal};

type Job = Box<dyn FnOnce() + Send>;

/// Type-erased operations on a registered class.
trait ClassOps: Send + Sync {
    fn fire_alarm(&self, host: &NativeHost, name: &str) -> ObjectResult<()>;
}

struct ClassHandle<O>(std::marker::PhantomData<fn() -> O>);

impl<O: DurableObject> ClassOps for ClassHandle<O> {
    fn fire_alarm(&self, host: &NativeHost, name: &str) -> ObjectResult<()> {
        host.dispatch::<O>(name, Envelope::Alarm)
    }
}

/// Counters describing the host, for metrics, tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Objects currently in memory.
    pub live_objects: usize,
    /// Activations since start (first use or wake from hibernation).
    pub activations: u64,
    /// Hibernations since start.
    pub hibernations: u64,
    /// Commits that wrote, since start.
    pub commits: u64,
    /// WAL syncs (`fdatasync`) since start: each makes every commit before
    /// it durable, so under load one covers many commits.
    pub wal_syncs: u64,
    /// Requests handled since start.
    pub requests: u64,
    /// Alarm handler runs since start.
    pub alarm_runs: u64,
    /// Alarms currently scheduled.
    pub pending_alarms: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) activations: AtomicU64,
    pub(crate) hibernations: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) wal_syncs: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) alarm_runs: AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) config: HostConfig,
    pub(crate) registry: Registry,
    pub(crate) index: HostIndex,
    pub(crate) scheduler: Arc<AlarmScheduler>,
    pub(crate) counters: Counters,
    executors: Vec<mpsc::UnboundedSender<Job>>,
    classes: RwLock<HashMap<&'static str, Arc<dyn ClassOps>>>,
    blobs: ObjectStoreBlobs,
    http: ReqwestHttp,
    shutting_down: AtomicBool,
    pub(crate) stopped: Notify,
    /// The data-directory lock, released at the end of shutdown.
    lock: std::sync::Mutex<Option<File>>,
}

/// The native host. Cheap to clone; all clones share one set of objects.
#[derive(Clone)]
pub struct NativeHost(pub(crate) Arc<Inner>);

impl NativeHost {
    /// Opens the data directory (taking an exclusive lock on it), starts the
    /// executor threads and the alarm scheduler, and schedules every alarm
    /// recorded before the last stop. Must be called inside a tokio runtime.
    ///
    /// Register every object class with [`NativeHost::register`] right
    /// after; alarms of a class fire once it is registered.
    pub fn start(config: HostConfig) -> ObjectResult<NativeHost> {
        let io = |what: &str, e: std::io::Error| ApiError::new(ErrorCode::StorageError, format!("{what}: {e}"));
        std::fs::create_dir_all(config.data_dir.join("objects")).map_err(|e| io("create data directory", e))?;
        let lock = File::create(config.data_dir.join("LOCK")).map_err(|e| io("create lock file", e))?;
        lock.try_lock().map_err(|_| {
            ApiError::new(
                ErrorCode::StorageError,
                format!("data directory {} is in use by another process", config.data_dir.display()),
            )
        })?;
        let config = cap_live_objects(config);
        let index = HostIndex::open(&config.data_dir.join("host.sqlite"))?;
        let blobs = ObjectStoreBlobs::from_config(&config)?;
        let http = ReqwestHttp::new(config.outbound.clone())?;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.threads
        };
        let executors =
            (0..threads).map(|i| spawn_executor(i, threads >= 2 && i >= threads / 2)).collect::<Result<Vec<_>, _>>()?;
        let host = NativeHost(Arc::new(Inner {
            config,
            registry: Registry::new(),
            index,
            scheduler: Arc::new(AlarmScheduler::default()),
            counters: Counters::default(),
            executors,
            classes: RwLock::new(HashMap::new()),
            blobs,
            http,
            shutting_down: AtomicBool::new(false),
            stopped: Notify::new(),
            lock: std::sync::Mutex::new(Some(lock)),
        }));
        tokio::spawn(run_scheduler(Arc::downgrade(&host.0), host.0.scheduler.clone()));
        Ok(host)
    }

    /// Makes class `O` known to the host (needed for its alarms to fire after a restart).
    pub fn register<O: DurableObject>(&self) -> &Self {
        let class = O::CLASS;
        self.0
            .classes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(class, Arc::new(ClassHandle::<O>(Default::default())));
        // Alarms of this class recorded before the last stop (or passed over
        // while the class was unknown) are scheduled now.
        match self.0.index.alarms() {
            Ok(alarms) => {
                for (_, name, at) in alarms.into_iter().filter(|(c, _, _)| c == class) {
                    self.0.scheduler.schedule((class, name), at);
                }
            }
            Err(e) => tracing::error!(class, error = %e, "cannot read the alarm index"),
        }
        self
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &HostConfig {
        &self.0.config
    }

    /// Sends `req` to object `O` called `name` and waits for its durable answer.
    pub async fn call_object<O: DurableObject>(&self, name: &str, req: O::Request) -> ObjectResult<O::Response> {
        if name.is_empty() || name.len() > MAX_OBJECT_NAME_BYTES {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "object names are 1-256 bytes"));
        }
        let (reply, answer) = oneshot::channel();
        let started = Instant::now();
        self.dispatch::<O>(name, Envelope::Request { req, reply })?;
        match tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), answer).await {
            Ok(Ok(result)) => {
                // Mailbox wait, the batch's run and commit, and the wait for its WAL sync.
                metrics::histogram!("events_runtime_call_seconds", "class" => O::CLASS)
                    .record(started.elapsed().as_secs_f64());
                result
            }
            Ok(Err(_)) => Err(ApiError::new(ErrorCode::ServiceUnavailable, "the object stopped before answering")),
            Err(_) => Err(ApiError::new(ErrorCode::Timeout, format!("{} {name} did not answer in time", O::CLASS))),
        }
    }

    /// Enqueues `envelope` for object `O` called `name`, activating it if needed.
    pub(crate) fn dispatch<O: DurableObject>(&self, name: &str, envelope: Envelope<O>) -> ObjectResult<()> {
        let registry = &self.0.registry;
        let key: ObjectKey = (O::CLASS, name.to_string());
        let mut shard = registry.lock(O::CLASS, name);
        if let Some(entry) = shard.get(&key) {
            let sender = entry.sender.downcast_ref::<mpsc::Sender<Envelope<O>>>().unwrap_or_else(|| {
                panic!("two object types share the class name {}", O::CLASS);
            });
            return match sender.try_send(envelope) {
                Ok(()) => {
                    entry.last_used.store(registry.next_tick(), Ordering::Relaxed);
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("events_runtime_overloaded_total", "class" => O::CLASS).increment(1);
                    Err(ApiError::new(
                        ErrorCode::Overloaded,
                        format!("{} {name} has {MAILBOX_CAPACITY} requests queued; retry later", O::CLASS),
                    ))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // Invariant (registry.rs): a closed instance has left the table.
                    unreachable!("{} {name}: closed instance still registered", O::CLASS)
                }
            };
        }
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(ErrorCode::ServiceUnavailable, "the server is shutting down"));
        }
        let (tx, rx) = mpsc::channel::<Envelope<O>>(MAILBOX_CAPACITY);
        tx.try_send(envelope).map_err(|_| ApiError::internal("fresh mailbox refused a message"))?;
        let control = Arc::new(Control::default());
        let generation = registry.next_generation();
        shard.insert(
            key.clone(),
            Entry {
                sender: Box::new(tx),
                control: control.clone(),
                generation,
                last_used: AtomicU64::new(registry.next_tick()),
            },
        );
        drop(shard);
        let live = registry.inc_live();
        metrics::gauge!("events_runtime_live_objects").set(live as f64);
        let executor = &self.0.executors[executor_for(O::PLACEMENT, generation, self.0.executors.len())];
        let host = self.clone();
        let job: Job = Box::new(move || {
            tokio::task::spawn_local(instance::run::<O>(host, key.1, generation, rx, control));
        });
        executor.send(job).map_err(|_| ApiError::new(ErrorCode::ServiceUnavailable, "executors stopped"))?;
        registry.shed(self.0.config.max_live_objects, &(O::CLASS, name.to_string()));
        Ok(())
    }

    /// Path of an object's database file.
    pub(crate) fn object_path(&self, class: &str, name: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(name.as_bytes()));
        self.0.config.data_dir.join("objects").join(class).join(&digest[..2]).join(format!("{}.sqlite", &digest[..40]))
    }

    /// Names of every object of class `O` ever created on this data directory.
    pub fn object_names<O: DurableObject>(&self) -> ObjectResult<Vec<String>> {
        self.0.index.objects(O::CLASS)
    }

    /// Current counters.
    pub fn stats(&self) -> HostStats {
        let c = &self.0.counters;
        HostStats {
            live_objects: self.0.registry.live(),
            activations: c.activations.load(Ordering::Relaxed),
            hibernations: c.hibernations.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            wal_syncs: c.wal_syncs.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            alarm_runs: c.alarm_runs.load(Ordering::Relaxed),
            pending_alarms: self.0.scheduler.len(),
        }
    }

    /// Asks every idle live object to hibernate now (tests, benchmarks).
    pub fn hibernate_all(&self) {
        self.0.registry.signal_all(Signal::Hibernate);
    }

    /// Stops taking new work, lets every live object finish and commit what
    /// it has queued, and waits until all have stopped.
    pub async fn shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
        loop {
            let stopped = self.0.stopped.notified();
            if self.0.registry.live() == 0 {
                break;
            }
            self.0.registry.signal_all(Signal::Shutdown);
            let _ = tokio::time::timeout(Duration::from_millis(100), stopped).await;
        }
        // Every instance has made its last commit: another host may open the directory.
        self.0.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        tracing::info!("object host stopped");
    }

    /// Whether [`NativeHost::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::SeqCst)
    }

    fn fire_alarm(&self, key: &ObjectKey) -> ObjectResult<bool> {
        let ops = self.0.classes.read().unwrap_or_else(|p| p.into_inner()).get(key.0).cloned();
        match ops {
            Some(ops) => ops.fire_alarm(self, &key.1).map(|()| true),
            None => Ok(false),
        }
    }

    pub(crate) fn blobs_ref(&self) -> &ObjectStoreBlobs {
        &self.0.blobs
    }
}

impl Host for NativeHost {
    type Storage = crate::storage::SqliteStorage;
    type Blobs = ObjectStoreBlobs;
    type Http = ReqwestHttp;

    fn now(&self) -> Timestamp {
        self.0.config.clock.now()
    }

    fn random(&self) -> u128 {
        rand::random()
    }

    fn var(&self, key: &str) -> Option<String> {
        self.0.config.vars.get(key).cloned()
    }

    fn blobs(&self) -> &ObjectStoreBlobs {
        self.blobs_ref()
    }

    fn http(&self) -> &ReqwestHttp {
        &self.0.http
    }

    async fn call<O: DurableObject>(&self, name: &str, req: O::Request) -> ObjectResult<O::Response> {
        self.call_object::<O>(name, req).await
    }

    fn notify<O: DurableObject>(&self, name: &str, req: O::Request) {
        // The answer is dropped unread: the request still runs and commits.
        let (reply, _) = oneshot::channel();
        if let Err(e) = self.dispatch::<O>(name, Envelope::Request { req, reply }) {
            tracing::debug!(class = O::CLASS, %name, error = %e, "notification not queued");
        }
    }
}

/// File descriptors each live object holds (database and WAL).
const FDS_PER_LIVE_OBJECT: u64 = 2;
/// File descriptors kept for the lake, the host index, outbound HTTP and
/// everything else but client sockets, whatever clients do.
const FDS_RESERVED: u64 = 2_048;
/// Fewest descriptors granted to client sockets when the limit is short.
const MIN_CLIENT_FDS: u64 = 64;

/// Raises the open-file limit as far as allowed, then splits it: first
/// [`FDS_RESERVED`], then client sockets (`client_fds`, at most half of what
/// is left when the limit is short), then live objects, whose bound is lowered
/// to fit. `client_fds` becomes the share granted.
fn cap_live_objects(mut config: HostConfig) -> HostConfig {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return config;
        }
        let wanted: libc::rlim_t =
            config.max_live_objects as u64 * FDS_PER_LIVE_OBJECT + FDS_RESERVED + config.client_fds;
        if wanted > limit.rlim_max {
            // Raising the hard limit needs privileges; fine if refused.
            let raised = libc::rlimit { rlim_cur: wanted, rlim_max: wanted };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        if limit.rlim_cur < limit.rlim_max.min(wanted) {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max.min(wanted), rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let (objects, clients) = split_fds(limit.rlim_cur, config.max_live_objects as u64, config.client_fds);
    if clients < config.client_fds {
        tracing::warn!(wanted = config.client_fds, granted = clients, "open-file limit caps client sockets");
    }
    if objects < config.max_live_objects as u64 {
        tracing::warn!(configured = config.max_live_objects, fit = objects, "open-file limit caps live objects");
    }
    config.client_fds = clients;
    config.max_live_objects = objects as usize;
    config
}

/// `(live objects, client descriptors)` that fit in an open-file limit of `limit`.
fn split_fds(limit: u64, objects: u64, clients: u64) -> (u64, u64) {
    let available = limit.saturating_sub(FDS_RESERVED);
    let room = available.saturating_sub(objects * FDS_PER_LIVE_OBJECT).max(available / 2).max(MIN_CLIENT_FDS);
    let clients = clients.min(room);
    let fit = (available.saturating_sub(clients) / FDS_PER_LIVE_OBJECT).max(16);
    (objects.min(fit), clients)
}

/// The nice value of executors that run [`Placement::Background`] objects
/// (the outbox relays, CDC processors, the catalog): when the CPU is short,
/// appends and the request path go first, and the consumers' backlog grows
/// in the outbox (bounded there) until there is CPU to spare.
pub const BACKGROUND_EXECUTOR_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_EXECUTOR_NICE`]
/// (Linux: nice values are per thread). Best effort: a failure leaves the
/// thread at normal priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread, with no pointers.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_EXECUTOR_NICE)
        };
        if result != 0 {
            tracing::warn!(
                "could not lower the priority of a background executor: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Starts executor thread `i`; a `background` one runs at a lower priority.
fn spawn_executor(i: usize, background: bool) -> ObjectResult<mpsc::UnboundedSender<Job>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ApiError::internal(format!("executor runtime: {e}")))?;
    std::thread::Builder::new()
        .name(format!("objects-{i}"))
        .spawn(move || {
            if background {
                lower_this_threads_priority();
            }
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                while let Some(job) = rx.recv().await {
                    job();
                }
            });
            // Let instances that are still winding down finish.
            runtime.block_on(local);
        })
        .map_err(|e| ApiError::internal(format!("executor thread: {e}")))?;
    Ok(tx)
}

async fn run_scheduler(host: std::sync::Weak<Inner>, scheduler: Arc<AlarmScheduler>) {
    loop {
        let notified = scheduler.notify.notified();
        let wait_ms = {
            // Hold the host only while firing, so dropping it ends this task.
            let Some(inner) = host.upgrade() else { return };
            let host = NativeHost(inner);
            let now = host.now();
            let (due, next) = scheduler.take_due(now);
            for key in due {
                match host.fire_alarm(&key) {
                    Ok(true) => {}
                    // Class not registered yet: `register` schedules its alarms again.
                    Ok(false) => {}
                    // The object is overloaded or the host stopping: try again shortly.
                    Err(_) => scheduler.schedule(key, now.add_millis(1_000)),
                }
            }
            let poll_ms = if host.0.config.clock.is_real() { 60_000 } else { 10 };
            next.map_or(poll_ms, |t| (t.as_millis() - now.as_millis()).clamp(0, poll_ms as i64) as u64)
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            _ = notified => {}
        }
    }
}

#[cfg(test)]
mod fd_tests {
    use super::*;

    #[test]
    fn a_large_limit_holds_everything() {
        assert_eq!(split_fds(100_000, 10_000, 4_096), (10_000, 4_096));
    }

    #[test]
    fn a_short_limit_gives_clients_at_most_half_of_what_the_reserve_leaves() {
        // 4096 - 2048 = 2048 left: clients 1024, objects (2048 - 1024) / 2.
        assert_eq!(split_fds(4_096, 10_000, 4_096), (512, 1_024));
        // Few objects leave clients the rest.
        assert_eq!(split_fds(12_048, 100, 10_000), (100, 9_800));
    }

    #[test]
    fn a_tiny_limit_keeps_the_floors() {
        assert_eq!(split_fds(1_024, 10_000, 4_096), (16, MIN_CLIENT_FDS));
    }
}

/// The executor of a new instance: with two or more executors, the lower
/// half runs [`Placement::Latency`] objects and the upper half
/// [`Placement::Background`] ones, so a Parquet encode never queues in front
/// of an append; [`Placement::Any`] objects go round robin over all.
fn executor_for(placement: Placement, generation: u64, executors: usize) -> usize {
    assert!(executors > 0, "a host has at least one executor");
    let low = executors / 2;
    let (start, count) = match placement {
        _ if executors == 1 => (0, 1),
        Placement::Any => (0, executors),
        Placement::Latency => (0, low),
        Placement::Background => (low, executors - low),
    };
    start + generation as usize % count
}

#[cfg(test)]
mod placement_tests {
    use super::*;

    #[test]
    fn latency_and_background_objects_never_share_an_executor() {
        for executors in 2..=8 {
            for generation in 0..32 {
                let latency = executor_for(Placement::Latency, generation, executors);
                let background = executor_for(Placement::Background, generation, executors);
                assert!(latency < executors / 2 && background >= executors / 2 && background < executors);
                assert!(executor_for(Placement::Any, generation, executors) < executors);
            }
        }
        assert_eq!(executor_for(Placement::Background, 7, 1), 0, "one executor runs everything");
    }
}
