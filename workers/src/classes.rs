//! One Durable Object class per object kind, each a thin shell around the
//! unchanged object logic of `events-objects`.
//!
//! [`ObjectCell`] gives every class what the runtime promises objects:
//! - **one request at a time**: an async lock is held for the whole request
//!   (Cloudflare may otherwise interleave requests at `await` points);
//! - **the schema**: `events_runtime::migrate::apply` before `load`, as natively;
//! - **its name**: sent by the caller with each call and kept in storage, so an
//!   alarm that wakes the object after a restart knows who it is;
//! - **a failed request leaves no stale memory**: the instance is rebuilt from
//!   storage after an error;
//! - **alarm retries**: a failing alarm throws, and the platform retries it
//!   with exponential backoff.

use events_core::{ApiError, ErrorCode};
use events_runtime::{DurableObject, ObjectContext, ObjectResult, SqlStorage};
use futures::lock::Mutex;
use worker::{Env, Request, Response, State};

use crate::host::{CallReply, CfHost, CfStorage, OBJECT_NAME_HEADER};

/// The host's own table: the object's name, written on its first call.
const NAME_TABLE: &str = "CREATE TABLE IF NOT EXISTS _host_object (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL
)";

struct Live<O> {
    cx: ObjectContext<CfHost>,
    object: O,
}

/// The state of one Durable Object instance running the object `O`.
pub struct ObjectCell<O: DurableObject> {
    state: State,
    host: CfHost,
    live: Mutex<Option<Live<O>>>,
}

impl<O: DurableObject> ObjectCell<O> {
    /// Called by the platform's constructor; activation waits for the first request or alarm.
    pub fn new(state: State, env: Env) -> Self {
        ObjectCell { state, host: CfHost::new(env), live: Mutex::new(None) }
    }

    /// Migrates and loads the object if it is not live yet.
    async fn activate(&self, caller_name: Option<String>, slot: &mut Option<Live<O>>) -> ObjectResult<()> {
        if let Some(live) = slot.as_ref() {
            if let Some(name) = caller_name.as_deref() {
                assert_eq!(name, live.cx.name(), "{}: one Durable Object id serves one name", O::CLASS);
            }
            return Ok(());
        }
        let storage = CfStorage::new(&self.state);
        storage.execute_script(NAME_TABLE)?;
        let stored =
            storage.query_one("SELECT name FROM _host_object WHERE id = 1", &[])?.map(|r| r.str(0).to_string());
        let name = match (caller_name, stored) {
            (Some(given), Some(stored)) if given != stored => {
                return Err(ApiError::internal(format!(
                    "{}: this object is {stored:?}, but was called as {given:?}",
                    O::CLASS
                )));
            }
            (_, Some(stored)) => stored,
            (Some(given), None) => {
                storage.execute("INSERT INTO _host_object (id, name) VALUES (1, ?1)", &[given.as_str().into()])?;
                given
            }
            (None, None) => {
                return Err(ApiError::internal(format!("{}: woken by an alarm before its first call", O::CLASS)));
            }
        };
        let now = events_runtime::Host::now(&self.host).0;
        events_runtime::migrate::apply(&storage, O::CLASS, O::migrations(), now)?;
        let cx = ObjectContext::new(name, storage, self.host.clone());
        let object = O::load(&cx).await?;
        *slot = Some(Live { cx, object });
        Ok(())
    }

    async fn call(&self, name: Option<String>, body: &str) -> ObjectResult<O::Response> {
        let request: O::Request = serde_json::from_str(body)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("{}: undecodable request: {e}", O::CLASS)))?;
        let mut slot = self.live.lock().await;
        self.activate(name, &mut slot).await?;
        let live = slot.as_mut().expect("activated above");
        let result = live.object.handle(&live.cx, request).await;
        if result.is_err() {
            // Memory may be ahead of what storage kept: rebuild on the next call.
            *slot = None;
        }
        result
    }

    /// The `fetch` of the class: one object call, the message as JSON.
    pub async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let name = req.headers().get(OBJECT_NAME_HEADER)?;
        let body = req.text().await?;
        let reply = match self.call(name, &body).await {
            Ok(r) => CallReply::Ok(r),
            Err(e) => CallReply::Err(e),
        };
        Response::from_json(&reply)
    }

    /// The `alarm` of the class. An error makes the platform retry with backoff.
    pub async fn alarm(&self) -> worker::Result<Response> {
        let mut slot = self.live.lock().await;
        let outcome = async {
            self.activate(None, &mut slot).await?;
            let live = slot.as_mut().expect("activated above");
            live.object.alarm(&live.cx).await
        }
        .await;
        match outcome {
            Ok(()) => Response::empty(),
            Err(e) => {
                *slot = None;
                worker::console_error!("{} alarm failed: {e}", O::CLASS);
                Err(worker::Error::RustError(format!("{} alarm failed: {e}", O::CLASS)))
            }
        }
    }
}

/// Declares the Durable Object class `$class` running the object `$object`.
macro_rules! object_class {
    ($class:ident, $object:ty) => {
        #[doc = concat!("The Durable Object class of `", stringify!($object), "`.")]
        #[worker::durable_object]
        pub struct $class {
            cell: ObjectCell<$object>,
        }

        impl worker::DurableObject for $class {
            fn new(state: State, env: Env) -> Self {
                debug_assert_eq!(<$object as DurableObject>::CLASS, stringify!($class));
                $class { cell: ObjectCell::new(state, env) }
            }

            async fn fetch(&self, req: Request) -> worker::Result<Response> {
                self.cell.fetch(req).await
            }

            async fn alarm(&self) -> worker::Result<Response> {
                self.cell.alarm().await
            }
        }
    };
}

object_class!(EventWriter, events_objects::EventWriter);
object_class!(OutboxRelay, events_objects::OutboxRelay);
object_class!(Tenant, events_objects::Tenant);
object_class!(RateLimiter, events_objects::RateLimiter);
object_class!(ShardCoordinator, events_objects::ShardCoordinator);
object_class!(Subscriptions, events_objects::Subscriptions);
object_class!(SchemaRegistry, events_objects::SchemaRegistry);
object_class!(WebhookSecrets, events_objects::WebhookSecrets);
object_class!(Catalog, events_objects::Catalog);
object_class!(CdcProcessor, events_objects::CdcProcessor);
object_class!(CdcCollections, events_objects::CdcCollections);
object_class!(Directory, crate::directory::Directory);
