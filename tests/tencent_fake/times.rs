//! The live API's two time formats: ISO 8601 `YYYY-MM-DDThh:mm:ssZ` (UTC,
//! or with a `+08:00`-style offset) and `YYYY-MM-DD hh:mm:ss`, which Tencent
//! reads as Beijing time (UTC+8). Times are Unix seconds everywhere else in
//! the fake.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Beijing time's offset from UTC, in seconds (China has no daylight saving).
const BEIJING_OFFSET_SECS: i32 = 8 * 3600;

/// Which of the two formats a time was written in; an answer writes its
/// times in the format the request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// `YYYY-MM-DDThh:mm:ssZ` (parsed with any offset, written in UTC).
    Iso,
    /// `YYYY-MM-DD hh:mm:ss`, Beijing time.
    Beijing,
}

/// Parses either format into Unix seconds, with the format it was in.
/// `None` for anything else (fractions of a second included).
pub fn parse(text: &str) -> Option<(i64, TimeFormat)> {
    let bytes = text.as_bytes();
    if !text.is_ascii() || bytes.len() < 19 {
        return None;
    }
    let (format, offset) = match (bytes[10], &text[19..]) {
        (b' ', "") => (TimeFormat::Beijing, BEIJING_OFFSET_SECS),
        (b'T', "Z") => (TimeFormat::Iso, 0),
        (b'T', zone) => (TimeFormat::Iso, parse_offset(zone)?),
        _ => return None,
    };
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = text.get(range)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let date = Date::from_calendar_date(
        i32::try_from(number(0..4)?).ok()?,
        Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?,
        u8::try_from(number(8..10)?).ok()?,
    )
    .ok()?;
    let clock = Time::from_hms(
        u8::try_from(number(11..13)?).ok()?,
        u8::try_from(number(14..16)?).ok()?,
        u8::try_from(number(17..19)?).ok()?,
    )
    .ok()?;
    let offset = UtcOffset::from_whole_seconds(offset).ok()?;
    let unix = PrimitiveDateTime::new(date, clock)
        .assume_offset(offset)
        .unix_timestamp();
    Some((unix, format))
}

/// `+hh:mm` or `-hh:mm` as seconds east of UTC.
fn parse_offset(zone: &str) -> Option<i32> {
    let bytes = zone.as_bytes();
    if bytes.len() != 6 || bytes[3] != b':' {
        return None;
    }
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours: i32 = zone[1..3].parse().ok()?;
    let minutes: i32 = zone[4..6].parse().ok()?;
    if !zone[1..3]
        .bytes()
        .chain(zone[4..6].bytes())
        .all(|b| b.is_ascii_digit())
        || hours > 23
        || minutes > 59
    {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// Writes Unix seconds in `format`: `2024-05-01T12:00:00Z`, or Beijing time
/// `2024-05-01 20:00:00`.
pub fn format(unix: i64, format: TimeFormat) -> String {
    let utc = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (at, separator, zone) = match format {
        TimeFormat::Iso => (utc, 'T', "Z"),
        TimeFormat::Beijing => {
            let beijing =
                UtcOffset::from_whole_seconds(BEIJING_OFFSET_SECS).unwrap_or(UtcOffset::UTC);
            (utc.to_offset(beijing), ' ', "")
        }
    };
    format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}{zone}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}
