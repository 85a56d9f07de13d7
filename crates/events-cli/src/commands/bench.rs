//! `events bench`: the benchmarks, each against a ceiling measured in the same run.

use clap::{Args, ValueEnum};

use crate::cli::GlobalArgs;

const EXAMPLES: &str = "\
Examples:
  # Durable-object runtime: call round trip, group commit vs raw fsync, activation, memory
  cargo run --release -p events-cli -- bench runtime

  # Durable HTTP ingest vs a parse-only HTTP ceiling, with latency at half of peak
  cargo run --release -p events-cli -- bench ingest --seconds 10

  # The same, then NATS JetStream (nats-server -js, file storage) with the same bodies and
  # connections, and one event per request on both (installs nats-server with apt-get if
  # missing and root; otherwise skips the peer and says so)
  cargo run --release -p events-cli -- bench ingest --against-nats --seconds 5

  # The ingest path taken apart: each stage's events/s on one core, and one writer shard
  cargo run --release -p events-cli -- bench stages --seconds 1

  # Change capture: changes applied/s vs raw SQLite, reconstruction of 1,000,000 documents
  cargo run --release -p events-cli -- bench cdc --docs 1000000

  # One running host against another (the Worker in local workerd vs `events serve`;
  # scripts/worker.sh bench starts both and runs this), tokens from the environment
  EVENTS_BENCH_ADMIN_TOKEN=... EVENTS_BENCH_AGAINST_TOKEN=... events bench hosts --base-url http://127.0.0.1:8788 --against-url http://127.0.0.1:8787

  # SQL: five analytic queries over 10 million generated events vs DuckDB (needs Python with duckdb)
  EVENTS_PYTHON=.venv/bin/python cargo run --release -p events-cli -- bench query --events 10000000";

/// Run a benchmark and print a Markdown table of its figures.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct BenchArgs {
    /// Which benchmark.
    pub which: Which,
    /// Seconds per timed phase.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Documents of the `cdc` benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    pub docs: usize,
    /// `hosts`: base URL of the host measured.
    #[arg(long)]
    pub base_url: Option<String>,
    /// `hosts`: admin token of the host measured.
    #[arg(long, env = "EVENTS_BENCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// `hosts`: what the figures call the host measured.
    #[arg(long, default_value = "Worker (local workerd)")]
    pub label: String,
    /// `hosts`: base URL of the host it is compared against.
    #[arg(long)]
    pub against_url: Option<String>,
    /// `hosts`: admin token of the host it is compared against.
    #[arg(long, env = "EVENTS_BENCH_AGAINST_TOKEN", hide_env_values = true)]
    pub against_token: Option<String>,
    /// `hosts`: what the figures call the host it is compared against.
    #[arg(long, default_value = "native events serve")]
    pub against_label: String,
    /// `hosts`: concurrent connections of the batch phase.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Events generated for the `query` benchmark.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: usize,
    /// `ingest`: also measure NATS JetStream (`nats-server -js`, file storage, started on a
    /// free port) with the same bodies and connections, awaiting each publish acknowledgement,
    /// and compare one event per request on both. Installs nats-server with apt-get when it is
    /// missing and this runs as root; otherwise skips the peer with a message.
    #[arg(long)]
    pub against_nats: bool,
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    /// The durable-object runtime.
    Runtime,
    /// HTTP ingest.
    Ingest,
    /// The ingest path stage by stage.
    Stages,
    /// Change capture.
    Cdc,
    /// One running host against another (needs --base-url and --against-url).
    Hosts,
    /// SQL queries vs DuckDB on the same Parquet files.
    Query,
}

/// Runs `events bench`.
pub async fn run(_global: &GlobalArgs, args: BenchArgs) -> anyhow::Result<()> {
    let figures = match args.which {
        Which::Runtime => {
            let opts = events_bench::runtime::RuntimeBench { seconds: args.seconds, ..Default::default() };
            events_bench::runtime::run(&opts).await?
        }
        Which::Ingest => {
            let opts = events_bench::ingest::IngestBench {
                seconds: args.seconds,
                against_nats: args.against_nats,
                ..Default::default()
            };
            events_bench::ingest::run(&opts).await?
        }
        Which::Stages => {
            let opts = events_bench::stages::StagesBench { seconds: args.seconds };
            events_bench::stages::run(&opts).await?
        }
        Which::Cdc => {
            let opts = events_bench::cdc::CdcBench { docs: args.docs, updates: args.docs / 5, ..Default::default() };
            events_bench::cdc::run(&opts).await?
        }
        Which::Hosts => {
            let need = |v: Option<String>, flag: &str| v.ok_or_else(|| anyhow::anyhow!("bench hosts needs {flag}"));
            let target = events_bench::hosts::Target {
                label: args.label,
                base_url: need(args.base_url, "--base-url")?.trim_end_matches('/').to_string(),
                admin_token: need(args.admin_token, "--admin-token")?,
            };
            let reference = events_bench::hosts::Target {
                label: args.against_label,
                base_url: need(args.against_url, "--against-url")?.trim_end_matches('/').to_string(),
                admin_token: need(args.against_token, "--against-token")?,
            };
            let opts = events_bench::hosts::HostsBench {
                target,
                reference,
                seconds: args.seconds,
                connections: args.connections,
                batch: 100,
            };
            events_bench::hosts::run(&opts).await?
        }
        Which::Query => {
            let opts = events_bench::query::QueryBench { events: args.events, ..Default::default() };
            events_bench::query::run(&opts).await?
        }
    };
    println!("{}", events_bench::markdown(&figures));
    Ok(())
}
