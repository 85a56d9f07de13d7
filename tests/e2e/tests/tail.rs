//! The live tail, `GET /events/stream` (Server-Sent Events), and `events tail`:
//! resuming with `Last-Event-ID` across writer shards with no gap and no
//! duplicate, the slow-reader cut-off, the stream limit, tenant isolation
//! and authentication. Every check counts messages and ids; the deadlines
//! only keep a broken server from hanging the suite.

use std::collections::{BTreeSet, VecDeque};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use events_e2e::{Auth, DEADLINE, Reply, ServerOptions, TestServer, event, events_bin, skip_on_external, unique_ns};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One Server-Sent Events message (comments dropped).
#[derive(Debug, Clone, Default)]
struct Message {
    event: String,
    id: Option<String>,
    data: String,
}

impl Message {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }

    /// An event message's event id.
    fn event_id(&self) -> String {
        self.json()["id"].as_str().unwrap_or_else(|| panic!("no event id: {}", self.data)).to_string()
    }
}

/// Parses whole messages out of `buf` (the server writes `\n` line ends).
fn parse_messages(buf: &mut Vec<u8>, out: &mut VecDeque<Message>) {
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let block: Vec<u8> = buf.drain(..end + 2).collect();
        let text = String::from_utf8(block).expect("the stream is UTF-8");
        let mut message = Message::default();
        let mut fields = 0;
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with(':')) {
            let (field, value) =
                line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            fields += 1;
            match field {
                "event" => message.event = value.to_string(),
                "id" => message.id = Some(value.to_string()),
                "data" => message.data.push_str(value),
                _ => {}
            }
        }
        if fields > 0 {
            out.push_back(message);
        }
    }
}

/// An open stream read through reqwest.
struct Stream {
    res: reqwest::Response,
    buf: Vec<u8>,
    queue: VecDeque<Message>,
}

/// A client without a total timeout (streams outlive the shared client's).
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("building the HTTP client")
}

/// Opens `GET /events/stream?query`; the reply when it is not 200.
async fn open(server: &TestServer, auth: &Auth, query: &str, last_event_id: Option<&str>) -> Result<Stream, Reply> {
    let mut rb = stream_client().get(server.url(&format!("/events/stream?{query}")));
    if let Some(id) = last_event_id {
        rb = rb.header("Last-Event-ID", id);
    }
    let res = auth.apply(rb).send().await.expect("sending the stream request");
    if res.status() != 200 {
        return Err(Reply::read(res).await);
    }
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(content_type, "text/event-stream");
    let mut stream = Stream { res, buf: Vec::new(), queue: VecDeque::new() };
    let ready = stream.next().await;
    assert_eq!(ready.event, "ready", "the first message: {ready:?}");
    assert!(ready.id.as_deref().is_some_and(|id| id.starts_with('@')), "{ready:?}");
    Ok(stream)
}

async fn open_ok(server: &TestServer, auth: &Auth, query: &str, last_event_id: Option<&str>) -> Stream {
    match open(server, auth, query, last_event_id).await {
        Ok(s) => s,
        Err(r) => panic!("stream refused: {} {}", r.status, r.text),
    }
}

impl Stream {
    /// The next message (panics if none comes within [`DEADLINE`] or the stream ends).
    async fn next(&mut self) -> Message {
        loop {
            if let Some(m) = self.queue.pop_front() {
                return m;
            }
            let chunk = tokio::time::timeout(DEADLINE, self.res.chunk())
                .await
                .expect("no message within the deadline")
                .expect("reading the stream")
                .expect("the stream ended");
            self.buf.extend_from_slice(&chunk);
            parse_messages(&mut self.buf, &mut self.queue);
        }
    }

    /// Event messages up to and including the one whose event id is `last`.
    async fn events_through(&mut self, last: &str) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            assert!(m.event.is_empty(), "unexpected message {m:?}");
            let done = m.event_id() == last;
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(Message::event_id).collect()
}

/// The ids, asserting each appears once.
fn unique(ids: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "duplicates in {ids:?}");
    set
}

fn id_set(prefix: &str, range: std::ops::RangeInclusive<usize>) -> BTreeSet<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// Sends events `prefix<from..=to>`, one batch each, all at once (so that
/// they spread over the writer shards: each goes to the least busy).
async fn send_range(server: &TestServer, auth: &Auth, prefix: &str, range: std::ops::RangeInclusive<usize>) {
    let all: Vec<Value> = range.map(|i| event("tail.test", &format!("{prefix}{i}"))).collect();
    futures::future::join_all(all.chunks(1).map(|one| server.ingest_ok(auth, one))).await;
}

/// The shards a message id names with a position past 0.
fn shards_used(id: &str) -> usize {
    id.rsplit_once('@').unwrap().1.split(',').filter(|p| p.split_once(':').is_some_and(|(_, seq)| seq != "0")).count()
}

/// A Prometheus sample of the server's `/metrics`, 0 when absent.
async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server.get("/metrics", &Auth::None).await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap_or_else(|_| panic!("{name} is not a number: {v}")))
}

/// Several writer shards per namespace, and a flush age far beyond the test,
/// so that a resumed position is always still in the writers' buffers.
fn sharded() -> ServerOptions {
    ServerOptions::new().toml("[shards]\nmin = 4\n\n[writer]\nflush_max_age_ms = 3600000")
}

#[tokio::test]
async fn resuming_with_last_event_id_has_no_gap_and_no_duplicate_across_shards() {
    if skip_on_external("configures the shards and the flush age") {
        return;
    }
    let server = TestServer::start_with(sharded()).await;
    let key = server.create_key(&unique_ns("tail")).await;
    let auth = key.auth();

    // Groups of 8 concurrent events until they went to at least two shards.
    let mut first = open_ok(&server, &auth, "", None).await;
    let mut seen = Vec::new();
    let mut sent = 0;
    while seen.is_empty() || shards_used(seen.last().map(|m: &Message| m.id.as_deref().unwrap()).unwrap()) < 2 {
        assert!(sent < 400, "the events never spread over two shards");
        send_range(&server, &auth, "e", sent + 1..=sent + 8).await;
        sent += 8;
        while seen.len() < sent {
            let m = first.next().await;
            assert!(m.event.is_empty(), "{m:?}");
            seen.push(m);
        }
    }
    assert_eq!(unique(&ids(&seen)), id_set("e", 1..=sent));
    let positions: BTreeSet<String> =
        seen.iter().map(|m| m.id.clone().unwrap().rsplit_once('@').unwrap().1.to_string()).collect();
    assert_eq!(positions.len(), sent, "every message moves the position");
    drop(first);

    // Sent while nobody listens.
    send_range(&server, &auth, "e", sent + 1..=sent + 12).await;

    // From the middle of what the first stream delivered: the rest of it, then the new ones.
    let half = sent / 2;
    let middle = seen[half - 1].id.clone().unwrap();
    let mut resumed = open_ok(&server, &auth, "", Some(&middle)).await;
    server.ingest_ok(&auth, &[event("tail.test", "end-1")]).await;
    let got = resumed.events_through("end-1").await;
    let expected: BTreeSet<String> =
        ids(&seen[half..]).into_iter().chain(id_set("e", sent + 1..=sent + 12)).chain(["end-1".to_string()]).collect();
    assert_eq!(unique(&ids(&got)), expected, "the rest of the first stream and what was sent meanwhile");

    // From the last id the first stream delivered, through the query parameter.
    let last = seen.last().unwrap().id.clone().unwrap();
    let query = format!("lastEventId={}", events_e2e::url_encode(&last));
    let mut again = open_ok(&server, &auth, &query, None).await;
    server.ingest_ok(&auth, &[event("tail.test", "end-2")]).await;
    let got = again.events_through("end-2").await;
    let expected: BTreeSet<String> =
        id_set("e", sent + 1..=sent + 12).into_iter().chain(["end-1".to_string(), "end-2".to_string()]).collect();
    assert_eq!(unique(&ids(&got)), expected);

    // And from the resumed stream's own last id: nothing it already had.
    let last = got.last().unwrap().id.clone().unwrap();
    drop(again);
    let mut third = open_ok(&server, &auth, "type=tail.*", Some(&last)).await;
    server.ingest_ok(&auth, &[event("other.kind", "skipped"), event("tail.test", "end-3")]).await;
    let got = third.events_through("end-3").await;
    assert_eq!(ids(&got), ["end-3"], "only events after the position, of the pattern");
}

#[tokio::test]
async fn a_resume_older_than_the_buffers_says_how_many_events_it_missed() {
    let server = TestServer::start().await;
    let key = server.create_key(&unique_ns("gap")).await;
    let auth = key.auth();
    send_range(&server, &auth, "old-", 1..=5).await;
    server.admin_flush().await;
    // Flushed rows leave the buffers once every outbox consumer took them too:
    // resume from before the first event (`@`) until the stream reports all five missed.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut stream = open_ok(&server, &auth, "", Some("@")).await;
        let first = stream.next().await;
        if first.event == "gap" && first.json()["missed"] == 5 {
            assert!(first.id.as_deref().is_some_and(|id| id.starts_with('@')), "the gap moves the id: {first:?}");
            // Resuming from the gap's id does not report it again.
            drop(stream);
            let mut again = open_ok(&server, &auth, "", first.id.as_deref()).await;
            server.ingest_ok(&auth, &[event("tail.test", "new")]).await;
            let next = again.next().await;
            assert_eq!((next.event.as_str(), next.event_id()), ("", "new".to_string()), "{next:?}");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the flushed events never left the buffers: {first:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off_with_lagged() {
    if skip_on_external("reads the server's metrics and fills its socket buffers") {
        return;
    }
    let server = TestServer::start().await;
    let key = server.create_key(&unique_ns("slow")).await;
    let auth = key.auth();
    let addr: std::net::SocketAddr = server.base_url().trim_start_matches("http://").parse().unwrap();

    // A client with a small receive buffer that reads the head and the first message, then stops.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /events/stream HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\naccept: text/event-stream\r\n\r\n",
        key.key
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("event: ready") {
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut chunk)).await.expect("no answer").unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&chunk[..n]);
    }
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head") + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");

    // Events much larger than the socket buffers until the server gives up on this client.
    let pad = "x".repeat(8_000);
    let mut sent = BTreeSet::new();
    let before = metric(&server, "events_stream_lagged_total").await;
    for batch in 0..200 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let id = format!("big-{batch}-{i}");
                sent.insert(id.clone());
                json!({"type": "load.big", "id": id, "pad": pad})
            })
            .collect();
        server.ingest_ok(&auth, &events).await;
        if metric(&server, "events_stream_lagged_total").await > before {
            break;
        }
    }
    assert!(metric(&server, "events_stream_lagged_total").await > before, "the slow reader was never cut off");

    // Now read everything the server still had for this client: events, then `lagged`, then the end.
    let mut body = raw[head_end..].to_vec();
    let mut decoded = Vec::new();
    loop {
        if let Some(rest) = dechunk(&mut body, &mut decoded) {
            assert!(rest.is_empty() || rest.starts_with(b"\r\n"), "bytes after the last chunk");
            break;
        }
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut chunk)).await.expect("the stream never ended").unwrap();
        assert!(n > 0, "the connection closed before the last chunk");
        body.extend_from_slice(&chunk[..n]);
    }
    let mut messages = VecDeque::new();
    parse_messages(&mut decoded, &mut messages);
    let messages: Vec<Message> = messages.into_iter().collect();
    let last = messages.last().expect("messages");
    assert_eq!(last.event, "lagged", "the final message: {last:?}");
    assert!(last.json()["reason"].is_string(), "{last:?}");
    let events: Vec<&Message> = messages.iter().filter(|m| m.event.is_empty()).collect();
    let got: Vec<String> = events.iter().map(|m| m.event_id()).collect();
    eprintln!("the slow reader got {} of {} events before `lagged`", got.len(), sent.len());
    let got_set = unique(&got);
    assert!(got_set.is_subset(&sent), "only sent events");
    assert!(
        got.len() < sent.len(),
        "the client was cut off before it got everything ({} of {})",
        got.len(),
        sent.len()
    );
    assert_eq!(messages.iter().filter(|m| m.event == "lagged").count(), 1);
}

/// Moves the payload of the whole chunks at the front of `body` to `out`;
/// at the last (empty) chunk, answers what follows it.
fn dechunk(body: &mut Vec<u8>, out: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        if size == 0 {
            return Some(body[line_end + 2..].to_vec());
        }
        if body.len() < line_end + 2 + size + 2 {
            return None;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body.drain(..line_end + 2 + size + 2);
    }
}

#[tokio::test]
async fn streams_beyond_the_namespace_limit_are_refused_with_429() {
    if skip_on_external("reads the server's metrics") {
        return;
    }
    let server = TestServer::start().await;
    let key = server.create_key(&unique_ns("limit")).await;
    let other = server.create_key(&unique_ns("limit-other")).await;
    let mut open_streams = Vec::new();
    let refused = loop {
        match open(&server, &key.auth(), "", None).await {
            Ok(stream) => open_streams.push(stream),
            Err(reply) => break reply,
        }
        assert!(open_streams.len() <= 1_000, "no limit");
    };
    let details = refused.expect_error(429, "RATE_LIMITED");
    assert_eq!(details["limit"].as_u64(), Some(open_streams.len() as u64), "{}", refused.text);
    assert!(!open_streams.is_empty());
    assert!(refused.header("retry-after").is_some(), "429 carries Retry-After");

    // Another namespace is not affected.
    let _other_stream = open_ok(&server, &other.auth(), "", None).await;
    assert_eq!(metric(&server, "events_stream_open").await, open_streams.len() as f64 + 1.0);

    // A closed stream gives its place back (once the server notices: events make it write).
    open_streams.pop();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut n = 0;
    loop {
        n += 1;
        server.ingest_ok(&key.auth(), &[event("tail.test", &format!("poke-{n}"))]).await;
        match open(&server, &key.auth(), "", None).await {
            Ok(stream) => {
                open_streams.push(stream);
                break;
            }
            Err(reply) => reply.expect_error(429, "RATE_LIMITED"),
        };
        assert!(tokio::time::Instant::now() < deadline, "the closed stream's place never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_namespace_stream_never_shows_another_namespaces_events() {
    let server = TestServer::start().await;
    let (ns_a, ns_b) = (unique_ns("tenant-a"), unique_ns("tenant-b"));
    let key_a = server.create_key(&ns_a).await;
    let key_b = server.create_key(&ns_b).await;
    // A's key asking for B's namespace still streams A's.
    let mut a_auth_header = stream_client().get(server.url("/events/stream"));
    a_auth_header = a_auth_header.bearer_auth(&key_a.key).header("X-Namespace", &ns_b);
    let res = a_auth_header.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream_a = Stream { res, buf: Vec::new(), queue: VecDeque::new() };
    let ready = stream_a.next().await;
    assert_eq!(ready.json()["namespace"], ns_a.as_str(), "{ready:?}");
    // The admin streams B's through X-Namespace.
    let mut stream_b = open_ok(&server, &server.admin_for(&ns_b), "", None).await;

    for round in 0..3 {
        server
            .ingest_ok(
                &key_b.auth(),
                &[event("tenant.x", &format!("b-{round}-0")), event("tenant.x", &format!("b-{round}-1"))],
            )
            .await;
        server.ingest_ok(&key_a.auth(), &[event("tenant.x", &format!("a-{round}"))]).await;
    }
    server.ingest_ok(&key_a.auth(), &[event("tenant.x", "a-end")]).await;
    server.ingest_ok(&key_b.auth(), &[event("tenant.x", "b-end")]).await;

    let got_a = stream_a.events_through("a-end").await;
    assert_eq!(unique(&ids(&got_a)), ["a-0", "a-1", "a-2", "a-end"].iter().map(|s| s.to_string()).collect());
    assert!(got_a.iter().all(|m| m.json()["ns"] == ns_a.as_str()));
    let got_b = stream_b.events_through("b-end").await;
    let want_b: BTreeSet<String> =
        (0..3).flat_map(|r| [format!("b-{r}-0"), format!("b-{r}-1")]).chain(["b-end".to_string()]).collect();
    assert_eq!(unique(&ids(&got_b)), want_b);
    assert!(got_b.iter().all(|m| m.json()["ns"] == ns_b.as_str()));
}

#[tokio::test]
async fn streams_need_credentials_and_valid_parameters() {
    let server = TestServer::start().await;
    server.get("/events/stream", &Auth::None).await.expect_error(401, "AUTH_REQUIRED");
    server.get("/events/stream", &Auth::Header("Basic abc".into())).await.expect_error(401, "INVALID_AUTH_FORMAT");
    let forged = format!("ns_nobody_{}", "ab".repeat(32));
    server.get("/events/stream", &Auth::Key(forged)).await.expect_error(401, "INVALID_API_KEY");

    let key = server.create_key(&unique_ns("params")).await;
    server.get("/events/stream?type=a..b", &key.auth()).await.expect_error(400, "INVALID_PATTERN");
    let r = open(&server, &key.auth(), "", Some("not-a-stream-id")).await.err().expect("refused");
    r.expect_error(400, "INVALID_REQUEST");
    // A position beyond what the namespace's shards ever held was not made by its stream.
    server.ingest_ok(&key.auth(), &[event("tail.test", "one")]).await;
    let beyond: Vec<String> = (0..16).map(|s| format!("{s}:999999")).collect();
    let r = open(&server, &key.auth(), "", Some(&format!("x@{}", beyond.join(",")))).await.err().expect("refused");
    r.expect_error(400, "INVALID_REQUEST");
}

#[tokio::test]
async fn events_tail_prints_ndjson_and_resumes_after_a_restart() {
    if skip_on_external("restarts the server and runs the CLI against it") {
        return;
    }
    let mut server = TestServer::start_with(sharded()).await;
    let key = server.create_key(&unique_ns("cli-tail")).await;
    let auth = key.auth();
    // `@` is the position before every shard's first event: the namespace's whole buffer.
    let mut child = Command::new(events_bin())
        .args(["tail", "--json", "--count", "6", "--last-event-id", "@"])
        .args(["--url", server.base_url(), "--token", &key.key])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running events tail");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_for = |lines: &mut Vec<String>, n: usize| {
        while lines.len() < n {
            lines.push(rx.recv_timeout(DEADLINE).expect("events tail printed nothing new"));
        }
    };

    send_range(&server, &auth, "before-", 1..=3).await;
    wait_for(&mut lines, 3);
    // The server dies under the tail; it reconnects to the new process and resumes.
    server.restart().await;
    send_range(&server, &auth, "after-", 1..=3).await;
    wait_for(&mut lines, 6);

    let status = child.wait().expect("waiting for events tail");
    assert!(status.success(), "events tail exited with {status}");
    let printed: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON ({e}): {l}"));
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    let want: BTreeSet<String> = id_set("before-", 1..=3).into_iter().chain(id_set("after-", 1..=3)).collect();
    assert_eq!(unique(&printed), want, "every event once, across the restart");
}
