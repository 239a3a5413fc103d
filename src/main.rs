//! The `recordhook` binary: parses the command line and hands over to the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use recordhook::cli::{self, Cli};

/// How long, once the command is done, the runtime may wait for work that
/// is still running before the process exits anyway. A delivery stuck in a
/// write (the log sink on a stdout nobody reads) cannot be cancelled; the
/// shutdown already gave up on it and it is attempted again after a restart,
/// so it must not hold the exit.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("recordhook: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(cli::run(cli));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("recordhook: {err:#}");
            ExitCode::FAILURE
        }
    }
}
