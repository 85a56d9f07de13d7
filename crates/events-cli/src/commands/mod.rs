//! One module per subcommand. To add one: write `commands/foo.rs` with a
//! `FooArgs` (clap `Args`, with `about` and an `after_help` holding
//! `Examples:`) and `pub async fn run(global: &GlobalArgs, args: FooArgs)`,
//! then add a variant to [`Command`] and an arm to [`run`].

use clap::Subcommand;

use crate::cli::Cli;

pub mod cdc;
pub mod keys;
pub mod lake;
pub mod schema;
pub mod send;
pub mod serve;
pub mod subs;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    Serve(serve::ServeArgs),
    Subs(subs::SubsArgs),
    Deliveries(subs::DeliveriesArgs),
    Replay(subs::ReplayArgs),
    Send(send::SendArgs),
    Keys(keys::KeysArgs),
    Schema(schema::SchemaArgs),
    Cdc(cdc::CdcArgs),
    Query(lake::QueryArgs),
    Tables(lake::TablesArgs),
    Snapshots(lake::SnapshotsArgs),
    Maintain(lake::MaintainArgs),
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    match command {
        Command::Serve(args) => serve::run(&global, args).await,
        Command::Subs(args) => subs::run_subs(&global, args).await,
        Command::Deliveries(args) => subs::run_deliveries(&global, args).await,
        Command::Replay(args) => subs::run_replay(&global, args).await,
        Command::Send(args) => send::run(&global, args).await,
        Command::Keys(args) => keys::run(&global, args).await,
        Command::Schema(args) => schema::run(&global, args).await,
        Command::Cdc(args) => cdc::run(&global, args).await,
        Command::Query(args) => lake::run_query(&global, args).await,
        Command::Tables(args) => lake::run_tables(&global, args).await,
        Command::Snapshots(args) => lake::run_snapshots(&global, args).await,
        Command::Maintain(args) => lake::run_maintain(&global, args).await,
    }
}
