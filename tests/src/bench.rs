//! What the benchmarks share: the `--smoke` mode and the check that a
//! peer they compare against is there.
//!
//! `cargo xtask test` runs every benchmark once with `--smoke` (a
//! handful of items, a second or less of load), so a benchmark that no
//! longer builds, starts or measures fails there instead of on the day
//! someone wants its figures. Smoke figures mean nothing. A benchmark
//! that cannot measure what it compares (a peer missing or failing, no
//! measurement taken) fails with a message naming what is missing; it
//! never prints a line and exits 0.

use std::ffi::OsStr;

/// Whether `--smoke` is among the arguments.
pub fn smoke() -> bool {
    std::env::args().any(|arg| arg == "--smoke")
}

/// `full`, or `small` under `--smoke`.
pub fn size<T>(full: T, small: T) -> T {
    if smoke() { small } else { full }
}

/// The path of `program` on `PATH`, if it is there and executable.
pub fn find_program(program: impl AsRef<OsStr>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let program = program.as_ref();
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Panics unless `program` is on `PATH`, naming it, the `peer` it is
/// and how to install it: the benchmark cannot compare without it.
///
/// # Panics
/// When `program` is not found.
pub fn require_peer(peer: &str, program: &str, install: &str) {
    assert!(
        find_program(program).is_some(),
        "cannot measure {peer}: {program} is not on PATH ({install})"
    );
}

/// Panics unless this process runs as root: every kernel benchmark
/// measures nothing without it, and says so with a non-zero exit.
///
/// # Panics
/// When not root.
pub fn require_root(bench: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "{bench}: needs root (CAP_BPF and CAP_NET_ADMIN) to measure anything"
    );
}
