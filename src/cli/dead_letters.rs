//! `recordhook dead-letters list|retry|purge`: work on the spool directly,
//! beside a running server, without holding it up.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;

use crate::configuration::load_for_file;
use crate::spool::Spool;

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

/// Opens the configured spool for a command the light way (see
/// [`Spool::open_for_admin`]): never creating, migrating or checkpointing it,
/// so a running server beside it is not held up.
async fn open_existing_spool(config: Option<&Path>) -> anyhow::Result<Spool> {
    let settings = load_for_file(config)?;
    Ok(Spool::open_for_admin(&settings.spool.options()).await?)
}

/// Runs a dead-letter command against the configured spool.
pub async fn run(config: Option<&Path>, command: DeadLetterCommand) -> anyhow::Result<ExitCode> {
    let spool = open_existing_spool(config).await?;
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
