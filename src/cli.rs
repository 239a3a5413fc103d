//! The command line: `recordhook [serve]` and `recordhook dead-letters …`,
//! all taking `--config FILE`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};

use crate::configuration::load_for_file;
use crate::spool::Spool;
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
    /// Inspect, retry or purge deliveries that were given up on.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

/// `recordhook dead-letters …`
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Print dead letters, one JSON object per line (id, sink, attempts, last_error, last_attempt_at).
    ///
    /// Example: recordhook dead-letters list --sink backend | jq .
    List {
        /// Only this sink's.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Queue dead letters for delivery again; a running server picks them up within a second.
    ///
    /// Example: recordhook dead-letters retry --sink backend --all
    Retry(Selection),
    /// Delete dead letters for good (their records then leave the spool with retention).
    ///
    /// Example: recordhook dead-letters purge --id 3f2a…
    Purge(Selection),
}

/// Which dead letters a command acts on.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Only this sink's.
    #[arg(long)]
    pub sink: Option<String>,
    /// The dead letters of this event id.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Every dead letter (of `--sink`, when given).
    #[arg(long)]
    pub all: bool,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::DeadLetters(command) => dead_letters(cli.config, command).await,
    }
}

/// Opens the configured spool for a command, refusing to create a new one.
fn open_existing_spool(config: Option<&Path>) -> anyhow::Result<Spool> {
    let settings = load_for_file(config)?;
    let path = &settings.spool.path;
    if !path.exists() {
        anyhow::bail!(
            "spool `{}` does not exist: check spool.path (or --config) points at the server's spool",
            path.display()
        );
    }
    Ok(Spool::open(
        path,
        Duration::from_secs(settings.spool.dedup_window_secs),
    )?)
}

async fn dead_letters(
    config: Option<PathBuf>,
    command: DeadLetterCommand,
) -> anyhow::Result<ExitCode> {
    let spool = open_existing_spool(config.as_deref())?;
    let result = match command {
        DeadLetterCommand::List { sink } => {
            let mut out = std::io::stdout().lock();
            for letter in spool.dead_letters(sink).await? {
                writeln!(out, "{}", serde_json::to_string(&letter)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterCommand::Retry(selection) => {
            let count = spool
                .requeue_dead(selection.sink, selection.id.clone(), SystemTime::now())
                .await?;
            report(count, "queued again", selection.id.as_deref())
        }
        DeadLetterCommand::Purge(selection) => {
            let count = spool
                .purge_dead(selection.sink, selection.id.clone())
                .await?;
            report(count, "purged", selection.id.as_deref())
        }
    };
    spool.close().await;
    result
}

fn report(count: usize, done: &str, id: Option<&str>) -> anyhow::Result<ExitCode> {
    println!("{count} dead letter(s) {done}");
    match id {
        Some(id) if count == 0 => {
            eprintln!("recordhook: no dead letter with id {id}");
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = load_for_file(config.as_deref())?;
    telemetry::install(telemetry::subscriber(&settings.log, std::io::stdout)?);
    let application = Application::build(settings).await?;
    application.run_until_stopped(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
