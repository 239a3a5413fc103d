//! The dedup index: which event ids the spool accepted, when, and whether a
//! new callback repeats one of them within the dedup window; and, from the
//! same entries, which record holds an event id (the spool keeps no index on
//! disk for that).
//!
//! On disk the ids sit in `accepted_ids`, appended in acceptance order, so
//! storing one touches only the table's last page; each row also names the
//! record it stored (`seq`). The lookup structure is in memory (see
//! [`super::fingerprints`]), rebuilt from that table when the spool opens: a
//! random-keyed B-tree on disk had dirtied one leaf page per callback, about
//! two thirds of the pages every group commit wrote (bench/BENCHMARKS.md).
//!
//! Changes follow commits (see [`FingerprintTable`]): callbacks refused with
//! 503 while the disk is full leave no entries behind, and the index never
//! forgets an id whose row is still in the database.
//!
//! Memory: about 10–20 bytes per id accepted within
//! `spool.dedup_window_secs`.

use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};

use super::fingerprints::{Fingerprint, FingerprintTable};

/// Ids accepted recently, by fingerprint.
pub(super) struct DedupIndex {
    /// `accepted_ids` rows by event id.
    table: FingerprintTable,
}

impl DedupIndex {
    /// Reads every id in `accepted_ids` into a new index.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let started = Instant::now();
        let mut index = Self::empty();
        let mut statement = conn.prepare("SELECT id, event_id FROM accepted_ids ORDER BY id")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let event_id: String = row.get(1)?;
            index.table.insert_committed(&event_id, row.get(0)?);
        }
        // Start-up time grows with the window's ids (~0.25 s per million here).
        tracing::info!(
            entries = index.len(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "dedup index loaded"
        );
        Ok(index)
    }

    /// An index that holds nothing, for handles that never accept (the
    /// admin commands): loading the real one would cost time and memory.
    pub(super) fn empty() -> Self {
        Self {
            table: FingerprintTable::new(Fingerprint::HexDigest),
        }
    }

    /// Number of ids held (committed ones).
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The `accepted_ids` rows of `event_id` that this connection sees (a
    /// row stored earlier in the same open transaction counts): acceptance
    /// time and record seq of each (no seq for rows older than the column).
    fn acceptances(
        &self,
        conn: &Connection,
        event_id: &str,
    ) -> rusqlite::Result<Vec<(i64, Option<i64>)>> {
        let mut found = Vec::new();
        for candidate in self.table.candidates(event_id) {
            let stored: Option<(String, i64, Option<i64>)> = conn
                .prepare_cached(
                    "SELECT event_id, accepted_at_ms, seq FROM accepted_ids WHERE id = ?1",
                )?
                .query_row([candidate], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            if let Some((id, at, seq)) = stored
                && id == event_id
            {
                found.push((at, seq));
            }
        }
        Ok(found)
    }

    /// Whether `event_id` was accepted at or after `since_ms`, as far as
    /// this connection sees.
    pub(super) fn accepted_since(
        &self,
        conn: &Connection,
        event_id: &str,
        since_ms: i64,
    ) -> rusqlite::Result<bool> {
        Ok(self
            .acceptances(conn, event_id)?
            .iter()
            .any(|(at, _)| *at >= since_ms))
    }

    /// The seq of the newest record stored for `event_id` that the index
    /// knows of; `None` when the id is not held (older than the window, or
    /// accepted before records were named here).
    pub(super) fn latest_seq(
        &self,
        conn: &Connection,
        event_id: &str,
    ) -> rusqlite::Result<Option<i64>> {
        Ok(self
            .acceptances(conn, event_id)?
            .into_iter()
            .filter_map(|(_, seq)| seq)
            .max())
    }

    /// Stores that `event_id` was accepted at `now_ms` as record `seq`,
    /// inside the writer's transaction; the index learns it when that commits.
    pub(super) fn record(
        &mut self,
        conn: &Connection,
        event_id: &str,
        now_ms: i64,
        seq: i64,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO accepted_ids (event_id, accepted_at_ms, seq) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![event_id, now_ms, seq])?;
        self.table.stage_insert(event_id, conn.last_insert_rowid());
        Ok(())
    }

    /// Forgets up to `limit` of the oldest ids accepted before `before_ms`,
    /// inside the writer's transaction; the index lets go of them when that
    /// commits. Returns how many went. Rows are in acceptance order, so it stops at
    /// the first one that is still young.
    pub(super) fn prune(
        &mut self,
        conn: &Connection,
        before_ms: i64,
        limit: usize,
    ) -> rusqlite::Result<usize> {
        let oldest: Vec<(i64, String, i64)> = conn
            .prepare_cached(
                "SELECT id, event_id, accepted_at_ms FROM accepted_ids ORDER BY id LIMIT ?1",
            )?
            .query_map([limit as i64], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let expired: Vec<&(i64, String, i64)> = oldest
            .iter()
            .take_while(|(_, _, at)| *at < before_ms)
            .collect();
        let Some((last, _, _)) = expired.last() else {
            return Ok(0);
        };
        conn.prepare_cached("DELETE FROM accepted_ids WHERE id <= ?1")?
            .execute([last])?;
        for (row, event_id, _) in &expired {
            self.table.stage_removal(event_id, *row);
        }
        Ok(expired.len())
    }

    /// The open transaction committed: its staged changes take effect.
    pub(super) fn apply_staged(&mut self) {
        self.table.apply_staged();
    }

    /// The open transaction rolled back: its staged changes never happened.
    pub(super) fn discard_staged(&mut self) {
        self.table.discard_staged();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool_connection() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn
    }

    /// Records `event_id` as a committed write (the test connection is in
    /// autocommit mode, so the row is committed when the statement ends).
    fn store(index: &mut DedupIndex, conn: &Connection, event_id: &str, at_ms: i64) {
        index.record(conn, event_id, at_ms, at_ms * 10).unwrap();
        index.apply_staged();
    }

    /// Two distinct ids with the same fingerprint (same first 16 digits).
    const TWIN_A: &str = "0123456789abcdefaaaaaaaaaaaaaaaa";
    const TWIN_B: &str = "0123456789abcdefbbbbbbbbbbbbbbbb";

    #[test]
    fn ids_sharing_a_fingerprint_are_never_taken_for_each_other() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        store(&mut index, &conn, TWIN_A, 1_000);
        assert!(index.accepted_since(&conn, TWIN_A, 0).unwrap());
        assert!(!index.accepted_since(&conn, TWIN_B, 0).unwrap());
        store(&mut index, &conn, TWIN_B, 1_000);
        // Both are held, each recognised by its own row.
        assert!(index.accepted_since(&conn, TWIN_B, 0).unwrap());
        assert!(index.accepted_since(&conn, TWIN_A, 0).unwrap());
        assert!(
            !index
                .accepted_since(&conn, "0123456789abcdefcccccccccccccccc", 0)
                .unwrap()
        );
    }

    #[test]
    fn an_acceptance_older_than_the_window_does_not_count() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        store(&mut index, &conn, "aa11", 1_000);
        assert!(index.accepted_since(&conn, "aa11", 1_000).unwrap());
        assert!(!index.accepted_since(&conn, "aa11", 1_001).unwrap());
        assert!(!index.accepted_since(&conn, "bb22", 0).unwrap());
    }

    #[test]
    fn a_rolled_back_insert_never_enters_the_index() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        store(&mut index, &conn, "kept", 1_000);
        conn.execute_batch("BEGIN").unwrap();
        index.record(&conn, "rolled-back", 1_000, 1).unwrap();
        // Seen inside its own transaction (a repeat in the same batch)...
        assert!(index.accepted_since(&conn, "rolled-back", 0).unwrap());
        conn.execute_batch("ROLLBACK").unwrap();
        index.discard_staged();
        // ...and gone with it, leaving nothing in memory.
        assert_eq!(index.len(), 1);
        assert!(!index.accepted_since(&conn, "rolled-back", 0).unwrap());
        // Its row id is reused by the next id, which must not be confused with it.
        store(&mut index, &conn, "next", 1_000);
        assert!(!index.accepted_since(&conn, "rolled-back", 0).unwrap());
        assert!(index.accepted_since(&conn, "next", 0).unwrap());
        assert!(index.accepted_since(&conn, "kept", 0).unwrap());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_rolled_back_prune_keeps_its_entries() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        store(&mut index, &conn, "old", 1_000);
        conn.execute_batch("BEGIN").unwrap();
        assert_eq!(index.prune(&conn, 2_000, 10).unwrap(), 1);
        conn.execute_batch("ROLLBACK").unwrap();
        index.discard_staged();
        assert_eq!(index.len(), 1);
        assert!(index.accepted_since(&conn, "old", 0).unwrap());
        // A prune that commits does let go of it.
        assert_eq!(index.prune(&conn, 2_000, 10).unwrap(), 1);
        index.apply_staged();
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn pruning_forgets_old_ids_but_keeps_a_newer_acceptance_of_the_same_id() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        store(&mut index, &conn, "old", 1_000);
        store(&mut index, &conn, "again", 1_000);
        store(&mut index, &conn, "again", 5_000);
        store(&mut index, &conn, "young", 5_000);
        assert_eq!(index.prune(&conn, 2_000, 1).unwrap(), 1);
        assert_eq!(index.prune(&conn, 2_000, 10).unwrap(), 1);
        assert_eq!(index.prune(&conn, 2_000, 10).unwrap(), 0);
        index.apply_staged();
        assert!(!index.accepted_since(&conn, "old", 0).unwrap());
        assert!(index.accepted_since(&conn, "again", 0).unwrap());
        assert!(index.accepted_since(&conn, "young", 0).unwrap());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_reloaded_index_knows_every_acceptance_that_was_stored() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        store(&mut index, &conn, "a", 1_000);
        store(&mut index, &conn, "a", 9_000);
        store(&mut index, &conn, "b", 1_000);
        let reloaded = DedupIndex::load(&conn).unwrap();
        assert_eq!(reloaded.len(), 3);
        assert!(reloaded.accepted_since(&conn, "a", 5_000).unwrap());
        assert!(reloaded.accepted_since(&conn, "b", 1_000).unwrap());
        assert!(!reloaded.accepted_since(&conn, "b", 1_001).unwrap());
    }

    #[test]
    fn row_ids_are_restored_from_their_low_bits_across_a_32_bit_boundary() {
        let conn = spool_connection();
        // Start the table's ids just below 2^32 so they cross it.
        conn.execute(
            "INSERT INTO accepted_ids (id, event_id, accepted_at_ms, seq) VALUES (?1, 'first', 1, 1)",
            [(1_i64 << 32) - 2],
        )
        .unwrap();
        let mut index = DedupIndex::load(&conn).unwrap();
        for n in 0..4 {
            store(&mut index, &conn, &format!("id{n}"), 1);
        }
        assert!(index.accepted_since(&conn, "first", 0).unwrap());
        for n in 0..4 {
            assert!(index.accepted_since(&conn, &format!("id{n}"), 0).unwrap());
        }
    }

    #[test]
    fn the_latest_record_of_an_id_is_found_among_its_acceptances() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        store(&mut index, &conn, TWIN_A, 1_000);
        store(&mut index, &conn, TWIN_A, 9_000);
        store(&mut index, &conn, TWIN_B, 5_000);
        // An acceptance stored before rows named their record.
        conn.execute(
            "INSERT INTO accepted_ids (event_id, accepted_at_ms) VALUES ('legacy', 1)",
            [],
        )
        .unwrap();
        let index = DedupIndex::load(&conn).unwrap();
        assert_eq!(index.latest_seq(&conn, TWIN_A).unwrap(), Some(90_000));
        assert_eq!(index.latest_seq(&conn, TWIN_B).unwrap(), Some(50_000));
        assert_eq!(index.latest_seq(&conn, "legacy").unwrap(), None);
        assert_eq!(index.latest_seq(&conn, "unknown").unwrap(), None);
    }
}
