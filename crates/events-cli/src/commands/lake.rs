//! `events query`, `events tables`, `events snapshots`, `events maintain`:
//! SQL and the Iceberg tables of the caller's namespace.

use anyhow::Context;
use clap::{Args, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::GlobalArgs;
use crate::client::{Client, decode};

const QUERY_EXAMPLES: &str = "\
Examples:
  # Count events by type (printed as a table)
  events query \"SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC\"

  # The same as CSV, for a spreadsheet
  events query \"SELECT * FROM events LIMIT 100\" --format csv > sample.csv

  # Time travel: the events table as it was at one snapshot (see `events snapshots events`)
  events query \"SELECT count(*) FROM events\" --at events=4417581370221958521";

/// Run one read-only SQL query over your namespace's tables.
#[derive(Debug, Args)]
#[command(after_help = QUERY_EXAMPLES)]
pub struct QueryArgs {
    /// The SQL (one SELECT statement). Tables: `events`, and CDC tables.
    pub sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
    /// Time travel: TABLE=SNAPSHOT_ID or TABLE=ISO-8601 time (repeatable).
    #[arg(long, value_name = "TABLE=WHEN")]
    pub at: Vec<String>,
    /// Timeout in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

/// How `events query` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// An aligned text table.
    Table,
    /// A JSON array of rows.
    Json,
    /// CSV with a header.
    Csv,
}

/// Runs `events query`.
pub async fn run_query(global: &GlobalArgs, args: QueryArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    let mut at = serde_json::Map::new();
    for spec in &args.at {
        let (table, when) = spec.split_once('=').context("--at takes TABLE=SNAPSHOT_ID or TABLE=TIME")?;
        let value = when.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(when));
        at.insert(table.to_string(), value);
    }
    let wire = match args.format {
        QueryFormat::Csv => "csv",
        _ => "json",
    };
    let body = json!({ "sql": args.sql, "format": wire, "at": at, "timeoutMs": args.timeout_ms });
    let response =
        client.request(Method::POST, "/query").json(&body).send().await.context("cannot reach the server")?;
    if !response.status().is_success() {
        decode(response).await?;
        unreachable!("decode fails on an error status");
    }
    let text = response.text().await.context("the result was cut short")?;
    match args.format {
        QueryFormat::Csv => print!("{text}"),
        QueryFormat::Json => println!("{text}"),
        QueryFormat::Table => {
            let rows: Vec<OrderedRow> =
                serde_json::from_str(&text).context("the result is not a JSON array (cut short?)")?;
            print_table(&rows);
        }
    }
    Ok(())
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// One result row with its columns in the order the server sent them: the
/// query's SELECT order (a map type would sort them).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedRow(pub Vec<(String, Value)>);

impl OrderedRow {
    fn get(&self, column: &str) -> Option<&Value> {
        self.0.iter().find(|(c, _)| c == column).map(|(_, v)| v)
    }
}

impl<'de> serde::Deserialize<'de> for OrderedRow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedRow;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a row object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedRow, A::Error> {
                let mut cells = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    cells.push(entry);
                }
                Ok(OrderedRow(cells))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The columns of `rows` in result order: the first row's, then any a later
/// row adds (the server sends every column in every row).
fn columns_of(rows: &[OrderedRow]) -> Vec<&str> {
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        for (c, _) in &row.0 {
            if !columns.contains(&c.as_str()) {
                columns.push(c);
            }
        }
    }
    columns
}

fn print_table(rows: &[OrderedRow]) {
    if rows.is_empty() {
        println!("(0 rows)");
        return;
    }
    let columns = columns_of(rows);
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for row in rows {
        for (i, c) in columns.iter().enumerate() {
            widths[i] = widths[i].max(cell(row.get(c)).chars().count().min(60));
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c.chars().take(60).collect::<String>(), w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(columns.iter().map(|c| c.to_string()).collect()));
    println!("{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        println!("{}", line(columns.iter().map(|c| cell(row.get(c))).collect()));
    }
    println!("({} rows)", rows.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_the_servers_column_order() {
        let rows: Vec<OrderedRow> =
            serde_json::from_str(r#"[{"z":1,"b":null,"a":"x"},{"z":2,"b":3,"a":null}]"#).unwrap();
        assert_eq!(columns_of(&rows), ["z", "b", "a"]);
        assert_eq!(rows[0].get("b"), Some(&Value::Null));
        assert_eq!(cell(rows[1].get("b")), "3");
        assert_eq!(cell(rows[1].get("a")), "");
    }
}
