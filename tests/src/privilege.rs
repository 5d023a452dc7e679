//! Whether this process may load BPF programs.

/// Whether a kernel test can run: true when the effective uid is 0.
///
/// Kernel tests need root (or `CAP_BPF` + `CAP_NET_ADMIN`); without it they
/// are skipped ([`crate::skip`]), which fails under `CI`. Every kernel test
/// starts with `if !require_root("name") { return; }`.
///
/// # Panics
/// When not root and the `CI` environment variable is set.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    crate::skip::require(test, root, "root/CAP_BPF")
}
