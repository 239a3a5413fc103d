//! Records for the spool tests, built the way the server builds them from
//! a callback (unsigned, so no key is involved).

use std::time::UNIX_EPOCH;

use recordhook::protocol::{Authenticator, TimeWindow, UnverifiedCallback};
use recordhook::record::Record;
use recordhook::spool::{Claim, NewRecord, Outcome, PendingDelivery, Settlement};

const WINDOW: TimeWindow = TimeWindow {
    clock_skew_secs: 0,
    max_validity_secs: 1,
    expiry_grace_secs: 0,
};

/// A record of `event_type` with this file id, on stream `s`.
pub fn record_of(event_type: i64, file_id: &str) -> Record {
    let body = format!(r#"{{"event_type":{event_type},"file_id":"{file_id}","stream_id":"s"}}"#);
    let verified = Authenticator::unsigned(WINDOW)
        .verify(UnverifiedCallback::parse(body.as_bytes()).unwrap(), 0)
        .unwrap();
    Record::from_verified(verified, UNIX_EPOCH).unwrap()
}

/// A recording (event type 100) with this file id.
pub fn record(file_id: &str) -> Record {
    record_of(100, file_id)
}

/// `record` as the spool takes it, built the way the server builds it.
pub fn new_record(record: &Record) -> NewRecord {
    NewRecord::try_from(record).unwrap()
}

/// An outcome of a first attempt for each of `claim`'s deliveries, in
/// claim order, settled as `settlement_of` says for that delivery.
pub fn first_attempts(
    claim: &Claim,
    settlement_of: impl Fn(&PendingDelivery) -> Settlement,
) -> Vec<Outcome> {
    claim
        .deliveries
        .iter()
        .map(|d| Outcome {
            seq: d.seq,
            attempts: 1,
            settlement: settlement_of(d),
        })
        .collect()
}
