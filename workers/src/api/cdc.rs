//! `/cdc/...`: change capture of collections, with the native server's
//! paths, query parameters, answers and error codes (see
//! `crates/events-server/src/routes/cdc.rs`): collections, state at a point
//! in time, documents, history, restore, compaction, flush, snapshots and the
//! manifest, each a call to the collection's `CdcProcessor` (or the
//! namespace's `CdcCollections`).

use events_core::cdc::valid_collection_name;
use events_core::name::validate_namespace;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::cdc::{
    CdcRequest, CdcResponse, CollectionsRequest, CollectionsResponse, FileBase, SnapshotKind, processor_name,
};
use events_objects::{CdcCollections, CdcProcessor};
use events_runtime::Host;
use serde::Deserialize;
use serde_json::json;

use super::auth::authenticate;
use super::{ApiResult, Call, json, parse_json, query_param};

/// Default page size of state reads and history (as natively).
pub const DEFAULT_PAGE: usize = 100;
/// Most steps one restore request runs (as natively).
pub const MAX_RESTORE_STEPS: usize = 10_000;
/// Largest restore body.
const MAX_RESTORE_BODY_BYTES: usize = 4 * 1024;

/// Routes `/cdc/{ns}/...` (`rest` is the path after `/cdc/`); `None` if no route matches.
pub async fn route(call: &mut Call, method: &str, rest: &[&str]) -> Option<ApiResult> {
    Some(match (method, rest) {
        ("GET", [ns]) => collections(call, ns).await,
        ("GET", [ns, c]) => read_collection(call, ns, c).await,
        ("GET", [ns, c, "_manifest"]) => simple(call, ns, c, CdcRequest::Manifest).await,
        ("POST", [ns, c, "_restore"]) => restore(call, ns, c).await,
        ("POST", [ns, c, "_compact"]) => simple(call, ns, c, CdcRequest::Compact).await,
        ("POST", [ns, c, "_flush"]) => simple(call, ns, c, CdcRequest::Flush).await,
        ("POST", [ns, c, "_snapshot"]) => snapshot(call, ns, c).await,
        ("GET", [ns, c, id]) => read_document(call, ns, c, id).await,
        ("GET", [ns, c, id, "history"]) => history(call, ns, c, id).await,
        _ => return None,
    })
}

/// The caller may act on namespace `ns` (its own key, or the admin token), and `collection` is a name.
async fn authorize(call: &Call, ns: &str, collection: Option<&str>) -> Result<(), ApiError> {
    let caller = authenticate(call).await?;
    validate_namespace(ns)?;
    caller.require_namespace(ns, "read or change the collections")?;
    if let Some(c) = collection
        && !valid_collection_name(c)
    {
        return Err(ApiError::new(ErrorCode::InvalidRequest, format!("{c:?} is not a collection name")));
    }
    Ok(())
}

async fn processor(call: &Call, ns: &str, collection: &str, req: CdcRequest) -> Result<CdcResponse, ApiError> {
    call.host.call::<CdcProcessor>(&processor_name(ns, collection), req).await
}

fn unexpected() -> ApiError {
    ApiError::internal("unexpected answer")
}

fn parse_at(at: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    at.map(|s| {
        Timestamp::parse_iso(s).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidQuery, format!("at={s:?} is not an ISO-8601 date-time with offset"))
        })
    })
    .transpose()
}

fn limit(call: &Call) -> Result<usize, ApiError> {
    match query_param(&call.query, "limit") {
        None => Ok(DEFAULT_PAGE),
        Some(s) => {
            s.parse().map_err(|_| ApiError::new(ErrorCode::InvalidQuery, format!("limit={s:?} is not a number")))
        }
    }
}

async fn collections(call: &Call, ns: &str) -> ApiResult {
    authorize(call, ns, None).await?;
    let CollectionsResponse::Collections(names) =
        call.host.call::<CdcCollections>(ns, CollectionsRequest::List).await?
    else {
        return Err(unexpected());
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match processor(call, ns, &name, CdcRequest::Stats).await? {
            CdcResponse::Stats(s) => out.push(s),
            _ => return Err(unexpected()),
        }
    }
    json(200, &json!({ "namespace": ns, "collections": out }))
}

async fn read_collection(call: &Call, ns: &str, collection: &str) -> ApiResult {
    authorize(call, ns, Some(collection)).await?;
    let at = parse_at(query_param(&call.query, "at").as_deref())?;
    let limit = limit(call)?;
    let after = query_param(&call.query, "cursor");
    let req = match query_param(&call.query, "source").as_deref().unwrap_or("state") {
        "state" => {
            let include_deleted = match query_param(&call.query, "includeDeleted").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidQuery,
                        format!("includeDeleted={other:?}: use true or false"),
                    ));
                }
            };
            CdcRequest::ReadState { at, after, limit, include_deleted }
        }
        "lake" => CdcRequest::ReadFiles {
            at: at.unwrap_or(Timestamp(events_runtime::MAX_EXACT_INTEGER)),
            base: FileBase::Auto,
            after,
            limit,
        },
        other => return Err(ApiError::new(ErrorCode::InvalidQuery, format!("source={other:?}: use state or lake"))),
    };
    match processor(call, ns, collection, req).await? {
        CdcResponse::Docs { docs, next } => json(
            200,
            &json!({"collection": collection, "at": at.map(|t| t.to_iso()), "documents": docs, "nextCursor": next}),
        ),
        _ => Err(unexpected()),
    }
}

async fn read_document(call: &Call, ns: &str, collection: &str, id: &str) -> ApiResult {
    authorize(call, ns, Some(collection)).await?;
    let at = parse_at(query_param(&call.query, "at").as_deref())?;
    match processor(call, ns, collection, CdcRequest::ReadDoc { id: id.to_string(), at }).await? {
        CdcResponse::Doc(Some(doc)) => json(200, &doc),
        CdcResponse::Doc(None) => Err(ApiError::not_found(match at {
            Some(at) => format!("document {id:?} had no change at or before {at}"),
            None => format!("no document {id:?} in {collection}"),
        })),
        _ => Err(unexpected()),
    }
}

async fn history(call: &Call, ns: &str, collection: &str, id: &str) -> ApiResult {
    authorize(call, ns, Some(collection)).await?;
    let after = match query_param(&call.query, "cursor") {
        None => None,
        Some(c) => Some(
            c.split_once('.')
                .and_then(|(ts, seq)| Some((ts.parse::<i64>().ok()?, seq.parse::<i64>().ok()?)))
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "cursor is not a history cursor"))?,
        ),
    };
    let req = CdcRequest::History { id: id.to_string(), after, limit: limit(call)? };
    match processor(call, ns, collection, req).await? {
        CdcResponse::History { changes, next, history_from } => {
            if changes.is_empty() && after.is_none() {
                return Err(ApiError::not_found(format!("document {id:?} has no history in {collection}")));
            }
            json(200, &json!({ "id": id, "changes": changes, "nextCursor": next.map(|(t, s)| format!("{t}.{s}")), "historyFrom": history_from }))
        }
        _ => Err(unexpected()),
    }
}

/// Body of a restore.
#[derive(Deserialize)]
struct RestoreBody {
    at: String,
}

async fn restore(call: &mut Call, ns: &str, collection: &str) -> ApiResult {
    authorize(call, ns, Some(collection)).await?;
    let body: RestoreBody = parse_json(&call.body(MAX_RESTORE_BODY_BYTES).await?)?;
    let at = parse_at(Some(&body.at))?.expect("given");
    let restore_id = format!("restore-{}", events_core::id::ulid_string(call.host.now(), call.host.random()));
    let (mut changes, mut examined, mut after) = (0, 0, None);
    for _ in 0..MAX_RESTORE_STEPS {
        let req = CdcRequest::Restore { at, restore_id: restore_id.clone(), after: after.take() };
        match processor(call, ns, collection, req).await? {
            CdcResponse::Restored { changes: c, examined: e, next } => {
                changes += c;
                examined += e;
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            _ => return Err(unexpected()),
        }
    }
    json(
        200,
        &json!({"collection": collection, "at": at.to_iso(), "restoreId": restore_id, "changes": changes, "examined": examined}),
    )
}

async fn snapshot(call: &Call, ns: &str, collection: &str) -> ApiResult {
    authorize(call, ns, Some(collection)).await?;
    let kind = match query_param(&call.query, "kind").as_deref().unwrap_or("daily") {
        "daily" => SnapshotKind::Daily,
        "monthly" => SnapshotKind::Monthly,
        other => return Err(ApiError::new(ErrorCode::InvalidQuery, format!("kind={other:?}: use daily or monthly"))),
    };
    match processor(call, ns, collection, CdcRequest::Snapshot { kind }).await? {
        CdcResponse::Snapshot(key) => {
            json(200, &json!({ "kind": kind.as_str(), "skipped": key.is_none(), "key": key }))
        }
        _ => Err(unexpected()),
    }
}

/// `_manifest`, `_compact` and `_flush`: one call, its answer as JSON.
async fn simple(call: &Call, ns: &str, collection: &str, req: CdcRequest) -> ApiResult {
    authorize(call, ns, Some(collection)).await?;
    match processor(call, ns, collection, req).await? {
        CdcResponse::Files(files) => json(200, &json!({ "files": files })),
        CdcResponse::Manifest(m) => json(200, &m),
        _ => Err(unexpected()),
    }
}
