//! The dedup index: which event ids the spool accepted, when, and whether a
//! new callback repeats one of them within the dedup window.
//!
//! On disk the ids sit in `accepted_ids`, appended in acceptance order, so
//! storing one touches only the table's last page. The lookup structure is in
//! memory, rebuilt from that table when the spool opens: a map from an 8-byte
//! fingerprint of the event id to the row that holds it. A random-keyed
//! B-tree on disk had dirtied one leaf page per callback, about two thirds of
//! the pages every group commit wrote (bench/BENCHMARKS.md).
//!
//! A fingerprint match is only a candidate: the row is read back and its full
//! event id and time compared, so two ids sharing a fingerprint are never
//! taken for each other, and entries left behind by a rolled-back batch point
//! at rows that are gone or hold another id, which makes them harmless.
//!
//! Memory: 9 bytes per slot (a 32-bit piece of the fingerprint, the low 32
//! bits of the row id, one control byte), one slot per id in the window at a
//! load between 7/16 and 7/8: about 10–20 bytes per id accepted within
//! `spool.dedup_window_secs`. The table is split into shards so that growing
//! it never holds two copies of the whole thing at once.

use std::time::Instant;

use hashbrown::HashTable;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// Independent tables; a resize copies one of them, not the whole index.
const SHARDS: usize = 64;

/// One accepted id: 32 bits of its fingerprint (another 6 pick the shard)
/// and the low 32 bits of its row id. Ids that share these are told apart
/// by reading the rows, so the table may hold several with the same `print`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    print: u32,
    row: u32,
}

/// Where an id's entries live, derived from its event id.
#[derive(Debug, Clone, Copy)]
struct Slot {
    shard: usize,
    print: u32,
}

impl Slot {
    fn of(event_id: &str) -> Self {
        let print = fingerprint(event_id);
        Self {
            shard: usize::from(print[4]) % SHARDS,
            print: u32::from_le_bytes([print[0], print[1], print[2], print[3]]),
        }
    }

    fn entry(self, row: i64) -> Entry {
        Entry {
            print: self.print,
            row: low_bits(row),
        }
    }
}

/// The table's hash of an entry: its print, spread over 64 bits (the print
/// is already uniform; the multiplication fills the bits hashbrown uses).
fn hash(print: u32) -> u64 {
    u64::from(print).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Ids accepted recently, by fingerprint.
pub(super) struct DedupIndex {
    shards: Box<[HashTable<Entry>]>,
    /// The highest row id stored so far; [`DedupIndex::row_of`] restores
    /// full row ids from their low 32 bits relative to it (live rows are
    /// never 2^32 apart).
    newest_row: i64,
}

impl DedupIndex {
    /// Reads every id in `accepted_ids` into a new index.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let started = Instant::now();
        let mut index = Self {
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
            newest_row: 0,
        };
        let mut statement = conn.prepare("SELECT id, event_id FROM accepted_ids ORDER BY id")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            // In id order, which leaves `newest_row` at the highest.
            let event_id: String = row.get(1)?;
            index.insert(&event_id, row.get(0)?);
        }
        // Start-up time grows with the window's ids (~0.25 s per million here).
        tracing::info!(
            entries = index.len(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "dedup index loaded"
        );
        Ok(index)
    }

    /// Number of ids held.
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// Whether `event_id` was accepted at or after `since_ms`, as far as
    /// this connection sees (a row stored earlier in the same open
    /// transaction counts).
    pub(super) fn accepted_since(
        &self,
        conn: &Connection,
        event_id: &str,
        since_ms: i64,
    ) -> rusqlite::Result<bool> {
        let slot = Slot::of(event_id);
        let candidates = self.shards[slot.shard]
            .iter_hash(hash(slot.print))
            .filter(|entry| entry.print == slot.print);
        for entry in candidates {
            let stored: Option<(String, i64)> = conn
                .prepare_cached("SELECT event_id, accepted_at_ms FROM accepted_ids WHERE id = ?1")?
                .query_row([self.row_of(entry.row)], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            if stored.is_some_and(|(id, at)| id == event_id && at >= since_ms) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores that `event_id` was accepted at `now_ms`. Runs inside the
    /// caller's transaction; if that rolls back, the entry added here points
    /// at a row that no longer holds this id, which lookups tell apart.
    pub(super) fn record(
        &mut self,
        conn: &Connection,
        event_id: &str,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached("INSERT INTO accepted_ids (event_id, accepted_at_ms) VALUES (?1, ?2)")?
            .execute(params![event_id, now_ms])?;
        self.insert(event_id, conn.last_insert_rowid());
        Ok(())
    }

    /// Forgets up to `limit` of the oldest ids accepted before `before_ms`.
    /// Returns how many went. Rows are in acceptance order, so it stops at
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
            let slot = Slot::of(event_id);
            let entry = slot.entry(*row);
            if let Ok(found) = self.shards[slot.shard].find_entry(hash(slot.print), |e| *e == entry)
            {
                found.remove();
            }
        }
        Ok(expired.len())
    }

    fn insert(&mut self, event_id: &str, row: i64) {
        self.newest_row = row;
        let slot = Slot::of(event_id);
        self.shards[slot.shard].insert_unique(hash(slot.print), slot.entry(row), |e| hash(e.print));
    }

    /// The full row id whose low 32 bits are `low`: the nearest at or below
    /// the newest row. (An entry from a rolled-back row above it maps to an
    /// id that does not exist, which reads as "not accepted".)
    fn row_of(&self, low: u32) -> i64 {
        self.newest_row - i64::from(low_bits(self.newest_row).wrapping_sub(low))
    }
}

fn low_bits(row: i64) -> u32 {
    (row & 0xFFFF_FFFF) as u32
}

/// The first 8 bytes of an event id's hash. Event ids are hex digests already: their first 16 digits are the
/// fingerprint. Anything else (ids are not validated here) is hashed.
fn fingerprint(event_id: &str) -> [u8; 8] {
    let mut print = [0; 8];
    let decoded = event_id
        .as_bytes()
        .get(..16)
        .is_some_and(|digits| hex::decode_to_slice(digits, &mut print).is_ok());
    if !decoded {
        print.copy_from_slice(&Sha256::digest(event_id.as_bytes())[..8]);
    }
    print
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool_connection() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn
    }

    /// Two distinct ids with the same fingerprint (same first 16 digits).
    const TWIN_A: &str = "0123456789abcdefaaaaaaaaaaaaaaaa";
    const TWIN_B: &str = "0123456789abcdefbbbbbbbbbbbbbbbb";

    #[test]
    fn ids_sharing_a_fingerprint_are_never_taken_for_each_other() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        assert_eq!(fingerprint(TWIN_A), fingerprint(TWIN_B));
        index.record(&conn, TWIN_A, 1_000).unwrap();
        assert!(index.accepted_since(&conn, TWIN_A, 0).unwrap());
        assert!(!index.accepted_since(&conn, TWIN_B, 0).unwrap());
        index.record(&conn, TWIN_B, 1_000).unwrap();
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
        index.record(&conn, "aa11", 1_000).unwrap();
        assert!(index.accepted_since(&conn, "aa11", 1_000).unwrap());
        assert!(!index.accepted_since(&conn, "aa11", 1_001).unwrap());
        assert!(!index.accepted_since(&conn, "bb22", 0).unwrap());
    }

    #[test]
    fn entries_from_a_rolled_back_transaction_match_nothing() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        index.record(&conn, "kept", 1_000).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        index.record(&conn, "rolled-back", 1_000).unwrap();
        assert!(index.accepted_since(&conn, "rolled-back", 0).unwrap());
        conn.execute_batch("ROLLBACK").unwrap();
        assert!(!index.accepted_since(&conn, "rolled-back", 0).unwrap());
        // Its row id is reused by the next id, which must not be confused with it.
        index.record(&conn, "next", 1_000).unwrap();
        assert!(!index.accepted_since(&conn, "rolled-back", 0).unwrap());
        assert!(index.accepted_since(&conn, "next", 0).unwrap());
        assert!(index.accepted_since(&conn, "kept", 0).unwrap());
    }

    #[test]
    fn pruning_forgets_old_ids_but_keeps_a_newer_acceptance_of_the_same_id() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        index.record(&conn, "old", 1_000).unwrap();
        index.record(&conn, "again", 1_000).unwrap();
        index.record(&conn, "again", 5_000).unwrap();
        index.record(&conn, "young", 5_000).unwrap();
        assert_eq!(index.prune(&conn, 2_000, 1).unwrap(), 1);
        assert_eq!(index.prune(&conn, 2_000, 10).unwrap(), 1);
        assert_eq!(index.prune(&conn, 2_000, 10).unwrap(), 0);
        assert!(!index.accepted_since(&conn, "old", 0).unwrap());
        assert!(index.accepted_since(&conn, "again", 0).unwrap());
        assert!(index.accepted_since(&conn, "young", 0).unwrap());
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_reloaded_index_knows_every_acceptance_that_was_stored() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        index.record(&conn, "a", 1_000).unwrap();
        index.record(&conn, "a", 9_000).unwrap();
        index.record(&conn, "b", 1_000).unwrap();
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
            "INSERT INTO accepted_ids (id, event_id, accepted_at_ms) VALUES (?1, 'first', 1)",
            [(1_i64 << 32) - 2],
        )
        .unwrap();
        let mut index = DedupIndex::load(&conn).unwrap();
        for n in 0..4 {
            index.record(&conn, &format!("id{n}"), 1).unwrap();
        }
        assert!(index.newest_row > 1 << 32);
        assert!(index.accepted_since(&conn, "first", 0).unwrap());
        for n in 0..4 {
            assert!(index.accepted_since(&conn, &format!("id{n}"), 0).unwrap());
        }
    }
}
