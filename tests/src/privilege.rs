//! Whether this process may load BPF programs.

/// Whether a kernel test can run: true when the effective uid is 0.
///
/// Kernel tests need root (or `CAP_BPF` + `CAP_NET_ADMIN`); without it they
/// are skipped with a `SKIP` line on stderr, except under `CI`, where a
/// missing privilege is a failure: this panics. Every kernel test starts
/// with `if !require_root("name") { return; }`.
///
/// # Panics
/// When not root and the `CI` environment variable is set.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root/CAP_BPF and CI is set"
    );
    eprintln!("SKIP {test}: needs root/CAP_BPF");
    false
}
