//! `events keys`: namespace API keys (admin token required).

use clap::{Args, Subcommand};
use reqwest::Method;

use crate::cli::GlobalArgs;
use crate::client::Client;

const EXAMPLES: &str = "\
Examples:
  # Create a key for namespace acme (the key is printed once)
  events keys create acme --name checkout-service --token $EVENTS_ADMIN_TOKEN

  # List a namespace's keys
  events keys list acme --token $EVENTS_ADMIN_TOKEN

  # Revoke a key by id
  events keys revoke acme 01JD0Z7Q6C3W5X8Y9Z0A1B2C3D --token $EVENTS_ADMIN_TOKEN";

/// Manage namespace API keys (needs the admin token).
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
}

/// Key actions.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key; prints it once.
    #[command(after_help = "Examples:\n  events keys create acme --name checkout-service")]
    Create {
        /// Namespace.
        namespace: String,
        /// Label.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (without secrets).
    #[command(after_help = "Examples:\n  events keys list acme")]
    List {
        /// Namespace.
        namespace: String,
    },
    /// Revoke a key: it stops working at once.
    #[command(after_help = "Examples:\n  events keys revoke acme 01JD0Z7Q6C3W5X8Y9Z0A1B2C3D")]
    Revoke {
        /// Namespace.
        namespace: String,
        /// Key id.
        id: String,
    },
}

/// Runs `events keys`.
pub async fn run(global: &GlobalArgs, args: KeysArgs) -> anyhow::Result<()> {
    let client = Client::new(global)?;
    match args.action {
        KeysAction::Create { namespace, name } => {
            let body = serde_json::json!({ "name": name });
            let key = client
                .json(client.request(Method::POST, &format!("/admin/namespaces/{namespace}/keys")).json(&body))
                .await?;
            println!("{}", key["key"].as_str().unwrap_or_default());
            eprintln!(
                "key id {} for namespace {namespace}: store it now, it is not shown again",
                key["id"].as_str().unwrap_or("?")
            );
        }
        KeysAction::List { namespace } => {
            let list = client.json(client.request(Method::GET, &format!("/admin/namespaces/{namespace}/keys"))).await?;
            println!("{:<28} {:<20} {:<26} {:<16} STATUS", "ID", "NAME", "CREATED", "PREFIX");
            for k in list["keys"].as_array().into_iter().flatten() {
                let status = if k["revokedAt"].is_null() { "active" } else { "revoked" };
                println!(
                    "{:<28} {:<20} {:<26} {:<16} {status}",
                    k["id"].as_str().unwrap_or(""),
                    k["name"].as_str().unwrap_or("-"),
                    k["createdAt"].as_str().unwrap_or(""),
                    k["prefix"].as_str().unwrap_or(""),
                );
            }
        }
        KeysAction::Revoke { namespace, id } => {
            client.json(client.request(Method::DELETE, &format!("/admin/namespaces/{namespace}/keys/{id}"))).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
