"""Tencent's official live SDK (tencentcloud-sdk-python-live) against the fake.

Usage: sdk_check.py CASE_JSON

CASE_JSON is written by tests/reconcile (sdk.rs), which started two fakes
and seeded them:

  endpoint, secret_id, secret_key   the fake with a permanent key
  token_endpoint, token             a fake that demands X-TC-Token (same key)
  token_faults                      "http_502_then_throttled": the token
                                    fake answers its first request HTTP 502
                                    and its second RequestLimitExceeded
  stream                            the stream the callbacks are about
  callback_window {start, end}      Unix seconds
  callbacks                         the seeded callbacks for `stream` inside
                                    the window, in time order (others were
                                    seeded too, and must not come back)
  session_window {start, end}       Unix seconds
  sessions                          the seeded sessions overlapping the
                                    window, newest end first (a live one,
                                    "end": null, first)

The SDK's request models build the requests and its client signs them with
its default method, TC3-HMAC-SHA256; its response models parse the answers.
Every answer is compared with the seed, with times formatted here, by Python,
not by the fake. Prints one line per check and exits 1 on any mismatch.
"""

import datetime
import json
import math
import sys

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.live.v20180801 import live_client, models

BEIJING = datetime.timezone(datetime.timedelta(hours=8))
failures = []


def check(what, got, want):
    if got != want:
        failures.append("%s: got %r, want %r" % (what, got, want))
        return False
    return True


def utc(unix):
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def beijing(unix):
    return datetime.datetime.fromtimestamp(unix, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def client(host, secret_id, secret_key, token=None):
    """A LiveClient for the fake at host ("127.0.0.1:PORT"), over plain HTTP.

    The endpoint override is HttpProfile(endpoint=...): the SDK then sends
    and signs `Host: 127.0.0.1:PORT`. protocol="http" sets the scheme the
    client reads when it is built.
    """
    http = HttpProfile(protocol="http", endpoint=host, reqTimeout=10)
    profile = ClientProfile(httpProfile=http)
    # The default signing method is what must be exercised: not set here,
    # only asserted.
    if profile.signMethod != "TC3-HMAC-SHA256":
        failures.append("the SDK's default signMethod is %r" % profile.signMethod)
    return live_client.LiveClient(
        credential.Credential(secret_id, secret_key, token), "", profile
    )


def callback_request(start, end, stream, page_num, page_size, event_type=None):
    request = models.DescribeCallbackRecordsListRequest()
    request.StartTime = start
    request.EndTime = end
    request.StreamName = stream
    request.PageNum = page_num
    request.PageSize = page_size
    if event_type is not None:
        request.EventType = event_type
    return request


def all_callback_pages(live, label, start, end, stream, page_size, want_total, event_type=None):
    """Every page of a DescribeCallbackRecordsList query; checks the paging fields."""
    records = []
    page = 1
    want_pages = math.ceil(want_total / page_size)
    while True:
        response = live.DescribeCallbackRecordsList(
            callback_request(start, end, stream, page, page_size, event_type)
        )
        check("%s page %d PageNum" % (label, page), response.PageNum, page)
        check("%s page %d PageSize" % (label, page), response.PageSize, page_size)
        check("%s page %d TotalNum" % (label, page), response.TotalNum, want_total)
        check("%s page %d TotalPage" % (label, page), response.TotalPage, want_pages)
        check("%s page %d has a RequestId" % (label, page), bool(response.RequestId), True)
        for item in response.DataInfoList:
            check("%s item type" % label, type(item), models.CallbackEventInfo)
        records.extend(response.DataInfoList)
        if page >= (response.TotalPage or 0) or page > want_pages + 1:
            return records, page
        page += 1


def compare_callbacks(label, records, want, fmt):
    if not check("%s count" % label, len(records), len(want)):
        return
    for index, (got, seeded) in enumerate(zip(records, want)):
        where = "%s[%d]" % (label, index)
        check(where + ".EventTime", got.EventTime, fmt(seeded["event_time"]))
        check(where + ".EventType", got.EventType, seeded["event_type"])
        check(where + ".Request", got.Request, seeded["request"])
        check(where + ".Response", got.Response, seeded["response"])
        check(where + ".ResponseTime", got.ResponseTime, fmt(seeded["response_time"]))
        check(where + ".ResultCode", got.ResultCode, seeded["result_code"])
        check(where + ".StreamId", got.StreamId, seeded["stream_name"])


def event_list_request(start, end, page_num=None, page_size=None, stream=None, strict=None, ascending=None):
    request = models.DescribeLiveStreamEventListRequest()
    request.StartTime = start
    request.EndTime = end
    if page_num is not None:
        request.PageNum = page_num
    if page_size is not None:
        request.PageSize = page_size
    if stream is not None:
        request.StreamName = stream
    if strict is not None:
        request.IsStrict = strict
    if ascending is not None:
        request.IsAsc = ascending
    return request


def compare_sessions(label, events, want):
    if not check("%s count" % label, len(events), len(want)):
        return
    for index, (got, seeded) in enumerate(zip(events, want)):
        where = "%s[%d]" % (label, index)
        check(where + " type", type(got), models.StreamEventInfo)
        check(where + ".AppName", got.AppName, seeded["app"])
        check(where + ".DomainName", got.DomainName, seeded["domain"])
        check(where + ".StreamName", got.StreamName, seeded["stream_name"])
        check(where + ".StreamStartTime", got.StreamStartTime, utc(seeded["start"]))
        ended = seeded["end"]
        check(where + ".StreamEndTime", got.StreamEndTime, "" if ended is None else utc(ended))
        check(where + ".Duration", got.Duration, 0 if ended is None else ended - seeded["start"])
        check(where + ".StopReason", got.StopReason, seeded["stop_reason"])
        check(where + ".ClientIp", got.ClientIp, seeded["client_ip"])
        check(where + ".Resolution", got.Resolution, seeded["resolution"])


def expect_error(label, call, code):
    try:
        call()
    except TencentCloudSDKException as error:
        if check(label, error.get_code(), code):
            print("ok   %s: TencentCloudSDKException %s" % (label, code))
        return
    failures.append("%s: no TencentCloudSDKException, want %s" % (label, code))


def main():
    case = json.load(open(sys.argv[1], encoding="utf-8"))
    secret_id, secret_key = case["secret_id"], case["secret_key"]
    live = client(case["endpoint"], secret_id, secret_key)
    stream = case["stream"]
    want = case["callbacks"]

    # DescribeCallbackRecordsList, UTC: times come back in UTC.
    window = case["callback_window"]
    start, end = utc(window["start"]), utc(window["end"])
    records, pages = all_callback_pages(live, "callbacks UTC", start, end, stream, 2, len(want))
    compare_callbacks("callbacks UTC", records, want, utc)
    print("ok   DescribeCallbackRecordsList, UTC times: %d records over %d pages of 2" % (len(records), pages))

    # The same window in Beijing time: times come back in Beijing time.
    start, end = beijing(window["start"]), beijing(window["end"])
    records, pages = all_callback_pages(live, "callbacks Beijing", start, end, stream, 100, len(want))
    compare_callbacks("callbacks Beijing", records, want, beijing)
    print("ok   DescribeCallbackRecordsList, Beijing times (%s .. %s): %d records" % (start, end, len(records)))

    # EventType filter.
    started = [seeded for seeded in want if seeded["event_type"] == 1]
    records, _ = all_callback_pages(
        live, "callbacks EventType=1", start, end, stream, 100, len(started), event_type=1
    )
    compare_callbacks("callbacks EventType=1", records, started, beijing)
    print("ok   DescribeCallbackRecordsList, EventType=1: %d records" % len(records))

    # DescribeLiveStreamEventList: newest end first, then IsAsc=1, then paged.
    sessions = case["session_window"]
    start, end = utc(sessions["start"]), utc(sessions["end"])
    want_sessions = case["sessions"]
    response = live.DescribeLiveStreamEventList(event_list_request(start, end))
    check("sessions PageNum (default)", response.PageNum, 1)
    check("sessions PageSize (default)", response.PageSize, 10)
    check("sessions TotalNum", response.TotalNum, len(want_sessions))
    check("sessions TotalPage", response.TotalPage, 1)
    compare_sessions("sessions", response.EventList, want_sessions)
    response = live.DescribeLiveStreamEventList(event_list_request(start, end, ascending=1))
    compare_sessions("sessions IsAsc=1", response.EventList, list(reversed(want_sessions)))
    paged = []
    for page in (1, 2):
        response = live.DescribeLiveStreamEventList(event_list_request(start, end, page, 2))
        check("sessions page %d PageNum" % page, response.PageNum, page)
        check("sessions page %d TotalPage" % page, response.TotalPage, math.ceil(len(want_sessions) / 2))
        paged.extend(response.EventList)
    compare_sessions("sessions paged by 2", paged, want_sessions)
    strict_name = want_sessions[-1]["stream_name"]
    response = live.DescribeLiveStreamEventList(event_list_request(start, end, stream=strict_name, strict=1))
    compare_sessions("sessions IsStrict=1", response.EventList, [want_sessions[-1]])
    print(
        "ok   DescribeLiveStreamEventList: %d sessions (live: %d), newest first, IsAsc, pages of 2, IsStrict"
        % (len(want_sessions), sum(1 for seeded in want_sessions if seeded["end"] is None))
    )

    # A wrong key: the SDK raises the fake's error code.
    wrong = client(case["endpoint"], secret_id, secret_key + "-wrong")
    expect_error(
        "a wrong SecretKey",
        lambda: wrong.DescribeCallbackRecordsList(callback_request(start, end, stream, 1, 10)),
        "AuthFailure.SignatureFailure",
    )

    # Temporary credentials: the token fake first fails twice on purpose.
    token_host, token = case["token_endpoint"], case["token"]
    with_token = client(token_host, secret_id, secret_key, token)
    call = lambda live_client_: live_client_.DescribeLiveStreamEventList(event_list_request(start, end))
    if case.get("token_faults") == "http_502_then_throttled":
        expect_error("an injected HTTP 502", lambda: call(with_token), "ServerNetworkError")
        expect_error("an injected throttle", lambda: call(with_token), "RequestLimitExceeded")
    response = call(with_token)
    check("with a token, TotalNum", response.TotalNum, len(want_sessions))
    print("ok   a Credential with a token: answered (%d sessions)" % response.TotalNum)
    expect_error(
        "no token where one is demanded",
        lambda: call(client(token_host, secret_id, secret_key)),
        "AuthFailure.TokenFailure",
    )
    expect_error(
        "a wrong token",
        lambda: call(client(token_host, secret_id, secret_key, token + "-wrong")),
        "AuthFailure.TokenFailure",
    )

    if failures:
        print("FAILED: %d mismatch(es)" % len(failures))
        for failure in failures:
            print("  " + failure)
        return 1
    print("sdk_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
