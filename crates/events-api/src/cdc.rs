//! The `/cdc/...` API (change capture of collections) between the host's
//! routing and the collection objects: query parsing, the requests sent to a
//! collection's [`CdcProcessor`] (or the namespace's [`CdcCollections`]),
//! the restore loop, and the JSON answers.
//!
//! A host authenticates the caller and checks that it may act on the
//! namespace, extracts the path and the query parameters as the client sent
//! them (strings), calls one of the `async` functions here with itself as the
//! [`Host`], and sends the returned JSON with status 200 (or the error in the
//! envelope). Parsing errors carry `INVALID_QUERY`, a bad collection name
//! `INVALID_REQUEST`, an unknown document `NOT_FOUND`.

use events_core::cdc::valid_collection_name;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_objects::cdc::{
    CdcRequest, CdcResponse, CollectionsRequest, CollectionsResponse, FileBase, SnapshotKind, processor_name,
};
use events_objects::{CdcCollections, CdcProcessor};
use events_runtime::context::Host;
use serde_json::{Value, json};

use crate::params::{parse_limit, parse_optional_time, parse_time};

/// Page size of state reads and history when the query has no `limit`
/// (the processor clamps any limit to 1..=1000).
pub use crate::params::DEFAULT_PAGE;
/// Most steps one restore request runs (each examines up to
/// [`events_objects::cdc::MAX_RESTORE_STEP`] documents).
pub const MAX_RESTORE_STEPS: usize = 10_000;
/// Largest restore body (`{"at": "..."}`) a host reads.
pub const MAX_RESTORE_BODY_BYTES: usize = 4 * 1024;
/// The time a lake read without `at` reads at: the latest state. The largest
/// integer every host carries exactly (Cloudflare passes numbers as doubles).
pub const LATEST: Timestamp = Timestamp(events_runtime::MAX_EXACT_INTEGER);

/// The query of `GET /cdc/{ns}/{collection}`, as the client sent it.
#[derive(Debug, Default, Clone, Copy)]
pub struct StateQuery<'a> {
    /// `at`: the time to read at (ISO-8601 with offset); default: now.
    pub at: Option<&'a str>,
    /// `cursor`: `nextCursor` of the previous page.
    pub cursor: Option<&'a str>,
    /// `limit`: page size.
    pub limit: Option<&'a str>,
    /// `includeDeleted`: `true` or `false` (default).
    pub include_deleted: Option<&'a str>,
    /// `source`: `state` (the object's history index, default) or `lake`
    /// (rebuilt from the Parquet files).
    pub source: Option<&'a str>,
}

/// The query of `GET /cdc/{ns}/{collection}/{id}/history`, as the client sent it.
#[derive(Debug, Default, Clone, Copy)]
pub struct HistoryQuery<'a> {
    /// `cursor`: `nextCursor` of the previous page (`"<ts>.<seq>"`).
    pub cursor: Option<&'a str>,
    /// `limit`: page size.
    pub limit: Option<&'a str>,
}

/// Parses an optional `at` parameter; `None` means now.
pub fn parse_at(at: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    parse_optional_time("at", at)
}

/// Parses an `includeDeleted` parameter: `true` or `false` (the default).
pub fn parse_include_deleted(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => {
            Err(ApiError::new(ErrorCode::InvalidQuery, format!("includeDeleted={other:?}: use true or false")))
        }
    }
}

/// Parses a snapshot `kind` parameter: `daily` (the default) or `monthly`.
pub fn parse_snapshot_kind(kind: Option<&str>) -> Result<SnapshotKind, ApiError> {
    match kind.unwrap_or("daily") {
        "daily" => Ok(SnapshotKind::Daily),
        "monthly" => Ok(SnapshotKind::Monthly),
        other => Err(ApiError::new(ErrorCode::InvalidQuery, format!("kind={other:?}: use daily or monthly"))),
    }
}

/// Formats a history position `(ts, seq)` as the `nextCursor` of a history page: `"<ts>.<seq>"`.
pub fn format_history_cursor((ts, seq): (i64, i64)) -> String {
    format!("{ts}.{seq}")
}

/// Parses the `cursor` of a history read (see [`format_history_cursor`]).
pub fn parse_history_cursor(cursor: Option<&str>) -> Result<Option<(i64, i64)>, ApiError> {
    let Some(c) = cursor else { return Ok(None) };
    c.split_once('.')
        .and_then(|(ts, seq)| Some((ts.parse::<i64>().ok()?, seq.parse::<i64>().ok()?)))
        .map(Some)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "cursor is not a history cursor"))
}

/// Checks a collection name from the path (`INVALID_REQUEST` if it is not one).
pub fn check_collection(collection: &str) -> Result<(), ApiError> {
    if valid_collection_name(collection) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::InvalidRequest, format!("{collection:?} is not a collection name")))
    }
}

/// The processor request of a collection read, and the `at` it reads at (`None`: now).
pub fn state_request(q: &StateQuery<'_>) -> Result<(Option<Timestamp>, CdcRequest), ApiError> {
    let at = parse_at(q.at)?;
    let limit = parse_limit(q.limit)?;
    let include_deleted = parse_include_deleted(q.include_deleted)?;
    let after = q.cursor.map(str::to_string);
    let req = match q.source.unwrap_or("state") {
        "state" => CdcRequest::ReadState { at, after, limit, include_deleted },
        "lake" => CdcRequest::ReadFiles { at: at.unwrap_or(LATEST), base: FileBase::Auto, after, limit },
        other => return Err(ApiError::new(ErrorCode::InvalidQuery, format!("source={other:?}: use state or lake"))),
    };
    Ok((at, req))
}

/// The id of a new restore (names the events of its changes): `restore-<ULID>`.
pub fn restore_id(now: Timestamp, random: u128) -> String {
    format!("restore-{}", events_core::id::ulid_string(now, random))
}

fn unexpected() -> ApiError {
    ApiError::internal("unexpected answer")
}

fn encoding_failed(e: serde_json::Error) -> ApiError {
    ApiError::internal(format!("encoding the answer: {e}"))
}

async fn call<H: Host>(host: &H, ns: &str, collection: &str, req: CdcRequest) -> Result<CdcResponse, ApiError> {
    host.call::<CdcProcessor>(&processor_name(ns, collection), req).await
}

/// `GET /cdc/{ns}`: the namespace's collections with their statistics,
/// `{namespace, collections: [stats]}`.
pub async fn collections<H: Host>(host: &H, ns: &str) -> Result<Value, ApiError> {
    let CollectionsResponse::Collections(names) = host.call::<CdcCollections>(ns, CollectionsRequest::List).await?
    else {
        return Err(unexpected());
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match call(host, ns, &name, CdcRequest::Stats).await? {
            CdcResponse::Stats(s) => out.push(s),
            _ => return Err(unexpected()),
        }
    }
    Ok(json!({ "namespace": ns, "collections": out }))
}

/// `GET /cdc/{ns}/{collection}`: a page of documents as they were at `at`,
/// `{collection, at, documents, nextCursor}`.
pub async fn read_collection<H: Host>(
    host: &H,
    ns: &str,
    collection: &str,
    q: &StateQuery<'_>,
) -> Result<Value, ApiError> {
    check_collection(collection)?;
    let (at, req) = state_request(q)?;
    match call(host, ns, collection, req).await? {
        CdcResponse::Docs { docs, next } => Ok(json!({
            "collection": collection,
            "at": at.map(|t| t.to_iso()),
            "documents": docs,
            "nextCursor": next,
        })),
        _ => Err(unexpected()),
    }
}

/// `GET /cdc/{ns}/{collection}/{id}`: one document as it was at `at`
/// (`NOT_FOUND` when it had no change by then).
pub async fn read_document<H: Host>(
    host: &H,
    ns: &str,
    collection: &str,
    id: &str,
    at: Option<&str>,
) -> Result<Value, ApiError> {
    check_collection(collection)?;
    let at = parse_at(at)?;
    match call(host, ns, collection, CdcRequest::ReadDoc { id: id.to_string(), at }).await? {
        CdcResponse::Doc(Some(doc)) => serde_json::to_value(doc).map_err(encoding_failed),
        CdcResponse::Doc(None) => Err(ApiError::not_found(match at {
            Some(at) => format!("document {id:?} had no change at or before {at}"),
            None => format!("no document {id:?} in {collection}"),
        })),
        _ => Err(unexpected()),
    }
}

/// `GET /cdc/{ns}/{collection}/{id}/history`: a page of a document's changes,
/// `{id, changes, nextCursor, historyFrom}` (`NOT_FOUND` when the first page is empty).
pub async fn history<H: Host>(
    host: &H,
    ns: &str,
    collection: &str,
    id: &str,
    q: &HistoryQuery<'_>,
) -> Result<Value, ApiError> {
    check_collection(collection)?;
    let after = parse_history_cursor(q.cursor)?;
    let req = CdcRequest::History { id: id.to_string(), after, limit: parse_limit(q.limit)? };
    match call(host, ns, collection, req).await? {
        CdcResponse::History { changes, next, history_from } => {
            if changes.is_empty() && after.is_none() {
                return Err(ApiError::not_found(format!("document {id:?} has no history in {collection}")));
            }
            Ok(json!({
                "id": id,
                "changes": changes,
                "nextCursor": next.map(format_history_cursor),
                "historyFrom": history_from,
            }))
        }
        _ => Err(unexpected()),
    }
}

/// Totals of a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreTotals {
    /// Changes written.
    pub changes: usize,
    /// Documents examined.
    pub examined: usize,
}

/// Runs the steps of one restore to `at` until the processor reports no more
/// documents (at most [`MAX_RESTORE_STEPS`]), summing what they did. `step`
/// sends one [`CdcRequest::Restore`] to the collection's processor.
pub async fn run_restore<F, Fut>(at: Timestamp, restore_id: &str, mut step: F) -> Result<RestoreTotals, ApiError>
where
    F: FnMut(CdcRequest) -> Fut,
    Fut: Future<Output = Result<CdcResponse, ApiError>>,
{
    let (mut totals, mut after) = (RestoreTotals::default(), None);
    for _ in 0..MAX_RESTORE_STEPS {
        let req = CdcRequest::Restore { at, restore_id: restore_id.to_string(), after: after.take() };
        match step(req).await? {
            CdcResponse::Restored { changes, examined, next } => {
                totals.changes += changes;
                totals.examined += examined;
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            _ => return Err(unexpected()),
        }
    }
    Ok(totals)
}

/// `POST /cdc/{ns}/{collection}/_restore` with body `{at}`: brings the
/// collection back to its state at `at` by writing new changes,
/// `{collection, at, restoreId, changes, examined}`.
pub async fn restore<H: Host>(host: &H, ns: &str, collection: &str, at: &str) -> Result<Value, ApiError> {
    check_collection(collection)?;
    let at = parse_time("at", at)?;
    let restore_id = restore_id(host.now(), host.random());
    let totals = run_restore(at, &restore_id, |req| call(host, ns, collection, req)).await?;
    Ok(json!({
        "collection": collection,
        "at": at.to_iso(),
        "restoreId": restore_id,
        "changes": totals.changes,
        "examined": totals.examined,
    }))
}

/// `POST /cdc/{ns}/{collection}/_snapshot?kind=`: takes a snapshot now,
/// `{kind, key, skipped}`.
pub async fn snapshot<H: Host>(host: &H, ns: &str, collection: &str, kind: Option<&str>) -> Result<Value, ApiError> {
    check_collection(collection)?;
    let kind = parse_snapshot_kind(kind)?;
    match call(host, ns, collection, CdcRequest::Snapshot { kind }).await? {
        CdcResponse::Snapshot(key) => Ok(json!({ "kind": kind.as_str(), "skipped": key.is_none(), "key": key })),
        _ => Err(unexpected()),
    }
}

/// `POST /cdc/{ns}/{collection}/_compact`: pending changes to a delta file,
/// then the current table rewritten, `{files}` (keys written).
pub async fn compact<H: Host>(host: &H, ns: &str, collection: &str) -> Result<Value, ApiError> {
    files(host, ns, collection, CdcRequest::Compact).await
}

/// `POST /cdc/{ns}/{collection}/_flush`: pending changes to delta files, `{files}`.
pub async fn flush<H: Host>(host: &H, ns: &str, collection: &str) -> Result<Value, ApiError> {
    files(host, ns, collection, CdcRequest::Flush).await
}

async fn files<H: Host>(host: &H, ns: &str, collection: &str, req: CdcRequest) -> Result<Value, ApiError> {
    check_collection(collection)?;
    match call(host, ns, collection, req).await? {
        CdcResponse::Files(files) => Ok(json!({ "files": files })),
        _ => Err(unexpected()),
    }
}

/// `GET /cdc/{ns}/{collection}/_manifest`: the manifest as written to `manifest.json`.
pub async fn manifest<H: Host>(host: &H, ns: &str, collection: &str) -> Result<Value, ApiError> {
    check_collection(collection)?;
    match call(host, ns, collection, CdcRequest::Manifest).await? {
        CdcResponse::Manifest(m) => serde_json::to_value(m).map_err(encoding_failed),
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<impl std::fmt::Debug, ApiError>) -> ErrorCode {
        r.expect_err("should be refused").code
    }

    #[test]
    fn at_must_be_a_date_time_with_offset() {
        assert_eq!(parse_at(None).unwrap(), None);
        assert_eq!(parse_at(Some("2026-03-01T12:00:00Z")).unwrap(), Some(Timestamp(1_772_366_400_000)));
        assert_eq!(parse_at(Some("2026-03-01T13:00:00+01:00")).unwrap(), Some(Timestamp(1_772_366_400_000)));
        for bad in ["yesterday", "2026-03-01", "2026-03-01T12:00:00", "1772366400000", ""] {
            let e = parse_at(Some(bad)).expect_err(bad);
            assert_eq!(e.code, ErrorCode::InvalidQuery, "{bad}");
            assert!(e.message.starts_with("at="), "{}", e.message);
        }
        assert!(parse_time("at", "nope").unwrap_err().message.contains("\"nope\""));
    }

    #[test]
    fn history_cursor_round_trips_and_refuses_other_text() {
        for pos in [(0, 0), (1_772_366_400_000, 42), (-5, 7), (i64::MAX, i64::MAX)] {
            let c = format_history_cursor(pos);
            assert_eq!(parse_history_cursor(Some(&c)).unwrap(), Some(pos), "{c}");
        }
        assert_eq!(parse_history_cursor(None).unwrap(), None);
        for bad in ["", "12", "12.", ".3", "a.b", "12.3.4", "1e3.2", "MTI6Mw"] {
            assert_eq!(code(parse_history_cursor(Some(bad))), ErrorCode::InvalidQuery, "{bad}");
        }
    }

    #[test]
    fn collection_read_builds_the_request_of_its_source() {
        let q =
            StateQuery { at: Some("2026-03-01T12:00:00Z"), cursor: Some("u7"), limit: Some("7"), ..Default::default() };
        let (at, req) = state_request(&q).unwrap();
        assert_eq!(at, Some(Timestamp(1_772_366_400_000)));
        assert!(matches!(
            req,
            CdcRequest::ReadState { at: Some(Timestamp(1_772_366_400_000)), after: Some(ref a), limit: 7, include_deleted: false } if a == "u7"
        ));

        let q = StateQuery { include_deleted: Some("true"), ..Default::default() };
        assert!(matches!(
            state_request(&q).unwrap(),
            (None, CdcRequest::ReadState { at: None, after: None, limit: DEFAULT_PAGE, include_deleted: true })
        ));

        // A lake read without `at` reads the latest state, at a time every host carries exactly.
        let q = StateQuery { source: Some("lake"), ..Default::default() };
        let (at, req) = state_request(&q).unwrap();
        assert_eq!(at, None);
        assert!(matches!(
            req,
            CdcRequest::ReadFiles { at: LATEST, base: FileBase::Auto, after: None, limit: DEFAULT_PAGE }
        ));
        assert_eq!(LATEST.as_millis() as f64 as i64, LATEST.as_millis());
    }

    #[test]
    fn bad_collection_read_parameters_are_invalid_queries() {
        let bad = [
            StateQuery { source: Some("parquet"), ..Default::default() },
            StateQuery { source: Some("State"), ..Default::default() },
            StateQuery { limit: Some("ten"), ..Default::default() },
            StateQuery { limit: Some("-1"), ..Default::default() },
            StateQuery { include_deleted: Some("yes"), ..Default::default() },
            StateQuery { include_deleted: Some("1"), source: Some("lake"), ..Default::default() },
            StateQuery { at: Some("yesterday"), source: Some("lake"), ..Default::default() },
        ];
        for q in bad {
            assert_eq!(code(state_request(&q)), ErrorCode::InvalidQuery, "{q:?}");
        }
        let e = state_request(&StateQuery { source: Some("parquet"), ..Default::default() }).unwrap_err();
        assert_eq!(e.message, "source=\"parquet\": use state or lake");
    }

    #[test]
    fn snapshot_kind_is_daily_or_monthly() {
        assert_eq!(parse_snapshot_kind(None).unwrap(), SnapshotKind::Daily);
        assert_eq!(parse_snapshot_kind(Some("daily")).unwrap(), SnapshotKind::Daily);
        assert_eq!(parse_snapshot_kind(Some("monthly")).unwrap(), SnapshotKind::Monthly);
        for bad in ["weekly", "Daily", ""] {
            let e = parse_snapshot_kind(Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidQuery, "{bad}");
            assert_eq!(e.message, format!("kind={bad:?}: use daily or monthly"));
        }
    }

    #[test]
    fn collection_names_from_the_path_are_checked() {
        check_collection("users").unwrap();
        check_collection("a-b_9").unwrap();
        for bad in ["", "_restore", "a/b", "a.b", &"x".repeat(65)] {
            assert_eq!(code(check_collection(bad)), ErrorCode::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn restore_ids_are_distinct_and_sort_by_time() {
        let a = restore_id(Timestamp(1_772_366_400_000), 1);
        let b = restore_id(Timestamp(1_772_366_400_000), 2);
        let later = restore_id(Timestamp(1_772_366_400_001), 0);
        assert!(a.starts_with("restore-") && a.len() == "restore-".len() + 26, "{a}");
        assert_ne!(a, b);
        assert!(later > a && later > b);
    }
}
