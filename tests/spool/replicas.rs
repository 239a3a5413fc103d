//! What only a spool shared by several replicas does: claims that never
//! overlap, leases that pass on when a replica stalls, late outcomes that
//! are refused, a single-writer sink held by one replica, no record skipped
//! when it commits late, migrations that run once, an outage that turns
//! into errors, never acceptances, and records announced to the other
//! replicas as they are stored.

use std::collections::HashSet;
use std::time::Duration;

use recordhook::protocol::EventTypes;
use recordhook::spool::{Acceptance, Outcome, Settlement, SinkRegistration, Spool};

use crate::harness::Test;
use crate::helpers::eventually;
use crate::postgres::{Database, WINDOW, at, options_for};
use crate::proxy::Proxy;
use crate::records::{first_attempts, new_record, record};
use crate::test;

pub fn tests() -> Vec<Test> {
    vec![
        test!(two_replicas_claiming_at_once_never_get_the_same_delivery),
        test!(
            a_claim_whose_lease_ran_out_passes_to_another_replica_and_its_late_outcomes_are_refused
        ),
        test!(a_claim_held_while_its_sink_works_is_not_taken_over),
        test!(a_single_writer_sink_is_driven_by_one_replica_and_fenced_when_its_lease_moves),
        test!(the_same_callback_sent_to_two_replicas_at_once_is_stored_once),
        test!(a_record_that_commits_late_is_still_delivered),
        test!(replicas_started_together_migrate_once),
        test!(a_newer_schema_runs_only_when_it_says_it_is_compatible),
        test!(a_version_5_spool_with_pending_and_claimed_deliveries_is_migrated_in_place_and_delivered),
        test!(a_version_6_spool_is_migrated_in_place_and_its_records_found_by_event_id),
        test!(an_unreachable_database_fails_acceptance_and_recovers_by_itself),
        test!(maintenance_runs_on_one_replica_at_a_time),
        test!(of_two_replicas_asking_for_a_lease_at_once_exactly_one_gets_it),
        test!(records_stored_by_one_replica_are_announced_to_another_even_after_an_outage),
    ]
}

const SHORT_LEASE: Duration = Duration::from_secs(1);

fn sinks(single_writer: bool) -> Vec<SinkRegistration> {
    vec![SinkRegistration {
        name: "a".into(),
        event_types: EventTypes::All,
        single_writer,
    }]
}

/// `count` replicas (spool handles) on `database`, each with `lease`.
async fn replicas(
    database: &Database,
    count: usize,
    lease: Duration,
    single_writer: bool,
) -> Vec<Spool> {
    let mut spools = Vec::new();
    for _ in 0..count {
        let spool = Spool::open(&database.options(WINDOW, lease)).await.unwrap();
        spool
            .register_sinks(sinks(single_writer), at(0))
            .await
            .unwrap();
        spools.push(spool);
    }
    spools
}

fn delivered(claim: &recordhook::spool::Claim) -> Vec<Outcome> {
    first_attempts(claim, |_| Settlement::Delivered)
}

/// The first claim of sink `a` by `spool` that holds anything, trying
/// every 100 ms for up to `within`.
async fn first_claim(spool: &Spool, within: Duration) -> recordhook::spool::Claim {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let claim = spool
            .claim("a", &EventTypes::All, at(1_001), 10)
            .await
            .unwrap();
        if !claim.deliveries.is_empty() {
            return claim;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no claim within {within:?}: the lease never passed on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(database: &Database, sql: &str) -> i64 {
    database
        .client()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

async fn two_replicas_claiming_at_once_never_get_the_same_delivery() {
    let database = Database::create().await;
    let spools = replicas(&database, 2, Duration::from_secs(30), false).await;
    for n in 0..300 {
        spools[n % 2]
            .accept(new_record(&record(&format!("f{n}"))), at(1_000))
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    let mut rounds = 0;
    while seen.len() < 300 {
        rounds += 1;
        assert!(
            rounds < 100,
            "claims stopped making progress at {}",
            seen.len()
        );
        let (first, second) = tokio::join!(
            spools[0].claim("a", &EventTypes::All, at(1_001), 40),
            spools[1].claim("a", &EventTypes::All, at(1_001), 40),
        );
        for claim in [first.unwrap(), second.unwrap()] {
            for delivery in &claim.deliveries {
                assert!(
                    seen.insert(delivery.seq),
                    "seq {} claimed twice",
                    delivery.seq
                );
            }
            let outcomes = delivered(&claim);
            assert_eq!(
                spools[0]
                    .settle("a", claim.receipt, outcomes, at(1_001))
                    .await
                    .unwrap(),
                0
            );
        }
    }
    assert_eq!(
        count(
            &database,
            "SELECT COUNT(*) FROM deliveries WHERE state <> 'delivered'"
        )
        .await,
        0
    );
}

async fn a_claim_whose_lease_ran_out_passes_to_another_replica_and_its_late_outcomes_are_refused() {
    let database = Database::create().await;
    let spools = replicas(&database, 2, SHORT_LEASE, false).await;
    for n in 0..5 {
        spools[0]
            .accept(new_record(&record(&format!("f{n}"))), at(1_000))
            .await
            .unwrap();
    }
    // Replica 0 claims and then stalls (it never renews).
    let stalled = spools[0]
        .claim("a", &EventTypes::All, at(1_001), 10)
        .await
        .unwrap();
    assert_eq!(stalled.deliveries.len(), 5);
    // Replica 1 gets them once the lease has run out.
    let taken = first_claim(&spools[1], Duration::from_secs(10)).await;
    assert_eq!(taken.deliveries.len(), 5);
    // The stalled replica comes back: every one of its outcomes is refused.
    let late = delivered(&stalled);
    assert_eq!(
        spools[0]
            .settle("a", stalled.receipt, late, at(1_002))
            .await
            .unwrap(),
        5
    );
    let dead = first_attempts(&taken, |_| Settlement::Dead {
        error: "kept".into(),
    });
    assert_eq!(
        spools[1]
            .settle("a", taken.receipt, dead, at(1_002))
            .await
            .unwrap(),
        0
    );
    // What stands is the new holder's outcome, not the late one.
    assert_eq!(spools[0].dead_letters(None).await.unwrap().len(), 5);
}

async fn a_claim_held_while_its_sink_works_is_not_taken_over() {
    let database = Database::create().await;
    let spools = replicas(&database, 2, SHORT_LEASE, false).await;
    spools[0]
        .accept(new_record(&record("f")), at(1_000))
        .await
        .unwrap();
    let claim = spools[0]
        .claim("a", &EventTypes::All, at(1_001), 10)
        .await
        .unwrap();
    assert_eq!(claim.deliveries.len(), 1);
    // The sink works for three leases; the other replica keeps trying to claim meanwhile.
    let other = spools[1].clone();
    let work = async {
        let mut stolen = 0;
        let until = tokio::time::Instant::now() + 3 * SHORT_LEASE;
        while tokio::time::Instant::now() < until {
            stolen += other
                .claim("a", &EventTypes::All, at(1_001), 10)
                .await
                .unwrap()
                .deliveries
                .len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stolen
    };
    let stolen = spools[0].hold_while("a", &claim.receipt, work).await;
    assert_eq!(
        stolen, 0,
        "another replica took a claim that was being renewed"
    );
    let outcomes = delivered(&claim);
    assert_eq!(
        spools[0]
            .settle("a", claim.receipt, outcomes, at(1_002))
            .await
            .unwrap(),
        0
    );
}

async fn a_single_writer_sink_is_driven_by_one_replica_and_fenced_when_its_lease_moves() {
    let database = Database::create().await;
    let spools = replicas(&database, 2, SHORT_LEASE, true).await;
    for n in 0..4 {
        spools[1]
            .accept(new_record(&record(&format!("f{n}"))), at(1_000))
            .await
            .unwrap();
    }
    let held = spools[0]
        .claim("a", &EventTypes::All, at(1_001), 2)
        .await
        .unwrap();
    assert_eq!(held.deliveries.len(), 2);
    assert!(
        held.sink_taken_over(),
        "a first hold is a takeover: the sink reopens"
    );
    // While replica 0 holds the sink, replica 1 gets nothing of it, not even
    // the records replica 0 did not claim.
    assert!(
        spools[1]
            .claim("a", &EventTypes::All, at(1_001), 10)
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );
    let fence: i64 = database
        .client()
        .await
        .query_one("SELECT fence FROM sinks WHERE sink = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    // Replica 0 stalls; once its lease runs out, replica 1 takes the sink over.
    let taken = first_claim(&spools[1], Duration::from_secs(10)).await;
    assert_eq!(taken.deliveries.len(), 4);
    assert!(taken.sink_taken_over());
    let moved: i64 = database
        .client()
        .await
        .query_one("SELECT fence FROM sinks WHERE sink = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, fence + 1);
    let late = delivered(&held);
    assert_eq!(
        spools[0]
            .settle("a", held.receipt, late, at(1_002))
            .await
            .unwrap(),
        2
    );
    // The new holder's next claim is no takeover.
    let outcomes = delivered(&taken);
    let refused = spools[1]
        .settle("a", taken.receipt, outcomes, at(1_002))
        .await;
    assert_eq!(refused.unwrap(), 0);
    spools[0]
        .accept(new_record(&record("f4")), at(1_000))
        .await
        .unwrap();
    let next = spools[1].claim("a", &EventTypes::All, at(1_003), 10).await;
    let next = next.unwrap();
    assert_eq!(next.deliveries.len(), 1);
    assert!(!next.sink_taken_over());
}

async fn the_same_callback_sent_to_two_replicas_at_once_is_stored_once() {
    let database = Database::create().await;
    let spools = replicas(&database, 2, Duration::from_secs(30), false).await;
    let mut tasks = Vec::new();
    for n in 0..200 {
        for spool in &spools {
            let (spool, record) = (spool.clone(), record(&format!("f{n}")));
            tasks.push(tokio::spawn(async move {
                spool.accept(new_record(&record), at(1_000)).await.unwrap()
            }));
        }
    }
    let mut stored = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Acceptance::Stored { .. }) {
            stored += 1;
        }
    }
    assert_eq!(stored, 200);
    assert_eq!(count(&database, "SELECT COUNT(*) FROM records").await, 200);
    assert_eq!(
        count(&database, "SELECT COUNT(DISTINCT event_id) FROM records").await,
        200
    );
}

async fn a_record_that_commits_late_is_still_delivered() {
    let database = Database::create().await;
    let spools = replicas(&database, 1, Duration::from_secs(30), false).await;
    let spool = &spools[0];
    // A writer takes a seq and holds its transaction open…
    let mut late_writer = database.client().await;
    let tx = late_writer.transaction().await.unwrap();
    let late_seq: i64 = tx
        .query_one(
            "INSERT INTO records (event_id, event_type, received_at_ms, body)
             VALUES ('late', 100, 0, $1) RETURNING seq",
            &[&serde_json::to_string(&record("late")).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    tx.execute(
        "INSERT INTO deliveries (seq, sink) VALUES ($1, 'a')",
        &[&late_seq],
    )
    .await
    .unwrap();
    // …while a record with a higher seq commits and is delivered.
    let Acceptance::Stored { seq } = spool
        .accept(new_record(&record("early")), at(1_000))
        .await
        .unwrap()
    else {
        panic!("not stored");
    };
    assert!(seq > late_seq);
    let claim = spool
        .claim("a", &EventTypes::All, at(1_001), 10)
        .await
        .unwrap();
    assert_eq!(
        claim.deliveries.iter().map(|d| d.seq).collect::<Vec<_>>(),
        [seq]
    );
    let outcomes = delivered(&claim);
    spool
        .settle("a", claim.receipt, outcomes, at(1_001))
        .await
        .unwrap();
    // The late one commits: it is offered, not skipped.
    tx.commit().await.unwrap();
    let claim = spool
        .claim("a", &EventTypes::All, at(1_002), 10)
        .await
        .unwrap();
    assert_eq!(
        claim.deliveries.iter().map(|d| d.seq).collect::<Vec<_>>(),
        [late_seq]
    );
}

async fn replicas_started_together_migrate_once() {
    let database = Database::create().await;
    let options = database.options(WINDOW, Duration::from_secs(30));
    let opened = futures_util::future::join_all((0..4).map(|_| Spool::open(&options))).await;
    for spool in opened {
        spool.unwrap();
    }
    let rows = database
        .client()
        .await
        .query("SELECT version FROM recordhook_schema", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    // The latest schema version (7: no index on records' event ids).
    assert_eq!(rows[0].get::<_, i32>(0), 7);
}

async fn a_newer_schema_runs_only_when_it_says_it_is_compatible() {
    let database = Database::create().await;
    let options = database.options(WINDOW, Duration::from_secs(30));
    Spool::open(&options).await.unwrap().close().await;
    let client = database.client().await;
    // A newer recordhook migrated, and says code of this one's version (7) still runs on it.
    client
        .execute(
            "UPDATE recordhook_schema SET version = 8, compatible_from = 7",
            &[],
        )
        .await
        .unwrap();
    Spool::open(&options).await.unwrap().close().await;
    Spool::open_for_admin(&options).await.unwrap().close().await;
    // One that breaks version 7: refused, by the server and the admin commands.
    client
        .execute("UPDATE recordhook_schema SET compatible_from = 8", &[])
        .await
        .unwrap();
    let refused = Spool::open(&options).await.err().unwrap().to_string();
    assert!(refused.contains("upgrade"), "{refused}");
    assert!(Spool::open_for_admin(&options).await.is_err());
}

async fn a_version_5_spool_with_pending_and_claimed_deliveries_is_migrated_in_place_and_delivered()
{
    let database = Database::create().await;
    let old = replicas(&database, 1, SHORT_LEASE, false).await;
    for n in 0..3 {
        old[0]
            .accept(new_record(&record(&format!("f{n}"))), at(1_000))
            .await
            .unwrap();
    }
    // One delivery is claimed by a replica that then goes away; two are fresh.
    let abandoned = old[0]
        .claim("a", &EventTypes::All, at(1_001), 1)
        .await
        .unwrap();
    assert_eq!(abandoned.deliveries.len(), 1);
    old[0].close().await;
    // Version 5 as it was shipped: version 6 only dropped the foreign key
    // (purging takes deliveries along by a trigger instead) and made pages
    // half full, and version 7 dropped an index, so undoing those gives the
    // old spool.
    let client = database.client().await;
    client
        .batch_execute(
            "CREATE INDEX records_by_event_id ON records (event_id);
             DROP TRIGGER records_purge_deliveries ON records;
             DROP FUNCTION recordhook_purge_deliveries();
             ALTER TABLE deliveries RESET (fillfactor);
             ALTER TABLE deliveries ADD CONSTRAINT deliveries_seq_fkey
                 FOREIGN KEY (seq) REFERENCES records (seq) ON DELETE CASCADE;
             UPDATE recordhook_schema SET version = 5, compatible_from = 1;",
        )
        .await
        .unwrap();
    let spools = replicas(&database, 1, SHORT_LEASE, false).await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("SELECT version::bigint FROM recordhook_schema").await,
        7
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM pg_constraint WHERE conname = 'deliveries_seq_fkey'").await,
        0
    );
    // Every delivery is offered: the fresh ones at once, the abandoned claim
    // once its lease has run out.
    let mut seen = HashSet::new();
    while seen.len() < 3 {
        let claim = first_claim(&spools[0], Duration::from_secs(10)).await;
        for delivery in &claim.deliveries {
            assert!(
                seen.insert(delivery.seq),
                "seq {} offered twice",
                delivery.seq
            );
        }
        let outcomes = delivered(&claim);
        assert_eq!(
            spools[0]
                .settle("a", claim.receipt, outcomes, at(1_002))
                .await
                .unwrap(),
            0
        );
    }
    assert_eq!(
        count("SELECT COUNT(*) FROM deliveries WHERE state <> 'delivered'").await,
        0
    );
    // Purging a delivered record still takes its deliveries along.
    assert_eq!(spools[0].purge_delivered(i64::MAX, 100).await.unwrap(), 3);
    assert_eq!(count("SELECT COUNT(*) FROM deliveries").await, 0);
}

async fn a_version_6_spool_is_migrated_in_place_and_its_records_found_by_event_id() {
    let database = Database::create().await;
    let old = replicas(&database, 1, SHORT_LEASE, false).await;
    let (pruned, recent, dead) = (record("f-pruned"), record("f-recent"), record("f-dead"));
    for (record, secs) in [(&pruned, 1_000), (&recent, 5_000), (&dead, 5_000)] {
        old[0].accept(new_record(record), at(secs)).await.unwrap();
    }
    // The oldest id is forgotten by the dedup; the newest record dies.
    assert_eq!(
        old[0].prune_seen(at_ms(2_000), usize::MAX).await.unwrap(),
        1
    );
    let claim = old[0]
        .claim("a", &EventTypes::All, at(5_001), 10)
        .await
        .unwrap();
    let outcomes = first_attempts(&claim, |d| {
        if d.record.id == dead.id {
            Settlement::Dead { error: "no".into() }
        } else {
            Settlement::Retry {
                at_ms: at_ms(9_000),
                error: "later".into(),
            }
        }
    });
    old[0]
        .settle("a", claim.receipt, outcomes, at(5_001))
        .await
        .unwrap();
    old[0].close().await;
    // Version 6 as it was shipped: version 7 only dropped the index.
    database
        .client()
        .await
        .batch_execute(
            "CREATE INDEX records_by_event_id ON records (event_id);
             UPDATE recordhook_schema SET version = 6, compatible_from = 1;",
        )
        .await
        .unwrap();
    let spools = replicas(&database, 1, SHORT_LEASE, false).await;
    assert_eq!(
        count(&database, "SELECT version::bigint FROM recordhook_schema").await,
        7
    );
    assert_eq!(
        count(
            &database,
            "SELECT COUNT(*) FROM pg_class WHERE relname = 'records_by_event_id'"
        )
        .await,
        0
    );
    // Each record is found by its event id, its id remembered or not.
    for record in [&pruned, &recent, &dead] {
        let found = spools[0].event(&record.id).await.unwrap().unwrap();
        assert_eq!(found.summary.id, record.id);
    }
    assert!(
        spools[0]
            .event(&record("f-none").id)
            .await
            .unwrap()
            .is_none()
    );
    let state = |record: &recordhook::record::Record| {
        let spool = &spools[0];
        let id = record.id.clone();
        async move {
            spool
                .delivery_state(&id, "a", &EventTypes::All)
                .await
                .unwrap()
                .map(|state| state.state)
        }
    };
    assert_eq!(state(&pruned).await.as_deref(), Some("pending"));
    assert_eq!(state(&dead).await.as_deref(), Some("dead"));
    // A dead letter is queued again by its event id.
    assert_eq!(
        spools[0]
            .requeue_dead(None, Some(dead.id.clone()), at(5_002))
            .await
            .unwrap(),
        1
    );
    assert_eq!(state(&dead).await.as_deref(), Some("pending"));
}

/// `secs` after the Unix epoch, in ms.
fn at_ms(secs: i64) -> i64 {
    secs * 1_000
}

async fn an_unreachable_database_fails_acceptance_and_recovers_by_itself() {
    let database = Database::create().await;
    let proxy = Proxy::start(crate::postgres::ADDRESS.parse().unwrap()).await;
    let url = database.url_via(&proxy.address().to_string());
    let spool = Spool::open(&options_for(&url, WINDOW, Duration::from_secs(30)))
        .await
        .unwrap();
    spool.register_sinks(sinks(false), at(0)).await.unwrap();
    assert!(matches!(
        spool
            .accept(new_record(&record("before")), at(1_000))
            .await
            .unwrap(),
        Acceptance::Stored { .. }
    ));
    proxy.cut().await;
    for n in 0..20 {
        let accepted = spool
            .accept(new_record(&record(&format!("down{n}"))), at(1_000))
            .await;
        assert!(
            accepted.is_err(),
            "accepted while the database was unreachable: {accepted:?}"
        );
    }
    assert!(spool.check_writable().await.is_err());
    proxy.restore();
    assert!(
        eventually(Duration::from_secs(20), || async {
            spool.check_writable().await.is_ok()
        })
        .await,
        "the spool did not recover"
    );
    assert!(matches!(
        spool
            .accept(new_record(&record("after")), at(1_000))
            .await
            .unwrap(),
        Acceptance::Stored { .. }
    ));
    assert_eq!(count(&database, "SELECT COUNT(*) FROM records").await, 2);
}

async fn maintenance_runs_on_one_replica_at_a_time() {
    let database = Database::create().await;
    let spools = replicas(&database, 1, Duration::from_secs(30), false).await;
    for n in 0..3 {
        spools[0]
            .accept(new_record(&record(&format!("f{n}"))), at(1_000))
            .await
            .unwrap();
    }
    let before = recordhook::spool::unix_ms(at(2_000));
    // Another replica is maintaining: it holds the maintenance lock.
    let mut other = database.client().await;
    let tx = other.transaction().await.unwrap();
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(x'72686f6f6b6d6e74'::bigint)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(locked);
    assert_eq!(spools[0].prune_seen(before, 10).await.unwrap(), 0);
    tx.rollback().await.unwrap();
    // Its turn now, in bounded batches.
    assert_eq!(spools[0].prune_seen(before, 2).await.unwrap(), 2);
    assert_eq!(spools[0].prune_seen(before, 2).await.unwrap(), 1);
}

async fn of_two_replicas_asking_for_a_lease_at_once_exactly_one_gets_it() {
    let database = Database::create().await;
    let spools = replicas(&database, 2, Duration::from_secs(30), false).await;
    let holders = ["replica-a", "replica-b"];
    let lease = Duration::from_secs(30);
    // A free lease of another name each round, so that some races are close.
    for n in 0..50 {
        let name = format!("reconcile-{n}");
        let (first, second) = tokio::join!(
            spools[0].acquire_lease(&name, holders[0], lease),
            spools[1].acquire_lease(&name, holders[1], lease),
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(
            first != second,
            "{name}: a got it: {first}, b got it: {second}"
        );
        let (winner, loser) = if first { (0, 1) } else { (1, 0) };
        assert!(
            !spools[loser]
                .acquire_lease(&name, holders[loser], lease)
                .await
                .unwrap()
        );
        // The other gets it once the winner lets go.
        spools[winner]
            .release_lease(&name, holders[winner])
            .await
            .unwrap();
        assert!(
            spools[loser]
                .acquire_lease(&name, holders[loser], lease)
                .await
                .unwrap()
        );
    }
}

/// The next announcement `watch_stored` passed on, failing after 20 s.
async fn next_announcement(
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<Option<i64>>,
) -> Option<i64> {
    tokio::time::timeout(Duration::from_secs(20), heard.recv())
        .await
        .expect("no announcement within 20 s")
        .expect("the listener stopped")
}

async fn records_stored_by_one_replica_are_announced_to_another_even_after_an_outage() {
    let database = Database::create().await;
    let storing = replicas(&database, 1, Duration::from_secs(30), false)
        .await
        .remove(0);
    // The listening replica reaches the database through a proxy that can
    // cut it off.
    let proxy = Proxy::start(crate::postgres::ADDRESS.parse().unwrap()).await;
    let url = database.url_via(&proxy.address().to_string());
    let listening = Spool::open(&options_for(&url, WINDOW, Duration::from_secs(30)))
        .await
        .unwrap();
    let (announce, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (listening, stop) = (listening.clone(), stop.clone());
        async move {
            let on_stored: recordhook::spool::OnStored = std::sync::Arc::new(move |event_type| {
                let _ = announce.send(event_type);
            });
            listening.watch_stored(on_stored, stop).await;
        }
    });
    // Listening: everything may have been stored before, so all sinks wake.
    assert_eq!(next_announcement(&mut heard).await, None);
    storing
        .accept(new_record(&record("first")), at(1_000))
        .await
        .unwrap();
    assert_eq!(next_announcement(&mut heard).await, Some(100));

    proxy.cut().await;
    proxy.restore();
    // Listening again after the outage: all sinks wake once, then records
    // are announced as before.
    assert_eq!(next_announcement(&mut heard).await, None);
    storing
        .accept(new_record(&record("second")), at(1_000))
        .await
        .unwrap();
    assert_eq!(next_announcement(&mut heard).await, Some(100));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the listener did not stop on shutdown")
        .unwrap();
}
