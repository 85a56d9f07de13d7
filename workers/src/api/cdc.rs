//! `/cdc/...`: change capture of collections, with the native server's
//! paths, query parameters, answers and error codes: collections, state at a
//! point in time, documents, history, restore, compaction, flush, snapshots
//! and the manifest. Query parsing, the processor calls, the restore loop and
//! the answers are the shared [`events_api::cdc`]; this module routes,
//! authenticates and extracts.

use events_api::cdc::{self as api, HistoryQuery, MAX_RESTORE_BODY_BYTES, StateQuery};
use events_core::ApiError;
use events_core::name::validate_namespace;
use serde::Deserialize;
use serde_json::Value;

use super::auth::authenticate;
use super::{ApiResult, Call, json, parse_json, query_param};

/// Routes `/cdc/{ns}/...` (`rest` is the path after `/cdc/`); `None` if no route matches.
pub async fn route(call: &mut Call, method: &str, rest: &[&str]) -> Option<ApiResult> {
    let host = &call.host;
    let param = |key: &str| query_param(&call.query, key);
    let answer = match (method, rest) {
        ("GET", [ns]) => authorized(call, ns, api::collections(host, ns)).await,
        ("GET", [ns, c]) => read_collection(call, ns, c).await,
        ("GET", [ns, c, "_manifest"]) => authorized(call, ns, api::manifest(host, ns, c)).await,
        ("POST", [ns, c, "_restore"]) => restore(call, ns, c).await,
        ("POST", [ns, c, "_compact"]) => authorized(call, ns, api::compact(host, ns, c)).await,
        ("POST", [ns, c, "_flush"]) => authorized(call, ns, api::flush(host, ns, c)).await,
        ("POST", [ns, c, "_snapshot"]) => {
            authorized(call, ns, api::snapshot(host, ns, c, param("kind").as_deref())).await
        }
        ("GET", [ns, c, id]) => authorized(call, ns, api::read_document(host, ns, c, id, param("at").as_deref())).await,
        ("GET", [ns, c, id, "history"]) => history(call, ns, c, id).await,
        _ => return None,
    };
    Some(answer.and_then(|body| json(200, &body)))
}

/// The caller may act on namespace `ns` (its own key, or the admin token);
/// collection names are checked by [`events_api::cdc`].
async fn authorize(call: &Call, ns: &str) -> Result<(), ApiError> {
    let caller = authenticate(call).await?;
    validate_namespace(ns)?;
    caller.require_namespace(ns, "read or change the collections")
}

/// Runs `then` (not started before) once the caller is authorized for `ns`.
async fn authorized(
    call: &Call,
    ns: &str,
    then: impl Future<Output = Result<Value, ApiError>>,
) -> Result<Value, ApiError> {
    authorize(call, ns).await?;
    then.await
}

async fn read_collection(call: &Call, ns: &str, collection: &str) -> Result<Value, ApiError> {
    authorize(call, ns).await?;
    let [at, cursor, limit, include_deleted, source] =
        ["at", "cursor", "limit", "includeDeleted", "source"].map(|k| query_param(&call.query, k));
    let query = StateQuery {
        at: at.as_deref(),
        cursor: cursor.as_deref(),
        limit: limit.as_deref(),
        include_deleted: include_deleted.as_deref(),
        source: source.as_deref(),
    };
    api::read_collection(&call.host, ns, collection, &query).await
}

async fn history(call: &Call, ns: &str, collection: &str, id: &str) -> Result<Value, ApiError> {
    authorize(call, ns).await?;
    let [cursor, limit] = ["cursor", "limit"].map(|k| query_param(&call.query, k));
    let query = HistoryQuery { cursor: cursor.as_deref(), limit: limit.as_deref() };
    api::history(&call.host, ns, collection, id, &query).await
}

/// Body of a restore.
#[derive(Deserialize)]
struct RestoreBody {
    at: String,
}

async fn restore(call: &mut Call, ns: &str, collection: &str) -> Result<Value, ApiError> {
    authorize(call, ns).await?;
    let body: RestoreBody = parse_json(&call.body(MAX_RESTORE_BODY_BYTES).await?)?;
    api::restore(&call.host, ns, collection, &body.at).await
}
