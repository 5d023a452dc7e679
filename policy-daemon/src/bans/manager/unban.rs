//! Lifting bans: by hand, at another host's request, and when the
//! allowlist comes to cover them.

use std::sync::Arc;

use ipnet::IpNet;
use tracing::{debug, info, warn};

use super::{BanEvent, BanManager};
use crate::{
    bans::{BanEntry, BanError, Source, canonical_net, fail2ban::Fail2banOp, target_to_string},
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

    /// Lifts the bans on exactly `targets`, one result per target in
    /// order: `false` when there was none. One store transaction for the
    /// lot; with `only`, a ban from another source is left alone (a target
    /// banned again by someone else since it was chosen). Keep batches to a
    /// few hundred: the manager's lock is held throughout.
    pub fn unban_many(
        &mut self,
        targets: &[IpNet],
        only: Option<Source>,
    ) -> Vec<Result<bool, BanError>> {
        let now = unix_now();
        let targets: Vec<IpNet> = targets
            .iter()
            .map(|target| canonical_net(target.trunc()))
            .collect();
        let chosen: Vec<bool> = targets
            .iter()
            .map(|target| {
                only.is_none_or(|source| {
                    self.index
                        .get(target)
                        .is_some_and(|row| row.is_active(now) && row.source == source)
                })
            })
            .collect();
        let lifting: Vec<IpNet> = targets
            .iter()
            .zip(&chosen)
            .filter_map(|(&target, &chosen)| chosen.then_some(target))
            .collect();
        let mut ended = self.end_many(&lifting, now).into_iter();
        let mut results = Vec::with_capacity(targets.len());
        for (target, chosen) in targets.into_iter().zip(chosen) {
            let result = if chosen {
                ended
                    .next()
                    .unwrap_or(Err(BanError::Lost("no result for the unban")))
            } else {
                Ok(false)
            };
            if let Ok(true) = result {
                self.tell(&BanEvent::Unbanned {
                    target,
                    source: only.unwrap_or(Source::Cli),
                });
            }
            results.push(result);
        }
        results
    }

    /// The active bans on prefixes wider than `target` that contain it,
    /// narrowest first: what still blocks it without a ban of its own.
    pub fn covering(&self, target: IpNet) -> Vec<BanEntry> {
        self.covering_entries(target)
    }

    /// Every active ban made by `source`.
    pub fn active_from(&self, source: Source) -> Vec<IpNet> {
        let now = unix_now();
        let mut targets: Vec<IpNet> = self
            .index
            .iter()
            .filter(|row| row.source == source && row.is_active(now))
            .map(|row| row.target)
            .collect();
        targets.sort_unstable();
        targets
    }

    /// Ends the ban on `target` everywhere: store, fail2ban, kernel maps.
    pub(super) fn end(&mut self, target: IpNet, now: i64) -> Result<bool, BanError> {
        self.end_many(&[target], now)
            .pop()
            .unwrap_or(Err(BanError::Lost("no result for the unban")))
    }

    /// [`Self::end`] for many targets, with one store transaction; a store
    /// failure fails every one of them and touches nothing else.
    fn end_many(&mut self, targets: &[IpNet], now: i64) -> Vec<Result<bool, BanError>> {
        if targets.is_empty() {
            return Vec::new();
        }
        let ended = match self.store.end_bans(targets, now) {
            Ok(ended) => ended,
            Err(error) => {
                let error = BanError::from(error);
                return targets.iter().map(|_| Err(error.clone())).collect();
            }
        };
        let mut unbans = Vec::new();
        for (target, &ended) in targets.iter().zip(&ended) {
            self.index.end(target, now);
            if ended {
                unbans.push(Fail2banOp::unban(*target));
            }
        }
        self.queue_for_fail2ban(unbans);
        targets
            .iter()
            .zip(ended)
            .map(|(&target, ended)| {
                let Some(dataplane) = self.xdp.dataplane.as_mut() else {
                    return Ok(ended);
                };
                dataplane
                    .remove(target)
                    .map(|removed| ended || removed)
                    .map_err(|source| BanError::Kernel {
                        target,
                        source: Arc::new(source),
                    })
            })
            .collect()
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
            .iter()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{
        BanPolicy,
        tests::{manager, net, request},
    };
    use crate::bans::{BanLength, Source};

    #[test]
    fn a_batch_unban_reports_each_target_and_names_covering_prefixes() {
        let (_dir, mut bans) = manager(BanPolicy::default());
        for target in [
            "192.0.2.7/32",
            "192.0.2.0/24",
            "192.0.0.0/16",
            "2001:db8::1/128",
        ] {
            bans.ban(request(target, BanLength::Default)).expect("ban");
        }
        let results: Vec<bool> = bans
            .unban_many(
                &[
                    net("192.0.2.7/32"),
                    net("192.0.2.8/32"),
                    net("2001:db8::1/128"),
                ],
                None,
            )
            .into_iter()
            .map(|r| r.expect("unban"))
            .collect();
        assert_eq!(results, [true, false, true]);
        let covering: Vec<String> = bans
            .covering(net("192.0.2.7/32"))
            .iter()
            .map(|ban| ban.addr.to_string())
            .collect();
        assert_eq!(covering, ["192.0.2.0/24", "192.0.0.0/16"]);
        assert!(bans.covering(net("192.0.0.0/16")).is_empty());
        assert!(bans.covering(net("2001:db8::1/128")).is_empty());
        assert_eq!(bans.list().expect("list").len(), 2);
    }

    #[test]
    fn unban_by_source_leaves_other_sources_alone() {
        let (_dir, mut bans) = manager(BanPolicy::default());
        bans.ban(request("192.0.2.1/32", BanLength::Default))
            .expect("ban");
        let mut cli = request("192.0.2.2/32", BanLength::For(Duration::from_mins(1)));
        cli.source = Source::Cli;
        bans.ban(cli).expect("ban");
        let chosen = bans.active_from(Source::Logwatch);
        assert_eq!(chosen, [net("192.0.2.1/32")]);
        // Banned again by hand since it was chosen: not lifted.
        let mut again = request("192.0.2.1/32", BanLength::Default);
        again.source = Source::Cli;
        bans.ban(again).expect("ban");
        let results: Vec<bool> = bans
            .unban_many(&chosen, Some(Source::Logwatch))
            .into_iter()
            .map(|r| r.expect("unban"))
            .collect();
        assert_eq!(results, [false]);
        assert_eq!(bans.list().expect("list").len(), 2);
        let cli_bans = bans.active_from(Source::Cli);
        assert_eq!(cli_bans.len(), 2);
        assert!(
            bans.unban_many(&cli_bans, Some(Source::Cli))
                .into_iter()
                .all(|r| r.expect("unban"))
        );
        assert!(bans.list().expect("list").is_empty());
    }
}
