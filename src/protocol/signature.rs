//! `sign = MD5(key + t)` and the time window around `t`, as pure functions of
//! their inputs (the current time included) so every edge is unit-testable.

use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use subtle::ConstantTimeEq;

/// Why a callback failed authentication. The messages go to the client and
/// the log, so they name the failed check but never a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The body has no `t`.
    #[error("t is missing")]
    TMissing,
    /// `t` is neither a JSON integer nor a string of decimal digits that fits in 64 bits.
    #[error("t is not an integer")]
    TNotInteger,
    /// The body has no `sign`, or it is not a string.
    #[error("sign is missing or not a string")]
    SignMissing,
    /// `sign` matches none of the configured keys.
    #[error("sign does not match any configured key")]
    SignMismatch,
    /// `t` (plus the skew and grace allowances) lies in the past.
    #[error("expired: t has passed")]
    Expired,
    /// `t` lies further ahead than any signature CSS would make.
    #[error("t too far in the future")]
    TooFarInFuture,
}

impl AuthError {
    /// A stable, machine-readable name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TMissing => "t_missing",
            Self::TNotInteger => "t_not_integer",
            Self::SignMissing => "sign_missing",
            Self::SignMismatch => "sign_mismatch",
            Self::Expired => "expired",
            Self::TooFarInFuture => "t_in_future",
        }
    }
}

/// The accepted window around `t`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Tolerance for disagreeing clocks, applied on both sides.
    pub clock_skew_secs: i64,
    /// How far ahead of now `t` may lie.
    pub max_validity_secs: i64,
    /// Extra acceptance after `t`, for late retries.
    pub expiry_grace_secs: i64,
}

/// Reads `t` from a callback body: a JSON integer or a string of decimal digits.
pub fn parse_t(value: Option<&Value>) -> Result<i64, AuthError> {
    match value {
        None | Some(Value::Null) => Err(AuthError::TMissing),
        Some(Value::Number(number)) => number.as_i64().ok_or(AuthError::TNotInteger),
        Some(Value::String(text)) => parse_decimal_i64(text).ok_or(AuthError::TNotInteger),
        Some(_) => Err(AuthError::TNotInteger),
    }
}

/// Parses `-?[0-9]+` into an i64; no sign prefix `+`, no spaces, no exponent.
pub(crate) fn parse_decimal_i64(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The signature CSS sends for `key` and `t`: lowercase hex of MD5(key + decimal t).
pub fn expected_sign(key: &str, t: i64) -> String {
    let mut hasher = Md5::new();
    hasher.update(key.as_bytes());
    hasher.update(t.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// Checks `sign` against every key (in constant time, without stopping at the
/// first match, so timing does not reveal which key or how many matched), then
/// `t` against the window around `now`. The signature is checked first so that
/// a forger learns nothing about the window.
pub fn verify(
    sign: &str,
    t: i64,
    keys: &[SecretString],
    now: i64,
    window: &TimeWindow,
) -> Result<(), AuthError> {
    let given = sign.to_ascii_lowercase();
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        let expected = expected_sign(key.expose_secret(), t);
        matched |= expected.as_bytes().ct_eq(given.as_bytes());
    }
    if !bool::from(matched) {
        return Err(AuthError::SignMismatch);
    }
    let latest_accepted = t
        .saturating_add(window.clock_skew_secs)
        .saturating_add(window.expiry_grace_secs);
    if now > latest_accepted {
        return Err(AuthError::Expired);
    }
    let furthest_ahead = now
        .saturating_add(window.max_validity_secs)
        .saturating_add(window.clock_skew_secs);
    if t > furthest_ahead {
        return Err(AuthError::TooFarInFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;
    const WINDOW: TimeWindow = TimeWindow {
        clock_skew_secs: 60,
        max_validity_secs: 600,
        expiry_grace_secs: 30,
    };

    fn keys(names: &[&str]) -> Vec<SecretString> {
        names.iter().map(|k| SecretString::from(*k)).collect()
    }

    #[test]
    fn expected_sign_is_lowercase_hex_md5_of_key_then_decimal_t() {
        // md5("abc123") computed independently: `printf abc123 | md5sum`.
        assert_eq!(
            expected_sign("abc", 123),
            "e99a18c428cb38d5f260853678922e03"
        );
        assert_eq!(expected_sign("k", -5), hex::encode(Md5::digest(b"k-5")));
    }

    #[test]
    fn a_correct_signature_inside_the_window_verifies() {
        let t = NOW + 600;
        assert_eq!(
            verify(&expected_sign("k", t), t, &keys(&["k"]), NOW, &WINDOW),
            Ok(())
        );
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let t = NOW + 10;
        let sign = expected_sign("k", t).to_ascii_uppercase();
        assert_eq!(verify(&sign, t, &keys(&["k"]), NOW, &WINDOW), Ok(()));
    }

    #[test]
    fn every_key_of_a_rotation_verifies_and_others_do_not() {
        let rotation = keys(&["old", "new", "next"]);
        let t = NOW + 100;
        for key in ["old", "new", "next"] {
            assert_eq!(
                verify(&expected_sign(key, t), t, &rotation, NOW, &WINDOW),
                Ok(()),
                "{key}"
            );
        }
        assert_eq!(
            verify(&expected_sign("other", t), t, &rotation, NOW, &WINDOW),
            Err(AuthError::SignMismatch)
        );
    }

    #[test]
    fn no_keys_means_nothing_verifies() {
        let t = NOW;
        assert_eq!(
            verify(&expected_sign("", t), t, &[], NOW, &WINDOW),
            Err(AuthError::SignMismatch)
        );
    }

    #[test]
    fn a_signature_for_another_t_is_rejected() {
        let t = NOW + 100;
        let sign = expected_sign("k", t + 1);
        assert_eq!(
            verify(&sign, t, &keys(&["k"]), NOW, &WINDOW),
            Err(AuthError::SignMismatch)
        );
    }

    #[test]
    fn truncated_or_padded_signatures_are_rejected() {
        let t = NOW;
        let sign = expected_sign("k", t);
        for bad in [&sign[..31], &format!("{sign}0"), "", " "] {
            assert_eq!(
                verify(bad, t, &keys(&["k"]), NOW, &WINDOW),
                Err(AuthError::SignMismatch),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expiry_boundary_is_exact() {
        // Accepted up to and including t + skew + grace.
        let t = NOW - 90;
        let k = keys(&["k"]);
        assert_eq!(verify(&expected_sign("k", t), t, &k, NOW, &WINDOW), Ok(()));
        let t = NOW - 91;
        assert_eq!(
            verify(&expected_sign("k", t), t, &k, NOW, &WINDOW),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn future_boundary_is_exact() {
        // Accepted up to and including now + max_validity + skew.
        let k = keys(&["k"]);
        let t = NOW + 660;
        assert_eq!(verify(&expected_sign("k", t), t, &k, NOW, &WINDOW), Ok(()));
        let t = NOW + 661;
        assert_eq!(
            verify(&expected_sign("k", t), t, &k, NOW, &WINDOW),
            Err(AuthError::TooFarInFuture)
        );
    }

    #[test]
    fn negative_and_extreme_t_do_not_overflow() {
        let k = keys(&["k"]);
        for (t, expected) in [
            (-1, AuthError::Expired),
            (i64::MIN, AuthError::Expired),
            (i64::MAX, AuthError::TooFarInFuture),
        ] {
            assert_eq!(
                verify(&expected_sign("k", t), t, &k, NOW, &WINDOW),
                Err(expected),
                "t = {t}"
            );
        }
        // A clock far in the future must not wrap around either.
        let t = i64::MAX - 10;
        assert_eq!(
            verify(&expected_sign("k", t), t, &k, i64::MAX, &WINDOW),
            Ok(())
        );
    }

    #[test]
    fn t_is_read_from_numbers_and_decimal_strings_only() {
        let cases = [
            (json!(1545030873), Ok(1545030873)),
            (json!("1545030873"), Ok(1545030873)),
            (json!("-12"), Ok(-12)),
            (json!(-12), Ok(-12)),
            (json!("99999999999999999999"), Err(AuthError::TNotInteger)),
            (json!(1.5), Err(AuthError::TNotInteger)),
            (json!("1.5"), Err(AuthError::TNotInteger)),
            (json!("+12"), Err(AuthError::TNotInteger)),
            (json!(" 12"), Err(AuthError::TNotInteger)),
            (json!(""), Err(AuthError::TNotInteger)),
            (json!("-"), Err(AuthError::TNotInteger)),
            (json!(true), Err(AuthError::TNotInteger)),
            (json!([1]), Err(AuthError::TNotInteger)),
            (json!(null), Err(AuthError::TMissing)),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_t(Some(&value)), expected, "{value}");
        }
        assert_eq!(parse_t(None), Err(AuthError::TMissing));
        let huge: Value = serde_json::from_str("123456789012345678901234567890").unwrap();
        assert_eq!(parse_t(Some(&huge)), Err(AuthError::TNotInteger));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A signature made with any configured key verifies exactly when `t`
        /// lies inside the window; a signature with another key never does.
        #[test]
        fn a_signature_verifies_exactly_inside_the_window(
            keys in prop::collection::vec("[ -~]{1,40}", 1..5),
            signer in any::<prop::sample::Index>(),
            now in -10_000_000_000i64..10_000_000_000,
            offset in -2_000i64..2_000,
            skew in 0i64..120,
            validity in 1i64..1_200,
            grace in 0i64..600,
        ) {
            let window = TimeWindow { clock_skew_secs: skew, max_validity_secs: validity, expiry_grace_secs: grace };
            let secrets: Vec<SecretString> = keys.iter().map(|k| SecretString::from(k.as_str())).collect();
            let key = signer.get(&keys);
            let t = now + offset;
            let inside = now <= t + skew + grace && t <= now + validity + skew;
            let result = verify(&expected_sign(key, t), t, &secrets, now, &window);
            prop_assert_eq!(result.is_ok(), inside, "t={} now={} result={:?}", t, now, result);
            let forged = expected_sign(&format!("{key}x"), t);
            if !keys.iter().any(|k| expected_sign(k, t) == forged) {
                prop_assert_eq!(verify(&forged, t, &secrets, now, &window), Err(AuthError::SignMismatch));
            }
        }
    }
}
