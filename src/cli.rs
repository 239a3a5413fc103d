//! The command line: `recordhook [serve] [--config FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::configuration::load_for_file;
use crate::startup::{Application, shutdown_signal};
use crate::telemetry;

/// Receives Tencent Cloud CSS recording callbacks, verifies them, stores them
/// durably and delivers them to sinks.
#[derive(Debug, Parser)]
#[command(name = "recordhook", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file, layered over config/default.toml and under RECORDHOOK__* variables.
    #[arg(long, global = true, env = "RECORDHOOK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    ///
    /// Example: RECORDHOOK__AUTH__KEYS=your-callback-key recordhook serve --config /etc/recordhook/config.toml
    Serve,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = load_for_file(config.as_deref())?;
    telemetry::install(telemetry::subscriber(&settings.log, std::io::stdout)?);
    let application = Application::build(settings).await?;
    application.run_until_stopped(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
