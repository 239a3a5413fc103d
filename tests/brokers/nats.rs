//! The `nats` sink against the real broker.

use crate::harness::Test;

/// Every test of this file, for the harness.
pub fn tests() -> Vec<Test> {
    vec![]
}
