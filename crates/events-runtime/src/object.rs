//! What an object kind is.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ObjectResult;
use crate::context::{Host, ObjectContext};
use crate::migrate::Migration;

/// A typed message exchanged with an object. Natively it is moved through a
/// channel; across a network boundary (Cloudflare) it travels as JSON.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// How a class's commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is fsynced before its answer is released (the default).
    Fsync,
    /// Commits are ordered and atomic but not individually fsynced; a crash
    /// of the machine (not of the process) may lose the last moments. For
    /// soft state only, such as rate-limit counters.
    Relaxed,
}

/// Where a host with several threads should run a class's objects, so that
/// slow background work never queues in front of a latency-bound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Anywhere (the default).
    Any,
    /// Answers requests that someone waits on (the ingest append): keep
    /// away from background work.
    Latency,
    /// Long CPU-heavy runs nobody waits on (Parquet files, compaction).
    Background,
}

/// An object kind: a stable class name, a storage schema, and behaviour.
///
/// The host creates one instance per (class, name) by calling [`load`](Self::load)
/// when the object is first needed or woken from hibernation, then feeds it
/// requests and alarms one at a time. In-memory fields are a cache of what
/// is in storage: an instance may be dropped (hibernated) whenever it is idle,
/// and must rebuild itself from storage in `load`.
pub trait DurableObject: Sized + 'static {
    /// The class name, stable forever: it names the storage folder and the
    /// Cloudflare class.
    const CLASS: &'static str;
    /// Requests this object accepts.
    type Request: Message;
    /// Its answers.
    type Response: Message;
    /// How its commits reach the disk; hosts that always fsync may ignore this.
    const DURABILITY: Durability = Durability::Fsync;
    /// Most memory (KiB) the host gives this object's storage page cache,
    /// allocated as used; `None`: the host's default, sized for many live
    /// objects. For classes whose objects hold large tables. Hosts that size
    /// their own caches ignore it.
    const STORAGE_CACHE_KIB: Option<u32> = None;
    /// Where the host runs this class's objects; hosts with one thread per
    /// object (Cloudflare) ignore it.
    const PLACEMENT: Placement = Placement::Any;

    /// The storage schema, applied by the host before `load`.
    fn migrations() -> &'static [Migration];

    /// Builds the instance from its storage.
    fn load<H: Host>(cx: &ObjectContext<H>) -> impl Future<Output = ObjectResult<Self>>;

    /// Handles one request. If it returns an error, its storage writes are rolled back.
    fn handle<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        req: Self::Request,
    ) -> impl Future<Output = ObjectResult<Self::Response>>;

    /// Runs when the alarm fires. If it returns an error, its writes are
    /// rolled back and it is retried with backoff.
    fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> impl Future<Output = ObjectResult<()>> {
        let _ = cx;
        async { Ok(()) }
    }
}
