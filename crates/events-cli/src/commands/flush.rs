//! `events flush`: write every writer's buffered events to the lake now.

use clap::Args;
use reqwest::Method;
use serde_json::json;

use crate::cli::ClientArgs;
use crate::client::Client;
use crate::output::Doc;

const EXAMPLES: &str = "\
Examples:
  # Make everything sent so far visible to SQL, snapshots and lake readers
  events flush --token $EVENTS_ADMIN_TOKEN

  # The files written, as JSON
  events flush --token $EVENTS_ADMIN_TOKEN --json

Without it, accepted events reach the lake when a writer's buffer is old enough
([writer] flush_max_age_ms, 10 s by default) or big enough; GET /events reads the
buffer too, so it sees them at once.";

/// Flush every writer buffer to the lake now (Parquet files and an Iceberg snapshot; admin token).
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct FlushArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `events flush`.
pub async fn run(args: FlushArgs) -> anyhow::Result<()> {
    let client = Client::with_timeout(&args.client, std::time::Duration::from_secs(600))?;
    let answer = client.call(Method::POST, "/admin/flush", Some(json!({}))).await?;
    let rows: Vec<Doc> = answer.get("files").items().iter().map(|f| Doc::object([("file", f.clone())])).collect();
    args.client.output.printer().list(&answer, &rows);
    Ok(())
}
