//! What the policy, control and metrics listeners share: the registry of
//! live clients with its cap ([`Clients`]), the pause after a failed
//! `accept`, warnings limited to one a second ([`LogLimit`]).
//!
//! None of it ever makes an accept loop wait for a client: a loop waits
//! only for the next connection, for the end of a pause, or for shutdown.

mod clients;
mod log_limit;
mod unix;

use std::{io, time::Duration};

use tracing::{debug, warn};

pub use clients::{Admitted, Clients, Slot, WaitTicket};
pub use log_limit::LogLimit;
pub use unix::{BindError, bind_unix};

/// Pause after `accept` failed for want of a resource (file descriptors,
/// memory): the pending connection keeps the listener readable, so
/// accepting again at once would spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a warning a peer can provoke is logged at most.
pub const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Logs a failed `accept` on the `role` listener (at most once per
/// [`WARN_INTERVAL`] through `limit`, with the count of those held back)
/// and says how long to pause before accepting again: nothing when only
/// that one connection failed (the peer gave up), [`ACCEPT_BACKOFF`]
/// otherwise, e.g. on `EMFILE`, `ENFILE`, `ENOBUFS` or `ENOMEM`.
pub fn accept_failed(role: &'static str, error: &io::Error, limit: &LogLimit) -> Duration {
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
}
