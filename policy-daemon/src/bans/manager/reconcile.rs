//! Bringing the kernel maps in line with the store (at start, after the
//! pins were wiped; while running, after LRU evictions), and purging old
//! history.

use foldhash::{HashMap, HashSet};
use ipnet::IpNet;
use tracing::{info, warn};
use xdp_common::BanValue;

use super::BanManager;
use crate::{
    bans::{BanError, PortScopes, Source, store::StoredBan, target_to_string},
    clock::{secs_i64, unix_now},
    dataplane::monotonic_now_ns,
};

/// What a reconciliation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Live bans missing from the maps at start, written back.
    pub restored: u64,
    /// Live bans that disappeared from the LRU maps while running.
    pub evicted: u64,
    /// Map entries the store does not hold (or expired), removed.
    pub removed: u64,
    /// Entries whose expiry, count or port scopes differed from the store,
    /// rewritten.
    pub corrected: u64,
}

impl BanManager {
    /// Brings the kernel maps in line with the store: writes missing or
    /// different live bans, removes what the store does not hold. With
    /// `at_start`, missing bans count as restored (the pins were wiped);
    /// otherwise a missing single address counts as an LRU eviction.
    ///
    /// On the very first start with an empty store, live map entries are
    /// adopted into the store instead of removed.
    pub fn reconcile(&mut self, at_start: bool) -> Reconciled {
        let mut report = Reconciled::default();
        let Some(dataplane) = self.xdp.dataplane.as_mut() else {
            return report;
        };
        let entries = match dataplane.entries() {
            Ok(entries) => entries,
            Err(error) => {
                self.backend_errors += 1;
                warn!(%error, "reading the XDP maps failed; reconciliation skipped");
                return report;
            }
        };
        let now = unix_now();
        let mono = monotonic_now_ns();
        if at_start && self.index.is_empty() {
            let adopted = adopt(&entries, now, mono, &self.policy.scopes);
            if !adopted.is_empty() {
                info!(
                    count = adopted.len(),
                    "adopting bans found in the kernel maps into an empty store"
                );
                if let Err(error) = self.store.put_bans(&adopted) {
                    warn!(%error, "adopting kernel bans failed");
                } else {
                    for row in adopted {
                        self.index.insert(row.target, row);
                    }
                }
            }
        }
        let in_map: HashMap<IpNet, BanValue> = entries.into_iter().collect();
        let mut writes = Vec::new();
        let mut evicted_v4 = 0_u64;
        let mut evicted_v6 = 0_u64;
        let active: HashSet<IpNet> = self
            .index
            .values()
            .filter(|r| r.is_active(now))
            .map(|r| r.target)
            .collect();
        for row in self.index.values().filter(|r| r.is_active(now)) {
            let wanted = kernel_value(row, now, mono, &self.policy.scopes);
            match in_map.get(&row.target) {
                None if at_start => report.restored += 1,
                None => {
                    report.evicted += 1;
                    if row.target.prefix_len() == row.target.max_prefix_len() {
                        if row.target.addr().is_ipv4() {
                            evicted_v4 += 1;
                        } else {
                            evicted_v6 += 1;
                        }
                    }
                }
                Some(value) if !close_enough(value, &wanted) => report.corrected += 1,
                Some(_) => continue,
            }
            writes.push((row.target, wanted));
        }
        for net in in_map.keys().filter(|net| !active.contains(net)) {
            match dataplane.remove(*net) {
                Ok(_) => report.removed += 1,
                Err(error) => {
                    warn!(%error, target = %target_to_string(net), "removing a stale map entry failed");
                }
            }
        }
        if let Err(error) = dataplane.insert_many(&writes) {
            self.backend_errors += 1;
            warn!(%error, "rewriting bans into the XDP maps failed");
        }
        if evicted_v4 + evicted_v6 > 0 {
            let capacities = dataplane.capacities().ok();
            warn!(
                evicted_v4,
                evicted_v6,
                capacity_v4 = capacities.map(|c| c.v4),
                capacity_v6 = capacities.map(|c| c.v6),
                "live bans were evicted from the LRU maps and written back; raise ban.capacity_v4 / ban.capacity_v6"
            );
        }
        self.evicted += report.evicted;
        report
    }

    /// Deletes history older than the history age.
    pub fn purge(&mut self) -> Result<usize, BanError> {
        let cutoff = unix_now().saturating_sub(secs_i64(self.policy.history_age));
        let purged = self.store.purge(cutoff).map_err(BanError::from)?;
        self.index.retain(|_, row| {
            row.expires_at.is_none_or(|at| at >= cutoff) || row.last_banned_at >= cutoff
        });
        let window = self.policy.aggregation.map_or(0, |a| secs_i64(a.window));
        let since = unix_now().saturating_sub(window);
        self.recent.retain(|_, addresses| {
            addresses.retain(|&(_, at)| at >= since);
            !addresses.is_empty()
        });
        Ok(purged)
    }
}

/// The map value for a stored ban: its wall-clock expiry moved onto the
/// kernel's monotonic clock.
pub(super) fn kernel_value(
    row: &StoredBan,
    now: i64,
    mono_now: u64,
    scopes: &PortScopes,
) -> BanValue {
    let expires_ns = row.expires_at.map_or(BanValue::PERMANENT, |at| {
        let left = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
        mono_now
            .saturating_add(left.saturating_mul(1_000_000_000))
            .max(1)
    });
    BanValue::new(
        expires_ns,
        row.source.code(),
        row.target.prefix_len(),
        row.count,
    )
    .with_scopes(scopes.mask(&row.scope))
}

/// Equal but for clock jitter between the two conversions.
pub(super) fn close_enough(a: &BanValue, b: &BanValue) -> bool {
    const TOLERANCE_NS: u64 = 2_000_000_000;
    let same_expiry = match (a.expires_ns, b.expires_ns) {
        (BanValue::PERMANENT, BanValue::PERMANENT) => true,
        (BanValue::PERMANENT, _) | (_, BanValue::PERMANENT) => false,
        (x, y) => x.abs_diff(y) <= TOLERANCE_NS,
    };
    same_expiry
        && a.source == b.source
        && a.prefix_len == b.prefix_len
        && a.count == b.count
        && a.scopes == b.scopes
}

pub(super) fn adopt(
    entries: &[(IpNet, BanValue)],
    now: i64,
    mono: u64,
    scopes: &PortScopes,
) -> Vec<StoredBan> {
    entries
        .iter()
        .filter(|(_, value)| value.is_live(mono))
        .map(|&(target, value)| StoredBan {
            target,
            expires_at: (value.expires_ns != BanValue::PERMANENT).then(|| {
                let left = value.expires_ns.saturating_sub(mono) / 1_000_000_000;
                now.saturating_add(i64::try_from(left).unwrap_or(i64::MAX))
                    .saturating_add(1)
            }),
            source: Source::from_code(value.source),
            reason: "found in the kernel maps".to_owned(),
            detail: String::new(),
            count: value.count.max(1),
            scope: scopes.scope_of(value.scopes),
            first_banned_at: now,
            last_banned_at: now,
        })
        .collect()
}
