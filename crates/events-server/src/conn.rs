//! Client connections: the accept loop, their timeouts and limits.
//!
//! Each accepted connection is served by hyper's HTTP/1 server with a
//! header-read timeout (a request head must arrive complete in time, also on
//! an idle keep-alive connection) and a keep-alive timeout (a connection with
//! no request in progress and nothing received is closed). Open connections
//! are capped globally and per client IP; the global cap is also held within
//! the descriptors the object host granted to client sockets, so clients can
//! never take the descriptors objects and the lake need. A connection beyond a
//! cap is answered `503 OVERLOADED` with `Retry-After` and closed at once.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::Request;
use events_core::{ApiError, ErrorCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::http_config::HttpConfig;
use crate::telemetry::HTTP_CONNECTIONS_REFUSED_TOTAL;
use crate::telemetry::{HTTP_CONNECTIONS_CLOSED_TOTAL, HTTP_CONNECTIONS_LIMIT, HTTP_CONNECTIONS_OPEN};

/// Seconds a refused client is asked to wait (`Retry-After`).
pub const REFUSED_RETRY_AFTER_SECS: u64 = 1;
/// Pause after a failed `accept` (e.g. out of descriptors) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The connection caps in force, and the connections open under them.
#[derive(Debug)]
pub struct ConnLimits {
    max: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused (the `reason` label of the refused counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The global cap is reached.
    Total,
    /// The client's IP address has its cap of connections open.
    PerIp,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        }
    }
}

impl ConnLimits {
    /// Caps of `config`, the global one held within `client_fds` descriptors.
    pub fn new(config: &HttpConfig, client_fds: u64) -> Arc<ConnLimits> {
        let fds = usize::try_from(client_fds).unwrap_or(usize::MAX);
        let max = config.max_connections.min(fds).max(1);
        if max < config.max_connections {
            tracing::warn!(
                configured = config.max_connections,
                max,
                "the open-file limit caps client connections; raise `ulimit -n` for more"
            );
        }
        metrics::gauge!(HTTP_CONNECTIONS_LIMIT).set(max as f64);
        Arc::new(ConnLimits { max, max_per_ip: config.max_connections_per_ip, open: Mutex::default() })
    }

    /// The global cap in force.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts a new connection from `ip`, or says why it is refused.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max {
            return Err(Refusal::Total);
        }
        let from_ip = open.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        open.total += 1;
        metrics::gauge!(HTTP_CONNECTIONS_OPEN).set(open.total as f64);
        Ok(ConnPermit { limits: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
        metrics::gauge!(HTTP_CONNECTIONS_OPEN).set(open.total as f64);
    }
}

/// Accepts connections on `listener` and serves `app` on each until
/// `shutdown` completes; then stops accepting, lets every connection finish
/// its request in progress, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    limits: Arc<ConnLimits>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(config.header_read_timeout_ms));
    let keep_alive = Duration::from_millis(config.keep_alive_timeout_ms);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let permit = match limits.acquire(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL, "reason" => refusal.label()).increment(1);
                tracing::debug!(%peer, reason = refusal.label(), "connection refused");
                refuse(stream, refusal);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = serve_connection(stream, peer, app.clone(), builder.clone(), keep_alive, stop_rx.clone());
        connections.spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Writes `503 OVERLOADED` with `Retry-After` if the socket takes it at once, and closes.
fn refuse(stream: TcpStream, refusal: Refusal) {
    let message = match refusal {
        Refusal::Total => "the server has too many open connections; retry later",
        Refusal::PerIp => "too many open connections from this address; retry later",
    };
    let body = crate::error::envelope(&ApiError::new(ErrorCode::Overloaded, message)).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {REFUSED_RETRY_AFTER_SECS}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Never waits: a fresh socket's send buffer is empty.
    let _ = stream.try_write(response.as_bytes());
}

/// Serves one connection until it closes, closing it once idle for `keep_alive`
/// or when `stop` turns true (after the request in progress).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    builder: http1::Builder,
    keep_alive: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = activity.begin();
            let answer = app.clone().oneshot(req.map(Body::new));
            async move {
                let res = answer.await?;
                Ok::<_, std::convert::Infallible>(res.map(|body| Body::new(InFlight { body, _busy: busy })))
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let idle_at = activity.idle_at(keep_alive);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        metrics::counter!(HTTP_CONNECTIONS_CLOSED_TOTAL, "reason" => "header_timeout").increment(1);
                    }
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !closing => {
                if changed.is_err() || *stop.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(idle_at.into()), if !closing => {
                if activity.is_idle(keep_alive) {
                    metrics::counter!(HTTP_CONNECTIONS_CLOSED_TOTAL, "reason" => "keep_alive_timeout").increment(1);
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When a connection last received bytes or finished a response, and how
/// many of its requests are in progress.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    in_progress: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity { start: Instant::now(), last: AtomicU64::new(0), in_progress: AtomicUsize::new(0) }
    }

    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    fn idle_at(&self, keep_alive: Duration) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + keep_alive
    }

    fn is_idle(&self, keep_alive: Duration) -> bool {
        self.in_progress.load(Ordering::Relaxed) == 0 && Instant::now() >= self.idle_at(keep_alive)
    }
}

/// A request in progress, until its response body is sent or dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in progress.
struct InFlight {
    body: Body,
    _busy: Busy,
}

impl HttpBody for InFlight {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when bytes arrive.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> Arc<ConnLimits> {
        let config = HttpConfig { max_connections: max, max_connections_per_ip: per_ip, ..Default::default() };
        ConnLimits::new(&config, u64::MAX)
    }

    #[test]
    fn caps_per_ip_then_globally_and_releases_on_drop() {
        let l = limits(3, 2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).unwrap_err(), Refusal::PerIp);
        let _b1 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).unwrap_err(), Refusal::Total);
        assert_eq!(l.open(), 3);
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.acquire(a).unwrap();
    }

    #[test]
    fn the_global_cap_stays_within_the_granted_descriptors() {
        let config = HttpConfig { max_connections: 4_096, ..Default::default() };
        assert_eq!(ConnLimits::new(&config, 1_000).max(), 1_000);
        assert_eq!(ConnLimits::new(&config, 1_000_000).max(), 4_096);
    }
}
