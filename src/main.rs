//! The `recordhook` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use recordhook::cli::{self, Cli};

/// mimalloc: the service allocates many small, short-lived objects per
/// request (JSON values, strings); glibc's malloc spent ~12% of the CPU in the
/// benchmark's profile (bench/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
