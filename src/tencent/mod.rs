//! A Tencent Cloud API 3.0 client for the two live-streaming (CSS) actions
//! reconciliation needs.

pub mod live;
pub mod sign;
pub mod time;
