//! The spool's tables and their migrations, versioned by SQLite's `user_version`.

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use crate::spool::StorageError;

/// Each entry upgrades the schema by one version; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    r"
    -- One row per accepted callback; `body` is the record as sinks receive it.
    -- Rows arrive in seq order, which is also (near enough) received_at order.
    CREATE TABLE records (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        event_type INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );

    -- Event ids accepted recently, for deduplication; outlives `records` rows
    -- that retention has removed, and is pruned after the dedup window.
    CREATE TABLE seen (
        event_id TEXT PRIMARY KEY,
        accepted_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX seen_by_accepted_at ON seen (accepted_at_ms);

    -- Per sink: every record with seq <= `seq` whose event type is in
    -- `event_types` has been handled (delivered, or moved to `failures`).
    -- One row per sink, so the happy path writes one row per delivered batch.
    CREATE TABLE cursors (
        sink TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        event_types TEXT NOT NULL
    ) WITHOUT ROWID;

    -- Deliveries that failed at least once: waiting for a retry, or dead letters.
    CREATE TABLE failures (
        sink TEXT NOT NULL,
        seq INTEGER NOT NULL REFERENCES records (seq) ON DELETE CASCADE,
        state TEXT NOT NULL CHECK (state IN ('pending', 'dead')),
        attempts INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL,
        last_attempt_ms INTEGER NOT NULL,
        last_error TEXT NOT NULL,
        PRIMARY KEY (sink, seq)
    ) WITHOUT ROWID;
    CREATE INDEX failures_due ON failures (sink, state, next_attempt_ms);
    CREATE INDEX failures_by_seq ON failures (seq);

    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
",
    r"
    -- Event ids accepted recently, appended in acceptance order, for
    -- deduplication: outlives `records` rows that retention has removed, and
    -- is pruned from the front after the dedup window. Replaces `seen`, whose
    -- random-keyed primary key cost a page write per callback; the lookup
    -- index is now rebuilt in memory from this table (see dedup.rs).
    CREATE TABLE accepted_ids (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL,
        accepted_at_ms INTEGER NOT NULL
    );
    INSERT INTO accepted_ids (event_id, accepted_at_ms)
        SELECT event_id, accepted_at_ms FROM seen ORDER BY accepted_at_ms;
    DROP TABLE seen;
",
    r"
    -- What the admin API filters on, as columns with indexes, so a filtered
    -- page is an index range, not a scan of every body. Existing rows are
    -- filled from their bodies.
    ALTER TABLE records ADD COLUMN stream_id TEXT;
    ALTER TABLE records ADD COLUMN file_id TEXT;
    UPDATE records SET stream_id = json_extract(body, '$.stream.stream_id'),
                       file_id = json_extract(body, '$.recording.file_id');
    CREATE INDEX records_by_event_id ON records (event_id);
    CREATE INDEX records_by_stream ON records (stream_id, seq);
    CREATE INDEX records_by_file ON records (file_id, seq);
    CREATE INDEX records_by_type ON records (event_type, seq);
    CREATE INDEX records_by_received ON records (received_at_ms);
",
    r"
    -- How each record reached recordhook (`live`, `reconciled`); NULL for
    -- records stored before the column existed, which were all live.
    -- Reconciled records are few, and the admin API filters on them: a
    -- partial index finds them without walking every live record.
    ALTER TABLE records ADD COLUMN source TEXT;
    CREATE INDEX records_reconciled ON records (seq) WHERE source = 'reconciled';
",
    r"
    -- Reconciliation's bookkeeping (see spool/reconciliation.rs). Per
    -- stream and event type: Tencent's records of the callbacks CSS sent
    -- were fully checked up to `checked_until_ms`.
    CREATE TABLE reconcile_checkpoints (
        stream TEXT NOT NULL,
        event_type INTEGER NOT NULL,
        checked_until_ms INTEGER NOT NULL,
        PRIMARY KEY (stream, event_type)
    ) WITHOUT ROWID;

    -- Callbacks Tencent says were sent that could not be recovered; one row
    -- per callback however many runs find it (`excerpt_digest`: SHA-256 of
    -- `request_excerpt`, hex).
    CREATE TABLE reconcile_gaps (
        id INTEGER PRIMARY KEY,
        stream TEXT NOT NULL,
        event_type INTEGER NOT NULL,
        event_time_ms INTEGER NOT NULL,
        excerpt_digest TEXT NOT NULL,
        result_code INTEGER,
        request_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        request_excerpt TEXT NOT NULL,
        found_at_ms INTEGER NOT NULL,
        UNIQUE (stream, event_type, event_time_ms, excerpt_digest)
    );
    CREATE INDEX reconcile_gaps_by_found ON reconcile_gaps (found_at_ms, id);

    -- The latest reconciliation runs (starting one deletes the oldest).
    -- AUTOINCREMENT: an id is never handed out twice, so newer is higher.
    CREATE TABLE reconcile_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        holder TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        window_start_ms INTEGER NOT NULL,
        window_end_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        report TEXT NOT NULL
    );

    -- Named leases: who does a job one process at a time may do, until when.
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        lease_until_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
",
    r"
    -- Event ids and file ids are random keys: their B-tree indexes dirtied a
    -- page each per callback, most of what a group commit wrote. They are
    -- looked up in memory instead (see fingerprints.rs): an event id through
    -- the dedup index, whose rows now name their record, a file id through an
    -- index rebuilt from `records` at start-up. Rows accepted before get their
    -- record here, found through the old index before it goes.
    ALTER TABLE accepted_ids ADD COLUMN seq INTEGER;
    UPDATE accepted_ids SET seq = (
        SELECT MAX(r.seq) FROM records r WHERE r.event_id = accepted_ids.event_id);
    DROP INDEX records_by_event_id;
    DROP INDEX records_by_file;
",
];

/// The schema version this build creates and expects.
pub(super) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema version of the database `conn` is open on.
pub(super) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Settings every connection needs. `synchronous = FULL` makes a commit
/// durable across power loss, not only across a crash of this process.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // When the WAL restarts, give back what a burst made it grow beyond 64 MiB.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // Plans that never depend on bound values. Without this, a statement with
    // `LIMIT ?` is marked for re-planning whenever that value is rebound, and
    // rusqlite clears every cached statement's bindings when it is returned
    // to the cache, which SQLite takes as a rebinding: each delivery query was
    // compiled again on every use, 40% of the instructions a callback cost
    // (bench/callgrind.py). Nothing here needs a value-dependent plan: the
    // admin filters that a partial index serves are written as literals.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// Brings the schema up to date; a spool from a newer version is refused.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies the migrations up to schema version `target`.
fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StorageError> {
    let found = version(conn)?;
    // A negative version is no version this build wrote: refused too.
    let current = usize::try_from(found).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(StorageError::NewerSchema {
            found,
            known: CURRENT_VERSION,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How often the cached delivery-style query has been compiled again.
    fn reprepares_after_three_uses(conn: &Connection) -> i32 {
        let sql = "SELECT seq FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2";
        for limit in [10_i64, 10, 7] {
            let mut statement = conn.prepare_cached(sql).unwrap();
            let rows: Vec<i64> = statement
                .query_map([0, limit], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows.len(), 2);
        }
        conn.prepare_cached(sql)
            .unwrap()
            .get_status(rusqlite::StatementStatus::RePrepare)
    }

    #[test]
    fn a_cached_statement_with_a_bound_limit_is_compiled_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("spool.db")).unwrap();
        configure(&conn).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO records (event_id, event_type, received_at_ms, body)
             VALUES ('a', 100, 1, '{}'), ('b', 100, 2, '{}')",
        )
        .unwrap();
        assert_eq!(reprepares_after_three_uses(&conn), 0);

        // The hazard itself, so that this test notices if SQLite stops
        // needing the setting: without it, every use compiles again.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, false)
            .unwrap();
        conn.flush_prepared_statement_cache();
        assert!(reprepares_after_three_uses(&conn) >= 2);
    }

    #[test]
    fn upgrading_from_version_5_names_each_acceptance_its_record_and_drops_the_random_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 5).unwrap();
        conn.execute_batch(
            "INSERT INTO records (event_id, event_type, received_at_ms, body, file_id)
                 VALUES ('a', 100, 1, '{}', 'f1'), ('b', 100, 2, '{}', 'f2');
             INSERT INTO accepted_ids (event_id, accepted_at_ms)
                 VALUES ('a', 1), ('b', 2), ('purged', 0);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let named: Vec<(String, Option<i64>)> = conn
            .prepare("SELECT event_id, seq FROM accepted_ids ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            named,
            [
                ("a".to_owned(), Some(1)),
                ("b".to_owned(), Some(2)),
                ("purged".to_owned(), None)
            ]
        );
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records'")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            !indexes.contains(&"records_by_event_id".to_owned())
                && !indexes.contains(&"records_by_file".to_owned())
                && indexes.contains(&"records_by_stream".to_owned()),
            "{indexes:?}"
        );
    }

    #[test]
    fn upgrading_from_version_1_keeps_the_dedup_memory_in_acceptance_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 1).unwrap();
        conn.execute_batch(
            "INSERT INTO seen (event_id, accepted_at_ms) VALUES ('late', 30), ('early', 10), ('mid', 20);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let ids: Vec<(String, i64)> = conn
            .prepare("SELECT event_id, accepted_at_ms FROM accepted_ids ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            ids,
            [
                ("early".to_owned(), 10),
                ("mid".to_owned(), 20),
                ("late".to_owned(), 30)
            ]
        );
        let seen_left: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE 'seen%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(seen_left, 0);
    }

    #[test]
    fn upgrading_from_version_3_keeps_stored_records_as_live_and_adds_reconciliation() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 3).unwrap();
        conn.execute_batch(
            "INSERT INTO records (event_id, event_type, received_at_ms, body)
             VALUES ('a', 100, 1, '{}');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        // NULL: stored before the column existed, which means live.
        let source: Option<String> = conn
            .query_row("SELECT source FROM records", [], |row| row.get(0))
            .unwrap();
        assert_eq!(source, None);
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name IN
                 ('reconcile_checkpoints', 'reconcile_gaps', 'reconcile_runs', 'leases')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 4);
    }

    #[test]
    fn upgrading_to_version_3_fills_the_filter_columns_from_the_bodies() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 2).unwrap();
        conn.execute_batch(
            r#"INSERT INTO records (event_id, event_type, received_at_ms, body) VALUES
               ('a', 100, 1, '{"stream":{"stream_id":"s1"},"recording":{"file_id":"f1"}}'),
               ('b', 1, 2, '{"stream":{"stream_id":"s2"}}');"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let columns: Vec<(Option<String>, Option<String>)> = conn
            .prepare("SELECT stream_id, file_id FROM records ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            columns,
            [
                (Some("s1".to_owned()), Some("f1".to_owned())),
                (Some("s2".to_owned()), None)
            ]
        );
    }
}
