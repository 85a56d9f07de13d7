//! The live-object table: at most one live instance per (class, name).
//!
//! Invariant: messages reach an instance only through its entry here, and
//! are enqueued while the entry's shard lock is held. An instance leaves the
//! table, under the same lock, only when its queue is empty. So no message
//! is ever enqueued for an instance that has left, and a new instance for
//! the same object can only start after the old one has stopped taking work.

use std::any::Any;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// (class, name) of an object.
pub(crate) type ObjectKey = (&'static str, String);

const SHARDS: usize = 32;

/// Signals from the host to a live instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Signal {
    None = 0,
    /// Leave memory if idle (LRU pressure).
    Hibernate = 1,
    /// Finish queued work and stop (host shutdown).
    Shutdown = 2,
}

/// The host's handle on a live instance's control state.
#[derive(Default)]
pub(crate) struct Control {
    signal: AtomicU8,
    pub(crate) notify: Notify,
}

impl Control {
    pub(crate) fn send(&self, signal: Signal) {
        // Shutdown is never downgraded to Hibernate.
        self.signal.fetch_max(signal as u8, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub(crate) fn take(&self) -> Signal {
        match self.signal.load(Ordering::SeqCst) {
            2 => Signal::Shutdown,
            1 => {
                self.signal.store(0, Ordering::SeqCst);
                Signal::Hibernate
            }
            _ => Signal::None,
        }
    }
}

/// One live instance.
pub(crate) struct Entry {
    /// `tokio::sync::mpsc::Sender<Envelope<O>>` of the instance's class.
    pub(crate) sender: Box<dyn Any + Send + Sync>,
    pub(crate) control: Arc<Control>,
    pub(crate) generation: u64,
    pub(crate) last_used: AtomicU64,
}

/// Sharded map of live instances.
pub(crate) struct Registry {
    shards: Vec<Mutex<HashMap<ObjectKey, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
    live: AtomicUsize,
    tick: AtomicU64,
    generation: AtomicU64,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            live: AtomicUsize::new(0),
            tick: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, class: &str, name: &str) -> usize {
        let mut h = self.hasher.build_hasher();
        class.hash(&mut h);
        name.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }

    /// Locks the shard holding `(class, name)`.
    pub(crate) fn lock(&self, class: &str, name: &str) -> MutexGuard<'_, HashMap<ObjectKey, Entry>> {
        self.shards[self.shard_of(class, name)].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub(crate) fn inc_live(&self) -> usize {
        self.live.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn dec_live(&self) -> usize {
        let before = self.live.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "live-object count underflow");
        before - 1
    }

    /// Removes the entry of `key` if it is still `generation` and `idle()` holds.
    pub(crate) fn remove_if(&self, key: &ObjectKey, generation: u64, idle: impl FnOnce() -> bool) -> bool {
        let mut shard = self.lock(key.0, &key.1);
        match shard.get(key) {
            Some(e) if e.generation == generation && idle() => {
                shard.remove(key);
                true
            }
            Some(e) if e.generation == generation => false,
            // Already gone (or replaced): nothing more can reach this instance.
            _ => true,
        }
    }

    /// Asks the least recently used instances (other than `keep`) to hibernate
    /// until at most `max_live` would remain.
    pub(crate) fn shed(&self, max_live: usize, keep: &ObjectKey) {
        let live = self.live();
        if live <= max_live {
            return;
        }
        let excess = live - max_live;
        let mut candidates: Vec<(u64, Arc<Control>)> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (key, e) in shard.iter() {
                if key != keep {
                    candidates.push((e.last_used.load(Ordering::Relaxed), e.control.clone()));
                }
            }
        }
        candidates.sort_unstable_by_key(|(t, _)| *t);
        for (_, control) in candidates.into_iter().take(excess) {
            control.send(Signal::Hibernate);
        }
    }

    /// Signals every live instance.
    pub(crate) fn signal_all(&self, signal: Signal) {
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for e in shard.values() {
                e.control.send(signal);
            }
        }
    }
}
