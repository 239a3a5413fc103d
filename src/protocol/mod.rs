//! The Tencent Cloud CSS callback protocol: parsing a body, checking `sign`
//! and `t`, naming each callback by an event id, and reading the typed view
//! of each event type, all of which [`EVENT_TYPES`] lists in one table.
//!
//! The flow is a typestate: bytes → [`UnverifiedCallback`] →
//! [`VerifiedCallback`] (only through [`Authenticator::verify`]) →
//! [`crate::record::Record`]. Nothing downstream can be handed a callback
//! that skipped authentication. The one other way to a [`VerifiedCallback`]
//! is `VerifiedCallback::from_tencent_api`, crate-private, for callbacks
//! that Tencent's signed API says CSS sent (reconciliation).

mod callback;
mod event_id;
mod event_type;
mod fields;
mod recording;
mod signature;
mod stream;
mod views;

pub use callback::{Authenticator, PayloadError, Reconciled, UnverifiedCallback, VerifiedCallback};
pub use event_id::event_id;
pub use event_type::{
    EVENT_TYPES, EventTypeSpec, EventTypes, OTHER_EVENT_TYPE, SentAs, classify, event_type_by_name,
    event_type_label, event_type_name,
};
pub use recording::{RECORDING_EVENT_TYPE, Recording};
pub use signature::{AuthError, TimeWindow, expected_sign, parse_t, verify};
pub use stream::Stream;
pub use views::{
    AbnormalDetail, AbnormalEvent, AudioAudit, EventView, Frame, Highlight, HighlightItem,
    ImageAudit, Keyword, LiveSummary, ModerationResult, Push, PushException, Quality, RecordDetail,
    RecordException, RecordExceptionDetail, RecordStatus, Relay, RelayMessage, Screenshot, Segment,
    SegmentData, StreamMonitor, Subtitles,
};
