//! `events subs`, `events deliveries`, `events replay`: webhook subscriptions
//! from the command line, through the HTTP API (`--url`, `--token`).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use crate::cli::ClientArgs;
use crate::client::{Client, enc};
use crate::output::Doc;

const SUBS_EXAMPLES: &str = "\
Examples:
  # Deliver every order event to a receiver, retrying on Svix's schedule
  events subs create --pattern 'order.*' --target https://hooks.example.com/orders

  # Batches of up to 100 events, per-customer ordering, a short retry schedule
  events subs create --pattern '**' --target https://h.example.com/all \\
      --batch-size 100 --batch-window-ms 1000 --ordering-key customerId --retry 0,5000,60000

  # List, inspect, pause, resume, delete (ids: `events subs list`)
  events subs list
  events subs show sub_01J...
  events subs pause sub_01J...
  events subs resume sub_01J...
  events subs delete sub_01J...

Acting on a namespace with the admin token: add --namespace NS (sent as X-Namespace).";

/// Manage webhook subscriptions (pattern → URL, signed, retried, dead-lettered).
#[derive(Debug, Clone, Args)]
#[command(after_help = SUBS_EXAMPLES)]
pub struct SubsArgs {
    #[command(subcommand)]
    pub command: SubsCommand,
    /// Namespace to act on with the admin token (X-Namespace).
    #[arg(long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The `subs` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SubsCommand {
    /// Create a subscription; prints it with its secret (shown once).
    #[command(
        after_help = "Examples:\n  events subs create --pattern 'order.*' --target https://hooks.example.com/orders"
    )]
    Create(CreateArgs),
    /// List the namespace's subscriptions.
    #[command(after_help = "Examples:\n  events subs list\n  events subs list --status disabled")]
    List {
        /// Only this status (active, paused, disabled).
        #[arg(long)]
        status: Option<String>,
        /// Only this exact pattern.
        #[arg(long)]
        pattern: Option<String>,
    },
    /// Show one subscription and its delivery stats.
    #[command(after_help = "Examples:\n  events subs show sub_01J...")]
    Show {
        /// Subscription id.
        id: String,
    },
    /// Pause deliveries (events keep being queued).
    #[command(after_help = "Examples:\n  events subs pause sub_01J...")]
    Pause {
        /// Subscription id.
        id: String,
    },
    /// Resume a paused or disabled subscription.
    #[command(after_help = "Examples:\n  events subs resume sub_01J...")]
    Resume {
        /// Subscription id.
        id: String,
    },
    /// Delete a subscription and its delivery state.
    #[command(after_help = "Examples:\n  events subs delete sub_01J...")]
    Delete {
        /// Subscription id.
        id: String,
    },
}

/// Options of `subs create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Event-type pattern (`order.*`, `**`).
    #[arg(long)]
    pub pattern: String,
    /// Receiver URL the events are delivered to (`--url` is the server's address).
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// Signing secret (`whsec_...`); generated when absent.
    #[arg(long)]
    pub secret: Option<String>,
    /// Delays before each attempt in ms, comma separated (default Svix's schedule).
    #[arg(long, value_delimiter = ',')]
    pub retry: Option<Vec<i64>>,
    /// Request timeout in ms.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Batch size (enables batching).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Batch window in ms.
    #[arg(long, default_value_t = 1000)]
    pub batch_window_ms: i64,
    /// Event field whose value orders deliveries.
    #[arg(long)]
    pub ordering_key: Option<String>,
}

const DELIVERIES_EXAMPLES: &str = "\
Examples:
  # Dead letters of a subscription
  events deliveries sub_01J... --status dead

  # Attempts of one event
  events deliveries sub_01J... --event evt_123";

/// List a subscription's deliveries (or one event's attempts).
#[derive(Debug, Clone, Args)]
#[command(after_help = DELIVERIES_EXAMPLES)]
pub struct DeliveriesArgs {
    /// Subscription id.
    pub id: String,
    /// pending, delivered or dead.
    #[arg(long)]
    pub status: Option<String>,
    /// Show the attempts of this event instead.
    #[arg(long)]
    pub event: Option<String>,
    /// Most rows.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Namespace to act on with the admin token (X-Namespace).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

const REPLAY_EXAMPLES: &str = "\
Examples:
  # One dead letter (ids: `events deliveries sub_01J... --status dead`)
  events replay sub_01J... --dead-letter msg_01J...

  # Send every dead letter again
  events replay sub_01J... --all

  # Everything since a time (a background job; prints its progress)
  events replay sub_01J... --since 2026-11-27T12:00:00Z";

/// Replay dead letters, or recover everything since a time.
#[derive(Debug, Clone, Args)]
#[command(after_help = REPLAY_EXAMPLES)]
pub struct ReplayArgs {
    /// Subscription id.
    pub id: String,
    /// Replay this dead letter.
    #[arg(long, conflicts_with_all = ["all", "since"])]
    pub dead_letter: Option<String>,
    /// Replay every dead letter.
    #[arg(long, conflicts_with = "since")]
    pub all: bool,
    /// Re-send every matching event since this ISO-8601 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Namespace to act on with the admin token (X-Namespace).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `events subs ...`.
pub async fn run_subs(args: SubsArgs) -> anyhow::Result<()> {
    let api = Client::new(&args.client)?.namespace(args.namespace);
    let out = args.client.output.printer();
    match args.command {
        SubsCommand::Create(c) => {
            let mut body = json!({"pattern": c.pattern, "url": c.target});
            if let Some(s) = c.secret {
                body["secret"] = json!(s);
            }
            if let Some(r) = c.retry {
                body["retrySchedule"] = json!(r);
            }
            if let Some(t) = c.timeout_ms {
                body["timeoutMs"] = json!(t);
            }
            if let Some(size) = c.batch_size {
                body["batch"] = json!({"maxSize": size, "windowMs": c.batch_window_ms});
            }
            if let Some(k) = c.ordering_key {
                body["orderingKey"] = json!(k);
            }
            out.record(&api.call(Method::POST, "/subscriptions", Some(body)).await?);
        }
        SubsCommand::List { status, pattern } => {
            let mut q = Vec::new();
            if let Some(s) = status {
                q.push(format!("status={}", enc(&s)));
            }
            if let Some(p) = pattern {
                q.push(format!("pattern={}", enc(&p)));
            }
            let list = api.call(Method::GET, &format!("/subscriptions?{}", q.join("&")), None).await?;
            out.list(&list, list.get("subscriptions").items());
        }
        SubsCommand::Show { id } => {
            let id = enc(&id);
            let sub = api.call(Method::GET, &format!("/subscriptions/{id}"), None).await?;
            let stats = api.call(Method::GET, &format!("/subscriptions/{id}/stats"), None).await?;
            out.record(&Doc::object([("subscription", sub), ("stats", stats)]));
        }
        SubsCommand::Pause { id } => {
            out.record(&api.call(Method::POST, &format!("/subscriptions/{}/pause", enc(&id)), None).await?)
        }
        SubsCommand::Resume { id } => {
            out.record(&api.call(Method::POST, &format!("/subscriptions/{}/resume", enc(&id)), None).await?)
        }
        SubsCommand::Delete { id } => {
            out.record(&api.call(Method::DELETE, &format!("/subscriptions/{}", enc(&id)), None).await?)
        }
    }
    Ok(())
}

/// Runs `events deliveries ...`.
pub async fn run_deliveries(args: DeliveriesArgs) -> anyhow::Result<()> {
    let api = Client::new(&args.client)?.namespace(args.namespace);
    let (id, limit) = (enc(&args.id), args.limit);
    let (path, field) = match (&args.event, &args.status) {
        (Some(e), _) => (format!("/subscriptions/{id}/events/{}/attempts?limit={limit}", enc(e)), "attempts"),
        (None, Some(s)) => (format!("/subscriptions/{id}/deliveries?status={}&limit={limit}", enc(s)), "deliveries"),
        (None, None) => (format!("/subscriptions/{id}/deliveries?limit={limit}"), "deliveries"),
    };
    let list = api.call(Method::GET, &path, None).await?;
    args.client.output.printer().list(&list, list.get(field).items());
    Ok(())
}

/// Runs `events replay ...`.
pub async fn run_replay(args: ReplayArgs) -> anyhow::Result<()> {
    let api = Client::new(&args.client)?.namespace(args.namespace);
    let id = enc(&args.id);
    let answer = match (args.dead_letter, args.all, args.since) {
        (Some(dl), _, _) => {
            api.call(Method::POST, &format!("/subscriptions/{id}/dead-letters/{}/replay", enc(&dl)), None).await?
        }
        (None, true, _) => api.call(Method::POST, &format!("/subscriptions/{id}/dead-letters/replay"), None).await?,
        (None, false, Some(since)) => {
            let job =
                api.call(Method::POST, &format!("/subscriptions/{id}/recover"), Some(json!({"since": since}))).await?;
            let job_id = job.get("id").as_str().context("the server returned no job id")?.to_string();
            loop {
                let j = api.call(Method::GET, &format!("/subscriptions/{id}/recover/{}", enc(&job_id)), None).await?;
                eprintln!(
                    "recovery {job_id}: {} of {} examined, {} re-queued",
                    j.get("processed").cell(),
                    j.get("total").cell(),
                    j.get("requeued").cell()
                );
                if j.get("status").as_str() != Some("running") {
                    break j;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        (None, false, None) => bail!("say what to replay: --dead-letter ID, --all or --since TIME"),
    };
    args.client.output.printer().record(&answer);
    Ok(())
}
