//! Client connections on the native server: connections that never finish
//! their request head are capped (per client IP and in total, within the
//! descriptors left once objects and the lake have theirs) and closed by the
//! header-read timeout; idle keep-alive connections are closed too. Objects
//! keep working while clients hold every connection they may.
//!
//! The attackers and the well-behaved clients leave from different loopback
//! addresses (Linux routes all of 127.0.0.0/8 to loopback), so the per-IP
//! cap can be told apart from the global one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use events_e2e::{DEADLINE, ServerOptions, TestServer, event, raise_open_files_limit, skip_on_external, unique_ns};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Half-open connections held by the attacker of the first test (the issue's figure).
const HALF_OPEN: usize = 5_000;
/// Open-file limit of the server under attack: without a cap, `HALF_OPEN`
/// sockets would take every descriptor.
const SERVER_OPEN_FILES: u64 = 4_096;
/// The per-IP cap the server runs with in the first test.
const PER_IP: usize = 500;

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn server_addr(server: &TestServer) -> SocketAddr {
    server.base_url().trim_start_matches("http://").parse().expect("base url is http://IP:PORT")
}

/// A connection from `from` that sent part of a request line and nothing else.
async fn half_open(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind a loopback source address");
    let mut stream = socket.connect(to).await.unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    // A closed (refused) connection may already reject the write; that is fine.
    let _ = stream.write_all(b"GET /hea").await;
    stream
}

/// Reads until the server closes the connection; returns what it sent.
/// Panics if that takes longer than [`DEADLINE`].
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // A reset also means the server closed it.
                Err(_) => return,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection within {DEADLINE:?}");
    String::from_utf8_lossy(&out).into_owned()
}

/// One keep-alive connection spoken to by hand, from its own address, so it
/// stays usable while every new connection is refused.
struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    async fn connect(from: IpAddr, to: SocketAddr) -> RawClient {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind");
        RawClient { stream: socket.connect(to).await.expect("connect") }
    }

    /// Sends one request and reads its answer: `(status, body)`.
    async fn request(&mut self, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, String) {
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: e2e\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await.expect("write head");
        self.stream.write_all(body.as_bytes()).await.expect("write body");
        let mut buf = Vec::new();
        let answer = tokio::time::timeout(DEADLINE, async {
            let mut chunk = [0u8; 8192];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().expect("content-length"))
                        .expect("answers carry a content-length");
                    if buf.len() >= end + 4 + len {
                        let status = head[9..12].parse().expect("status");
                        return (status, String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
                    }
                }
                let n = self.stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the server closed the control connection");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        answer.unwrap_or_else(|_| panic!("no answer to {method} {path} within {DEADLINE:?}"))
    }
}

/// Samples of `name` in a Prometheus text, keyed by their label text (`""` when none).
fn samples(text: &str, name: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((labels, value)) => (labels.to_string(), value),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => (String::new(), value),
                None => continue,
            },
        };
        out.insert(labels, value.trim().parse().unwrap_or(f64::NAN));
    }
    out
}

fn sample(text: &str, name: &str, labels: &str) -> f64 {
    samples(text, name).get(labels).copied().unwrap_or(0.0)
}

/// Parquet files of namespace `ns` in a local lake.
fn lake_files(lake: &Path, ns: &str) -> usize {
    fn walk(dir: &Path, out: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                *out += 1;
            }
        }
    }
    let mut n = 0;
    walk(&lake.join("events").join(format!("ns={ns}")), &mut n);
    n
}

#[tokio::test]
async fn half_open_connections_are_capped_and_objects_keep_their_descriptors() {
    if skip_on_external("starts the native server with its own limits and open-file limit") {
        return;
    }
    // The attacker's sockets, the control connection and the test's own files.
    let have = raise_open_files_limit(HALF_OPEN as u64 + 2_048);
    let half_open_count = HALF_OPEN.min(have.saturating_sub(1_024) as usize);
    assert!(half_open_count > 2 * PER_IP, "this test needs more than {} open files, has {have}", 2 * PER_IP + 1_024);

    let mut server = TestServer::start_with(
        ServerOptions::new()
            .open_files_limit(SERVER_OPEN_FILES)
            .env("EVENTS_HTTP_HEADER_READ_TIMEOUT_MS", "120000")
            .env("EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS", "120000")
            .env("EVENTS_HTTP_MAX_CONNECTIONS_PER_IP", &PER_IP.to_string())
            .toml("[writer]\nflush_max_age_ms = 500"),
    )
    .await;
    let addr = server_addr(&server);
    server.bind_client_to(loopback(2));
    let admin_token = server.admin_token().to_string();

    // 1. One address holds thousands of half-open connections: it gets its
    //    cap, the rest are refused with 503 at once.
    let attacker = loopback(1);
    let mut held = Vec::with_capacity(half_open_count);
    for _ in 0..half_open_count {
        held.push(half_open(attacker, addr).await);
    }
    let refused = (half_open_count - PER_IP) as f64;
    let deadline = Instant::now() + DEADLINE;
    let metrics = loop {
        let text = server.get("/metrics", &events_e2e::Auth::None).await.text;
        if sample(&text, "events_http_connections_refused_total", r#"reason="max_connections_per_ip""#) >= refused
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(&metrics, "events_http_connections_refused_total", r#"reason="max_connections_per_ip""#),
        refused,
        "{metrics}"
    );
    let open = sample(&metrics, "events_http_connections_open", "");
    assert!(open >= PER_IP as f64 && open <= (PER_IP + 4) as f64, "open connections: {open}\n{metrics}");
    let limit = sample(&metrics, "events_http_connections_limit", "");
    assert!(limit > PER_IP as f64 && limit < SERVER_OPEN_FILES as f64, "connection limit {limit}");
    // The last connection was refused: an OVERLOADED envelope with Retry-After, then close.
    let answer = read_to_close(held.last_mut().unwrap()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null);
    assert_eq!(body["code"], "OVERLOADED", "{answer}");

    // Everyone else is served: health, a key and ingest into a namespace no
    // object has opened yet, the background flush and an explicit one.
    server.get("/health", &events_e2e::Auth::None).await.expect(200);
    let ns = unique_ns("conn");
    let key = server.create_key(&ns).await;
    server.ingest_ok(&key.auth(), &[event("conn.test", "c-1"), event("conn.test", "c-2")]).await;
    let deadline = Instant::now() + DEADLINE;
    while lake_files(&server.lake_dir(), &ns) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lake_files(&server.lake_dir(), &ns) > 0, "the flush timer wrote no file for {ns}");
    server.admin_flush().await;

    // 2. Connections from many addresses fill the global cap: new clients are
    //    refused, and a connection opened before still reaches objects, a
    //    new namespace's included, and the lake.
    let other_ns = unique_ns("conn-full");
    let other_key = server.create_key(&other_ns).await;
    let mut control = RawClient::connect(loopback(9), addr).await;
    let mut next_ip = 10u8;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, text) = control.request("GET", "/metrics", &admin_token, None).await;
        assert_eq!(status, 200);
        if sample(&text, "events_http_connections_open", "") >= limit {
            break;
        }
        assert!(Instant::now() < deadline, "the open connections never reached the cap {limit}:\n{text}");
        for _ in 0..PER_IP / 2 {
            held.push(half_open(loopback(next_ip), addr).await);
        }
        next_ip += 1;
    }
    let mut newcomer = half_open(loopback(2), addr).await;
    let answer = read_to_close(&mut newcomer).await;
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("OVERLOADED"), "{answer}");
    let (status, text) = control.request("GET", "/metrics", &admin_token, None).await;
    assert_eq!(status, 200);
    assert!(sample(&text, "events_http_connections_refused_total", r#"reason="max_connections""#) >= 1.0, "{text}");

    let batch = json!({"events": [event("conn.full", "f-1")]});
    let (status, text) = control.request("POST", "/e", &other_key.key, Some(&batch)).await;
    assert_eq!(status, 200, "ingest into a new namespace at the connection cap: {text}");
    let (status, text) = control.request("POST", "/admin/flush", &admin_token, Some(&json!({}))).await;
    assert_eq!(status, 200, "flush at the connection cap: {text}");
    assert!(lake_files(&server.lake_dir(), &other_ns) > 0, "the flush wrote no file for {other_ns}: {text}");
    assert!(!server.stderr_log().contains("Too many open files"), "{}", server.stderr_log());

    // Letting go frees the slots.
    drop(held);
    let deadline = Instant::now() + DEADLINE;
    while server.get("/health", &events_e2e::Auth::None).await.status != 200 {
        assert!(Instant::now() < deadline, "the server did not accept clients again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn connections_that_never_finish_their_head_are_closed() {
    if skip_on_external("sets the server's header-read timeout") {
        return;
    }
    const COUNT: usize = 200;
    raise_open_files_limit(COUNT as u64 + 1_024);
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("EVENTS_HTTP_HEADER_READ_TIMEOUT_MS", "1000")
            .env("EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS", "60000"),
    )
    .await;
    let addr = server_addr(&server);
    let mut held = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        held.push(half_open(loopback(1), addr).await);
    }
    for stream in &mut held {
        let answer = read_to_close(stream).await;
        assert!(answer.is_empty(), "closed without an answer: {answer}");
    }
    let metrics = server.get("/metrics", &events_e2e::Auth::None).await.text;
    let closed = sample(&metrics, "events_http_connections_closed_total", r#"reason="header_timeout""#);
    assert!(closed >= COUNT as f64, "closed by the header timeout: {closed}\n{metrics}");
    server.get("/health", &events_e2e::Auth::None).await.expect(200);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    if skip_on_external("sets the server's keep-alive timeout") {
        return;
    }
    let server = TestServer::start_with(
        ServerOptions::new()
            .env("EVENTS_HTTP_HEADER_READ_TIMEOUT_MS", "60000")
            .env("EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS", "300"),
    )
    .await;
    let addr = server_addr(&server);
    let mut client = RawClient::connect(loopback(1), addr).await;
    let (status, _) = client.request("GET", "/health", server.admin_token(), None).await;
    assert_eq!(status, 200);
    // Idle after its answer: the server closes it, well before the header timeout.
    let rest = read_to_close(&mut client.stream).await;
    assert!(rest.is_empty(), "{rest}");
    let metrics = server.get("/metrics", &events_e2e::Auth::None).await.text;
    assert!(
        sample(&metrics, "events_http_connections_closed_total", r#"reason="keep_alive_timeout""#) >= 1.0,
        "{metrics}"
    );
}
