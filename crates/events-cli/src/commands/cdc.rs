//! `events cdc`: change capture of collections through the HTTP API
//! (`--url`, `--token`): collections, point-in-time reads, history,
//! restore, compaction, snapshots.

use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use crate::cli::ClientArgs;
use crate::client::{Client, enc};
use crate::output::{Doc, Format};

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
    #[command(flatten)]
    pub client: ClientArgs,
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
        /// Follow every page (when piped, each page is printed as it arrives).
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

/// Runs `events cdc ...`.
pub async fn run(args: CdcArgs) -> anyhow::Result<()> {
    let api = Client::with_timeout(&args.client, std::time::Duration::from_secs(REQUEST_TIMEOUT_SECS))?;
    let out = args.client.output.printer();
    match args.command {
        CdcCommand::Collections { ns } => {
            let list = api.call(Method::GET, &format!("/cdc/{}", enc(&ns)), None).await?;
            out.list(&list, list.get("collections").items());
        }
        CdcCommand::Get { ns, collection, id: Some(id), at, .. } => {
            let q = at.map(|a| format!("?at={}", enc(&a))).unwrap_or_default();
            let path = format!("/cdc/{}/{}/{}{q}", enc(&ns), enc(&collection), enc(&id));
            out.record(&api.call(Method::GET, &path, None).await?);
        }
        CdcCommand::Get { ns, collection, id: None, at, limit, all, include_deleted } => {
            let mut cursor: Option<String> = None;
            let mut documents: Vec<Doc> = Vec::new();
            for _ in 0..MAX_PAGES {
                let mut q = format!("limit={limit}&includeDeleted={include_deleted}");
                if let Some(a) = &at {
                    q.push_str(&format!("&at={}", enc(a)));
                }
                if let Some(c) = &cursor {
                    q.push_str(&format!("&cursor={}", enc(c)));
                }
                let page = api.call(Method::GET, &format!("/cdc/{}/{}?{q}", enc(&ns), enc(&collection)), None).await?;
                let next = page.get("nextCursor").as_str().map(str::to_string);
                if !all {
                    out.list(&page, page.get("documents").items());
                    if next.is_some() && out.format == Format::Table {
                        println!("(more: --all follows every page)");
                    }
                    return Ok(());
                }
                if out.format == Format::Ndjson {
                    out.list(&page, page.get("documents").items());
                } else {
                    documents.extend(page.get("documents").items().iter().cloned());
                }
                match next {
                    Some(c) => cursor = Some(c),
                    None => {
                        if out.format != Format::Ndjson {
                            let answer = Doc::object([
                                ("collection", Doc::from(collection.as_str())),
                                ("documents", Doc::Array(documents.clone())),
                            ]);
                            out.list(&answer, &documents);
                        }
                        return Ok(());
                    }
                }
            }
            bail!("more than {MAX_PAGES} pages; use --limit or read a page at a time");
        }
        CdcCommand::History { ns, collection, id, limit } => {
            let path = format!("/cdc/{}/{}/{}/history?limit={limit}", enc(&ns), enc(&collection), enc(&id));
            let page = api.call(Method::GET, &path, None).await?;
            out.list(&page, page.get("changes").items());
        }
        CdcCommand::Restore { ns, collection, at } => {
            let path = format!("/cdc/{}/{}/_restore", enc(&ns), enc(&collection));
            out.record(&api.call(Method::POST, &path, Some(json!({ "at": at }))).await?);
        }
        CdcCommand::Compact { ns, collection } => {
            let path = format!("/cdc/{}/{}/_compact", enc(&ns), enc(&collection));
            out.record(&api.call(Method::POST, &path, None).await?);
        }
        CdcCommand::Snapshot { ns, collection, kind } => {
            let path = format!("/cdc/{}/{}/_snapshot?kind={}", enc(&ns), enc(&collection), enc(&kind));
            out.record(&api.call(Method::POST, &path, None).await?);
        }
    }
    Ok(())
}
