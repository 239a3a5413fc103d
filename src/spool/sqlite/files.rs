//! Which records carry a file id, held in memory for the admin API's
//! `file_id` filter: file ids are random keys, and a B-tree index on them
//! cost a page write per recording callback (see [`super::fingerprints`]).
//!
//! Rebuilt from `records` when the spool opens, told of each stored record
//! and each purged one inside the writer's transaction, so it holds exactly
//! the records that are in the database. Memory: about 10–20 bytes per
//! record with a file id (recording callbacks), for as long as retention
//! keeps the record.

use std::time::Instant;

use rusqlite::Connection;

use super::fingerprints::{Fingerprint, FingerprintTable};

/// Record seqs by file id.
pub(super) struct FileIndex {
    table: FingerprintTable,
}

impl FileIndex {
    /// Reads the file id of every record into a new index.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let started = Instant::now();
        let mut index = Self::empty();
        let mut statement =
            conn.prepare("SELECT seq, file_id FROM records WHERE file_id IS NOT NULL")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let file_id: String = row.get(1)?;
            index.table.insert_committed(&file_id, row.get(0)?);
        }
        tracing::info!(
            entries = index.table.len(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "file id index loaded"
        );
        Ok(index)
    }

    /// An index that holds nothing, for handles that never write records
    /// (the admin commands), which filter by scanning instead.
    pub(super) fn empty() -> Self {
        Self {
            table: FingerprintTable::new(Fingerprint::Hashed),
        }
    }

    /// Seqs of the records that may carry `file_id`, ascending: a superset,
    /// so the query that reads them must still compare the file id.
    pub(super) fn candidates(&self, file_id: &str) -> Vec<i64> {
        let mut seqs = self.table.candidates(file_id);
        seqs.sort_unstable();
        seqs
    }

    /// Stages record `seq`, stored with `file_id` by the open transaction.
    pub(super) fn stored(&mut self, file_id: &str, seq: i64) {
        self.table.stage_insert(file_id, seq);
    }

    /// Stages the removal of record `seq`, deleted by the open transaction.
    pub(super) fn deleted(&mut self, file_id: &str, seq: i64) {
        self.table.stage_removal(file_id, seq);
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
