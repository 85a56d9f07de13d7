//! `events subs`, `events deliveries`, `events replay`: webhook subscriptions
//! from the command line, through the HTTP API (global `--url`, `--token`).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::cli::GlobalArgs;

/// Longest time one API call of these commands may take.
const REQUEST_TIMEOUT_SECS: u64 = 60;

const SUBS_EXAMPLES: &str = "\
Examples:
  # Deliver every order event to a receiver, retrying on Svix's schedule
  events subs create --pattern 'order.*' --target https://hooks.example.com/orders

  # Batches of up to 100 events, per-customer ordering, a short retry schedule
  events subs create --pattern '**' --target https://h.example.com/all \\
      --batch-size 100 --batch-window-ms 1000 --ordering-key customerId --retry 0,5000,60000

  # List, inspect, pause, resume, delete
  events subs list
  events subs show sub_01J...
  events subs pause sub_01J...
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
}

const REPLAY_EXAMPLES: &str = "\
Examples:
  # Send every dead letter again
  events replay sub_01J... --all

  # One dead letter
  events replay sub_01J... --dead-letter msg_01J...

  # Everything since a time (a background job; prints its progress)
  events replay sub_01J... --since 2026-01-01T00:00:00Z";

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
}

struct Api {
    base: String,
    token: Option<String>,
    namespace: Option<String>,
    client: reqwest::Client,
}

impl Api {
    fn new(global: &GlobalArgs, namespace: Option<String>) -> anyhow::Result<Api> {
        let client =
            reqwest::Client::builder().timeout(std::time::Duration::from_secs(REQUEST_TIMEOUT_SECS)).build()?;
        Ok(Api { base: global.url.trim_end_matches('/').to_string(), token: global.token.clone(), namespace, client })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut rb = self.client.request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(ns) = &self.namespace {
            rb = rb.header("X-Namespace", ns);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb.send().await.with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let text = res.text().await?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            bail!("{method} {path}: HTTP {status}: {}", v["error"].as_str().map_or(v.to_string(), str::to_string));
        }
        Ok(v)
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs `events subs ...`.
pub async fn run_subs(global: &GlobalArgs, args: SubsArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let api = Api::new(global, args.namespace)?;
    let v = match args.command {
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
            api.send(Method::POST, "/subscriptions", Some(body)).await?
        }
        SubsCommand::List { status, pattern } => {
            let mut q = Vec::new();
            if let Some(s) = status {
                q.push(format!("status={s}"));
            }
            if let Some(p) = pattern {
                q.push(format!("pattern={p}"));
            }
            api.send(Method::GET, &format!("/subscriptions?{}", q.join("&")), None).await?
        }
        SubsCommand::Show { id } => {
            let sub = api.send(Method::GET, &format!("/subscriptions/{id}"), None).await?;
            let stats = api.send(Method::GET, &format!("/subscriptions/{id}/stats"), None).await?;
            json!({"subscription": sub, "stats": stats})
        }
        SubsCommand::Pause { id } => api.send(Method::POST, &format!("/subscriptions/{id}/pause"), None).await?,
        SubsCommand::Resume { id } => api.send(Method::POST, &format!("/subscriptions/{id}/resume"), None).await?,
        SubsCommand::Delete { id } => api.send(Method::DELETE, &format!("/subscriptions/{id}"), None).await?,
    };
    print(&v);
    Ok(())
}

/// Runs `events deliveries ...`.
pub async fn run_deliveries(global: &GlobalArgs, args: DeliveriesArgs) -> anyhow::Result<()> {
    let api = Api::new(global, args.namespace)?;
    let id = &args.id;
    let path = match (&args.event, &args.status) {
        (Some(e), _) => format!("/subscriptions/{id}/events/{e}/attempts?limit={}", args.limit),
        (None, Some(s)) => format!("/subscriptions/{id}/deliveries?status={s}&limit={}", args.limit),
        (None, None) => format!("/subscriptions/{id}/deliveries?limit={}", args.limit),
    };
    print(&api.send(reqwest::Method::GET, &path, None).await?);
    Ok(())
}

/// Runs `events replay ...`.
pub async fn run_replay(global: &GlobalArgs, args: ReplayArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let api = Api::new(global, args.namespace)?;
    let id = &args.id;
    let v = match (args.dead_letter, args.all, args.since) {
        (Some(dl), _, _) => {
            api.send(Method::POST, &format!("/subscriptions/{id}/dead-letters/{dl}/replay"), None).await?
        }
        (None, true, _) => api.send(Method::POST, &format!("/subscriptions/{id}/dead-letters/replay"), None).await?,
        (None, false, Some(since)) => {
            let job =
                api.send(Method::POST, &format!("/subscriptions/{id}/recover"), Some(json!({"since": since}))).await?;
            let job_id = job["id"].as_str().context("the server returned no job id")?.to_string();
            loop {
                let j = api.send(Method::GET, &format!("/subscriptions/{id}/recover/{job_id}"), None).await?;
                eprintln!(
                    "recovery {job_id}: {} of {} examined, {} re-queued",
                    j["processed"], j["total"], j["requeued"]
                );
                if j["status"] != "running" {
                    break j;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        (None, false, None) => bail!("say what to replay: --dead-letter ID, --all or --since TIME"),
    };
    print(&v);
    Ok(())
}
