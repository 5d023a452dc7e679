//! fail2ban as a backend of the manager: when bans go there, their
//! expiry, and the reconciliation of the jail with the store.

use foldhash::HashSet;
use ipnet::IpNet;
use tracing::{debug, warn};

use super::{BanManager, Held};
use crate::{
    bans::fail2ban::{Fail2banBackend, Fail2banOp},
    clock::unix_now,
};

/// fail2ban as a backend, and when it is used.
#[derive(Debug)]
pub struct Fail2banLink {
    pub backend: Fail2banBackend,
    /// `ban.backends` names it: used always. Otherwise only while XDP is
    /// not enforcing (fallback).
    pub always: bool,
}

/// What a reconciliation of the fail2ban jail did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fail2banReconciled {
    /// Active bans the jail lacked, queued again.
    pub resent: u64,
    /// Jail entries no active ban explains (expired, lifted, or never
    /// ours), queued for lifting.
    pub lifted: u64,
    /// Jail entries that are not an address or prefix, left alone.
    pub foreign: u64,
}

impl BanManager {
    /// Queues every active ban for fail2ban (at start, or when it becomes
    /// the fallback); fail2ban answers "already banned" for those it has.
    pub fn sync_fail2ban(&mut self) {
        if !self.fail2ban_active() {
            return;
        }
        let now = unix_now();
        let ops = self
            .index
            .iter()
            .filter(|row| row.is_active(now))
            .map(|row| Fail2banOp::ban(row.target))
            .collect();
        self.track_fail2ban_expiries();
        self.queue_for_fail2ban(ops);
    }

    /// Notes when every active ban ends, so that [`Self::expire_fail2ban`]
    /// lifts it from fail2ban then (at start, and when fail2ban takes
    /// over).
    pub fn track_fail2ban_expiries(&mut self) {
        if !self.fail2ban_active() {
            return;
        }
        let now = unix_now();
        let expiries: Vec<(i64, IpNet)> = self
            .index
            .iter()
            .filter(|row| row.is_active(now))
            .filter_map(|row| row.expires_at.map(|at| (at, row.target)))
            .collect();
        self.fail2ban_expiries.extend(expiries);
    }

    /// Queues the unban of every ban sent to fail2ban whose expiry has
    /// come; returns how many. Called every second or so: fail2ban keeps a
    /// ban until told (the jail's `bantime = -1`), so its end is ours to
    /// send. An unban that cannot be delivered waits in the outbox.
    pub fn expire_fail2ban(&mut self) -> usize {
        let now = unix_now();
        let mut ops = Vec::new();
        while let Some(&(at, target)) = self.fail2ban_expiries.first() {
            if at > now {
                break;
            }
            self.fail2ban_expiries.pop_first();
            // A ban extended or lifted since has another entry or was
            // already unbanned.
            if self
                .index
                .get(&target)
                .is_some_and(|row| row.expires_at == Some(at))
            {
                ops.push(Fail2banOp::unban(target));
            }
        }
        let expired = ops.len();
        if expired > 0 {
            debug!(expired, "bans ended: unbans queued for fail2ban");
            self.queue_for_fail2ban(ops);
        }
        expired
    }

    /// Brings the fail2ban jail, whose entries are `in_jail`, in line with
    /// the store: while fail2ban is in use every active ban must be in it,
    /// and nothing else; while it is an idle fallback, nothing. Missing
    /// bans and stray entries are queued through the outbox.
    pub fn reconcile_fail2ban(&mut self, in_jail: &[String]) -> Fail2banReconciled {
        let mut report = Fail2banReconciled::default();
        let now = unix_now();
        let active = self.fail2ban_active();
        let mut jail: HashSet<IpNet> = HashSet::default();
        for entry in in_jail {
            match crate::bans::parse_target(entry) {
                Ok(net) => {
                    jail.insert(net);
                }
                Err(_) => report.foreign += 1,
            }
        }
        let wanted = |row: &Held| active && row.is_active(now);
        let mut ops = Vec::new();
        let mut expiries = Vec::new();
        for row in self.index.iter().filter(|row| wanted(row)) {
            if !jail.contains(&row.target) {
                ops.push(Fail2banOp::ban(row.target));
                if let Some(at) = row.expires_at {
                    expiries.push((at, row.target));
                }
                report.resent += 1;
            }
        }
        for net in jail {
            if !self.index.get(&net).is_some_and(|row| wanted(&row)) {
                ops.push(Fail2banOp::unban(net));
                report.lifted += 1;
            }
        }
        self.fail2ban_expiries.extend(expiries);
        if let Some(link) = &self.fail2ban
            && let Err(error) = link.backend.submit_many(ops)
        {
            self.backend_errors += 1;
            warn!(%error, "queueing the fail2ban reconciliation failed; the next one retries");
        }
        report
    }

    pub(super) fn queue_for_fail2ban(&mut self, ops: Vec<Fail2banOp>) {
        if ops.is_empty() || !self.fail2ban_active() {
            return;
        }
        let Some(link) = &self.fail2ban else { return };
        if let Err(error) = link.backend.submit_many(ops) {
            self.backend_errors += 1;
            warn!(%error, "queueing bans for fail2ban failed; the store keeps them");
        }
    }
}
