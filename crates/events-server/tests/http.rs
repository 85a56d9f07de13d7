//! Starts the real server on 127.0.0.1:0 and talks to it over HTTP.

use std::net::SocketAddr;

use events_server::{Server, ServerConfig};
use reqwest::{Client, StatusCode, header};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct TestServer {
    base: String,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            data_dir: dir.path().join("data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            env: "test".into(),
            ..Default::default()
        };
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        assert!(dir.path().join("data").is_dir());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            base: format!("http://{addr}"),
            client: Client::new(),
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

async fn json(res: reqwest::Response) -> Value {
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    res.json().await.unwrap()
}

#[tokio::test]
async fn health_shape() {
    let s = TestServer::start().await;
    for path in ["/health", "/"] {
        let res = s.get(path).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v = json(res).await;
        assert_eq!(v["status"], "ok");
        assert_eq!(v["service"], "events.do");
        assert_eq!(v["host"], "native");
        assert_eq!(v["env"], "test");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        let ts = v["ts"].as_str().unwrap();
        assert!(events_core::Timestamp::parse_iso(ts).is_some(), "{ts}");
        assert!(ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000Z".len(), "{ts}");
        assert_eq!(v.as_object().unwrap().len(), 6);
    }
    s.stop().await;
}

#[tokio::test]
async fn metrics_after_a_request() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/health").await.status(), StatusCode::OK);
    assert_eq!(s.get("/no/such/route").await.status(), StatusCode::NOT_FOUND);
    let res = s.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/plain; version=0.0.4");
    let text = res.text().await.unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("http_requests_total{")).collect();
    assert!(
        lines.iter().any(|l| l.contains(r#"method="GET""#)
            && l.contains(r#"route="/health""#)
            && l.contains(r#"status="200""#)),
        "{text}"
    );
    // Unknown paths share one label value instead of one per raw path.
    assert!(lines.iter().any(|l| l.contains(r#"route="unmatched""#) && l.contains(r#"status="404""#)), "{text}");
    assert!(!text.contains("/no/such/route"), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket{"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn openapi_document() {
    let s = TestServer::start().await;
    let res = s.get("/openapi.json").await;
    assert_eq!(res.status(), StatusCode::OK);
    let v = json(res).await;
    assert_eq!(v["openapi"], "3.1.0");
    for path in ["/health", "/", "/metrics", "/openapi.json"] {
        assert!(v["paths"][path]["get"].is_object(), "{path} missing");
    }
    assert!(v["components"]["schemas"]["ErrorBody"].is_object());
    assert!(v["components"]["schemas"]["Health"].is_object());
    // Every `{ns}` path parameter states the namespace rule.
    let mut ns_params = 0;
    for (path, item) in v["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["name"] == "ns") {
                ns_params += 1;
                let pattern = &p["schema"]["pattern"];
                assert_eq!(pattern, events_core::name::NAMESPACE_PATTERN, "{method} {path}: {p}");
            }
        }
    }
    assert!(ns_params > 10, "{ns_params} ns parameters");
    s.stop().await;
}

#[tokio::test]
async fn unknown_route_is_a_404_envelope() {
    let s = TestServer::start().await;
    let res = s.get("/nope").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let v = json(res).await;
    assert_eq!(v["code"], "NOT_FOUND");
    assert!(v["error"].as_str().unwrap().contains("/nope"));
    assert_eq!(v["details"], serde_json::json!({}));
    s.stop().await;
}

#[tokio::test]
async fn wrong_method_is_a_405_envelope_with_allow() {
    let s = TestServer::start().await;
    let res = s.client.post(s.url("/health")).body("{}").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = res.headers()[header::ALLOW].to_str().unwrap().to_string();
    assert!(allow.contains("GET"), "{allow}");
    let v = json(res).await;
    assert_eq!(v["code"], "METHOD_NOT_ALLOWED");
    assert_eq!(v["details"], serde_json::json!({}));
    s.stop().await;
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let s = TestServer::start().await;

    let res = s.client.get(s.url("/health")).header("x-request-id", "client-id_0123").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "client-id_0123");

    // Also on error responses.
    let res = s.client.get(s.url("/nope")).header("x-request-id", "another-id-456").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "another-id-456");

    for bad in ["short", "has.dots.in.it", &"x".repeat(65)] {
        let res = s.client.get(s.url("/health")).header("x-request-id", bad).send().await.unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert!(events_core::id::is_ulid(id), "{id}");
    }

    let a = s.get("/health").await.headers()["x-request-id"].to_str().unwrap().to_string();
    let b = s.get("/health").await.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(events_core::id::is_ulid(&a));
    assert_ne!(a, b);
    s.stop().await;
}

#[tokio::test]
async fn cors_preflight() {
    let s = TestServer::start().await;
    let res = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/health"))
        .header(header::ORIGIN, "https://example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let methods = res.headers()[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().to_string();
    assert!(methods.contains("GET") && methods.contains("POST"), "{methods}");
    let headers = res.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");

    let res = s.client.get(s.url("/health")).header(header::ORIGIN, "https://example.com").send().await.unwrap();
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    s.stop().await;
}

#[tokio::test]
async fn serve_shuts_down_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(events_server::serve(config, async move {
        let _ = rx.await;
    }));
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bind_failure_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config =
        ServerConfig { data_dir: dir.path().to_path_buf(), listen: taken.local_addr().unwrap(), ..Default::default() };
    let err = events_server::serve(config, std::future::pending()).await.unwrap_err();
    assert!(format!("{err:#}").contains("cannot listen on"), "{err:#}");
}

/// Starts a server with `http` settings; returns it and its address.
async fn start_with_http(http: events_server::http_config::HttpConfig) -> (TestServer, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        env: "test".into(),
        http,
        ..Default::default()
    };
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let s = TestServer {
        base: format!("http://{addr}"),
        client: Client::new(),
        stop: Some(tx),
        task: Some(task),
        _dir: dir,
    };
    (s, addr)
}

/// Reads until the server closes the connection (bounded by a generous wait).
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn connections_beyond_the_per_ip_cap_get_503_and_heads_that_never_finish_are_closed() {
    use tokio::io::AsyncWriteExt;
    let http = events_server::http_config::HttpConfig {
        header_read_timeout_ms: 2_000,
        max_connections_per_ip: 2,
        ..Default::default()
    };
    let (s, addr) = start_with_http(http).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /hea").await.unwrap();
        held.push(c);
    }
    // The third is refused whatever the first two do.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = read_to_close(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1") && answer.contains("\"code\":\"OVERLOADED\""), "{answer}");
    // The two half-open ones are closed by the header-read timeout.
    for c in &mut held {
        let answer = read_to_close(c).await;
        assert!(answer.is_empty(), "closed without an answer: {answer}");
    }
    // Then the address may connect again.
    assert_eq!(s.get("/health").await.status(), StatusCode::OK);
    s.stop().await;
}
