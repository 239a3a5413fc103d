//! The fields of a recording-file callback (`event_type = 100`), read
//! leniently: integers may arrive as decimal strings, fields come and go over
//! the years, and a value of the wrong type becomes a warning, never a
//! rejection — an authentic recording must not be lost because Tencent
//! changed its payload.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::FieldReader;

/// `event_type` of a recording-file callback.
pub const RECORDING_EVENT_TYPE: i64 = 100;

/// Fields whose absence is worth a warning: without them a recording cannot be found or used.
const EXPECTED_FIELDS: [&str; 6] = [
    "stream_id",
    "file_id",
    "video_url",
    "start_time",
    "end_time",
    "duration",
];

/// The typed view of a recording callback, beside (never inside) the event as received.
/// Every field is optional because any of them may be missing or mistyped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recording {
    /// The customer's APPID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<u64>,
    /// Push domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Push path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appname: Option<String>,
    /// Stream name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// Same as `stream_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// VOD file id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Recording file id (newer payloads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_file_id: Option<String>,
    /// Recording template id; empty for global tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_temp_id: Option<String>,
    /// `flv`, `hls`, `mp4` or `aac`, lower-cased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_format: Option<String>,
    /// Recording task id (CreateRecordTask recordings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Unix time writing the file began (not the start of the content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    /// Unix time writing the file ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// Microsecond part of `start_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time_usec: Option<i64>,
    /// Microsecond part of `end_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time_usec: Option<i64>,
    /// File duration in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// File size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// Custom parameters of the push URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_param: Option<String>,
    /// Download URL of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_url: Option<String>,
    /// PTS when the stream was first pulled for recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_start_time: Option<i64>,
    /// Bitrate of the recorded output, kbps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_bps: Option<i64>,
    /// `callback_ext` parsed from its JSON string (`video_codec`, `resolution`, `session_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_ext: Option<Value>,
    /// Legacy field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_id: Option<String>,
    /// Legacy field (`vod2Flag`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vod2_flag: Option<i64>,
    /// Unix time the recorded content starts: `end_time - duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_start_time: Option<i64>,
    /// Received fields this version does not know; kept in the event, listed here
    /// so operators notice when Tencent adds fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_fields: Vec<String>,
}

impl Recording {
    /// Reads a recording from the fields of a verified callback, appending a
    /// warning for every missing expected field and every unusable value.
    pub fn read(fields: &Map<String, Value>, warnings: &mut Vec<String>) -> Self {
        let mut reader = FieldReader::new(fields, warnings);
        let mut recording = Recording {
            appid: reader.unsigned("appid"),
            app: reader.string("app"),
            appname: reader.string("appname"),
            stream_id: reader.string("stream_id"),
            channel_id: reader.string("channel_id"),
            file_id: reader.string("file_id"),
            record_file_id: reader.string("record_file_id"),
            record_temp_id: reader.string("record_temp_id"),
            file_format: reader.string("file_format").map(|f| f.to_ascii_lowercase()),
            task_id: reader.string("task_id"),
            start_time: reader.int("start_time"),
            end_time: reader.int("end_time"),
            start_time_usec: reader.int("start_time_usec"),
            end_time_usec: reader.int("end_time_usec"),
            duration: reader.int("duration"),
            file_size: reader.unsigned("file_size"),
            stream_param: reader.string("stream_param"),
            video_url: reader.string("video_url"),
            media_start_time: reader.int("media_start_time"),
            record_bps: reader.int("record_bps"),
            callback_ext: reader.json_text("callback_ext"),
            video_id: reader.string("video_id"),
            vod2_flag: reader.int("vod2Flag"),
            content_start_time: None,
            unknown_fields: Vec::new(),
        };
        let unknown_fields = reader.unknown_fields();
        for name in EXPECTED_FIELDS {
            if fields.get(name).is_none_or(Value::is_null) {
                warnings.push(format!("field `{name}` is missing"));
            }
        }
        recording.content_start_time = recording
            .end_time
            .zip(recording.duration)
            .and_then(|(end, duration)| end.checked_sub(duration));
        recording.unknown_fields = unknown_fields;
        recording
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: Value) -> (Recording, Vec<String>) {
        let Value::Object(fields) = value else {
            unreachable!("tests pass objects")
        };
        let mut warnings = Vec::new();
        (Recording::read(&fields, &mut warnings), warnings)
    }

    fn sample(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_2018_sample_reads_without_warnings() {
        let (recording, warnings) = read(sample("record-v2018.json"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(recording.appid, Some(12345678));
        assert_eq!(recording.stream_id.as_deref(), Some("stream_test"));
        assert_eq!(recording.file_size, Some(277941079));
        assert_eq!(recording.content_start_time, Some(1545049971 - 2962));
        assert!(recording.unknown_fields.is_empty());
    }

    #[test]
    fn the_2022_sample_reads_its_new_fields_and_parses_callback_ext() {
        let (recording, warnings) = read(sample("record-v2022.json"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(recording.record_file_id.as_deref(), Some("1234567890"));
        assert_eq!(recording.start_time_usec, Some(316441));
        assert_eq!(recording.media_start_time, Some(135802));
        assert_eq!(recording.record_bps, Some(0));
        assert_eq!(
            recording.callback_ext,
            Some(json!({"video_codec": "h264", "resolution": "640x480"}))
        );
    }

    #[test]
    fn integers_sent_as_strings_are_read_as_integers() {
        let (recording, warnings) = read(json!({
            "file_size": "277941079", "duration": "2962", "end_time": "1545049971",
            "appid": "12345678", "vod2Flag": "1",
            "stream_id": "s", "file_id": "f", "video_url": "u", "start_time": 1
        }));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(recording.file_size, Some(277941079));
        assert_eq!(recording.content_start_time, Some(1545049971 - 2962));
        assert_eq!(recording.vod2_flag, Some(1));
    }

    #[test]
    fn mistyped_and_missing_fields_become_warnings() {
        let (recording, warnings) = read(json!({
            "file_size": "abc", "duration": 1.5, "stream_id": ["x"], "callback_ext": "{not json",
            "file_format": "MP4", "file_id": 42
        }));
        assert_eq!(recording.file_size, None);
        assert_eq!(recording.file_format.as_deref(), Some("mp4"));
        assert_eq!(recording.file_id.as_deref(), Some("42"));
        for expected in [
            "field `file_size` should be a non-negative integer but is a string",
            "field `duration` should be an integer but is a number",
            "field `stream_id` should be a string but is an array",
            "field `callback_ext` is not valid JSON text",
            "field `video_url` is missing",
        ] {
            assert!(
                warnings.iter().any(|w| w.starts_with(expected)),
                "{expected} not in {warnings:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_listed_and_start_after_end_is_not_an_error() {
        let (recording, warnings) = read(json!({
            "stream_id": "s", "file_id": "f", "video_url": "u",
            "start_time": 200, "end_time": 100, "duration": 10, "brand_new": 1, "t": 5, "event_type": 100
        }));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(recording.unknown_fields, ["brand_new"]);
        assert_eq!(recording.content_start_time, Some(90));
    }
}
