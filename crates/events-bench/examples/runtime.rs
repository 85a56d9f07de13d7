//! `cargo run --release -p events-bench --example runtime`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let figures = events_bench::runtime::run(&Default::default()).await?;
    println!("{}", events_bench::markdown(&figures));
    Ok(())
}
