//! The spool's in-memory indexes, changed together inside the writer's
//! transactions: the dedup index (event ids, and the records they name) and
//! the file id index. See [`super::fingerprints`] for why they are not
//! B-trees on disk.

use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use super::dedup::DedupIndex;
use super::files::FileIndex;

/// Both in-memory indexes; the writer holds them for a whole transaction.
pub(super) struct MemoryIndexes {
    /// Event ids accepted within the dedup window.
    pub dedup: DedupIndex,
    /// File ids of the records in the spool.
    pub files: FileIndex,
}

impl MemoryIndexes {
    /// Rebuilds both from the database.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            dedup: DedupIndex::load(conn)?,
            files: FileIndex::load(conn)?,
        })
    }

    /// Indexes that hold nothing, for admin handles (they never write
    /// records, and look records up by scanning).
    pub(super) fn empty() -> Self {
        Self {
            dedup: DedupIndex::empty(),
            files: FileIndex::empty(),
        }
    }

    /// The open transaction committed: the staged changes take effect.
    pub(super) fn apply_staged(&mut self) {
        self.dedup.apply_staged();
        self.files.apply_staged();
    }

    /// The open transaction rolled back: its staged changes never happened.
    pub(super) fn discard_staged(&mut self) {
        self.dedup.discard_staged();
        self.files.discard_staged();
    }
}

/// The seq of the newest record with `event_id`. From the dedup index when
/// `indexes` are given (a server's handle) and name a record that is still
/// there; otherwise by scanning the records from the newest back, which finds
/// a recent record soon but reads every row to say that one is missing (ids
/// outside the dedup window, admin handles).
pub(super) fn newest_record_of(
    conn: &Connection,
    indexes: Option<&Mutex<MemoryIndexes>>,
    event_id: &str,
) -> rusqlite::Result<Option<i64>> {
    if let Some(indexes) = indexes {
        let indexed = indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dedup
            .latest_seq(conn, event_id)?;
        if let Some(seq) = indexed {
            let present = conn
                .prepare_cached("SELECT 1 FROM records WHERE seq = ?1 AND event_id = ?2")?
                .query_row(params![seq, event_id], |_| Ok(()))
                .optional()?;
            if present.is_some() {
                return Ok(Some(seq));
            }
        }
    }
    conn.prepare_cached("SELECT seq FROM records WHERE event_id = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row([event_id], |row| row.get(0))
        .optional()
}

/// The seqs of the records that may carry `file_id` (a superset, ascending),
/// when `indexes` are given; `None` means the caller must scan.
pub(super) fn file_candidates(
    indexes: Option<&Mutex<MemoryIndexes>>,
    file_id: &str,
) -> Option<Vec<i64>> {
    indexes.map(|indexes| {
        indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .candidates(file_id)
    })
}
