//! The time formats of Tencent Cloud's API: `YYYY-MM-DDThh:mm:ssZ` (UTC),
//! `YYYY-MM-DDThh:mm:ss+08:00` (any offset), and `YYYY-MM-DD hh:mm:ss`,
//! which Tencent defines as Beijing time (UTC+8) with no offset written.
//! Pure functions between that text and Unix seconds; the `time` crate does
//! the calendar arithmetic.

use time::format_description::FormatItem;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// `YYYY-MM-DDThh:mm:ssZ`: what the client sends and Tencent answers in kind.
const UTC_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
/// `YYYY-MM-DDThh:mm:ss±hh:mm`: RFC 3339 with an explicit offset.
const OFFSET_FORMAT: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
);
/// `YYYY-MM-DD hh:mm:ss`: Beijing time by Tencent's definition.
const BEIJING_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
/// `YYYY-MM-DD`: the date in a TC3 signature's credential scope.
const DATE_FORMAT: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// The offset Tencent means when a time is written without one.
pub const BEIJING: UtcOffset = offset!(+8);

/// Why a time could not be read or written. Times are not secrets, so the
/// offending text is shown; `Display` includes the cause.
#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    /// The text has none of the three shapes (a `T` or a space between date
    /// and time, at the eleventh character).
    #[error(
        "`{text}` is not a Tencent time (YYYY-MM-DDThh:mm:ssZ, YYYY-MM-DDThh:mm:ss+hh:mm or YYYY-MM-DD hh:mm:ss)"
    )]
    Unrecognized {
        /// The text as given.
        text: String,
    },
    /// The text has one of the shapes but not a valid date and time in it.
    #[error("`{text}` is not a valid Tencent time: {source}")]
    Invalid {
        /// The text as given.
        text: String,
        /// What the parser found wrong.
        #[source]
        source: time::error::Parse,
    },
    /// The instant lies outside the years the formats can write (±9999).
    #[error("unix time {unix_secs} is outside the years a Tencent time can show: {source}")]
    OutOfRange {
        /// The instant, in seconds since the Unix epoch.
        unix_secs: i64,
        /// The range check that failed.
        #[source]
        source: time::error::ComponentRange,
    },
    /// Writing the instant failed (not expected for an instant in range).
    #[error("unix time {unix_secs} could not be formatted: {source}")]
    Format {
        /// The instant, in seconds since the Unix epoch.
        unix_secs: i64,
        /// What the formatter reported.
        #[source]
        source: time::error::Format,
    },
}

/// `unix_secs` as `YYYY-MM-DDThh:mm:ssZ`, the format requests use: it
/// carries its zone, so nothing depends on how Tencent reads a bare time.
pub fn format_utc(unix_secs: i64) -> Result<String, TimeError> {
    format(unix_secs, UTC_FORMAT)
}

/// The UTC date (`YYYY-MM-DD`) of `unix_secs`, as a TC3 credential scope
/// needs it. UTC, not local: a local date breaks signing around midnight.
pub fn utc_date(unix_secs: i64) -> Result<String, TimeError> {
    format(unix_secs, DATE_FORMAT)
}

fn format(unix_secs: i64, description: &[FormatItem<'_>]) -> Result<String, TimeError> {
    let instant = OffsetDateTime::from_unix_timestamp(unix_secs)
        .map_err(|source| TimeError::OutOfRange { unix_secs, source })?;
    instant
        .format(description)
        .map_err(|source| TimeError::Format { unix_secs, source })
}

/// Reads a Tencent time as Unix seconds: `YYYY-MM-DDThh:mm:ssZ`,
/// `YYYY-MM-DDThh:mm:ss±hh:mm`, or `YYYY-MM-DD hh:mm:ss` as Beijing time.
/// Nothing else: no fractions, no lowercase `t`/`z`, no surrounding spaces.
pub fn parse(text: &str) -> Result<i64, TimeError> {
    let invalid = |source| TimeError::Invalid {
        text: text.to_owned(),
        source,
    };
    // The separator decides the format, so a failure reports the parser
    // error of the one format the text was meant to be in.
    let parsed = match text.as_bytes().get(10) {
        Some(b'T') if text.ends_with('Z') => PrimitiveDateTime::parse(text, UTC_FORMAT)
            .map(PrimitiveDateTime::assume_utc)
            .map_err(invalid)?,
        Some(b'T') => OffsetDateTime::parse(text, OFFSET_FORMAT).map_err(invalid)?,
        Some(b' ') => PrimitiveDateTime::parse(text, BEIJING_FORMAT)
            .map(|local| local.assume_offset(BEIJING))
            .map_err(invalid)?,
        _ => {
            return Err(TimeError::Unrecognized {
                text: text.to_owned(),
            });
        }
    };
    Ok(parsed.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2019-02-25T16:44:25Z, the instant of Tencent's signing example
    /// (`date -u -d @1551113065`).
    const EXAMPLE: i64 = 1_551_113_065;

    #[test]
    fn format_utc_writes_the_instant_with_a_z() {
        assert_eq!(format_utc(EXAMPLE).unwrap(), "2019-02-25T16:44:25Z");
        assert_eq!(format_utc(0).unwrap(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn utc_date_is_the_utc_day_even_when_beijing_is_already_on_the_next() {
        // 16:44:25 UTC is 00:44:25 on the 26th in Beijing; the scope wants the 25th.
        assert_eq!(utc_date(EXAMPLE).unwrap(), "2019-02-25");
        assert_eq!(
            utc_date(EXAMPLE - 16 * 3600 - 44 * 60 - 26).unwrap(),
            "2019-02-24"
        );
    }

    #[test]
    fn an_instant_beyond_year_9999_cannot_be_formatted() {
        let err = format_utc(i64::MAX).unwrap_err();
        assert!(matches!(err, TimeError::OutOfRange { .. }), "{err:?}");
        assert!(utc_date(i64::MIN).is_err());
    }

    #[test]
    fn parse_reads_utc_with_a_z() {
        assert_eq!(parse("2019-02-25T16:44:25Z").unwrap(), EXAMPLE);
    }

    #[test]
    fn parse_applies_any_explicit_offset() {
        assert_eq!(parse("2019-02-26T00:44:25+08:00").unwrap(), EXAMPLE);
        assert_eq!(parse("2019-02-25T16:44:25+00:00").unwrap(), EXAMPLE);
        assert_eq!(parse("2019-02-25T11:14:25-05:30").unwrap(), EXAMPLE);
    }

    #[test]
    fn parse_reads_a_time_without_offset_as_beijing_time() {
        // Computed independently: `TZ=Asia/Shanghai date -d '2019-02-26 00:44:25' +%s`.
        assert_eq!(parse("2019-02-26 00:44:25").unwrap(), EXAMPLE);
        assert_eq!(parse("1970-01-01 08:00:00").unwrap(), 0);
    }

    #[test]
    fn parse_and_format_utc_round_trip() {
        for secs in [0, EXAMPLE, 1_700_000_000, 253_402_300_799] {
            assert_eq!(parse(&format_utc(secs).unwrap()).unwrap(), secs);
        }
    }

    #[test]
    fn parse_rejects_garbage_and_near_misses() {
        let rows = [
            ("", "empty"),
            ("garbage", "no date"),
            ("1551113065", "unix seconds"),
            ("2019-02-25", "a date alone"),
            ("2019-02-25T16:44:25", "no zone after T"),
            ("2019-02-25T16:44:25z", "lowercase z"),
            ("2019-02-25t16:44:25Z", "lowercase t"),
            ("2019-02-25T16:44:25.5Z", "fractional seconds"),
            ("2019-02-25T16:44:25+0800", "offset without a colon"),
            ("2019-02-25T16:44:25+08", "offset without minutes"),
            ("2019-02-25 16:44:25Z", "a space and a zone"),
            ("2019-02-25 16:44", "no seconds"),
            (" 2019-02-25 16:44:25", "leading space"),
            ("2019-02-25 16:44:25 ", "trailing space"),
            ("2019-02-30 00:00:00", "February 30th"),
            ("2019-13-01T00:00:00Z", "month 13"),
            ("2019-02-25T24:00:00Z", "hour 24"),
            ("19-02-25T16:44:25Z", "two-digit year"),
            ("2019/02/25 16:44:25", "slashes"),
        ];
        for (text, why) in rows {
            assert!(parse(text).is_err(), "{why}: `{text}` was accepted");
        }
    }

    #[test]
    fn a_parse_error_names_the_text() {
        let err = parse("2019-02-30 00:00:00").unwrap_err();
        assert!(err.to_string().contains("2019-02-30 00:00:00"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
