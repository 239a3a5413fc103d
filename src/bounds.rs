//! Whether a number from the configuration lies within its bounds: the one
//! comparison, and the one wording of its failure, for every section.
//!
//! A leaf, below `configuration`, `sinks` and `reconcile` alike: each of them
//! names its settings in its own error type (`sinks[0].timeout_secs`,
//! `reconcile.lag_secs`), and `configuration` already depends on the other
//! two, so the shared check cannot live in any of them without a cycle.

use std::fmt::Display;

/// A value outside its bounds, in words a config file's author can act on:
/// `must be between 1 and 3600, not 3601` (with the unit, when there is one,
/// after the upper bound).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be between {min} and {max}{unit}, not {value}")]
pub struct OutOfRange {
    /// The smallest value allowed.
    pub min: String,
    /// The largest value allowed.
    pub max: String,
    /// Appended to the upper bound, e.g. `" ms"`; empty for a plain number.
    pub unit: String,
    /// The value that was given.
    pub value: String,
}

/// Checks that `value` lies in `min..=max`; the error says which bounds.
pub fn check<T>(value: T, min: T, max: T, unit: &str) -> Result<(), OutOfRange>
where
    T: PartialOrd + Display,
{
    if value < min || value > max {
        return Err(OutOfRange {
            min: min.to_string(),
            max: max.to_string(),
            unit: unit.to_owned(),
            value: value.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bounds_are_allowed_and_the_error_names_them() {
        assert_eq!(check(1_u64, 1, 3_600, ""), Ok(()));
        assert_eq!(check(3_600_u64, 1, 3_600, ""), Ok(()));
        let low = check(0_u32, 1, 10, " ms").unwrap_err().to_string();
        assert_eq!(low, "must be between 1 and 10 ms, not 0");
        let high = check(3_601_u64, 1, 3_600, "").unwrap_err().to_string();
        assert_eq!(high, "must be between 1 and 3600, not 3601");
    }
}
