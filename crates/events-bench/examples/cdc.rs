//! `cargo run --release -p events-bench --example cdc -- [documents]`: the
//! same run as `events-bench cdc --docs <documents>` (default 1,000,000),
//! without building the CLI.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let docs = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let opts = events_bench::cdc::CdcBench { docs, updates: docs / 5, ..Default::default() };
    let figures = events_bench::cdc::run(&opts).await?;
    println!("{}", events_bench::markdown(&figures));
    Ok(())
}
