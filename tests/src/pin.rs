//! One bpffs pin directory per test, removed when the test ends.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// Root of the pin directories tests create.
pub const PIN_ROOT: &str = "/sys/fs/bpf";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique pin directory `/sys/fs/bpf/spamwall-test-<pid>-<n>`.
///
/// The directory is not created here: `Dataplane::load` creates it (and
/// mounts bpffs first when needed). On drop, whatever spamwall pinned there
/// is removed with `detach(dir, None, purge = true)`: links are detached,
/// the program pin, the maps and the directory removed. Declare the guard
/// before the `Dataplane` so the dataplane is dropped first.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// A fresh, unused path; nothing is created yet.
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(PIN_ROOT).join(format!("spamwall-test-{}-{n}", std::process::id()));
        Self { path }
    }

    /// The pin directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if !self.path.exists() {
            return;
        }
        // No panic here: the guard also runs while a failed test unwinds.
        if let Err(error) = spamwall::dataplane::detach(&self.path, None, true) {
            eprintln!("cleaning up {}: {error}", self.path.display());
        }
    }
}
