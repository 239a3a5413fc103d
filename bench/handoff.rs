//! How soon a record accepted by one replica is offered to another's
//! delivery worker, on a shared PostgreSQL spool: the time from the start of
//! replica A's `accept` (its commit included) until replica B's worker has
//! claimed the record, and the same from `accept`'s return (when A would
//! answer 200; B may even claim a little before). B's
//! worker waits as `delivery::run` does, between looks at the spool, for a
//! wake-up or the 1 s poll; A never delivers. Two modes in one run, each on a
//! fresh database: `poll` (B is woken by nothing else: how it was before
//! LISTEN/NOTIFY) and `listen` (B hears the commit through
//! `Spool::watch_stored`, as the server's `listen` worker does). Records are
//! accepted one at a time, at random gaps, so they land anywhere in B's poll
//! cycle. See "Hand-off between replicas" in bench/BENCHMARKS.md. Not part of
//! the service.
//!
//! Usage: `cargo run --release --example handoff`, with `RECORDS` (per mode,
//! default 200), `PG` (the server, default `postgres://postgres@127.0.0.1:5432`).

#[path = "pg_admin.rs"]
mod pg_admin;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use pg_admin::admin;
use recordhook::protocol::{Authenticator, EventTypes, TimeWindow, UnverifiedCallback};
use recordhook::record::Record;
use recordhook::secret_url::SecretUrl;
use recordhook::spool::{
    NewRecord, OnStored, Outcome, PostgresOptions, Settlement, SinkRegistration, Spool,
    SpoolOptions,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// What `delivery::run` waits at most between looks at the spool.
const POLL: Duration = Duration::from_secs(1);
/// Longest random gap between two accepted records.
const MAX_GAP_MS: u64 = 300;

const WINDOW: TimeWindow = TimeWindow {
    clock_skew_secs: 0,
    max_validity_secs: 1,
    expiry_grace_secs: 0,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Poll,
    Listen,
}

fn record(n: usize) -> anyhow::Result<Record> {
    let body = format!(
        r#"{{"event_type":100,"appid":12345678,"app":"push.example.com","appname":"live","stream_id":"s{n}","channel_id":"s{n}","file_id":"f{n}","record_file_id":"f{n}","file_format":"mp4","start_time":1642089445,"end_time":1642089598,"duration":154,"file_size":277941079,"video_url":"http://12345678.vod2.myqcloud.com/x/y/f{n}.mp4"}}"#
    );
    let verified = Authenticator::unsigned(WINDOW)
        .verify(UnverifiedCallback::parse(body.as_bytes())?, 0)
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(Record::from_verified(verified, SystemTime::now())?)
}

fn options(url: &str) -> anyhow::Result<SpoolOptions> {
    Ok(SpoolOptions {
        path: "unused".into(),
        postgres: Some(PostgresOptions {
            url: SecretUrl::parse(url)?,
            max_connections: 4,
            lease: Duration::from_secs(30),
            tls: recordhook::spool::PostgresTls::default(),
        }),
        dedup_window: Duration::from_secs(3600),
        max_bytes: 0,
    })
}

/// Replica B's worker for sink `a`: claims, settles what it claimed as
/// delivered, reports when it claimed each event id, and otherwise waits
/// for `wake` or the poll, until `stop`.
async fn worker(
    spool: Spool,
    wake: Arc<Notify>,
    claimed: mpsc::UnboundedSender<(String, Instant)>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while !stop.is_cancelled() {
        let claim = spool
            .claim("a", &EventTypes::All, SystemTime::now(), 256)
            .await?;
        let at = Instant::now();
        if claim.deliveries.is_empty() {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        let outcomes = claim
            .deliveries
            .iter()
            .map(|delivery| {
                let _ = claimed.send((delivery.record.id.as_str().to_owned(), at));
                Outcome {
                    seq: delivery.seq,
                    attempts: 1,
                    settlement: Settlement::Delivered,
                }
            })
            .collect();
        spool
            .settle("a", claim.receipt, outcomes, SystemTime::now())
            .await?;
    }
    Ok(())
}

/// Milliseconds from the start of each `accept` on A to B's claim, and from
/// its return to B's claim, each sorted.
async fn measure(url: &str, mode: Mode, records: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let sinks = vec![SinkRegistration {
        name: "a".to_owned(),
        event_types: EventTypes::All,
        single_writer: false,
    }];
    let accepting = Spool::open(&options(url)?).await?;
    let delivering = Spool::open(&options(url)?).await?;
    accepting
        .register_sinks(sinks.clone(), SystemTime::now())
        .await?;
    delivering.register_sinks(sinks, SystemTime::now()).await?;
    let stop = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let listening = Arc::new(Notify::new());
    let listener = (mode == Mode::Listen).then(|| {
        let (wake, listening) = (Arc::clone(&wake), Arc::clone(&listening));
        let on_stored: OnStored = Arc::new(move |event_type| {
            if event_type.is_none() {
                listening.notify_one();
            }
            wake.notify_one();
        });
        let (spool, stop) = (delivering.clone(), stop.clone());
        tokio::spawn(async move { spool.watch_stored(on_stored, stop).await })
    });
    if listener.is_some() {
        tokio::time::timeout(Duration::from_secs(10), listening.notified())
            .await
            .context("replica B did not start listening")?;
    }
    let (claimed, mut claims) = mpsc::unbounded_channel();
    let worker = tokio::spawn(worker(delivering.clone(), wake, claimed, stop.clone()));
    let mut started = HashMap::new();
    for n in 0..records {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=MAX_GAP_MS))).await;
        let new = NewRecord::try_from(&record(n)?)?;
        let id = new.id.clone();
        let start = Instant::now();
        accepting.accept(new, SystemTime::now()).await?;
        started.insert(id, (start, Instant::now()));
    }
    let mut latencies = Vec::with_capacity(records);
    let mut after_commit = Vec::with_capacity(records);
    while latencies.len() < records {
        let (id, at) = tokio::time::timeout(POLL * 5, claims.recv())
            .await
            .context("replica B stopped claiming")?
            .context("replica B's worker ended")?;
        let Some((start, committed)) = started.get(&id) else {
            bail!("claimed an unknown event id {id}");
        };
        latencies.push(signed_ms(*start, at));
        // Negative when B claimed before A's `accept` returned.
        after_commit.push(signed_ms(*committed, at));
    }
    stop.cancel();
    worker.await??;
    if let Some(listener) = listener {
        listener.await?;
    }
    accepting.close().await;
    delivering.close().await;
    latencies.sort_by(f64::total_cmp);
    after_commit.sort_by(f64::total_cmp);
    Ok((latencies, after_commit))
}

/// `to - from` in milliseconds, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(later) => later.as_secs_f64() * 1_000.0,
        None => -(from.duration_since(to).as_secs_f64() * 1_000.0),
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records: usize = std::env::var("RECORDS").map_or(Ok(200), |value| {
        value.parse().with_context(|| format!("RECORDS={value}"))
    })?;
    let server =
        std::env::var("PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    println!("accept on replica A -> claimed by replica B, {records} records per mode (ms)");
    println!(
        "{:<8} {:<22} {:>8} {:>8} {:>8} {:>8}",
        "mode", "from", "p50", "p90", "p99", "max"
    );
    for (mode, name) in [(Mode::Poll, "poll"), (Mode::Listen, "listen")] {
        let database = format!("recordhook_handoff_{}_{name}", std::process::id());
        admin(&server, &format!("CREATE DATABASE {database}")).await?;
        let measured = measure(&format!("{server}/{database}"), mode, records).await;
        admin(
            &server,
            &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        )
        .await?;
        let (latencies, after_commit) = measured?;
        for (from, sorted) in [
            ("accept's start", &latencies),
            ("accept's return (200)", &after_commit),
        ] {
            println!(
                "{name:<8} {from:<22} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                quantile(sorted, 0.5),
                quantile(sorted, 0.9),
                quantile(sorted, 0.99),
                quantile(sorted, 1.0)
            );
        }
    }
    Ok(())
}
