//! The `recordhook` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use recordhook::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("recordhook: {err:#}");
            ExitCode::FAILURE
        }
    }
}
