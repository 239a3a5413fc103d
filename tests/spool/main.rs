//! The spool's behaviour, over both backends: one suite of behaviour tests
//! that runs on SQLite and on PostgreSQL (`contract`), tests of what only a
//! shared PostgreSQL spool does (`replicas`: claims, leases, fencing,
//! migrations, outages), the command line on PostgreSQL (`commands`), and
//! process-level tests with several recordhook
//! replicas on one database (`processes`), and TLS and PgBouncer against
//! servers the tests start themselves (`tls`).
//!
//! A custom harness (libtest-mimic), so that whether PostgreSQL can be
//! reached (127.0.0.1:5432, user `postgres`, trust authentication) is decided
//! when the tests run: without it, its tests are reported as *ignored*, with
//! the reason on stderr. Under `CI` nothing is ignored: an unreachable
//! PostgreSQL fails them. Each test creates its own database and drops it.
//! The `tls` tests need Debian's PostgreSQL 15 programs and PgBouncer
//! instead; ignored without them, except under `CI`.

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../api/binary.rs"]
mod binary;
mod commands;
mod contract;
mod harness;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod local_servers;
mod postgres;
mod processes;
#[allow(dead_code)]
#[path = "../brokers/proxy.rs"]
mod proxy;
mod records;
mod replicas;
#[allow(dead_code)]
#[path = "../api/target.rs"]
mod target;
mod tls;
#[path = "../common/trial.rs"]
mod trial;

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = harness::on_both_backends(contract::tests());
    trials.extend(harness::on_postgres("replicas", replicas::tests()));
    trials.extend(harness::on_postgres("commands", commands::tests()));
    trials.extend(harness::on_postgres("processes", processes::tests()));
    trials.extend(harness::on_local_servers("tls", tls::tests()));
    libtest_mimic::run(&args, trials).exit_code()
}
