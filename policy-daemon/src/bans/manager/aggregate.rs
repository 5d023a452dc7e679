//! Prefix aggregation: a prefix is banned once enough distinct addresses
//! in it were banned within the window.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Aggregation, BanManager, BanRequest};
use crate::bans::BanScope;
use crate::{
    bans::{BanLength, store::StoredBan, target_to_string},
    clock::secs_i64,
};

impl BanManager {
    /// Records the addresses whose ban starts now (`fresh`) per prefix;
    /// returns prefix bans that reached the aggregation threshold. Distinct
    /// addresses count, not events: an address banned again, or a live ban
    /// applied again (a fleet resync), does not add to its prefix.
    pub(super) fn aggregate(
        &mut self,
        rows: &[StoredBan],
        fresh: &[bool],
        now: i64,
    ) -> Vec<BanRequest> {
        let Some(rule) = self.policy.aggregation else {
            return Vec::new();
        };
        let since = now.saturating_sub(secs_i64(rule.window));
        let mut requests = Vec::new();
        for (row, _) in rows.iter().zip(fresh).filter(|(_, fresh)| **fresh) {
            let Some(prefix) = aggregation_prefix(row.target, rule) else {
                continue;
            };
            let addresses = self.recent.entry(prefix).or_default();
            addresses.retain(|&(_, at)| at >= since);
            match addresses.iter_mut().find(|(addr, _)| *addr == row.target) {
                Some((_, at)) => *at = now,
                None => addresses.push((row.target, now)),
            }
            let distinct = addresses.len();
            let already = self.index.is_active(&prefix, now)
                || requests.iter().any(|r: &BanRequest| r.target == prefix);
            if distinct >= rule.threshold as usize && !already {
                let reason = format!(
                    "{distinct} addresses of {} banned within {}",
                    target_to_string(&prefix),
                    humantime::format_duration(rule.window)
                );
                requests.push(BanRequest::new(
                    prefix,
                    BanLength::Default,
                    row.source,
                    &reason,
                    &BanScope::Default,
                ));
            }
        }
        requests
    }
}

/// The prefix an address is aggregated into; `None` for a prefix ban.
pub(super) fn aggregation_prefix(target: IpNet, rule: Aggregation) -> Option<IpNet> {
    match target {
        IpNet::V4(n) if n.prefix_len() == 32 => Ipv4Net::new(n.addr(), rule.v4_prefix)
            .ok()
            .map(|p| IpNet::V4(p.trunc())),
        IpNet::V6(n) if n.prefix_len() == 128 => Ipv6Net::new(n.addr(), rule.v6_prefix)
            .ok()
            .map(|p| IpNet::V6(p.trunc())),
        _ => None,
    }
}
