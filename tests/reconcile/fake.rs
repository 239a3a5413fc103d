//! The fake's own rules, through HTTP with the test signer (`signer`), and
//! its verifier against the worked example of Tencent's "Signature v3"
//! document.

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::Test;
use crate::signer::{Call, SECRET_ID, SECRET_KEY, beijing, error_code, iso, now};
use crate::tencent_fake::signature::{self, Expected};
use crate::tencent_fake::{
    Answer, DESCRIBE_CALLBACK_RECORDS_LIST, DESCRIBE_LIVE_STREAM_EVENT_LIST, FakeOptions,
    FakeTencent, SentCallback, StreamSession,
};
use crate::test;

pub fn tests() -> Vec<Test> {
    vec![
        test!(the_verifier_accepts_the_worked_example_of_tencents_signature_v3_document),
        test!(the_verifier_builds_the_canonical_request_of_the_documents_current_example),
        test!(a_correctly_signed_request_is_answered_with_data_and_a_request_id),
        test!(a_request_with_a_tampered_body_is_refused_with_signature_failure),
        test!(a_timestamp_more_than_five_minutes_old_is_refused_as_expired),
        test!(authentication_failures_are_answered_with_tencents_codes),
        test!(malformed_requests_are_answered_with_tencents_error_codes),
        test!(a_callback_records_window_over_a_day_is_refused),
        test!(paging_25_callback_records_by_10_gives_3_pages_with_every_record_once),
        test!(a_beijing_time_query_gets_beijing_time_event_times_back),
        test!(callback_records_match_the_stream_exactly_and_filter_by_event_type),
        test!(the_event_list_returns_overlapping_sessions_newest_end_first),
        test!(the_event_list_matches_stream_names_by_substring_unless_strict),
        test!(the_event_list_refuses_pages_beyond_the_first_10000_results),
        test!(injected_faults_answer_the_next_requests_then_the_fake_recovers),
        test!(the_rate_limit_throttles_requests_over_it_within_a_second),
        test!(the_fake_records_requests_without_their_secrets),
    ]
}

async fn start() -> FakeTencent {
    FakeTencent::start(FakeOptions::new(SECRET_ID, SECRET_KEY)).await
}

/// A `DescribeCallbackRecordsList` body for `stream` over `[start, end]`.
fn callback_query(stream: &str, start: &str, end: &str, page_num: i64, page_size: i64) -> Value {
    json!({
        "StartTime": start,
        "EndTime": end,
        "StreamName": stream,
        "PageNum": page_num,
        "PageSize": page_size,
    })
}

async fn callbacks(fake: &FakeTencent, body: &Value) -> Value {
    Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, body)
        .send(fake)
        .await
}

async fn events(fake: &FakeTencent, body: &Value) -> Value {
    Call::new(DESCRIBE_LIVE_STREAM_EVENT_LIST, body)
        .send(fake)
        .await
}

fn ok(response: &Value) -> &Value {
    assert_eq!(error_code(response), None, "{response}");
    response
}

/// The stream names of an `EventList`, in order.
fn stream_names(response: &Value) -> Vec<&str> {
    ok(response)["EventList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["StreamName"].as_str().unwrap())
        .collect()
}

/// The worked example of the English "Signature v3" document (the version
/// that signs `content-type;host` and publishes the SecretKey
/// `Gu5t9xGARNpq86cd98joQYCN3EXAMPLE` and the signature `72e494ea…`).
fn documented_example() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (
            "authorization",
            "TC3-HMAC-SHA256 Credential=AKID**********************0123456789EXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168",
        ),
        ("content-type", "application/json; charset=utf-8"),
        ("host", "cvm.tencentcloudapi.com"),
        ("x-tc-action", "DescribeInstances"),
        ("x-tc-timestamp", "1551113065"),
        ("x-tc-version", "2017-03-12"),
        ("x-tc-region", "ap-guangzhou"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

const DOCUMENTED_BODY: &str =
    r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;

async fn the_verifier_accepts_the_worked_example_of_tencents_signature_v3_document() {
    let headers = documented_example();
    let expected = Expected {
        secret_id: "AKID**********************0123456789EXAMPLE",
        secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        token: None,
        service: "cvm",
    };
    let body = DOCUMENTED_BODY.as_bytes();
    // Every intermediate value the document publishes.
    assert_eq!(
        hex::encode(Sha256::digest(body)),
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    );
    let signed = ["content-type".to_owned(), "host".to_owned()];
    let canonical = signature::canonical_request(&headers, &signed, body).unwrap();
    assert_eq!(
        canonical,
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n\
         content-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    );
    let to_sign = signature::string_to_sign(1_551_113_065, "2019-02-25", "cvm", &canonical);
    assert_eq!(
        to_sign,
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
         5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    );
    // The whole request verifies at its own time, and a minute either side;
    // a changed body, key or clock does not.
    for now in [1_551_113_065, 1_551_113_005, 1_551_113_125] {
        assert_eq!(signature::verify(&headers, body, &expected, now), Ok(()));
    }
    let tampered = DOCUMENTED_BODY.replace("\"Limit\": 1", "\"Limit\": 2");
    let refused = signature::verify(&headers, tampered.as_bytes(), &expected, 1_551_113_065);
    assert_eq!(refused.unwrap_err().code(), "AuthFailure.SignatureFailure");
    let wrong_key = Expected {
        secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLf",
        ..expected
    };
    let refused = signature::verify(&headers, body, &wrong_key, 1_551_113_065);
    assert_eq!(refused.unwrap_err().code(), "AuthFailure.SignatureFailure");
    let refused = signature::verify(&headers, body, &expected, 1_551_113_065 + 301);
    assert_eq!(refused.unwrap_err().code(), "AuthFailure.SignatureExpire");
}

/// The current Chinese and English documents sign `x-tc-action` too, with
/// its value lowercased, and publish the canonical request's hash (their key
/// is masked, so the final signature cannot be checked).
async fn the_verifier_builds_the_canonical_request_of_the_documents_current_example() {
    let headers = documented_example();
    let signed = [
        "content-type".to_owned(),
        "host".to_owned(),
        "x-tc-action".to_owned(),
    ];
    let canonical =
        signature::canonical_request(&headers, &signed, DOCUMENTED_BODY.as_bytes()).unwrap();
    assert!(
        canonical.contains("\nx-tc-action:describeinstances\n\ncontent-type;host;x-tc-action\n"),
        "{canonical}"
    );
    assert_eq!(
        hex::encode(Sha256::digest(canonical.as_bytes())),
        "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
    );
}

async fn a_correctly_signed_request_is_answered_with_data_and_a_request_id() {
    let fake = start().await;
    let now = now();
    fake.add_callback(SentCallback::new("s1", 1, now - 100));
    let response = callbacks(
        &fake,
        &callback_query("s1", &iso(now - 3600), &iso(now), 1, 10),
    )
    .await;
    assert_eq!(ok(&response)["TotalNum"], 1, "{response}");
    assert!(
        response["RequestId"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{response}"
    );
    assert_eq!(
        fake.stats().answered.get(DESCRIBE_CALLBACK_RECORDS_LIST),
        Some(&1)
    );
}

async fn a_request_with_a_tampered_body_is_refused_with_signature_failure() {
    let fake = start().await;
    let now = now();
    let mut call = Call::new(
        DESCRIBE_CALLBACK_RECORDS_LIST,
        &callback_query("s1", &iso(now - 3600), &iso(now), 1, 10),
    );
    call.sent_body = Some(callback_query("s2", &iso(now - 3600), &iso(now), 1, 10).to_string());
    let response = call.send(&fake).await;
    assert_eq!(
        error_code(&response),
        Some("AuthFailure.SignatureFailure"),
        "{response}"
    );
    assert!(response["RequestId"].is_string(), "{response}");
    let stats = fake.stats();
    assert_eq!(
        stats.auth_failures.get("AuthFailure.SignatureFailure"),
        Some(&1),
        "{stats:?}"
    );
    assert!(stats.answered.is_empty(), "{stats:?}");
}

async fn a_timestamp_more_than_five_minutes_old_is_refused_as_expired() {
    let fake = start().await;
    let now = now();
    let body = callback_query("s1", &iso(now - 3600), &iso(now), 1, 10);
    for (age, answer) in [
        (301 + 5, Some("AuthFailure.SignatureExpire")),
        (-(301 + 5), Some("AuthFailure.SignatureExpire")),
        (240, None),
    ] {
        let mut call = Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &body);
        call.timestamp = now - age;
        let response = call.send(&fake).await;
        assert_eq!(
            error_code(&response),
            answer,
            "a timestamp {age} s old: {response}"
        );
    }
}

async fn authentication_failures_are_answered_with_tencents_codes() {
    let fake = FakeTencent::start(FakeOptions {
        token: Some("the-token".to_owned()),
        ..FakeOptions::new(SECRET_ID, SECRET_KEY)
    })
    .await;
    let now = now();
    let body = callback_query("s1", &iso(now - 3600), &iso(now), 1, 10);
    let valid = Call {
        token: Some("the-token".to_owned()),
        ..Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &body)
    };
    let rows: Vec<(&str, Call, &str)> = vec![
        (
            "a wrong SecretKey",
            Call {
                secret_key: format!("{SECRET_KEY}x"),
                ..valid.clone()
            },
            "AuthFailure.SignatureFailure",
        ),
        (
            "an unknown SecretId",
            Call {
                secret_id: "AKIDsomeoneelse".to_owned(),
                ..valid.clone()
            },
            "AuthFailure.SecretIdNotFound",
        ),
        (
            "no token",
            Call {
                token: None,
                ..valid.clone()
            },
            "AuthFailure.TokenFailure",
        ),
        (
            "a wrong token",
            Call {
                token: Some("another-token".to_owned()),
                ..valid.clone()
            },
            "AuthFailure.TokenFailure",
        ),
        (
            "a scope date that is not the timestamp's UTC date",
            Call {
                scope_date: Some(crate::signer::utc_date(now + 86_400)),
                ..valid.clone()
            },
            "AuthFailure.SignatureFailure",
        ),
        (
            "a scope for another service",
            Call {
                service: "cvm".to_owned(),
                ..valid.clone()
            },
            "AuthFailure.SignatureFailure",
        ),
        (
            "signed headers without host",
            Call {
                signed_headers: vec!["content-type", "x-tc-action"],
                ..valid.clone()
            },
            "AuthFailure.SignatureFailure",
        ),
        (
            "signed headers without content-type",
            Call {
                signed_headers: vec!["host"],
                ..valid.clone()
            },
            "AuthFailure.SignatureFailure",
        ),
    ];
    for (what, call, code) in &rows {
        let response = call.send(&fake).await;
        assert_eq!(error_code(&response), Some(*code), "{what}: {response}");
    }
    // The same request, right, passes: each row failed for its own reason.
    let response = valid.send(&fake).await;
    ok(&response);
    let stats = fake.stats();
    assert_eq!(
        stats.total_auth_failures(),
        u64::try_from(rows.len()).unwrap(),
        "{stats:?}"
    );
}

async fn malformed_requests_are_answered_with_tencents_error_codes() {
    let fake = start().await;
    let now = now();
    let query = callback_query("s1", &iso(now - 3600), &iso(now), 1, 10);
    let without = |name: &str| {
        let mut body = query.clone();
        body.as_object_mut().unwrap().remove(name);
        body
    };
    let with = |name: &str, value: Value| {
        let mut body = query.clone();
        body[name] = value;
        body
    };
    let rows: Vec<(&str, Call, &str)> = vec![
        (
            "an unknown action",
            Call::new("DescribeLiveStreamOnlineList", &query),
            "InvalidAction",
        ),
        (
            "another API version",
            Call {
                version: "2017-03-12".to_owned(),
                ..Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &query)
            },
            "NoSuchVersion",
        ),
        (
            "no StreamName",
            Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &without("StreamName")),
            "MissingParameter",
        ),
        (
            "no PageSize",
            Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &without("PageSize")),
            "MissingParameter",
        ),
        (
            "PageNum as a string",
            Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &with("PageNum", json!("1"))),
            "InvalidParameter",
        ),
        (
            "a misspelled parameter",
            Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &with("Stream", json!("s1"))),
            "UnknownParameter",
        ),
        (
            "a time without a zone or a space",
            Call::new(
                DESCRIBE_CALLBACK_RECORDS_LIST,
                &with("StartTime", json!("2024-05-01T10:00:00")),
            ),
            "InvalidParameterValue",
        ),
        (
            "PageNum 0",
            Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &with("PageNum", json!(0))),
            "InvalidParameterValue",
        ),
        (
            "a start older than 14 days",
            Call::new(
                DESCRIBE_CALLBACK_RECORDS_LIST,
                &callback_query(
                    "s1",
                    &iso(now - 15 * 86_400),
                    &iso(now - 15 * 86_400 + 60),
                    1,
                    10,
                ),
            ),
            "InvalidParameterValue",
        ),
        (
            "an event list in Beijing time (the action takes UTC only)",
            Call::new(
                DESCRIBE_LIVE_STREAM_EVENT_LIST,
                &json!({ "StartTime": beijing(now - 3600), "EndTime": beijing(now - 60) }),
            ),
            "InvalidParameterValue",
        ),
        (
            "an event list ending in the future",
            Call::new(
                DESCRIBE_LIVE_STREAM_EVENT_LIST,
                &json!({ "StartTime": iso(now - 3600), "EndTime": iso(now + 3600) }),
            ),
            "InvalidParameterValue",
        ),
        (
            "an event list window over a month",
            Call::new(
                DESCRIBE_LIVE_STREAM_EVENT_LIST,
                &json!({ "StartTime": iso(now - 32 * 86_400), "EndTime": iso(now) }),
            ),
            "InvalidParameterValue",
        ),
        (
            "an event list PageSize over 100",
            Call::new(
                DESCRIBE_LIVE_STREAM_EVENT_LIST,
                &json!({ "StartTime": iso(now - 3600), "EndTime": iso(now), "PageSize": 101 }),
            ),
            "InvalidParameterValue",
        ),
    ];
    for (what, call, code) in &rows {
        let response = call.send(&fake).await;
        assert_eq!(error_code(&response), Some(*code), "{what}: {response}");
        assert!(
            response["Error"]["Message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {response}"
        );
    }
    assert_eq!(fake.stats().total_auth_failures(), 0);
}

async fn a_callback_records_window_over_a_day_is_refused() {
    let fake = start().await;
    let now = now();
    let end = now - 60;
    for (span, answer) in [(86_400 + 1, Some("InvalidParameterValue")), (86_400, None)] {
        let response = callbacks(
            &fake,
            &callback_query("s1", &iso(end - span), &iso(end), 1, 10),
        )
        .await;
        assert_eq!(
            error_code(&response),
            answer,
            "a span of {span} s: {response}"
        );
    }
    // The same rule in Beijing time.
    let response = callbacks(
        &fake,
        &callback_query("s1", &beijing(end - 86_401), &beijing(end), 1, 10),
    )
    .await;
    assert_eq!(
        error_code(&response),
        Some("InvalidParameterValue"),
        "{response}"
    );
}

async fn paging_25_callback_records_by_10_gives_3_pages_with_every_record_once() {
    let fake = start().await;
    let now = now();
    let first = now - 3000;
    for index in 0..25 {
        let mut sent = SentCallback::new("paged", 1, first + index * 60);
        sent.request = format!("callback {index}");
        fake.add_callback(sent);
    }
    let mut seen = Vec::new();
    for page in 1..=4 {
        let response = callbacks(
            &fake,
            &callback_query("paged", &iso(now - 3600), &iso(now), page, 10),
        )
        .await;
        let response = ok(&response);
        assert_eq!(response["TotalNum"], 25, "page {page}: {response}");
        assert_eq!(response["TotalPage"], 3, "page {page}: {response}");
        assert_eq!(response["PageNum"], page, "page {page}: {response}");
        assert_eq!(response["PageSize"], 10, "page {page}: {response}");
        let list = response["DataInfoList"].as_array().unwrap();
        let want = [10, 10, 5, 0][usize::try_from(page - 1).unwrap()];
        assert_eq!(list.len(), want, "page {page}: {response}");
        seen.extend(
            list.iter()
                .map(|item| item["Request"].as_str().unwrap().to_owned()),
        );
    }
    let want: Vec<String> = (0..25).map(|index| format!("callback {index}")).collect();
    assert_eq!(seen, want, "every record once, in time order");
}

async fn a_beijing_time_query_gets_beijing_time_event_times_back() {
    let fake = start().await;
    let now = now();
    // 23:30 UTC is 07:30 the next day in Beijing: the date changes too.
    let at = (now - 2 * 86_400).div_euclid(86_400) * 86_400 + 23 * 3600 + 30 * 60;
    let mut sent = SentCallback::new("bj", 0, at);
    sent.response_time = at + 2;
    fake.add_callback(sent);
    let utc_date = crate::signer::utc_date(at);
    let response = callbacks(
        &fake,
        &callback_query("bj", &beijing(at - 600), &beijing(at + 600), 1, 10),
    )
    .await;
    let item = &ok(&response)["DataInfoList"][0];
    assert_eq!(item["EventTime"], beijing(at), "{response}");
    assert_eq!(item["ResponseTime"], beijing(at + 2), "{response}");
    assert!(
        item["EventTime"].as_str().unwrap().ends_with(" 07:30:00"),
        "{response}"
    );
    assert!(
        !item["EventTime"].as_str().unwrap().starts_with(&utc_date),
        "{response}"
    );
    // The same window in UTC (one with a +08:00 offset reads the same) gets UTC back.
    let response = callbacks(
        &fake,
        &callback_query("bj", &iso(at - 600), &iso(at + 600), 1, 10),
    )
    .await;
    assert_eq!(
        ok(&response)["DataInfoList"][0]["EventTime"],
        iso(at),
        "{response}"
    );
    let offset_start = format!("{}+08:00", beijing(at - 600).replace(' ', "T"));
    let offset_end = format!("{}+08:00", beijing(at + 600).replace(' ', "T"));
    let response = callbacks(
        &fake,
        &callback_query("bj", &offset_start, &offset_end, 1, 10),
    )
    .await;
    assert_eq!(ok(&response)["TotalNum"], 1, "{response}");
    assert_eq!(
        response["DataInfoList"][0]["EventTime"],
        iso(at),
        "{response}"
    );
}

async fn callback_records_match_the_stream_exactly_and_filter_by_event_type() {
    let fake = start().await;
    let now = now();
    for (stream, event_type, result_code) in [
        ("cam", 1, 0),
        ("cam", 0, 0),
        ("cam", 100, 1),
        ("cam-2", 1, 0),
        ("ca", 1, 0),
    ] {
        let mut sent = SentCallback::new(stream, event_type, now - 600);
        sent.result_code = result_code;
        fake.add_callback(sent);
    }
    let query = callback_query("cam", &iso(now - 3600), &iso(now), 1, 10);
    let total = |response: Value| ok(&response)["TotalNum"].clone();
    assert_eq!(total(callbacks(&fake, &query).await), 3);
    let mut by_type = query.clone();
    by_type["EventType"] = json!(100);
    assert_eq!(total(callbacks(&fake, &by_type).await), 1);
    let mut by_result = query.clone();
    by_result["ResultCode"] = json!(0);
    assert_eq!(total(callbacks(&fake, &by_result).await), 2);
    let response = callbacks(&fake, &by_type).await;
    let item = &response["DataInfoList"][0];
    assert_eq!(item["StreamId"], "cam", "{response}");
    assert_eq!(item["EventType"], 100, "{response}");
    assert_eq!(item["ResultCode"], 1, "{response}");
}

async fn the_event_list_returns_overlapping_sessions_newest_end_first() {
    let fake = start().await;
    let now = now();
    let window = (now - 4 * 3600, now - 3600);
    for session in [
        StreamSession::new("d", "live", "before", now - 6 * 3600, Some(window.0 - 1)),
        StreamSession::new(
            "d",
            "live",
            "across-start",
            window.0 - 600,
            Some(window.0 + 600),
        ),
        StreamSession::new(
            "d",
            "live",
            "inside",
            window.0 + 3600,
            Some(window.0 + 4000),
        ),
        StreamSession::new("d", "live", "live", window.0 + 5000, None),
        StreamSession::new("d", "live", "after", window.1 + 1, Some(now)),
        StreamSession::new(
            "other",
            "live",
            "other-domain",
            window.0 + 10,
            Some(window.0 + 20),
        ),
    ] {
        fake.add_stream(session);
    }
    let query = json!({ "StartTime": iso(window.0), "EndTime": iso(window.1) });
    let response = events(&fake, &query).await;
    assert_eq!(
        stream_names(&response),
        ["live", "inside", "across-start", "other-domain"],
        "{response}"
    );
    assert_eq!(response["TotalNum"], 4, "{response}");
    assert_eq!(response["PageNum"], 1, "{response}");
    assert_eq!(response["PageSize"], 10, "{response}");
    let live = &response["EventList"][0];
    assert_eq!(live["StreamEndTime"], "", "{response}");
    assert_eq!(live["StreamStartTime"], iso(window.0 + 5000), "{response}");
    let inside = &response["EventList"][1];
    assert_eq!(inside["StreamEndTime"], iso(window.0 + 4000), "{response}");
    assert_eq!(inside["Duration"], 400, "{response}");
    assert_eq!(inside["DomainName"], "d", "{response}");
    assert_eq!(inside["AppName"], "live", "{response}");

    let mut ascending = query.clone();
    ascending["IsAsc"] = json!(1);
    assert_eq!(
        stream_names(&events(&fake, &ascending).await),
        ["other-domain", "across-start", "inside", "live"]
    );
    let mut one_domain = query.clone();
    one_domain["DomainName"] = json!("other");
    assert_eq!(
        stream_names(&events(&fake, &one_domain).await),
        ["other-domain"]
    );
    let mut other_app = query.clone();
    other_app["AppName"] = json!("live2");
    assert!(stream_names(&events(&fake, &other_app).await).is_empty());
}

async fn the_event_list_matches_stream_names_by_substring_unless_strict() {
    let fake = start().await;
    let now = now();
    for name in ["room-1", "room-10", "hall-1"] {
        fake.add_stream(StreamSession::new(
            "d",
            "live",
            name,
            now - 600,
            Some(now - 300),
        ));
    }
    let mut failed = StreamSession::new("d", "live", "room-1", now - 200, Some(now - 200));
    failed.push_failed = true;
    fake.add_stream(failed);
    let query = |extra: Value| {
        let mut body = json!({ "StartTime": iso(now - 3600), "EndTime": iso(now), "IsAsc": 1 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let names = |response: Value| -> Vec<String> {
        stream_names(&response)
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        names(events(&fake, &query(json!({ "StreamName": "room-1" }))).await),
        ["room-1", "room-10", "room-1"]
    );
    assert_eq!(
        names(
            events(
                &fake,
                &query(json!({ "StreamName": "room-1", "IsStrict": 1 }))
            )
            .await
        ),
        ["room-1", "room-1"]
    );
    assert_eq!(
        names(
            events(
                &fake,
                &query(json!({ "StreamName": "room-1", "IsStrict": 1, "IsFilter": 1 }))
            )
            .await
        ),
        ["room-1"]
    );
}

async fn the_event_list_refuses_pages_beyond_the_first_10000_results() {
    let fake = start().await;
    let now = now();
    let query = |page_num: i64, page_size: i64| {
        json!({
            "StartTime": iso(now - 3600),
            "EndTime": iso(now),
            "PageNum": page_num,
            "PageSize": page_size,
        })
    };
    for (page_num, page_size, answer) in [
        (100, 100, None),
        (101, 100, Some("InvalidParameterValue")),
        (1000, 10, None),
        (1001, 10, Some("InvalidParameterValue")),
        (10_000, 1, None),
        (10_001, 1, Some("InvalidParameterValue")),
    ] {
        let response = events(&fake, &query(page_num, page_size)).await;
        assert_eq!(
            error_code(&response),
            answer,
            "PageNum {page_num} PageSize {page_size}: {response}"
        );
    }
}

async fn injected_faults_answer_the_next_requests_then_the_fake_recovers() {
    let fake = start().await;
    let now = now();
    let call = Call::new(
        DESCRIBE_LIVE_STREAM_EVENT_LIST,
        &json!({ "StartTime": iso(now - 3600), "EndTime": iso(now) }),
    );
    fake.fail_next(2, 502);
    fake.throttle_next(1);
    for _ in 0..2 {
        // The signer's `send` insists on 200, so post by hand.
        let response = reqwest::Client::new()
            .post(fake.endpoint())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
    }
    let response = call.send(&fake).await;
    assert_eq!(
        error_code(&response),
        Some("RequestLimitExceeded"),
        "{response}"
    );
    ok(&call.send(&fake).await);
    let stats = fake.stats();
    assert_eq!(stats.injected_http_failures, 2, "{stats:?}");
    assert_eq!(stats.throttled, 1, "{stats:?}");
    assert_eq!(
        stats.answered.get(DESCRIBE_LIVE_STREAM_EVENT_LIST),
        Some(&1),
        "{stats:?}"
    );
    let answers: Vec<Answer> = fake
        .requests()
        .into_iter()
        .map(|seen| seen.answer)
        .collect();
    assert_eq!(
        answers,
        [
            Answer::Http(502),
            Answer::Http(502),
            Answer::Error("RequestLimitExceeded".to_owned()),
            Answer::Data
        ]
    );
}

async fn the_rate_limit_throttles_requests_over_it_within_a_second() {
    let now = now();
    let call = Call::new(
        DESCRIBE_LIVE_STREAM_EVENT_LIST,
        &json!({ "StartTime": iso(now - 3600), "EndTime": iso(now) }),
    );
    let other = Call::new(
        DESCRIBE_CALLBACK_RECORDS_LIST,
        &callback_query("s1", &iso(now - 3600), &iso(now), 1, 10),
    );
    // Three requests must land within one second for the third to be over
    // the limit; on a starved machine they may not, so a slow attempt is
    // tried again on a fresh fake rather than asserted on.
    for attempt in 1..=3 {
        let fake = FakeTencent::start(FakeOptions {
            max_requests_per_sec: Some(2),
            ..FakeOptions::new(SECRET_ID, SECRET_KEY)
        })
        .await;
        let began = std::time::Instant::now();
        let mut answers = Vec::new();
        for call in [&call, &call, &call, &other] {
            answers.push(error_code(&call.send(&fake).await).map(str::to_owned));
        }
        if began.elapsed() >= std::time::Duration::from_millis(900) {
            eprintln!("attempt {attempt} took {:?}; trying again", began.elapsed());
            continue;
        }
        // The third is over the limit; another action has a limit of its own.
        assert_eq!(
            answers,
            [None, None, Some("RequestLimitExceeded".to_owned()), None],
            "attempt {attempt}"
        );
        assert_eq!(fake.stats().throttled, 1);
        return;
    }
    panic!("four requests never fitted in one second: the machine is too slow to test this");
}

async fn the_fake_records_requests_without_their_secrets() {
    let fake = FakeTencent::start(FakeOptions {
        token: Some("token-secret-value".to_owned()),
        ..FakeOptions::new(SECRET_ID, SECRET_KEY)
    })
    .await;
    let now = now();
    let body = callback_query("s1", &iso(now - 3600), &iso(now), 1, 10);
    let call = Call {
        token: Some("token-secret-value".to_owned()),
        ..Call::new(DESCRIBE_CALLBACK_RECORDS_LIST, &body)
    };
    ok(&call.send(&fake).await);
    let requests = fake.requests();
    let [seen] = requests.as_slice() else {
        panic!("one request, not {requests:?}");
    };
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/");
    assert_eq!(seen.action.as_deref(), Some(DESCRIBE_CALLBACK_RECORDS_LIST));
    assert_eq!(seen.header("authorization"), Some("present"));
    assert_eq!(seen.header("x-tc-token"), Some("present"));
    assert_eq!(seen.header("host"), Some(fake.host().as_str()));
    assert_eq!(seen.signed_headers, ["content-type", "host", "x-tc-action"]);
    assert_eq!(seen.json.as_ref(), Some(&body));
    assert_eq!(seen.answer, Answer::Data);
    let printed = format!("{seen:?}");
    assert!(!printed.contains(SECRET_KEY), "{printed}");
    assert!(!printed.contains("token-secret-value"), "{printed}");
    assert!(!printed.contains("Signature="), "{printed}");
}
