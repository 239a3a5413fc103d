//! Turning one of Tencent's callback records (`CallbackEventInfo`) back into
//! the callback CSS sent: its `Request` is the body as sent, as text that
//! may be percent-encoded. What parses becomes a record through the same
//! constructor as a live callback; what does not is a gap, with the reason.

use std::time::SystemTime;

use crate::protocol::{PayloadError, Reconciled, UnverifiedCallback, VerifiedCallback};
use crate::record::Record;

/// Most characters of an unrecoverable request kept with its gap.
const EXCERPT_CHARS: usize = 512;

/// Why a callback record cannot be turned back into a callback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrecoverable {
    /// Tencent kept no request body.
    #[error("Tencent kept no request body for it")]
    NoBody,
    /// The body is neither JSON nor percent-encoded JSON, or not a callback.
    #[error("its request body is not a callback: {0}")]
    NotACallback(#[from] PayloadError),
}

impl Unrecoverable {
    /// A stable name for metrics and the gap list.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoBody => "no_body",
            Self::NotACallback(err) => err.reason(),
        }
    }
}

/// The callback in `request`, as a record received at `now`, vouched for by
/// `provenance` (what Tencent's API said about it).
pub fn recover(
    request: Option<&str>,
    provenance: Reconciled,
    now: SystemTime,
) -> Result<Record, Unrecoverable> {
    let text = request.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(Unrecoverable::NoBody);
    }
    let callback = parse(text)?;
    let verified = VerifiedCallback::from_tencent_api(callback, provenance)?;
    Ok(Record::from_verified(verified, now)?)
}

/// The body as JSON; failing that, percent-decoded (and `+` as a space,
/// as form encoding writes it) and then JSON. The first error is the one
/// reported: it describes the text as Tencent gave it.
fn parse(text: &str) -> Result<UnverifiedCallback, PayloadError> {
    match UnverifiedCallback::parse(text.as_bytes()) {
        Ok(callback) => Ok(callback),
        Err(first) => {
            if !text.contains('%') {
                return Err(first);
            }
            let plus_as_space = text.replace('+', " ");
            let decoded = percent_encoding::percent_decode_str(&plus_as_space).collect::<Vec<_>>();
            // A body already JSON but for a stray `%` fails both ways; then
            // the decoded attempt's error would only confuse.
            UnverifiedCallback::parse(&decoded).map_err(|_| first)
        }
    }
}

/// The start of `request`, for a gap entry (the whole may be large), with
/// every run of 32 or more hex digits, the shape of `sign` (also when
/// percent-encoding puts hex digits right before it), replaced: the excerpt
/// is shown by the admin API, and a `sign` beside its `t` would let whoever
/// reads it try guesses at the callback key.
pub fn excerpt(request: Option<&str>) -> String {
    let start: Vec<char> = request
        .unwrap_or_default()
        .chars()
        .take(EXCERPT_CHARS)
        .collect();
    let mut out = String::with_capacity(start.len());
    let mut index = 0;
    while index < start.len() {
        let run = start[index..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        if run >= SIGN_HEX_DIGITS {
            out.push_str(crate::redact::REDACTED);
        } else {
            out.extend(&start[index..index + run.max(1)]);
        }
        index += run.max(1);
    }
    out
}

/// Hex digits in a `sign` (an MD5).
const SIGN_HEX_DIGITS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Source;
    use std::time::UNIX_EPOCH;

    fn provenance() -> Reconciled {
        Reconciled {
            event_time: "2026-12-01T10:00:00Z".into(),
            result_code: Some(500),
            response: Some("timeout".into()),
            request_id: "rid".into(),
        }
    }

    const BODY: &str = r#"{"event_type":100,"stream_id":"s1","file_id":"528589","t":1700000600,"sign":"0123456789abcdef0123456789abcdef"}"#;

    #[test]
    fn a_json_request_becomes_a_reconciled_record_with_the_live_event_id() {
        let record = recover(Some(BODY), provenance(), UNIX_EPOCH).unwrap();
        assert_eq!(record.source, Source::Reconciled);
        assert_eq!(record.stream_id(), Some("s1"));
        assert!(!record.event.contains_key("sign"));
        let without_t_and_sign = r#"{"event_type":100,"stream_id":"s1","file_id":"528589"}"#;
        let other = recover(Some(without_t_and_sign), provenance(), UNIX_EPOCH).unwrap();
        assert_eq!(record.id, other.id);
    }

    #[test]
    fn a_percent_encoded_request_is_decoded_first() {
        let encoded: String =
            percent_encoding::utf8_percent_encode(BODY, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let plain = recover(Some(BODY), provenance(), UNIX_EPOCH).unwrap();
        let decoded = recover(Some(&encoded), provenance(), UNIX_EPOCH).unwrap();
        assert_eq!(decoded.id, plain.id);
        let form = BODY.replace(' ', "+").replace('"', "%22");
        assert_eq!(
            recover(Some(&form), provenance(), UNIX_EPOCH).unwrap().id,
            plain.id
        );
    }

    #[test]
    fn what_is_not_a_callback_is_unrecoverable_with_its_reason() {
        let cases = [
            (None, "no_body"),
            (Some("   "), "no_body"),
            (Some("event_type=100&stream_id=s"), "invalid_json"),
            (Some("%7B%22broken"), "invalid_json"),
            (Some("[1,2]"), "not_an_object"),
            (Some(r#"{"stream_id":"s"}"#), "event_type_missing"),
            (Some(r#"{"event_type":"x"}"#), "event_type_not_integer"),
        ];
        for (request, reason) in cases {
            let err = recover(request, provenance(), UNIX_EPOCH).unwrap_err();
            assert_eq!(err.reason(), reason, "{request:?}: {err}");
        }
    }

    #[test]
    fn an_excerpt_is_bounded() {
        assert_eq!(excerpt(Some(&"x".repeat(2_000))).len(), EXCERPT_CHARS);
        assert_eq!(excerpt(None), "");
    }

    #[test]
    fn an_excerpt_never_shows_a_sign() {
        let sign = "0123456789abcdef0123456789ABCDEF";
        let shown = excerpt(Some(&format!(
            "%7B%22t%22%3A1700000600%2C%22sign%22%3A%22{sign}%22%2C%22cut"
        )));
        assert!(!shown.contains(sign), "{shown}");
        assert!(shown.contains(crate::redact::REDACTED), "{shown}");
        // Shorter hex runs stay.
        let shorter = &sign[1..];
        assert_eq!(excerpt(Some(shorter)), shorter);
    }
}
