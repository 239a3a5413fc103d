//! A Tencent Cloud API 3.0 client for the two live-streaming (CSS, product
//! `live`, version 2018-08-01) actions reconciliation needs:
//! `DescribeCallbackRecordsList` (which callbacks CSS sent, and what it was
//! answered) and `DescribeLiveStreamEventList` (which streams were pushed).
//!
//! One job per file: [`sign`] (TC3-HMAC-SHA256, pure functions), [`time`]
//! (Tencent's time formats, pure functions), [`live`] (the two actions'
//! models, Tencent's field names), [`limiter`] (client-side pacing on tokio's
//! clock), [`client`] (signing, sending, retrying, decoding, errors).
//!
//! This module sits at the bottom of the dependency graph: it uses nothing of
//! recordhook's but [`crate::redact`].

pub mod client;
pub mod limiter;
pub mod live;
pub mod sign;
pub mod time;

pub use client::{
    ApiError, Called, ClientError, ClientOptions, Credentials, DEFAULT_ENDPOINT, Observer,
    TencentClient,
};
pub use live::{
    CallbackEventInfo, DescribeCallbackRecordsListRequest, DescribeCallbackRecordsListResponse,
    DescribeLiveStreamEventListRequest, DescribeLiveStreamEventListResponse, StreamEventInfo,
};
pub use time::TimeError;
