//! `events-bench`: the benchmarks of events.do, each against a ceiling
//! measured in the same run. A separate binary, so that the product binary
//! (`events`) does not carry the harness.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  # Durable-object runtime: call round trip, group commit vs raw fsync, activation, memory
  events-bench runtime --seconds 3

  # Durable HTTP ingest vs a parse-only HTTP ceiling, with latency at half of peak
  events-bench ingest --seconds 10

  # From a checkout, without installing: the same through cargo
  cargo run --release -p events-bench -- ingest --seconds 10

Every benchmark prints a Markdown table of its figures; BENCHMARKS.md keeps the latest.";

/// events.do benchmarks: each figure next to a ceiling or peer measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "events-bench", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    which: Which,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum Which {
    /// The durable-object runtime: call round trip, durable writes vs raw fsync, group commit, activation, memory.
    #[command(after_help = "\
Examples:
  events-bench runtime
  events-bench runtime --seconds 3")]
    Runtime(Timed),
    /// HTTP ingest against a parse-only HTTP ceiling, optionally against NATS JetStream.
    #[cfg(feature = "server")]
    #[command(after_help = "\
Examples:
  # Durable HTTP ingest vs a parse-only HTTP ceiling, with latency at half of peak
  events-bench ingest --seconds 10

  # The same, then NATS JetStream (nats-server -js, file storage) with the same bodies and
  # connections, and one event per request on both (installs nats-server with apt-get if
  # missing and root; otherwise skips the peer and says so)
  events-bench ingest --against-nats --seconds 5")]
    Ingest(IngestArgs),
    /// The ingest path taken apart: each stage's events/s on one core, and one writer shard.
    #[cfg(feature = "server")]
    #[command(after_help = "\
Examples:
  events-bench stages --seconds 1")]
    Stages(Timed),
    /// Change capture: changes applied/s vs raw SQLite, reconstruction, memory.
    #[command(after_help = "\
Examples:
  events-bench cdc --docs 1000000
  events-bench cdc --docs 100000")]
    Cdc(CdcArgs),
    /// One running host against another (the Worker in local workerd vs `events serve`).
    #[cfg(feature = "server")]
    #[command(after_help = "\
Examples:
  # scripts/worker.sh bench starts both hosts and runs this; tokens from the environment
  EVENTS_BENCH_ADMIN_TOKEN=... EVENTS_BENCH_AGAINST_TOKEN=... events-bench hosts \\
      --base-url http://127.0.0.1:8788 --against-url http://127.0.0.1:8787")]
    Hosts(HostsArgs),
    /// SQL: five analytic queries through `POST /query` vs DuckDB on the same Parquet files.
    #[cfg(feature = "server")]
    #[command(after_help = "\
Examples:
  # Needs Python with duckdb (crates/events-bench/py/requirements.txt)
  EVENTS_PYTHON=.venv/bin/python events-bench query --events 10000000")]
    Query(QueryArgs),
}

/// Options of a benchmark made of timed phases.
#[derive(Debug, Args)]
struct Timed {
    /// Seconds per timed phase.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

/// `ingest`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
struct IngestArgs {
    #[command(flatten)]
    timed: Timed,
    /// Also measure NATS JetStream (`nats-server -js`, file storage, started on a free port)
    /// with the same bodies and connections, awaiting each publish acknowledgement, and
    /// compare one event per request on both. Installs nats-server with apt-get when it is
    /// missing and this runs as root; otherwise skips the peer with a message.
    #[arg(long)]
    against_nats: bool,
}

/// `cdc`.
#[derive(Debug, Args)]
struct CdcArgs {
    /// Documents inserted; a fifth of them are then updated.
    #[arg(long, default_value_t = 1_000_000)]
    docs: usize,
}

/// `hosts`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
struct HostsArgs {
    #[command(flatten)]
    timed: Timed,
    /// Base URL of the host measured.
    #[arg(long)]
    base_url: String,
    /// Admin token of the host measured.
    #[arg(long, env = "EVENTS_BENCH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// What the figures call the host measured.
    #[arg(long, default_value = "Worker (local workerd)")]
    label: String,
    /// Base URL of the host it is compared against.
    #[arg(long)]
    against_url: String,
    /// Admin token of the host it is compared against.
    #[arg(long, env = "EVENTS_BENCH_AGAINST_TOKEN", hide_env_values = true)]
    against_token: String,
    /// What the figures call the host it is compared against.
    #[arg(long, default_value = "native events serve")]
    against_label: String,
    /// Concurrent connections of the batch phase.
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

/// `query`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
struct QueryArgs {
    /// Events generated.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
}

async fn run(which: Which) -> anyhow::Result<Vec<events_bench::Figure>> {
    match which {
        Which::Runtime(t) => {
            let opts = events_bench::runtime::RuntimeBench { seconds: t.seconds, ..Default::default() };
            events_bench::runtime::run(&opts).await
        }
        #[cfg(feature = "server")]
        Which::Ingest(a) => {
            let opts = events_bench::ingest::IngestBench {
                seconds: a.timed.seconds,
                against_nats: a.against_nats,
                ..Default::default()
            };
            events_bench::ingest::run(&opts).await
        }
        #[cfg(feature = "server")]
        Which::Stages(t) => events_bench::stages::run(&events_bench::stages::StagesBench { seconds: t.seconds }).await,
        Which::Cdc(a) => {
            let opts = events_bench::cdc::CdcBench { docs: a.docs, updates: a.docs / 5, ..Default::default() };
            events_bench::cdc::run(&opts).await
        }
        #[cfg(feature = "server")]
        Which::Hosts(a) => {
            use events_bench::hosts::{HostsBench, Target};
            let target = Target {
                label: a.label,
                base_url: a.base_url.trim_end_matches('/').to_string(),
                admin_token: a.admin_token,
            };
            let reference = Target {
                label: a.against_label,
                base_url: a.against_url.trim_end_matches('/').to_string(),
                admin_token: a.against_token,
            };
            let opts =
                HostsBench { target, reference, seconds: a.timed.seconds, connections: a.connections, batch: 100 };
            events_bench::hosts::run(&opts).await
        }
        #[cfg(feature = "server")]
        Which::Query(a) => {
            let opts = events_bench::query::QueryBench { events: a.events, ..Default::default() };
            events_bench::query::run(&opts).await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.which).await {
        Ok(figures) => {
            println!("{}", events_bench::markdown(&figures));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn parser_is_consistent_and_every_benchmark_has_examples() {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.clone().debug_assert();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let after = sub.get_after_help().map(|s| s.to_string()).unwrap_or_default();
            assert!(after.contains("events-bench "), "`events-bench {} --help` has no example", sub.get_name());
            assert!(sub.get_about().is_some(), "`events-bench {}` has no description", sub.get_name());
        }
    }

    #[test]
    fn options_parse() {
        let cli = Cli::try_parse_from(["events-bench", "runtime", "--seconds", "1.5"]).unwrap();
        assert!(matches!(cli.which, Which::Runtime(Timed { seconds }) if seconds == 1.5));
        let cli = Cli::try_parse_from(["events-bench", "cdc", "--docs", "10"]).unwrap();
        assert!(matches!(cli.which, Which::Cdc(CdcArgs { docs: 10 })));
    }
}
