//! `events serve`: runs the HTTP server until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use events_server::{ConfigOverrides, ServerConfig};

const EXAMPLES: &str = "\
Examples:
  # Development server on 127.0.0.1:8787, unauthenticated writes allowed
  events serve --dev

  # Pick a free port, a scratch data directory; the first stdout line tells the address
  events serve --listen 127.0.0.1:0 --data-dir scratch-data

  # From a config file (data_dir, listen, admin_token, [ingest] limits, ...)
  events serve --config events.toml --env production

Configuration precedence: defaults < --config FILE < EVENTS_* environment
variables (EVENTS_DATA_DIR, EVENTS_LISTEN, EVENTS_ENV, EVENTS_DEV,
EVENTS_ADMIN_TOKEN, EVENTS_LAKE_URL, EVENTS_LOG_FORMAT,
EVENTS_REQUEST_TIMEOUT_MS, EVENTS_MAX_BODY_BYTES, EVENTS_HTTP_HEADER_READ_TIMEOUT_MS,
EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS, EVENTS_HTTP_MAX_CONNECTIONS,
EVENTS_HTTP_MAX_CONNECTIONS_PER_IP) < flags.";

/// Run the events.do server until interrupted (SIGINT/SIGTERM), then shut down gracefully.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for durable state [default: ./events-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to listen on, IP:PORT; port 0 picks a free port [default: 127.0.0.1:8787].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Development mode: allow unauthenticated writes. Never use in production.
    #[arg(long)]
    pub dev: bool,

    /// Deployment name reported by /health [default: development].
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
}

impl ServeArgs {
    /// The flags as the top configuration layer.
    pub fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            env: self.env.clone(),
            dev: self.dev.then_some(true),
            ..Default::default()
        }
    }
}

/// Loads the configuration and serves until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServerConfig::load(args.config.as_deref(), &|k| std::env::var(k).ok(), args.overrides())?;
    events_server::init_tracing(config.log_format);
    tracing::debug!(?config, "configuration loaded");
    events_server::serve(config, shutdown_signal()).await
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;
    use crate::commands::Command;

    fn serve_args(args: &[&str]) -> super::ServeArgs {
        let mut argv = vec!["events", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => a,
            other => panic!("parsed as another command: {other:?}"),
        }
    }

    #[test]
    fn flags_become_overrides() {
        let a = serve_args(&["--data-dir", "/d", "--listen", "127.0.0.1:0", "--dev", "--env", "test"]);
        let o = a.overrides();
        assert_eq!(o.data_dir.as_deref(), Some(std::path::Path::new("/d")));
        assert_eq!(o.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(o.dev, Some(true));
        assert_eq!(o.env.as_deref(), Some("test"));
    }

    #[test]
    fn no_flags_override_nothing() {
        assert_eq!(serve_args(&[]).overrides(), events_server::ConfigOverrides::default());
    }

    #[test]
    fn bad_listen_names_the_flag() {
        let err = Cli::try_parse_from(["events", "serve", "--listen", "localhost"]).unwrap_err().to_string();
        assert!(err.contains("--listen"), "{err}");
    }
}
