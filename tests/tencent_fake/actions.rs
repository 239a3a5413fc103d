//! The two live API actions the fake answers, as pure functions of the
//! request's JSON body, the seeded data and `now`:
//! `DescribeCallbackRecordsList` (the callbacks CSS sent for one stream) and
//! `DescribeLiveStreamEventList` (push sessions). Fields and limits are those
//! of the official SDK's request and response models and their docs; where
//! the docs say nothing, the rule here is a guess, marked as one.

use serde_json::{Map, Value, json};

use super::times::{self, TimeFormat};
use super::{SentCallback, StreamSession};

/// One day: the longest `DescribeCallbackRecordsList` window.
pub const CALLBACK_RECORDS_MAX_SPAN_SECS: i64 = 86_400;
/// 14 days: how far back `DescribeCallbackRecordsList` may start.
pub const CALLBACK_RECORDS_MAX_AGE_SECS: i64 = 14 * 86_400;
/// The largest `PageSize` either action takes. Documented for
/// `DescribeLiveStreamEventList`; a guess for `DescribeCallbackRecordsList`,
/// whose docs give no limit (a client within it is safe either way).
pub const MAX_PAGE_SIZE: i64 = 100;
/// One month, taken as 31 days: the longest `DescribeLiveStreamEventList`
/// window.
pub const EVENT_LIST_MAX_SPAN_SECS: i64 = 31 * 86_400;
/// Two months, taken as 60 days (a guess): how far back
/// `DescribeLiveStreamEventList` may start.
pub const EVENT_LIST_MAX_AGE_SECS: i64 = 60 * 86_400;
/// `DescribeLiveStreamEventList` serves only the first 10000 results:
/// `PageNum * PageSize` may not exceed it.
pub const EVENT_LIST_MAX_RESULTS: i64 = 10_000;

/// An API error: Tencent's code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Tencent's error code (`MissingParameter`, `InvalidParameterValue`, …).
    pub code: &'static str,
    /// What was wrong, naming the parameter.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn value(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterValue", message)
    }
}

/// A request body's parameters, checked against the action's known names.
struct Params<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Params<'a> {
    /// The body must be a JSON object; a parameter the action does not know
    /// is `UnknownParameter` (Tencent has that code; whether this action
    /// uses it for a stray field is a guess, and it catches misspelled
    /// parameters in a client under test).
    fn new(body: &'a Value, known: &[&str]) -> Result<Self, ApiError> {
        let map = body
            .as_object()
            .ok_or_else(|| ApiError::new("InvalidParameter", "The body is not a JSON object."))?;
        if let Some(name) = map.keys().find(|name| !known.contains(&name.as_str())) {
            return Err(ApiError::new(
                "UnknownParameter",
                format!("The parameter {name} is not recognized."),
            ));
        }
        Ok(Self { map })
    }

    /// A string parameter. A value of another type (`null` included) is
    /// `InvalidParameter`: the SDK omits unset fields, so a client that
    /// sends `null` is doing something the SDK never does.
    fn string(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(ApiError::new(
                "InvalidParameter",
                format!("The parameter {name} must be a string."),
            )),
        }
    }

    /// An integer parameter (a JSON integer, not a string or a float).
    fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(value) => value.as_i64().map(Some).ok_or_else(|| {
                ApiError::new(
                    "InvalidParameter",
                    format!("The parameter {name} must be an integer."),
                )
            }),
        }
    }

    fn required_string(&self, name: &str) -> Result<&'a str, ApiError> {
        self.string(name)?.ok_or_else(|| missing(name))
    }

    fn required_integer(&self, name: &str) -> Result<i64, ApiError> {
        self.integer(name)?.ok_or_else(|| missing(name))
    }

    /// A string filter: absent or empty means no filter.
    fn filter(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        Ok(self.string(name)?.filter(|text| !text.is_empty()))
    }

    /// A 0/1 switch, 0 when absent.
    fn switch(&self, name: &str) -> Result<bool, ApiError> {
        match self.integer(name)? {
            None | Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(other) => Err(ApiError::value(format!(
                "{name} must be 0 or 1, not {other}."
            ))),
        }
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::new(
        "MissingParameter",
        format!("The parameter {name} is missing."),
    )
}

/// Parses a time parameter in either format; `allowed` says which.
fn time_param(
    name: &str,
    text: &str,
    allowed: &[TimeFormat],
) -> Result<(i64, TimeFormat), ApiError> {
    times::parse(text)
        .filter(|(_, format)| allowed.contains(format))
        .ok_or_else(|| ApiError::value(format!("{name} {text:?} is not a valid time.")))
}

/// The items of page `page_num` (1-based) of `page_size`, and the page count.
fn page<T>(items: Vec<T>, page_num: i64, page_size: i64) -> (Vec<T>, usize) {
    let size = usize::try_from(page_size).unwrap_or(usize::MAX).max(1);
    let skip = usize::try_from(page_num.saturating_sub(1))
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    let pages = items.len().div_ceil(size);
    (items.into_iter().skip(skip).take(size).collect(), pages)
}

/// `DescribeCallbackRecordsList`: the callbacks sent for one stream
/// (`StreamName`, exact) with `EventTime` in `[StartTime, EndTime]`,
/// optionally only one `EventType` and one `ResultCode` (exact match: the
/// docs say "0 is success, others failure" without saying how the filter
/// reads it), in time order (ties in the order they were seeded), paged.
/// `StartTime`, `EndTime`, `StreamName`, `PageNum` and `PageSize` are
/// required. Times are written back in the format `StartTime` used.
pub fn describe_callback_records_list(
    body: &Value,
    callbacks: &[SentCallback],
    now: i64,
) -> Result<Value, ApiError> {
    let params = Params::new(
        body,
        &[
            "StartTime",
            "EndTime",
            "StreamName",
            "PageNum",
            "PageSize",
            "EventType",
            "ResultCode",
        ],
    )?;
    let start_text = params.required_string("StartTime")?;
    let end_text = params.required_string("EndTime")?;
    let stream_name = params.required_string("StreamName")?;
    let page_num = params.required_integer("PageNum")?;
    let page_size = params.required_integer("PageSize")?;
    let event_type = params.integer("EventType")?;
    let result_code = params.integer("ResultCode")?;
    let both = [TimeFormat::Iso, TimeFormat::Beijing];
    let (start, format) = time_param("StartTime", start_text, &both)?;
    let (end, _) = time_param("EndTime", end_text, &both)?;
    if end < start {
        return Err(ApiError::value("EndTime is before StartTime."));
    }
    if end - start > CALLBACK_RECORDS_MAX_SPAN_SECS {
        return Err(ApiError::value(
            "The span between StartTime and EndTime cannot exceed 1 day.",
        ));
    }
    if start < now - CALLBACK_RECORDS_MAX_AGE_SECS {
        return Err(ApiError::value(
            "Only the data of the last 14 days can be queried.",
        ));
    }
    if page_num < 1 {
        return Err(ApiError::value("PageNum must be at least 1."));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::value(format!(
            "PageSize must be from 1 to {MAX_PAGE_SIZE}."
        )));
    }
    let mut matching: Vec<&SentCallback> = callbacks
        .iter()
        .filter(|sent| {
            sent.stream_name == stream_name
                && (start..=end).contains(&sent.event_time)
                && event_type.is_none_or(|wanted| sent.event_type == wanted)
                && result_code.is_none_or(|wanted| sent.result_code == wanted)
        })
        .collect();
    matching.sort_by_key(|sent| sent.event_time);
    let total = matching.len();
    let (shown, pages) = page(matching, page_num, page_size);
    let list: Vec<Value> = shown
        .into_iter()
        .map(|sent| {
            json!({
                "EventTime": times::format(sent.event_time, format),
                "EventType": sent.event_type,
                "Request": sent.request,
                "Response": sent.response,
                "ResponseTime": times::format(sent.response_time, format),
                "ResultCode": sent.result_code,
                "StreamId": sent.stream_name,
            })
        })
        .collect();
    Ok(json!({
        "DataInfoList": list,
        "PageNum": page_num,
        "PageSize": page_size,
        "TotalNum": total,
        "TotalPage": pages,
    }))
}

/// `DescribeLiveStreamEventList`: the push sessions that overlap
/// `[StartTime, EndTime]` (UTC, ISO 8601 only, as documented), filtered by
/// `DomainName` and `AppName` (exact), `StreamName` (substring, or exact with
/// `IsStrict=1`) and `IsFilter=1` (only sessions whose push succeeded),
/// ordered by end time, newest first unless `IsAsc=1` (a live session, with
/// no end yet, counts as the newest; ties keep the order they were seeded),
/// paged by `PageNum` (default 1) and `PageSize` (1 to 100, default 10).
pub fn describe_live_stream_event_list(
    body: &Value,
    sessions: &[StreamSession],
    now: i64,
) -> Result<Value, ApiError> {
    let params = Params::new(
        body,
        &[
            "StartTime",
            "EndTime",
            "AppName",
            "DomainName",
            "StreamName",
            "PageNum",
            "PageSize",
            "IsFilter",
            "IsStrict",
            "IsAsc",
        ],
    )?;
    let start_text = params.required_string("StartTime")?;
    let end_text = params.required_string("EndTime")?;
    let app = params.filter("AppName")?;
    let domain = params.filter("DomainName")?;
    let stream_name = params.filter("StreamName")?;
    let page_num = params.integer("PageNum")?.unwrap_or(1);
    let page_size = params.integer("PageSize")?.unwrap_or(10);
    let only_succeeded = params.switch("IsFilter")?;
    let strict = params.switch("IsStrict")?;
    let ascending = params.switch("IsAsc")?;
    let (start, _) = time_param("StartTime", start_text, &[TimeFormat::Iso])?;
    let (end, _) = time_param("EndTime", end_text, &[TimeFormat::Iso])?;
    if end < start {
        return Err(ApiError::value("EndTime is before StartTime."));
    }
    if end > now {
        return Err(ApiError::value(
            "EndTime cannot be later than the current time.",
        ));
    }
    if end - start > EVENT_LIST_MAX_SPAN_SECS {
        return Err(ApiError::value(
            "The span between StartTime and EndTime cannot exceed 1 month.",
        ));
    }
    if start < now - EVENT_LIST_MAX_AGE_SECS {
        return Err(ApiError::value(
            "Only the records of the last 2 months can be queried.",
        ));
    }
    if page_num < 1 {
        return Err(ApiError::value("PageNum must be at least 1."));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::value(format!(
            "PageSize must be from 1 to {MAX_PAGE_SIZE}."
        )));
    }
    if page_num.saturating_mul(page_size) > EVENT_LIST_MAX_RESULTS {
        return Err(ApiError::value(format!(
            "Only the first {EVENT_LIST_MAX_RESULTS} results can be queried."
        )));
    }
    let mut matching: Vec<&StreamSession> = sessions
        .iter()
        .filter(|session| {
            session.start <= end
                && session.end.is_none_or(|ended| ended >= start)
                && domain.is_none_or(|wanted| session.domain == wanted)
                && app.is_none_or(|wanted| session.app == wanted)
                && stream_name.is_none_or(|wanted| {
                    if strict {
                        session.stream_name == wanted
                    } else {
                        session.stream_name.contains(wanted)
                    }
                })
                && !(only_succeeded && session.push_failed)
        })
        .collect();
    let end_key = |session: &&StreamSession| session.end.unwrap_or(i64::MAX);
    if ascending {
        matching.sort_by_key(end_key);
    } else {
        matching.sort_by_key(|session| std::cmp::Reverse(end_key(session)));
    }
    let total = matching.len();
    let (shown, pages) = page(matching, page_num, page_size);
    let list: Vec<Value> = shown
        .into_iter()
        .map(|session| {
            json!({
                "AppName": session.app,
                "DomainName": session.domain,
                "StreamName": session.stream_name,
                "StreamStartTime": times::format(session.start, TimeFormat::Iso),
                "StreamEndTime": session
                    .end
                    .map(|ended| times::format(ended, TimeFormat::Iso))
                    .unwrap_or_default(),
                "StopReason": session.stop_reason,
                "Duration": session.end.map_or(0, |ended| ended - session.start),
                "ClientIp": session.client_ip,
                "Resolution": session.resolution,
            })
        })
        .collect();
    Ok(json!({
        "EventList": list,
        "PageNum": page_num,
        "PageSize": page_size,
        "TotalNum": total,
        "TotalPage": pages,
    }))
}
