//! A webhook receiver for the subscription tests: a real HTTP/1.1 listener
//! on a free local port that hands each request's body to the test.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts a receiver; `accept` sees each request's body and says whether to
/// answer 200 (`true`) or 500 (`false`). Returns the URL to deliver to.
pub async fn serve(accept: impl Fn(&[u8]) -> bool + Clone + Send + Sync + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let accept = accept.clone();
            tokio::spawn(async move {
                let Some(body) = read_body(&mut sock).await else { return };
                let answer: &[u8] = if accept(&body) {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
                };
                let _ = sock.write_all(answer).await;
            });
        }
    });
    url
}

/// Reads one request (its head and a `Content-Length` body) and returns the
/// body; `None` if the peer closed first.
async fn read_body(sock: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(buf.split_off(end + 4));
            }
        }
    }
}
