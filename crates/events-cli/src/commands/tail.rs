//! `events tail`: the namespace's events as they arrive, from the live tail
//! (`GET /events/stream`), resuming after a reconnect with `Last-Event-ID`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::ClientArgs;
use crate::client::{Client, error};
use crate::output::Format;

const EXAMPLES: &str = "\
Examples:
  # Every event of your namespace as it arrives (Ctrl-C to stop)
  events tail --token $EVENTS_TOKEN

  # Order events only, as NDJSON for jq
  events tail 'order.*' --json | jq .amount

  # The next 10 events, then exit
  events tail --count 10 --json

  # With the admin token, another namespace
  events tail --token $EVENTS_ADMIN_TOKEN --namespace acme

A dropped connection is retried, resuming after the last event printed, so
none is skipped or printed twice. When the server no longer holds the events
missed (they are in the lake), a warning says how many; read them with GET /events.";

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Print the namespace's events as they arrive (Server-Sent Events from /events/stream).
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TailArgs {
    /// Event-type pattern (`order.*`, `webhook.**`); every event without.
    pub pattern: Option<String>,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Start after this message id (an `id` printed by `--ids`, or kept from an earlier run).
    #[arg(long, value_name = "ID")]
    pub last_event_id: Option<String>,
    /// Print each event's message id on stderr (what `--last-event-id` takes).
    #[arg(long)]
    pub ids: bool,
    /// Namespace to tail with the admin token (X-Namespace).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Server, credentials and output (`--json`, or any format but `table`,
    /// prints one JSON object per line; so does a pipe).
    #[command(flatten)]
    pub client: ClientArgs,
}

/// One Server-Sent Events message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// `event:` (empty for an unnamed message).
    pub event: String,
    /// `id:`, if the message had one.
    pub id: Option<String>,
    /// `data:` lines, joined by newlines.
    pub data: String,
    /// `retry:` (ms), if given.
    pub retry: Option<u64>,
}

/// An incremental Server-Sent Events parser (the WHATWG rules, minus BOM handling).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    current: Message,
    has_data: bool,
    last_cr: bool,
}

impl SseParser {
    /// Feeds bytes; returns the messages completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.last_cr && b == b'\n' {
                self.last_cr = false;
                continue;
            }
            self.last_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                if let Some(message) = self.line_done(&String::from_utf8_lossy(&line)) {
                    out.push(message);
                }
            } else {
                self.line.push(b);
            }
        }
        out
    }

    fn line_done(&mut self, line: &str) -> Option<Message> {
        if line.is_empty() {
            let message = std::mem::take(&mut self.current);
            let had = std::mem::take(&mut self.has_data);
            // A message without data still moves the id (and the retry delay).
            return (had || message.id.is_some() || message.retry.is_some()).then_some(message);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.current.id = Some(value.to_string()),
            "retry" => self.current.retry = value.parse().ok(),
            _ => {}
        }
        None
    }
}

/// How one connection ended.
enum Ended {
    /// Enough events printed.
    Done,
    /// Reconnect, resuming after the last id: after `wait`, or after the
    /// growing back-off delay without one.
    Reconnect { wait: Option<Duration>, why: String },
}

struct Tail {
    args: TailArgs,
    printed: u64,
    last_id: Option<String>,
    retry: Duration,
    color: bool,
}

impl Tail {
    fn print(&mut self, message: &Message) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.args.client.output.format() != Format::Table {
            writeln!(out, "{}", message.data)?;
        } else {
            let mut event: Value =
                serde_json::from_str(&message.data).context("the server sent an event that is not JSON")?;
            let field = |v: &mut Value, k: &str| v.as_object_mut().and_then(|o| o.remove(k)).unwrap_or(Value::Null);
            let ts = field(&mut event, "ts");
            let ty = field(&mut event, "type");
            let id = field(&mut event, "id");
            field(&mut event, "ns");
            let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let (bold, dim, reset) = if self.color { ("\x1b[1m", "\x1b[2m", "\x1b[0m") } else { ("", "", "") };
            writeln!(out, "{dim}{}{reset} {bold}{}{reset} {dim}{}{reset} {event}", text(&ts), text(&ty), text(&id))?;
        }
        out.flush()?;
        if self.args.ids
            && let Some(id) = &message.id
        {
            eprintln!("id: {id}");
        }
        Ok(())
    }

    /// One connection: reads messages until it ends.
    async fn connect(&mut self, client: &Client) -> anyhow::Result<Ended> {
        let mut path = "/events/stream".to_string();
        if let Some(pattern) = &self.args.pattern {
            path.push_str(&format!("?type={}", encode(pattern)));
        }
        let mut rb = client.request(Method::GET, &path).header("accept", "text/event-stream");
        if let Some(ns) = &self.args.namespace {
            rb = rb.header("X-Namespace", ns);
        }
        if let Some(id) = &self.last_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let mut response = match rb.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Ended::Reconnect { wait: None, why: format!("cannot connect: {e}") }),
        };
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            let why = error(status, &response.text().await.unwrap_or_default()).to_string();
            return Ok(Ended::Reconnect { wait, why });
        }
        if !status.is_success() {
            // Authentication, a bad pattern or id: retrying would not help.
            return Err(error(status, &response.text().await.unwrap_or_default()));
        }
        let mut parser = SseParser::default();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(Ended::Reconnect { wait: None, why: "the server ended the stream".into() }),
                Err(e) => return Ok(Ended::Reconnect { wait: None, why: format!("connection lost: {e}") }),
            };
            for message in parser.feed(&chunk) {
                if let Some(ms) = message.retry {
                    self.retry = Duration::from_millis(ms);
                }
                match message.event.as_str() {
                    "" | "message" => {
                        self.print(&message)?;
                        self.printed += 1;
                    }
                    "gap" => {
                        let data: Value = serde_json::from_str(&message.data).unwrap_or(Value::Null);
                        eprintln!(
                            "warning: {} events were missed while disconnected: {}",
                            data["missed"],
                            data["reason"].as_str().unwrap_or("no longer in the server's buffers")
                        );
                    }
                    "lagged" => {
                        let why = "this client fell behind the stream".to_string();
                        return Ok(Ended::Reconnect { wait: Some(Duration::ZERO), why });
                    }
                    "error" => {
                        let data: Value = serde_json::from_str(&message.data).unwrap_or(Value::Null);
                        let why = format!("stream error: {}", data["error"].as_str().unwrap_or(&message.data));
                        return Ok(Ended::Reconnect { wait: None, why });
                    }
                    _ => {}
                }
                // Every message with an id moves the resume point (the `ready` message too).
                if let Some(id) = message.id {
                    self.last_id = Some(id);
                }
                if self.args.count.is_some_and(|n| self.printed >= n) {
                    return Ok(Ended::Done);
                }
            }
        }
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `events tail`.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    if args.count == Some(0) {
        return Ok(());
    }
    let client = Client::new(&args.client)?;
    let color = args.client.output.format() == Format::Table && std::io::stdout().is_terminal();
    let mut tail = Tail { last_id: args.last_event_id.clone(), args, printed: 0, retry: Duration::from_secs(1), color };
    let mut failures = 0u32;
    loop {
        let before = tail.printed;
        match tail.connect(&client).await? {
            Ended::Done => return Ok(()),
            Ended::Reconnect { wait, why } => {
                // Back off while nothing gets through; start over once events flow again.
                failures = if tail.printed > before { 1 } else { (failures + 1).min(5) };
                let wait = wait.unwrap_or_else(|| tail.retry.saturating_mul(failures)).min(MAX_BACKOFF);
                eprintln!("{why}; reconnecting in {} ms", wait.as_millis());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_are_parsed_whole() {
        let text = "retry: 1000\nevent: ready\nid: @0:3\ndata: {\"namespace\":\"acme\"}\n\n: heartbeat\n\n\
                    id: e1@0:4\r\ndata: {\"a\":1}\r\n\r\nevent: lagged\ndata: x\ndata: y\n\n";
        let whole = SseParser::default().feed(text.as_bytes());
        let mut parser = SseParser::default();
        let mut split = Vec::new();
        for b in text.as_bytes() {
            split.extend(parser.feed(std::slice::from_ref(b)));
        }
        assert_eq!(whole, split);
        assert_eq!(whole.len(), 3, "{whole:?}");
        assert_eq!(whole[0].event, "ready");
        assert_eq!(whole[0].id.as_deref(), Some("@0:3"));
        assert_eq!(whole[0].retry, Some(1000));
        assert_eq!(
            (whole[1].event.as_str(), whole[1].id.as_deref(), whole[1].data.as_str()),
            ("", Some("e1@0:4"), "{\"a\":1}")
        );
        assert_eq!((whole[2].event.as_str(), whole[2].data.as_str()), ("lagged", "x\ny"));
    }

    #[test]
    fn patterns_are_encoded_for_the_query() {
        assert_eq!(encode("order.*"), "order.%2A");
        assert_eq!(encode("a b"), "a%20b");
    }
}
