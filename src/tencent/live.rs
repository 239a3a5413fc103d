//! The request and response models of the two CSS (`live`, version
//! 2018-08-01) actions reconciliation uses, with Tencent's field names as the
//! official SDK defines them (`tencentcloud-sdk-python-live`,
//! `tencentcloud/live/v20180801/models.py`):
//!
//! - `DescribeCallbackRecordsList`: the callbacks CSS sent for one stream and
//!   what the receiver answered — the record to compare recordhook's spool with.
//! - `DescribeLiveStreamEventList`: push start/stop events — which streams
//!   existed in a window, to know what to ask the first action about.
//!
//! Responses are read leniently: every field is optional (Tencent omits
//! fields), unknown fields are ignored (Tencent adds them), and integers may
//! come as decimal strings.

use serde::{Deserialize, Serialize};

/// The API version both actions belong to (`X-TC-Version`).
pub const VERSION: &str = "2018-08-01";
/// The product both actions belong to: the TC3 credential scope's service.
pub const SERVICE: &str = "live";
/// The action listing the callbacks sent for a stream.
pub const ACTION_CALLBACK_RECORDS: &str = "DescribeCallbackRecordsList";
/// The action listing push start/stop events.
pub const ACTION_STREAM_EVENTS: &str = "DescribeLiveStreamEventList";
/// Longest `EndTime - StartTime` of a `DescribeCallbackRecordsList` query.
pub const MAX_RECORDS_WINDOW_SECS: i64 = 86_400;
/// How far back `DescribeCallbackRecordsList` reaches.
pub const MAX_RECORDS_LOOKBACK_SECS: i64 = 14 * 86_400;
/// Largest `PageSize` of `DescribeLiveStreamEventList`.
pub const MAX_EVENTS_PAGE_SIZE: i64 = 100;
/// Most results one `DescribeLiveStreamEventList` query can page through
/// (`PageNum * PageSize`); a busier window must be split.
pub const MAX_EVENTS_RESULTS: i64 = 10_000;

/// `DescribeCallbackRecordsList`'s input. Tencent requires the first five
/// fields; the window may span at most a day ([`MAX_RECORDS_WINDOW_SECS`])
/// and reach back at most 14 days ([`MAX_RECORDS_LOOKBACK_SECS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeCallbackRecordsListRequest {
    /// Window start: `YYYY-MM-DDThh:mm:ssZ`, or `YYYY-MM-DD hh:mm:ss` in
    /// Beijing time ([`super::time`]). The answer's times use the same format.
    pub start_time: String,
    /// Window end, in the same formats.
    pub end_time: String,
    /// The stream name, matched exactly.
    pub stream_name: String,
    /// The page, from 1.
    pub page_num: i64,
    /// Records per page.
    pub page_size: i64,
    /// Only this event type (0 push ended, 1 push started, 100 recording,
    /// 200 screenshot, per the SDK's list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<i64>,
    /// Only this callback result: 0 succeeded, anything else failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_code: Option<i64>,
}

/// `DescribeCallbackRecordsList`'s output (inside `Response`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeCallbackRecordsListResponse {
    /// The callbacks on this page.
    pub data_info_list: Option<Vec<CallbackEventInfo>>,
    /// The page number.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub page_num: Option<i64>,
    /// Records per page.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub page_size: Option<i64>,
    /// Records in the whole window.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub total_num: Option<i64>,
    /// Pages in the whole window.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub total_page: Option<i64>,
    /// Tencent's id for this request, for support tickets.
    pub request_id: Option<String>,
}

/// One callback CSS sent, and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", from = "RawCallbackEventInfo")]
pub struct CallbackEventInfo {
    /// When the event happened, in the request's time format.
    pub event_time: Option<String>,
    /// The callback's `event_type` (0, 1, 100, 200, ...).
    pub event_type: Option<i64>,
    /// The callback body CSS sent (a JSON document as a string). It holds
    /// the callback's `sign`: never log it.
    pub request: Option<String>,
    /// What the receiver answered.
    pub response: Option<String>,
    /// When the receiver answered, in the request's time format.
    pub response_time: Option<String>,
    /// The callback's result: 0 succeeded, anything else failed.
    pub result_code: Option<i64>,
    /// The stream name. The SDK calls the field `StreamId`, some of
    /// Tencent's pages `StreamName`: either is read, `StreamId` first.
    pub stream_id: Option<String>,
}

/// [`CallbackEventInfo`] as it arrives. Separate so that both names of the
/// stream field can be read even when both are present (a serde `alias`
/// would reject that as a duplicate field and lose the whole page).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawCallbackEventInfo {
    event_time: Option<String>,
    #[serde(deserialize_with = "lenient::option_i64")]
    event_type: Option<i64>,
    request: Option<String>,
    response: Option<String>,
    response_time: Option<String>,
    #[serde(deserialize_with = "lenient::option_i64")]
    result_code: Option<i64>,
    stream_id: Option<String>,
    stream_name: Option<String>,
}

impl From<RawCallbackEventInfo> for CallbackEventInfo {
    fn from(raw: RawCallbackEventInfo) -> Self {
        Self {
            event_time: raw.event_time,
            event_type: raw.event_type,
            request: raw.request,
            response: raw.response,
            response_time: raw.response_time,
            result_code: raw.result_code,
            stream_id: raw.stream_id.or(raw.stream_name),
        }
    }
}

/// `DescribeLiveStreamEventList`'s input. Only the window is required; it
/// may span at most a month and reach back at most two months; a query
/// pages through at most [`MAX_EVENTS_RESULTS`] results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeLiveStreamEventListRequest {
    /// Window start, UTC: `YYYY-MM-DDThh:mm:ssZ`.
    pub start_time: String,
    /// Window end, UTC, not after now.
    pub end_time: String,
    /// The push path (`AppName`; Tencent's default is `live`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// The push domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// The stream name: a fuzzy match unless `is_strict` is 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// The page, from 1 (Tencent's default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_num: Option<i64>,
    /// Events per page, 1 to [`MAX_EVENTS_PAGE_SIZE`] (Tencent's default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<i64>,
    /// 1 leaves out pushes that failed to start; 0 (default) keeps all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_filter: Option<i64>,
    /// 1 matches `stream_name` exactly; 0 (default) fuzzily.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_strict: Option<i64>,
    /// 1 sorts by end time ascending; 0 (default) descending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_asc: Option<i64>,
}

impl DescribeLiveStreamEventListRequest {
    /// A query for the window `start_time`..`end_time` with every optional
    /// field left to Tencent's default.
    pub fn new(start_time: impl Into<String>, end_time: impl Into<String>) -> Self {
        Self {
            start_time: start_time.into(),
            end_time: end_time.into(),
            app_name: None,
            domain_name: None,
            stream_name: None,
            page_num: None,
            page_size: None,
            is_filter: None,
            is_strict: None,
            is_asc: None,
        }
    }
}

/// `DescribeLiveStreamEventList`'s output (inside `Response`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeLiveStreamEventListResponse {
    /// The push events on this page.
    pub event_list: Option<Vec<StreamEventInfo>>,
    /// The page number.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub page_num: Option<i64>,
    /// Events per page.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub page_size: Option<i64>,
    /// Events in the whole query.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub total_num: Option<i64>,
    /// Pages in the whole query.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub total_page: Option<i64>,
    /// Tencent's id for this request, for support tickets.
    pub request_id: Option<String>,
}

/// One push, from start to stop.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct StreamEventInfo {
    /// The push path.
    pub app_name: Option<String>,
    /// The push domain.
    pub domain_name: Option<String>,
    /// The stream name.
    pub stream_name: Option<String>,
    /// When the push started, UTC (`YYYY-MM-DDThh:mm:ssZ`).
    pub stream_start_time: Option<String>,
    /// When the push ended, UTC.
    pub stream_end_time: Option<String>,
    /// Why the push stopped, as Tencent words it.
    pub stop_reason: Option<String>,
    /// How long the push lasted, in seconds.
    #[serde(deserialize_with = "lenient::option_i64")]
    pub duration: Option<i64>,
    /// The pusher's IP (`-` for a push from Tencent's internal network).
    pub client_ip: Option<String>,
    /// The resolution, e.g. `1920*1080`.
    pub resolution: Option<String>,
}

/// Integers as Tencent sometimes sends them.
mod lenient {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// An optional integer: a JSON integer, a string of one (`"42"`), or
    /// null, absent or `""` for none. The error never repeats the value: the
    /// fields around it (a callback's `Request`) may hold a signature.
    pub(super) fn option_i64<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        // Through `Value`, because with serde_json's `arbitrary_precision`
        // (on in this crate) a visitor is handed numbers as maps.
        match Option::<Value>::deserialize(deserializer)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => number
                .as_i64()
                .map(Some)
                .ok_or_else(|| D::Error::custom("expected a 64-bit integer, got another number")),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => text
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom("expected an integer, got a non-decimal string")),
            Some(_) => Err(D::Error::custom("expected an integer or a decimal string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_callback_records_request_serializes_with_tencents_names() {
        let request = DescribeCallbackRecordsListRequest {
            start_time: "2024-05-01T00:00:00Z".to_owned(),
            end_time: "2024-05-01T01:00:00Z".to_owned(),
            stream_name: "room_1".to_owned(),
            page_num: 1,
            page_size: 100,
            event_type: Some(100),
            result_code: None,
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "StartTime": "2024-05-01T00:00:00Z",
                "EndTime": "2024-05-01T01:00:00Z",
                "StreamName": "room_1",
                "PageNum": 1,
                "PageSize": 100,
                "EventType": 100,
            })
        );
    }

    #[test]
    fn a_stream_events_request_sends_only_the_fields_that_are_set() {
        let minimal = DescribeLiveStreamEventListRequest::new("a", "b");
        assert_eq!(
            serde_json::to_value(&minimal).unwrap(),
            json!({"StartTime": "a", "EndTime": "b"})
        );
        let full = DescribeLiveStreamEventListRequest {
            app_name: Some("live".to_owned()),
            domain_name: Some("push.example.com".to_owned()),
            stream_name: Some("room_1".to_owned()),
            page_num: Some(2),
            page_size: Some(MAX_EVENTS_PAGE_SIZE),
            is_filter: Some(1),
            is_strict: Some(1),
            is_asc: Some(0),
            ..minimal
        };
        assert_eq!(
            serde_json::to_value(&full).unwrap(),
            json!({
                "StartTime": "a", "EndTime": "b", "AppName": "live",
                "DomainName": "push.example.com", "StreamName": "room_1",
                "PageNum": 2, "PageSize": 100, "IsFilter": 1, "IsStrict": 1, "IsAsc": 0,
            })
        );
    }

    #[test]
    fn a_callback_records_response_reads_every_field() {
        let response: DescribeCallbackRecordsListResponse = serde_json::from_value(json!({
            "DataInfoList": [{
                "EventTime": "2024-05-01T00:10:00Z",
                "EventType": 100,
                "Request": "{\"event_type\":100}",
                "Response": "{\"code\":0}",
                "ResponseTime": "2024-05-01T00:10:01Z",
                "ResultCode": 0,
                "StreamId": "room_1",
            }],
            "PageNum": 1, "PageSize": 100, "TotalNum": 1, "TotalPage": 1,
            "RequestId": "req-1",
        }))
        .unwrap();
        assert_eq!(
            response,
            DescribeCallbackRecordsListResponse {
                data_info_list: Some(vec![CallbackEventInfo {
                    event_time: Some("2024-05-01T00:10:00Z".to_owned()),
                    event_type: Some(100),
                    request: Some("{\"event_type\":100}".to_owned()),
                    response: Some("{\"code\":0}".to_owned()),
                    response_time: Some("2024-05-01T00:10:01Z".to_owned()),
                    result_code: Some(0),
                    stream_id: Some("room_1".to_owned()),
                }]),
                page_num: Some(1),
                page_size: Some(100),
                total_num: Some(1),
                total_page: Some(1),
                request_id: Some("req-1".to_owned()),
            }
        );
    }

    #[test]
    fn the_stream_is_read_from_stream_name_too_and_stream_id_wins_when_both_are_sent() {
        let info: CallbackEventInfo =
            serde_json::from_value(json!({"StreamName": "by_name"})).unwrap();
        assert_eq!(info.stream_id.as_deref(), Some("by_name"));
        let both: CallbackEventInfo =
            serde_json::from_value(json!({"StreamName": "by_name", "StreamId": "by_id"})).unwrap();
        assert_eq!(both.stream_id.as_deref(), Some("by_id"));
    }

    #[test]
    fn missing_fields_are_none_and_unknown_fields_are_ignored() {
        let response: DescribeCallbackRecordsListResponse =
            serde_json::from_value(json!({"RequestId": "r", "SomethingNew": [1, 2]})).unwrap();
        assert_eq!(
            response,
            DescribeCallbackRecordsListResponse {
                request_id: Some("r".to_owned()),
                ..Default::default()
            }
        );
        let info: CallbackEventInfo = serde_json::from_value(json!({})).unwrap();
        assert_eq!(info, CallbackEventInfo::default());
    }

    #[test]
    fn integers_may_come_as_decimal_strings_and_empty_strings_are_none() {
        let response: DescribeLiveStreamEventListResponse = serde_json::from_value(json!({
            "EventList": [{"Duration": "3600", "StreamName": "s"}, {"Duration": ""}],
            "PageNum": "2", "PageSize": 100, "TotalNum": "-1", "TotalPage": null,
        }))
        .unwrap();
        assert_eq!(response.page_num, Some(2));
        assert_eq!(response.total_num, Some(-1));
        assert_eq!(response.total_page, None);
        let events = response.event_list.unwrap();
        assert_eq!(events[0].duration, Some(3600));
        assert_eq!(events[1].duration, None);
    }

    #[test]
    fn integer_fields_reject_what_is_not_an_integer_without_repeating_it() {
        let rows = [
            (json!({"TotalNum": "12x"}), "a string with a letter"),
            (json!({"TotalNum": "1.5"}), "a decimal fraction in a string"),
            (json!({"TotalNum": 1.5}), "a fraction"),
            (json!({"TotalNum": true}), "a boolean"),
            (json!({"TotalNum": [1]}), "an array"),
            (json!({"TotalNum": "secret-ish"}), "a word"),
        ];
        for (body, why) in rows {
            let err =
                serde_json::from_value::<DescribeCallbackRecordsListResponse>(body).expect_err(why);
            assert!(!err.to_string().contains("secret-ish"), "{why}: {err}");
        }
    }

    #[test]
    fn a_stream_events_response_reads_every_field() {
        let response: DescribeLiveStreamEventListResponse = serde_json::from_str(
            r#"{"EventList": [{"AppName": "live", "DomainName": "push.example.com",
                "StreamName": "room_1", "StreamStartTime": "2024-05-01T00:00:00Z",
                "StreamEndTime": "2024-05-01T01:00:00Z", "StopReason": "normal",
                "Duration": 3600, "ClientIp": "203.0.113.9", "Resolution": "1920*1080"}],
                "PageNum": 1, "PageSize": 10, "TotalNum": 1, "TotalPage": 1, "RequestId": "r"}"#,
        )
        .unwrap();
        assert_eq!(
            response.event_list.unwrap(),
            vec![StreamEventInfo {
                app_name: Some("live".to_owned()),
                domain_name: Some("push.example.com".to_owned()),
                stream_name: Some("room_1".to_owned()),
                stream_start_time: Some("2024-05-01T00:00:00Z".to_owned()),
                stream_end_time: Some("2024-05-01T01:00:00Z".to_owned()),
                stop_reason: Some("normal".to_owned()),
                duration: Some(3600),
                client_ip: Some("203.0.113.9".to_owned()),
                resolution: Some("1920*1080".to_owned()),
            }]
        );
        assert_eq!(response.request_id.as_deref(), Some("r"));
    }
}
