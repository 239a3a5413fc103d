//! TLS to PostgreSQL and PgBouncer in front of it, against servers the
//! tests start themselves ([`crate::local_servers`]): each `sslmode` does
//! what libpq's does, refusals say why without the password, `check-config`
//! reports how the sessions are encrypted, and the durability setting holds
//! behind a session pooler while a transaction pooler is refused.

use std::path::PathBuf;
use std::time::Duration;

use recordhook::secret_url::SecretUrl;
use recordhook::spool::{
    Acceptance, PostgresOptions, PostgresTls, Spool, SpoolOptions, SslMode, check_postgres,
};

use crate::harness::Test;
use crate::local_servers::{CERT_USER, Certificates, LocalPostgres, PgBouncer};
use crate::postgres::{WINDOW, at};
use crate::records::{new_record, record};
use crate::test;

pub fn tests() -> Vec<Test> {
    vec![
        test!(verify_full_connects_and_stores_a_record),
        test!(a_wrong_host_name_is_refused_under_verify_full_but_not_verify_ca),
        test!(an_untrusted_ca_is_refused_under_verify_ca_and_verify_full),
        test!(a_server_without_tls_is_refused_under_require_and_verify_full_and_taken_under_prefer),
        test!(a_client_certificate_logs_in_where_only_one_may),
        test!(check_config_reports_how_the_sessions_are_encrypted),
        test!(behind_a_session_pooler_commits_stay_synchronous),
        test!(a_transaction_pooler_is_refused_with_the_reason),
    ]
}

const PASSWORD: &str = "s3cret-pw";

/// Spool options for `url`, with `tls`.
fn options(url: &str, tls: PostgresTls) -> SpoolOptions {
    SpoolOptions {
        path: "unused".into(),
        postgres: Some(PostgresOptions {
            url: SecretUrl::parse(url).unwrap(),
            max_connections: 4,
            lease: Duration::from_secs(30),
            tls,
        }),
        dedup_window: WINDOW,
        max_bytes: 0,
    }
}

/// `mode`, trusting `ca` when given.
fn tls(mode: SslMode, ca: Option<&PathBuf>) -> PostgresTls {
    PostgresTls {
        sslmode: Some(mode),
        sslrootcert: ca.cloned(),
        ..PostgresTls::default()
    }
}

/// Opens, stores one record and reads it back.
async fn stores_and_reads(options: &SpoolOptions) {
    let spool = Spool::open(options).await.unwrap();
    let stored = spool
        .accept(new_record(&record("over-tls")), at(1_000))
        .await
        .unwrap();
    assert!(matches!(stored, Acceptance::Stored { .. }), "{stored:?}");
    let records = spool.records().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].file_id(), Some("over-tls"));
    spool.close().await;
}

/// What `check-config` says of the database of `options`.
async fn check_report(options: &SpoolOptions) -> String {
    let report = check_postgres(options.postgres.as_ref().unwrap())
        .await
        .unwrap();
    assert!(!report.contains(PASSWORD), "{report}");
    report
}

/// Why opening a spool with `options` failed; it must fail.
async fn refusal(options: &SpoolOptions) -> String {
    match Spool::open(options).await {
        Ok(_) => panic!("opened, but it should have been refused"),
        Err(err) => {
            let said = err.to_string();
            assert!(!said.contains(PASSWORD), "{said}");
            said
        }
    }
}

async fn verify_full_connects_and_stores_a_record() {
    let server = LocalPostgres::start(true).await;
    let database = server.create_database().await;
    let ca = server.certificates.as_ref().map(|c| &c.ca);
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}",
        server.port
    );
    let configured = options(&url, tls(SslMode::VerifyFull, ca));
    stores_and_reads(&configured).await;
    let report = check_report(&configured).await;
    assert!(report.contains("TLS (verify-full, TLSv1.3)"), "{report}");
    // The same, said in the URL as libpq users write it.
    let in_url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca.unwrap().display()
    );
    let report = check_report(&options(&in_url, PostgresTls::default())).await;
    assert!(report.contains("TLS (verify-full, TLSv1.3)"), "{report}");
}

async fn a_wrong_host_name_is_refused_under_verify_full_but_not_verify_ca() {
    let server = LocalPostgres::start(true).await;
    let database = server.create_database().await;
    let ca = server.certificates.as_ref().map(|c| &c.ca);
    // The certificate names localhost and 127.0.0.1; reach 127.0.0.1 by another name.
    let url = format!(
        "postgres://postgres:{PASSWORD}@wronghost:{}/{database}?hostaddr=127.0.0.1",
        server.port
    );
    let said = refusal(&options(&url, tls(SslMode::VerifyFull, ca))).await;
    assert!(
        said.contains("sslmode=verify-full")
            && said.contains("certificate not valid for name \"wronghost\""),
        "{said}"
    );
    assert!(said.contains("postgres:[redacted]@wronghost"), "{said}");
    stores_and_reads(&options(&url, tls(SslMode::VerifyCa, ca))).await;
}

async fn an_untrusted_ca_is_refused_under_verify_ca_and_verify_full() {
    let server = LocalPostgres::start(true).await;
    let database = server.create_database().await;
    let other = Certificates::make(server.dir(), "other");
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}",
        server.port
    );
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull, SslMode::Require] {
        let said = refusal(&options(&url, tls(mode, Some(&other.ca)))).await;
        assert!(
            said.contains(&format!("sslmode={}", mode.as_str()))
                && said.contains("invalid peer certificate: UnknownIssuer"),
            "{said}"
        );
    }
    // Nor do the public CAs vouch for it.
    let said = refusal(&options(&url, tls(SslMode::VerifyFull, None))).await;
    assert!(said.contains("UnknownIssuer"), "{said}");
    // `require` and `prefer` without a CA encrypt without checking, as libpq's do.
    for mode in [SslMode::Require, SslMode::Prefer] {
        let report = check_report(&options(&url, tls(mode, None))).await;
        assert!(
            report.contains(&format!("TLS ({}, TLSv1.3)", mode.as_str())),
            "{report}"
        );
    }
}

async fn a_server_without_tls_is_refused_under_require_and_verify_full_and_taken_under_prefer() {
    let server = LocalPostgres::start(false).await;
    let database = server.create_database().await;
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}",
        server.port
    );
    for mode in [SslMode::Require, SslMode::VerifyFull] {
        let said = refusal(&options(&url, tls(mode, None))).await;
        assert!(
            said.contains(&format!("sslmode={}", mode.as_str()))
                && said.contains("server does not support TLS"),
            "{said}"
        );
    }
    let prefer = options(&url, PostgresTls::default());
    stores_and_reads(&prefer).await;
    let report = check_report(&prefer).await;
    assert!(
        report.contains("not encrypted (sslmode=prefer, server refused TLS)"),
        "{report}"
    );
}

async fn a_client_certificate_logs_in_where_only_one_may() {
    let server = LocalPostgres::start(true).await;
    let database = server.create_database().await;
    let certificates = server.certificates.as_ref().unwrap();
    let url = format!(
        "postgres://{CERT_USER}@localhost:{}/{database}",
        server.port
    );
    let without = refusal(&options(
        &url,
        tls(SslMode::VerifyFull, Some(&certificates.ca)),
    ))
    .await;
    assert!(without.contains("certificate"), "{without}");
    let with = PostgresTls {
        sslmode: Some(SslMode::VerifyFull),
        sslrootcert: Some(certificates.ca.clone()),
        sslcert: Some(certificates.client_cert.clone()),
        sslkey: Some(certificates.client_key.clone()),
    };
    stores_and_reads(&options(&url, with)).await;
}

async fn check_config_reports_how_the_sessions_are_encrypted() {
    let server = LocalPostgres::start(true).await;
    let database = server.create_database().await;
    let certificates = server.certificates.as_ref().unwrap();
    let (success, said) = check_config(&format!(
        "url = \"postgres://postgres:{PASSWORD}@localhost:{}/{database}\"\n\
         sslmode = \"verify-full\"\nsslrootcert = \"{}\"\n",
        server.port,
        certificates.ca.display()
    ))
    .await;
    assert!(success, "{said}");
    assert!(
        said.contains("its sessions: TLS (verify-full, TLSv1.3), synchronous_commit = on"),
        "{said}"
    );
    assert!(!said.contains(PASSWORD), "{said}");
    // A mode the URL contradicts is a configuration error, before connecting.
    let (success, said) = check_config(&format!(
        "url = \"postgres://postgres@localhost:{}/{database}?sslmode=disable\"\n\
         sslmode = \"verify-full\"\n",
        server.port
    ))
    .await;
    assert!(!success, "{said}");
    assert!(
        said.contains("spool.postgres.sslmode is `verify-full` but the URL says sslmode=disable"),
        "{said}"
    );
}

/// Runs `recordhook check-config` on a PostgreSQL spool with these
/// `[spool.postgres]` lines: whether it succeeded, and what it said.
async fn check_config(postgres: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[spool]\nbackend = \"postgres\"\n[spool.postgres]\n{postgres}"),
    )
    .unwrap();
    let mut command = crate::binary::command(&dir);
    command
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .env("RECORDHOOK__AUTH__KEYS", "k");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

async fn behind_a_session_pooler_commits_stay_synchronous() {
    let server = LocalPostgres::start(false).await;
    let database = server.create_database().await;
    let ignoring = PgBouncer::start(&server, "session", true).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{database}", ignoring.port);
    // What recordhook did before: the startup packet's `options`, which this
    // PgBouncer drops, leaving the server's default (off).
    let dropped = crate::postgres::connect(&format!(
        "{url}?sslmode=disable&options=-c%20synchronous_commit%3Don"
    ))
    .await;
    let found: String = dropped
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, "off");
    // recordhook's sessions have it on, behind this PgBouncer and behind
    // one that ignores nothing (recordhook sends no `options`).
    let plain = PgBouncer::start(&server, "session", false).await;
    for port in [ignoring.port, plain.port] {
        let through = options(
            &format!("postgres://postgres@127.0.0.1:{port}/{database}"),
            PostgresTls::default(),
        );
        let report = check_report(&through).await;
        assert!(report.contains("synchronous_commit = on"), "{report}");
    }
    let through = options(&url, PostgresTls::default());
    stores_and_reads(&through).await;
}

async fn a_transaction_pooler_is_refused_with_the_reason() {
    let server = LocalPostgres::start(false).await;
    let database = server.create_database().await;
    let pooler = PgBouncer::start(&server, "transaction", false).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{database}", pooler.port);
    let said = refusal(&options(&url, PostgresTls::default())).await;
    assert!(
        said.contains("recordhook needs session pooling (pool_mode = session)"),
        "{said}"
    );
}
