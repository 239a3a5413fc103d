//! The record: what the spool stores and every sink receives for one callback.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::protocol::{
    AudioAudit, EventView, Highlight, ImageAudit, LiveSummary, PayloadError, Push, PushException,
    Quality, RECORDING_EVENT_TYPE, Reconciled, RecordException, RecordStatus, Recording, Relay,
    Screenshot, Stream, StreamMonitor, Subtitles, VerifiedCallback, classify, event_id,
    event_type_name,
};

/// One accepted callback as sinks see it, serialised as
/// `{"id", "received_at", "event_type", "stream", "event", <view>?, "warnings"?}`
/// where `<view>` is the typed view under the key named for its type
/// (`recording` for 100, `push` for 0/1, `screenshot`, `relay`, …).
/// `event` is exactly what CSS sent minus `sign`; typed conveniences sit beside it.
/// (One field per view rather than a flattened enum: serde's `flatten` loses
/// numbers under serde_json's `arbitrary_precision`, which we need. Each view
/// is boxed so a record stays small whichever it holds.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Event id: derived from the content without `sign` and `t`; stable across retries.
    pub id: String,
    /// When recordhook accepted it, RFC 3339 UTC.
    pub received_at: String,
    /// The callback's event type: its `event_type`, except that a 344 whose
    /// content is an average-score assessment is a 345 (the documented
    /// samples of 345 say 344). `event` keeps the number as received.
    pub event_type: i64,
    /// The stream the callback is about, named the same way whatever its type
    /// (empty in records stored before it existed).
    #[serde(default)]
    pub stream: Stream,
    /// Every received field except `sign`, in the order received, values unchanged.
    pub event: Map<String, Value>,
    /// Typed view of a recording callback (`event_type = 100`) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<Recording>,
    /// Typed view of a 0 and 1: push ended, started callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<Box<Push>>,
    /// Typed view of a 200 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<Box<Screenshot>>,
    /// Typed view of a 314 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Box<Relay>>,
    /// Typed view of a 315 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_audit: Option<Box<AudioAudit>>,
    /// Typed view of a 317 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_audit: Option<Box<ImageAudit>>,
    /// Typed view of a 321 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_exception: Option<Box<PushException>>,
    /// Typed view of a 328 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_monitor: Option<Box<StreamMonitor>>,
    /// Typed view of a 332 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_status: Option<Box<RecordStatus>>,
    /// Typed view of a 338 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitles: Option<Box<Subtitles>>,
    /// Typed view of a 341 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_exception: Option<Box<RecordException>>,
    /// Typed view of a 343 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_control: Option<Box<Quality>>,
    /// Typed view of a 344 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessment_threshold: Option<Box<Quality>>,
    /// Typed view of a 345 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessment_average: Option<Box<Quality>>,
    /// Typed view of a 347 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase: Option<Box<Subtitles>>,
    /// Typed view of a 348 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_summary: Option<Box<LiveSummary>>,
    /// Typed view of a 349 callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highlight: Option<Box<Highlight>>,
    /// True when no signature was checked: an event type allowed unsigned on
    /// the secret path (`auth.unsigned_event_types`), or `auth.allow_unsigned`.
    /// (False for a reconciled record: Tencent's signed API vouched for it.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsigned: bool,
    /// How it reached recordhook: `live` (CSS posted it; left out of the
    /// JSON, so live records read as they always did) or `reconciled`.
    #[serde(default, skip_serializing_if = "Source::is_live")]
    pub source: Source,
    /// For a reconciled record: what Tencent's API said about the callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<Box<Reconciled>>,
    /// Problems found in the content; the callback was accepted regardless.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How a record reached recordhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
        let mut record = Self {
            id,
            received_at: humantime::format_rfc3339_millis(received_at).to_string(),
            event_type,
            stream,
            recording: None,
            push: None,
            screenshot: None,
            relay: None,
            audio_audit: None,
            image_audit: None,
            push_exception: None,
            stream_monitor: None,
            record_status: None,
            subtitles: None,
            record_exception: None,
            quality_control: None,
            assessment_threshold: None,
            assessment_average: None,
            erase: None,
            live_summary: None,
            highlight: None,
            unsigned,
            source: if reconciled.is_some() {
                Source::Reconciled
            } else {
                Source::Live
            },
            reconciled,
            warnings: Vec::new(),
            event: Map::new(),
        };
        if event_type == RECORDING_EVENT_TYPE {
            record.recording = Some(Recording::read(&event, &mut warnings));
        } else if let Some(view) = EventView::read(event_type, &event, &mut warnings) {
            record.set_view(view);
        } else if event_type_name(event_type).is_none() {
            warnings.push(format!(
                "event_type {event_type} is not a documented CSS event type; stored and \
                 delivered without a typed view"
            ));
        }
        record.event = event;
        record.warnings = warnings;
        Ok(record)
    }

    /// Puts `view` under the key named for its type.
    fn set_view(&mut self, view: EventView) {
        match view {
            EventView::Push(view) => self.push = Some(Box::new(view)),
            EventView::Screenshot(view) => self.screenshot = Some(Box::new(view)),
            EventView::Relay(view) => self.relay = Some(Box::new(view)),
            EventView::AudioAudit(view) => self.audio_audit = Some(Box::new(view)),
            EventView::ImageAudit(view) => self.image_audit = Some(Box::new(view)),
            EventView::PushException(view) => self.push_exception = Some(Box::new(view)),
            EventView::StreamMonitor(view) => self.stream_monitor = Some(Box::new(view)),
            EventView::RecordStatus(view) => self.record_status = Some(Box::new(view)),
            EventView::Subtitles(view) => self.subtitles = Some(Box::new(view)),
            EventView::RecordException(view) => self.record_exception = Some(Box::new(view)),
            EventView::QualityControl(view) => self.quality_control = Some(Box::new(view)),
            EventView::AssessmentThreshold(view) => {
                self.assessment_threshold = Some(Box::new(view))
            }
            EventView::AssessmentAverage(view) => self.assessment_average = Some(Box::new(view)),
            EventView::Erase(view) => self.erase = Some(Box::new(view)),
            EventView::LiveSummary(view) => self.live_summary = Some(Box::new(view)),
            EventView::Highlight(view) => self.highlight = Some(Box::new(view)),
        }
    }

    /// The stream this record is about, when known.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream.stream_id.as_deref()
    }

    /// The VOD file id, when known.
    pub fn file_id(&self) -> Option<&str> {
        self.recording.as_ref().and_then(|r| r.file_id.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Authenticator, TimeWindow, UnverifiedCallback};
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
        assert!(record.recording.is_none());
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
