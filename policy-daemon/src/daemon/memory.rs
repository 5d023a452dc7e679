//! Giving memory back after a large request.
//!
//! A bulk ban of hundreds of thousands of addresses allocates the request,
//! the parsed targets, the rows and the store's page cache for a moment;
//! freed, most of it stays in the allocator's arenas and counts as the
//! daemon's resident memory. After such a request the store drops its
//! page cache and the allocator returns its free pages to the kernel.

use tracing::debug;

use crate::bans::store::Store;

/// Requests at least this large are followed by [`give_back`].
pub(super) const LARGE_REQUEST: usize = 10_000;

/// Drops the store's page cache and returns free heap pages to the kernel.
pub(super) fn give_back(store: &Store) {
    if let Err(error) = store.release_memory() {
        debug!(%error, "releasing the store's cache failed");
    }
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: no arguments to uphold; glibc walks its own arenas.
        unsafe { libc::malloc_trim(0) };
    }
}
