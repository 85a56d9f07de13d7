//! `cargo run --release -p events-bench --example ingest`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let figures = events_bench::ingest::run(&Default::default()).await?;
    println!("{}", events_bench::markdown(&figures));
    Ok(())
}
