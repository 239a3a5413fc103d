//! What every spool backend promises (the contract at the top of
//! `src/spool/mod.rs`), tested through the public [`Spool`] interface alone,
//! once on SQLite and once on PostgreSQL.

use recordhook::protocol::EventTypes;
use recordhook::record::{Record, Source};
use std::collections::HashMap;
use std::time::Duration;

use recordhook::spool::browse::{DeliveryStatus, EventQuery};
use recordhook::spool::reconciliation::{Gap, KEPT_RUNS, ReconcileRun};
use recordhook::spool::{
    Acceptance, Claim, DeadLetter, Outcome, Settlement, SinkCounts, SinkRegistration, Spool,
    SpoolError, StorageError, unix_ms,
};

use crate::contract_test;
use crate::harness::{Backend, ContractTest};
use crate::postgres::{TestSpool, at};
use crate::records::{first_attempts, new_record, record, record_of};

pub fn tests() -> Vec<ContractTest> {
    vec![
        contract_test!(a_sink_gets_only_its_event_types_in_acceptance_order),
        contract_test!(a_sink_of_every_type_gets_every_record_and_keeps_them_when_retired),
        contract_test!(the_oldest_pending_delivery_is_reported_whether_fresh_or_retrying),
        contract_test!(a_new_sink_receives_only_what_arrives_after_it),
        contract_test!(failures_move_from_retry_to_dead_and_back),
        contract_test!(due_retries_get_half_of_a_claim_and_the_rest_when_nothing_fresh_waits),
        contract_test!(a_sink_removed_from_the_configuration_leaves_dead_letters),
        contract_test!(a_duplicate_within_the_window_is_not_stored_and_one_outside_is),
        contract_test!(concurrent_copies_of_one_callback_are_stored_once),
        contract_test!(retention_removes_only_old_records_that_every_sink_has_handled),
        contract_test!(a_closed_spool_refuses_writes),
        contract_test!(pages_of_events_come_newest_first_filtered_with_each_sinks_status),
        contract_test!(records_are_found_by_event_and_file_id_however_the_spool_is_opened),
        contract_test!(a_records_source_is_kept_and_pages_filter_on_it),
        contract_test!(known_event_ids_are_those_a_new_acceptance_would_call_duplicates),
        contract_test!(reconcile_checkpoints_only_move_forward_and_are_read_many_streams_at_once),
        contract_test!(a_gap_found_again_is_not_stored_twice_and_gaps_come_newest_first),
        contract_test!(reconcile_runs_are_listed_latest_first_with_how_they_ended),
        contract_test!(only_the_latest_reconcile_runs_are_kept),
        contract_test!(a_lease_is_held_by_one_holder_until_it_expires_or_is_released),
    ]
}

fn sink(name: &str, event_types: EventTypes) -> SinkRegistration {
    SinkRegistration {
        name: name.to_owned(),
        event_types,
        single_writer: false,
    }
}

fn recordings() -> EventTypes {
    vec![100].into()
}

async fn accept(spool: &Spool, record: &Record) -> i64 {
    match spool.accept(new_record(record), at(1_000)).await.unwrap() {
        Acceptance::Stored { seq } => seq,
        Acceptance::Duplicate => panic!("duplicate"),
    }
}

fn seqs(claim: &Claim) -> Vec<i64> {
    claim.deliveries.iter().map(|d| d.seq).collect()
}

/// Settles every delivery of `claim` the same way.
async fn settle_all(spool: &Spool, sink: &str, claim: Claim, settlement: Settlement, now: u64) {
    let outcomes = claim
        .deliveries
        .iter()
        .map(|d| Outcome {
            seq: d.seq,
            attempts: d.attempts + 1,
            settlement: settlement.clone(),
        })
        .collect();
    let refused = spool
        .settle(sink, claim.receipt, outcomes, at(now))
        .await
        .unwrap();
    assert_eq!(refused, 0);
}

async fn state(spool: &Spool, record: &Record, sink: &str, types: &EventTypes) -> Option<String> {
    spool
        .delivery_state(&record.id, sink, types)
        .await
        .unwrap()
        .map(|state| state.state)
}

async fn a_sink_gets_only_its_event_types_in_acceptance_order(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(vec![sink("a", recordings())], at(0))
        .await
        .unwrap();
    let first = accept(spool, &record("r1")).await;
    accept(spool, &record_of(1, "s1")).await;
    let last = accept(spool, &record("r2")).await;
    let claim = spool
        .claim("a", &recordings(), at(1_001), 10)
        .await
        .unwrap();
    assert_eq!(seqs(&claim), [first, last]);
    let counts = spool.counts("a", &recordings()).await.unwrap();
    assert_eq!((counts.pending, counts.dead), (2, 0));
    settle_all(spool, "a", claim, Settlement::Delivered, 1_001).await;
    let after = spool
        .claim("a", &recordings(), at(1_002), 10)
        .await
        .unwrap();
    assert!(after.deliveries.is_empty());
    assert_eq!(
        spool.counts("a", &recordings()).await.unwrap(),
        SinkCounts::default()
    );
    assert_eq!(
        state(spool, &record("r1"), "a", &recordings())
            .await
            .as_deref(),
        Some("delivered")
    );
    assert_eq!(
        state(spool, &record_of(1, "s1"), "a", &recordings()).await,
        None
    );
}

/// When the oldest pending delivery of `sink` was accepted, in whole
/// seconds (PostgreSQL's clock is translated to this host's, so the
/// milliseconds may be off by the measurement's error).
async fn oldest_pending_secs(spool: &Spool, sink: &str) -> Option<i64> {
    let counts = spool.counts(sink, &recordings()).await.unwrap();
    counts
        .oldest_pending_received_ms
        .map(|ms| (ms + 500).div_euclid(1_000))
}

async fn the_oldest_pending_delivery_is_reported_whether_fresh_or_retrying(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(vec![sink("a", recordings())], at(0))
        .await
        .unwrap();
    assert_eq!(oldest_pending_secs(spool, "a").await, None);
    for (file_id, received) in [("r1", 100), ("r2", 200)] {
        spool
            .accept(new_record(&record(file_id)), at(received))
            .await
            .unwrap();
    }
    assert_eq!(oldest_pending_secs(spool, "a").await, Some(100));
    // The oldest delivered: the next one is the oldest pending.
    let first = spool.claim("a", &recordings(), at(1_001), 1).await.unwrap();
    settle_all(spool, "a", first, Settlement::Delivered, 1_001).await;
    assert_eq!(oldest_pending_secs(spool, "a").await, Some(200));
    // Failed and waiting for a retry, it is still pending, and older than a
    // fresh record accepted since.
    let second = spool.claim("a", &recordings(), at(1_002), 1).await.unwrap();
    let retry = Settlement::Retry {
        at_ms: 5_000_000,
        error: "503".into(),
    };
    settle_all(spool, "a", second, retry, 1_002).await;
    spool
        .accept(new_record(&record("r3")), at(300))
        .await
        .unwrap();
    assert_eq!(spool.counts("a", &recordings()).await.unwrap().pending, 2);
    assert_eq!(oldest_pending_secs(spool, "a").await, Some(200));
    // Delivered and dead deliveries are not pending.
    let third = spool
        .claim("a", &recordings(), at(1_004), 10)
        .await
        .unwrap();
    assert_eq!(third.deliveries.len(), 1, "only r3 is due");
    settle_all(spool, "a", third, Settlement::Delivered, 1_004).await;
    let again = spool
        .claim("a", &recordings(), at(5_001), 10)
        .await
        .unwrap();
    assert_eq!(again.deliveries.len(), 1, "r2's retry is due");
    let dead = Settlement::Dead {
        error: "gave up".into(),
    };
    settle_all(spool, "a", again, dead, 5_001).await;
    assert_eq!(oldest_pending_secs(spool, "a").await, None);
    let counts = spool.counts("a", &recordings()).await.unwrap();
    assert_eq!((counts.pending, counts.dead), (0, 1));
}

async fn a_sink_of_every_type_gets_every_record_and_keeps_them_when_retired(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(vec![sink("all", EventTypes::All)], at(0))
        .await
        .unwrap();
    let stored = [
        accept(spool, &record("r1")).await,
        accept(spool, &record_of(1, "s1")).await,
        accept(spool, &record_of(9_999, "x1")).await,
    ];
    assert_eq!(
        spool.counts("all", &EventTypes::All).await.unwrap().pending,
        3
    );
    assert_eq!(
        state(spool, &record_of(9_999, "x1"), "all", &EventTypes::All)
            .await
            .as_deref(),
        Some("pending")
    );
    let claim = spool
        .claim("all", &EventTypes::All, at(1_001), 10)
        .await
        .unwrap();
    assert_eq!(seqs(&claim), stored);
    settle_all(
        spool,
        "all",
        claim,
        Settlement::Retry {
            at_ms: unix_ms(at(2_000)),
            error: "503".into(),
        },
        1_001,
    )
    .await;
    // Retired with every record waiting for a retry: all become dead letters.
    let retired = spool.register_sinks(Vec::new(), at(1_002)).await.unwrap();
    assert_eq!(retired, [("all".to_owned(), 3)]);
    assert_eq!(
        spool.dead_letters(Some("all".into())).await.unwrap().len(),
        3
    );
}

async fn a_new_sink_receives_only_what_arrives_after_it(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(vec![sink("early", recordings())], at(0))
        .await
        .unwrap();
    accept(spool, &record("before")).await;
    spool
        .register_sinks(
            vec![sink("early", recordings()), sink("late", recordings())],
            at(0),
        )
        .await
        .unwrap();
    assert!(
        spool
            .claim("late", &recordings(), at(1_001), 10)
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );
    let after = accept(spool, &record("after")).await;
    let claim = spool
        .claim("late", &recordings(), at(1_001), 10)
        .await
        .unwrap();
    assert_eq!(seqs(&claim), [after]);
}

async fn failures_move_from_retry_to_dead_and_back(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(vec![sink("a", recordings())], at(0))
        .await
        .unwrap();
    let r = record("f");
    accept(spool, &r).await;
    let claim = spool
        .claim("a", &recordings(), at(1_001), 10)
        .await
        .unwrap();
    settle_all(
        spool,
        "a",
        claim,
        Settlement::Retry {
            at_ms: unix_ms(at(2_000)),
            error: "503".into(),
        },
        1_001,
    )
    .await;
    assert!(
        spool
            .claim("a", &recordings(), at(1_999), 10)
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );
    assert_eq!(
        spool.next_retry_ms("a").await.unwrap(),
        Some(unix_ms(at(2_000)))
    );
    let due = spool
        .claim("a", &recordings(), at(2_000), 10)
        .await
        .unwrap();
    assert_eq!(due.deliveries.len(), 1);
    assert_eq!(due.deliveries[0].attempts, 1);
    assert_eq!(due.deliveries[0].record.parse().unwrap(), r);
    settle_all(
        spool,
        "a",
        due,
        Settlement::Dead {
            error: "400 Bad Request".into(),
        },
        2_001,
    )
    .await;
    assert_eq!(
        spool.dead_letters(None).await.unwrap(),
        [DeadLetter {
            id: r.id.clone(),
            sink: "a".into(),
            attempts: 2,
            last_error: "400 Bad Request".into(),
            last_attempt_at: "1970-01-01T00:33:21.000Z".into(),
        }]
    );
    assert_eq!(
        spool.counts("a", &recordings()).await.unwrap(),
        SinkCounts {
            pending: 0,
            dead: 1,
            oldest_pending_received_ms: None,
        }
    );
    let requeue = |sink: Option<&str>, id: Option<&str>| {
        spool.requeue_dead(sink.map(str::to_owned), id.map(str::to_owned), at(3_000))
    };
    assert_eq!(requeue(Some("b"), None).await.unwrap(), 0);
    assert_eq!(requeue(None, Some("other")).await.unwrap(), 0);
    assert_eq!(requeue(Some("a"), Some(&r.id)).await.unwrap(), 1);
    let again = spool
        .claim("a", &recordings(), at(3_000), 10)
        .await
        .unwrap();
    assert_eq!(again.deliveries.len(), 1);
    assert_eq!(again.deliveries[0].attempts, 0);
    settle_all(spool, "a", again, Settlement::Delivered, 3_001).await;
    assert_eq!(
        state(spool, &r, "a", &recordings()).await.as_deref(),
        Some("delivered")
    );
    assert!(spool.dead_letters(None).await.unwrap().is_empty());
}

async fn due_retries_get_half_of_a_claim_and_the_rest_when_nothing_fresh_waits(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(vec![sink("a", recordings())], at(0))
        .await
        .unwrap();
    let retry_now = Settlement::Retry {
        at_ms: 0,
        error: "503".into(),
    };
    for n in 0..6 {
        accept(spool, &record(&format!("old{n}"))).await;
    }
    let claim = spool.claim("a", &recordings(), at(1_000), 6).await.unwrap();
    settle_all(spool, "a", claim, retry_now.clone(), 1_000).await;
    // Nothing fresh waits: retries may fill the claim.
    let claim = spool.claim("a", &recordings(), at(2_000), 8).await.unwrap();
    assert_eq!(claim.deliveries.len(), 6);
    assert!(claim.deliveries.iter().all(|d| d.attempts == 1));
    settle_all(spool, "a", claim, retry_now, 2_000).await;
    // Twenty fresh records arrive behind the six due retries: half each.
    for n in 0..20 {
        accept(spool, &record(&format!("new{n}"))).await;
    }
    let claim = spool.claim("a", &recordings(), at(3_000), 8).await.unwrap();
    let retried = claim.deliveries.iter().filter(|d| d.attempts > 0).count();
    assert_eq!((claim.deliveries.len(), retried), (8, 4));
}

async fn a_sink_removed_from_the_configuration_leaves_dead_letters(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(
            vec![sink("kept", recordings()), sink("gone", recordings())],
            at(0),
        )
        .await
        .unwrap();
    accept(spool, &record("f1")).await;
    accept(spool, &record("f2")).await;
    accept(spool, &record_of(1, "start")).await;
    // `gone` had one retry waiting and one record it never tried.
    let claim = spool
        .claim("gone", &recordings(), at(1_001), 1)
        .await
        .unwrap();
    settle_all(
        spool,
        "gone",
        claim,
        Settlement::Retry {
            at_ms: 0,
            error: "503".into(),
        },
        1_001,
    )
    .await;
    let retired = spool
        .register_sinks(vec![sink("kept", recordings())], at(1_002))
        .await
        .unwrap();
    assert_eq!(retired, [("gone".to_owned(), 2)]);
    let dead = spool.dead_letters(Some("gone".into())).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|d| d.last_error == "sink `gone` is no longer configured")
    );
    assert_eq!(
        spool.counts("kept", &recordings()).await.unwrap().pending,
        2
    );
}

async fn a_duplicate_within_the_window_is_not_stored_and_one_outside_is(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    let r = record("f");
    let stored = |acceptance| matches!(acceptance, Acceptance::Stored { .. });
    assert!(stored(
        spool.accept(new_record(&r), at(1_000)).await.unwrap()
    ));
    assert_eq!(
        spool.accept(new_record(&r), at(1_060)).await.unwrap(),
        Acceptance::Duplicate
    );
    assert!(stored(
        spool.accept(new_record(&r), at(1_061)).await.unwrap()
    ));
    // The window restarts from the latest acceptance.
    assert_eq!(
        spool.accept(new_record(&r), at(1_100)).await.unwrap(),
        Acceptance::Duplicate
    );
    assert_eq!(spool.records().await.unwrap().len(), 2);
}

async fn concurrent_copies_of_one_callback_are_stored_once(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let mut tasks = Vec::new();
    for n in 0..200 {
        let spool = test.spool.clone();
        // Every file id is sent twice at once, so copies share a batch or race.
        let record = record(&format!("f{}", n / 2));
        tasks.push(tokio::spawn(async move {
            spool.accept(new_record(&record), at(1_000)).await.unwrap()
        }));
    }
    let mut stored = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Acceptance::Stored { .. }) {
            stored += 1;
        }
    }
    assert_eq!(stored, 100);
    assert_eq!(test.spool.records().await.unwrap().len(), 100);
}

async fn retention_removes_only_old_records_that_every_sink_has_handled(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(
            vec![sink("a", recordings()), sink("b", recordings())],
            at(0),
        )
        .await
        .unwrap();
    for (n, received) in [1_000, 1_000, 1_000, 5_000].into_iter().enumerate() {
        let acceptance = spool
            .accept(new_record(&record(&format!("f{n}"))), at(received))
            .await
            .unwrap();
        assert!(matches!(acceptance, Acceptance::Stored { .. }));
    }
    // `a` handles everything, f1 as a dead letter; `b` only the first two.
    let mut claim = spool
        .claim("a", &recordings(), at(5_001), 10)
        .await
        .unwrap();
    let f1 = claim.deliveries.remove(1);
    let mut outcomes = first_attempts(&claim, |_| Settlement::Delivered);
    outcomes.push(Outcome {
        seq: f1.seq,
        attempts: 1,
        settlement: Settlement::Dead { error: "no".into() },
    });
    assert_eq!(
        spool
            .settle("a", claim.receipt, outcomes, at(5_001))
            .await
            .unwrap(),
        0
    );
    let claim = spool.claim("b", &recordings(), at(5_001), 2).await.unwrap();
    settle_all(spool, "b", claim, Settlement::Delivered, 5_001).await;
    // Too young: nothing goes.
    assert_eq!(
        spool
            .purge_delivered(unix_ms(at(1_000)), 100)
            .await
            .unwrap(),
        0
    );
    // Old enough: only f0 (handled by both, no dead letter) goes.
    assert_eq!(
        spool
            .purge_delivered(unix_ms(at(2_000)), 100)
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = spool
        .records()
        .await
        .unwrap()
        .iter()
        .map(|r| r.event["file_id"].to_string())
        .collect();
    assert_eq!(left, ["\"f1\"", "\"f2\"", "\"f3\""]);
    // Purging the dead letter, and `b` catching up, lets f1 and f2 go; f3 is too young.
    assert_eq!(spool.purge_dead(Some("a".into()), None).await.unwrap(), 1);
    let claim = spool
        .claim("b", &recordings(), at(5_002), 10)
        .await
        .unwrap();
    settle_all(spool, "b", claim, Settlement::Delivered, 5_002).await;
    assert_eq!(
        spool
            .purge_delivered(unix_ms(at(2_000)), 100)
            .await
            .unwrap(),
        2
    );
    assert_eq!(spool.records().await.unwrap().len(), 1);
    // Dedup memory is pruned separately, in bounded batches.
    assert_eq!(spool.prune_seen(unix_ms(at(2_000)), 2).await.unwrap(), 2);
    assert_eq!(spool.prune_seen(unix_ms(at(2_000)), 2).await.unwrap(), 1);
}

async fn a_closed_spool_refuses_writes(backend: Backend) {
    let test = TestSpool::open(backend).await;
    test.spool
        .accept(new_record(&record("f")), at(1))
        .await
        .unwrap();
    test.spool.close().await;
    assert!(matches!(
        test.spool.accept(new_record(&record("g")), at(1)).await,
        Err(SpoolError::Closed)
    ));
}

async fn pages_of_events_come_newest_first_filtered_with_each_sinks_status(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(
            vec![sink("a", recordings()), sink("b", EventTypes::All)],
            at(0),
        )
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for n in 0..4 {
        seqs.push(accept(spool, &record(&format!("f{n}"))).await);
    }
    let other_type = accept(spool, &record_of(1, "s1")).await;
    // `a`: f0 delivered, f1 dead, f2 waiting for a retry, f3 not tried. `b`: all delivered.
    let claim = spool.claim("a", &recordings(), at(1_001), 3).await.unwrap();
    let outcomes = claim
        .deliveries
        .iter()
        .zip([
            Settlement::Delivered,
            Settlement::Dead {
                error: "400".into(),
            },
            Settlement::Retry {
                at_ms: unix_ms(at(5_000)),
                error: "503".into(),
            },
        ])
        .map(|(d, settlement)| Outcome {
            seq: d.seq,
            attempts: 1,
            settlement,
        })
        .collect();
    spool
        .settle("a", claim.receipt, outcomes, at(1_001))
        .await
        .unwrap();
    let claim = spool
        .claim("b", &EventTypes::All, at(1_001), 10)
        .await
        .unwrap();
    settle_all(spool, "b", claim, Settlement::Delivered, 1_001).await;
    let page = |query: EventQuery| async move {
        spool
            .events(EventQuery { limit: 10, ..query })
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    // Newest first, two at a time, the cursor taking up where a page ended.
    let first = spool
        .events(EventQuery {
            limit: 2,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [other_type, seqs[3]]
    );
    let next = page(EventQuery {
        before_seq: Some(seqs[3]),
        ..EventQuery::default()
    })
    .await;
    assert_eq!(next, [seqs[2], seqs[1], seqs[0]]);
    let status = |status| EventQuery {
        status: Some(status),
        ..EventQuery::default()
    };
    assert_eq!(page(status(DeliveryStatus::Dead)).await, [seqs[1]]);
    assert_eq!(
        page(status(DeliveryStatus::Pending)).await,
        [seqs[3], seqs[2]]
    );
    assert_eq!(
        page(status(DeliveryStatus::Delivered)).await,
        [other_type, seqs[0]]
    );
    let file = page(EventQuery {
        file_id: Some("f2".into()),
        ..EventQuery::default()
    })
    .await;
    assert_eq!(file, [seqs[2]]);
    let of_type = page(EventQuery {
        event_type: Some(1),
        stream_id: Some("s".into()),
        ..EventQuery::default()
    })
    .await;
    assert_eq!(of_type, [other_type]);
    let elsewhere = page(EventQuery {
        stream_id: Some("other".into()),
        ..EventQuery::default()
    })
    .await;
    assert!(elsewhere.is_empty());
    let received = |since: u64, until: u64| EventQuery {
        since_ms: Some(unix_ms(at(since))),
        until_ms: Some(unix_ms(at(until))),
        ..EventQuery::default()
    };
    assert_eq!(page(received(1_000, 1_001)).await.len(), 5);
    assert!(page(received(1_001, 2_000)).await.is_empty());
    // One record whole: its body and each sink's state.
    let r1 = record("f1");
    let detail = spool.event(&r1.id).await.unwrap().unwrap();
    assert_eq!(detail.summary.seq, seqs[1]);
    assert_eq!(detail.summary.file_id.as_deref(), Some("f1"));
    assert_eq!(detail.summary.stream_id.as_deref(), Some("s"));
    assert!(detail.body.contains("\"f1\""));
    let a = detail.summary.sinks.iter().find(|s| s.sink == "a").unwrap();
    assert_eq!(
        (a.status, a.attempts, a.last_error.as_deref()),
        (DeliveryStatus::Dead, 1, Some("400"))
    );
    let waiting = spool.event(&record("f2").id).await.unwrap().unwrap();
    let a = waiting
        .summary
        .sinks
        .iter()
        .find(|s| s.sink == "a")
        .unwrap();
    assert_eq!(a.next_attempt_ms, Some(unix_ms(at(5_000))));
    let b = detail.summary.sinks.iter().find(|s| s.sink == "b").unwrap();
    assert_eq!(b.status, DeliveryStatus::Delivered);
    assert!(spool.event("unknown").await.unwrap().is_none());
}

/// The seqs of the page of records carrying `file_id`.
async fn seqs_of_file(spool: &Spool, file_id: &str) -> Vec<i64> {
    let query = EventQuery {
        file_id: Some(file_id.to_owned()),
        limit: 50,
        ..EventQuery::default()
    };
    spool
        .events(query)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// The seq of the record `event(id)` finds, if any.
async fn seq_of_event(spool: &Spool, record: &Record) -> Option<i64> {
    let found = spool.event(&record.id).await.unwrap();
    found.map(|detail| detail.summary.seq)
}

async fn records_are_found_by_event_and_file_id_however_the_spool_is_opened(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    spool
        .register_sinks(vec![sink("a", recordings())], at(0))
        .await
        .unwrap();
    let (old, kept) = (record("f-old"), record("f-kept"));
    let old_seq = accept_at(spool, &old, 1_000).await;
    let kept_seq = accept_at(spool, &kept, 1_000).await;
    assert_eq!(seqs_of_file(spool, "f-old").await, [old_seq]);
    assert_eq!(seq_of_event(spool, &kept).await, Some(kept_seq));
    assert!(seqs_of_file(spool, "f-none").await.is_empty());
    assert_eq!(seq_of_event(spool, &record("f-none")).await, None);

    // Out of the dedup window, its ids forgotten: the records are still found.
    assert_eq!(
        spool
            .prune_seen(unix_ms(at(2_000)), usize::MAX)
            .await
            .unwrap(),
        2
    );
    assert_eq!(seq_of_event(spool, &old).await, Some(old_seq));
    let state = spool
        .delivery_state(&kept.id, "a", &recordings())
        .await
        .unwrap();
    assert_eq!(state.map(|s| s.state), Some("pending".to_owned()));

    // Delivered and past retention: gone from every lookup. A dead letter
    // keeps its record, and stays found.
    let claim = spool
        .claim("a", &recordings(), at(2_000), 10)
        .await
        .unwrap();
    let outcomes = vec![
        Outcome {
            seq: old_seq,
            attempts: 1,
            settlement: Settlement::Delivered,
        },
        Outcome {
            seq: kept_seq,
            attempts: 1,
            settlement: Settlement::Dead { error: "no".into() },
        },
    ];
    spool
        .settle("a", claim.receipt, outcomes, at(2_000))
        .await
        .unwrap();
    assert_eq!(
        spool
            .purge_delivered(unix_ms(at(2_000)), usize::MAX)
            .await
            .unwrap(),
        1
    );
    assert!(seqs_of_file(spool, "f-old").await.is_empty());
    assert_eq!(seq_of_event(spool, &old).await, None);
    assert_eq!(seqs_of_file(spool, "f-kept").await, [kept_seq]);

    // Another copy of the purged callback, stored anew: found under its new seq.
    let again = accept_at(spool, &old, 3_000).await;
    assert!(again > kept_seq);
    assert_eq!(seqs_of_file(spool, "f-old").await, [again]);
    assert_eq!(seq_of_event(spool, &old).await, Some(again));

    // An admin handle beside the server, then the server reopened, find the same.
    let admin = Spool::open_for_admin(&test.options).await.unwrap();
    assert_eq!(seqs_of_file(&admin, "f-old").await, [again]);
    assert_eq!(seq_of_event(&admin, &kept).await, Some(kept_seq));
    admin.close().await;
    spool.close().await;
    let reopened = Spool::open(&test.options).await.unwrap();
    assert_eq!(seqs_of_file(&reopened, "f-kept").await, [kept_seq]);
    assert_eq!(seqs_of_file(&reopened, "f-old").await, [again]);
    assert_eq!(seq_of_event(&reopened, &old).await, Some(again));
    reopened.close().await;
}

/// Accepts `record` at `secs`; its seq (it must be stored).
async fn accept_at(spool: &Spool, record: &Record, secs: u64) -> i64 {
    match spool.accept(new_record(record), at(secs)).await.unwrap() {
        Acceptance::Stored { seq } => seq,
        other => panic!("{other:?}"),
    }
}

async fn a_records_source_is_kept_and_pages_filter_on_it(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    let live = accept(spool, &record("live")).await;
    let mut recovered = record("recovered");
    recovered.source = Source::Reconciled;
    let reconciled = accept(spool, &recovered).await;
    let old = accept(spool, &record("old")).await;
    // As a record stored before the column existed (or by an older replica).
    test.execute(&format!(
        "UPDATE records SET source = NULL WHERE seq = {old}"
    ))
    .await;
    let page = |source| async move {
        spool
            .events(EventQuery {
                source,
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|e| (e.seq, e.source))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        page(None).await,
        [
            (old, Source::Live),
            (reconciled, Source::Reconciled),
            (live, Source::Live)
        ]
    );
    assert_eq!(
        page(Some(Source::Reconciled)).await,
        [(reconciled, Source::Reconciled)]
    );
    assert_eq!(
        page(Some(Source::Live)).await,
        [(old, Source::Live), (live, Source::Live)]
    );
    let detail = spool.event(&recovered.id).await.unwrap().unwrap();
    assert_eq!(detail.summary.source, Source::Reconciled);
    let stored = spool.records().await.unwrap();
    assert_eq!(stored[1], recovered);
}

async fn known_event_ids_are_those_a_new_acceptance_would_call_duplicates(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    let (early, late) = (record("early"), record("late"));
    spool.accept(new_record(&early), at(1_000)).await.unwrap();
    spool.accept(new_record(&late), at(1_030)).await.unwrap();
    let asked = vec![early.id.clone(), late.id.clone(), "unknown".to_owned()];
    let known = |now: u64| {
        let asked = asked.clone();
        async move {
            let mut known: Vec<String> = spool
                .known_event_ids(asked, at(now))
                .await
                .unwrap()
                .into_iter()
                .collect();
            known.sort();
            known
        }
    };
    let mut both = vec![early.id.clone(), late.id.clone()];
    both.sort();
    assert_eq!(known(1_060).await, both);
    // The 60 s window has passed for `early` only.
    assert_eq!(known(1_061).await, std::slice::from_ref(&late.id));
    assert!(known(1_091).await.is_empty());
    // Just as acceptance sees them at 1_061.
    assert_eq!(
        spool.accept(new_record(&late), at(1_061)).await.unwrap(),
        Acceptance::Duplicate
    );
    assert!(matches!(
        spool.accept(new_record(&early), at(1_061)).await.unwrap(),
        Acceptance::Stored { .. }
    ));
    assert!(
        spool
            .known_event_ids(Vec::new(), at(1_000))
            .await
            .unwrap()
            .is_empty()
    );
    // A long list: more ids than one lookup turn, half of them known.
    let mut tasks = Vec::new();
    for n in 0..600 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            spool
                .accept(new_record(&record(&format!("many{n}"))), at(2_000))
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let ids: Vec<String> = (0..1_200).map(|n| record(&format!("many{n}")).id).collect();
    let known = spool.known_event_ids(ids.clone(), at(2_001)).await.unwrap();
    assert_eq!(known.len(), 600);
    assert!(ids[..600].iter().all(|id| known.contains(id)));
}

async fn reconcile_checkpoints_only_move_forward_and_are_read_many_streams_at_once(
    backend: Backend,
) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    let streams = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(
        spool
            .reconcile_checkpoints(streams(&["s1"]))
            .await
            .unwrap()
            .is_empty()
    );
    spool
        .save_reconcile_checkpoint("s1", &[100, 1, 100], 5_000)
        .await
        .unwrap();
    spool
        .save_reconcile_checkpoint("s2", &[100], 7_000)
        .await
        .unwrap();
    // Backwards: ignored. Forwards: taken.
    spool
        .save_reconcile_checkpoint("s1", &[100], 4_000)
        .await
        .unwrap();
    spool
        .save_reconcile_checkpoint("s1", &[1], 6_000)
        .await
        .unwrap();
    spool.save_reconcile_checkpoint("s3", &[], 1).await.unwrap();
    let expected = |pairs: &[(&str, i64, i64)]| {
        pairs
            .iter()
            .map(|(stream, event_type, until)| (((*stream).to_owned(), *event_type), *until))
            .collect::<HashMap<_, _>>()
    };
    assert_eq!(
        spool
            .reconcile_checkpoints(streams(&["s1", "s2", "s3"]))
            .await
            .unwrap(),
        expected(&[("s1", 100, 5_000), ("s1", 1, 6_000), ("s2", 100, 7_000)])
    );
    assert_eq!(
        spool.reconcile_checkpoints(streams(&["s2"])).await.unwrap(),
        expected(&[("s2", 100, 7_000)])
    );
    // Ten thousand streams in one call, most never checked.
    let many: Vec<String> = (0..10_000)
        .map(|n| format!("stream-{n}"))
        .chain(streams(&["s2"]))
        .collect();
    assert_eq!(
        spool.reconcile_checkpoints(many).await.unwrap(),
        expected(&[("s2", 100, 7_000)])
    );
}

fn gap(stream: &str, event_time_ms: i64, excerpt: &str, found_at_ms: i64) -> Gap {
    Gap {
        stream: stream.to_owned(),
        event_type: 100,
        event_time_ms,
        result_code: None,
        request_id: format!("req-{found_at_ms}"),
        reason: "not in the VOD library".to_owned(),
        request_excerpt: excerpt.to_owned(),
        found_at_ms,
    }
}

async fn a_gap_found_again_is_not_stored_twice_and_gaps_come_newest_first(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    assert_eq!(spool.gap_count().await.unwrap(), 0);
    assert_eq!(spool.record_gaps(Vec::new()).await.unwrap(), 0);
    let first = Gap {
        result_code: Some(500),
        ..gap("s1", 1_000, r#"{"event_type":100,"file_id":"a"}"#, 10_000)
    };
    let second = gap("s2", 2_000, r#"{"event_type":100,"file_id":"b"}"#, 20_000);
    assert_eq!(
        spool
            .record_gaps(vec![first.clone(), second.clone()])
            .await
            .unwrap(),
        2
    );
    // A later run over the same window finds them again (found later, said
    // otherwise): nothing new.
    let again = Gap {
        reason: "still missing".to_owned(),
        ..gap("s1", 1_000, &first.request_excerpt, 30_000)
    };
    assert_eq!(spool.record_gaps(vec![again]).await.unwrap(), 0);
    // Same stream, type and time, another callback: new. Twice in one call: once.
    let other = gap("s1", 1_000, r#"{"event_type":100,"file_id":"c"}"#, 40_000);
    assert_eq!(
        spool
            .record_gaps(vec![other.clone(), other.clone()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(spool.gap_count().await.unwrap(), 3);
    assert_eq!(
        spool.gaps(10).await.unwrap(),
        [other.clone(), second, first]
    );
    assert_eq!(spool.gaps(1).await.unwrap(), [other]);
}

async fn reconcile_runs_are_listed_latest_first_with_how_they_ended(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    let first = spool
        .start_reconcile_run("replica-a", 1_000, 0, 500)
        .await
        .unwrap();
    let second = spool
        .start_reconcile_run("replica-b", 2_000, 500, 1_500)
        .await
        .unwrap();
    assert!(second > first);
    let running = ReconcileRun {
        id: second,
        holder: "replica-b".to_owned(),
        started_at_ms: 2_000,
        finished_at_ms: None,
        window_start_ms: 500,
        window_end_ms: 1_500,
        status: "running".to_owned(),
        error: None,
        report: "{}".to_owned(),
    };
    assert_eq!(
        spool.reconcile_runs(1).await.unwrap(),
        std::slice::from_ref(&running)
    );
    spool
        .finish_reconcile_run(first, 1_900, "ok", None, r#"{"recovered":3}"#.to_owned())
        .await
        .unwrap();
    spool
        .finish_reconcile_run(
            second,
            2_500,
            "failed",
            Some("the API said 500".to_owned()),
            "{}".to_owned(),
        )
        .await
        .unwrap();
    let runs = spool.reconcile_runs(10).await.unwrap();
    assert_eq!(
        runs,
        [
            ReconcileRun {
                finished_at_ms: Some(2_500),
                status: "failed".to_owned(),
                error: Some("the API said 500".to_owned()),
                ..running
            },
            ReconcileRun {
                id: first,
                holder: "replica-a".to_owned(),
                started_at_ms: 1_000,
                finished_at_ms: Some(1_900),
                window_start_ms: 0,
                window_end_ms: 500,
                status: "ok".to_owned(),
                error: None,
                report: r#"{"recovered":3}"#.to_owned(),
            }
        ]
    );
    // Refused: a status a run does not end with, and a run never started.
    let bogus = spool
        .finish_reconcile_run(first, 3_000, "running", None, "{}".to_owned())
        .await;
    assert!(
        matches!(&bogus, Err(SpoolError::Write(StorageError::RunStatus { status, .. })) if status == "running"),
        "{bogus:?}"
    );
    let unknown = spool
        .finish_reconcile_run(second + 1_000, 3_000, "ok", None, "{}".to_owned())
        .await;
    assert!(
        matches!(unknown, Err(SpoolError::Write(StorageError::NoRun { id })) if id == second + 1_000),
        "{unknown:?}"
    );
    assert_eq!(spool.reconcile_runs(10).await.unwrap(), runs);
}

async fn only_the_latest_reconcile_runs_are_kept(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    let first = spool.start_reconcile_run("r", 0, 0, 1).await.unwrap();
    // Started a few at a time, so SQLite commits them together.
    for round in 0..KEPT_RUNS / 50 {
        let started = futures_util::future::join_all((0..50).map(|n| {
            let at_ms = i64::try_from(round * 50 + n + 1).unwrap();
            spool.start_reconcile_run("r", at_ms, 0, 1)
        }))
        .await;
        for id in started {
            id.unwrap();
        }
    }
    // One more, alone: it sees every other run and keeps the newest.
    let last = spool
        .start_reconcile_run("r", 1_000_000, 0, 1)
        .await
        .unwrap();
    let runs = spool.reconcile_runs(2 * KEPT_RUNS).await.unwrap();
    assert_eq!(runs.len(), KEPT_RUNS);
    assert_eq!(runs[0].id, last);
    assert!(runs.iter().all(|run| run.id != first));
}

async fn a_lease_is_held_by_one_holder_until_it_expires_or_is_released(backend: Backend) {
    let test = TestSpool::open(backend).await;
    let spool = &test.spool;
    let long = Duration::from_secs(30);
    assert!(spool.acquire_lease("reconcile", "a", long).await.unwrap());
    assert!(!spool.acquire_lease("reconcile", "b", long).await.unwrap());
    // Its holder renews it; another name is another lease.
    assert!(spool.acquire_lease("reconcile", "a", long).await.unwrap());
    assert!(spool.acquire_lease("other", "b", long).await.unwrap());
    // Only its holder releases it.
    spool.release_lease("reconcile", "b").await.unwrap();
    assert!(!spool.acquire_lease("reconcile", "b", long).await.unwrap());
    spool.release_lease("reconcile", "a").await.unwrap();
    assert!(spool.acquire_lease("reconcile", "b", long).await.unwrap());
    assert!(!spool.acquire_lease("reconcile", "a", long).await.unwrap());
    // A lease that is not renewed runs out, and another holder takes it.
    let short = Duration::from_millis(200);
    assert!(spool.acquire_lease("brief", "a", short).await.unwrap());
    assert!(!spool.acquire_lease("brief", "b", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(spool.acquire_lease("brief", "b", long).await.unwrap());
    assert!(!spool.acquire_lease("brief", "a", short).await.unwrap());
}
