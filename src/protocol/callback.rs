//! A callback body on its way from bytes to a verified callback.

use std::fmt;

use secrecy::SecretString;
use serde::Deserializer as _;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};

use super::signature::{AuthError, TimeWindow, parse_decimal_i64, parse_t, verify};
use super::stream::prefix;

/// Why a body is not a usable callback (before or after authentication).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The body is not valid JSON (or not UTF-8).
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON, but not an object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// The object has no `event_type`.
    #[error("event_type is missing")]
    EventTypeMissing,
    /// `event_type` is not an integer.
    #[error("event_type is not an integer")]
    EventTypeNotInteger,
}

impl PayloadError {
    /// A stable, machine-readable name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::EventTypeMissing => "event_type_missing",
            Self::EventTypeNotInteger => "event_type_not_integer",
        }
    }
}

/// A JSON object that claims to be a CSS callback; nothing about it is trusted yet.
#[derive(Debug, Clone)]
pub struct UnverifiedCallback {
    fields: Map<String, Value>,
}

impl UnverifiedCallback {
    /// Parses a body. Only JSON objects pass.
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        let mut reader = serde_json::Deserializer::from_slice(body);
        let parsed = reader
            .deserialize_map(CallbackObject)
            .and_then(|fields| reader.end().map(|()| fields));
        match parsed {
            Ok(fields) => Ok(Self { fields }),
            // Anything but an object is a type error before it is read;
            // reading it whole (within serde_json's nesting limit, as for an
            // object) tells valid JSON of another kind from broken JSON.
            Err(err) if err.is_data() => match serde_json::from_slice::<Value>(body) {
                Ok(_) => Err(PayloadError::NotAnObject),
                Err(err) => Err(invalid_json(&err)),
            },
            Err(err) => Err(invalid_json(&err)),
        }
    }

    /// The claimed `stream_id`, for log context only (shortened so a hostile
    /// body cannot flood the log through it).
    pub fn stream_id_hint(&self) -> Option<String> {
        let stream_id = self.fields.get("stream_id")?.as_str()?;
        Some(prefix(stream_id, 128).to_owned())
    }
}

/// serde_json's message names line and column, never the content.
fn invalid_json(err: &serde_json::Error) -> PayloadError {
    PayloadError::InvalidJson(err.to_string())
}

/// Room for a callback's top-level fields, reserved before parsing: CSS's
/// callbacks carry up to about 30, and a map that grew to that size one
/// doubling at a time rehashed its keys four times over (measured with
/// `perf`: about 0.5% of a callback's CPU).
const EXPECTED_FIELDS: usize = 32;

/// Reads a JSON object into a map sized for a callback; the values are
/// read as serde_json reads them anywhere else.
struct CallbackObject;

impl<'de> Visitor<'de> for CallbackObject {
    type Value = Map<String, Value>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let mut fields = Map::with_capacity(EXPECTED_FIELDS);
        // A repeated key keeps its first place and its last value, as
        // serde_json's own `Value` has it.
        while let Some((key, value)) = entries.next_entry()? {
            fields.insert(key, value);
        }
        Ok(fields)
    }
}

/// Decides which callbacks are authentic.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// `None` when unsigned callbacks are allowed.
    keys: Option<Vec<SecretString>>,
    window: TimeWindow,
    /// Event types accepted without `t` and `sign` when the request came
    /// through the secret path (CSS documents these types without a
    /// signature, so there is none to check).
    unsigned_event_types: Vec<i64>,
    /// Whether this authenticator serves the secret path: only then does
    /// `unsigned_event_types` apply.
    on_secret_path: bool,
}

impl Authenticator {
    /// Checks `sign` and `t` against `keys`.
    pub fn with_keys(keys: Vec<SecretString>, window: TimeWindow) -> Self {
        Self {
            keys: Some(keys),
            window,
            unsigned_event_types: Vec::new(),
            on_secret_path: false,
        }
    }

    /// Also accepts callbacks of `event_types` that carry neither `t` nor
    /// `sign`, but only through the authenticator [`Self::on_secret_path`] gives.
    pub fn allowing_unsigned_on_secret_path(mut self, event_types: Vec<i64>) -> Self {
        self.unsigned_event_types = event_types;
        self
    }

    /// This authenticator as it applies to a request that came through the
    /// secret path (which the caller has checked).
    pub fn on_secret_path(&self) -> Self {
        Self {
            on_secret_path: true,
            ..self.clone()
        }
    }

    /// Accepts every callback without checking it (`auth.allow_unsigned`).
    pub fn unsigned(window: TimeWindow) -> Self {
        Self {
            keys: None,
            window,
            unsigned_event_types: Vec::new(),
            on_secret_path: false,
        }
    }

    /// Whether callbacks are checked at all.
    pub fn is_signed(&self) -> bool {
        self.keys.is_some()
    }

    /// How many keys are configured.
    pub fn key_count(&self) -> usize {
        self.keys.as_ref().map_or(0, Vec::len)
    }

    /// The only way to a [`VerifiedCallback`]: checks `t`, then `sign`, then the
    /// time window, with `now` in Unix seconds. A callback carrying neither
    /// `t` nor `sign` passes unchecked only on the secret path and only for
    /// the event types allowed there; one carrying either is always checked.
    pub fn verify(
        &self,
        callback: UnverifiedCallback,
        now: i64,
    ) -> Result<VerifiedCallback, AuthError> {
        let UnverifiedCallback { mut fields } = callback;
        let absent = |name: &str| fields.get(name).is_none_or(Value::is_null);
        let unsigned_allowed = self.on_secret_path
            && absent("t")
            && absent("sign")
            && event_type_of(&fields).is_ok_and(|t| self.unsigned_event_types.contains(&t));
        let signed = self.keys.is_some() && !unsigned_allowed;
        if let (Some(keys), false) = (&self.keys, unsigned_allowed) {
            let t = parse_t(fields.get("t"))?;
            let sign = fields
                .get("sign")
                .and_then(Value::as_str)
                .ok_or(AuthError::SignMissing)?;
            verify(sign, t, keys, now, &self.window)?;
        }
        // The signature has done its job; it must not travel further (logs, sinks).
        // shift_remove keeps the order of the remaining fields (remove would swap).
        fields.shift_remove("sign");
        Ok(VerifiedCallback {
            fields,
            signed,
            reconciled: None,
        })
    }
}

/// `event_type`, as a JSON integer or a decimal string.
fn event_type_of(fields: &Map<String, Value>) -> Result<i64, PayloadError> {
    match fields.get("event_type") {
        None | Some(Value::Null) => Err(PayloadError::EventTypeMissing),
        Some(Value::Number(number)) => number.as_i64().ok_or(PayloadError::EventTypeNotInteger),
        Some(Value::String(text)) => {
            parse_decimal_i64(text).ok_or(PayloadError::EventTypeNotInteger)
        }
        Some(_) => Err(PayloadError::EventTypeNotInteger),
    }
}

/// A callback whose `sign` and `t` have been checked (or whose checking was
/// explicitly switched off), or one that Tencent's signed API said CSS sent
/// (reconciliation). `sign` has been removed.
#[derive(Debug, Clone)]
pub struct VerifiedCallback {
    fields: Map<String, Value>,
    /// Whether a signature was checked (false: accepted unsigned, by policy,
    /// or recovered through Tencent's API).
    signed: bool,
    /// Set when the callback came from Tencent's API rather than from CSS.
    reconciled: Option<Reconciled>,
}

/// What Tencent's API said about a callback that reconciliation recovered:
/// the proof of its authenticity, since its own `t`/`sign` expired long ago.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reconciled {
    /// When CSS sent it, RFC 3339 UTC (Tencent's `EventTime`, converted).
    pub event_time: String,
    /// Tencent's `ResultCode` for the delivery it attempted (0: CSS
    /// counted it delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_code: Option<i64>,
    /// What CSS got back when it sent it (Tencent's `Response`), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The `RequestId` of the API answer that listed it, for Tencent support.
    pub request_id: String,
}

impl VerifiedCallback {
    /// A callback that Tencent's signed API (`DescribeCallbackRecordsList`)
    /// says CSS sent: the one way a callback passes without a valid
    /// signature, which is why only reconciliation, holding the API
    /// credentials, may call it. `sign` is dropped as on the live path, so
    /// the event id is the one the live callback would have had.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "crate::reconcile calls it; lands next")
    )]
    pub(crate) fn from_tencent_api(
        callback: UnverifiedCallback,
        provenance: Reconciled,
    ) -> Result<Self, PayloadError> {
        let UnverifiedCallback { mut fields } = callback;
        event_type_of(&fields)?;
        fields.shift_remove("sign");
        Ok(Self {
            fields,
            signed: false,
            reconciled: Some(provenance),
        })
    }

    /// What Tencent's API said about it, when it was recovered by reconciliation.
    pub fn reconciled(&self) -> Option<&Reconciled> {
        self.reconciled.as_ref()
    }

    /// Every received field except `sign`, in the order received, values unchanged.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Gives up the fields.
    pub fn into_fields(self) -> Map<String, Value> {
        self.fields
    }

    /// `event_type`, as a JSON integer or a decimal string.
    pub fn event_type(&self) -> Result<i64, PayloadError> {
        event_type_of(&self.fields)
    }

    /// Whether its signature was checked; false when it was accepted without
    /// one (`auth.allow_unsigned`, or an unsigned type on the secret path).
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// The `stream_id`, when it is a string, for log context.
    pub fn stream_id(&self) -> Option<&str> {
        self.fields.get("stream_id").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::super::signature::expected_sign;
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;
    const WINDOW: TimeWindow = TimeWindow {
        clock_skew_secs: 60,
        max_validity_secs: 600,
        expiry_grace_secs: 0,
    };

    fn parse(value: Value) -> UnverifiedCallback {
        UnverifiedCallback::parse(value.to_string().as_bytes()).unwrap()
    }

    fn authenticator() -> Authenticator {
        Authenticator::with_keys(vec![SecretString::from("key")], WINDOW)
    }

    #[test]
    fn fields_read_as_serde_json_reads_them_repeated_keys_included() {
        let body =
            br#"{"b":1,"a":{"y":[1.50,"x"],"x":null},"b":"2","big":123456789012345678901234}"#;
        let expected: Map<String, Value> = serde_json::from_slice(body).unwrap();
        let parsed = UnverifiedCallback::parse(body).unwrap();
        assert_eq!(parsed.fields, expected);
        assert_eq!(
            serde_json::to_string(&parsed.fields).unwrap(),
            r#"{"b":"2","a":{"y":[1.50,"x"],"x":null},"big":123456789012345678901234}"#
        );
    }

    #[test]
    fn the_stream_id_hint_is_cut_at_128_characters() {
        let hint = |stream_id: &str| parse(json!({ "stream_id": stream_id })).stream_id_hint();
        assert_eq!(hint("live_1"), Some("live_1".to_owned()));
        assert_eq!(hint(&"直".repeat(300)), Some("直".repeat(128)));
        assert_eq!(parse(json!({ "stream_id": 5 })).stream_id_hint(), None);
    }

    #[test]
    fn only_json_objects_parse() {
        assert!(matches!(
            UnverifiedCallback::parse(b"{\"app\":yourapp}"),
            Err(PayloadError::InvalidJson(_))
        ));
        assert!(matches!(
            UnverifiedCallback::parse(b"\xff\xfe"),
            Err(PayloadError::InvalidJson(_))
        ));
        assert!(matches!(
            UnverifiedCallback::parse(b""),
            Err(PayloadError::InvalidJson(_))
        ));
        // Broken JSON of another kind is still broken JSON, and so is
        // nesting past serde_json's limit whatever the outer kind.
        let too_deep = format!("{}{}", "[".repeat(1_000), "]".repeat(1_000));
        for body in ["[1,", "{\"a\":1} x", "tru", too_deep.as_str()] {
            assert!(
                matches!(
                    UnverifiedCallback::parse(body.as_bytes()),
                    Err(PayloadError::InvalidJson(_))
                ),
                "{body}"
            );
        }
        for body in ["[]", "1", "\"x\"", "null"] {
            assert_eq!(
                UnverifiedCallback::parse(body.as_bytes()).unwrap_err(),
                PayloadError::NotAnObject,
                "{body}"
            );
        }
    }

    #[test]
    fn verification_checks_t_then_sign_then_window() {
        let auth = authenticator();
        let t = NOW + 600;
        let good = expected_sign("key", t);
        let cases = [
            (json!({"sign": good}), AuthError::TMissing),
            (json!({"t": "soon", "sign": good}), AuthError::TNotInteger),
            (json!({"t": t}), AuthError::SignMissing),
            (json!({"t": t, "sign": 5}), AuthError::SignMissing),
            (
                json!({"t": t, "sign": "0".repeat(32)}),
                AuthError::SignMismatch,
            ),
            (
                json!({"t": NOW - 61, "sign": expected_sign("key", NOW - 61)}),
                AuthError::Expired,
            ),
            (
                json!({"t": NOW + 661, "sign": expected_sign("key", NOW + 661)}),
                AuthError::TooFarInFuture,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                auth.verify(parse(body.clone()), NOW).unwrap_err(),
                expected,
                "{body}"
            );
        }
    }

    #[test]
    fn t_as_a_string_verifies_against_its_decimal_text() {
        let t = NOW + 5;
        let body = json!({"t": t.to_string(), "sign": expected_sign("key", t), "event_type": 100});
        assert!(authenticator().verify(parse(body), NOW).is_ok());
    }

    #[test]
    fn verified_callbacks_keep_every_field_but_sign_in_order() {
        let t = NOW + 5;
        let body = format!(
            r#"{{"z":1,"event_type":100,"sign":"{}","t":{t},"a":{{"n":12345678901234567890123}}}}"#,
            expected_sign("key", t)
        );
        let verified = authenticator()
            .verify(UnverifiedCallback::parse(body.as_bytes()).unwrap(), NOW)
            .unwrap();
        let keys: Vec<&str> = verified.fields().keys().map(String::as_str).collect();
        assert_eq!(keys, ["z", "event_type", "t", "a"]);
        assert_eq!(
            serde_json::to_string(&verified.fields()["a"]).unwrap(),
            r#"{"n":12345678901234567890123}"#
        );
    }

    #[test]
    fn unsigned_mode_accepts_without_sign_and_still_drops_it() {
        let auth = Authenticator::unsigned(WINDOW);
        let verified = auth
            .verify(parse(json!({"event_type": 1, "sign": "x"})), NOW)
            .unwrap();
        assert!(!verified.fields().contains_key("sign"));
    }

    #[test]
    fn unsigned_types_pass_without_t_and_sign_only_on_the_secret_path() {
        let auth = authenticator().allowing_unsigned_on_secret_path(vec![314, 321]);
        let secret = auth.on_secret_path();
        let relay = json!({"event_type": 314, "task_id": "1"});
        assert_eq!(
            auth.verify(parse(relay.clone()), NOW).unwrap_err(),
            AuthError::TMissing,
            "not on the secret path"
        );
        let verified = secret.verify(parse(relay), NOW).unwrap();
        assert!(!verified.is_signed());
        let t = NOW + 600;
        let cases = [
            (json!({"event_type": 100}), AuthError::TMissing),
            (json!({"event_type": "abc"}), AuthError::TMissing),
            (json!({}), AuthError::TMissing),
            (json!({"event_type": 314, "t": t}), AuthError::SignMissing),
            (json!({"event_type": 314, "sign": "x"}), AuthError::TMissing),
            (
                json!({"event_type": 321, "t": t, "sign": "0".repeat(32)}),
                AuthError::SignMismatch,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                secret.verify(parse(body.clone()), NOW).unwrap_err(),
                expected,
                "{body}"
            );
        }
        let signed = json!({"event_type": 100, "t": t, "sign": expected_sign("key", t)});
        assert!(secret.verify(parse(signed), NOW).unwrap().is_signed());
        let plain = Authenticator::with_keys(vec![SecretString::from("key")], WINDOW);
        assert!(
            plain
                .on_secret_path()
                .verify(parse(json!({"event_type": 314})), NOW)
                .is_err(),
            "no type is allowed unsigned unless configured"
        );
    }

    #[test]
    fn event_type_must_be_an_integer() {
        let auth = Authenticator::unsigned(WINDOW);
        let cases = [
            (json!({}), Err(PayloadError::EventTypeMissing)),
            (
                json!({"event_type": null}),
                Err(PayloadError::EventTypeMissing),
            ),
            (
                json!({"event_type": "abc"}),
                Err(PayloadError::EventTypeNotInteger),
            ),
            (
                json!({"event_type": 1.5}),
                Err(PayloadError::EventTypeNotInteger),
            ),
            (json!({"event_type": 100}), Ok(100)),
            (json!({"event_type": "200"}), Ok(200)),
        ];
        for (body, expected) in cases {
            let verified = auth.verify(parse(body.clone()), NOW).unwrap();
            assert_eq!(verified.event_type(), expected, "{body}");
        }
    }
}
