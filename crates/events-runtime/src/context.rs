//! The environment an object runs in: its storage, alarm, stubs and the host.

use std::future::Future;
use std::marker::PhantomData;

use crate::blob::BlobStore;
use crate::http::HttpClient;
use crate::object::DurableObject;
use crate::sql::SqlStorage;
use crate::{ObjectResult, Timestamp};

/// An object's storage as the host provides it: SQL plus the one alarm.
/// The alarm is stored with the object's state, so setting it is part of the
/// current request's transaction.
pub trait ObjectStorage: SqlStorage {
    /// When the alarm is set to fire, if it is set.
    fn get_alarm(&self) -> impl Future<Output = ObjectResult<Option<Timestamp>>>;
    /// Sets the alarm, replacing any earlier setting. A time in the past fires as soon as possible.
    fn set_alarm(&self, at: Timestamp) -> impl Future<Output = ObjectResult<()>>;
    /// Clears the alarm.
    fn delete_alarm(&self) -> impl Future<Output = ObjectResult<()>>;
}

/// A host: the machinery that runs objects (native tokio + SQLite, or Cloudflare).
///
/// Object logic is generic over `H: Host` and touches nothing else.
pub trait Host: Clone + 'static {
    /// Per-object storage.
    type Storage: ObjectStorage;
    /// Object storage for the lakehouse.
    type Blobs: BlobStore;
    /// Outbound HTTP.
    type Http: HttpClient;

    /// The current time. Tests may run a host on a simulated clock.
    fn now(&self) -> Timestamp;
    /// 128 random bits.
    fn random(&self) -> u128;
    /// A configuration variable (as Cloudflare's `env.var`).
    fn var(&self, key: &str) -> Option<String>;
    /// The lakehouse bucket.
    fn blobs(&self) -> &Self::Blobs;
    /// The outbound HTTP client.
    fn http(&self) -> &Self::Http;
    /// Sends `req` to the object `O` named `name`, activating it if needed,
    /// and waits for its answer.
    fn call<O: DurableObject>(&self, name: &str, req: O::Request) -> impl Future<Output = ObjectResult<O::Response>>;
    /// Sends `req` to the object `O` named `name` without waiting for it to
    /// run or answer: best effort, for wake-ups that must never make the
    /// sender wait on the receiver (a busy receiver queues it; a full
    /// mailbox or a crash loses it, so a sender relies on a backstop too).
    fn notify<O: DurableObject>(&self, name: &str, req: O::Request);
}

/// Everything an object instance can reach while it handles a request.
pub struct ObjectContext<H: Host> {
    name: String,
    storage: H::Storage,
    host: H,
}

impl<H: Host> ObjectContext<H> {
    /// Built by the host when it activates an instance.
    pub fn new(name: String, storage: H::Storage, host: H) -> Self {
        ObjectContext { name, storage, host }
    }

    /// This object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This object's SQL storage and alarm.
    pub fn storage(&self) -> &H::Storage {
        &self.storage
    }

    /// The key/value view of this object's storage.
    pub fn kv(&self) -> crate::kv::Kv<'_, H::Storage> {
        crate::kv::Kv(&self.storage)
    }

    /// The host (clock, blobs, HTTP, variables, other objects).
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.host.now()
    }

    /// A fresh ULID for the current time.
    pub fn ulid(&self) -> String {
        events_core::id::ulid_string(self.host.now(), self.host.random())
    }

    /// A typed handle on another object.
    pub fn stub<O: DurableObject>(&self, name: impl Into<String>) -> Stub<H, O> {
        Namespace::new(self.host.clone()).get(name)
    }
}

/// All objects of one class, as seen from a host.
pub struct Namespace<H: Host, O: DurableObject> {
    host: H,
    _class: PhantomData<fn() -> O>,
}

impl<H: Host, O: DurableObject> Namespace<H, O> {
    /// The namespace of class `O` on `host`.
    pub fn new(host: H) -> Self {
        Namespace { host, _class: PhantomData }
    }

    /// The stub of the object called `name` (activated on first call).
    pub fn get(&self, name: impl Into<String>) -> Stub<H, O> {
        Stub { host: self.host.clone(), name: name.into(), _class: PhantomData }
    }
}

/// A typed handle on one object.
pub struct Stub<H: Host, O: DurableObject> {
    host: H,
    name: String,
    _class: PhantomData<fn() -> O>,
}

impl<H: Host, O: DurableObject> Stub<H, O> {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a request and waits for the answer, which is only released
    /// once the request's writes are durable.
    pub async fn call(&self, req: O::Request) -> ObjectResult<O::Response> {
        self.host.call::<O>(&self.name, req).await
    }

    /// Sends a request without waiting for it ([`Host::notify`]).
    pub fn notify(&self, req: O::Request) {
        self.host.notify::<O>(&self.name, req)
    }
}
