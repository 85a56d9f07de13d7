//! Reading events back: the writers' buffers and the Parquet files, merged
//! newest first, with cursor pagination.

use base64::Engine;
use events_core::pattern::Pattern;
use events_core::{ApiError, ErrorCode, Event, Timestamp};
use events_lake::layout::HOUR_MS;
use events_lake::{EVENTS_TABLE_PREFIX, decode_events, parse_event_file_key};
use events_objects::EventWriter;
use events_objects::event_writer::{ReadFilter, WriterRequest, WriterResponse};
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
/// and the Parquet files of the host's lake.
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

    // 2. Parquet files, hour by hour, newest first, until the page is full
    //    and no older hour can hold a newer event.
    let table = format!("{EVENTS_TABLE_PREFIX}/ns={ns}/");
    let mut hours: Vec<(Timestamp, Vec<String>)> = Vec::new();
    for blob in host.blobs().list(&table).await? {
        let Some(key) = parse_event_file_key(&blob.key) else { continue };
        if key.ns != ns {
            continue;
        }
        match hours.iter_mut().find(|(h, _)| *h == key.hour_start) {
            Some((_, files)) => files.push(blob.key),
            None => hours.push((key.hour_start, vec![blob.key])),
        }
    }
    hours.sort_by_key(|h| std::cmp::Reverse(h.0));
    let upper = match (&position, q.to) {
        (Some((ts, _)), Some(to)) => Some((*ts).min(to)),
        (Some((ts, _)), None) => Some(*ts),
        (None, to) => to,
    };
    events.retain(|e| keep(e));
    for (hour, files) in hours {
        if upper.is_some_and(|u| hour.as_millis() > u.as_millis())
            || q.from.is_some_and(|f| hour.as_millis() + HOUR_MS <= f.as_millis())
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
            let Some(bytes) = host.blobs().get(&file).await? else { continue };
            events.extend(decode_events(&bytes)?.into_iter().filter(|e| keep(e)));
        }
    }
    events.sort_by(|a, b| (b.ts, &b.id).cmp(&(a.ts, &a.id)));
    // A flush or compaction in progress may show an event twice: keep one.
    let mut seen = std::collections::HashSet::new();
    events.retain(|e| seen.insert(e.id.clone()));
    let more = events.len() > q.limit;
    events.truncate(q.limit);
    let next_cursor = if more { events.last().map(encode_cursor) } else { None };
    Ok(Page { events, next_cursor })
}
