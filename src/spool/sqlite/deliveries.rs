//! Delivery state in the spool, per sink: a cursor (every record up to it is
//! handled) plus a `failures` row for each delivery that failed at least once
//! (waiting for a retry, or a dead letter). Delivering a batch that succeeds
//! writes one row, the cursor, however many records it held.

use std::future::Future;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteSpool;
use super::body::StoredBody;
use super::indexes::newest_record_of;
use crate::protocol::EventTypes;
use crate::record::StoredRecord;
use crate::spool::{
    Claim, ClaimReceipt, DeadLetter, DeliveryState, Outcome, PendingDelivery, Receipt, Settlement,
    SinkCounts, SinkRegistration, SpoolError, format_ms, unix_ms,
};

/// Records a sink has not been offered yet.
#[derive(Debug, Clone, Default)]
struct FreshBatch {
    /// Those of the sink's event types, in seq order.
    deliveries: Vec<PendingDelivery>,
    /// The last seq looked at (of any event type): the cursor moves here once
    /// the batch is settled.
    scanned_to: Option<i64>,
}

/// The statement that reads records past a cursor: every column of those of
/// `event_types`, only the seq of the others.
fn fresh_statement(event_types: &EventTypes) -> String {
    format!(
        "SELECT seq, received_at_ms, event_id, event_type,
                CASE WHEN {} THEN body END
         FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        type_filter(&type_list(event_types))
    )
}

/// Up to `limit` records past `sink`'s cursor, read with [`fresh_statement`]:
/// those of the sink's event types with their bodies.
fn fresh(conn: &Connection, sink: &str, sql: &str, limit: usize) -> Result<FreshBatch, SpoolError> {
    let Some(from) = cursor(conn, sink)? else {
        return Ok(FreshBatch::default());
    };
    let mut scanned_to = None;
    let mut deliveries = Vec::new();
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params![from, limit as i64])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        scanned_to = Some(seq);
        // Records of other event types have no body here: skipped, not loaded.
        if let Some(StoredBody(json)) = row.get::<_, Option<StoredBody>>(4)? {
            deliveries.push(PendingDelivery {
                seq,
                attempts: 0,
                received_at_ms: row.get(1)?,
                record: StoredRecord {
                    id: row.get(2)?,
                    event_type: row.get(3)?,
                    json,
                },
            });
        }
    }
    Ok(FreshBatch {
        deliveries,
        scanned_to,
    })
}

/// Up to `limit` failed deliveries to `sink` whose retry is due at `now_ms`.
fn due_retries(
    conn: &Connection,
    sink: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<PendingDelivery>, SpoolError> {
    let deliveries = conn
        .prepare_cached(
            "SELECT f.seq, f.attempts, r.received_at_ms, r.event_id, r.event_type, r.body
             FROM failures f JOIN records r ON r.seq = f.seq
             WHERE f.sink = ?1 AND f.state = 'pending' AND f.next_attempt_ms <= ?2
             ORDER BY f.next_attempt_ms, f.seq LIMIT ?3",
        )?
        .query_map(params![sink, now_ms, limit as i64], |row| {
            Ok(PendingDelivery {
                seq: row.get(0)?,
                attempts: row.get(1)?,
                received_at_ms: row.get(2)?,
                record: StoredRecord {
                    id: row.get(3)?,
                    event_type: row.get(4)?,
                    json: row.get::<_, StoredBody>(5)?.0,
                },
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(deliveries)
}

/// How a cursor row stores [`EventTypes::All`] (a list holds integers only).
const ALL_TYPES: &str = "*";

/// `event_types` as stored in a cursor row: [`ALL_TYPES`], or an SQL list.
/// They are integers from the configuration, so writing them into a
/// statement is safe; it lets SQLite filter by type.
fn type_list(event_types: &EventTypes) -> String {
    match event_types.listed() {
        None => ALL_TYPES.to_owned(),
        Some([]) => "NULL".to_owned(),
        Some(types) => types
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The SQL condition selecting the records of a stored type list (written by
/// [`type_list`]): every record for [`ALL_TYPES`], no filter at all.
fn type_filter(stored: &str) -> String {
    if stored == ALL_TYPES {
        "1".to_owned()
    } else {
        format!("event_type IN ({stored})")
    }
}

fn cursor(conn: &Connection, sink: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT seq FROM cursors WHERE sink = ?1")?
        .query_row([sink], |row| row.get(0))
        .optional()
}

impl SqliteSpool {
    /// Creates a cursor for each configured sink that has none, at the current
    /// end of the spool (a new sink receives what arrives from now on), and
    /// records each sink's event types. A sink that is no longer configured
    /// gets its undelivered records as dead letters (kept, never silently
    /// dropped) and loses its cursor. Returns each such sink with the number
    /// of its dead letters. (One process drives every sink, so
    /// [`SinkRegistration::single_writer`] changes nothing here.)
    pub async fn register_sinks(
        &self,
        sinks: Vec<SinkRegistration>,
        now: SystemTime,
    ) -> Result<Vec<(String, usize)>, SpoolError> {
        let now_ms = unix_ms(now);
        self.write(move |conn| {
            for sink in &sinks {
                conn.prepare_cached(
                    "INSERT INTO cursors (sink, seq, event_types)
                     VALUES (?1, (SELECT COALESCE(MAX(seq), 0) FROM records), ?2)
                     ON CONFLICT (sink) DO UPDATE SET event_types = excluded.event_types",
                )?
                .execute(params![sink.name, type_list(&sink.event_types)])?;
            }
            let known: Vec<&str> = sinks.iter().map(|sink| sink.name.as_str()).collect();
            let registered = conn
                .prepare_cached("SELECT sink, seq, event_types FROM cursors")?
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut retired = Vec::new();
            for (sink, seq, event_types) in registered {
                if known.contains(&sink.as_str()) {
                    continue;
                }
                let error = format!("sink `{sink}` is no longer configured");
                // The stored type list was written by `type_list` above: integers or `*` only.
                let filter = type_filter(&event_types);
                let undelivered = conn.execute(
                    &format!(
                        "INSERT OR IGNORE INTO failures
                         (sink, seq, state, attempts, next_attempt_ms, last_attempt_ms, last_error)
                         SELECT ?1, seq, 'dead', 0, ?3, ?3, ?4 FROM records
                         WHERE seq > ?2 AND {filter}"
                    ),
                    params![sink, seq, now_ms, error],
                )?;
                let waiting = conn.execute(
                    "UPDATE failures SET state = 'dead', last_error = ?2, last_attempt_ms = ?3
                     WHERE sink = ?1 AND state = 'pending'",
                    params![sink, error, now_ms],
                )?;
                conn.execute("DELETE FROM cursors WHERE sink = ?1", [&sink])?;
                retired.push((sink, undelivered + waiting));
            }
            Ok(retired)
        })
        .await
    }

    /// Up to `limit` deliveries for `sink`: due retries first, up to half of
    /// `limit` (so a steady stream of fresh records cannot starve them), then
    /// records past the cursor, then more due retries if room is left.
    ///
    /// All in one trip to the read connection's thread: each trip is a
    /// hand-off between threads, and a busy sink claims hundreds of times a
    /// second (it was three trips, bench/BENCHMARKS.md, issue 21).
    pub async fn claim(
        &self,
        sink: &str,
        event_types: &EventTypes,
        now: SystemTime,
        limit: usize,
    ) -> Result<Claim, SpoolError> {
        let now_ms = unix_ms(now);
        let sink = sink.to_owned();
        let fresh_sql = fresh_statement(event_types);
        self.read(move |conn| {
            let retry_share = limit / 2;
            let mut retries = due_retries(conn, &sink, now_ms, retry_share)?;
            let fresh = fresh(conn, &sink, &fresh_sql, limit - retries.len())?;
            let room = limit.saturating_sub(fresh.deliveries.len());
            if retries.len() == retry_share && room > retries.len() {
                // Few fresh records: let retries have the rest of the batch.
                retries = due_retries(conn, &sink, now_ms, room)?;
            }
            retries.extend(fresh.deliveries);
            Ok(Claim {
                deliveries: retries,
                receipt: ClaimReceipt(
                    fresh
                        .scanned_to
                        .map_or(Receipt::Empty, |scanned_to| Receipt::Sqlite { scanned_to }),
                ),
            })
        })
        .await
    }

    /// Runs `work`: a claim needs no holding here, as no other process
    /// could take it over.
    pub async fn hold_while<F: Future>(
        &self,
        _sink: &str,
        _receipt: &ClaimReceipt,
        work: F,
    ) -> F::Output {
        work.await
    }

    /// When the next retry to `sink` falls due (Unix ms), if any is waiting.
    pub async fn next_retry_ms(&self, sink: &str) -> Result<Option<i64>, SpoolError> {
        let sink = sink.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_ms) FROM failures WHERE sink = ?1 AND state = 'pending'",
                )?
                .query_row([sink], |row| row.get(0))?)
        })
        .await
    }

    /// Writes back the outcomes of one round of attempts on `sink` and moves
    /// its cursor to where the claim's scan ended, in one transaction.
    /// Refuses none (0): only this process claims.
    pub async fn settle(
        &self,
        sink: &str,
        receipt: ClaimReceipt,
        outcomes: Vec<Outcome>,
        now: SystemTime,
    ) -> Result<usize, SpoolError> {
        let scanned_to = match receipt.0 {
            Receipt::Sqlite { scanned_to } => Some(scanned_to),
            Receipt::Empty | Receipt::Postgres { .. } => None,
        };
        let sink = sink.to_owned();
        let now_ms = unix_ms(now);
        self.write(move |conn| {
            for outcome in &outcomes {
                let (state, next_ms, error) = match &outcome.settlement {
                    Settlement::Delivered => {
                        conn.prepare_cached("DELETE FROM failures WHERE sink = ?1 AND seq = ?2")?
                            .execute(params![sink, outcome.seq])?;
                        continue;
                    }
                    Settlement::Retry { at_ms, error } => ("pending", *at_ms, error.as_str()),
                    Settlement::Dead { error } => ("dead", now_ms, error.as_str()),
                };
                conn.prepare_cached(
                    "INSERT INTO failures
                     (sink, seq, state, attempts, next_attempt_ms, last_attempt_ms, last_error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (sink, seq) DO UPDATE SET state = excluded.state,
                     attempts = excluded.attempts, next_attempt_ms = excluded.next_attempt_ms,
                     last_attempt_ms = excluded.last_attempt_ms, last_error = excluded.last_error",
                )?
                .execute(params![
                    sink,
                    outcome.seq,
                    state,
                    outcome.attempts,
                    next_ms,
                    now_ms,
                    error
                ])?;
            }
            if let Some(seq) = scanned_to {
                conn.prepare_cached("UPDATE cursors SET seq = MAX(seq, ?2) WHERE sink = ?1")?
                    .execute(params![sink, seq])?;
            }
            Ok(0)
        })
        .await
    }

    /// Dead letters, of one sink or all, oldest first.
    pub async fn dead_letters(&self, sink: Option<String>) -> Result<Vec<DeadLetter>, SpoolError> {
        self.read(move |conn| {
            let letters = conn
                .prepare(
                    "SELECT r.event_id, f.sink, f.attempts, f.last_error, f.last_attempt_ms
                     FROM failures f JOIN records r ON r.seq = f.seq
                     WHERE f.state = 'dead' AND (?1 IS NULL OR f.sink = ?1) ORDER BY f.seq, f.sink",
                )?
                .query_map([sink], |row| {
                    Ok(DeadLetter {
                        id: row.get(0)?,
                        sink: row.get(1)?,
                        attempts: row.get(2)?,
                        last_error: row.get(3)?,
                        last_attempt_at: format_ms(row.get(4)?),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(letters)
        })
        .await
    }

    /// Queues dead letters again (attempts reset), of one sink or all, one event
    /// id or all. Returns how many were queued.
    pub async fn requeue_dead(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
        now: SystemTime,
    ) -> Result<usize, SpoolError> {
        let now_ms = unix_ms(now);
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE failures SET state = 'pending', attempts = 0, next_attempt_ms = ?3
                 WHERE state = 'dead' AND (?1 IS NULL OR sink = ?1) AND (?2 IS NULL OR EXISTS
                 (SELECT 1 FROM records r WHERE r.seq = failures.seq AND r.event_id = ?2))",
            )?
            .execute(params![sink, event_id, now_ms])
        })
        .await
    }

    /// Deletes dead letters, of one sink or all, one event id or all. The
    /// records themselves go once retention allows. Returns how many were deleted.
    pub async fn purge_dead(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
    ) -> Result<usize, SpoolError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM failures WHERE state = 'dead' AND (?1 IS NULL OR sink = ?1)
                 AND (?2 IS NULL OR EXISTS
                 (SELECT 1 FROM records r WHERE r.seq = failures.seq AND r.event_id = ?2))",
            )?
            .execute(params![sink, event_id])
        })
        .await
    }

    /// Where the record `event_id` stands with `sink`, which takes
    /// `event_types`; `None` when the record is unknown or not for this sink.
    /// Scans the records: for tests and operators, not for hot paths.
    pub async fn delivery_state(
        &self,
        event_id: &str,
        sink: &str,
        event_types: &EventTypes,
    ) -> Result<Option<DeliveryState>, SpoolError> {
        let (event_id, sink, event_types) =
            (event_id.to_owned(), sink.to_owned(), event_types.clone());
        let indexes = self.lookup_indexes();
        self.read(move |conn| {
            let Some(seq) = newest_record_of(conn, indexes.as_deref(), &event_id)? else {
                return Ok(None);
            };
            // Purged since it was found: unknown now.
            let Some(event_type) = conn
                .prepare_cached("SELECT event_type FROM records WHERE seq = ?1")?
                .query_row([seq], |row| row.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(None);
            };
            let failure = conn
                .prepare_cached(
                    "SELECT state, attempts, last_error FROM failures WHERE sink = ?1 AND seq = ?2",
                )?
                .query_row(params![sink, seq], |row| {
                    Ok(DeliveryState {
                        state: row.get(0)?,
                        attempts: row.get(1)?,
                        last_error: row.get(2)?,
                    })
                })
                .optional()?;
            if failure.is_some() {
                return Ok(failure);
            }
            if !event_types.contains(event_type) {
                return Ok(None);
            }
            let handled = cursor(conn, &sink)?.is_some_and(|cursor| cursor >= seq);
            Ok(Some(DeliveryState {
                state: if handled { "delivered" } else { "pending" }.to_owned(),
                attempts: 0,
                last_error: None,
            }))
        })
        .await
    }

    /// Delivery counts of `sink`, which takes `event_types`.
    pub async fn counts(
        &self,
        sink: &str,
        event_types: &EventTypes,
    ) -> Result<SinkCounts, SpoolError> {
        let sink = sink.to_owned();
        let sql = format!(
            "SELECT
               (SELECT COUNT(*) FROM records WHERE {filter} AND seq >
                  COALESCE((SELECT seq FROM cursors WHERE sink = ?1), 9223372036854775807)),
               (SELECT COUNT(*) FROM failures WHERE sink = ?1 AND state = 'pending'),
               (SELECT COUNT(*) FROM failures WHERE sink = ?1 AND state = 'dead'),
               (SELECT received_at_ms FROM records WHERE {filter} AND seq >
                  COALESCE((SELECT seq FROM cursors WHERE sink = ?1), 9223372036854775807)
                  ORDER BY seq LIMIT 1),
               (SELECT received_at_ms FROM records WHERE seq =
                  (SELECT MIN(seq) FROM failures WHERE sink = ?1 AND state = 'pending'))",
            filter = type_filter(&type_list(event_types)),
        );
        self.read(move |conn| {
            let (fresh, retrying, dead, oldest_fresh, oldest_retrying): (
                i64,
                i64,
                i64,
                Option<i64>,
                Option<i64>,
            ) = conn.prepare_cached(&sql)?.query_row([sink], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(SinkCounts {
                pending: count(fresh) + count(retrying),
                dead: count(dead),
                // Records are in `seq` order of acceptance, so the first of
                // each kind is the oldest of its kind.
                oldest_pending_received_ms: oldest_fresh.into_iter().chain(oldest_retrying).min(),
            })
        })
        .await
    }
}

// Behaviour tests over both backends: tests/spool/contract.rs.
