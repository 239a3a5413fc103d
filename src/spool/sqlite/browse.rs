//! Pages of records for the admin API, from the SQLite spool. A record's
//! status with a sink comes from that sink's `failures` row when it has one,
//! else from its cursor: at or behind it, handled; past it, pending.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::SqliteSpool;
use super::body::StoredBody;
use super::indexes::{file_candidates, newest_record_of};
use crate::record::Source;
use crate::spool::SpoolError;
use crate::spool::browse::{
    DeliveryStatus, EventDetail, EventQuery, EventSummary, SinkDelivery, source_from_stored,
};

/// Rows looked at per round while filling a page whose status filter the
/// SQL can only approximate (see [`status_condition`]).
const CHUNK: usize = 200;
/// Rounds at most: a page may come back short rather than scan the spool.
const ROUNDS: usize = 50;

/// A sink as its cursor row says.
struct Cursor {
    sink: String,
    seq: i64,
    /// `*`, or integers separated by commas (see `deliveries::type_list`).
    event_types: String,
}

impl Cursor {
    fn takes(&self, event_type: i64) -> bool {
        self.event_types == "*"
            || self
                .event_types
                .split(',')
                .any(|t| t.parse::<i64>().ok() == Some(event_type))
    }
}

/// An SQL condition on `records` that every record of `status` meets (and
/// few others); the exact status is decided per record afterwards.
fn status_condition(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Dead => "seq IN (SELECT seq FROM failures WHERE state = 'dead')",
        DeliveryStatus::Pending => {
            "(seq IN (SELECT seq FROM failures WHERE state = 'pending')
              OR seq > (SELECT MIN(seq) FROM cursors))"
        }
        DeliveryStatus::Delivered => {
            "seq <= (SELECT MAX(seq) FROM cursors) AND seq NOT IN (SELECT seq FROM failures)"
        }
    }
}

/// The condition on `records` selecting the records of `source`. The value
/// is written into the statement, not bound, so that SQLite can use the
/// partial index `records_reconciled` (it cannot prove a bound value
/// matches the index's condition).
fn source_condition(source: Source) -> &'static str {
    match source {
        Source::Reconciled => "source = 'reconciled'",
        // Records stored before the column existed are NULL, and live.
        Source::Live => "(source IS NULL OR source = 'live')",
    }
}

type Row = (
    i64,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn cursors(conn: &Connection) -> rusqlite::Result<Vec<Cursor>> {
    conn.prepare_cached("SELECT sink, seq, event_types FROM cursors ORDER BY sink")?
        .query_map([], |row| {
            Ok(Cursor {
                sink: row.get(0)?,
                seq: row.get(1)?,
                event_types: row.get(2)?,
            })
        })?
        .collect()
}

/// Each record of `rows` with its status per sink.
fn summaries(conn: &Connection, rows: Vec<Row>) -> rusqlite::Result<Vec<EventSummary>> {
    let cursors = cursors(conn)?;
    let mut statement = conn.prepare_cached(
        "SELECT sink, state, attempts, last_error, last_attempt_ms, next_attempt_ms
         FROM failures WHERE seq = ?1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, id, event_type, received_at_ms, stream_id, file_id, source) in rows {
        let failures: Vec<SinkDelivery> = statement
            .query_map([seq], |row| {
                let state: String = row.get(1)?;
                let status = DeliveryStatus::from_stored(&state);
                Ok(SinkDelivery {
                    sink: row.get(0)?,
                    status,
                    attempts: row.get(2)?,
                    last_error: row.get(3)?,
                    last_attempt_ms: row.get(4)?,
                    next_attempt_ms: (status == DeliveryStatus::Pending)
                        .then(|| row.get(5))
                        .transpose()?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut sinks = Vec::new();
        for cursor in cursors.iter().filter(|c| c.takes(event_type)) {
            match failures.iter().find(|f| f.sink == cursor.sink) {
                Some(failure) => sinks.push(failure.clone()),
                None => sinks.push(SinkDelivery {
                    sink: cursor.sink.clone(),
                    status: if seq <= cursor.seq {
                        DeliveryStatus::Delivered
                    } else {
                        DeliveryStatus::Pending
                    },
                    attempts: 0,
                    last_error: None,
                    last_attempt_ms: None,
                    next_attempt_ms: None,
                }),
            }
        }
        // Dead letters of sinks no longer configured stay visible.
        for failure in failures {
            if !sinks.iter().any(|s| s.sink == failure.sink) {
                sinks.push(failure);
            }
        }
        out.push(EventSummary {
            seq,
            id,
            received_at_ms,
            event_type,
            stream_id,
            file_id,
            source: source_from_stored(source.as_deref()),
            sinks,
        });
    }
    Ok(out)
}

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

impl SqliteSpool {
    /// A page of records matching `query`, newest first.
    pub async fn events(&self, query: EventQuery) -> Result<Vec<EventSummary>, SpoolError> {
        let indexes = self.lookup_indexes();
        self.read(move |conn| {
            let mut conditions = vec!["seq < ?".to_owned()];
            let mut values: Vec<SqlValue> =
                vec![SqlValue::Integer(query.before_seq.unwrap_or(i64::MAX))];
            for (column, value) in [("stream_id", &query.stream_id), ("file_id", &query.file_id)] {
                if let Some(value) = value {
                    conditions.push(format!("{column} = ?"));
                    values.push(SqlValue::Text(value.clone()));
                }
            }
            // File ids have no index on disk: the records that may carry
            // one come from memory, and the condition above confirms them.
            if let Some(file_id) = &query.file_id
                && let Some(seqs) = file_candidates(indexes.as_deref(), file_id)
            {
                let seqs: Vec<String> = seqs.iter().map(i64::to_string).collect();
                conditions.push(format!("seq IN ({})", seqs.join(",")));
            }
            for (condition, value) in [
                ("event_type = ?", query.event_type),
                ("received_at_ms >= ?", query.since_ms),
                ("received_at_ms < ?", query.until_ms),
            ] {
                if let Some(value) = value {
                    conditions.push(condition.to_owned());
                    values.push(SqlValue::Integer(value));
                }
            }
            if let Some(status) = query.status {
                conditions.push(status_condition(status).to_owned());
            }
            if let Some(source) = query.source {
                conditions.push(source_condition(source).to_owned());
            }
            let sql = format!(
                "SELECT seq, event_id, event_type, received_at_ms, stream_id, file_id, source
                 FROM records WHERE {} ORDER BY seq DESC LIMIT {CHUNK}",
                conditions.join(" AND ")
            );
            let mut statement = conn.prepare(&sql)?;
            let mut page = Vec::new();
            for _ in 0..ROUNDS {
                let rows: Vec<Row> = statement
                    .query_map(params_from_iter(values.iter()), row)?
                    .collect::<rusqlite::Result<_>>()?;
                let Some(last) = rows.last().map(|row| row.0) else {
                    break;
                };
                let full = rows.len() == CHUNK;
                for summary in summaries(conn, rows)? {
                    if page.len() < query.limit
                        && query.status.is_none_or(|status| summary.status() == status)
                    {
                        page.push(summary);
                    }
                }
                if page.len() >= query.limit || !full {
                    break;
                }
                values[0] = SqlValue::Integer(last);
            }
            Ok(page)
        })
        .await
    }

    /// The latest record with event id `id`, whole.
    pub async fn event(&self, id: &str) -> Result<Option<EventDetail>, SpoolError> {
        let id = id.to_owned();
        let indexes = self.lookup_indexes();
        self.read(move |conn| {
            let Some(seq) = newest_record_of(conn, indexes.as_deref(), &id)? else {
                return Ok(None);
            };
            let found = conn
                .prepare_cached(
                    "SELECT seq, event_id, event_type, received_at_ms, stream_id, file_id, source,
                            body
                     FROM records WHERE seq = ?1",
                )?
                .query_row([seq], |r| Ok((row(r)?, r.get::<_, StoredBody>(7)?.0)))
                .optional()?;
            let Some((found, body)) = found else {
                return Ok(None);
            };
            let summary = summaries(conn, vec![found])?.remove(0);
            Ok(Some(EventDetail { summary, body }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconciled_filter_finds_its_records_through_the_partial_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT seq FROM records WHERE seq < ?1 AND {}
                 ORDER BY seq DESC LIMIT 200",
                source_condition(Source::Reconciled)
            ))
            .unwrap()
            .query_map([i64::MAX], |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("records_reconciled")),
            "{plan:?}"
        );
    }
}
