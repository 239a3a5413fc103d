//! The PostgreSQL spool's tables and their migrations, applied at start-up
//! under an advisory lock so replicas started together migrate once.
//!
//! Each migration says from which schema version on this recordhook's code
//! can still run against it (`compatible_from`). A replica finding a newer
//! schema runs on when the newer schema says it is compatible with it: that
//! is what lets an old and a new replica run side by side during a rolling
//! upgrade. A migration that breaks old code raises `compatible_from`, and
//! then old replicas refuse to start (and must be stopped first).

use tokio_postgres::Client;

use crate::spool::StorageError;

/// Key of the session advisory lock held while migrating; any fixed number
/// no other application on the database uses ("rhookmig" in ASCII).
const MIGRATION_LOCK: i64 = 0x7268_6f6f_6b6d_6967;

/// One schema version: its SQL and the oldest code version that runs on it.
struct Migration {
    sql: &'static str,
    compatible_from: i32,
}

/// Each entry upgrades the schema by one version; never edit a shipped one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        compatible_from: 1,
        sql: r"
    -- One row per accepted callback; `body` is the record as sinks receive it.
    -- Times are Unix ms on the database's clock (see `Clock`).
    CREATE TABLE records (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL,
        event_type BIGINT NOT NULL,
        received_at_ms BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX records_by_event_id ON records (event_id);

    -- Event ids accepted within the dedup window. The primary key makes
    -- deduplication atomic across replicas: two inserts of one id cannot
    -- both succeed, whichever replica they come from.
    CREATE TABLE accepted_ids (
        event_id TEXT PRIMARY KEY,
        accepted_at_ms BIGINT NOT NULL
    );
    CREATE INDEX accepted_ids_by_time ON accepted_ids (accepted_at_ms);

    -- The configured sinks. `event_types` NULL: every type. A single-writer
    -- sink (the file sink) is driven by the replica holding its lease;
    -- `fence` grows each time the lease changes hands.
    CREATE TABLE sinks (
        sink TEXT PRIMARY KEY,
        event_types BIGINT[],
        single_writer BOOLEAN NOT NULL DEFAULT FALSE,
        holder TEXT,
        fence BIGINT NOT NULL DEFAULT 0,
        lease_until_ms BIGINT
    );

    -- One row per (record, sink that takes its type), written with the
    -- record. `last_attempt_ms` NULL: not tried yet (fresh). A claimed row
    -- carries its claim's token until its lease ends; settling needs the
    -- token, so a replica whose claim was taken over cannot settle.
    CREATE TABLE deliveries (
        seq BIGINT NOT NULL REFERENCES records (seq) ON DELETE CASCADE,
        sink TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'delivered', 'dead', 'purged')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL DEFAULT 0,
        last_attempt_ms BIGINT,
        last_error TEXT,
        claim_token BIGINT,
        lease_until_ms BIGINT,
        PRIMARY KEY (seq, sink)
    );
    CREATE INDEX deliveries_fresh ON deliveries (sink, seq)
        WHERE state = 'pending' AND last_attempt_ms IS NULL;
    CREATE INDEX deliveries_due ON deliveries (sink, next_attempt_ms)
        WHERE state = 'pending' AND last_attempt_ms IS NOT NULL;
    CREATE INDEX deliveries_dead ON deliveries (sink, seq) WHERE state = 'dead';

    -- Each replica's last successful readiness write.
    CREATE TABLE replicas (
        replica TEXT PRIMARY KEY,
        seen_ms BIGINT NOT NULL
    );
",
    },
    Migration {
        // Nullable columns: version 1's code still inserts without them.
        compatible_from: 1,
        sql: r"
    -- What the admin API filters on, as indexed columns; existing rows are
    -- filled from their bodies.
    ALTER TABLE records ADD COLUMN stream_id TEXT, ADD COLUMN file_id TEXT;
    UPDATE records SET stream_id = body::json -> 'stream' ->> 'stream_id',
                       file_id = body::json -> 'recording' ->> 'file_id';
    CREATE INDEX records_by_stream ON records (stream_id, seq);
    CREATE INDEX records_by_file ON records (file_id, seq);
    CREATE INDEX records_by_type ON records (event_type, seq);
    CREATE INDEX records_by_received ON records (received_at_ms);
",
    },
    Migration {
        compatible_from: 1,
        sql: r"
    -- A time window's last record straight from the index (see browse.rs).
    CREATE INDEX records_by_received_seq ON records (received_at_ms, seq);
    DROP INDEX records_by_received;
",
    },
    Migration {
        // A nullable column: older code stores live records without it.
        compatible_from: 1,
        sql: r"
    -- How each record reached recordhook (`live`, `reconciled`); NULL for
    -- records stored before the column existed, or by older replicas, all
    -- live. Reconciled records are few, and the admin API filters on them:
    -- a partial index finds them without walking every live record.
    ALTER TABLE records ADD COLUMN source TEXT;
    CREATE INDEX records_reconciled ON records (seq) WHERE source = 'reconciled';
",
    },
    Migration {
        // New tables: older code never touches them.
        compatible_from: 1,
        sql: r"
    -- Reconciliation's bookkeeping (see spool/reconciliation.rs). Per
    -- stream and event type: Tencent's records of the callbacks CSS sent
    -- were fully checked up to `checked_until_ms` (Tencent's time).
    CREATE TABLE reconcile_checkpoints (
        stream TEXT NOT NULL,
        event_type BIGINT NOT NULL,
        checked_until_ms BIGINT NOT NULL,
        PRIMARY KEY (stream, event_type)
    );

    -- Callbacks Tencent says were sent that could not be recovered; one row
    -- per callback however many runs (on whichever replica) find it
    -- (`excerpt_digest`: SHA-256 of `request_excerpt`, hex).
    CREATE TABLE reconcile_gaps (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        stream TEXT NOT NULL,
        event_type BIGINT NOT NULL,
        event_time_ms BIGINT NOT NULL,
        excerpt_digest TEXT NOT NULL,
        result_code BIGINT,
        request_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        request_excerpt TEXT NOT NULL,
        found_at_ms BIGINT NOT NULL,
        UNIQUE (stream, event_type, event_time_ms, excerpt_digest)
    );
    CREATE INDEX reconcile_gaps_by_found ON reconcile_gaps (found_at_ms, id);

    -- The latest reconciliation runs (starting one deletes the oldest).
    CREATE TABLE reconcile_runs (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        holder TEXT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        finished_at_ms BIGINT,
        window_start_ms BIGINT NOT NULL,
        window_end_ms BIGINT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        report TEXT NOT NULL
    );

    -- Named leases: which replica does a job one replica at a time may do
    -- (reconciliation), until when on the database's clock.
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        lease_until_ms BIGINT NOT NULL
    );
",
    },
    Migration {
        // Older code still runs: it never relied on the foreign key when
        // storing (it writes a record and its deliveries in one statement),
        // and its purge of records still takes their deliveries along, by
        // the trigger below instead of the cascade.
        compatible_from: 1,
        sql: r"
    -- The foreign key cost every stored delivery row a lookup and a row lock
    -- on its record (a trigger per row, a WAL record per record); the
    -- storing statement writes both rows itself, so it guarded nothing.
    -- Purging records deletes their deliveries instead, by one statement per
    -- purge rather than one cascade per record.
    ALTER TABLE deliveries DROP CONSTRAINT deliveries_seq_fkey;
    CREATE FUNCTION recordhook_purge_deliveries() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM deliveries d USING purged p WHERE d.seq = p.seq;
            RETURN NULL;
        END
    $$;
    CREATE TRIGGER records_purge_deliveries AFTER DELETE ON records
        REFERENCING OLD TABLE AS purged
        FOR EACH STATEMENT EXECUTE FUNCTION recordhook_purge_deliveries();

    -- A delivery row is written three times (stored, claimed, settled).
    -- With pages filled only half, the later versions fit on the row's own
    -- page: the claim stays a HOT update and the settle needs no new page
    -- (a full page cost each settle a lock record and a new page, and
    -- bloated the table). Applies to pages filled from now on.
    ALTER TABLE deliveries SET (fillfactor = 50);
",
    },
    Migration {
        // Older code runs on: it stores as before, and its own look-ups by
        // event id (admin API only) read `records` without the index, which
        // is slower and gives the same answers.
        compatible_from: 1,
        sql: r"
    -- A record's event id is found through `accepted_ids` instead (see
    -- `newest_seq_of` in mod.rs): its `accepted_at_ms` is the record's
    -- `received_at_ms`, which `records_by_received_seq` finds. This index
    -- cost every stored record an insert at a random place of a B-tree of
    -- 64-character keys, the same work `accepted_ids` already does.
    DROP INDEX records_by_event_id;
",
    },
];

/// The schema version this build creates and expects.
pub(super) const CURRENT_VERSION: i32 = MIGRATIONS.len() as i32;

/// The schema found in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    /// Its version (0: none yet).
    pub version: i32,
    /// The oldest code version that runs on it.
    pub compatible_from: i32,
}

impl Found {
    /// Whether this build can run on it (without migrating).
    pub fn runs_here(self) -> bool {
        self.version == CURRENT_VERSION
            || (self.version > CURRENT_VERSION && self.compatible_from <= CURRENT_VERSION)
    }
}

/// The schema version of the database `client` is connected to.
pub(super) async fn found(client: &Client) -> Result<Found, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('recordhook_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(Found {
            version: 0,
            compatible_from: 0,
        });
    }
    let row = client
        .query_opt(
            "SELECT version, compatible_from FROM recordhook_schema",
            &[],
        )
        .await?;
    Ok(row.map_or(
        Found {
            version: 0,
            compatible_from: 0,
        },
        |row| Found {
            version: row.get(0),
            compatible_from: row.get(1),
        },
    ))
}

/// Brings the schema up to date, holding the migration lock meanwhile (on
/// `client`'s session: released when that connection closes, even if this
/// process dies mid-way). A schema too new for this build is refused.
pub(super) async fn migrate(client: &mut Client) -> Result<Found, StorageError> {
    migrate_to(client, MIGRATIONS.len()).await
}

async fn migrate_to(client: &mut Client, target: usize) -> Result<Found, StorageError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let outcome = apply(client, target).await;
    // Released on disconnect anyway; unlock now so a long-lived session
    // (the tests') does not keep others waiting.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    outcome
}

async fn apply(client: &mut Client, target: usize) -> Result<Found, StorageError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS recordhook_schema (
                 version INTEGER NOT NULL,
                 compatible_from INTEGER NOT NULL
             )",
        )
        .await?;
    let mut found = found(client).await?;
    if found.version > CURRENT_VERSION {
        return if found.runs_here() {
            Ok(found)
        } else {
            Err(StorageError::IncompatibleSchema {
                found: found.version,
                compatible_from: found.compatible_from,
                current: CURRENT_VERSION,
            })
        };
    }
    let start = usize::try_from(found.version).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().take(target).skip(start) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql).await?;
        tx.execute("DELETE FROM recordhook_schema", &[]).await?;
        tx.execute(
            "INSERT INTO recordhook_schema (version, compatible_from) VALUES ($1, $2)",
            &[&version, &migration.compatible_from],
        )
        .await?;
        tx.commit().await?;
        found = Found {
            version,
            compatible_from: migration.compatible_from,
        };
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_runs_here_only_when_it_says_it_is_compatible() {
        let newer = |compatible_from| Found {
            version: CURRENT_VERSION + 1,
            compatible_from,
        };
        assert!(newer(CURRENT_VERSION).runs_here());
        assert!(!newer(CURRENT_VERSION + 1).runs_here());
        assert!(
            Found {
                version: CURRENT_VERSION,
                compatible_from: 1
            }
            .runs_here()
        );
        assert!(
            !Found {
                version: 0,
                compatible_from: 0
            }
            .runs_here()
        );
    }
}
