//! `cargo run --release -p events-bench --example schemas`
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let figures = events_bench::schemas::run(&Default::default()).await?;
    println!("{}", events_bench::markdown(&figures));
    Ok(())
}
