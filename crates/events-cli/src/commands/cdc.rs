//! `events cdc`: change capture of collections through the HTTP API
//! (global `--url`, `--token`): collections, point-in-time reads, history,
//! restore, compaction, snapshots.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::cli::GlobalArgs;

/// Longest time one API call may take (a restore of a large collection is long).
const REQUEST_TIMEOUT_SECS: u64 = 600;
/// Most pages `cdc get --all` fetches.
const MAX_PAGES: usize = 100_000;

const CDC_EXAMPLES: &str = "\
Examples:
  # Collections of namespace acme with their statistics
  events cdc collections acme

  # A collection as it was yesterday at noon, and one document
  events cdc get acme users --at 2026-11-27T12:00:00Z
  events cdc get acme users u_42 --at 2026-11-27T12:00:00Z

  # A document's history; bring the collection back to a moment
  events cdc history acme users u_42
  events cdc restore acme users --at 2026-11-27T12:00:00Z

  # Compact now; take a daily snapshot now
  events cdc compact acme users
  events cdc snapshot acme users --kind daily";

/// Change capture: collection state at any time, history, restore, compaction, snapshots.
#[derive(Debug, Clone, Args)]
#[command(after_help = CDC_EXAMPLES)]
pub struct CdcArgs {
    #[command(subcommand)]
    pub command: CdcCommand,
}

/// The `cdc` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CdcCommand {
    /// List the namespace's collections with document, delete and change counts.
    #[command(after_help = "Examples:\n  events cdc collections acme")]
    Collections {
        /// Namespace.
        ns: String,
    },
    /// Read a collection (or one document) as it was at a time (default: now).
    #[command(
        after_help = "Examples:\n  events cdc get acme users\n  events cdc get acme users --at 2026-11-27T12:00:00Z --all\n  events cdc get acme users u_42 --at 2026-11-27T12:00:00Z"
    )]
    Get {
        /// Namespace.
        ns: String,
        /// Collection.
        collection: String,
        /// Document id (omit for the whole collection).
        id: Option<String>,
        /// ISO-8601 time.
        #[arg(long)]
        at: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Follow every page (prints one JSON document per line).
        #[arg(long)]
        all: bool,
        /// Include tombstones.
        #[arg(long)]
        include_deleted: bool,
    },
    /// A document's changes in event-time order.
    #[command(after_help = "Examples:\n  events cdc history acme users u_42")]
    History {
        /// Namespace.
        ns: String,
        /// Collection.
        collection: String,
        /// Document id.
        id: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Bring a collection back to its state at a time, as new (auditable) changes.
    #[command(after_help = "Examples:\n  events cdc restore acme users --at 2026-11-27T12:00:00Z")]
    Restore {
        /// Namespace.
        ns: String,
        /// Collection.
        collection: String,
        /// ISO-8601 time to go back to.
        #[arg(long)]
        at: String,
    },
    /// Write pending changes to delta files and rewrite the current-state table now.
    #[command(after_help = "Examples:\n  events cdc compact acme users")]
    Compact {
        /// Namespace.
        ns: String,
        /// Collection.
        collection: String,
    },
    /// Take a snapshot now (skipped when nothing changed since the last one).
    #[command(
        after_help = "Examples:\n  events cdc snapshot acme users\n  events cdc snapshot acme users --kind monthly"
    )]
    Snapshot {
        /// Namespace.
        ns: String,
        /// Collection.
        collection: String,
        /// daily or monthly.
        #[arg(long, default_value = "daily")]
        kind: String,
    },
}

struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut rb = self.client.request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb.send().await.with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let text = res.text().await?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            bail!(
                "{method} {path}: HTTP {status} {}: {}",
                v["code"].as_str().unwrap_or(""),
                v["error"].as_str().map_or(v.to_string(), str::to_string)
            );
        }
        Ok(v)
    }
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs `events cdc ...`.
pub async fn run(global: &GlobalArgs, args: CdcArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(REQUEST_TIMEOUT_SECS)).build()?;
    let api = Api { base: global.url.trim_end_matches('/').to_string(), token: global.token.clone(), client };
    let v = match args.command {
        CdcCommand::Collections { ns } => api.send(Method::GET, &format!("/cdc/{}", enc(&ns)), None).await?,
        CdcCommand::Get { ns, collection, id: Some(id), at, .. } => {
            let q = at.map(|a| format!("?at={}", enc(&a))).unwrap_or_default();
            api.send(Method::GET, &format!("/cdc/{}/{}/{}{q}", enc(&ns), enc(&collection), enc(&id)), None).await?
        }
        CdcCommand::Get { ns, collection, id: None, at, limit, all, include_deleted } => {
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let mut q = format!("limit={limit}&includeDeleted={include_deleted}");
                if let Some(a) = &at {
                    q.push_str(&format!("&at={}", enc(a)));
                }
                if let Some(c) = &cursor {
                    q.push_str(&format!("&cursor={}", enc(c)));
                }
                let page = api.send(Method::GET, &format!("/cdc/{}/{}?{q}", enc(&ns), enc(&collection)), None).await?;
                if !all {
                    print(&page);
                    return Ok(());
                }
                for doc in page["documents"].as_array().into_iter().flatten() {
                    println!("{doc}");
                }
                match page["nextCursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => return Ok(()),
                }
            }
            bail!("more than {MAX_PAGES} pages; use --limit or read a page at a time");
        }
        CdcCommand::History { ns, collection, id, limit } => {
            let path = format!("/cdc/{}/{}/{}/history?limit={limit}", enc(&ns), enc(&collection), enc(&id));
            api.send(Method::GET, &path, None).await?
        }
        CdcCommand::Restore { ns, collection, at } => {
            let path = format!("/cdc/{}/{}/_restore", enc(&ns), enc(&collection));
            api.send(Method::POST, &path, Some(json!({ "at": at }))).await?
        }
        CdcCommand::Compact { ns, collection } => {
            api.send(Method::POST, &format!("/cdc/{}/{}/_compact", enc(&ns), enc(&collection)), None).await?
        }
        CdcCommand::Snapshot { ns, collection, kind } => {
            let path = format!("/cdc/{}/{}/_snapshot?kind={}", enc(&ns), enc(&collection), enc(&kind));
            api.send(Method::POST, &path, None).await?
        }
    };
    print(&v);
    Ok(())
}
