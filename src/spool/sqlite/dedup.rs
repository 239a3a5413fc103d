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
//! taken for each other.
//!
//! Changes follow commits: an insert or a prune made inside the writer's
//! transaction is staged, seen by lookups in that same transaction, and
//! enters the index only once the transaction commits ([`DedupIndex::apply_staged`]);
//! a rollback drops it ([`DedupIndex::discard_staged`]). So callbacks refused
//! with 503 while the disk is full leave no entries behind, and the index
//! never forgets an id whose row is still in the database.
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
    /// Ids stored by the open transaction, with their full row ids; they
    /// join `shards` when it commits.
    staged_inserts: Vec<(Slot, i64)>,
    /// Entries whose rows the open transaction deleted; they leave `shards`
    /// when it commits.
    staged_removals: Vec<(Slot, i64)>,
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
            staged_inserts: Vec::new(),
            staged_removals: Vec::new(),
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

    /// An index that holds nothing, for handles that never accept (the
    /// admin commands): loading the real one would cost time and memory.
    pub(super) fn empty() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
            staged_inserts: Vec::new(),
            staged_removals: Vec::new(),
            newest_row: 0,
        }
    }

    /// Number of ids held (committed ones).
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
        let committed = self.shards[slot.shard]
            .iter_hash(hash(slot.print))
            .filter(|entry| entry.print == slot.print)
            .map(|entry| self.row_of(entry.row));
        let staged = self
            .staged_inserts
            .iter()
            .filter(|(staged, _)| staged.shard == slot.shard && staged.print == slot.print)
            .map(|(_, row)| *row);
        for candidate in committed.chain(staged) {
            let stored: Option<(String, i64)> = conn
                .prepare_cached("SELECT event_id, accepted_at_ms FROM accepted_ids WHERE id = ?1")?
                .query_row([candidate], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            if stored.is_some_and(|(id, at)| id == event_id && at >= since_ms) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores that `event_id` was accepted at `now_ms`, inside the writer's
    /// transaction; the index learns it when that commits.
    pub(super) fn record(
        &mut self,
        conn: &Connection,
        event_id: &str,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached("INSERT INTO accepted_ids (event_id, accepted_at_ms) VALUES (?1, ?2)")?
            .execute(params![event_id, now_ms])?;
        self.staged_inserts
            .push((Slot::of(event_id), conn.last_insert_rowid()));
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
        self.staged_removals.extend(
            expired
                .iter()
                .map(|(row, event_id, _)| (Slot::of(event_id), *row)),
        );
        Ok(expired.len())
    }

    /// The open transaction committed: its staged changes take effect.
    pub(super) fn apply_staged(&mut self) {
        for (slot, row) in std::mem::take(&mut self.staged_inserts) {
            self.insert_at(slot, row);
        }
        for (slot, row) in std::mem::take(&mut self.staged_removals) {
            let entry = slot.entry(row);
            if let Ok(found) = self.shards[slot.shard].find_entry(hash(slot.print), |e| *e == entry)
            {
                found.remove();
            }
        }
    }

    /// The open transaction rolled back: its staged changes never happened.
    pub(super) fn discard_staged(&mut self) {
        self.staged_inserts.clear();
        self.staged_removals.clear();
    }

    fn insert(&mut self, event_id: &str, row: i64) {
        self.insert_at(Slot::of(event_id), row);
    }

    fn insert_at(&mut self, slot: Slot, row: i64) {
        self.newest_row = self.newest_row.max(row);
        self.shards[slot.shard].insert_unique(hash(slot.print), slot.entry(row), |e| hash(e.print));
    }

    /// The full row id whose low 32 bits are `low`: the nearest at or below
    /// the newest committed row.
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

    /// Records `event_id` as a committed write (the test connection is in
    /// autocommit mode, so the row is committed when the statement ends).
    fn store(index: &mut DedupIndex, conn: &Connection, event_id: &str, at_ms: i64) {
        index.record(conn, event_id, at_ms).unwrap();
        index.apply_staged();
    }

    /// Two distinct ids with the same fingerprint (same first 16 digits).
    const TWIN_A: &str = "0123456789abcdefaaaaaaaaaaaaaaaa";
    const TWIN_B: &str = "0123456789abcdefbbbbbbbbbbbbbbbb";

    #[test]
    fn ids_sharing_a_fingerprint_are_never_taken_for_each_other() {
        let conn = spool_connection();
        let mut index = DedupIndex::load(&conn).unwrap();
        assert_eq!(fingerprint(TWIN_A), fingerprint(TWIN_B));
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
        index.record(&conn, "rolled-back", 1_000).unwrap();
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
            "INSERT INTO accepted_ids (id, event_id, accepted_at_ms) VALUES (?1, 'first', 1)",
            [(1_i64 << 32) - 2],
        )
        .unwrap();
        let mut index = DedupIndex::load(&conn).unwrap();
        for n in 0..4 {
            store(&mut index, &conn, &format!("id{n}"), 1);
        }
        assert!(index.newest_row > 1 << 32);
        assert!(index.accepted_since(&conn, "first", 0).unwrap());
        for n in 0..4 {
            assert!(index.accepted_since(&conn, &format!("id{n}"), 0).unwrap());
        }
    }
}
