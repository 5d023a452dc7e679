//! Why a target is blocked or not: what the store, the allowlist and the
//! kernel maps hold for it.

use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use xdp_common::BanValue;

use super::{BanManager, Held};
use crate::{
    bans::{
        BanEntry, PortScopes, Source, canonical_net,
        explain::{BanDetail, Explanation, KernelView, MapEntry, Verdict},
        store::StoredBan,
        target_to_string,
    },
    clock::{self, secs_i64, unix_now},
    dataplane::{MapHit, monotonic_now_ns},
};

/// Bans inside a prefix listed by name; the rest are counted.
const INSIDE_LISTED: usize = 10;

impl BanManager {
    /// What the store, the allowlist, the host's addresses and the kernel
    /// maps say about `target` (`input` is the text it was read from).
    /// fail2ban and the ports are the caller's to add. Reads the maps with
    /// a few lookups; a prefix target also walks the index once.
    pub fn explain(&self, target: IpNet, input: &str) -> Explanation {
        let target = canonical_net(target.trunc());
        let now = unix_now();
        let row = self.stored(self.index.get(&target).as_ref());
        let ban = row.as_ref().filter(|row| row.is_active(now)).map(detail);
        let history = row.as_ref().filter(|row| !row.is_active(now)).map(detail);
        let covered_by: Vec<BanDetail> = self
            .covering_rows(target, now)
            .filter_map(|held| self.stored(Some(&held)))
            .map(|row| detail(&row))
            .collect();
        let (inside, inside_first) = self.inside(target, now);
        let allowlisted_by = self.policy.allowlist.covers(&target);
        let own_address = self
            .own_addresses
            .iter()
            .find(|own| target.contains(&own.network()))
            .copied();
        let verdict = if ban.is_some() {
            Verdict::Banned
        } else if !covered_by.is_empty() {
            Verdict::Covered
        } else if allowlisted_by.is_some() {
            Verdict::Allowlisted
        } else if own_address.is_some() {
            Verdict::OwnAddress
        } else {
            Verdict::NotBanned
        };
        Explanation {
            input: input.to_owned(),
            target: target_to_string(&target),
            verdict,
            ban,
            covered_by,
            history,
            next_bantime: self.next_bantime(row.as_ref(), now),
            inside,
            inside_first,
            allowlisted_by: allowlisted_by.as_ref().map(target_to_string),
            own_address: own_address.as_ref().map(target_to_string),
            kernel: self.kernel_view(target),
            fail2ban: None,
            ports: Vec::new(),
        }
    }

    /// Active rows of wider prefixes containing `target`, narrowest first:
    /// one index probe per shorter prefix length.
    fn covering_rows(&self, target: IpNet, now: i64) -> impl Iterator<Item = Held> {
        (0..target.prefix_len())
            .rev()
            .filter_map(move |len| IpNet::new(target.addr(), len).ok().map(|net| net.trunc()))
            .filter_map(|net| self.index.get(&net))
            .filter(move |row| row.is_active(now))
    }

    /// The store's row for a ban the index holds (with its reason); the
    /// index's view when the store cannot be read.
    fn stored(&self, held: Option<&Held>) -> Option<StoredBan> {
        let held = held?;
        match self.store.get(&held.target) {
            Ok(Some(row)) => Some(row),
            Ok(None) => Some(StoredBan::from(held)),
            Err(error) => {
                tracing::warn!(%error, "reading a ban from the store failed");
                Some(StoredBan::from(held))
            }
        }
    }

    /// [`Self::covering_rows`] as list entries.
    pub(super) fn covering_entries(&self, target: IpNet) -> Vec<BanEntry> {
        let target = canonical_net(target.trunc());
        self.covering_rows(target, unix_now())
            .map(|held| self.held_entry(&held))
            .collect()
    }

    fn inside(&self, target: IpNet, now: i64) -> (u64, Vec<BanEntry>) {
        if target.prefix_len() == target.max_prefix_len() {
            return (0, Vec::new());
        }
        let mut inside: Vec<Held> = self
            .index
            .iter()
            .filter(|row| row.target != target && target.contains(&row.target))
            .filter(|row| row.is_active(now))
            .collect();
        let count = inside.len() as u64;
        inside.sort_unstable_by_key(|row| row.target);
        inside.truncate(INSIDE_LISTED);
        (
            count,
            inside.iter().map(|held| self.held_entry(held)).collect(),
        )
    }

    /// The length a ban at `ban.bantime` would get now, as `next_row`
    /// computes it; `None`: permanent.
    fn next_bantime(&self, row: Option<&StoredBan>, now: i64) -> Option<String> {
        let cutoff = now.saturating_sub(secs_i64(self.policy.history_age));
        let count = row
            .filter(|row| row.last_banned_at >= cutoff)
            .map_or(0, |row| row.count)
            .saturating_add(1);
        self.policy
            .default_bantime
            .map(|base| humantime::format_duration(self.escalate(base, count)).to_string())
    }

    fn kernel_view(&self, target: IpNet) -> KernelView {
        let mut view = KernelView {
            enforcing: self.xdp.enforcing,
            note: self.xdp.note.clone(),
            ..KernelView::default()
        };
        let Some(dataplane) = &self.xdp.dataplane else {
            return view;
        };
        match dataplane.lookup(target) {
            Ok(hits) => {
                let wall = SystemTime::now();
                let mono = monotonic_now_ns();
                view.available = true;
                view.entries = hits
                    .iter()
                    .map(|hit| map_entry(hit, wall, mono, &self.policy.scopes))
                    .collect();
                view.dropped = view.enforcing && view.entries.iter().any(|entry| entry.live);
            }
            Err(error) => view.note = format!("reading the maps failed: {error}"),
        }
        view
    }
}

fn detail(row: &StoredBan) -> BanDetail {
    BanDetail {
        entry: BanManager::entry(row),
        first_banned_at: clock::rfc3339(clock::system_time(row.first_banned_at)),
        last_banned_at: clock::rfc3339(clock::system_time(row.last_banned_at)),
    }
}

/// A map hit with its monotonic expiry moved onto the wall clock.
fn map_entry(hit: &MapHit, wall: SystemTime, mono: u64, scopes: &PortScopes) -> MapEntry {
    let expires_at = (hit.value.expires_ns != BanValue::PERMANENT).then(|| {
        let at = if hit.value.expires_ns >= mono {
            wall.checked_add(Duration::from_nanos(hit.value.expires_ns - mono))
        } else {
            wall.checked_sub(Duration::from_nanos(mono - hit.value.expires_ns))
        };
        clock::rfc3339(at.unwrap_or(wall))
    });
    MapEntry {
        map: hit.map.to_owned(),
        key: target_to_string(&hit.net),
        live: hit.value.is_live(mono),
        expires_at,
        source: Source::from_code(hit.value.source),
        count: hit.value.count,
        ports: scopes.scope_of(hit.value.scopes).to_ports(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{
        BanPolicy, Escalation,
        tests::{manager, net, request},
    };
    use crate::bans::{Allowlist, BanLength, explain::Verdict};

    fn policy() -> BanPolicy {
        BanPolicy {
            allowlist: Allowlist::new([net("203.0.113.0/24")]),
            default_bantime: Some(Duration::from_mins(10)),
            escalation: Some(Escalation {
                factor: 1.0,
                max: Duration::from_hours(24),
            }),
            ..BanPolicy::default()
        }
    }

    #[test]
    fn each_verdict_with_what_decides_it() {
        let (_dir, mut bans) = manager(policy());
        bans.ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban");
        bans.ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban again");
        bans.ban(request("198.51.100.0/24", BanLength::Default))
            .expect("prefix");

        let exact = bans.explain(net("192.0.2.7/32"), "[192.0.2.7]");
        assert_eq!(exact.verdict, Verdict::Banned);
        assert_eq!(
            (exact.input.as_str(), exact.target.as_str()),
            ("[192.0.2.7]", "192.0.2.7")
        );
        let ban = exact.ban.as_ref().expect("ban");
        assert_eq!(ban.entry.count, 2);
        assert_eq!(exact.next_bantime.as_deref(), Some("40m"));
        assert!(!exact.kernel.available && !exact.kernel.dropped);
        assert_eq!(exact.kernel.note, "test");

        let inside = bans.explain(net("198.51.100.9/32"), "::ffff:198.51.100.9");
        assert_eq!(inside.verdict, Verdict::Covered);
        assert_eq!(inside.target, "198.51.100.9");
        assert!(inside.ban.is_none());
        assert_eq!(inside.covered_by.len(), 1);
        assert_eq!(inside.covered_by[0].entry.addr, net("198.51.100.0/24"));
        assert_eq!(inside.next_bantime.as_deref(), Some("10m"));

        let prefix = bans.explain(net("198.51.100.0/23"), "198.51.100.0/23");
        assert_eq!(prefix.verdict, Verdict::NotBanned);
        assert_eq!(prefix.inside, 1);
        assert_eq!(prefix.inside_first[0].addr, net("198.51.100.0/24"));

        let allowed = bans.explain(net("203.0.113.5/32"), "203.0.113.5");
        assert_eq!(allowed.verdict, Verdict::Allowlisted);
        assert_eq!(allowed.allowlisted_by.as_deref(), Some("203.0.113.0/24"));

        let clean = bans.explain(net("2001:db8::1/128"), "2001:db8::1");
        assert_eq!(clean.verdict, Verdict::NotBanned);
        assert!(clean.ban.is_none() && clean.covered_by.is_empty() && clean.history.is_none());

        bans.unban(net("192.0.2.7/32")).expect("unban");
        let lifted = bans.explain(net("192.0.2.7/32"), "192.0.2.7");
        assert_eq!(lifted.verdict, Verdict::NotBanned);
        assert_eq!(lifted.history.as_ref().map(|h| h.entry.count), Some(2));
        // The history still counts: the next ban is the third step.
        assert_eq!(lifted.next_bantime.as_deref(), Some("40m"));
    }
}
