//! Lifting bans: by hand, at another host's request, and when the
//! allowlist comes to cover them.

use std::sync::Arc;

use ipnet::IpNet;
use tracing::{debug, info, warn};

use super::{BanEvent, BanManager};
use crate::{
    bans::{BanError, Source, canonical_net, fail2ban::Fail2banOp, target_to_string},
    clock::unix_now,
};

impl BanManager {
    /// Lifts the ban on exactly `target`; `false` when there was none.
    pub fn unban(&mut self, target: IpNet) -> Result<bool, BanError> {
        self.unban_from(target, Source::Cli)
    }

    /// [`BanManager::unban`] at the request of `source` (the fleet's
    /// unbans are not published again).
    pub fn unban_from(&mut self, target: IpNet, source: Source) -> Result<bool, BanError> {
        let target = canonical_net(target.trunc());
        let lifted = self.end(target, unix_now())?;
        if lifted {
            self.tell(&BanEvent::Unbanned { target, source });
        }
        Ok(lifted)
    }

    /// Lifts the ban on `target` at another node's request, only when it
    /// came from the fleet: a ban made here (command line, policy, log
    /// watcher) stays. `false` when nothing was lifted.
    pub fn unban_remote(&mut self, target: IpNet) -> Result<bool, BanError> {
        let target = canonical_net(target.trunc());
        let now = unix_now();
        match self.index.get(&target) {
            Some(row) if row.is_active(now) && row.source != Source::Fleet => {
                debug!(target = %target_to_string(&target), source = %row.source, "fleet unban ignored: the ban was made here");
                Ok(false)
            }
            _ => self.unban_from(target, Source::Fleet),
        }
    }

    /// Ends the ban on `target` everywhere: store, fail2ban, kernel maps.
    pub(super) fn end(&mut self, target: IpNet, now: i64) -> Result<bool, BanError> {
        let ended = self.store.end_ban(&target, now).map_err(BanError::from)?;
        if let Some(row) = self.index.get_mut(&target)
            && row.is_active(now)
        {
            row.expires_at = Some(now);
        }
        if ended {
            self.queue_for_fail2ban(vec![Fail2banOp::unban(target)]);
        }
        let mut removed = false;
        if let Some(dataplane) = self.xdp.dataplane.as_mut() {
            removed = dataplane
                .remove(target)
                .map_err(|source| BanError::Kernel {
                    target,
                    source: Arc::new(source),
                })?;
        }
        Ok(ended || removed)
    }

    /// Lifts every active ban that the allowlist (or, with `ignore_self`,
    /// an address of this host) now covers, in the store, the kernel maps
    /// and fail2ban, and logs the entry that lifted it: an allowlist entry
    /// added by a reload or present at start is retroactive. Returns the
    /// lifted targets with the entry that covered each. A local decision:
    /// not published to the fleet.
    pub fn lift_disallowed(&mut self) -> Vec<(IpNet, IpNet)> {
        let now = unix_now();
        let covered: Vec<(IpNet, IpNet)> = self
            .index
            .values()
            .filter(|row| row.is_active(now))
            .filter_map(|row| match self.admissible(row.target) {
                Err(BanError::Allowlisted { entry, .. }) => Some((row.target, entry)),
                Err(BanError::OwnAddress { own, .. }) => Some((row.target, own)),
                _ => None,
            })
            .collect();
        let mut lifted = Vec::with_capacity(covered.len());
        for (target, entry) in covered {
            match self.end(target, now) {
                Ok(_) => {
                    info!(
                        target = %target_to_string(&target),
                        entry = %target_to_string(&entry),
                        "ban lifted: the allowlist covers it"
                    );
                    lifted.push((target, entry));
                }
                Err(error) => {
                    warn!(%error, target = %target_to_string(&target), "lifting an allowlisted ban failed");
                }
            }
        }
        lifted
    }
}
