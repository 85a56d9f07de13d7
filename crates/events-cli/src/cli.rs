//! The argument parser: global options and the subcommand list.

use clap::{Args, Parser};

use crate::commands::Command;

const EXAMPLES: &str = "\
Examples:
  # Run a local development server on 127.0.0.1:8787
  events serve --dev

  # Run with a config file, overriding the listen address
  events serve --config /etc/events/config.toml --listen 0.0.0.0:8787

  # Help for one command
  events serve --help

Benchmarks are a separate binary, events-bench (cargo run --release -p events-bench -- --help).";

/// events.do: event streaming, CDC and lakehouse.
#[derive(Debug, Parser)]
#[command(name = "events", version, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options of the client commands (ignored by `serve`).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Base URL of the events.do server used by client commands.
    #[arg(long, global = true, env = "EVENTS_URL", default_value = "http://127.0.0.1:8787", value_name = "URL")]
    pub url: String,

    /// API key or admin token sent as `Authorization: Bearer <TOKEN>` by client commands.
    #[arg(long, global = true, env = "EVENTS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn parser_is_consistent() {
        Cli::command().debug_assert();
    }

    fn check_help(cmd: &clap::Command, path: &str) {
        let about = cmd.get_about().map(|s| s.to_string()).unwrap_or_default();
        assert!(!about.trim().is_empty(), "`{path}` has no description");
        let after = cmd.get_after_help().map(|s| s.to_string()).unwrap_or_default();
        assert!(after.contains("Examples:"), "`{path} --help` has no Examples: section");
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" {
                check_help(sub, &format!("{path} {}", sub.get_name()));
            }
        }
    }

    #[test]
    fn every_command_has_a_description_and_examples() {
        let mut cmd = Cli::command();
        cmd.build();
        check_help(&cmd, "events");
    }

    #[test]
    fn global_defaults() {
        let cli = Cli::try_parse_from(["events", "serve"]).unwrap();
        // EVENTS_URL may be set in the environment running the tests.
        if std::env::var_os("EVENTS_URL").is_none() {
            assert_eq!(cli.global.url, "http://127.0.0.1:8787");
        }
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from(["events", "serve", "--url", "http://h:1", "--token", "t"]).unwrap();
        assert_eq!(cli.global.url, "http://h:1");
        assert_eq!(cli.global.token.as_deref(), Some("t"));
        let cli = Cli::try_parse_from(["events", "--url", "http://h:2", "serve"]).unwrap();
        assert_eq!(cli.global.url, "http://h:2");
    }
}
