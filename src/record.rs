//! The record: what the spool stores and every sink receives for one callback.

use std::fmt;
use std::time::SystemTime;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::{self, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::protocol::{
    EventTypeSpec, EventView, PayloadError, Reconciled, Recording, Stream, VerifiedCallback,
    classify, event_id,
};

/// One accepted callback as sinks see it, serialised as
/// `{"id", "received_at", "event_type", "stream", "event", <view>?, "unsigned"?,
/// "source"?, "reconciled"?, "warnings"?}` where `<view>` is the typed view
/// under the key [`crate::protocol::EVENT_TYPES`] names for its type
/// (`recording` for 100, `push` for 0/1, `screenshot`, `relay`, …).
/// `event` is exactly what CSS sent minus `sign`; typed conveniences sit beside it.
/// (Serialised by hand rather than with a flattened enum: serde's `flatten`
/// loses numbers under serde_json's `arbitrary_precision`, which we need.)
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Event id: derived from the content without `sign` and `t`; stable across retries.
    pub id: String,
    /// When recordhook accepted it, RFC 3339 UTC.
    pub received_at: String,
    /// The callback's event type: its `event_type`, except that a 344 whose
    /// content is an average-score assessment is a 345 (the documented
    /// samples of 345 say 344). `event` keeps the number as received.
    /// It also decides the key the view sits under.
    pub event_type: i64,
    /// The stream the callback is about, named the same way whatever its type
    /// (empty in records stored before it existed).
    pub stream: Stream,
    /// Every received field except `sign`, in the order received, values unchanged.
    pub event: Map<String, Value>,
    /// The typed view of a documented event type: always the view
    /// `event_type` reads (private so that nothing can pair them otherwise).
    view: Option<EventView>,
    /// True when no signature was checked: an event type allowed unsigned on
    /// the secret path (`auth.unsigned_event_types`), or `auth.allow_unsigned`.
    /// (False for a reconciled record: Tencent's signed API vouched for it.)
    pub unsigned: bool,
    /// How it reached recordhook: `live` (CSS posted it; left out of the
    /// JSON, so live records read as they always did) or `reconciled`.
    pub source: Source,
    /// For a reconciled record: what Tencent's API said about the callback.
    pub reconciled: Option<Box<Reconciled>>,
    /// Problems found in the content; the callback was accepted regardless.
    pub warnings: Vec<String>,
}

/// How a record reached recordhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// CSS posted it to the callback endpoint.
    #[default]
    Live,
    /// Reconciliation found it in Tencent's records of what CSS sent, after
    /// it never arrived, and recovered it through the API.
    Reconciled,
}

impl Source {
    /// Whether it is [`Source::Live`].
    pub fn is_live(&self) -> bool {
        *self == Self::Live
    }

    /// Its name, as stored and shown (`live`, `reconciled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Reconciled => "reconciled",
        }
    }
}

/// A record as the spool holds it and sinks receive it: its JSON text,
/// exactly what a file sink writes and a forward sink posts, plus the fields
/// delivery needs without parsing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The event id.
    pub id: String,
    /// The callback's `event_type`.
    pub event_type: i64,
    /// The record serialised as one line of JSON (no newline inside: JSON
    /// escapes them in strings).
    pub json: String,
}

impl StoredRecord {
    /// Parses the full record (for sinks that need its fields).
    pub fn parse(&self) -> Result<Record, serde_json::Error> {
        serde_json::from_str(&self.json)
    }

    /// The record's `stream_id`, for log context on the rare paths that want it.
    pub fn stream_id(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct View {
            #[serde(default)]
            stream: Stream,
            event: Event,
        }
        #[derive(serde::Deserialize)]
        struct Event {
            stream_id: Option<Value>,
        }
        let view = serde_json::from_str::<View>(&self.json).ok()?;
        // Records stored before `stream` existed have only the event's field.
        view.stream
            .stream_id
            .or_else(|| match view.event.stream_id? {
                Value::String(text) => Some(text),
                _ => None,
            })
    }
}

impl TryFrom<&Record> for StoredRecord {
    type Error = serde_json::Error;

    fn try_from(record: &Record) -> Result<Self, Self::Error> {
        Ok(Self {
            id: record.id.clone(),
            event_type: record.event_type,
            json: serde_json::to_string(record)?,
        })
    }
}

impl Record {
    /// Builds the record of a verified callback received at `received_at`.
    /// Fails only when `event_type` is missing or not an integer.
    pub fn from_verified(
        callback: VerifiedCallback,
        received_at: SystemTime,
    ) -> Result<Self, PayloadError> {
        let event_type = classify(callback.event_type()?, callback.fields());
        let reconciled = callback.reconciled().cloned().map(Box::new);
        let unsigned = !callback.is_signed() && reconciled.is_none();
        let id = event_id(callback.fields());
        let event = callback.into_fields();
        let stream = Stream::read(&event);
        let mut warnings = Vec::new();
        let view = match EventTypeSpec::of(event_type) {
            Some(spec) => Some((spec.read)(&event, &mut warnings)),
            None => {
                warnings.push(format!(
                    "event_type {event_type} is not a documented CSS event type; stored and \
                     delivered without a typed view"
                ));
                None
            }
        };
        Ok(Self {
            id,
            received_at: humantime::format_rfc3339_millis(received_at).to_string(),
            event_type,
            stream,
            event,
            view,
            unsigned,
            source: if reconciled.is_some() {
                Source::Reconciled
            } else {
                Source::Live
            },
            reconciled,
            warnings,
        })
    }

    /// The typed view of the callback; `None` for an undocumented type (and
    /// in records stored without one).
    pub fn view(&self) -> Option<&EventView> {
        self.view.as_ref()
    }

    /// The typed view of a recording callback (`event_type = 100`) only.
    pub fn recording(&self) -> Option<&Recording> {
        self.view().and_then(EventView::recording)
    }

    /// The stream this record is about, when known.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream.stream_id.as_deref()
    }

    /// The VOD file id, when known.
    pub fn file_id(&self) -> Option<&str> {
        self.recording().and_then(|r| r.file_id.as_deref())
    }
}

/// The record's JSON: its fields in declaration order, the view under its
/// type's key, optional fields left out when empty. Written by hand because
/// the key of the view depends on the event type (see [`Record`]).
impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let view = match &self.view {
            Some(view) => {
                // Unreachable through the API (only `from_verified` and
                // deserialising set a view, both from the type's row), but
                // a view with no key must not vanish silently.
                let spec = EventTypeSpec::of(self.event_type).ok_or_else(|| {
                    ser::Error::custom(format!(
                        "a record of event_type {} carries a view it has no key for",
                        self.event_type
                    ))
                })?;
                Some((spec.key, view))
            }
            None => None,
        };
        let len = 5
            + usize::from(view.is_some())
            + usize::from(self.unsigned)
            + usize::from(!self.source.is_live())
            + usize::from(self.reconciled.is_some())
            + usize::from(!self.warnings.is_empty());
        let mut out = serializer.serialize_struct("Record", len)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("received_at", &self.received_at)?;
        out.serialize_field("event_type", &self.event_type)?;
        out.serialize_field("stream", &self.stream)?;
        out.serialize_field("event", &self.event)?;
        if let Some((key, view)) = view {
            out.serialize_field(key, view)?;
        }
        if self.unsigned {
            out.serialize_field("unsigned", &self.unsigned)?;
        }
        if !self.source.is_live() {
            out.serialize_field("source", &self.source)?;
        }
        if let Some(reconciled) = &self.reconciled {
            out.serialize_field("reconciled", reconciled)?;
        }
        if !self.warnings.is_empty() {
            out.serialize_field("warnings", &self.warnings)?;
        }
        out.end()
    }
}

/// Reads what [`Record`]'s `Serialize` writes, and every record stored
/// before: `stream`, `unsigned`, `source`, `reconciled` and `warnings` may
/// be missing, the view may be missing or `null`, unknown keys are ignored.
impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Record;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
        let mut id = None;
        let mut received_at = None;
        let mut event_type = None;
        let mut stream = None;
        let mut event = None;
        let mut unsigned = None;
        let mut source = None;
        let mut reconciled = None;
        let mut warnings = None;
        // The views found, by key: which one is the record's depends on
        // `event_type`, and nothing promises that comes first in an object.
        let mut views: Vec<(&'static str, Value)> = Vec::new();
        // Keys as `String`s: a handful of short allocations beside the
        // event's, simpler than an identifier visitor.
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" => once(&mut map, &mut id, "id")?,
                "received_at" => once(&mut map, &mut received_at, "received_at")?,
                "event_type" => once(&mut map, &mut event_type, "event_type")?,
                "stream" => once(&mut map, &mut stream, "stream")?,
                "event" => once(&mut map, &mut event, "event")?,
                "unsigned" => once(&mut map, &mut unsigned, "unsigned")?,
                "source" => once(&mut map, &mut source, "source")?,
                "reconciled" => once(&mut map, &mut reconciled, "reconciled")?,
                "warnings" => once(&mut map, &mut warnings, "warnings")?,
                other => match EventTypeSpec::view_key(other) {
                    Some(key) if views.iter().any(|(seen, _)| *seen == key) => {
                        return Err(de::Error::duplicate_field(key));
                    }
                    Some(key) => views.push((key, map.next_value()?)),
                    // A newer version's field: ignored, as it always was.
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        let event_type: i64 = event_type.ok_or_else(|| de::Error::missing_field("event_type"))?;
        // Through a `Value`, which keeps every number exactly under
        // `arbitrary_precision` (serde's buffering for `flatten` does not).
        let view = EventTypeSpec::of(event_type)
            .and_then(|spec| {
                let (_, stored) = views.into_iter().find(|(key, _)| *key == spec.key)?;
                (!stored.is_null()).then(|| (spec.parse)(stored))
            })
            .transpose()
            .map_err(de::Error::custom)?;
        Ok(Record {
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            received_at: received_at.ok_or_else(|| de::Error::missing_field("received_at"))?,
            event_type,
            stream: stream.unwrap_or_default(),
            event: event.ok_or_else(|| de::Error::missing_field("event"))?,
            view,
            unsigned: unsigned.unwrap_or_default(),
            source: source.unwrap_or_default(),
            reconciled: reconciled.unwrap_or_default(),
            warnings: warnings.unwrap_or_default(),
        })
    }
}

/// Reads the value of a field that may appear once.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Authenticator, EVENT_TYPES, TimeWindow, UnverifiedCallback};
    use std::time::{Duration, UNIX_EPOCH};

    fn verified(body: &str) -> VerifiedCallback {
        let window = TimeWindow {
            clock_skew_secs: 0,
            max_validity_secs: 1,
            expiry_grace_secs: 0,
        };
        Authenticator::unsigned(window)
            .verify(UnverifiedCallback::parse(body.as_bytes()).unwrap(), 0)
            .unwrap()
    }

    #[test]
    fn a_record_serialises_with_the_event_unchanged_and_typed_fields_beside_it() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let body = r#"{"event_type":100,"file_size":"12","t":5,"sign":"s","stream_id":"st","extra":{"a":1.50}}"#;
        let record = Record::from_verified(verified(body), at).unwrap();
        let json: Value = serde_json::to_value(&record).unwrap();
        assert_eq!(json["received_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["event_type"], 100);
        assert_eq!(
            serde_json::to_string(&json["event"]).unwrap(),
            r#"{"event_type":100,"file_size":"12","t":5,"stream_id":"st","extra":{"a":1.50}}"#
        );
        assert_eq!(json["recording"]["file_size"], 12);
        assert_eq!(
            json["recording"]["unknown_fields"],
            serde_json::json!(["extra"])
        );
        assert!(json["warnings"].as_array().is_some_and(|w| !w.is_empty()));
        assert_eq!(record.stream_id(), Some("st"));
        assert_eq!(json["stream"], serde_json::json!({"stream_id": "st"}));
    }

    #[test]
    fn other_event_types_have_no_recording_view() {
        let record =
            Record::from_verified(verified(r#"{"event_type":1,"stream_id":"s"}"#), UNIX_EPOCH)
                .unwrap();
        assert!(record.recording().is_none());
        assert!(record.warnings.is_empty());
        let json = serde_json::to_value(&record).unwrap();
        assert!(json.get("recording").is_none() && json.get("warnings").is_none());
    }

    #[test]
    fn every_record_names_its_stream_whatever_the_type_calls_it() {
        let body = r#"{"event_type":332,"domain":"d","appname":"live","stream_id":"s","appid":1250000000}"#;
        let record = Record::from_verified(verified(body), UNIX_EPOCH).unwrap();
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json["stream"],
            serde_json::json!({"app": "d", "appname": "live", "stream_id": "s", "appid": "1250000000"})
        );
        let bare = Record::from_verified(verified(r#"{"event_type":1}"#), UNIX_EPOCH).unwrap();
        assert_eq!(
            serde_json::to_value(&bare).unwrap()["stream"],
            serde_json::json!({})
        );
    }

    #[test]
    fn a_record_stored_before_the_stream_object_still_names_its_stream() {
        let old = r#"{"id":"x","received_at":"t","event_type":100,"event":{"stream_id":"old"}}"#;
        let record: Record = serde_json::from_str(old).unwrap();
        assert_eq!(record.stream, Stream::default());
        let stored = StoredRecord {
            id: "x".into(),
            event_type: 100,
            json: old.into(),
        };
        assert_eq!(stored.stream_id().as_deref(), Some("old"));
    }

    #[test]
    fn a_live_record_does_not_mention_its_source_and_a_reconciled_one_does() {
        let body = r#"{"event_type":100,"stream_id":"s","file_id":"f","t":5,"sign":"x"}"#;
        let live = Record::from_verified(verified(body), UNIX_EPOCH).unwrap();
        let live_json = serde_json::to_value(&live).unwrap();
        assert!(live_json.get("source").is_none() && live_json.get("reconciled").is_none());
        let provenance = Reconciled {
            event_time: "2026-01-01T00:00:00Z".into(),
            result_code: Some(1),
            response: None,
            request_id: "req-1".into(),
        };
        let recovered = VerifiedCallback::from_tencent_api(
            UnverifiedCallback::parse(body.as_bytes()).unwrap(),
            provenance,
        )
        .unwrap();
        let record = Record::from_verified(recovered, UNIX_EPOCH).unwrap();
        assert_eq!(record.id, live.id, "t and sign never change the event id");
        assert!(!record.unsigned);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["source"], "reconciled");
        assert_eq!(json["reconciled"]["request_id"], "req-1");
        assert_eq!(json["reconciled"]["result_code"], 1);
        assert!(json["event"].get("sign").is_none());
        assert_eq!(serde_json::from_value::<Record>(json).unwrap(), record);
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let record = Record::from_verified(
            verified(r#"{"event_type":100,"stream_id":"s"}"#),
            UNIX_EPOCH,
        )
        .unwrap();
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
    }

    /// Records as the spool stored them before issue 18 (one typed view per
    /// field): one for every sample in `tests/fixtures/events`, both recording
    /// samples, and a few with warnings, an undocumented type and a 344/345.
    const STORED: &str = include_str!("../tests/fixtures/stored-records.jsonl");

    #[test]
    fn records_stored_by_earlier_versions_read_back_and_serialise_byte_for_byte() {
        for line in STORED.lines() {
            let record: Record = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&record).unwrap(), line);
        }
    }

    /// The callbacks of every row of the table, bare, and every documented sample.
    fn callbacks_of_every_event_type() -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events");
        let samples = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap());
        EVENT_TYPES
            .iter()
            .map(|spec| format!(r#"{{"event_type":{}}}"#, spec.number))
            .chain(samples)
            .collect()
    }

    #[test]
    fn a_record_of_every_event_type_carries_its_view_under_its_key_and_round_trips() {
        let stored: Map<String, Value> = STORED
            .lines()
            .map(|line| {
                let record: Value = serde_json::from_str(line).unwrap();
                (record["id"].as_str().unwrap().to_owned(), line.into())
            })
            .collect();
        let mut compared = 0;
        for body in callbacks_of_every_event_type() {
            let record = Record::from_verified(verified(&body), UNIX_EPOCH).unwrap();
            let spec = EventTypeSpec::of(record.event_type).unwrap();
            let json = serde_json::to_value(&record).unwrap();
            let keys: Vec<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .filter_map(|key| EventTypeSpec::view_key(key))
                .collect();
            assert_eq!(keys, [spec.key], "{body}");
            assert!(json[spec.key].is_object(), "{body}");
            let text = serde_json::to_string(&record).unwrap();
            let back: Record = serde_json::from_str(&text).unwrap();
            assert_eq!(back, record, "{body}");
            assert_eq!(serde_json::to_string(&back).unwrap(), text, "{body}");
            assert_eq!(serde_json::from_value::<Record>(json).unwrap(), record);
            // Written as the version before one table wrote it.
            if let Some(Value::String(before)) = stored.get(&record.id) {
                assert_eq!(&text, before, "{body}");
                compared += 1;
            }
        }
        assert!(
            compared >= 19,
            "only {compared} samples matched a stored record"
        );
    }

    #[test]
    fn no_view_key_is_the_name_of_another_record_field() {
        let fields = [
            "id",
            "received_at",
            "event_type",
            "stream",
            "event",
            "unsigned",
            "source",
            "reconciled",
            "warnings",
        ];
        for spec in EVENT_TYPES {
            assert!(!fields.contains(&spec.key), "{}", spec.key);
        }
    }

    #[test]
    fn a_stored_view_is_read_whatever_the_key_order_and_a_null_or_foreign_one_is_none() {
        let reordered =
            r#"{"push":{"errcode":3},"event":{},"received_at":"t","id":"x","event_type":1}"#;
        let record: Record = serde_json::from_str(reordered).unwrap();
        assert_eq!(
            serde_json::to_value(&record).unwrap()["push"],
            serde_json::json!({"errcode": 3})
        );
        for other in [
            r#"{"id":"x","received_at":"t","event_type":1,"event":{},"push":null}"#,
            r#"{"id":"x","received_at":"t","event_type":999,"event":{},"push":{"errcode":3}}"#,
            r#"{"id":"x","received_at":"t","event_type":1,"event":{},"from_2030":[1]}"#,
        ] {
            let record: Record = serde_json::from_str(other).unwrap();
            assert!(record.view().is_none(), "{other}");
        }
    }

    #[test]
    fn a_malformed_stored_record_is_refused_with_the_reason() {
        let cases = [
            (
                r#"{"id":"x","received_at":"t","event":{}}"#,
                "missing field `event_type`",
            ),
            (
                r#"{"id":"x","received_at":"t","event_type":1}"#,
                "missing field `event`",
            ),
            (
                r#"{"id":"x","id":"y","received_at":"t","event_type":1,"event":{}}"#,
                "duplicate field `id`",
            ),
            (
                r#"{"id":"x","received_at":"t","event_type":1,"event":{},"push":{"errcode":"x"}}"#,
                "invalid type",
            ),
        ];
        for (json, expected) in cases {
            let err = serde_json::from_str::<Record>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::protocol::{Authenticator, TimeWindow, UnverifiedCallback};
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    /// Any JSON value, nested up to a few levels, numbers of every kind.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            ".{0,16}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Parsing an accepted callback and serialising `event` gives back
        /// every received field but `sign`, unchanged, in the order received.
        #[test]
        fn the_event_keeps_every_received_field(
            fields in prop::collection::vec((".{0,10}", json()), 0..10),
            event_type in prop_oneof![Just(100i64), any::<i64>()],
        ) {
            let mut body = Map::new();
            body.insert("event_type".to_owned(), event_type.into());
            body.insert("sign".to_owned(), "ab".into());
            for (key, value) in fields {
                if key != "event_type" {
                    body.insert(key, value);
                }
            }
            let text = serde_json::to_string(&body).unwrap();
            let window = TimeWindow { clock_skew_secs: 0, max_validity_secs: 1, expiry_grace_secs: 0 };
            let verified = Authenticator::unsigned(window)
                .verify(UnverifiedCallback::parse(text.as_bytes()).unwrap(), 0)
                .unwrap();
            let record = Record::from_verified(verified, UNIX_EPOCH).unwrap();
            let mut expected = body.clone();
            expected.shift_remove("sign");
            prop_assert_eq!(serde_json::to_string(&record.event).unwrap(), serde_json::to_string(&expected).unwrap());
            // And through the spool's storage form and back.
            let stored = StoredRecord::try_from(&record).unwrap();
            prop_assert_eq!(stored.parse().unwrap(), record);
        }
    }
}
