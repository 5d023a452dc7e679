//! Giving memory back after a large request.
//!
//! A bulk ban of hundreds of thousands of addresses allocates the request,
//! the parsed targets, the rows and the store's page cache for a moment;
//! freed, most of it stays in the allocator's arenas and counts as the
//! daemon's resident memory. Half a second after the last such request
//! (a file of a million addresses is a burst of them), the store drops its
//! page cache and the allocator returns its free pages to the kernel.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tracing::debug;

use crate::bans::store::Store;

/// How long after the last large request memory is given back: a file of
/// a million addresses comes as a burst of requests, and memory given
/// back between them would only be faulted in again.
const QUIET: Duration = Duration::from_millis(500);

/// Counts large requests, so a pending give-back knows a newer one came.
static LARGE_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Requests at least this large are followed by [`give_back_soon`].
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

/// [`give_back`] once no other large request came for [`QUIET`].
pub(super) fn give_back_soon(store: Arc<Store>) {
    let mine = LARGE_REQUESTS.fetch_add(1, Ordering::SeqCst) + 1;
    let spawned = std::thread::Builder::new()
        .name("give-back".into())
        .spawn(move || {
            std::thread::sleep(QUIET);
            if LARGE_REQUESTS.load(Ordering::SeqCst) == mine {
                give_back(&store);
            }
        });
    if let Err(error) = spawned {
        debug!(%error, "no thread to give memory back");
    }
}

/// Serves every allocation of 128 KiB or more (a request, the rows of a
/// bulk ban, a sort buffer) straight from the kernel, and returns it on
/// free. glibc would otherwise raise this threshold as such blocks are
/// freed and carve them from the heap, where they leave holes between the
/// index's small, long-lived vectors that no trim can give back.
pub(super) fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: a plain setting; glibc checks the value.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) } == 0 {
            debug!("the allocator refused its mmap threshold");
        }
    }
}
