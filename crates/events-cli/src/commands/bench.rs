//! `events bench`: the benchmarks, each against a ceiling measured in the same run.

use clap::{Args, ValueEnum};

use crate::cli::GlobalArgs;

const EXAMPLES: &str = "\
Examples:
  # Durable-object runtime: call round trip, group commit vs raw fsync, activation, memory
  cargo run --release -p events-cli -- bench runtime

  # Durable HTTP ingest vs a parse-only HTTP ceiling, with latency at half of peak
  cargo run --release -p events-cli -- bench ingest --seconds 10

  # Change capture: changes applied/s vs raw SQLite, reconstruction of 1,000,000 documents
  cargo run --release -p events-cli -- bench cdc --docs 1000000";

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
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    /// The durable-object runtime.
    Runtime,
    /// HTTP ingest.
    Ingest,
    /// Change capture.
    Cdc,
}

/// Runs `events bench`.
pub async fn run(_global: &GlobalArgs, args: BenchArgs) -> anyhow::Result<()> {
    let figures = match args.which {
        Which::Runtime => {
            let opts = events_bench::runtime::RuntimeBench { seconds: args.seconds, ..Default::default() };
            events_bench::runtime::run(&opts).await?
        }
        Which::Ingest => {
            let opts = events_bench::ingest::IngestBench { seconds: args.seconds, ..Default::default() };
            events_bench::ingest::run(&opts).await?
        }
        Which::Cdc => {
            let opts = events_bench::cdc::CdcBench { docs: args.docs, updates: args.docs / 5, ..Default::default() };
            events_bench::cdc::run(&opts).await?
        }
    };
    println!("{}", events_bench::markdown(&figures));
    Ok(())
}
