//! A feed's refresh extending the bans it still lists: one store update
//! per batch instead of a ban each, no offence counted, the kernel maps
//! and the index rewritten with the new expiry.

use ipnet::IpNet;

use super::{BanEvent, BanManager};
use crate::{
    bans::{BanError, canonical_net},
    clock::unix_now,
};

impl BanManager {
    /// Extends to `until` the live bans on `targets` that the feed whose
    /// reasons start with `reason_word` holds and that end before `until`.
    /// A target the allowlist or one of the host's own addresses covers is
    /// left alone, as is a ban another source or feed holds. Returns the
    /// targets extended; the others are for [`BanManager::ban_many_as`],
    /// which keeps a longer ban and refuses what must be refused. A store
    /// failure extends nothing.
    pub fn extend_feed(
        &mut self,
        targets: &[IpNet],
        reason_word: &str,
        until: i64,
    ) -> Result<Vec<IpNet>, BanError> {
        let now = unix_now();
        let admissible: Vec<IpNet> = targets
            .iter()
            .map(|target| canonical_net(target.trunc()))
            .filter(|target| self.admissible(*target).is_ok())
            .collect();
        let rows = self
            .store
            .extend_feed_bans(&admissible, reason_word, until, now)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Every row extended was live: its entry keeps its hit counters.
        self.enforce(&rows, &vec![true; rows.len()]);
        self.tell(&BanEvent::Banned(&rows));
        if self.fail2ban_active() {
            self.fail2ban_expiries.extend(
                rows.iter()
                    .filter_map(|row| row.expires_at.map(|at| (at, row.target))),
            );
        }
        self.index.insert_many(&rows);
        Ok(rows.iter().map(|row| row.target).collect())
    }

    /// The index's view of `target`.
    #[cfg(test)]
    pub(crate) fn held(&self, target: &IpNet) -> Option<super::Held> {
        self.index.get(target)
    }
}
