//! `events`: the command-line tool of events.do.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod client;
mod commands;
mod output;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
