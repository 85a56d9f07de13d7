//! The live tail, `GET /events/stream`: a namespace's events as they are
//! accepted, as Server-Sent Events. Shared by both hosts: a host
//! authenticates, takes a [`Slot`] from its [`StreamSlots`], calls [`open`],
//! answers `200 text/event-stream` with the [`TailBody`] and runs the
//! [`TailTask`] beside it (the native server spawns it; the Worker drives it
//! from the body with [`drive`]).
//!
//! # Reading without touching ingest
//! The task reads the namespace's writer shards itself, from its own task:
//! every [`POLL_MS`] (at once again after a full page) it asks each shard for
//! the log rows after the stream's position ([`WriterRequest::ReadLog`], a
//! read that registers nothing and holds no row back). Nothing is added to
//! `POST /e`: a writer answers the read between appends like any other read,
//! and an idle stream costs one small read per shard and poll.
//!
//! # Positions and resuming
//! A writer shard numbers its events `1, 2, 3, ...` without holes. A
//! stream's **position** is, per shard, the sequence number it has passed:
//! `0:15,1:7` (shard 0 up to 15, shard 1 up to 7). Every event message
//! carries `id: <event id>@<position after this event>`, so the last id a
//! client saw names exactly what it received, on every shard. `Last-Event-ID`
//! (or the `lastEventId` query parameter) resumes after that position: each
//! shard is read after its own number, so nothing is skipped and nothing
//! repeats, however the shards' events interleaved. A shard missing from the
//! position (one added since) is read from its oldest event. The first
//! message, `event: ready`, carries the stream's starting position as its id,
//! so a client that reconnects before any event arrives also loses nothing.
//!
//! Events stay in a writer's log until they are in the lake and every
//! outbox consumer took them (seconds, at least `writer.flush_max_age_ms`
//! under light load). A position older than that cannot be resumed from the
//! log: the stream then starts with `event: gap` (per shard, how many events
//! were missed; `GET /events` reads them from the lake) and goes on from the
//! oldest event kept. It never skips silently.
//!
//! # Bounds
//! - [`MAX_STREAMS_PER_NAMESPACE`] open streams per namespace and process
//!   (`429 RATE_LIMITED` beyond).
//! - Each stream queues at most [`STREAM_BUFFER_MESSAGES`] messages and
//!   [`STREAM_BUFFER_BYTES`] bytes for its client. A client that does not
//!   keep up (or a stream whose reads fall behind the writers' log) gets a
//!   final `event: lagged` and the stream ends; it resumes with its last id.
//! - A comment line (`: heartbeat`) every [`HEARTBEAT_MS`] without events
//!   keeps proxies from closing an idle stream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use events_core::pattern::Pattern;
use events_core::{ApiError, ErrorCode};
use events_objects::EventWriter;
use events_objects::event_writer::writer_name;
use events_objects::outbox::{Outbox, OutboxEvent, OutboxRow, decode_matching};
use events_runtime::context::Host;
use futures::Stream;
use futures::channel::mpsc;
use serde_json::json;

/// A comment line is sent after this long without any message (ms).
pub const HEARTBEAT_MS: i64 = 15_000;
/// Most open streams per namespace (per process; per isolate on the Worker).
pub const MAX_STREAMS_PER_NAMESPACE: usize = 8;
/// `Retry-After` (seconds) of a stream refused for the limit.
pub const STREAM_LIMIT_RETRY_AFTER_SECS: u64 = 5;
/// Most messages queued for one client before it is cut off as lagged.
pub const STREAM_BUFFER_MESSAGES: usize = 1_000;
/// Most bytes queued for one client before it is cut off as lagged.
pub const STREAM_BUFFER_BYTES: usize = 1 << 20;
/// How often an idle stream reads its writer shards (ms).
pub const POLL_MS: u64 = 250;
/// Most events read from one shard per read.
pub const READ_PAGE: usize = 1_000;
/// How often a stream looks for writer shards added to its namespace (ms).
pub const SHARDS_REFRESH_MS: i64 = 2_000;
/// Reconnection delay proposed to clients (`retry:`, ms).
pub const RETRY_MS: u64 = 1_000;
/// Longest accepted `Last-Event-ID`.
pub const MAX_LAST_EVENT_ID_LEN: usize = 4_096;
/// The resume header.
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";
/// The resume query parameter (for clients that cannot set headers).
pub const LAST_EVENT_ID_PARAM: &str = "lastEventId";
/// Gauge: open streams.
pub const METRIC_OPEN: &str = "events_stream_open";
/// Counter: streams ended with `event: lagged`.
pub const METRIC_LAGGED: &str = "events_stream_lagged_total";
/// Counter: streams refused for [`MAX_STREAMS_PER_NAMESPACE`].
pub const METRIC_REFUSED: &str = "events_stream_refused_total";
/// Counter: events sent to stream clients.
pub const METRIC_EVENTS: &str = "events_stream_events_total";

/// A stream position: per writer shard, the sequence number passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(pub BTreeMap<u32, u64>);

impl Position {
    /// `0:15,1:7` (shards in order; empty for no shard).
    pub fn encode(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(shard, seq)| format!("{shard}:{seq}")).collect();
        parts.join(",")
    }

    /// Parses [`Position::encode`]'s text.
    pub fn parse(text: &str) -> Result<Position, ApiError> {
        let bad = || {
            ApiError::new(ErrorCode::InvalidRequest, format!("invalid Last-Event-ID position {text:?}"))
                .with_details(json!({"expected": "<event id>@<shard>:<seq>,<shard>:<seq>..."}))
        };
        let mut map = BTreeMap::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (shard, seq) = part.split_once(':').ok_or_else(bad)?;
            let shard: u32 = shard.parse().map_err(|_| bad())?;
            let seq: u64 = seq.parse().map_err(|_| bad())?;
            if seq > events_runtime::MAX_EXACT_INTEGER as u64 || map.insert(shard, seq).is_some() {
                return Err(bad());
            }
        }
        Ok(Position(map))
    }

    /// The position of a `Last-Event-ID`: the text after its last `@`.
    pub fn from_last_event_id(id: &str) -> Result<Position, ApiError> {
        if id.len() > MAX_LAST_EVENT_ID_LEN {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "Last-Event-ID is too long"));
        }
        let (_, position) = id.rsplit_once('@').ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidRequest, format!("Last-Event-ID {id:?} is not an id of this stream"))
                .with_details(json!({"expected": "<event id>@<shard>:<seq>,<shard>:<seq>..."}))
        })?;
        Position::parse(position)
    }
}

/// The SSE id of an event: `<event id>@<position>`.
pub fn message_id(event_id: &str, position: &Position) -> String {
    format!("{event_id}@{}", position.encode())
}

/// What a stream request asks for.
#[derive(Debug, Clone, Default)]
pub struct TailRequest {
    /// Only events of matching types (all without).
    pub pattern: Option<Pattern>,
    /// Resume after this position (a fresh stream starts at the end of each shard).
    pub resume: Option<Position>,
}

/// Parses a stream request: the `type` query parameter, `Last-Event-ID`
/// (the header wins over the `lastEventId` query parameter: it is what a
/// reconnecting `EventSource` sends).
pub fn parse_request(
    pattern: Option<&str>,
    last_event_id_header: Option<&str>,
    last_event_id_param: Option<&str>,
) -> Result<TailRequest, ApiError> {
    let pattern = pattern.filter(|p| !p.is_empty()).map(Pattern::parse).transpose()?;
    let resume = last_event_id_header
        .or(last_event_id_param)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(Position::from_last_event_id)
        .transpose()?;
    Ok(TailRequest { pattern, resume })
}

/// The open streams of each namespace, and whether the host is stopping.
#[derive(Debug)]
pub struct StreamSlots {
    limit: usize,
    open: Mutex<HashMap<String, usize>>,
    closing: AtomicBool,
}

impl StreamSlots {
    /// Slots for at most `limit` streams per namespace.
    pub fn new(limit: usize) -> Arc<StreamSlots> {
        Arc::new(StreamSlots { limit, open: Mutex::new(HashMap::new()), closing: AtomicBool::new(false) })
    }

    /// A slot for one more stream of `ns`: `RATE_LIMITED` at the limit,
    /// `SERVICE_UNAVAILABLE` once the host is stopping.
    pub fn acquire(self: &Arc<Self>, ns: &str) -> Result<Slot, ApiError> {
        if self.is_closing() {
            return Err(ApiError::new(ErrorCode::ServiceUnavailable, "the server is stopping"));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ns.to_string()).or_insert(0);
        if *count >= self.limit {
            metrics::counter!(METRIC_REFUSED).increment(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("namespace {ns} has {} open streams, the most allowed; close one and retry", self.limit),
            )
            .with_details(json!({"limit": self.limit, "retryAfterSeconds": STREAM_LIMIT_RETRY_AFTER_SECS})));
        }
        *count += 1;
        metrics::gauge!(METRIC_OPEN).increment(1.0);
        Ok(Slot { slots: self.clone(), ns: ns.to_string() })
    }

    /// Open streams of `ns`.
    pub fn open(&self, ns: &str) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(ns).copied().unwrap_or(0)
    }

    /// Ends every stream (within one poll) and refuses new ones: the host stops.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Whether [`StreamSlots::close_all`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

/// One open stream's place in its namespace's count; given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<StreamSlots>,
    ns: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ns) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ns);
            }
        }
        metrics::gauge!(METRIC_OPEN).decrement(1.0);
    }
}

/// What the host provides to a running stream.
pub trait TailEnv {
    /// Every writer object's name (`<ns>/<shard>`, all namespaces).
    fn writers(&self) -> impl Future<Output = Result<Vec<String>, ApiError>>;
    /// Waits `ms` milliseconds.
    fn sleep(&self, ms: u64) -> impl Future<Output = ()>;
}

/// State shared by a stream's task and body.
#[derive(Debug, Default)]
struct Shared {
    /// Bytes queued in the channel.
    queued: AtomicUsize,
    /// The message to send after the queued ones, before the end (`lagged`, `error`).
    last: Mutex<Option<String>>,
}

/// The response body: SSE text, one message per item.
pub struct TailBody {
    rx: mpsc::Receiver<String>,
    shared: Arc<Shared>,
    done: bool,
    _slot: Slot,
}

impl Stream for TailBody {
    type Item = String;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.rx).poll_next(cx) {
            Poll::Ready(Some(message)) => {
                self.shared.queued.fetch_sub(message.len(), Ordering::Relaxed);
                Poll::Ready(Some(message))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.shared.last.lock().unwrap_or_else(|p| p.into_inner()).take())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One shard as a stream reads it.
#[derive(Debug)]
struct ShardCursor {
    /// Sequence number passed.
    after: u64,
    /// Not read yet: a gap here is a resume too old for the log, not a lag.
    first_read: bool,
}

/// The reading side of a stream, to run beside its [`TailBody`].
pub struct TailTask<H: Host, E: TailEnv> {
    host: H,
    env: E,
    slots: Arc<StreamSlots>,
    ns: String,
    pattern: Option<Pattern>,
    /// The position resumed from (for shards found later).
    resume: Position,
    shards: BTreeMap<u32, ShardCursor>,
    tx: mpsc::Sender<String>,
    shared: Arc<Shared>,
}

/// Why a stream stops.
enum Stop {
    /// The client left or the host stops.
    Quiet,
    /// The client or the reads fell behind.
    Lagged(String),
    /// A read failed for good.
    Failed(ApiError),
}

/// The shard numbers of `ns` among writer names.
fn shards_of(writers: &[String], ns: &str) -> Vec<u32> {
    let prefix = format!("{ns}/");
    let mut shards: Vec<u32> =
        writers.iter().filter_map(|w| w.strip_prefix(&prefix)).filter_map(|s| s.parse().ok()).collect();
    shards.sort_unstable();
    shards.dedup();
    shards
}

/// Reads the log of shard `shard` of `ns` after `after`.
async fn read_log<H: Host>(
    host: &H,
    ns: &str,
    shard: u32,
    after: u64,
    limit: usize,
) -> Result<(u64, Vec<OutboxRow>), ApiError> {
    <EventWriter as Outbox>::read_log(host, &writer_name(ns, shard), after, limit).await
}

/// One SSE message: optional `event:` and `id:` fields and one `data:` line.
fn sse(event: Option<&str>, id: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    if let Some(event) = event {
        out.push_str("event: ");
        out.push_str(event);
        out.push('\n');
    }
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
    out
}

/// Opens a stream of namespace `ns` (the caller's, already authenticated)
/// in `slot`: finds its writer shards, fixes the starting position (the end
/// of every shard, or `req.resume`) and queues the `ready` message. A resume
/// position beyond a shard's last event is refused (`INVALID_REQUEST`): it
/// was not made by this namespace's stream.
pub async fn open<H: Host, E: TailEnv>(
    host: H,
    env: E,
    slot: Slot,
    ns: &str,
    req: TailRequest,
) -> Result<(TailTask<H, E>, TailBody), ApiError> {
    let writers = env.writers().await?;
    let mut shards = BTreeMap::new();
    for shard in shards_of(&writers, ns) {
        let (last_seq, _) = read_log(&host, ns, shard, 0, 0).await?;
        let after = match &req.resume {
            None => last_seq,
            Some(position) => {
                let after = position.0.get(&shard).copied().unwrap_or(0);
                if after > last_seq {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("Last-Event-ID names event {after} of shard {shard}, which has {last_seq}"),
                    ));
                }
                after
            }
        };
        shards.insert(shard, ShardCursor { after, first_read: true });
    }
    let (mut tx, rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
    let shared = Arc::new(Shared::default());
    let position = Position(shards.iter().map(|(k, c)| (*k, c.after)).collect());
    let ready = format!(
        "retry: {RETRY_MS}\n{}",
        sse(
            Some("ready"),
            Some(&format!("@{}", position.encode())),
            &json!({"namespace": ns, "pattern": req.pattern.as_ref().map(Pattern::as_str), "position": position.encode()})
                .to_string(),
        )
    );
    shared.queued.fetch_add(ready.len(), Ordering::Relaxed);
    tx.try_send(ready).map_err(|_| ApiError::internal("a fresh stream channel refused a message"))?;
    let task = TailTask {
        host,
        env,
        slots: slot.slots.clone(),
        ns: ns.to_string(),
        pattern: req.pattern,
        resume: req.resume.unwrap_or_default(),
        shards,
        tx,
        shared: shared.clone(),
    };
    Ok((task, TailBody { rx, shared, done: false, _slot: slot }))
}

impl<H: Host, E: TailEnv> TailTask<H, E> {
    /// Reads and sends until the client leaves, lags, a read fails for good
    /// or the host stops.
    pub async fn run(mut self) {
        let stop = self.pump().await;
        let last = match stop {
            Stop::Quiet => None,
            Stop::Lagged(reason) => {
                metrics::counter!(METRIC_LAGGED).increment(1);
                let data = json!({"reason": reason, "resume": "reconnect with the last id received as Last-Event-ID"});
                Some(sse(Some("lagged"), None, &data.to_string()))
            }
            Stop::Failed(e) => {
                let data = json!({"error": e.message, "code": e.code.as_str(), "details": e.details});
                Some(sse(Some("error"), None, &data.to_string()))
            }
        };
        *self.shared.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
        // Dropping the sender ends the body after what is queued and `last`.
    }

    fn position(&self) -> Position {
        Position(self.shards.iter().map(|(k, c)| (*k, c.after)).collect())
    }

    /// Queues one message, or says why the stream must stop.
    fn send(&mut self, message: String) -> Result<(), Stop> {
        if self.shared.queued.load(Ordering::Relaxed) + message.len() > STREAM_BUFFER_BYTES {
            return Err(Stop::Lagged(format!("more than {STREAM_BUFFER_BYTES} bytes waited for the client")));
        }
        let len = message.len();
        match self.tx.try_send(message) {
            Ok(()) => {
                self.shared.queued.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.is_full() => {
                Err(Stop::Lagged(format!("more than {STREAM_BUFFER_MESSAGES} messages waited for the client")))
            }
            Err(_) => Err(Stop::Quiet),
        }
    }

    async fn refresh_shards(&mut self) -> Result<(), ApiError> {
        let writers = self.env.writers().await?;
        for shard in shards_of(&writers, &self.ns) {
            // A shard added since the stream opened holds only newer events:
            // all of them (after the resumed position, if it names the shard).
            let after = self.resume.0.get(&shard).copied().unwrap_or(0);
            self.shards.entry(shard).or_insert(ShardCursor { after, first_read: true });
        }
        Ok(())
    }

    async fn pump(&mut self) -> Stop {
        let mut last_message = self.host.now().as_millis();
        let mut last_refresh = last_message;
        loop {
            if self.tx.is_closed() || self.slots.is_closing() {
                return Stop::Quiet;
            }
            let now = self.host.now().as_millis();
            if now - last_refresh >= SHARDS_REFRESH_MS {
                last_refresh = now;
                if let Err(e) = self.refresh_shards().await
                    && !e.code.is_retryable()
                {
                    return Stop::Failed(e);
                }
            }
            let (sent, more) = match self.read_round().await {
                Ok(result) => result,
                Err(stop) => return stop,
            };
            let now = self.host.now().as_millis();
            if sent {
                last_message = now;
            } else if now - last_message >= HEARTBEAT_MS {
                if let Err(stop) = self.send(": heartbeat\n\n".to_string()) {
                    return stop;
                }
                last_message = now;
            }
            if !more {
                self.env.sleep(POLL_MS).await;
            }
        }
    }

    /// Reads every shard once and sends what matched, merged by event time
    /// (each shard's events stay in their order). Answers whether anything
    /// was sent and whether a shard has more to read at once.
    async fn read_round(&mut self) -> Result<(bool, bool), Stop> {
        let mut queues: Vec<(u32, VecDeque<OutboxEvent>)> = Vec::new();
        let mut ends: Vec<(u32, u64)> = Vec::new();
        let mut gaps = Vec::new();
        let mut more = false;
        let shards: Vec<(u32, u64, bool)> = self.shards.iter().map(|(k, c)| (*k, c.after, c.first_read)).collect();
        for (shard, after, first_read) in shards {
            let (last_seq, rows) = match read_log(&self.host, &self.ns, shard, after, READ_PAGE).await {
                Ok(answer) => answer,
                // A busy or restarting writer: try again next round.
                Err(e) if e.code.is_retryable() => continue,
                Err(e) => return Err(Stop::Failed(e)),
            };
            let first = rows.first().map_or(last_seq + 1, |r| r.first_seq());
            let missed = first.saturating_sub(after + 1);
            if missed > 0 {
                if !first_read {
                    return Err(Stop::Lagged(format!(
                        "the stream fell {missed} events behind the oldest event shard {shard} keeps"
                    )));
                }
                gaps.push(json!({"shard": shard, "after": after, "missed": missed, "resumedAfter": first - 1}));
            }
            let end = rows.last().map_or(first - 1, |r| r.last_seq).max(after);
            more |= end.saturating_sub(after) >= READ_PAGE as u64;
            let pattern = &self.pattern;
            let events = decode_matching(&rows, after, |ty| pattern.as_ref().is_none_or(|p| p.matches(ty)))
                .map_err(Stop::Failed)?;
            queues.push((shard, events.into()));
            ends.push((shard, end));
            if let Some(cursor) = self.shards.get_mut(&shard) {
                cursor.first_read = false;
            }
        }
        if !gaps.is_empty() {
            let missed: u64 = gaps.iter().filter_map(|g| g["missed"].as_u64()).sum();
            // Past the gap: a client reconnecting before the next event is not told again.
            let mut past = self.position();
            for gap in &gaps {
                if let (Some(shard), Some(at)) = (gap["shard"].as_u64(), gap["resumedAfter"].as_u64()) {
                    past.0.insert(shard as u32, at);
                }
            }
            let data = json!({
                "missed": missed,
                "shards": gaps,
                "reason": "these events already left the writers' buffers; GET /events reads them from the lake",
            });
            self.send(sse(Some("gap"), Some(&format!("@{}", past.encode())), &data.to_string()))?;
        }
        let mut sent = false;
        // Merge: repeatedly the earliest head (time, then id) of the shards' queues.
        loop {
            let next = queues
                .iter()
                .enumerate()
                .filter_map(|(i, (_, q))| q.front().map(|e| (i, (e.event.ts, e.event.id.as_str()))))
                .min_by(|a, b| a.1.cmp(&b.1))
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let shard = queues[i].0;
            let Some(item) = queues[i].1.pop_front() else { break };
            if let Some(cursor) = self.shards.get_mut(&shard) {
                cursor.after = item.seq;
            }
            let id = message_id(&item.event.id, &self.position());
            self.send(sse(None, Some(&id), &item.event.to_json().to_string()))?;
            metrics::counter!(METRIC_EVENTS).increment(1);
            sent = true;
        }
        for (shard, end) in ends {
            if let Some(cursor) = self.shards.get_mut(&shard) {
                cursor.after = cursor.after.max(end);
            }
        }
        Ok((sent, more))
    }
}

/// The body of a stream whose task runs only when the body is read (hosts
/// that cannot run a task of their own beside a response): both end
/// together. The client's reading paces the reads, so a slow client is cut
/// off only when the writers' log no longer holds its position.
pub fn drive<H: Host, E: TailEnv>(task: TailTask<H, E>, body: TailBody) -> impl Stream<Item = String> {
    use futures::StreamExt;
    let task = futures::stream::once(task.run()).filter_map(|()| async { None::<String> });
    futures::stream::select(body, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_resume_after_the_last_at_sign() {
        let p = Position(BTreeMap::from([(0, 15), (1, 7), (12, 0)]));
        assert_eq!(p.encode(), "0:15,1:7,12:0");
        assert_eq!(Position::parse(&p.encode()).unwrap(), p);
        // Client-given event ids may hold '@': the position is after the last one.
        let id = message_id("evt@home", &p);
        assert_eq!(id, "evt@home@0:15,1:7,12:0");
        assert_eq!(Position::from_last_event_id(&id).unwrap(), p);
        assert_eq!(Position::from_last_event_id("@").unwrap(), Position::default());
    }

    #[test]
    fn bad_resume_ids_are_refused_with_a_stable_code() {
        for bad in ["01HZX", "x@0", "x@0:a", "x@a:1", "x@0:1,0:2", "x@0:99999999999999999"] {
            let e = Position::from_last_event_id(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}");
        }
        let long = format!("x@{}", "0:1,".repeat(2_000));
        assert_eq!(Position::from_last_event_id(&long).unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn the_header_wins_over_the_query_parameter() {
        let req = parse_request(Some("order.*"), Some("a@0:5"), Some("b@0:1")).unwrap();
        assert_eq!(req.resume.unwrap().0[&0], 5);
        assert_eq!(req.pattern.unwrap().as_str(), "order.*");
        let req = parse_request(None, None, Some("b@0:1")).unwrap();
        assert_eq!(req.resume.unwrap().0[&0], 1);
        assert!(parse_request(Some(""), Some(" "), None).unwrap().resume.is_none());
        assert_eq!(parse_request(Some("a..b"), None, None).unwrap_err().code, ErrorCode::InvalidPattern);
    }

    #[test]
    fn slots_are_counted_per_namespace_and_given_back_on_drop() {
        let slots = StreamSlots::new(2);
        let a1 = slots.acquire("a").unwrap();
        let _a2 = slots.acquire("a").unwrap();
        let refused = slots.acquire("a").unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.details["limit"], 2);
        let _b = slots.acquire("b").unwrap();
        drop(a1);
        assert_eq!(slots.open("a"), 1);
        let _a3 = slots.acquire("a").unwrap();
        slots.close_all();
        assert_eq!(slots.acquire("c").unwrap_err().code, ErrorCode::ServiceUnavailable);
    }

    #[test]
    fn shards_are_read_from_writer_names_of_the_namespace_only() {
        let names: Vec<String> =
            ["acme/0", "acme/2", "acme-x/1", "acme/1", "other/0", "acme/0"].iter().map(|s| s.to_string()).collect();
        assert_eq!(shards_of(&names, "acme"), [0, 1, 2]);
    }

    #[test]
    fn messages_are_one_data_line_each() {
        assert_eq!(sse(None, Some("e@0:1"), "{}"), "id: e@0:1\ndata: {}\n\n");
        assert_eq!(sse(Some("lagged"), None, "{}"), "event: lagged\ndata: {}\n\n");
    }
}
