//! A feed's refresh extending the bans it still lists: one store update
//! per batch instead of a ban each, no offence counted, the kernel maps
//! and the index rewritten with the new expiry.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt as _};
use ipnet::IpNet;

use super::{BanEvent, BanManager, Carry, PARALLEL_WRITE};
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
        // A large batch reads the kernel entries' hit counters while the
        // store is written, rather than one lookup after another once it
        // is: the entries of the rows extended keep them. A packet counted
        // in between is not carried over.
        let store = Arc::clone(&self.store);
        let dataplane = self
            .xdp
            .dataplane
            .as_ref()
            .filter(|_| admissible.len() >= PARALLEL_WRITE);
        let (rows, previous) = std::thread::scope(|scope| {
            let reader = dataplane.map(|dataplane| {
                scope.spawn(|| {
                    let mut previous = HashMap::with_capacity(admissible.len());
                    for &target in &admissible {
                        if let Some(value) = dataplane.get(target)? {
                            previous.insert(target, value);
                        }
                    }
                    Ok::<_, crate::dataplane::DataplaneError>(previous)
                })
            });
            let rows = store.extend_feed_bans(&admissible, reason_word, until, now);
            (rows, reader.map(std::thread::ScopedJoinHandle::join))
        });
        let rows = rows?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        match previous {
            Some(Ok(Ok(previous))) => self.enforce_carrying(&rows, Carry::Known(&previous)),
            // Read one by one instead (a failure is logged there). Every
            // row extended was live: its entry keeps its hit counters.
            _ => self.enforce(&rows, &vec![true; rows.len()]),
        }
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
