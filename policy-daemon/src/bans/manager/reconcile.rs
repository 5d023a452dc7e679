//! Bringing the kernel maps in line with the store (at start, after the
//! pins were wiped; while running, after LRU evictions), and purging old
//! history.

use ipnet::IpNet;
use tracing::{info, warn};
use xdp_common::BanValue;

use super::{BanManager, Cursor, Held, index::Order};
use crate::{
    bans::{BanError, PortScopes, Source, store::StoredBan, target_to_string},
    clock::{secs_i64, unix_now},
    dataplane::{ExactMaps, monotonic_now_ns},
};

/// Kernel map entries gathered in a [`MapBatch`] before they are checked:
/// enough that each shard of the index is read once for many of them.
const MAP_BATCH: usize = 32_768;

/// Kernel map entries to check against the index, put in the order the
/// index keeps them ([`MapBatch::sort`]) so that checking them reads each
/// of its shards once, in order, instead of once per entry at random.
#[derive(Debug)]
pub struct MapBatch {
    order: Order,
    entries: Vec<MapEntry>,
}

/// A kernel map entry with its place in the index.
#[derive(Clone, Copy, Debug)]
pub struct MapEntry {
    position: usize,
    net: IpNet,
    value: BanValue,
}

impl MapBatch {
    /// Adds entries as read from the maps.
    pub fn add(&mut self, chunk: &[(IpNet, BanValue)]) {
        self.entries
            .extend(chunk.iter().map(|&(net, value)| MapEntry {
                position: self.order.position(&net),
                net,
                value,
            }));
    }

    /// Whether it holds [`MAP_BATCH`] entries or more: time to check
    /// them.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= MAP_BATCH
    }

    /// Puts the entries in the index's order.
    pub fn sort(&mut self) {
        self.entries
            .sort_unstable_by_key(|entry| (entry.position, entry.net));
    }

    /// The entries in parts of `part`, to check one part per hold of the
    /// manager's lock with [`BanManager::reconcile_sorted`].
    pub fn parts(&self, part: usize) -> std::slice::Chunks<'_, MapEntry> {
        self.entries.chunks(part.max(1))
    }

    /// Empties the batch, keeping its room.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

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
    /// Of `evicted`, single addresses per family.
    pub evicted_v4: u64,
    pub evicted_v6: u64,
}

impl BanManager {
    /// Brings the kernel maps in line with the store: writes missing or
    /// different live bans, removes what the store does not hold. With
    /// `at_start`, missing bans count as restored (the pins were wiped);
    /// otherwise a missing single address counts as an LRU eviction.
    ///
    /// On the very first start with an empty store, live map entries are
    /// adopted into the store instead of removed.
    ///
    /// All at once, under the caller's lock: the daemon's periodic
    /// reconciliation goes through [`Self::begin_reconcile`] and the steps
    /// after it instead, releasing the lock between chunks.
    pub fn reconcile(&mut self, at_start: bool) -> Reconciled {
        let mut report = Reconciled::default();
        if at_start {
            self.adopt_kernel_bans();
        }
        let Some((maps, pass)) = self.begin_reconcile() else {
            return report;
        };
        let mut batch = self.map_batch();
        let read = maps.each_chunk(|chunk| {
            batch.add(chunk);
            if batch.is_full() {
                self.reconcile_batch(&mut batch, pass, &mut report);
            }
        });
        self.reconcile_batch(&mut batch, pass, &mut report);
        if let Err(error) = read {
            self.backend_errors += 1;
            warn!(%error, "reading the XDP maps failed; every ban is checked one by one");
        }
        self.reconcile_prefixes(pass, &mut report);
        let mut cursor = Cursor::default();
        while !cursor.is_done() {
            cursor = self.reconcile_missing(cursor, usize::MAX, pass, at_start, &mut report);
        }
        self.end_reconcile(&report);
        report
    }

    /// On the very first start (an empty store), adopts the live bans
    /// found in the kernel maps into the store.
    fn adopt_kernel_bans(&mut self) {
        if !self.index.is_empty() {
            return;
        }
        let Some(dataplane) = self.xdp.dataplane.as_ref() else {
            return;
        };
        let entries = match dataplane.entries() {
            Ok(entries) => entries,
            Err(error) => {
                warn!(%error, "reading the XDP maps failed; nothing adopted");
                return;
            }
        };
        let adopted = adopt(
            &entries,
            unix_now(),
            monotonic_now_ns(),
            &self.policy.scopes,
        );
        if adopted.is_empty() {
            return;
        }
        info!(
            count = adopted.len(),
            "adopting bans found in the kernel maps into an empty store"
        );
        match self.store.put_bans(&adopted) {
            Ok(()) => self.index.insert_many(&adopted),
            Err(error) => warn!(%error, "adopting kernel bans failed"),
        }
    }

    /// Starts a reconciliation: read handles on the exact-address maps,
    /// to walk without the manager, and the number marking the bans this
    /// pass finds. `None` without a dataplane, or when the maps cannot be
    /// opened (counted as a backend error).
    pub fn begin_reconcile(&mut self) -> Option<(ExactMaps, u8)> {
        let dataplane = self.xdp.dataplane.as_ref()?;
        match dataplane.exact_maps() {
            Ok(maps) => {
                self.pass = self.pass.wrapping_add(1).max(1);
                Some((maps, self.pass))
            }
            Err(error) => {
                self.backend_errors += 1;
                warn!(%error, "opening the XDP maps failed; reconciliation skipped");
                None
            }
        }
    }

    /// An empty batch of kernel map entries, in this index's order.
    pub fn map_batch(&self) -> MapBatch {
        MapBatch {
            order: self.index.order(),
            entries: Vec::new(),
        }
    }

    /// Sorts `batch`, checks it whole with [`Self::reconcile_sorted`] and
    /// empties it.
    fn reconcile_batch(&mut self, batch: &mut MapBatch, pass: u8, report: &mut Reconciled) {
        batch.sort();
        for part in batch.parts(usize::MAX) {
            self.reconcile_sorted(part, pass, report);
        }
        batch.clear();
    }

    /// Checks a chunk of kernel map entries against the index: stale ones
    /// are removed, differing ones rewritten, matching ones marked with
    /// `pass`. The index decides, as it is now: an entry read before a ban
    /// changed it is only rewritten with what the index holds.
    pub fn reconcile_chunk(
        &mut self,
        chunk: &[(IpNet, BanValue)],
        pass: u8,
        report: &mut Reconciled,
    ) {
        let mut batch = self.map_batch();
        batch.add(chunk);
        self.reconcile_batch(&mut batch, pass, report);
    }

    /// [`Self::reconcile_chunk`] for a part of a sorted [`MapBatch`].
    pub fn reconcile_sorted(&mut self, part: &[MapEntry], pass: u8, report: &mut Reconciled) {
        if self.xdp.dataplane.is_none() {
            return;
        }
        let now = unix_now();
        let mono = monotonic_now_ns();
        let mut stale = Vec::new();
        let mut writes = Vec::new();
        let scopes = &self.policy.scopes;
        self.index.see_sorted(
            part.iter().map(|entry| (entry.position, entry.net)),
            now,
            pass,
            |at, row| {
                let entry = &part[at];
                match row {
                    None => stale.push(entry.net),
                    Some(row) => {
                        let wanted = kernel_value(&row, now, mono, scopes);
                        if !close_enough(&entry.value, &wanted) {
                            report.corrected += 1;
                            writes.push((entry.net, wanted.with_hits_of(&entry.value)));
                        }
                    }
                }
            },
        );
        let Some(dataplane) = self.xdp.dataplane.as_mut() else {
            return;
        };
        for net in stale {
            match dataplane.remove(net) {
                Ok(true) => report.removed += 1,
                Ok(false) => {}
                Err(error) => {
                    warn!(%error, target = %target_to_string(&net), "removing a stale map entry failed");
                }
            }
        }
        if let Err(error) = dataplane.insert_many(&writes) {
            self.backend_errors += 1;
            warn!(%error, "rewriting bans into the XDP maps failed");
        }
    }

    /// [`Self::reconcile_chunk`] for the prefix tries (few entries: read
    /// whole, under the lock).
    pub fn reconcile_prefixes(&mut self, pass: u8, report: &mut Reconciled) {
        let Some(dataplane) = self.xdp.dataplane.as_ref() else {
            return;
        };
        match dataplane.prefix_entries() {
            Ok(entries) => self.reconcile_chunk(&entries, pass, report),
            Err(error) => {
                self.backend_errors += 1;
                warn!(%error, "reading the prefix tries failed");
            }
        }
    }

    /// Walks the index from `cursor` (about `budget` rows): every live ban
    /// this pass did not find is looked up in the kernel and written back
    /// when missing or different. Returns where to go on.
    pub fn reconcile_missing(
        &mut self,
        cursor: Cursor,
        budget: usize,
        pass: u8,
        at_start: bool,
        report: &mut Reconciled,
    ) -> Cursor {
        let now = unix_now();
        let mut unseen = Vec::new();
        let next = self.index.walk(cursor, budget, |row, seen| {
            if seen != pass && row.is_active(now) {
                unseen.push(row);
            }
        });
        let Some(dataplane) = self.xdp.dataplane.as_mut() else {
            return next;
        };
        let mono = monotonic_now_ns();
        let mut writes = Vec::new();
        for row in unseen {
            let mut wanted = kernel_value(&row, now, mono, &self.policy.scopes);
            match dataplane.get(row.target) {
                Ok(Some(value)) if close_enough(&value, &wanted) => continue,
                Ok(Some(value)) => {
                    report.corrected += 1;
                    wanted = wanted.with_hits_of(&value);
                }
                Ok(None) if at_start => report.restored += 1,
                Ok(None) => {
                    report.evicted += 1;
                    if row.target.prefix_len() == row.target.max_prefix_len() {
                        if row.target.addr().is_ipv4() {
                            report.evicted_v4 += 1;
                        } else {
                            report.evicted_v6 += 1;
                        }
                    }
                }
                Err(error) => {
                    warn!(%error, target = %target_to_string(&row.target), "reading a map entry failed");
                }
            }
            writes.push((row.target, wanted));
        }
        if let Err(error) = dataplane.insert_many(&writes) {
            self.backend_errors += 1;
            warn!(%error, "rewriting bans into the XDP maps failed");
        }
        next
    }

    /// Ends a reconciliation: counts and reports evictions.
    pub fn end_reconcile(&mut self, report: &Reconciled) {
        if report.evicted_v4 + report.evicted_v6 > 0 {
            let capacities = self
                .xdp
                .dataplane
                .as_ref()
                .and_then(|dataplane| dataplane.capacities().ok());
            warn!(
                evicted_v4 = report.evicted_v4,
                evicted_v6 = report.evicted_v6,
                capacity_v4 = capacities.map(|c| c.v4),
                capacity_v6 = capacities.map(|c| c.v6),
                "live bans were evicted from the LRU maps and written back; raise ban.capacity_v4 / ban.capacity_v6"
            );
        }
        self.evicted += report.evicted;
    }

    /// Deletes history older than the history age, all at once: the
    /// daemon collects it with [`Self::stale_part`] chunk by chunk, deletes
    /// it from the store by key without the manager's lock, then calls
    /// [`Self::forget`] and [`Self::prune_recent`].
    pub fn purge(&mut self) -> Result<usize, BanError> {
        let cutoff = self.history_cutoff();
        let mut stale = Vec::new();
        let mut cursor = Cursor::default();
        while !cursor.is_done() {
            cursor = self.stale_part(cursor, usize::MAX, cutoff, &mut stale);
        }
        let purged = self
            .store
            .purge_targets(&stale, cutoff)
            .map_err(BanError::from)?;
        self.forget(&stale, cutoff);
        self.prune_recent();
        Ok(purged)
    }

    /// Rows whose ban ended, and which were last banned, before this are
    /// history to purge.
    pub fn history_cutoff(&self) -> i64 {
        unix_now().saturating_sub(secs_i64(self.policy.history_age))
    }

    /// Adds to `stale` the targets of the next shards from `cursor` (about
    /// `budget` rows) that are history older than `cutoff`; returns where
    /// to go on.
    pub fn stale_part(
        &self,
        cursor: Cursor,
        budget: usize,
        cutoff: i64,
        stale: &mut Vec<IpNet>,
    ) -> Cursor {
        self.index.walk(cursor, budget, |row, _| {
            if is_stale(&row, cutoff) {
                stale.push(row.target);
            }
        })
    }

    /// Drops from the index those of `targets` still history older than
    /// `cutoff` (the store purged them).
    pub fn forget(&mut self, targets: &[IpNet], cutoff: i64) {
        for target in targets {
            if self
                .index
                .get(target)
                .is_some_and(|row| is_stale(&row, cutoff))
            {
                self.index.remove(target);
            }
        }
    }

    /// Forgets addresses older than the aggregation window.
    pub fn prune_recent(&mut self) {
        let window = self.policy.aggregation.map_or(0, |a| secs_i64(a.window));
        let since = unix_now().saturating_sub(window);
        self.recent.retain(|_, addresses| {
            addresses.retain(|&(_, at)| at >= since);
            !addresses.is_empty()
        });
    }
}

/// Whether `row` is history older than `cutoff`: ended and last banned
/// before it (the store's purge condition).
fn is_stale(row: &Held, cutoff: i64) -> bool {
    row.expires_at.is_some_and(|at| at < cutoff) && row.last_banned_at < cutoff
}

/// The map value for a stored ban: its wall-clock expiry moved onto the
/// kernel's monotonic clock.
pub(super) fn kernel_value(row: &Held, now: i64, mono_now: u64, scopes: &PortScopes) -> BanValue {
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
