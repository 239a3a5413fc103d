//! How a record's JSON is kept in `records.body`: compressed with LZ4 (a
//! block with its length in front), as a BLOB. A record is about 1.4 KB of
//! JSON that says most things twice (the received fields, then the typed view
//! of the same values), which LZ4 brings under half. Besides the disk, this
//! shrinks every commit's WAL writes and their checksums, and lets a 4 KiB
//! page hold several records instead of two. Rows written before this (TEXT)
//! are read as they are, so an existing spool needs no rewrite: the column's
//! type tells the two apart.
//!
//! LZ4 rather than zstd, measured with bench/callgrind.py: zstd at its
//! fastest level stored a record in about 480 bytes instead of LZ4's 630,
//! but added a fifth to the instructions a callback costs.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};

/// The largest record JSON a stored block may expand to. Far above any
/// accepted callback (bodies are capped well below), it only stops a damaged
/// block from claiming an absurd allocation.
const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;

/// `json` compressed, as stored in `records.body`.
pub(super) fn pack(json: &str) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(json.as_bytes())
}

/// A record's JSON read back from `records.body`, whichever way it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredBody(pub String);

impl FromSql for StoredBody {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            // Stored before bodies were compressed.
            ValueRef::Text(text) => std::str::from_utf8(text)
                .map(|json| StoredBody(json.to_owned()))
                .map_err(|err| FromSqlError::Other(Box::new(err))),
            ValueRef::Blob(block) => unpack(block)
                .map(StoredBody)
                .map_err(|err| FromSqlError::Other(Box::new(err))),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// The JSON in a block written by [`pack`].
fn unpack(block: &[u8]) -> std::io::Result<String> {
    let (size, _) = lz4_flex::block::uncompressed_size(block).map_err(invalid)?;
    if size > MAX_JSON_BYTES {
        return Err(invalid("a stored record claims an absurd size"));
    }
    let bytes = lz4_flex::block::decompress_size_prepended(block).map_err(invalid)?;
    String::from_utf8(bytes).map_err(invalid)
}

fn invalid(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, err)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    const JSON: &str = r#"{"id":"abc","event":{"stream_id":"s","stream_param":"txSecret=x&txTime=1"},"recording":{"stream_id":"s","stream_param":"txSecret=x&txTime=1"}}"#;

    fn read_back(conn: &Connection, value: &dyn rusqlite::ToSql) -> rusqlite::Result<StoredBody> {
        conn.query_row("SELECT ?1", [value], |row| row.get(0))
    }

    #[test]
    fn a_packed_body_reads_back_unchanged_and_smaller() {
        let conn = Connection::open_in_memory().unwrap();
        let record = JSON.repeat(8);
        let packed = pack(&record);
        assert!(packed.len() < record.len() / 2, "{} bytes", packed.len());
        assert_eq!(read_back(&conn, &packed).unwrap(), StoredBody(record));
    }

    #[test]
    fn a_body_stored_as_text_before_compression_reads_back_as_it_is() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            read_back(&conn, &JSON).unwrap(),
            StoredBody(JSON.to_owned())
        );
    }

    #[test]
    fn a_damaged_frame_is_an_error_not_a_record() {
        let conn = Connection::open_in_memory().unwrap();
        let mut packed = pack(JSON);
        packed.truncate(packed.len() / 2);
        assert!(read_back(&conn, &packed).is_err());
        assert!(read_back(&conn, &b"\xff\xff\xff\x7fnot lz4".to_vec()).is_err());
        assert!(read_back(&conn, &42).is_err());
    }
}
