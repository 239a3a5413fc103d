//! Typed, lenient views of every documented event type but the recording
//! (100, see [`super::Recording`]), read as leniently as it: numbers sent as
//! strings are numbers, ids stay text, a value of the wrong type is a warning
//! and the field is left out of the view, never a rejection. Fields holding
//! JSON in a string are decoded here; the event keeps the received text.
//!
//! Every field is optional: the documentation and real payloads disagree on
//! which fields each type carries, so a missing field is not a warning here.
//! Fields no view models are listed in `unknown_fields`.
//!
//! [`EventView`] holds any one view, the recording's included; which event
//! type reads which view, and under which key a record carries it, is
//! [`super::EVENT_TYPES`]'s business.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Recording;
use super::fields::FieldReader;

/// Declares a view: a struct of optional fields, each read from its JSON
/// key by one [`FieldReader`] method, plus the fields it does not model.
/// A macro because there are some twenty of these and each field would
/// otherwise be written three times (declaration, serde attribute, reading).
macro_rules! view {
    (
        $(#[$meta:meta])*
        $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident: $ty:ty = $method:ident($($arg:expr),*);
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Received fields this view does not model; kept in the event,
            /// listed here so operators notice when Tencent adds fields.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            pub unknown_fields: Vec<String>,
        }

        impl $name {
            /// Reads the view from `reader`'s object.
            pub(crate) fn read_from(reader: &mut FieldReader<'_>) -> Self {
                let mut view = Self {
                    $($field: reader.$method($($arg),*),)*
                    unknown_fields: Vec::new(),
                };
                view.unknown_fields = reader.unknown_fields();
                view
            }
        }

        impl ReadView for $name {
            fn read(fields: &Map<String, Value>, warnings: &mut Vec<String>) -> Self {
                Self::read_from(&mut FieldReader::new(fields, warnings))
            }
        }
    };
}

view! {
    /// Push started (1) or ended (0), under `push`.
    Push {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Push domain.
        app: String = string("app");
        /// Push path.
        appname: String = string("appname");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// Same as `stream_id`.
        channel_id: String = string("channel_id");
        /// Unix time (s) the event occurred.
        event_time: i64 = int("event_time");
        /// Push session id, shared by a start and its end (19 digits: text).
        sequence: String = string("sequence");
        /// Access-node IP.
        node: String = string("node");
        /// Pusher IP.
        user_ip: String = string("user_ip");
        /// Query string of the push URL.
        stream_param: String = string("stream_param");
        /// End only: push duration in milliseconds (sent as a string).
        push_duration: i64 = int("push_duration");
        /// 0 on a start; the interruption reason on an end.
        errcode: i64 = int("errcode");
        /// Reason text.
        errmsg: String = string("errmsg");
        /// Video width (0 on a start without a video header yet).
        width: i64 = int("width");
        /// Video height.
        height: i64 = int("height");
        /// Region set.
        set_id: i64 = int("set_id");
        /// Data centre (undocumented, but sent).
        idc_id: i64 = int("idc_id");
    }
}

view! {
    /// Screenshot (200), under `screenshot`.
    Screenshot {
        /// The account's APPID (not documented for this type).
        appid: u64 = unsigned("appid");
        /// Push domain.
        app: String = string("app");
        /// Push path.
        appname: String = string("appname");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// Same as `stream_id`.
        channel_id: String = string("channel_id");
        /// Query string of the push URL.
        stream_param: String = string("stream_param");
        /// Unix time (s) of the shot, roughly.
        create_time: i64 = int("create_time");
        /// Bytes.
        file_size: u64 = unsigned("file_size");
        /// Pixels.
        width: i64 = int("width");
        /// Pixels.
        height: i64 = int("height");
        /// Path of the picture in storage.
        pic_url: String = string("pic_url");
        /// Full storage URL of the picture.
        pic_full_url: String = string("pic_full_url");
    }
}

view! {
    /// The decoded `msg` of a relay callback.
    RelayMessage {
        /// Unix time (ms) the task started.
        task_start_time: i64 = int("task_start_time");
        /// Unix time (ms) the task exited.
        task_exit_time: i64 = int("task_exit_time");
        /// Source URL concerned.
        url: String = string("url");
        /// Index of the source.
        index: i64 = int("index");
        /// Seconds.
        duration: i64 = int("duration");
        /// Result code (negative on errors).
        code: i64 = int("code");
        /// Result text.
        message: String = string("message");
    }
}

view! {
    /// Relay (pull-and-push) task (314), under `relay`.
    Relay {
        /// The account's APPID (`appid`, or `appId` as the table writes it).
        appid: u64 = unsigned_or("appid", "appId");
        /// `TaskStart`, `TaskExit`, `VodSourceFileStart`, `VodSourceFileFinish`, …
        callback_event: String = string("callback_event");
        /// Source URLs, decoded from the JSON array in a string.
        source_urls: Vec<String> = json_text_strings("source_urls");
        /// Relayed stream name (absent on `TaskExit`).
        stream_id: String = string("stream_id");
        /// Relay task id.
        task_id: String = string("task_id");
        /// Push destination.
        to_url: String = string("to_url");
        /// Unix time (s), sent as a string.
        event_time: i64 = int("event_time");
        /// `msg`, decoded from its JSON string.
        msg: RelayMessage = json_text_object("msg", RelayMessage::read_from);
        /// `general_callback`.
        interface: String = string("interface");
        /// `pullpush`.
        product_name: String = string("product_name");
        /// The configured URL.
        callback_url: String = string("callback_url");
    }
}

view! {
    /// Audio moderation (315), under `audio_audit`.
    AudioAudit {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Deprecated account id.
        bizid: u64 = unsigned("bizid");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// Same as `stream_id`.
        channel_id: String = string("channel_id");
        /// Push domain.
        domain: String = string("domain");
        /// Push path.
        path: String = string("path");
        /// `HitFlag`: 1 when suspicious.
        hit_flag: i64 = int("HitFlag");
        /// `Score`: 0–100.
        score: f64 = float("Score");
        /// `SubTag`: sub-label.
        sub_tag: String = string("SubTag");
        /// Moderation task id (sent as a number; kept as text like every id).
        task_id: String = string("task_id");
        /// 2 = normal.
        status: i64 = int("status");
        /// Recognised speech.
        asr_text: String = string("asr_text");
        /// URL of the audio.
        cdn_url: String = string("cdn_url");
        /// Seconds.
        duration: f64 = float("duration");
        /// Label.
        label: String = string("label");
        /// Language detection results, as received.
        language_results: Vec<Value> = array("language_results");
        /// Moan detection results, as received (element shape unconfirmed).
        moan_results: Vec<Value> = array("moan_results");
        /// Text results, as received (unconfirmed field).
        text_results: Vec<Value> = array("text_results");
        /// Suggestion (unconfirmed field).
        suggestion: String = string("suggestion");
    }
}

view! {
    /// One model's result in an image moderation callback (PascalCase keys).
    ModerationResult {
        /// `HitFlag`.
        hit_flag: i64 = int("HitFlag");
        /// `Scene`.
        scene: String = string("Scene");
        /// `Suggestion`: `Block`, `Review`, `Pass`.
        suggestion: String = string("Suggestion");
        /// `Label`.
        label: String = string("Label");
        /// `SubLabel`.
        sub_label: String = string("SubLabel");
        /// `Score`.
        score: f64 = float("Score");
        /// `Details`, as received (their shape differs per model).
        details: Vec<Value> = array("Details");
        /// `Names` (object results; the intl table says `DealNames`).
        names: Vec<Value> = array("Names");
        /// `DealNames`, the intl table's name for `Names`.
        deal_names: Vec<Value> = array("DealNames");
        /// `Text` (OCR results).
        text: String = string("Text");
    }
}

view! {
    /// Image moderation (317), current and legacy shapes, under `image_audit`.
    ImageAudit {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Push domain.
        app: String = string("app");
        /// Push path.
        appname: String = string("appname");
        /// `streamId`: stream name.
        stream_id: String = string("streamId");
        /// `channelId`: same as `streamId`.
        channel_id: String = string("channelId");
        /// Query string of the push URL.
        stream_param: String = string("stream_param");
        /// URL of the flagged image.
        img: String = string("img");
        /// Categories of the top label.
        r#type: Vec<i64> = ints("type");
        /// Scores for `type`: `score` (an array, or one number), else the
        /// sample's misspelled scalar `socre`.
        score: Vec<f64> = floats_or("score", "socre");
        /// `Block`, `Review`, `Pass`.
        suggestion: String = string("suggestion");
        /// Top label, e.g. `Porn`.
        label: String = string("label");
        /// `subLabel`.
        sub_label: String = string("subLabel");
        /// `ocrMsg`: OCR text.
        ocr_msg: String = string("ocrMsg");
        /// `labelResults`.
        label_results: Vec<ModerationResult> = objects("labelResults", ModerationResult::read_from);
        /// `objectResults`.
        object_results: Vec<ModerationResult> = objects("objectResults", ModerationResult::read_from);
        /// `ocrResults`.
        ocr_results: Vec<ModerationResult> = objects("ocrResults", ModerationResult::read_from);
        /// `libResults`.
        lib_results: Vec<ModerationResult> = objects("libResults", ModerationResult::read_from);
        /// `screenshotTime`: Unix s.
        screenshot_time: i64 = int("screenshotTime");
        /// `sendTime`: Unix s.
        send_time: i64 = int("sendTime");
        /// Legacy: `tid`.
        tid: i64 = int("tid");
        /// Legacy: `abductionRisk`, as received.
        abduction_risk: Vec<Value> = array("abductionRisk");
        /// Legacy: `confidence`.
        confidence: f64 = float("confidence");
        /// Legacy: `level`.
        level: i64 = int("level");
        /// Legacy: `faceDetails`, as received.
        face_details: Vec<Value> = array("faceDetails");
        /// Legacy: `gameDetails`, as received.
        game_details: Vec<Value> = array("gameDetails");
        /// Legacy score: `normalScore`.
        normal_score: f64 = float("normalScore");
        /// Legacy score: `hotScore`.
        hot_score: f64 = float("hotScore");
        /// Legacy score: `pornScore`.
        porn_score: f64 = float("pornScore");
        /// Legacy score: `terrorScore`.
        terror_score: f64 = float("terrorScore");
        /// Legacy score: `polityScore`.
        polity_score: f64 = float("polityScore");
        /// Legacy score: `illegalScore`.
        illegal_score: f64 = float("illegalScore");
        /// Legacy score: `similarScore`.
        similar_score: f64 = float("similarScore");
        /// Legacy score: `abuseScore`.
        abuse_score: f64 = float("abuseScore");
        /// Legacy score: `teenagerScore`.
        teenager_score: f64 = float("teenagerScore");
        /// Legacy score: `adScore`.
        ad_score: f64 = float("adScore");
        /// Legacy score: `customScore`.
        custom_score: f64 = float("customScore");
    }
}

view! {
    /// One occurrence of a push exception.
    AbnormalDetail {
        /// What happened.
        desc: String = string("desc");
        /// Unix time (ms).
        occur_time: i64 = int("occur_time");
    }
}

view! {
    /// One kind of exception in a push exception callback.
    AbnormalEvent {
        /// Exception type (open-ended: 1–16 documented).
        r#type: i64 = int("type");
        /// Occurrences in the report interval.
        count: i64 = int("count");
        /// The occurrences.
        detail: Vec<AbnormalDetail> = objects("detail", AbnormalDetail::read_from);
        /// Description in Chinese.
        type_desc_cn: String = string("type_desc_cn");
        /// Description in English.
        type_desc_en: String = string("type_desc_en");
        /// Sent as the string `"true"`.
        customer_visible: bool = boolean("customer_visible");
        /// Event key.
        event_key: String = string("event_key");
    }
}

view! {
    /// Push exception (321), under `push_exception`.
    PushException {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// Push domain.
        domain: String = string("domain");
        /// Push path.
        path: String = string("path");
        /// Pusher IP.
        user_ip: String = string("user_ip");
        /// Push session id (19 digits: text).
        sequence: String = string("sequence");
        /// Query string of the push URL.
        stream_param: String = string("stream_param");
        /// Report time, Unix ms.
        data_time: i64 = int("data_time");
        /// Aggregation window, ms.
        report_interval: i64 = int("report_interval");
        /// Callback request timeout, ms.
        timeout: i64 = int("timeout");
        /// `general_callback`.
        interface: String = string("interface");
        /// One entry per exception type.
        abnormal_event: Vec<AbnormalEvent> = objects("abnormal_event", AbnormalEvent::read_from);
    }
}

view! {
    /// Stream monitoring (328), under `stream_monitor`.
    StreamMonitor {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Account id.
        bizid: u64 = unsigned("bizid");
        /// `general_callback`.
        interface: String = string("interface");
        /// What was detected, e.g. `VideoResolutionChanged`.
        event_name: String = string("event_name");
        /// Unix time in **milliseconds** (unlike every other `event_time`).
        event_time: i64 = int("event_time");
        /// Description.
        event_msg: String = string("event_msg");
        /// Stream name.
        stream_id: String = string("stream_id");
    }
}

view! {
    /// The decoded `record_detail` of a recording status callback.
    RecordDetail {
        /// Integer code: 1 FLV, 2 HLS, 3 MP4, 4 AAC, 5 MP3.
        file_format: i64 = int("file_format");
        /// Bitrate, kbps.
        record_bps: i64 = int("record_bps");
        /// 1 template rule, 5 API.
        start_model: i64 = int("start_model");
        /// 1 original, 2 watermarked, 3 transcoded.
        record_content: i64 = int("record_content");
        /// 1 live, 2 relay.
        source_type: i64 = int("source_type");
        /// Transcoding template id.
        codec_temp_id: String = string("codec_temp_id");
    }
}

view! {
    /// Recording status (332), under `record_status`.
    RecordStatus {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Push domain.
        domain: String = string("domain");
        /// Push path.
        appname: String = string("appname");
        /// Stream name (for relays, the relay task id).
        stream_id: String = string("stream_id");
        /// Unix s.
        event_time: i64 = int("event_time");
        /// `record_start_succeeded`, `record_paused`, … (`recordevent` in one table).
        record_event: String = string_or("record_event", "recordevent");
        /// `record_detail`, decoded from its JSON string.
        record_detail: RecordDetail = json_text_object("record_detail", RecordDetail::read_from);
        /// Message sequence number (19 digits: text).
        seq: String = string("seq");
        /// Recording session id (19 digits: text).
        session_id: String = string("session_id");
        /// `CreateRecordTask` id.
        task_id: String = string("task_id");
    }
}

view! {
    /// A keyword found in an erased segment.
    Keyword {
        /// The word.
        word: String = string("word");
        /// ms.
        begin_time: i64 = int("begin_time");
        /// ms.
        end_time: i64 = int("end_time");
    }
}

view! {
    /// A subtitle or erased segment.
    Segment {
        /// Source text.
        src_txt: String = string("src_txt");
        /// Translation (subtitles with translation only).
        dst_txt: String = string("dst_txt");
        /// ms.
        start_pts: i64 = int("start_pts");
        /// ms.
        end_pts: i64 = int("end_pts");
        /// Unix time (unit unconfirmed; ms in the samples).
        start_unix_time: i64 = int("start_unix_time");
        /// Unix time (unit unconfirmed; ms in the samples).
        end_unix_time: i64 = int("end_unix_time");
        /// Whether the text is final.
        steady_state: bool = boolean("steady_state");
        /// Erased keywords (347).
        keywords_info: Vec<Keyword> = objects("keywords_info", Keyword::read_from);
    }
}

view! {
    /// The `data` object of a subtitles or erase callback.
    SegmentData {
        /// The segments.
        subtitle_tmp_res: Vec<Segment> = objects("subtitle_tmp_res", Segment::read_from);
    }
}

view! {
    /// Live subtitles (338) under `subtitles`, or erasing (347) under `erase`.
    Subtitles {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// Same as `stream_id`.
        channel_id: String = string("channel_id");
        /// Task id.
        task_id: String = string("task_id");
        /// The segments.
        data: SegmentData = object("data", SegmentData::read_from);
    }
}

view! {
    /// One recording exception.
    RecordExceptionDetail {
        /// Exception type (negative codes, open-ended).
        r#type: i64 = int("type");
        /// Occurrences.
        occurs: i64 = int("occurs");
        /// Description.
        desc: String = string("desc");
    }
}

view! {
    /// Recording exception (341), under `record_exception`.
    RecordException {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// Recording session id.
        session_id: String = string("session_id");
        /// `FLV`, `TS`, `MP4`, `AAC` (text here, unlike 332).
        file_format: String = string("file_format");
        /// Unix s of the callback.
        timestamp: i64 = int("timestamp");
        /// `info`, `warning`, `error`.
        exception_level: String = string("exception_level");
        /// The exceptions: an object or an array of them (unconfirmed), always a list here.
        exception: Vec<RecordExceptionDetail> = objects("exception", RecordExceptionDetail::read_from);
        /// `general_callback`.
        interface: String = string("interface");
    }
}

view! {
    /// A frame's assessment score.
    Frame {
        /// Score.
        score: f64 = float("score");
        /// Unix ms.
        time: i64 = int("time");
    }
}

view! {
    /// Quality control (343) under `quality_control`; assessment threshold
    /// (344) under `assessment_threshold` and average score (345) under
    /// `assessment_average`, whose fields are alike (344's are undocumented).
    Quality {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Push domain.
        domain: String = string("domain");
        /// Push path.
        appname: String = string("appname");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// Unix s.
        event_time: i64 = int("event_time");
        /// Transcoding template id.
        transcode_template_id: String = string("transcode_template_id");
        /// Watermark template id.
        watermark_template_id: String = string("watermark_template_id");
        /// Measured value (343).
        score: f64 = float("score");
        /// Per-frame scores (345).
        frames: Vec<Frame> = objects("frames", Frame::read_from);
        /// Average score over the period (345).
        average_score: f64 = float("average_score");
        /// Highest score (345).
        max_score: f64 = float("max_score");
        /// Lowest score (345).
        min_score: f64 = float("min_score");
        /// `QualityControl` or `Assessment`.
        function: String = string("function");
        /// The anomaly (343) or the metric: `PSNR`, `SSIM`, `VMAF`, `VQA`.
        class: String = string("class");
    }
}

view! {
    /// Live summary (348), under `live_summary`.
    LiveSummary {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Push domain.
        domain: String = string("domain");
        /// Push path.
        path: String = string("path");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// Unix s the summarised span begins.
        begin_time: i64 = int("begin_time");
        /// Unix s it ends.
        end_time: i64 = int("end_time");
        /// Generated title.
        title: String = string("title");
        /// Generated summary.
        summary: String = string("summary");
        /// Key words.
        key_words: Vec<String> = strings("key_words");
        /// Key points.
        key_points: Vec<String> = strings("key_points");
    }
}

view! {
    /// One highlight clip.
    HighlightItem {
        /// Unix s.
        begin_time: i64 = int("begin_time");
        /// Unix s.
        end_time: i64 = int("end_time");
        /// Title.
        title: String = string("title");
        /// Summary.
        summary: String = string("summary");
        /// URL of the clip.
        video_store_url: String = string("video_store_url");
        /// URL of the cover image.
        cov_img_store_url: String = string("cov_img_store_url");
        /// Key words.
        key_words: Vec<String> = strings("key_words");
    }
}

view! {
    /// Smart highlight clips (349), under `highlight`.
    Highlight {
        /// The account's APPID.
        appid: u64 = unsigned("appid");
        /// Push domain.
        domain: String = string("domain");
        /// Push path (`highlight` in the sample: not the source's push path).
        path: String = string("path");
        /// Stream name.
        stream_id: String = string("stream_id");
        /// The clips.
        items: Vec<HighlightItem> = objects("items", HighlightItem::read_from);
    }
}

/// The typed view of one callback: one variant per view, named for the key it
/// sits under in a record. [`super::EVENT_TYPES`] says which event type reads
/// which view; serialised, a view is just its fields (its record supplies the key).
// Boxed: the views differ in size by an order of magnitude (an image audit
// has some forty fields), and a record carries at most one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventView {
    /// A recording file.
    Recording(Box<Recording>),
    /// Push started or ended.
    Push(Box<Push>),
    /// A screenshot.
    Screenshot(Box<Screenshot>),
    /// A relay (pull-and-push) task.
    Relay(Box<Relay>),
    /// Audio moderation.
    AudioAudit(Box<AudioAudit>),
    /// Image moderation.
    ImageAudit(Box<ImageAudit>),
    /// Push exceptions.
    PushException(Box<PushException>),
    /// Stream monitoring.
    StreamMonitor(Box<StreamMonitor>),
    /// Recording status.
    RecordStatus(Box<RecordStatus>),
    /// Live subtitles.
    Subtitles(Box<Subtitles>),
    /// Recording exceptions.
    RecordException(Box<RecordException>),
    /// Quality control.
    QualityControl(Box<Quality>),
    /// An assessment threshold alert.
    AssessmentThreshold(Box<Quality>),
    /// An assessment average score.
    AssessmentAverage(Box<Quality>),
    /// Erased segments.
    Erase(Box<Subtitles>),
    /// A live summary.
    LiveSummary(Box<LiveSummary>),
    /// Smart highlight clips.
    Highlight(Box<Highlight>),
}

impl EventView {
    /// The view of a recording callback (100).
    pub fn recording(&self) -> Option<&Recording> {
        match self {
            Self::Recording(recording) => Some(recording),
            _ => None,
        }
    }
}

/// A view read from the top level of a callback, the way
/// [`super::EVENT_TYPES`] reads one.
pub(crate) trait ReadView: Sized {
    /// Reads the view from a callback's fields, appending a warning for
    /// every unusable value.
    fn read(fields: &Map<String, Value>, warnings: &mut Vec<String>) -> Self;
}

impl ReadView for Recording {
    fn read(fields: &Map<String, Value>, warnings: &mut Vec<String>) -> Self {
        Recording::read(fields, warnings)
    }
}

/// Whether an assessment callback carries an average score, which makes it
/// a 345 whatever number it was sent with (the documented samples of 345 say 344).
pub(crate) fn carries_average_score(fields: &Map<String, Value>) -> bool {
    let has = |name: &str| fields.get(name).is_some_and(|value| !value.is_null());
    has("average_score") || has("frames")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{EventTypeSpec, classify};
    use serde_json::json;

    const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events");

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(fields) = value else {
            unreachable!("tests pass objects")
        };
        fields
    }

    fn read(event_type: i64, value: Value) -> (EventView, Vec<String>) {
        let fields = object(value);
        let mut warnings = Vec::new();
        let spec = EventTypeSpec::of(classify(event_type, &fields)).expect("a documented type");
        let view = (spec.read)(&fields, &mut warnings);
        (view, warnings)
    }

    /// Every `unknown_fields` list anywhere in a serialised view.
    fn unknown(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "unknown_fields" {
                        found.push(inner.to_string());
                    }
                    unknown(inner, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| unknown(item, found)),
            _ => {}
        }
    }

    fn view_json(view: &EventView) -> Value {
        serde_json::to_value(view).unwrap()
    }

    #[test]
    fn every_documented_sample_reads_without_warnings_or_unknown_fields() {
        let mut seen = 0;
        for entry in std::fs::read_dir(SAMPLES).unwrap() {
            let path = entry.unwrap().path();
            let value: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let event_type = value["event_type"].as_i64().unwrap();
            if event_type == 100 {
                continue;
            }
            seen += 1;
            let (view, warnings) = read(event_type, value);
            assert!(warnings.is_empty(), "{path:?}: {warnings:?}");
            let mut found = Vec::new();
            unknown(&view_json(&view), &mut found);
            assert!(found.is_empty(), "{path:?}: unknown fields {found:?}");
        }
        assert!(seen >= 18, "only {seen} samples");
    }

    #[test]
    fn json_in_strings_is_decoded() {
        let (view, _) = read(
            314,
            json!({"source_urls": "[\"https://a/x.m3u8\"]\n", "msg": "{\"code\":-22,\"task_exit_time\":1700003600000}"}),
        );
        let EventView::Relay(relay) = view else {
            panic!("{view:?}")
        };
        assert_eq!(relay.source_urls.unwrap(), ["https://a/x.m3u8"]);
        let msg = relay.msg.unwrap();
        assert_eq!(
            (msg.code, msg.task_exit_time),
            (Some(-22), Some(1_700_003_600_000))
        );
        let (view, _) = read(
            332,
            json!({"record_detail": "{\"file_format\":2}", "recordevent": "record_paused"}),
        );
        let EventView::RecordStatus(status) = view else {
            panic!("{view:?}")
        };
        assert_eq!(status.record_detail.unwrap().file_format, Some(2));
        assert_eq!(status.record_event.as_deref(), Some("record_paused"));
    }

    #[test]
    fn assessments_are_told_apart_by_content() {
        assert_eq!(classify(344, &object(json!({"average_score": 9.5}))), 345);
        assert_eq!(classify(344, &object(json!({"frames": []}))), 345);
        assert_eq!(
            classify(344, &object(json!({"function": "Assessment"}))),
            344
        );
        assert_eq!(classify(345, &object(json!({}))), 345);
        assert_eq!(classify(343, &object(json!({"average_score": 1}))), 343);
        let (view, _) = read(
            344,
            json!({"average_score": 93.765, "frames": [{"score": 1, "time": "2"}]}),
        );
        let EventView::AssessmentAverage(quality) = view else {
            panic!("{view:?}")
        };
        assert_eq!(quality.frames.unwrap()[0].time, Some(2));
    }

    #[test]
    fn shapes_documented_both_ways_are_both_read() {
        let (view, warnings) = read(341, json!({"exception": [{"type": -9}, {"type": "-10"}]}));
        let EventView::RecordException(exception) = view else {
            panic!("{view:?}")
        };
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(exception.exception.unwrap().len(), 2);
        let (view, _) = read(317, json!({"score": [99, 1.5]}));
        let EventView::ImageAudit(audit) = view else {
            panic!("{view:?}")
        };
        assert_eq!(audit.score.unwrap(), [99.0, 1.5]);
        let (view, _) = read(315, json!({"task_id": 7735331, "HitFlag": "1"}));
        let EventView::AudioAudit(audit) = view else {
            panic!("{view:?}")
        };
        assert_eq!(
            (audit.task_id.as_deref(), audit.hit_flag),
            (Some("7735331"), Some(1))
        );
        let (view, _) = read(
            321,
            json!({"sequence": 6674468118806626493_u64, "abnormal_event": [{"customer_visible": "true", "detail": [{"occur_time": "1700000002113"}]}]}),
        );
        let EventView::PushException(push) = view else {
            panic!("{view:?}")
        };
        assert_eq!(push.sequence.as_deref(), Some("6674468118806626493"));
        let event = &push.abnormal_event.unwrap()[0];
        assert_eq!(event.customer_visible, Some(true));
        assert_eq!(
            event.detail.as_ref().unwrap()[0].occur_time,
            Some(1_700_000_002_113)
        );
    }

    #[test]
    fn mistyped_values_become_warnings_that_name_the_field() {
        let cases = [
            (
                0,
                json!({"push_duration": "3.6s"}),
                "field `push_duration` should be an integer",
            ),
            (
                200,
                json!({"pic_url": {}}),
                "field `pic_url` should be a string",
            ),
            (
                314,
                json!({"msg": "{not json"}),
                "field `msg` is not valid JSON text",
            ),
            (
                314,
                json!({"source_urls": "{\"a\":1}"}),
                "field `source_urls` should be a JSON array",
            ),
            (
                314,
                json!({"msg": "{\"code\":\"x\"}"}),
                "field `msg.code` should be an integer",
            ),
            (
                317,
                json!({"labelResults": [{"Score": "high"}]}),
                "field `labelResults[0].Score` should be a number",
            ),
            (
                317,
                json!({"type": [1, "two"]}),
                "field `type[1]` should be an integer",
            ),
            (
                321,
                json!({"abnormal_event": [5]}),
                "field `abnormal_event[0]` should be an object",
            ),
            (
                321,
                json!({"abnormal_event": [{"customer_visible": "maybe"}]}),
                "field `abnormal_event[0].customer_visible` should be a boolean",
            ),
            (
                332,
                json!({"record_detail": 5}),
                "field `record_detail` should be a JSON object serialized as a string",
            ),
            (
                338,
                json!({"data": {"subtitle_tmp_res": [{"steady_state": []}]}}),
                "field `data.subtitle_tmp_res[0].steady_state` should be a boolean",
            ),
            (
                348,
                json!({"key_words": "launch"}),
                "field `key_words` should be an array",
            ),
            (
                349,
                json!({"items": [{"begin_time": 1.5}]}),
                "field `items[0].begin_time` should be an integer",
            ),
        ];
        for (event_type, body, expected) in cases {
            let (_, warnings) = read(event_type, body.clone());
            assert!(
                warnings.iter().any(|w| w.starts_with(expected)),
                "{event_type} {body}: {expected:?} not in {warnings:?}"
            );
        }
    }

    #[test]
    fn undocumented_types_have_no_view() {
        assert!(EventTypeSpec::of(329).is_none());
        // The recording is read by its own module, through the same table.
        let recording = EventTypeSpec::of(100).expect("documented");
        let view = (recording.read)(&Map::new(), &mut Vec::new());
        assert!(view.recording().is_some(), "{view:?}");
    }
}
