//! Several recordhook processes on one PostgreSQL database.

use crate::harness::Test;

pub fn tests() -> Vec<Test> {
    Vec::new()
}
