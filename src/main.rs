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

/// mimalloc instead of glibc's allocator: each callback allocates and frees
/// hundreds of small buffers across threads (the request, its JSON, the
/// record, the spool's rows, each sink's line), and glibc's malloc and free
/// were a sixth of its instructions (bench/BENCHMARKS.md, "Per-callback cost").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            eprintln!("recordhook: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// `err` and its causes, `: `-separated, each said once. Most of the
/// library's errors end their message with their cause's (so that a log
/// line is complete) and keep it as their source too; anyhow's `{:#}`
/// would print it again after them.
fn report(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated_and_one_that_is_not_is_added() {
        let io = || std::io::Error::other("disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("could not write: {0}")]
        struct Saying(#[source] std::io::Error);
        let said = anyhow::Error::new(Saying(io())).context("serving");
        assert_eq!(report(&said), "serving: could not write: disk on fire");
        let silent = anyhow::Error::new(io()).context("serving");
        assert_eq!(report(&silent), "serving: disk on fire");
    }
}
