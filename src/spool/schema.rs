//! The spool's tables and their migrations, versioned by SQLite's `user_version`.

use rusqlite::Connection;

/// Each entry upgrades the schema by one version; never edit a shipped one.
const MIGRATIONS: &[&str] = &[r"
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
"];

/// Settings every connection needs. `synchronous = FULL` makes a commit
/// durable across power loss, not only across a crash of this process.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // When the WAL restarts, give back what a burst made it grow beyond 64 MiB.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    Ok(())
}

/// Brings the schema up to date; a spool from a newer version is refused.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), String> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|err| err.to_string())?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(format!(
            "spool schema version {current} is newer than this recordhook understands ({})",
            MIGRATIONS.len()
        ));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(|err| err.to_string())?;
        tx.execute_batch(migration).map_err(|err| err.to_string())?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(|err| err.to_string())?;
        tx.commit().map_err(|err| err.to_string())?;
    }
    Ok(())
}
