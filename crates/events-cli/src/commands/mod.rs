//! One module per subcommand. To add one: write `commands/foo.rs` with a
//! `FooArgs` (clap `Args`, with `about` and an `after_help` holding
//! `Examples:`; a client command flattens [`crate::cli::ClientArgs`] and
//! prints through [`crate::output`]) and `pub async fn run(args: FooArgs)`,
//! then add a variant to [`Command`] and an arm to [`run`].

use clap::Subcommand;

use crate::cli::Cli;

pub mod cdc;
pub mod flush;
pub mod keys;
pub mod lake;
pub mod schema;
pub mod send;
pub mod serve;
pub mod subs;
pub mod tail;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    Serve(serve::ServeArgs),
    Send(send::SendArgs),
    Tail(tail::TailArgs),
    Flush(flush::FlushArgs),
    Query(lake::QueryArgs),
    Tables(lake::TablesArgs),
    Snapshots(lake::SnapshotsArgs),
    Maintain(lake::MaintainArgs),
    Keys(keys::KeysArgs),
    Schema(schema::SchemaArgs),
    Subs(subs::SubsArgs),
    Deliveries(subs::DeliveriesArgs),
    Replay(subs::ReplayArgs),
    Cdc(cdc::CdcArgs),
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Send(args) => send::run(args).await,
        Command::Flush(args) => flush::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Query(args) => lake::run_query(args).await,
        Command::Tables(args) => lake::run_tables(args).await,
        Command::Snapshots(args) => lake::run_snapshots(args).await,
        Command::Maintain(args) => lake::run_maintain(args).await,
        Command::Keys(args) => keys::run(args).await,
        Command::Schema(args) => schema::run(args).await,
        Command::Subs(args) => subs::run_subs(args).await,
        Command::Deliveries(args) => subs::run_deliveries(args).await,
        Command::Replay(args) => subs::run_replay(args).await,
        Command::Cdc(args) => cdc::run(args).await,
    }
}
