//! The checks every sink's settings share: the error that names the key at
//! fault ([`InvalidSetting`]), range checks, and the bounds of a sink's
//! `timeout_secs`.
//!
//! A leaf below both the sink modules and [`super::settings`]: each sink's
//! settings struct validates itself with these, and `settings` puts those
//! structs together, so the dependencies run one way (settings → sink →
//! checks) and no sink module needs `settings`.

/// Default `timeout_secs` of a sink that waits on a remote target (forward,
/// nats, redis, rabbitmq).
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Longest `timeout_secs` of any sink: an hour. A target slower than that is
/// down, and an attempt must end well within any shutdown or retry horizon.
pub const MAX_TIMEOUT_SECS: u64 = 3_600;

/// A setting that cannot work, named relative to its sink (`url`, not `sinks[0].url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct InvalidSetting {
    /// The key within the sink's table.
    pub field: &'static str,
    /// What is wrong with it and what is expected.
    pub reason: String,
}

impl InvalidSetting {
    /// An error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Checks that `value` lies in `min..=max`, naming the bound when it does not.
pub(crate) fn check_range<T>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
    unit: &str,
) -> Result<(), InvalidSetting>
where
    T: PartialOrd + std::fmt::Display,
{
    crate::bounds::check(value, min, max, unit)
        .map_err(|out_of_range| InvalidSetting::new(field, out_of_range.to_string()))?;
    Ok(())
}

/// Checks `timeout_secs`: 1 to [`MAX_TIMEOUT_SECS`].
pub(crate) fn check_timeout(timeout_secs: u64) -> Result<(), InvalidSetting> {
    check_range("timeout_secs", timeout_secs, 1, MAX_TIMEOUT_SECS, " s")
}

/// The default of every `timeout_secs` key, for serde.
pub(crate) fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_one_second_to_an_hour() {
        assert_eq!(check_timeout(1), Ok(()));
        assert_eq!(check_timeout(MAX_TIMEOUT_SECS), Ok(()));
        for bad in [0, MAX_TIMEOUT_SECS + 1] {
            let err = check_timeout(bad).unwrap_err();
            assert_eq!(err.field, "timeout_secs");
            assert_eq!(
                err.reason,
                format!("must be between 1 and 3600 s, not {bad}")
            );
        }
    }
}
