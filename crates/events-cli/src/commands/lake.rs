//! `events query`, `events tables`, `events snapshots`, `events maintain`:
//! SQL and the Iceberg tables of the caller's namespace.

use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::ClientArgs;
use crate::client::{Client, enc, error};
use crate::output::{Doc, Format, table};

const QUERY_EXAMPLES: &str = "\
Examples:
  # Count events by type (a table on a terminal, NDJSON when piped)
  events query \"SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC\"

  # The same as CSV, for a spreadsheet
  events query \"SELECT * FROM events LIMIT 100\" --format csv > sample.csv

  # Time travel: the events table as it was at one snapshot (ids: `events snapshots events`)
  events query \"SELECT count(*) FROM events\" --at events=4417581370221958521

Events reach the tables when their writer flushes (`events flush`, or within
[writer] flush_max_age_ms, 10 s by default).";

/// Run one read-only SQL query over your namespace's tables (columns in SELECT order).
#[derive(Debug, Args)]
#[command(after_help = QUERY_EXAMPLES)]
pub struct QueryArgs {
    /// The SQL (one SELECT statement). Tables: `events`, and CDC tables.
    pub sql: String,
    /// Time travel: TABLE=SNAPSHOT_ID or TABLE=ISO-8601 time (repeatable).
    #[arg(long, value_name = "TABLE=WHEN")]
    pub at: Vec<String>,
    /// Timeout in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `events query`.
pub async fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let client = Client::with_timeout(&args.client, std::time::Duration::from_secs(600))?;
    let mut at = serde_json::Map::new();
    for spec in &args.at {
        let (table, when) = spec.split_once('=').context("--at takes TABLE=SNAPSHOT_ID or TABLE=TIME")?;
        let value = when.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(when));
        at.insert(table.to_string(), value);
    }
    let format = args.client.output.format();
    // The server writes JSON, NDJSON and CSV itself, every column in SELECT order.
    let wire = match format {
        Format::Csv => "csv",
        Format::Ndjson => "ndjson",
        Format::Table | Format::Json => "json",
    };
    let body = json!({ "sql": args.sql, "format": wire, "at": at, "timeoutMs": args.timeout_ms });
    let response = client.send(client.request(Method::POST, "/query").json(&body)).await?;
    let status = response.status();
    let text = response.text().await.context("the result was cut short")?;
    if !status.is_success() {
        return Err(error(status, &text));
    }
    match format {
        Format::Csv | Format::Ndjson => print!("{text}"),
        Format::Json => println!("{}", text.trim_end()),
        Format::Table => {
            let rows = Doc::parse(&text).context("the result is not a JSON array (cut short?)")?;
            print!("{}", table(rows.items()));
        }
    }
    Ok(())
}

/// List your namespace's tables (Iceberg), with their current snapshot, files and rows.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  events tables
  events tables --token $EVENTS_TOKEN --json")]
pub struct TablesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `events tables`.
pub async fn run_tables(args: TablesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let list = client.call(Method::GET, "/tables", None).await?;
    args.client.output.printer().list(&list, list.get("tables").items());
    Ok(())
}

/// Show a table's snapshots (for time travel) and its schema changes.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  events snapshots events
  events snapshots events --json

A table has its first snapshot after the first flush (`events flush`).")]
pub struct SnapshotsArgs {
    /// The table.
    pub table: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `events snapshots`.
pub async fn run_snapshots(args: SnapshotsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let history = client.call(Method::GET, &format!("/tables/{}/snapshots", enc(&args.table)), None).await?;
    let out = args.client.output.printer();
    out.list(&history, history.get("snapshots").items());
    out.extra("schema changes", history.get("schemaChanges").items());
    Ok(())
}

/// Run table maintenance now: compact small files, expire old snapshots, delete orphan files.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # Everything now, with the server's settings
  events maintain

  # One table, keeping more history than the server would (a week, at least 20 snapshots)
  events maintain --table events --keep-last 20 --max-snapshot-age-ms 604800000

  # Compact and expire, but leave unreferenced files alone
  events maintain --no-orphans

Keeping less than the server's [catalog] settings needs the admin token.")]
pub struct MaintainArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// One table (default: all tables events.do writes).
    #[arg(long)]
    pub table: Option<String>,
    /// Keep at least this many newest snapshots (fewer than the server's setting needs the admin token).
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Expire snapshots older than this (ms; below the server's setting needs the admin token).
    #[arg(long)]
    pub max_snapshot_age_ms: Option<i64>,
    /// Delete unreferenced files older than this (ms; below the server's setting needs the admin
    /// token). Files a flush has yet to commit are never deleted.
    #[arg(long)]
    pub orphan_min_age_ms: Option<i64>,
    /// Skip compaction.
    #[arg(long)]
    pub no_compact: bool,
    /// Skip snapshot expiry.
    #[arg(long)]
    pub no_expire: bool,
    /// Skip orphan cleanup.
    #[arg(long)]
    pub no_orphans: bool,
}

/// Runs `events maintain`.
pub async fn run_maintain(args: MaintainArgs) -> anyhow::Result<()> {
    let client = Client::with_timeout(&args.client, std::time::Duration::from_secs(600))?;
    let body = json!({
        "table": args.table,
        "compact": !args.no_compact,
        "expire": !args.no_expire,
        "removeOrphans": !args.no_orphans,
        "keepLast": args.keep_last,
        "maxSnapshotAgeMs": args.max_snapshot_age_ms,
        "orphanMinAgeMs": args.orphan_min_age_ms,
    });
    let result = client.call(Method::POST, "/tables/maintain", Some(body)).await?;
    args.client.output.printer().list(&result, result.get("reports").items());
    Ok(())
}
