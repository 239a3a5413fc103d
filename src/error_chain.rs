//! An error and its causes as one line of text, for the boundaries that only
//! take text (serde's custom errors, which become a configuration error's
//! message): the typed errors keep their causes as `source()`, and this is
//! where the chain is written out rather than cut to its first link.

use std::error::Error;

/// `err` and each of its causes, `: `-separated, as anyhow's `{:#}` writes
/// them (`not a valid URL: invalid port number`).
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_follows_its_error() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&err), "outer: inner");
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }
}
