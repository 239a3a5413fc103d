//! Tells the tests whether they may mount filesystems.
//!
//! The disk-full test mounts a small tmpfs, which needs root with
//! `CAP_SYS_ADMIN`. Where the build cannot do that, the test is compiled as
//! `#[ignore]`, so `cargo test` reports it as ignored instead of passing it
//! without running it. Under `CI` it always runs, so there a missing mount is
//! a failure, never a skip.
//!
//! The answer is fixed when the crate is built: building as another user with
//! the same target directory needs `touch build.rs` to ask again.

use std::fs;

/// Bit of `CAP_SYS_ADMIN` in `/proc/self/status`'s `CapEff` mask.
const CAP_SYS_ADMIN: u32 = 21;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=USER");
    println!("cargo::rustc-check-cfg=cfg(recordhook_root_tests)");
    let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    if ci || can_mount() {
        println!("cargo::rustc-cfg=recordhook_root_tests");
    }
}

/// Whether this process runs with effective uid 0 and `CAP_SYS_ADMIN`.
fn can_mount() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::split_whitespace)
    };
    // `Uid:` lists the real, effective, saved and filesystem uids.
    let euid_is_root = field("Uid:").and_then(|mut ids| ids.nth(1)) == Some("0");
    let cap_sys_admin = field("CapEff:")
        .and_then(|mut mask| mask.next())
        .and_then(|mask| u64::from_str_radix(mask, 16).ok())
        .is_some_and(|mask| mask & (1 << CAP_SYS_ADMIN) != 0);
    euid_is_root && cap_sys_admin
}
