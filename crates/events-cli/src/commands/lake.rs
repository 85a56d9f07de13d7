//! `events tables`, `events snapshots`, `events maintain`: the Iceberg
//! tables of the caller's namespace.

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::GlobalArgs;
use crate::client::Client;

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// List your namespace's tables (Iceberg), with their current snapshot, files and rows.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  events tables\n  events tables --token $EVENTS_TOKEN")]
pub struct TablesArgs {}

/// Runs `events tables`.
pub async fn run_tables(global: &GlobalArgs, _args: TablesArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let list = client.json(client.request(Method::GET, "/tables")).await?;
    println!("{:<24} {:<9} {:<22} {:>8} {:>12}", "TABLE", "MANAGED", "SNAPSHOT", "FILES", "ROWS");
    for t in list["tables"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<9} {:<22} {:>8} {:>12}",
            t["name"].as_str().unwrap_or(""),
            if t["managed"].as_bool().unwrap_or(false) { "yes" } else { "no" },
            cell(t.get("currentSnapshotId")),
            cell(t.get("files")),
            cell(t.get("rows")),
        );
    }
    Ok(())
}

/// Show a table's snapshots (for time travel) and its schema changes.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  events snapshots events\n  events snapshots events --json")]
pub struct SnapshotsArgs {
    /// The table.
    pub table: String,
    /// Print the full JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// Runs `events snapshots`.
pub async fn run_snapshots(global: &GlobalArgs, args: SnapshotsArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let history = client.json(client.request(Method::GET, &format!("/tables/{}/snapshots", args.table))).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&history)?);
        return Ok(());
    }
    println!(
        "{:<22} {:<26} {:<10} {:>6} {:>10} {:>12}",
        "SNAPSHOT", "COMMITTED", "OPERATION", "SCHEMA", "+FILES", "TOTAL ROWS"
    );
    for s in history["snapshots"].as_array().into_iter().flatten() {
        println!(
            "{:<22} {:<26} {:<10} {:>6} {:>10} {:>12}",
            cell(s.get("snapshotId")),
            cell(s.get("committedAt")),
            cell(s.get("operation")),
            cell(s.get("schemaId")),
            cell(s["summary"].get("added-data-files")),
            cell(s["summary"].get("total-records")),
        );
    }
    let changes = history["schemaChanges"].as_array().cloned().unwrap_or_default();
    if !changes.is_empty() {
        println!("\nschema changes:");
        for c in changes {
            let what = match (c["from"].as_str(), c["applied"].as_bool()) {
                (None, Some(true)) => format!("added {} {}", cell(c.get("column")), cell(c.get("to"))),
                (Some(from), Some(true)) => {
                    format!("promoted {} {from} -> {}", cell(c.get("column")), cell(c.get("to")))
                }
                _ => format!("REFUSED {} -> {}: {}", cell(c.get("column")), cell(c.get("to")), cell(c.get("reason"))),
            };
            println!("  {}  {what}", cell(c.get("at")));
        }
    }
    Ok(())
}

/// Run table maintenance now: compact small files, expire old snapshots, delete orphan files.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  events maintain\n  events maintain --table events --keep-last 5 --max-snapshot-age-ms 3600000\n  events maintain --no-orphans"
)]
pub struct MaintainArgs {
    /// One table (default: all tables events.do writes).
    #[arg(long)]
    pub table: Option<String>,
    /// Keep at least this many newest snapshots.
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Expire snapshots older than this (ms).
    #[arg(long)]
    pub max_snapshot_age_ms: Option<i64>,
    /// Delete unreferenced files older than this (ms).
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
pub async fn run_maintain(global: &GlobalArgs, args: MaintainArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let body = json!({
        "table": args.table,
        "compact": !args.no_compact,
        "expire": !args.no_expire,
        "removeOrphans": !args.no_orphans,
        "keepLast": args.keep_last,
        "maxSnapshotAgeMs": args.max_snapshot_age_ms,
        "orphanMinAgeMs": args.orphan_min_age_ms,
    });
    let result = client.json(client.request(Method::POST, "/tables/maintain").json(&body)).await?;
    for r in result["reports"].as_array().into_iter().flatten() {
        println!(
            "{}: compacted {} files into {}, expired {} snapshots, deleted {} files, {} orphans",
            cell(r.get("table")),
            cell(r.get("compacted_inputs")),
            r["compacted_files"].as_array().map_or(0, Vec::len),
            cell(r.get("expired_snapshots")),
            cell(r.get("deleted_files")),
            r["orphans_deleted"].as_array().map_or(0, Vec::len),
        );
    }
    Ok(())
}
