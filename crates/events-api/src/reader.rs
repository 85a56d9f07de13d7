//! Reading events back: the writers' buffers and the Parquet files of the
//! events table's current snapshot, merged newest first, with cursor
//! pagination. A data file the snapshot names but the lake lacks fails the
//! read with `DATA_FILE_MISSING`; it is never skipped.

use base64::Engine;
use events_core::pattern::Pattern;
use events_core::{ApiError, ErrorCode, Event, Timestamp};
use events_lake::layout::HOUR_MS;
use events_lake::{decode_events, parse_event_file_key};
use events_objects::catalog::{CatalogRequest, CatalogResponse, EVENTS_TABLE};
use events_objects::event_writer::{ReadFilter, WriterRequest, WriterResponse};
use events_objects::{Catalog, EventWriter};
use events_runtime::BlobStore;
use events_runtime::context::Host;

/// A page request.
#[derive(Debug, Clone, Default)]
pub struct ReadQuery {
    /// Event-type pattern.
    pub pattern: Option<String>,
    /// Earliest `ts`, inclusive.
    pub from: Option<Timestamp>,
    /// Latest `ts`, inclusive.
    pub to: Option<Timestamp>,
    /// Page size.
    pub limit: usize,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
}

/// One page.
#[derive(Debug, Clone)]
pub struct Page {
    /// Events, newest first.
    pub events: Vec<Event>,
    /// Cursor of the next page, if there may be one.
    pub next_cursor: Option<String>,
}

fn encode_cursor(e: &Event) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}", e.ts.as_millis(), e.id))
}

fn decode_cursor(c: &str) -> Result<(Timestamp, String), ApiError> {
    let bad = || ApiError::new(ErrorCode::InvalidQuery, "invalid cursor");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ts, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((Timestamp(ts.parse().map_err(|_| bad())?), id.to_string()))
}

/// Whether `e` sorts strictly after the cursor position (newest-first order).
fn before(e: &Event, pos: &Option<(Timestamp, String)>) -> bool {
    match pos {
        None => true,
        Some((ts, id)) => e.ts < *ts || (e.ts == *ts && e.id < *id),
    }
}

/// Reads one page of namespace `ns` from the writer shards named `writers`
/// (every `EventWriter` that exists; those of other namespaces are skipped)
/// and the data files of the events table's current snapshot (asked of the
/// namespace's `Catalog`).
pub async fn read_events<H: Host>(host: &H, writers: Vec<String>, ns: &str, q: &ReadQuery) -> Result<Page, ApiError> {
    let pattern = q.pattern.as_deref().map(Pattern::parse).transpose()?;
    let position = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let want = q.limit + 1;
    let keep = |e: &Event| {
        q.from.is_none_or(|f| e.ts >= f)
            && q.to.is_none_or(|t| e.ts <= t)
            && before(e, &position)
            && pattern.as_ref().is_none_or(|p| p.matches(&e.event_type))
    };

    // 1. Buffered events of every writer shard of the namespace.
    let mut events = Vec::new();
    let prefix = format!("{ns}/");
    let filter = ReadFilter { pattern: q.pattern.clone(), from: q.from, to: q.to, before: position.clone() };
    for name in writers.into_iter().filter(|n| n.starts_with(&prefix)) {
        if let WriterResponse::Events(found) =
            host.call::<EventWriter>(&name, WriterRequest::Recent { filter: filter.clone(), limit: want }).await?
        {
            events.extend(found);
        }
    }

    // 2. The data files of the events table's current snapshot, hour by
    //    hour, newest first, until the page is full and no older hour can
    //    hold a newer event. A file the snapshot names but the lake lacks
    //    fails the read (`DATA_FILE_MISSING`) unless a newer snapshot no
    //    longer names it (compaction and expiry ran meanwhile): then the
    //    files are read again from that snapshot, at most
    //    `MAX_LAKE_READ_ATTEMPTS` times.
    let upper = match (&position, q.to) {
        (Some((ts, _)), Some(to)) => Some((*ts).min(to)),
        (Some((ts, _)), None) => Some(*ts),
        (None, to) => to,
    };
    events.retain(|e| keep(e));
    let buffered = events;
    let mut attempt = 0;
    let mut events = loop {
        attempt += 1;
        let mut events = buffered.clone();
        let hours = snapshot_hours(&scan_files(host, ns).await?, ns);
        let Some(missing) = read_hours(host, hours, &mut events, &keep, want, upper, q.from).await? else {
            break events;
        };
        if attempt >= MAX_LAKE_READ_ATTEMPTS || scan_files(host, ns).await?.contains(&missing) {
            return Err(ApiError::data_file_missing(&missing));
        }
    };
    events.sort_by(|a, b| (b.ts, &b.id).cmp(&(a.ts, &a.id)));
    // A flush or compaction in progress may show an event twice: keep one.
    let mut seen = std::collections::HashSet::new();
    events.retain(|e| seen.insert(e.id.clone()));
    let more = events.len() > q.limit;
    events.truncate(q.limit);
    let next_cursor = if more { events.last().map(encode_cursor) } else { None };
    Ok(Page { events, next_cursor })
}

/// How many times a read starts over from a newer snapshot when a file of
/// the one it read was deleted meanwhile.
pub const MAX_LAKE_READ_ATTEMPTS: usize = 3;

/// The data files of namespace `ns`'s events table at its current snapshot
/// (none before the table exists).
async fn scan_files<H: Host>(host: &H, ns: &str) -> Result<Vec<String>, ApiError> {
    let req = CatalogRequest::Scan { table: EVENTS_TABLE.into(), snapshot_id: None, as_of_ms: None };
    match host.call::<Catalog>(ns, req).await {
        Ok(CatalogResponse::Scan(scan)) => Ok(scan.files.into_iter().map(|f| f.key).collect()),
        Ok(other) => Err(ApiError::internal(format!("catalog answered {other:?} to Scan"))),
        Err(e) if e.code == ErrorCode::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Event files of `ns` grouped by hour, newest hour first.
fn snapshot_hours(files: &[String], ns: &str) -> Vec<(Timestamp, Vec<String>)> {
    let mut hours: Vec<(Timestamp, Vec<String>)> = Vec::new();
    for file in files {
        let Some(key) = parse_event_file_key(file) else { continue };
        if key.ns != ns {
            continue;
        }
        match hours.iter_mut().find(|(h, _)| *h == key.hour_start) {
            Some((_, files)) => files.push(file.clone()),
            None => hours.push((key.hour_start, vec![file.clone()])),
        }
    }
    hours.sort_by_key(|h| std::cmp::Reverse(h.0));
    hours
}

/// Adds the kept events of `hours` to `events`, newest hour first, until
/// `want` events are held that no older hour can beat. Returns the key of a
/// file found missing, if any (the read stops there).
async fn read_hours<H: Host>(
    host: &H,
    hours: Vec<(Timestamp, Vec<String>)>,
    events: &mut Vec<Event>,
    keep: &(dyn Fn(&Event) -> bool + Sync),
    want: usize,
    upper: Option<Timestamp>,
    from: Option<Timestamp>,
) -> Result<Option<String>, ApiError> {
    for (hour, files) in hours {
        if upper.is_some_and(|u| hour.as_millis() > u.as_millis())
            || from.is_some_and(|f| hour.as_millis() + HOUR_MS <= f.as_millis())
        {
            continue;
        }
        // Everything in this hour is older than what we already hold: stop.
        events.sort_by(|a, b| (b.ts, &b.id).cmp(&(a.ts, &a.id)));
        events.dedup_by(|a, b| a.id == b.id);
        if events.len() >= want && events[want - 1].ts.as_millis() >= hour.as_millis() + HOUR_MS {
            break;
        }
        for file in files {
            let Some(bytes) = host.blobs().get(&file).await? else { return Ok(Some(file)) };
            events.extend(decode_events(&bytes)?.into_iter().filter(|e| keep(e)));
        }
    }
    Ok(None)
}
