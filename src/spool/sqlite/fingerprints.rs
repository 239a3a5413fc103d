//! An in-memory map from a text key (an event id, a file id) to the rows of
//! the spool that hold it, by an 8-byte fingerprint of the key.
//!
//! It stands in for a B-tree index on disk where the keys are random: such an
//! index dirties one leaf page per inserted row, so every group commit wrote
//! (and later checkpointed) a 4 KiB page per callback for each of them
//! (bench/BENCHMARKS.md, issue 21). Here a row costs a few bytes of memory
//! instead, and the table is rebuilt from the rows when the spool opens.
//!
//! A fingerprint match is only a candidate: the caller reads the row back and
//! compares the full key, so two keys sharing a fingerprint are never taken
//! for each other.
//!
//! Changes follow commits: an insert or a removal made inside the writer's
//! transaction is staged, seen by lookups in that same transaction, and
//! enters the table only once the transaction commits
//! ([`FingerprintTable::apply_staged`]); a rollback drops it
//! ([`FingerprintTable::discard_staged`]).
//!
//! Memory: 9 bytes per slot (a 32-bit piece of the fingerprint, the low 32
//! bits of the row id, one control byte), at a load between 7/16 and 7/8:
//! about 10–20 bytes per row held. The table is split into shards so that
//! growing it never holds two copies of the whole thing at once.

use std::hash::{DefaultHasher, Hash, Hasher};

use hashbrown::HashTable;
use sha2::{Digest, Sha256};

/// Independent tables; a resize copies one of them, not the whole index.
const SHARDS: usize = 64;

/// How a key becomes its 8-byte fingerprint.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fingerprint {
    /// Keys that are hex digests already (event ids): their first 16 digits
    /// are the fingerprint; anything else is hashed with SHA-256.
    HexDigest,
    /// Keys of any shape (file ids, which are long decimal numbers sharing
    /// their leading digits): hashed with SipHash under fixed keys. The
    /// keys come from authenticated callbacks only, and a crafted collision
    /// would cost lookups time, never a wrong answer.
    Hashed,
}

impl Fingerprint {
    fn of(self, key: &str) -> [u8; 8] {
        let mut print = [0; 8];
        let decoded = matches!(self, Self::HexDigest)
            && key
                .as_bytes()
                .get(..16)
                .is_some_and(|digits| hex::decode_to_slice(digits, &mut print).is_ok());
        if decoded {
            return print;
        }
        match self {
            Self::HexDigest => print.copy_from_slice(&Sha256::digest(key.as_bytes())[..8]),
            Self::Hashed => {
                let mut hasher = DefaultHasher::new();
                key.hash(&mut hasher);
                print = hasher.finish().to_le_bytes();
            }
        }
        print
    }
}

/// One row: 32 bits of its key's fingerprint (another 6 pick the shard) and
/// the low 32 bits of its row id. Keys that share these are told apart by
/// reading the rows, so the table may hold several with the same `print`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    print: u32,
    row: u32,
}

/// Where a key's entries live, derived from the key.
#[derive(Debug, Clone, Copy)]
struct Slot {
    shard: usize,
    print: u32,
}

impl Slot {
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

fn low_bits(row: i64) -> u32 {
    (row & 0xFFFF_FFFF) as u32
}

/// Rows by the fingerprint of their key.
pub(super) struct FingerprintTable {
    fingerprint: Fingerprint,
    shards: Box<[HashTable<Entry>]>,
    /// Rows stored by the open transaction, with their full row ids; they
    /// join `shards` when it commits.
    staged_inserts: Vec<(Slot, i64)>,
    /// Rows the open transaction deleted; they leave `shards` when it commits.
    staged_removals: Vec<(Slot, i64)>,
    /// The highest row id stored so far; [`FingerprintTable::row_of`]
    /// restores full row ids from their low 32 bits relative to it (live
    /// rows are never 2^32 apart).
    newest_row: i64,
}

impl FingerprintTable {
    /// An empty table whose keys are fingerprinted as `fingerprint` says.
    pub(super) fn new(fingerprint: Fingerprint) -> Self {
        Self {
            fingerprint,
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
            staged_inserts: Vec::new(),
            staged_removals: Vec::new(),
            newest_row: 0,
        }
    }

    fn slot(&self, key: &str) -> Slot {
        let print = self.fingerprint.of(key);
        Slot {
            shard: usize::from(print[4]) % SHARDS,
            print: u32::from_le_bytes([print[0], print[1], print[2], print[3]]),
        }
    }

    /// Number of rows held (committed ones).
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// The rows that may hold `key`: committed ones, then those the open
    /// transaction staged. Each must be read back to confirm it.
    pub(super) fn candidates(&self, key: &str) -> Vec<i64> {
        let slot = self.slot(key);
        let committed = self.shards[slot.shard]
            .iter_hash(hash(slot.print))
            .filter(|entry| entry.print == slot.print)
            .map(|entry| self.row_of(entry.row));
        let staged = self
            .staged_inserts
            .iter()
            .filter(|(staged, _)| staged.shard == slot.shard && staged.print == slot.print)
            .map(|(_, row)| *row);
        committed.chain(staged).collect()
    }

    /// Adds a row that is committed already (loading the table).
    pub(super) fn insert_committed(&mut self, key: &str, row: i64) {
        let slot = self.slot(key);
        self.insert_at(slot, row);
    }

    /// Stages `row`, stored under `key` by the open transaction.
    pub(super) fn stage_insert(&mut self, key: &str, row: i64) {
        let slot = self.slot(key);
        self.staged_inserts.push((slot, row));
    }

    /// Stages the removal of `row`, deleted by the open transaction.
    pub(super) fn stage_removal(&mut self, key: &str, row: i64) {
        let slot = self.slot(key);
        self.staged_removals.push((slot, row));
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

    fn insert_at(&mut self, slot: Slot, row: i64) {
        self.newest_row = self.newest_row.max(row);
        self.shards[slot.shard].insert_unique(hash(slot.print), slot.entry(row), |e| hash(e.print));
    }

    /// The full row id whose low 32 bits are `low`: the nearest at or below
    /// the newest committed row.
    fn row_of(&self, low: u32) -> i64 {
        self.newest_row - i64::from(low_bits(self.newest_row).wrapping_sub(low))
    }

    /// The newest row id held, for tests.
    #[cfg(test)]
    pub(super) fn newest_row(&self) -> i64 {
        self.newest_row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digests_are_their_own_fingerprint_and_other_keys_are_hashed() {
        let print = Fingerprint::HexDigest.of("0123456789abcdefffff");
        assert_eq!(print, [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        // Decimal file ids sharing 16 leading digits must not share a print.
        let a = Fingerprint::Hashed.of("5285890813940837541");
        let b = Fingerprint::Hashed.of("5285890813940837542");
        assert_ne!(a, b);
        assert_eq!(a, Fingerprint::Hashed.of("5285890813940837541"));
    }

    #[test]
    fn staged_rows_are_candidates_at_once_and_held_only_once_committed() {
        let mut table = FingerprintTable::new(Fingerprint::Hashed);
        table.stage_insert("file", 7);
        assert_eq!(table.candidates("file"), [7]);
        assert_eq!(table.len(), 0);
        table.discard_staged();
        assert!(table.candidates("file").is_empty());
        table.stage_insert("file", 8);
        table.apply_staged();
        assert_eq!((table.candidates("file"), table.len()), (vec![8], 1));
        table.stage_removal("file", 8);
        assert_eq!(table.candidates("file"), [8]);
        table.apply_staged();
        assert!(table.candidates("file").is_empty());
    }

    #[test]
    fn row_ids_are_restored_from_their_low_bits_across_a_32_bit_boundary() {
        let mut table = FingerprintTable::new(Fingerprint::Hashed);
        let first = (1_i64 << 32) - 2;
        table.insert_committed("a", first);
        for (n, key) in ["b", "c", "d", "e"].iter().enumerate() {
            table.insert_committed(key, first + 1 + n as i64);
        }
        assert!(table.newest_row() > 1 << 32);
        assert_eq!(table.candidates("a"), [first]);
        assert_eq!(table.candidates("e"), [first + 4]);
    }
}
