//! The argument parser: the subcommand list and the options of the client commands.

use clap::{Args, Parser};

use crate::commands::Command;
use crate::output::OutputArgs;

const EXAMPLES: &str = "\
Examples:
  # Run a local development server on 127.0.0.1:8787
  events serve --dev

  # With the server running: a key for namespace acme, an event, a query
  export EVENTS_TOKEN=$(events keys create acme --token $EVENTS_ADMIN_TOKEN)
  echo '{\"type\":\"order.created\",\"amount\":5}' | events send
  events flush --token $EVENTS_ADMIN_TOKEN
  events query \"SELECT type, count(*) AS n FROM events GROUP BY type\"

  # Help for one command
  events subs --help

Client commands (all but serve) take --url (EVENTS_URL, default http://127.0.0.1:8787)
and --token (EVENTS_TOKEN), and print a table on a terminal, NDJSON when piped, and
the server's JSON answer with --json.

Benchmarks are a separate binary, events-bench (cargo run --release -p events-bench -- --help).";

/// events.do: event streaming, CDC and lakehouse.
#[derive(Debug, Parser)]
#[command(name = "events", version, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The options of every client command: where the server is, who calls, how to print.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the events.do server.
    #[arg(long, global = true, env = "EVENTS_URL", default_value = "http://127.0.0.1:8787", value_name = "URL")]
    pub url: String,

    /// API key or admin token, sent as `Authorization: Bearer <TOKEN>`.
    #[arg(long, global = true, env = "EVENTS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,
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
        assert!(!about.contains('\\'), "`{path}`'s description shows a backslash: {about}");
        let after = cmd.get_after_help().map(|s| s.to_string()).unwrap_or_default();
        assert!(after.contains("Examples:"), "`{path} --help` has no Examples: section");
        let example = after.lines().any(|l| l.trim_start().starts_with(path) || l.contains(&format!(" {path} ")));
        assert!(example, "`{path} --help` has no example of `{path}`");
        for arg in cmd.get_arguments() {
            let help = arg.get_help().map(|s| s.to_string()).unwrap_or_default();
            assert!(!help.contains('\\'), "`{path} --{}` help shows a backslash: {help}", arg.get_id());
        }
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

    fn long_flags(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect()
    }

    #[test]
    fn serve_has_no_client_options_and_client_commands_have_them() {
        let mut cmd = Cli::command();
        cmd.build();
        let serve = cmd.find_subcommand("serve").unwrap();
        for flag in ["url", "token", "json", "format"] {
            assert!(!long_flags(serve).contains(&flag.to_string()), "serve --help lists --{flag}");
        }
        let create = cmd.find_subcommand("keys").unwrap().find_subcommand("create").unwrap();
        for flag in ["url", "token", "json", "format"] {
            assert!(long_flags(create).contains(&flag.to_string()), "keys create has no --{flag}");
        }
    }

    #[test]
    fn client_options_go_before_or_after_the_subcommand() {
        use crate::commands::Command;
        use crate::commands::keys::KeysAction;
        for argv in [
            &["events", "keys", "--url", "http://h:1", "--token", "t", "list", "acme"][..],
            &["events", "keys", "list", "acme", "--url", "http://h:1", "--token", "t"][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Keys(keys) = cli.command else { panic!("parsed as another command") };
            assert!(matches!(keys.action, KeysAction::List { .. }));
            assert_eq!(keys.client.url, "http://h:1", "{argv:?}");
            assert_eq!(keys.client.token.as_deref(), Some("t"), "{argv:?}");
        }
        assert!(Cli::try_parse_from(["events", "serve", "--url", "http://h:1"]).is_err());
    }

    #[test]
    fn default_url() {
        let cli = Cli::try_parse_from(["events", "tables"]).unwrap();
        let crate::commands::Command::Tables(t) = cli.command else { panic!("parsed as another command") };
        // EVENTS_URL may be set in the environment running the tests.
        if std::env::var_os("EVENTS_URL").is_none() {
            assert_eq!(t.client.url, "http://127.0.0.1:8787");
        }
    }
}
