//! The open-file limit the listeners need.
//!
//! Every client connection is a file descriptor. The caps of the policy,
//! control and metrics listeners bound how many there are; the daemon
//! makes sure at start that the process may open that many, so a full
//! house costs places, not `EMFILE` for the store or a DNS query.

use tracing::{info, warn};

use crate::{control, metrics};

/// Descriptors kept for everything but client connections: the store, the
/// BPF maps and links, log files, `journalctl` pipes, DNS queries in
/// flight.
pub const RESERVED_FDS: u64 = 1024;

/// Descriptors the daemon may need with `max_connections` policy
/// connections (0: no policy server): as many again waiting for a place,
/// the control and metrics clients, and [`RESERVED_FDS`].
pub fn fd_budget(max_connections: usize) -> u64 {
    let clients = max_connections
        .saturating_mul(2)
        .saturating_add(control::MAX_CLIENTS + metrics::MAX_CLIENTS);
    u64::try_from(clients).unwrap_or(u64::MAX) + RESERVED_FDS
}

/// The soft limit to set for `budget` given the current `soft` and `hard`
/// limits; `None` when `soft` is enough already.
fn raised_soft_limit(soft: u64, hard: u64, budget: u64) -> Option<u64> {
    (soft < budget && soft < hard).then(|| budget.min(hard))
}

/// Raises the soft `RLIMIT_NOFILE` to [`fd_budget`] when it is lower, as
/// far as the hard limit allows; warns, naming `LimitNOFILE` and
/// `policy.max_connections`, when even the hard limit is short.
pub fn ensure_fd_budget(max_connections: usize) {
    let budget = fd_budget(max_connections);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid output struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return;
    }
    if let Some(soft) = raised_soft_limit(limit.rlim_cur, limit.rlim_max, budget) {
        let raised = libc::rlimit {
            rlim_cur: soft,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: valid rlimit struct; lowering nothing, the hard limit
        // is kept.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            info!(
                from = limit.rlim_cur,
                to = soft,
                "raised the open-file limit for the listeners"
            );
            limit.rlim_cur = soft;
        }
    }
    if limit.rlim_cur < budget {
        warn!(
            limit = limit.rlim_cur,
            needed = budget,
            max_connections,
            "the open-file limit is below what the listeners may need at their caps; raise LimitNOFILE (or ulimit -n) or lower policy.max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_waiting_connections_and_the_other_listeners() {
        assert_eq!(fd_budget(0), 64 + 16 + RESERVED_FDS);
        assert_eq!(fd_budget(512), 1024 + 64 + 16 + RESERVED_FDS);
        assert!(
            fd_budget(512) <= 65_536,
            "the unit's LimitNOFILE fits the default"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_up_to_the_hard_one() {
        assert_eq!(raised_soft_limit(1024, 524_288, 2128), Some(2128));
        assert_eq!(raised_soft_limit(1024, 1500, 2128), Some(1500));
        assert_eq!(raised_soft_limit(1024, 1024, 2128), None);
        assert_eq!(raised_soft_limit(65_536, 65_536, 2128), None);
    }
}
