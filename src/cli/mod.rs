//! The command line: `recordhook [serve]`, `dead-letters …`, `check-config`,
//! `reconcile`, `sign`, `send-test` and `healthcheck`, all taking `--config FILE`.

mod dead_letters;
mod reconcile;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::configuration::load_for_file;
use crate::startup::{Application, shutdown_signals};
use crate::telemetry;

pub use dead_letters::{DeadLetterCommand, Selection};

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
    /// Load and validate the configuration and print it with every secret redacted.
    ///
    /// Exits non-zero, with the reason, when the configuration is invalid.
    ///
    /// Example: recordhook check-config --config /etc/recordhook/config.toml
    CheckConfig,
    /// Ask Tencent's API which callbacks CSS sent in a window, recover the
    /// ones the spool lacks, and print a report; exits 2 when something is
    /// still missing.
    ///
    /// Example: recordhook reconcile --since 6h --dry-run
    Reconcile(reconcile::ReconcileArgs),
    /// Print `t` and `sign` for a key, as CSS would send them (JSON).
    ///
    /// Example: recordhook sign --key your-callback-key --t 1700000600
    Sign {
        /// The callback key.
        #[arg(long, env = "RECORDHOOK_SIGN_KEY", hide_env_values = true)]
        key: String,
        /// Expiry time, Unix seconds; default now + 600.
        #[arg(long, allow_negative_numbers = true)]
        t: Option<i64>,
    },
    /// POST a realistic, freshly signed recording callback and print the answer.
    ///
    /// Exits non-zero unless the answer is 200. Tests a deployment without a live stream.
    ///
    /// Example: recordhook send-test --url https://hooks.example.com/callback --key your-callback-key
    SendTest(tools::SendTestArgs),
    /// Exit 0 when /healthz answers 200 (the container's HEALTHCHECK).
    ///
    /// Example: recordhook healthcheck --url http://127.0.0.1:8080/healthz
    Healthcheck {
        /// Health URL; default built from the configured listen address.
        #[arg(long)]
        url: Option<String>,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::DeadLetters(command) => dead_letters::run(cli.config.as_deref(), command).await,
        Command::CheckConfig => tools::check_config(cli.config.as_deref()).await,
        Command::Reconcile(args) => reconcile::run(cli.config.as_deref(), args).await,
        Command::Sign { key, t } => tools::sign(&key, t),
        Command::SendTest(args) => tools::send_test(args).await,
        Command::Healthcheck { url } => tools::healthcheck(cli.config.as_deref(), url).await,
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = load_for_file(config.as_deref())?;
    // Held until serve returns, i.e. until the process exits: dropping them
    // writes out the log lines and spans still queued.
    let _telemetry = telemetry::init(
        &settings.log,
        settings.telemetry.otlp.as_ref(),
        std::io::stdout(),
    )?;
    // On SIGHUP the whole configuration is read again, so keys rotated in the
    // file, the key file or the environment all take effect.
    let reload = Box::new(move || load_for_file(config.as_deref())?.auth.authenticator());
    let application = Application::build(settings)
        .await?
        .with_key_reloader(reload);
    application.run_until_stopped(shutdown_signals()).await?;
    Ok(ExitCode::SUCCESS)
}
