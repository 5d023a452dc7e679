//! What the policy, control and metrics listeners share: the accept step
//! with its pause after a failed `accept` ([`next_connection`]), the
//! registry of live clients with its cap ([`Clients`]), warnings limited
//! to one a second ([`LogLimit`]).
//!
//! None of it ever makes an accept loop wait for a client: a loop waits
//! only for the next connection, for the end of a pause, or for shutdown.

mod clients;
mod log_limit;
mod unix;

use std::{future::Future, io, pin::Pin, time::Duration};

use tracing::{debug, warn};

pub use clients::{Admitted, Clients, Slot, WaitTicket};
pub use log_limit::LogLimit;
pub use unix::{BindError, bind_unix};

/// Pause after `accept` failed for want of a resource (file descriptors,
/// memory): the pending connection keeps the listener readable, so
/// accepting again at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a warning a peer can provoke is logged at most.
pub const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Logs a failed `accept` on the `role` listener (at most once per
/// [`WARN_INTERVAL`] through `limit`, with the count of those held back)
/// and says how long to pause before accepting again: nothing when only
/// that one connection failed (the peer gave up), [`ACCEPT_BACKOFF`]
/// otherwise, e.g. on `EMFILE`, `ENFILE`, `ENOBUFS` or `ENOMEM`.
fn accept_failed(role: &'static str, error: &io::Error, limit: &LogLimit) -> Duration {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        debug!(listener = role, %error, "a connection failed before it was accepted");
        return Duration::ZERO;
    }
    if let Some(held_back) = limit.check() {
        warn!(
            listener = role,
            %error,
            pause = ?ACCEPT_BACKOFF,
            held_back,
            "accepting a connection failed; pausing before the next accept"
        );
    }
    ACCEPT_BACKOFF
}

/// The next connection `accept` gives, or `None` once `shutdown` has
/// resolved. A failed accept is logged for the `role` listener (at most
/// once per [`WARN_INTERVAL`] through `limit`) and followed by a pause
/// that shutdown cuts short, unless only that connection failed (the
/// peer gave up); then the loop accepts again.
pub async fn next_connection<T, Accepting>(
    role: &'static str,
    limit: &LogLimit,
    mut accept: impl FnMut() -> Accepting,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<T>
where
    Accepting: Future<Output = io::Result<T>>,
{
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return None,
            accepted = accept() => accepted,
        };
        match accepted {
            Ok(connection) => return Some(connection),
            Err(error) => {
                let pause = accept_failed(role, &error, limit);
                if !pause.is_zero() {
                    tokio::select! {
                        () = &mut shutdown => return None,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resource_errors_pause_the_loop() {
        let limit = LogLimit::new(WARN_INTERVAL);
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(accept_failed("test", &emfile, &limit), ACCEPT_BACKOFF);
        let enomem = io::Error::from_raw_os_error(libc::ENOMEM);
        assert_eq!(accept_failed("test", &enomem, &limit), ACCEPT_BACKOFF);
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(accept_failed("test", &aborted, &limit), Duration::ZERO);
    }

    /// An accept that fails with each of `errors` in turn, then gives
    /// `connection`; counts its calls.
    fn failing_then(
        errors: &[i32],
        connection: u32,
        calls: &std::cell::Cell<usize>,
    ) -> impl FnMut() -> std::future::Ready<io::Result<u32>> {
        let errors = errors.to_vec();
        move || {
            let call = calls.get();
            calls.set(call + 1);
            std::future::ready(match errors.get(call) {
                Some(&errno) => Err(io::Error::from_raw_os_error(errno)),
                None => Ok(connection),
            })
        }
    }

    #[tokio::test]
    async fn a_failed_accept_is_followed_by_the_next_and_its_connection_returned() {
        // A real listener cannot be made to fail on demand without
        // starving the whole test process of descriptors: the failures
        // are given by the accept itself.
        let limit = LogLimit::new(WARN_INTERVAL);
        let calls = std::cell::Cell::new(0);
        let accept = failing_then(&[libc::ECONNABORTED, libc::EMFILE], 7, &calls);
        let shutdown = std::pin::pin!(std::future::pending::<()>());
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            next_connection("test", &limit, accept, shutdown),
        );
        assert_eq!(next.await.expect("returned"), Some(7));
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_for_a_connection_and_the_pause_after_a_failure() {
        let limit = LogLimit::new(WARN_INTERVAL);
        let shutdown = std::pin::pin!(std::future::ready(()));
        let never = || std::future::pending::<io::Result<u32>>();
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            next_connection("test", &limit, never, shutdown),
        );
        assert_eq!(next.await.expect("returned"), None);

        // Every accept fails for want of descriptors: shutdown comes during
        // a pause, and nothing is accepted.
        let calls = std::cell::Cell::new(0);
        let accept = failing_then(&[libc::EMFILE; 1_000], 7, &calls);
        let shutdown = std::pin::pin!(tokio::time::sleep(ACCEPT_BACKOFF * 3));
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            next_connection("test", &limit, accept, shutdown),
        );
        assert_eq!(next.await.expect("returned"), None);
        assert!(
            (1..1_000).contains(&calls.get()),
            "{} accepts: each failure must pause the loop",
            calls.get()
        );
    }
}
