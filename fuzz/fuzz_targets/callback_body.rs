//! Fuzzes the whole path a callback body takes before it is stored:
//! the size limit, JSON parsing, authentication (`t` and `sign`), the
//! `event_type` check and record building (typed recording fields, event id,
//! warnings), then serialising the record as the spool would.
//!
//! The first byte picks the mode: odd bytes check signatures against a key
//! (so inputs carrying a matching `sign` reach record building), even bytes
//! accept unsigned callbacks (so every well-formed object does).
//!
//! Run: `cargo +nightly fuzz run callback_body -- -max_len=70000 -rss_limit_mb=512 -malloc_limit_mb=256`

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use recordhook::http::admit;
use recordhook::protocol::{Authenticator, TimeWindow};
use recordhook::record::StoredRecord;
use secrecy::SecretString;

const LIMIT: usize = 65_536;
const NOW: u64 = 1_700_000_000;
const WINDOW: TimeWindow = TimeWindow {
    clock_skew_secs: 60,
    max_validity_secs: 600,
    expiry_grace_secs: 0,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let authenticator = if mode % 2 == 1 {
        Authenticator::with_keys(vec![SecretString::from("fuzz-key")], WINDOW)
    } else {
        Authenticator::unsigned(WINDOW)
    };
    let received_at = UNIX_EPOCH + Duration::from_secs(NOW);
    if let Ok((record, _stream_id)) = admit(body, LIMIT, &authenticator, received_at) {
        // What the spool stores must serialise, and read back to the same record.
        let stored = StoredRecord::try_from(&record).expect("an admitted record serialises");
        let back = stored.parse().expect("a stored record parses");
        assert_eq!(back, record);
        assert!(
            !stored.json.contains('\n'),
            "a stored record must be one line"
        );
        assert!(
            !record.event.contains_key("sign"),
            "sign must never be stored"
        );
    }
});
