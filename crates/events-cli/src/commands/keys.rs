//! `events keys`: namespace API keys (admin token required).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use crate::cli::ClientArgs;
use crate::client::{Client, enc};

const EXAMPLES: &str = "\
Examples:
  # Create a key for namespace acme (the key is printed once)
  events keys create acme --name checkout-service --token $EVENTS_ADMIN_TOKEN

  # Keep it in a variable
  KEY=$(events keys create acme --name importer --token $EVENTS_ADMIN_TOKEN)

  # A publishable key for browsers: POST /e only, from these origins
  events keys create acme --publishable --origin https://shop.example.com --token $EVENTS_ADMIN_TOKEN

  # List a namespace's keys
  events keys list acme --token $EVENTS_ADMIN_TOKEN

  # Revoke a key by id (see `events keys list`)
  events keys revoke acme 01JD0Z7Q6C3W5X8Y9Z0A1B2C3D --token $EVENTS_ADMIN_TOKEN";

/// Manage namespace API keys (needs the admin token).
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Key actions.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key. Prints the key alone (shown once; its id goes to stderr); --json prints the whole record.
    #[command(after_help = "\
Examples:
  events keys create acme --name checkout-service --token $EVENTS_ADMIN_TOKEN
  events keys create acme --name checkout-service --token $EVENTS_ADMIN_TOKEN --json
  events keys create acme --publishable --origin https://shop.example.com --requests-per-minute 120 --token $EVENTS_ADMIN_TOKEN")]
    Create {
        /// Namespace.
        namespace: String,
        /// Label.
        #[arg(long)]
        name: Option<String>,
        /// A write-only publishable key (`pk_...`) for browsers: it can only `POST /e`.
        #[arg(long)]
        publishable: bool,
        /// Publishable keys: an origin it is accepted from (repeat for more; none: any origin).
        #[arg(long = "origin", value_name = "ORIGIN", requires = "publishable")]
        origins: Vec<String>,
        /// Publishable keys: most requests per minute (server default when absent).
        #[arg(long, requires = "publishable")]
        requests_per_minute: Option<u64>,
        /// Publishable keys: most events per minute (server default when absent).
        #[arg(long, requires = "publishable")]
        events_per_minute: Option<u64>,
    },
    /// List keys (without secrets).
    #[command(after_help = "\
Examples:
  events keys list acme --token $EVENTS_ADMIN_TOKEN
  events keys list acme --token $EVENTS_ADMIN_TOKEN --json")]
    List {
        /// Namespace.
        namespace: String,
    },
    /// Revoke a key: it stops working at once.
    #[command(after_help = "\
Examples:
  events keys revoke acme 01JD0Z7Q6C3W5X8Y9Z0A1B2C3D --token $EVENTS_ADMIN_TOKEN")]
    Revoke {
        /// Namespace.
        namespace: String,
        /// Key id.
        id: String,
    },
}

/// Runs `events keys`.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let out = args.client.output.printer();
    match args.action {
        KeysAction::Create { namespace, name, publishable, origins, requests_per_minute, events_per_minute } => {
            let path = format!("/admin/namespaces/{}/keys", enc(&namespace));
            let mut body = json!({ "name": name });
            if publishable {
                body["kind"] = json!("publishable");
                if !origins.is_empty() {
                    body["allowedOrigins"] = json!(origins);
                }
                let mut limit = serde_json::Map::new();
                if let Some(n) = requests_per_minute {
                    limit.insert("requestsPerMinute".into(), json!(n));
                }
                if let Some(n) = events_per_minute {
                    limit.insert("eventsPerMinute".into(), json!(n));
                }
                if !limit.is_empty() {
                    body["rateLimit"] = limit.into();
                }
            }
            let key = client.call(Method::POST, &path, Some(body)).await?;
            let chosen = args.client.output.json || args.client.output.format.is_some();
            if chosen {
                out.record(&key);
            } else {
                println!("{}", key.get("key").as_str().unwrap_or_default());
            }
            eprintln!(
                "key id {} for namespace {namespace}: store the key now, it is not shown again",
                key.get("id").as_str().unwrap_or("?")
            );
        }
        KeysAction::List { namespace } => {
            let list = client.call(Method::GET, &format!("/admin/namespaces/{}/keys", enc(&namespace)), None).await?;
            out.list(&list, list.get("keys").items());
        }
        KeysAction::Revoke { namespace, id } => {
            let path = format!("/admin/namespaces/{}/keys/{}", enc(&namespace), enc(&id));
            out.record(&client.call(Method::DELETE, &path, None).await?);
        }
    }
    Ok(())
}
