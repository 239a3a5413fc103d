//! The command line against a PostgreSQL spool: `check-config` connects and
//! reports, never showing the password; the `dead-letters` commands work as
//! they do on SQLite.

use std::process::Output;
use std::time::Duration;

use recordhook::protocol::EventTypes;
use recordhook::spool::{Settlement, SinkRegistration, Spool};

use crate::harness::Test;
use crate::helpers::refusing_port;
use crate::postgres::{Database, WINDOW, at};
use crate::records::{first_attempts, new_record, record};
use crate::test;

pub fn tests() -> Vec<Test> {
    vec![
        test!(check_config_reports_the_database_and_never_shows_its_password),
        test!(dead_letter_commands_list_retry_and_purge_on_postgres),
    ]
}

const PASSWORD: &str = "s3cret-pw";

/// Runs the binary with a config file holding `toml`, off the runtime.
async fn recordhook(dir: &tempfile::TempDir, toml: &str, args: &[&str]) -> Output {
    let config = dir.path().join("config.toml");
    std::fs::write(&config, toml).unwrap();
    let mut command = crate::binary::command(dir);
    command
        .args(args)
        .arg("--config")
        .arg(&config)
        .env("RECORDHOOK__AUTH__KEYS", "k");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// A config on the spool at `url`.
fn config(url: &str) -> String {
    format!("[spool]\nbackend = \"postgres\"\n[spool.postgres]\nurl = \"{url}\"\n")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn check_config_reports_the_database_and_never_shows_its_password() {
    let database = Database::create().await;
    let dir = tempfile::tempdir().unwrap();
    // Trust authentication accepts any password, so a real one can be in the URL.
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:5432/{}",
        database.name
    );
    let fresh = recordhook(&dir, &config(&url), &["check-config"]).await;
    let said = text(&fresh);
    assert!(fresh.status.success(), "{said}");
    assert!(
        said.contains("is reachable") && said.contains("not created yet"),
        "{said}"
    );
    assert!(!said.contains(PASSWORD), "{said}");
    assert!(said.contains("postgres:[redacted]@"), "{said}");
    Spool::open(&database.options(WINDOW, Duration::from_secs(30)))
        .await
        .unwrap()
        .close()
        .await;
    let current = recordhook(&dir, &config(&url), &["check-config"]).await;
    let said = text(&current);
    assert!(
        current.status.success() && said.contains("schema is current"),
        "{said}"
    );
    // Unreachable: a failure that names the database, not its password.
    let (_held, refusing) = refusing_port();
    let away = format!(
        "postgres://postgres:{PASSWORD}@{refusing}/{}",
        database.name
    );
    let failed = recordhook(&dir, &config(&away), &["check-config"]).await;
    let said = text(&failed);
    assert!(!failed.status.success(), "{said}");
    assert!(
        said.contains("cannot connect") && !said.contains(PASSWORD),
        "{said}"
    );
}

async fn dead_letter_commands_list_retry_and_purge_on_postgres() {
    let database = Database::create().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&database.url());
    let spool = Spool::open(&database.options(WINDOW, Duration::from_secs(30)))
        .await
        .unwrap();
    spool
        .register_sinks(
            vec![SinkRegistration {
                name: "backend".into(),
                event_types: EventTypes::All,
                single_writer: false,
            }],
            at(0),
        )
        .await
        .unwrap();
    let record = record("dead-1");
    spool.accept(new_record(&record), at(1_000)).await.unwrap();
    let kill = |claim: recordhook::spool::Claim| {
        let outcomes = first_attempts(&claim, |_| Settlement::Dead {
            error: "400 Bad Request".into(),
        });
        spool.settle("backend", claim.receipt, outcomes, at(1_001))
    };
    let claim = spool
        .claim("backend", &EventTypes::All, at(1_001), 10)
        .await
        .unwrap();
    kill(claim).await.unwrap();
    let listed = recordhook(&dir, &toml, &["dead-letters", "list"]).await;
    let said = text(&listed);
    assert!(listed.status.success(), "{said}");
    assert!(
        said.contains(&record.id) && said.contains("400 Bad Request"),
        "{said}"
    );
    let retried = recordhook(&dir, &toml, &["dead-letters", "retry", "--all"]).await;
    assert!(retried.status.success(), "{}", text(&retried));
    // The command queued it at the real "now".
    let again = spool
        .claim(
            "backend",
            &EventTypes::All,
            std::time::SystemTime::now(),
            10,
        )
        .await
        .unwrap();
    assert_eq!(again.deliveries.len(), 1);
    kill(again).await.unwrap();
    let purged = recordhook(&dir, &toml, &["dead-letters", "purge", "--id", &record.id]).await;
    assert!(purged.status.success(), "{}", text(&purged));
    assert!(spool.dead_letters(None).await.unwrap().is_empty());
}
