//! The stream a callback is about, named the same way whatever its type.
//!
//! CSS names the push domain `app` in some types and `domain` in others, the
//! push path `appname` or `path`, the stream `stream_id`, `streamId` or
//! `channel_id`; routing and logs need one name for each.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which stream a callback is about; each field present when the callback carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stream {
    /// Push domain: `app`, else `domain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Push path: `appname`, else `path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appname: Option<String>,
    /// Stream name: `stream_id`, else `streamId`, `channel_id`, `channelId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// The account's APPID (`appid`, or `appId` as one table writes it), as
    /// decimal text so no size of number is lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
}

/// Longest value kept: the identity goes into every log line, and a hostile
/// body must not flood the log through it.
const MAX_LEN: usize = 256;

impl Stream {
    /// Reads the identity from a callback's fields. Never warns: a mistyped
    /// field is reported by the type's own view; here it is just absent.
    pub fn read(fields: &Map<String, Value>) -> Self {
        Self {
            app: first_text(fields, &["app", "domain"]),
            appname: first_text(fields, &["appname", "path"]),
            stream_id: first_text(
                fields,
                &["stream_id", "streamId", "channel_id", "channelId"],
            ),
            appid: first_text(fields, &["appid", "appId"]),
        }
    }
}

/// The first of `names` that holds a non-empty string or a number, as text.
fn first_text(fields: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        let text = match fields.get(*name)? {
            Value::String(text) => Cow::Borrowed(text.trim()),
            Value::Number(number) => Cow::Owned(number.to_string()),
            _ => return None,
        };
        (!text.is_empty()).then(|| prefix(&text, MAX_LEN).to_owned())
    })
}

/// The first `max_chars` characters of `text`, borrowed: the caller copies
/// only what it keeps, however long a hostile value is.
pub(super) fn prefix(text: &str, max_chars: usize) -> &str {
    text.char_indices()
        .nth(max_chars)
        .map_or(text, |(cut, _)| &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: Value) -> Stream {
        let Value::Object(fields) = value else {
            unreachable!("tests pass objects")
        };
        Stream::read(&fields)
    }

    fn stream(app: &str, appname: &str, stream_id: &str, appid: &str) -> Stream {
        let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        Stream {
            app: some(app),
            appname: some(appname),
            stream_id: some(stream_id),
            appid: some(appid),
        }
    }

    #[test]
    fn every_naming_of_the_stream_reads_the_same() {
        let cases = [
            (
                json!({"app": "d", "appname": "live", "stream_id": "s", "appid": 12}),
                stream("d", "live", "s", "12"),
            ),
            (
                json!({"domain": "d", "path": "live", "stream_id": "s", "appid": "12"}),
                stream("d", "live", "s", "12"),
            ),
            (
                json!({"domain": "d", "appname": "live", "stream_id": "s"}),
                stream("d", "live", "s", ""),
            ),
            (
                json!({"app": "d", "appname": "live", "streamId": "s", "channelId": "c"}),
                stream("d", "live", "s", ""),
            ),
            (
                json!({"channel_id": "c", "appId": 1250000000}),
                stream("", "", "c", "1250000000"),
            ),
            (
                json!({"stream_id": "", "channel_id": "c"}),
                stream("", "", "c", ""),
            ),
            (json!({"stream_id": ["x"], "app": null}), Stream::default()),
        ];
        for (body, expected) in cases {
            assert_eq!(read(body.clone()), expected, "{body}");
        }
    }

    #[test]
    fn an_absent_identity_serialises_as_an_empty_object() {
        assert_eq!(serde_json::to_string(&Stream::default()).unwrap(), "{}");
    }

    #[test]
    fn a_long_value_is_cut() {
        let long = "x".repeat(10_000);
        assert_eq!(
            read(json!({ "stream_id": long }))
                .stream_id
                .map(|s| s.len()),
            Some(MAX_LEN)
        );
        // Characters, not bytes: a name in Chinese is cut at a character.
        let stream_id = read(json!({ "stream_id": "直播".repeat(200) })).stream_id;
        assert_eq!(stream_id, Some("直播".repeat(MAX_LEN / 2)));
        let exact = "流".repeat(MAX_LEN);
        assert_eq!(
            read(json!({ "stream_id": exact.clone() })).stream_id,
            Some(exact)
        );
    }
}
