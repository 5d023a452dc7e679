//! A feed's refresh extending the bans it still lists: one store update
//! per batch instead of a ban each, no offence counted, the kernel maps
//! and the index rewritten with the new expiry. When the store extended
//! every target, the rows come from the index (the update changed their
//! end and nothing else) instead of being read back from the store, which
//! costs more than the update itself; they are read back when the
//! observer shares feed bans and needs their reasons.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt as _};
use ipnet::IpNet;

use super::{BanEvent, BanManager, Carry, PARALLEL_WRITE};
use crate::{
    bans::{
        BanError, Source, canonical_net,
        store::{Extended, ReadBack, StoredBan},
    },
    clock::unix_now,
};

impl BanManager {
    /// Extends to `until` the live bans on `targets` that the feed whose
    /// reasons start with `reason_word` holds and that end before `until`.
    /// A target the allowlist or one of the host's own addresses covers is
    /// left alone, as is a ban another source or feed holds. Returns the
    /// targets extended; the others are for [`BanManager::ban_many_as`],
    /// which keeps a longer ban and refuses what must be refused. A store
    /// failure extends nothing. The observer is told the bans extended
    /// only when it observes [`Source::Feed`].
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
        let read_back = if self.observes(Source::Feed) {
            ReadBack::Always
        } else {
            ReadBack::WhenPartial
        };
        let dataplane = self
            .xdp
            .dataplane
            .as_ref()
            .filter(|_| admissible.len() >= PARALLEL_WRITE);
        let (extended, previous) = std::thread::scope(|scope| {
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
            let extended = store.extend_feed_bans(&admissible, reason_word, until, now, read_back);
            (extended, reader.map(std::thread::ScopedJoinHandle::join))
        });
        let rows = match extended? {
            Extended::Rows(rows) => rows,
            Extended::Every => self.extended_rows(&admissible, until)?,
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        match previous {
            Some(Ok(Ok(previous))) => self.enforce_carrying(&rows, Carry::Known(&previous)),
            // Read one by one instead (a failure is logged there). Every
            // row extended was live: its entry keeps its hit counters.
            _ => self.enforce(&rows, &vec![true; rows.len()]),
        }
        if read_back == ReadBack::Always {
            self.tell(&BanEvent::Banned(&rows));
        }
        if self.fail2ban_active() {
            self.fail2ban_expiries.extend(
                rows.iter()
                    .filter_map(|row| row.expires_at.map(|at| (at, row.target))),
            );
        }
        self.index.insert_many(&rows);
        Ok(rows.iter().map(|row| row.target).collect())
    }

    /// The rows of `targets`, every one extended to `until`, from the
    /// index: the store changed their end and nothing else. A target the
    /// index misses is read from the store.
    fn extended_rows(&self, targets: &[IpNet], until: i64) -> Result<Vec<StoredBan>, BanError> {
        let found = self.index.get_many(targets);
        let mut rows = Vec::with_capacity(targets.len());
        for (at, &target) in targets.iter().enumerate() {
            let row = match self.index.found(&found, at, target) {
                Some(held) => Some(StoredBan::from(&held)),
                None => self.store.get(&target)?,
            };
            rows.extend(row.map(|row| StoredBan {
                expires_at: Some(until),
                ..row
            }));
        }
        Ok(rows)
    }

    /// The index's view of `target`.
    #[cfg(test)]
    pub(crate) fn held(&self, target: &IpNet) -> Option<super::Held> {
        self.index.get(target)
    }
}
