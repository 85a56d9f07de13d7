//! `cargo run --release -p events-bench --example subscriptions`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let figures = events_bench::subscriptions::run(&Default::default()).await?;
    println!("{}", events_bench::markdown(&figures));
    Ok(())
}
