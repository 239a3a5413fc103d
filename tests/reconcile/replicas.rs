//! Two recordhook replicas on one PostgreSQL database, both with
//! reconciliation enabled: one of them holds the lease and reconciles, and
//! every stream's records are asked for once and recovered once.

use std::time::Duration;

use crate::binary::start_server_with_env;
use crate::harness::Test;
use crate::helpers::{eventually, metric_at, now};
use crate::scenarios::{KEY_ENV, config, failed_delivery, fake, sent_recording};
use crate::target::Target;
use crate::tencent_fake::{DESCRIBE_CALLBACK_RECORDS_LIST, StreamSession};
use crate::test;

pub fn tests() -> Vec<Test> {
    vec![test!(two_replicas_on_postgres_reconcile_each_stream_once)]
}

/// Where the machine's PostgreSQL listens.
const ADDRESS: &str = "127.0.0.1:5432";

/// Why the PostgreSQL tests cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    let address: std::net::SocketAddr = ADDRESS.parse().ok()?;
    match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
        Ok(_) => None,
        Err(err) => Some(format!("PostgreSQL is not reachable on {ADDRESS}: {err}")),
    }
}

/// A database of its own, dropped when the test ends.
struct Database {
    name: String,
}

impl Database {
    async fn create() -> Self {
        let name = format!(
            "recordhook_reconcile_{}_{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        admin(&format!("CREATE DATABASE {name}")).await;
        Self { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{ADDRESS}/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(admin(&statement));
        })
        .join();
    }
}

async fn admin(statement: &str) {
    let (client, connection) = tokio_postgres::connect(
        &format!("postgres://postgres@{ADDRESS}/postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client.batch_execute(statement).await.unwrap();
}

async fn two_replicas_on_postgres_reconcile_each_stream_once() {
    let fake = fake().await;
    let target = Target::start().await;
    let database = Database::create().await;
    let start = now() - 1_200;
    const STREAMS: usize = 20;
    for n in 0..STREAMS {
        let stream = format!("room-p{n}");
        fake.add_stream(StreamSession::new(
            "push.example.com",
            "live",
            &stream,
            start,
            Some(now() - 300),
        ));
        let body = sent_recording(&stream, &format!("pg-{n}"), start + 30);
        fake.add_callback(failed_delivery(&stream, &body, start + 30));
    }
    let config = config(&fake, &target, "enabled = true").replace(
        "[reconcile]",
        &format!(
            "backend = \"postgres\"\n[spool.postgres]\nurl = \"{}\"\n[reconcile]",
            database.url()
        ),
    );
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas: Vec<_> = dirs
        .iter()
        .map(|dir| start_server_with_env(dir, &config, &[KEY_ENV]))
        .collect();
    // Both replicas finish their start-up run: one reconciled, the other
    // found the lease taken (or, starting later, nothing left to ask for).
    let addresses: Vec<String> = replicas.iter().map(|r| r.address.clone()).collect();
    for address in &addresses {
        let address = address.clone();
        assert!(
            eventually(Duration::from_secs(30), || {
                let address = address.clone();
                async move {
                    metric_at(&address, r#"recordhook_reconcile_runs_total{outcome="ok"}"#).await
                        + metric_at(
                            &address,
                            r#"recordhook_reconcile_runs_total{outcome="busy"}"#,
                        )
                        .await
                        >= 1.0
                }
            })
            .await
        );
    }
    assert_eq!(
        fake.stats().calls_to(DESCRIBE_CALLBACK_RECORDS_LIST) as usize,
        STREAMS,
        "each stream's records were asked for once"
    );
    let mut recovered = 0.0;
    for address in &addresses {
        recovered += metric_at(
            address,
            r#"recordhook_reconcile_callbacks_total{event_type="record",outcome="recovered"}"#,
        )
        .await;
    }
    assert_eq!(recovered, STREAMS as f64);
    assert!(
        eventually(Duration::from_secs(20), || async {
            target.received().len() >= STREAMS
        })
        .await
    );
    let mut ids = target.received_ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), STREAMS);
    for replica in replicas.drain(..) {
        let (status, lines) = replica.terminate();
        assert!(status.success());
        crate::scenarios::assert_no_secret(&lines.join("\n"), "a replica's log");
    }
}
