//! Turning async test functions into trials: behaviour tests once per
//! backend, PostgreSQL tests ignored when it cannot be reached (never under
//! `CI`).

use libtest_mimic::Trial;

use crate::postgres;
use crate::trial::{Body, trial};

/// Which spool a behaviour test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A behaviour test: its name and its body, given the backend.
pub struct ContractTest {
    pub name: &'static str,
    pub run: fn(Backend) -> Body,
}

/// A test of PostgreSQL alone.
pub struct Test {
    pub name: &'static str,
    pub run: fn() -> Body,
}

/// `ContractTest { name, run: |backend| Box::pin(body(backend)) }`.
#[macro_export]
macro_rules! contract_test {
    ($name:ident) => {
        $crate::harness::ContractTest {
            name: stringify!($name),
            run: |backend| Box::pin($name(backend)),
        }
    };
}

/// `Test { name, run: || Box::pin(body()) }`.
#[macro_export]
macro_rules! test {
    ($name:ident) => {
        $crate::harness::Test {
            name: stringify!($name),
            run: || Box::pin($name()),
        }
    };
}

/// Whether PostgreSQL tests must be reported as ignored: it cannot be
/// reached and this is not CI. Says why on stderr, once.
fn postgres_ignored() -> bool {
    static IGNORED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IGNORED.get_or_init(|| {
        let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
        let ignored = !ci && !postgres::reachable();
        if ignored {
            eprintln!(
                "ignored: the PostgreSQL tests need PostgreSQL on {} (user postgres, trust \
                 authentication), which is not reachable",
                postgres::ADDRESS
            );
        }
        ignored
    })
}

/// Each test on SQLite, and on PostgreSQL unless it is ignored.
pub fn on_both_backends(tests: Vec<ContractTest>) -> Vec<Trial> {
    let mut trials = Vec::new();
    for test in tests {
        let run = test.run;
        trials.push(trial(format!("sqlite::{}", test.name), false, move || {
            run(Backend::Sqlite)
        }));
        trials.push(trial(
            format!("postgres::{}", test.name),
            postgres_ignored(),
            move || run(Backend::Postgres),
        ));
    }
    trials
}

/// PostgreSQL tests, under `group`.
pub fn on_postgres(group: &str, tests: Vec<Test>) -> Vec<Trial> {
    tests
        .into_iter()
        .map(|test| {
            let run = test.run;
            trial(format!("{group}::{}", test.name), postgres_ignored(), run)
        })
        .collect()
}

/// Whether the tests that start their own servers must be reported as
/// ignored: a program they need is missing and this is not CI.
fn local_servers_ignored() -> bool {
    static IGNORED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IGNORED.get_or_init(|| {
        let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
        let missing = crate::local_servers::missing_tools();
        if let Some(missing) = &missing
            && !ci
        {
            eprintln!(
                "ignored: the tls tests start their own PostgreSQL and PgBouncer, and {missing} \
                 is missing (apt-get install postgresql-15 pgbouncer)"
            );
        }
        missing.is_some() && !ci
    })
}

/// Tests that start their own servers, under `group`.
pub fn on_local_servers(group: &str, tests: Vec<Test>) -> Vec<Trial> {
    tests
        .into_iter()
        .map(|test| {
            let run = test.run;
            trial(
                format!("{group}::{}", test.name),
                local_servers_ignored(),
                run,
            )
        })
        .collect()
}
