//! Times the admin API's queries (`Spool::events`, `Spool::event`) on a
//! spool of a million records, on both backends in one run: a temporary
//! SQLite spool and a fresh PostgreSQL database on the local server (dropped
//! at the end). See "Admin API queries with a million records" in
//! bench/BENCHMARKS.md. Not part of the service.
//!
//! Usage: `cargo run --release --example admin_queries`, with
//! `RECORDS` (default 1000000), `RUNS` (timed runs per query after the first,
//! default 25), `PG` (the server, default `postgres://postgres@127.0.0.1:5432`)
//! and `KEEP=1` to keep both spools for `EXPLAIN` afterwards (their
//! locations are printed).

#[path = "pg_admin.rs"]
mod pg_admin;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use pg_admin::admin;
use recordhook::protocol::{Authenticator, EventTypes, TimeWindow, UnverifiedCallback};
use recordhook::record::Record;
use recordhook::secret_url::SecretUrl;
use recordhook::spool::browse::{DeliveryStatus, EventQuery};
use recordhook::spool::{
    Acceptance, NewRecord, Outcome, PostgresOptions, Settlement, SinkRegistration, Spool,
    SpoolOptions, unix_ms,
};

/// Distinct stream ids among the records.
const STREAMS: usize = 1_000;
/// Callbacks offered to the spool at once, so group commit batches them.
const CONCURRENCY: usize = 256;
/// Received times spread evenly over this span, ending now.
const SPAN: Duration = Duration::from_secs(3 * 24 * 3600);
/// Records at the end that no sink has been offered yet (pending for both).
const UNCLAIMED: usize = 3_000;
/// Every n-th delivery to sink `a` becomes a dead letter.
const DEAD_EVERY: usize = 1_000;
/// Every n-th delivery to sink `b` waits for a retry (due in 30 days).
const RETRY_EVERY: usize = 400;
/// Deliveries per claim while settling.
const CLAIM: usize = 5_000;
/// Rows per page, as the admin console asks.
const PAGE: usize = 50;

const WINDOW: TimeWindow = TimeWindow {
    clock_skew_secs: 0,
    max_validity_secs: 1,
    expiry_grace_secs: 0,
};

/// The `n`-th record's stream, file id and event type: 90% recordings (100),
/// 10% stream starts (1).
fn stream_of(n: usize) -> String {
    format!("stream-{:04}", (n * 7919) % STREAMS)
}

fn file_of(n: usize) -> String {
    format!("5285890{n:012}")
}

fn event_type_of(n: usize) -> i64 {
    if n % 10 == 9 { 1 } else { 100 }
}

/// `n`, or the recording just before it: only recordings have a file id.
fn recording(n: usize) -> usize {
    if event_type_of(n) == 100 { n } else { n - 1 }
}

/// When the `n`-th of `total` records was received.
fn received_at(start: SystemTime, n: usize, total: usize) -> SystemTime {
    let step = SPAN.as_micros() / total.max(1) as u128;
    start + Duration::from_micros(u64::try_from(step * n as u128).unwrap_or(u64::MAX))
}

/// The `n`-th record: the shape of bench/callback.lua's recording callback
/// (or of a stream start), unsigned, built as tests/spool/contract.rs does.
fn record(n: usize, received: SystemTime) -> anyhow::Result<Record> {
    let stream = stream_of(n);
    let file = file_of(n);
    let body = if event_type_of(n) == 100 {
        format!(
            r#"{{"event_type":100,"appid":12345678,"app":"push.example.com","appname":"live","stream_id":"{stream}","channel_id":"{stream}","file_id":"{file}","record_file_id":"{file}","file_format":"mp4","task_id":"","start_time":1642089445,"end_time":1642089598,"start_time_usec":316441,"end_time_usec":618577,"duration":154,"file_size":277941079,"stream_param":"stream_param=test","video_url":"http://12345678.vod2.myqcloud.com/xxxx/yyyy/{file}.mp4","media_start_time":135802,"record_bps":0,"callback_ext":"{{\"video_codec\":\"h264\",\"resolution\":\"640x480\"}}"}}"#
        )
    } else {
        format!(
            r#"{{"event_type":1,"appid":12345678,"app":"push.example.com","appname":"live","stream_id":"{stream}","channel_id":"{stream}","event_time":1642089445,"sequence":"{file}","node":"100.121.160.92","user_ip":"119.29.29.29","stream_param":"stream_param=test","push_duration":"0","errcode":0,"errmsg":"recv rtmp deleteStream"}}"#
        )
    };
    let verified = Authenticator::unsigned(WINDOW)
        .verify(UnverifiedCallback::parse(body.as_bytes())?, 0)
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(Record::from_verified(verified, received)?)
}

fn sinks() -> Vec<SinkRegistration> {
    ["a", "b"]
        .into_iter()
        .map(|name| SinkRegistration {
            name: name.to_owned(),
            event_types: EventTypes::All,
            single_writer: false,
        })
        .collect()
}

/// Offers `total` records to `spool` from [`CONCURRENCY`] tasks.
async fn fill(spool: &Spool, start: SystemTime, total: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let spool = spool.clone();
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let received = received_at(start, n, total);
                match spool
                    .accept(NewRecord::try_from(&record(n, received)?)?, received)
                    .await?
                {
                    Acceptance::Stored { .. } => {}
                    Acceptance::Duplicate => bail!("record {n} came back a duplicate"),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Claims and settles every record but the last [`UNCLAIMED`], for both
/// sinks: `a` with a dead letter every [`DEAD_EVERY`], `b` with a retry
/// waiting every [`RETRY_EVERY`], the rest delivered.
async fn settle(spool: &Spool, total: usize) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let retry_at = unix_ms(now + Duration::from_secs(30 * 24 * 3600));
    let to_handle = total.saturating_sub(UNCLAIMED);
    for (sink, every) in [("a", DEAD_EVERY), ("b", RETRY_EVERY)] {
        let mut handled = 0;
        while handled < to_handle {
            let claim = spool
                .claim(sink, &EventTypes::All, now, CLAIM.min(to_handle - handled))
                .await?;
            if claim.deliveries.is_empty() {
                bail!("sink {sink}: nothing to claim after {handled} deliveries");
            }
            let outcomes = claim
                .deliveries
                .iter()
                .enumerate()
                .map(|(i, delivery)| Outcome {
                    seq: delivery.seq,
                    attempts: delivery.attempts + 1,
                    settlement: match (handled + i + 1) % every {
                        0 if sink == "a" => Settlement::Dead {
                            error: "HTTP 400".to_owned(),
                        },
                        0 => Settlement::Retry {
                            at_ms: retry_at,
                            error: "HTTP 503".to_owned(),
                        },
                        _ => Settlement::Delivered,
                    },
                })
                .collect();
            handled += claim.deliveries.len();
            let refused = spool.settle(sink, claim.receipt, outcomes, now).await?;
            if refused > 0 {
                bail!("sink {sink}: {refused} outcomes refused");
            }
        }
    }
    Ok(())
}

/// One backend under test.
struct Backend {
    name: &'static str,
    spool: Spool,
}

/// Builds a case's request for one run on one backend.
type Build = Box<dyn Fn(usize, &Lookups) -> Request>;

/// A query to time, built afresh for each run (`run` numbers it) and
/// backend: a file id or an event id may stand at a different seq in each.
struct Case {
    name: &'static str,
    query: Build,
}

enum Request {
    Page(EventQuery),
    Event(String),
}

/// What a backend's queries need to know of its data.
struct Lookups {
    /// The seq of the middle record.
    middle_seq: i64,
    /// Event ids of random records, one per run.
    ids: Vec<String>,
}

fn page() -> EventQuery {
    EventQuery {
        limit: PAGE,
        ..EventQuery::default()
    }
}

fn cases(total: usize, start: SystemTime, picks: Arc<Vec<usize>>) -> Vec<Case> {
    let middle = unix_ms(start) + i64::try_from(SPAN.as_millis() / 2).unwrap_or(0);
    let file_picks = Arc::clone(&picks);
    vec![
        Case {
            name: "first page, no filter",
            query: Box::new(|_, _| Request::Page(page())),
        },
        Case {
            name: "stream_id",
            query: Box::new(move |run, _| {
                Request::Page(EventQuery {
                    stream_id: Some(stream_of(picks[run])),
                    ..page()
                })
            }),
        },
        Case {
            name: "file_id",
            query: Box::new(move |run, _| {
                Request::Page(EventQuery {
                    file_id: Some(file_of(recording(file_picks[run] % total))),
                    ..page()
                })
            }),
        },
        Case {
            name: "event_type = 1 (10%)",
            query: Box::new(|_, _| {
                Request::Page(EventQuery {
                    event_type: Some(1),
                    ..page()
                })
            }),
        },
        Case {
            name: "since/until, one hour in the middle",
            query: Box::new(move |_, _| {
                Request::Page(EventQuery {
                    since_ms: Some(middle),
                    until_ms: Some(middle + 3_600_000),
                    ..page()
                })
            }),
        },
        Case {
            name: "status = dead",
            query: Box::new(|_, _| status(DeliveryStatus::Dead)),
        },
        Case {
            name: "status = pending",
            query: Box::new(|_, _| status(DeliveryStatus::Pending)),
        },
        Case {
            name: "status = delivered",
            query: Box::new(|_, _| status(DeliveryStatus::Delivered)),
        },
        Case {
            name: "deep page (cursor at the middle)",
            query: Box::new(|_, lookups| {
                Request::Page(EventQuery {
                    before_seq: Some(lookups.middle_seq),
                    ..page()
                })
            }),
        },
        Case {
            name: "event(id), random id",
            query: Box::new(|run, lookups| Request::Event(lookups.ids[run].clone())),
        },
    ]
}

fn status(status: DeliveryStatus) -> Request {
    Request::Page(EventQuery {
        status: Some(status),
        ..page()
    })
}

/// The seq and event id of the `n`-th record, or of the recording just
/// before it.
async fn find(spool: &Spool, n: usize) -> anyhow::Result<(i64, String)> {
    let n = recording(n);
    let found = spool
        .events(EventQuery {
            file_id: Some(file_of(n)),
            limit: 1,
            ..EventQuery::default()
        })
        .await?;
    let first = found
        .first()
        .with_context(|| format!("record {n} not found"))?;
    Ok((first.seq, first.id.clone()))
}

/// Runs `request`; its duration and the rows it returned.
async fn time(spool: &Spool, request: Request) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let rows = match request {
        Request::Page(query) => spool.events(query).await?.len(),
        Request::Event(id) => usize::from(spool.event(&id).await?.is_some()),
    };
    Ok((started.elapsed(), rows))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Median and 95th percentile (nearest rank) of `times`, in ms.
fn summary(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let rank = |p: f64| times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    (ms(rank(0.5)), ms(rank(0.95)))
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    std::env::var(name).map_or(Ok(default), |value| {
        value.parse().with_context(|| format!("{name}={value}"))
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env_usize("RECORDS", 1_000_000)?;
    let runs = env_usize("RUNS", 25)?;
    let keep = std::env::var("KEEP").is_ok_and(|value| value == "1");
    let server =
        std::env::var("PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    if total <= UNCLAIMED * 2 {
        bail!("RECORDS must be over {}", UNCLAIMED * 2);
    }
    let database = format!("recordhook_bench_{}", std::process::id());
    admin(&server, &format!("CREATE DATABASE {database}")).await?;
    let dir = tempfile::Builder::new()
        .prefix("recordhook-admin-queries")
        .tempdir()?;
    let outcome = run(&server, &database, &dir, total, runs).await;
    if keep {
        let dir = dir.keep();
        println!(
            "kept: {}/spool.db and database {database} (drop it with: psql -U postgres -h 127.0.0.1 -c 'DROP DATABASE {database}')",
            dir.display()
        );
    } else {
        admin(
            &server,
            &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        )
        .await?;
    }
    outcome
}

async fn run(
    server: &str,
    database: &str,
    dir: &tempfile::TempDir,
    total: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let dedup_window = Duration::from_secs(7 * 24 * 3600);
    let options = [
        (
            "SQLite",
            SpoolOptions {
                path: dir.path().join("spool.db"),
                postgres: None,
                dedup_window,
                max_bytes: 0,
            },
        ),
        (
            "PostgreSQL",
            SpoolOptions {
                path: "unused".into(),
                postgres: Some(PostgresOptions {
                    url: SecretUrl::parse(&format!("{server}/{database}"))
                        .map_err(anyhow::Error::msg)?,
                    max_connections: 8,
                    lease: Duration::from_secs(60),
                    tls: recordhook::spool::PostgresTls::default(),
                }),
                dedup_window,
                max_bytes: 0,
            },
        ),
    ];
    let start = SystemTime::now() - SPAN;
    let mut backends = Vec::new();
    for (name, options) in options {
        let spool = Spool::open(&options).await?;
        spool.register_sinks(sinks(), start).await?;
        let began = Instant::now();
        fill(&spool, start, total).await?;
        let filled = began.elapsed();
        let began = Instant::now();
        settle(&spool, total).await?;
        println!(
            "{name}: filled {total} records in {:.1} s ({:.0}/s), claimed and settled in {:.1} s, {:.0} MiB on disk (SQLite)",
            filled.as_secs_f64(),
            total as f64 / filled.as_secs_f64(),
            began.elapsed().as_secs_f64(),
            spool.disk_bytes() as f64 / 1_048_576.0,
        );
        backends.push(Backend { name, spool });
    }
    // PostgreSQL's autovacuum would have analysed and vacuumed tables this
    // size by now; do it at once so the planner has statistics.
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/{database}"), tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let began = Instant::now();
    client.batch_execute("VACUUM ANALYZE").await?;
    let size: i64 = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    println!(
        "PostgreSQL: VACUUM ANALYZE in {:.1} s, database {:.0} MiB",
        began.elapsed().as_secs_f64(),
        size as f64 / 1_048_576.0
    );
    drop(client);
    let _ = connection.await;

    let picks: Arc<Vec<usize>> = Arc::new((0..=runs).map(|_| fastrand::usize(..total)).collect());
    let mut lookups = Vec::new();
    for backend in &backends {
        let (middle_seq, _) = find(&backend.spool, total / 2).await?;
        let mut ids = Vec::new();
        for &n in picks.iter() {
            ids.push(find(&backend.spool, (n * 31) % total).await?.1);
        }
        lookups.push(Lookups { middle_seq, ids });
    }

    println!(
        "\n{runs} runs per query after the first; ms; rows returned in brackets (page of {PAGE})"
    );
    println!(
        "| query | {} |",
        backends
            .iter()
            .map(|b| format!("{0} median | {0} p95 | {0} first", b.name))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for case in cases(total, start, Arc::clone(&picks)) {
        let mut first = Vec::new();
        let mut times = vec![Vec::new(); backends.len()];
        let mut rows = vec![0; backends.len()];
        for run in 0..=runs {
            // The backends take turns, so noise on the machine falls on both.
            for (i, backend) in backends.iter().enumerate() {
                let (took, returned) = time(&backend.spool, (case.query)(run, &lookups[i])).await?;
                if run == 0 {
                    first.push(took);
                    rows[i] = returned;
                } else {
                    times[i].push(took);
                }
            }
        }
        let cells: Vec<String> = times
            .into_iter()
            .enumerate()
            .map(|(i, times)| {
                let (median, p95) = summary(times);
                format!("{median:.2} | {p95:.2} | {:.2} [{}]", ms(first[i]), rows[i])
            })
            .collect();
        println!("| {} | {} |", case.name, cells.join(" | "));
    }
    for backend in &backends {
        backend.spool.close().await;
    }
    Ok(())
}
