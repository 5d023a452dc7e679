//! The one way a test skips: when what it needs is missing here.
//!
//! Outside CI a test may skip with a `SKIP` line on stderr, so a developer
//! without root or a Debian package still runs the rest. Under `CI` every
//! skip is a failure: what CI cannot run, it must not report as passed.

use std::fmt::Display;

/// Skips `test` because of `missing` (what it needs and how to get it):
/// prints `SKIP test: missing` and returns `false`, for
/// `if !ready { return skip(...) }`-style early returns.
///
/// # Panics
/// When the `CI` environment variable is set.
pub fn skip(test: &str, missing: impl Display) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs {missing}, and CI is set: a skipped test fails there"
    );
    eprintln!("SKIP {test}: needs {missing}");
    false
}

/// `true` when `available`, else [`skip`]s `test` for `missing`.
///
/// # Panics
/// When `available` is false and `CI` is set.
pub fn require(test: &str, available: bool, missing: impl Display) -> bool {
    available || skip(test, missing)
}
