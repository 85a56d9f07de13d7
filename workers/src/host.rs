//! The Cloudflare implementation of the `events-runtime` traits.
//!
//! | runtime trait | Cloudflare API |
//! |---|---|
//! | [`SqlStorage`] | `ctx.storage.sql.exec` (synchronous), atomic groups via `ctx.storage.transactionSync` |
//! | [`ObjectStorage`] alarm | `ctx.storage.setAlarm` / `getAlarm` / `deleteAlarm` |
//! | [`Host::call`] | `env.<Class>.getByName(name).fetch(...)`, the message as JSON |
//! | [`BlobStore`] | the R2 binding [`LAKE_BUCKET`] |
//! | [`HttpClient`] | the Workers `fetch` (redirects not followed, bodies capped) |
//! | [`Host::now`] / [`Host::random`] | `Date.now()` / `crypto.getRandomValues` |
//!
//! Object logic sees none of this: it is the same code as on the native host.

use std::rc::Rc;

use events_core::outbound::{AddressPolicy, Cidr};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_runtime::{
    BlobMeta, BlobStore, DurableObject, Host, HttpClient, HttpRequest, HttpResponse, ObjectResult, ObjectStorage, Row,
    SqlStorage, SqlValue,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use worker::{Env, Headers, Method, RequestInit};

/// Name of the R2 binding that holds the lakehouse (same layout as the native lake folder).
pub const LAKE_BUCKET: &str = "LAKE";
/// Header carrying the target object's name on calls between objects.
pub const OBJECT_NAME_HEADER: &str = "x-events-object";
/// Largest response body an outbound request may return (the rest is cut).
pub const MAX_OUTBOUND_RESPONSE_BYTES: usize = 64 * 1024;
/// Binding listing address blocks (`127.0.0.0/8,::1`) that deliveries may reach although private.
pub const OUTBOUND_ALLOW_BINDING: &str = "OUTBOUND_ALLOW";
/// Largest integer that survives the trip through JavaScript numbers (2^53 - 1).
pub const JS_MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The answer of an object call as it crosses the Durable Object boundary.
#[derive(Serialize, Deserialize)]
pub enum CallReply<T> {
    /// The object's response.
    Ok(T),
    /// The object's error (its writes were not kept).
    Err(ApiError),
}

/// Maps any platform error to an internal `ApiError`.
pub fn platform(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("{what}: {e}"))
}

/// The host as one request (Worker or Durable Object) sees it.
#[derive(Clone)]
pub struct CfHost(Rc<Inner>);

struct Inner {
    env: Env,
    blobs: R2Blobs,
    http: FetchHttp,
}

impl CfHost {
    /// The host for `env` (the Worker's or a Durable Object's bindings).
    pub fn new(env: Env) -> CfHost {
        let bucket = env.bucket(LAKE_BUCKET).ok();
        let allow = env
            .var(OUTBOUND_ALLOW_BINDING)
            .map(|v| v.to_string())
            .unwrap_or_default()
            .split(',')
            .filter_map(|s| Cidr::parse(s.trim()))
            .collect();
        let policy = AddressPolicy::new(allow, OUTBOUND_ALLOW_BINDING);
        CfHost(Rc::new(Inner { env, blobs: R2Blobs { bucket }, http: FetchHttp { policy } }))
    }

    /// The bindings.
    pub fn env(&self) -> &Env {
        &self.0.env
    }
}

impl Host for CfHost {
    type Storage = CfStorage;
    type Blobs = R2Blobs;
    type Http = FetchHttp;

    fn now(&self) -> Timestamp {
        Timestamp(js_sys::Date::now() as i64)
    }

    fn random(&self) -> u128 {
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes);
        u128::from_le_bytes(bytes)
    }

    fn var(&self, key: &str) -> Option<String> {
        // Binding names cannot hold dots in every tool; `writer.flush_max_age_ms` is `WRITER_FLUSH_MAX_AGE_MS`.
        let name = key.replace('.', "_").to_ascii_uppercase();
        self.0.env.var(&name).ok().map(|v| v.to_string())
    }

    fn blobs(&self) -> &R2Blobs {
        &self.0.blobs
    }

    fn http(&self) -> &FetchHttp {
        &self.0.http
    }

    async fn call<O: DurableObject>(&self, name: &str, req: O::Request) -> ObjectResult<O::Response> {
        let namespace = self
            .0
            .env
            .durable_object(O::CLASS)
            .map_err(|e| platform(&format!("no Durable Object binding {}", O::CLASS), e))?;
        let stub = namespace.get_by_name(name).map_err(|e| platform("getByName", e))?;
        let body = serde_json::to_string(&req).map_err(|e| platform("encoding the request", e))?;
        let headers = Headers::new();
        headers.set(OBJECT_NAME_HEADER, name).map_err(|e| platform("header", e))?;
        headers.set("content-type", "application/json").map_err(|e| platform("header", e))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_headers(headers).with_body(Some(JsValue::from_str(&body)));
        let request =
            worker::Request::new_with_init("https://object/call", &init).map_err(|e| platform("request", e))?;
        let mut response = stub.fetch_with_request(request).await.map_err(|e| {
            ApiError::new(ErrorCode::ServiceUnavailable, format!("object {}/{name} did not answer: {e}", O::CLASS))
        })?;
        let text = response.text().await.map_err(|e| platform("reading the object's answer", e))?;
        match serde_json::from_str::<CallReply<O::Response>>(&text) {
            Ok(CallReply::Ok(r)) => Ok(r),
            Ok(CallReply::Err(e)) => Err(e),
            Err(e) => Err(platform(&format!("object {}/{name} answered out of protocol ({text:.200})", O::CLASS), e)),
        }
    }

    fn notify<O: DurableObject>(&self, name: &str, req: O::Request) {
        // Runs after the current request returns; the sender's backstop
        // (its alarm) covers an isolate that goes away first.
        let host = self.clone();
        let name = name.to_string();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = host.call::<O>(&name, req).await {
                worker::console_warn!("notification of {}/{name} failed: {e}", O::CLASS);
            }
        });
    }
}

/// Fills `buf` from the platform's `crypto.getRandomValues`.
fn fill_random(buf: &mut [u8]) {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).expect("globalThis.crypto");
    let get = js_sys::Reflect::get(&crypto, &JsValue::from_str("getRandomValues")).expect("crypto.getRandomValues");
    let get: js_sys::Function = get.dyn_into().expect("getRandomValues is a function");
    let array = js_sys::Uint8Array::new_with_length(buf.len() as u32);
    get.call1(&crypto, &array).expect("crypto.getRandomValues failed");
    array.copy_to(buf);
}

// ---------------------------------------------------------------------------
// Storage

/// An object's storage: `ctx.storage` (SQL and the alarm).
pub struct CfStorage {
    storage: worker::Storage,
    sql: worker::SqlStorage,
}

impl CfStorage {
    /// The storage of the Durable Object whose state is `state`.
    pub fn new(state: &worker::State) -> CfStorage {
        let storage = state.storage();
        let sql = storage.sql();
        CfStorage { storage, sql }
    }
}

fn to_js(v: &SqlValue) -> ObjectResult<worker::SqlStorageValue> {
    use worker::SqlStorageValue as V;
    Ok(match v {
        SqlValue::Null => V::Null,
        SqlValue::Integer(i) => {
            if i.abs() > JS_MAX_SAFE_INTEGER {
                return Err(ApiError::internal(format!(
                    "integer {i} is outside the range Durable Object SQL stores exactly (±2^53-1)"
                )));
            }
            V::Integer(*i)
        }
        SqlValue::Real(f) => V::Float(*f),
        SqlValue::Text(s) => V::String(s.clone()),
        SqlValue::Blob(b) => V::Blob(b.clone()),
    })
}

fn from_js(v: worker::SqlStorageValue) -> SqlValue {
    use worker::SqlStorageValue as V;
    match v {
        V::Null => SqlValue::Null,
        V::Boolean(b) => SqlValue::Integer(b as i64),
        V::Integer(i) => SqlValue::Integer(i),
        V::Float(f) => SqlValue::Real(f),
        V::String(s) => SqlValue::Text(s),
        V::Blob(b) => SqlValue::Blob(b),
    }
}

fn sql_error(sql: &str, e: impl std::fmt::Display) -> ApiError {
    let stmt: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    ApiError::new(ErrorCode::StorageError, format!("storage error: {e} (in {stmt:.160})"))
}

impl CfStorage {
    fn cursor(&self, sql: &str, params: &[SqlValue]) -> ObjectResult<worker::SqlCursor> {
        let bindings = params.iter().map(to_js).collect::<ObjectResult<Vec<_>>>()?;
        self.sql.exec(sql, Some(bindings)).map_err(|e| sql_error(sql, e))
    }
}

impl SqlStorage for CfStorage {
    fn execute(&self, sql: &str, params: &[SqlValue]) -> ObjectResult<u64> {
        let cursor = self.cursor(sql, params)?;
        // Drain the cursor so the statement runs to completion.
        for row in cursor.raw() {
            row.map_err(|e| sql_error(sql, e))?;
        }
        // The rows the statement changed, as natively. (The cursor's `rowsWritten`
        // is no substitute: it also counts index entries, so one updated row of a
        // table with two indexes reads as 3.)
        let changes = self.sql.exec("SELECT changes()", None).map_err(|e| sql_error("SELECT changes()", e))?;
        let mut count = 0;
        for row in changes.raw() {
            if let Some(worker::SqlStorageValue::Integer(n)) =
                row.map_err(|e| sql_error("SELECT changes()", e))?.into_iter().next()
            {
                count = n;
            }
        }
        Ok(count.max(0) as u64)
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> ObjectResult<Vec<Row>> {
        let mut rows = Vec::new();
        self.query_each(sql, params, &mut |r| {
            rows.push(r.clone());
            true
        })?;
        Ok(rows)
    }

    fn query_each(&self, sql: &str, params: &[SqlValue], f: &mut dyn FnMut(&Row) -> bool) -> ObjectResult<()> {
        let cursor = self.cursor(sql, params)?;
        for values in cursor.raw() {
            let values = values.map_err(|e| sql_error(sql, e))?;
            if !f(&Row(values.into_iter().map(from_js).collect())) {
                break;
            }
        }
        Ok(())
    }

    fn execute_script(&self, sql: &str) -> ObjectResult<()> {
        // `exec` runs every `;`-separated statement when there are no bindings.
        if sql.trim().is_empty() {
            return Ok(());
        }
        let cursor = self.sql.exec(sql, None).map_err(|e| sql_error(sql, e))?;
        for row in cursor.raw() {
            row.map_err(|e| sql_error(sql, e))?;
        }
        Ok(())
    }

    fn transaction<T>(&self, f: impl FnOnce() -> ObjectResult<T>) -> ObjectResult<T> {
        // `transactionSync(fn)` runs `fn` at once, inside a transaction that is
        // rolled back if `fn` throws. `fn` runs before the call returns, so the
        // borrowed closure below outlives every use of it.
        let mut f = Some(f);
        let mut outcome: Option<ObjectResult<T>> = None;
        let mut body = || -> Result<JsValue, JsValue> {
            let result = (f.take().expect("transactionSync calls its function once"))();
            let failed = result.is_err();
            outcome = Some(result);
            if failed { Err(JsValue::from_str("rolled back")) } else { Ok(JsValue::UNDEFINED) }
        };
        let body: &mut dyn FnMut() -> Result<JsValue, JsValue> = &mut body;
        // SAFETY: the closure is only called synchronously inside `transactionSync` below, and the
        // JS function wrapping it is dropped before this frame returns.
        let body: &'static mut dyn FnMut() -> Result<JsValue, JsValue> = unsafe { std::mem::transmute(body) };
        let closure = Closure::<dyn FnMut() -> Result<JsValue, JsValue>>::new(body);
        let raw = self.storage.as_raw();
        let call = js_sys::Reflect::get(raw, &JsValue::from_str("transactionSync"))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .ok_or_else(|| {
                ApiError::internal("ctx.storage.transactionSync is missing (not a SQLite-backed object?)")
            })?;
        let thrown = call.call1(raw, closure.as_ref().unchecked_ref()).err();
        drop(closure);
        match outcome {
            Some(result) => result,
            None => Err(ApiError::internal(format!("transactionSync failed before running: {thrown:?}"))),
        }
    }

    fn database_size(&self) -> ObjectResult<u64> {
        Ok(self.sql.database_size() as u64)
    }
}

impl ObjectStorage for CfStorage {
    async fn get_alarm(&self) -> ObjectResult<Option<Timestamp>> {
        Ok(self.storage.get_alarm().await.map_err(|e| platform("getAlarm", e))?.map(Timestamp))
    }

    async fn set_alarm(&self, at: Timestamp) -> ObjectResult<()> {
        let when = js_sys::Date::new(&JsValue::from_f64(at.0 as f64));
        self.storage.set_alarm(worker::ScheduledTime::new(when)).await.map_err(|e| platform("setAlarm", e))
    }

    async fn delete_alarm(&self) -> ObjectResult<()> {
        self.storage.delete_alarm().await.map_err(|e| platform("deleteAlarm", e))
    }
}

// ---------------------------------------------------------------------------
// R2

/// The lakehouse bucket: the R2 binding [`LAKE_BUCKET`].
pub struct R2Blobs {
    bucket: Option<worker::Bucket>,
}

impl R2Blobs {
    fn bucket(&self) -> ObjectResult<&worker::Bucket> {
        self.bucket.as_ref().ok_or_else(|| {
            ApiError::new(ErrorCode::ServiceUnavailable, format!("no R2 binding {LAKE_BUCKET} configured"))
        })
    }
}

impl BlobStore for R2Blobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<()> {
        self.bucket()?.put(key, bytes).execute().await.map_err(|e| platform("R2 put", e))?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<bool> {
        let only_if = worker::Conditional { etag_does_not_match: Some("*".into()), ..Default::default() };
        let written = self.bucket()?.put(key, bytes).only_if(only_if).execute().await;
        match written {
            Ok(Some(_)) => Ok(true),
            Ok(None) => Ok(false),
            Err(e) => Err(platform("R2 conditional put", e)),
        }
    }

    async fn get(&self, key: &str) -> ObjectResult<Option<Vec<u8>>> {
        let Some(object) = self.bucket()?.get(key).execute().await.map_err(|e| platform("R2 get", e))? else {
            return Ok(None);
        };
        match object.body() {
            Some(body) => Ok(Some(body.bytes().await.map_err(|e| platform("R2 read", e))?)),
            None => Ok(Some(Vec::new())),
        }
    }

    async fn delete(&self, key: &str) -> ObjectResult<()> {
        self.bucket()?.delete(key).await.map_err(|e| platform("R2 delete", e))
    }

    async fn list(&self, prefix: &str) -> ObjectResult<Vec<BlobMeta>> {
        let bucket = self.bucket()?;
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut list = bucket.list().prefix(prefix);
            if let Some(c) = &cursor {
                list = list.cursor(c.clone());
            }
            let page = list.execute().await.map_err(|e| platform("R2 list", e))?;
            for o in page.objects() {
                out.push(BlobMeta {
                    key: o.key(),
                    size: o.size(),
                    last_modified: Timestamp(o.uploaded().as_millis() as i64),
                });
            }
            if !page.truncated() {
                break;
            }
            cursor = page.cursor();
            if cursor.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Outbound HTTP

/// Outbound HTTP through the Workers `fetch`: redirects are returned, not
/// followed, response bodies are cut at [`MAX_OUTBOUND_RESPONSE_BYTES`], and
/// literal private addresses are refused unless [`OUTBOUND_ALLOW_BINDING`]
/// covers them (on Cloudflare, `fetch` cannot reach private networks anyway).
pub struct FetchHttp {
    policy: AddressPolicy,
}

impl FetchHttp {
    /// Checks a target URL: http(s), and not a private address outside the
    /// allow-list ([`AddressPolicy::check_url`]).
    pub fn check_url(&self, url: &str) -> ObjectResult<url::Url> {
        self.policy.check_url(url)
    }
}

impl HttpClient for FetchHttp {
    async fn send(&self, req: HttpRequest) -> ObjectResult<HttpResponse> {
        self.check_url(&req.url)?;
        let method = Method::from(req.method.to_ascii_uppercase());
        let headers = Headers::new();
        for (k, v) in &req.headers {
            headers.set(k, v).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("header {k}: {e}")))?;
        }
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers).with_redirect(worker::RequestRedirect::Manual);
        if !req.body.is_empty() {
            let body = js_sys::Uint8Array::from(req.body.as_slice());
            init.with_body(Some(body.into()));
        }
        let request = worker::Request::new_with_init(&req.url, &init)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("bad outbound request: {e}")))?;
        let abort = worker::AbortController::default();
        let signal = abort.signal();
        let timeout = worker::Delay::from(std::time::Duration::from_millis(req.timeout_ms.max(1)));
        let fetch = worker::Fetch::Request(request);
        let send = fetch.send_with_signal(&signal);
        futures::pin_mut!(send);
        futures::pin_mut!(timeout);
        let mut response = match futures::future::select(send, timeout).await {
            futures::future::Either::Left((r, _)) => {
                r.map_err(|e| ApiError::new(ErrorCode::ServiceUnavailable, format!("outbound request failed: {e}")))?
            }
            futures::future::Either::Right(_) => {
                abort.abort();
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!("outbound request timed out after {} ms", req.timeout_ms),
                ));
            }
        };
        let status = response.status_code();
        let headers = response.headers().entries().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let mut body = response.bytes().await.unwrap_or_default();
        body.truncate(MAX_OUTBOUND_RESPONSE_BYTES);
        Ok(HttpResponse { status, headers, body })
    }
}
