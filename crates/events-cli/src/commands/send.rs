//! `events send`: send events from a file or stdin.

use std::io::Read;

use anyhow::Context;
use clap::Args;
use events_core::limits::MAX_EVENTS_PER_BATCH;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use crate::cli::ClientArgs;
use crate::client::Client;
use crate::output::Doc;

const EXAMPLES: &str = r#"Examples:
  # Send the events of an NDJSON file (one JSON event per line)
  events send --token $EVENTS_TOKEN events.ndjson

  # Send a JSON array, or {"events": [...]}, from stdin
  echo '[{"type":"order.created","amount":5}]' | events send --token $EVENTS_TOKEN -

  # Smaller batches, with an idempotency prefix so a re-run is not stored twice
  events send --batch-size 200 --batch-id-prefix import-2026-11 events.ndjson

Prints how many events were sent, accepted, and already stored (replayed batches)."#;

/// Send events (a JSON array, an object with an "events" array, or NDJSON) to the server, in batches.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SendArgs {
    /// File to read, or `-` for stdin.
    #[arg(default_value = "-")]
    pub file: String,
    /// Events per request (at most 1,000).
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// When set, batch N is sent with batchId `<prefix>-<N>`, so re-running the same import is idempotent.
    #[arg(long)]
    pub batch_id_prefix: Option<String>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Parses a JSON array, an `{"events": [...]}` object, or NDJSON.
pub fn parse_events(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('[') || trimmed.starts_with('{'))
        && let Ok(value) = serde_json::from_str::<Value>(trimmed)
    {
        return match value {
            Value::Array(events) => Ok(events),
            Value::Object(mut o) if o.get("events").is_some_and(Value::is_array) => {
                Ok(o.remove("events").and_then(|v| v.as_array().cloned()).unwrap_or_default())
            }
            Value::Object(_) => Ok(vec![value]),
            _ => anyhow::bail!("expected events as a JSON array, an object or NDJSON"),
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}: invalid JSON", i + 1)))
        .collect()
}

/// Runs `events send`.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_EVENTS_PER_BATCH).contains(&args.batch_size),
        "--batch-size must be 1-{MAX_EVENTS_PER_BATCH}"
    );
    let mut text = String::new();
    if args.file == "-" {
        std::io::stdin().read_to_string(&mut text).context("cannot read stdin")?;
    } else {
        text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file))?;
    }
    let events = parse_events(&text)?;
    let client = Client::new(&args.client)?;
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(events.len() as u64) };
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} events {msg}").expect("template"));
    let (mut accepted, mut deduplicated) = (0u64, 0u64);
    for (n, chunk) in events.chunks(args.batch_size).enumerate() {
        let mut body = serde_json::json!({ "events": chunk });
        if let Some(prefix) = &args.batch_id_prefix {
            body["batchId"] = Value::String(format!("{prefix}-{n}"));
        }
        let answer = client.call(Method::POST, "/e", Some(body)).await.with_context(|| {
            format!("batch {n} (events {}..{}) was refused", n * args.batch_size, n * args.batch_size + chunk.len())
        })?;
        if answer.get("deduplicated") == &Doc::Bool(true) {
            deduplicated += chunk.len() as u64;
        } else {
            accepted += answer.get("received").to_value().as_u64().unwrap_or(0);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let summary = Doc::object([
        ("sent", Doc::from(events.len() as u64)),
        ("accepted", Doc::from(accepted)),
        ("alreadyStored", Doc::from(deduplicated)),
    ]);
    args.client.output.printer().record(&summary);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_shapes() {
        assert_eq!(parse_events(r#"[{"type":"a"},{"type":"b"}]"#).unwrap().len(), 2);
        assert_eq!(parse_events(r#"{"events":[{"type":"a"}]}"#).unwrap().len(), 1);
        assert_eq!(parse_events("{\"type\":\"a\"}\n\n{\"type\":\"b\"}\n").unwrap().len(), 2);
        assert!(parse_events("{\"type\":\"a\"}\nnot json\n").is_err());
    }
}
