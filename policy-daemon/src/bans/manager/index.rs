//! The manager's view of the store, compact enough for millions of bans.
//!
//! Per target it keeps what the ban path decides with: expiry, offence
//! count, first and last offence, source and ports, in 20 bytes ([`Slot`]).
//! Reasons and score details stay in the store alone and are read from it
//! when a command shows them. Single IPv4 addresses, single IPv6
//! addresses and prefixes are kept apart, each keyed by its own width
//! (4, 16 or 18 bytes), so a million IPv4 bans take about 24 MB.
//!
//! Each family is split into [`SHARDS`] sorted vectors, chosen by a
//! per-process seeded hash of the key: an insert moves a few kilobytes at
//! most, whatever addresses an attacker picks, a bulk insert merges each
//! shard once, and a walk can stop between shards (see [`Cursor`]), so
//! the manager's lock need not be held for a whole walk.

use std::{
    hash::{BuildHasher, Hash},
    net::{Ipv4Addr, Ipv6Addr},
};

use foldhash::{HashMap, HashMapExt as _};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::bans::{BanScope, Source, store::StoredBan};

/// Sorted vectors per family.
pub const SHARDS: usize = 1024;

/// Largest number of distinct port scopes kept; any further one is
/// widened to all traffic (fails closed).
const MAX_INTERNED: usize = u16::MAX as usize;

/// An expiry of `u32::MAX`: permanent.
const PERMANENT: u32 = u32::MAX;

/// One target's ban, as the ban path needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// Unix seconds, [`PERMANENT`] for none.
    expires_at: u32,
    first_banned_at: u32,
    last_banned_at: u32,
    count: u32,
    /// Index into [`Index::scopes`].
    scope: u16,
    source: u8,
    /// The last reconciliation pass that found the ban in the kernel maps.
    seen: u8,
}

/// A ban the index holds, with its scope resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub target: IpNet,
    /// `None`: permanent.
    pub expires_at: Option<i64>,
    pub source: Source,
    pub count: u32,
    pub scope: BanScope,
    pub first_banned_at: i64,
    pub last_banned_at: i64,
}

impl Held {
    /// Whether the ban holds at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl From<&StoredBan> for Held {
    fn from(row: &StoredBan) -> Self {
        Self {
            target: row.target,
            expires_at: row.expires_at,
            source: row.source,
            count: row.count,
            scope: row.scope.clone(),
            first_banned_at: row.first_banned_at,
            last_banned_at: row.last_banned_at,
        }
    }
}

/// A row without reason or detail (those live in the store).
impl From<&Held> for StoredBan {
    fn from(held: &Held) -> Self {
        Self {
            target: held.target,
            expires_at: held.expires_at,
            source: held.source,
            reason: String::new(),
            detail: String::new(),
            count: held.count,
            scope: held.scope.clone(),
            first_banned_at: held.first_banned_at,
            last_banned_at: held.last_banned_at,
        }
    }
}

/// Seconds since the epoch in 32 bits: before 1970 reads as 1970, after
/// 2106 as 2106.
fn secs32(at: i64) -> u32 {
    u32::try_from(at.max(0)).unwrap_or(PERMANENT - 1)
}

impl Slot {
    fn is_active(&self, now: i64) -> bool {
        self.expires_at == PERMANENT || i64::from(self.expires_at) > now
    }

    fn expires_at(&self) -> Option<i64> {
        (self.expires_at != PERMANENT).then_some(i64::from(self.expires_at))
    }
}

/// How many entries of a shard are active at `now`.
fn active<K>(part: &[(K, Slot)], now: i64) -> u64 {
    part.iter().filter(|(_, slot)| slot.is_active(now)).count() as u64
}

/// Rows waiting to go into an index, per family.
#[derive(Debug, Default)]
struct Staged {
    v4: Vec<(u32, Slot)>,
    v6: Vec<([u8; 16], Slot)>,
    prefixes: Vec<(IpNet, Slot)>,
}

/// Builds an index from rows read one at a time: they are gathered first
/// and each shard is then allocated once, at its final size, so loading a
/// million rows leaves no trail of freed smaller shards behind.
#[derive(Debug, Default)]
pub struct Loader {
    index: Index,
    staged: Staged,
}

impl Loader {
    /// Adds a row; a later row for the same target wins.
    pub fn add(&mut self, row: &StoredBan) {
        self.index.stage(row, &mut self.staged);
    }

    /// The index of every row added.
    pub fn finish(self) -> Index {
        let Self { mut index, staged } = self;
        index.v4.insert_many(staged.v4);
        index.v6.insert_many(staged.v6);
        index.prefixes.insert_many(staged.prefixes);
        index
    }
}

/// What [`Index::get_many`] found, by position; read with
/// [`Index::found`].
#[derive(Debug)]
pub struct Found(Vec<Option<Slot>>);

/// Where a walk over the index stopped: the next shard to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor(usize);

impl Cursor {
    /// Whether the walk went through every shard.
    pub const fn is_done(self) -> bool {
        self.0 >= 3 * SHARDS
    }
}

/// A family's entries: [`SHARDS`] vectors sorted by key.
#[derive(Debug)]
struct Shards<K> {
    parts: Box<[Vec<(K, Slot)>]>,
    hasher: foldhash::fast::RandomState,
    len: usize,
}

impl<K: Ord + Copy + Hash> Shards<K> {
    fn new() -> Self {
        Self {
            parts: (0..SHARDS).map(|_| Vec::new()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            len: 0,
        }
    }

    fn shard_of(&self, key: &K) -> usize {
        // The low bits of a seeded hash: attacker-chosen keys spread evenly.
        #[expect(clippy::cast_possible_truncation, reason = "masked to SHARDS")]
        let shard = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        shard
    }

    fn get(&self, key: &K) -> Option<&Slot> {
        let shard = &self.parts[self.shard_of(key)];
        shard
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &shard[i].1)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut Slot> {
        let i = self.shard_of(key);
        let shard = &mut self.parts[i];
        match shard.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(at) => Some(&mut shard[at].1),
            Err(_) => None,
        }
    }

    fn insert(&mut self, key: K, slot: Slot) {
        let i = self.shard_of(&key);
        let shard = &mut self.parts[i];
        match shard.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => shard[at].1 = slot,
            Err(at) => {
                if shard.len() == shard.capacity() {
                    // Grow by an eighth, not double: the slack stays small.
                    shard.reserve_exact((shard.len() / 8).max(8));
                }
                shard.insert(at, (key, slot));
                self.len += 1;
            }
        }
    }

    /// Inserts many, merging each shard once; a later item wins over an
    /// earlier one with the same key.
    fn insert_many(&mut self, items: Vec<(K, Slot)>) {
        if items.len() < 64 {
            for (key, slot) in items {
                self.insert(key, slot);
            }
            return;
        }
        let mut keyed: Vec<(usize, K, Slot)> = items
            .into_iter()
            .map(|(key, slot)| (self.shard_of(&key), key, slot))
            .collect();
        // Stable: among equal keys the later item stays last.
        keyed.sort_by_key(|item| (item.0, item.1));
        for run in keyed.chunk_by(|a, b| a.0 == b.0) {
            let shard = run[0].0;
            let old = std::mem::take(&mut self.parts[shard]);
            let before = old.len();
            let merged = merge(old, run);
            self.len = self.len - before + merged.len();
            self.parts[shard] = merged;
        }
    }

    /// The slots of `keys` (each with its position in the caller's list),
    /// written to `out` by position: one sort, then one pass per shard,
    /// instead of a binary search each.
    fn get_many(&self, keys: Vec<(K, usize)>, mut found: impl FnMut(usize, &K, &Slot)) {
        let mut keyed: Vec<(usize, K, usize)> = keys
            .into_iter()
            .map(|(key, at)| (self.shard_of(&key), key, at))
            .collect();
        keyed.sort_unstable_by_key(|item| (item.0, item.1));
        for run in keyed.chunk_by(|a, b| a.0 == b.0) {
            let entries = &self.parts[run[0].0];
            let mut i = 0;
            for (_, key, at) in run {
                while i < entries.len() && entries[i].0 < *key {
                    i += 1;
                }
                if let Some((k, slot)) = entries.get(i)
                    && k == key
                {
                    found(*at, key, slot);
                }
            }
        }
    }

    fn remove(&mut self, key: &K) {
        let i = self.shard_of(key);
        let shard = &mut self.parts[i];
        if let Ok(at) = shard.binary_search_by(|(k, _)| k.cmp(key)) {
            shard.remove(at);
            self.len -= 1;
        }
    }

    fn shard(&self, i: usize) -> &[(K, Slot)] {
        &self.parts[i]
    }

    fn iter(&self) -> impl Iterator<Item = &(K, Slot)> {
        self.parts.iter().flatten()
    }
}

/// `old` (sorted) with the sorted `run` merged in; on equal keys the last
/// of `run` wins.
fn merge<K: Ord + Copy>(old: Vec<(K, Slot)>, run: &[(usize, K, Slot)]) -> Vec<(K, Slot)> {
    let mut out = Vec::with_capacity(old.len() + run.len());
    let mut old = old.into_iter().peekable();
    let mut i = 0;
    while i < run.len() {
        let (_, key, mut slot) = run[i];
        while i + 1 < run.len() && run[i + 1].1 == key {
            i += 1;
            slot = run[i].2;
        }
        while let Some(&(k, _)) = old.peek() {
            if k < key {
                out.extend(old.next());
            } else {
                break;
            }
        }
        if old.peek().is_some_and(|&(k, _)| k == key) {
            old.next();
        }
        out.push((key, slot));
        i += 1;
    }
    out.extend(old);
    out.shrink_to_fit();
    out
}

/// Every row of the store (active bans and history), compactly.
#[derive(Debug)]
pub struct Index {
    v4: Shards<u32>,
    v6: Shards<[u8; 16]>,
    prefixes: Shards<IpNet>,
    scopes: Vec<BanScope>,
    scope_ids: HashMap<BanScope, u16>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

/// Which family map a target belongs in.
enum Key {
    V4(u32),
    V6([u8; 16]),
    Prefix(IpNet),
}

fn key_of(target: &IpNet) -> Key {
    match target {
        IpNet::V4(n) if n.prefix_len() == 32 => Key::V4(u32::from(n.addr())),
        IpNet::V6(n) if n.prefix_len() == 128 => Key::V6(n.addr().octets()),
        net => Key::Prefix(*net),
    }
}

/// The [`Held`] view of a slot.
fn held(scopes: &[BanScope], target: IpNet, slot: &Slot) -> Held {
    Held {
        target,
        expires_at: slot.expires_at(),
        source: Source::from_code(u16::from(slot.source)),
        count: slot.count,
        scope: scopes
            .get(usize::from(slot.scope))
            .cloned()
            .unwrap_or(BanScope::All),
        first_banned_at: i64::from(slot.first_banned_at),
        last_banned_at: i64::from(slot.last_banned_at),
    }
}

fn v4_net(key: u32) -> IpNet {
    IpNet::V4(Ipv4Net::from(Ipv4Addr::from(key)))
}

fn v6_net(key: [u8; 16]) -> IpNet {
    IpNet::V6(Ipv6Net::from(Ipv6Addr::from(key)))
}

impl Index {
    pub fn new() -> Self {
        let mut index = Self {
            v4: Shards::new(),
            v6: Shards::new(),
            prefixes: Shards::new(),
            scopes: Vec::new(),
            scope_ids: HashMap::new(),
        };
        index.intern(&BanScope::Default);
        index.intern(&BanScope::All);
        index
    }

    #[cfg(test)]
    /// The index of the store's rows.
    pub fn from_rows(rows: &[StoredBan]) -> Self {
        let mut index = Self::new();
        index.insert_many(rows);
        index
    }

    fn intern(&mut self, scope: &BanScope) -> u16 {
        if let Some(&id) = self.scope_ids.get(scope) {
            return id;
        }
        if self.scopes.len() >= MAX_INTERNED {
            return 1; // all traffic
        }
        #[expect(clippy::cast_possible_truncation, reason = "bounded by MAX_INTERNED")]
        let id = self.scopes.len() as u16;
        self.scopes.push(scope.clone());
        self.scope_ids.insert(scope.clone(), id);
        id
    }

    fn slot(&mut self, row: &StoredBan) -> Slot {
        Slot {
            expires_at: row.expires_at.map_or(PERMANENT, secs32),
            first_banned_at: secs32(row.first_banned_at),
            last_banned_at: secs32(row.last_banned_at),
            count: row.count,
            scope: self.intern(&row.scope),
            source: u8::try_from(row.source.code()).unwrap_or(u8::MAX),
            seen: 0,
        }
    }

    fn held(&self, target: IpNet, slot: &Slot) -> Held {
        held(&self.scopes, target, slot)
    }

    fn slot_of(&self, target: &IpNet) -> Option<&Slot> {
        match key_of(target) {
            Key::V4(k) => self.v4.get(&k),
            Key::V6(k) => self.v6.get(&k),
            Key::Prefix(k) => self.prefixes.get(&k),
        }
    }

    fn slot_mut(&mut self, target: &IpNet) -> Option<&mut Slot> {
        match key_of(target) {
            Key::V4(k) => self.v4.get_mut(&k),
            Key::V6(k) => self.v6.get_mut(&k),
            Key::Prefix(k) => self.prefixes.get_mut(&k),
        }
    }

    /// The row for exactly `target`.
    pub fn get(&self, target: &IpNet) -> Option<Held> {
        self.slot_of(target).map(|slot| self.held(*target, slot))
    }

    /// The rows of `targets`, in their order; for a large batch, cheaper
    /// than one [`Self::get`] each.
    pub fn get_many(&self, targets: &[IpNet]) -> Found {
        let mut out: Vec<Option<Slot>> = vec![None; targets.len()];
        if targets.len() < 1024 {
            for (slot, target) in out.iter_mut().zip(targets) {
                *slot = self.slot_of(target).copied();
            }
            return Found(out);
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut prefixes = Vec::new();
        for (at, target) in targets.iter().enumerate() {
            match key_of(target) {
                Key::V4(k) => v4.push((k, at)),
                Key::V6(k) => v6.push((k, at)),
                Key::Prefix(k) => prefixes.push((k, at)),
            }
        }
        self.v4.get_many(v4, |at, _, slot| out[at] = Some(*slot));
        self.v6.get_many(v6, |at, _, slot| out[at] = Some(*slot));
        self.prefixes
            .get_many(prefixes, |at, _, slot| out[at] = Some(*slot));
        Found(out)
    }

    /// The row [`Self::get_many`] found for `target`, at position `at`.
    pub fn found(&self, found: &Found, at: usize, target: IpNet) -> Option<Held> {
        found
            .0
            .get(at)
            .copied()
            .flatten()
            .map(|slot| self.held(target, &slot))
    }

    /// Whether `target` holds an active ban at `now`.
    pub fn is_active(&self, target: &IpNet, now: i64) -> bool {
        self.slot_of(target).is_some_and(|slot| slot.is_active(now))
    }

    /// Whether the index has a row for `target`.
    pub fn contains(&self, target: &IpNet) -> bool {
        self.slot_of(target).is_some()
    }

    #[cfg(test)]
    /// Inserts or replaces one row.
    pub fn insert(&mut self, row: &StoredBan) {
        let slot = self.slot(row);
        match key_of(&row.target) {
            Key::V4(k) => self.v4.insert(k, slot),
            Key::V6(k) => self.v6.insert(k, slot),
            Key::Prefix(k) => self.prefixes.insert(k, slot),
        }
    }

    /// Inserts or replaces many rows; a later row for the same target wins.
    pub fn insert_many(&mut self, rows: &[StoredBan]) {
        let mut staged = Staged::default();
        for row in rows {
            self.stage(row, &mut staged);
        }
        self.v4.insert_many(staged.v4);
        self.v6.insert_many(staged.v6);
        self.prefixes.insert_many(staged.prefixes);
    }

    /// Adds one row to the pending lists of a [`Loader`].
    fn stage(&mut self, row: &StoredBan, staged: &mut Staged) {
        let slot = self.slot(row);
        match key_of(&row.target) {
            Key::V4(k) => staged.v4.push((k, slot)),
            Key::V6(k) => staged.v6.push((k, slot)),
            Key::Prefix(k) => staged.prefixes.push((k, slot)),
        }
    }

    /// Ends the ban on `target` at `now` when it is active.
    pub fn end(&mut self, target: &IpNet, now: i64) {
        if let Some(slot) = self.slot_mut(target)
            && slot.is_active(now)
        {
            slot.expires_at = secs32(now);
        }
    }

    /// Removes the row of `target`.
    pub fn remove(&mut self, target: &IpNet) {
        match key_of(target) {
            Key::V4(k) => self.v4.remove(&k),
            Key::V6(k) => self.v6.remove(&k),
            Key::Prefix(k) => self.prefixes.remove(&k),
        }
    }

    /// Marks `target` as found in the kernel maps by reconciliation pass
    /// `pass`.
    pub fn set_seen(&mut self, target: &IpNet, pass: u8) {
        if let Some(slot) = self.slot_mut(target) {
            slot.seen = pass;
        }
    }

    /// Counts the rows active at `now` in the next shards from `cursor`
    /// (about `budget` rows) into `counts`: single IPv4 addresses, single
    /// IPv6 addresses, IPv4 prefixes, IPv6 prefixes. Reads the slots only.
    pub fn count_active(
        &self,
        cursor: Cursor,
        budget: usize,
        now: i64,
        counts: &mut [u64; 4],
    ) -> Cursor {
        let mut at = cursor.0;
        let mut done = 0;
        while at < 3 * SHARDS && done < budget {
            let shard = at % SHARDS;
            match at / SHARDS {
                0 => {
                    counts[0] += active(self.v4.shard(shard), now);
                    done += self.v4.shard(shard).len() + 1;
                }
                1 => {
                    counts[1] += active(self.v6.shard(shard), now);
                    done += self.v6.shard(shard).len() + 1;
                }
                _ => {
                    for (net, slot) in self.prefixes.shard(shard) {
                        if slot.is_active(now) {
                            counts[if net.addr().is_ipv4() { 2 } else { 3 }] += 1;
                        }
                    }
                    done += self.prefixes.shard(shard).len() + 1;
                }
            }
            at += 1;
        }
        Cursor(at)
    }

    /// Rows in the index.
    pub fn len(&self) -> usize {
        self.v4.len + self.v6.len + self.prefixes.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every row, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Held> + '_ {
        let v4 = self.v4.iter().map(|(k, slot)| self.held(v4_net(*k), slot));
        let v6 = self.v6.iter().map(|(k, slot)| self.held(v6_net(*k), slot));
        let prefixes = self.prefixes.iter().map(|(k, slot)| self.held(*k, slot));
        v4.chain(v6).chain(prefixes)
    }

    /// Calls `visit` with the rows of the next shards from `cursor`, about
    /// `budget` rows in all (whole shards); returns where to go on.
    pub fn walk(&self, cursor: Cursor, budget: usize, mut visit: impl FnMut(Held, u8)) -> Cursor {
        let mut at = cursor.0;
        let mut done = 0;
        while at < 3 * SHARDS && done < budget {
            let shard = at % SHARDS;
            match at / SHARDS {
                0 => {
                    for (k, slot) in self.v4.shard(shard) {
                        visit(self.held(v4_net(*k), slot), slot.seen);
                    }
                    done += self.v4.shard(shard).len() + 1;
                }
                1 => {
                    for (k, slot) in self.v6.shard(shard) {
                        visit(self.held(v6_net(*k), slot), slot.seen);
                    }
                    done += self.v6.shard(shard).len() + 1;
                }
                _ => {
                    for (k, slot) in self.prefixes.shard(shard) {
                        visit(self.held(*k, slot), slot.seen);
                    }
                    done += self.prefixes.shard(shard).len() + 1;
                }
            }
            at += 1;
        }
        Cursor(at)
    }

    #[cfg(test)]
    /// Heap bytes the index holds, for the memory test.
    pub fn heap_bytes(&self) -> usize {
        fn family<K>(shards: &Shards<K>) -> usize {
            shards
                .parts
                .iter()
                .map(|s| s.capacity() * size_of::<(K, Slot)>())
                .sum::<usize>()
                + SHARDS * size_of::<Vec<(K, Slot)>>()
        }
        family(&self.v4) + family(&self.v6) + family(&self.prefixes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, expires_at: Option<i64>, count: u32) -> StoredBan {
        StoredBan {
            target: crate::bans::parse_target(target).expect("target"),
            expires_at,
            source: Source::Cli,
            reason: String::new(),
            detail: String::new(),
            count,
            scope: BanScope::Default,
            first_banned_at: 100,
            last_banned_at: 200,
        }
    }

    #[test]
    fn rows_come_back_as_they_went_in() {
        let mut index = Index::new();
        let mut r = row("192.0.2.1", Some(1000), 3);
        r.scope = BanScope::from_ports(&[587, 25]);
        r.source = Source::Fleet;
        index.insert(&r);
        index.insert(&row("2001:db8::1", None, 1));
        index.insert(&row("198.51.100.0/24", Some(5), 2));
        let held = index.get(&r.target).expect("held");
        assert_eq!(
            held,
            Held {
                target: r.target,
                expires_at: Some(1000),
                source: Source::Fleet,
                count: 3,
                scope: BanScope::from_ports(&[25, 587]),
                first_banned_at: 100,
                last_banned_at: 200,
            }
        );
        assert_eq!(index.len(), 3);
        assert!(index.is_active(&"2001:db8::1/128".parse().expect("net"), i64::MAX));
        assert!(!index.is_active(&"198.51.100.0/24".parse().expect("net"), 5));
        assert!(index.get(&"192.0.2.2/32".parse().expect("net")).is_none());
    }

    #[test]
    fn times_outside_32_bits_are_clamped_not_wrapped() {
        let mut index = Index::new();
        index.insert(&row("192.0.2.1", Some(i64::MAX - 1), 1));
        index.insert(&row("192.0.2.2", Some(-5), 1));
        let far = index
            .get(&"192.0.2.1/32".parse().expect("net"))
            .expect("far");
        assert!(far.is_active(4_000_000_000), "still active in 2096");
        let past = index
            .get(&"192.0.2.2/32".parse().expect("net"))
            .expect("past");
        assert!(!past.is_active(1));
    }

    #[test]
    fn bulk_inserts_merge_with_what_is_there_and_later_rows_win() {
        let mut index = Index::new();
        for i in 0..5_000_u32 {
            index.insert(&row(
                &Ipv4Addr::from(0x0a00_0000 + i * 2).to_string(),
                Some(10),
                1,
            ));
        }
        let mut rows: Vec<StoredBan> = (0..10_000_u32)
            .map(|i| row(&Ipv4Addr::from(0x0a00_0000 + i).to_string(), Some(20), 2))
            .collect();
        rows.push(row("10.0.0.4", Some(30), 7));
        index.insert_many(&rows);
        assert_eq!(index.len(), 10_000);
        let four = index
            .get(&"10.0.0.4/32".parse().expect("net"))
            .expect("row");
        assert_eq!((four.expires_at, four.count), (Some(30), 7));
        let mut seen = 0;
        let mut cursor = Cursor::default();
        while !cursor.is_done() {
            cursor = index.walk(cursor, 100, |held, _| {
                assert_eq!(
                    held.count,
                    if held.target.to_string() == "10.0.0.4/32" {
                        7
                    } else {
                        2
                    }
                );
                seen += 1;
            });
        }
        assert_eq!(seen, 10_000, "a walk visits every row once");
        for shard in &index.v4.parts {
            assert!(
                shard.windows(2).all(|w| w[0].0 < w[1].0),
                "shards stay sorted"
            );
        }
    }

    #[test]
    fn a_loaded_index_equals_one_built_by_inserts_and_counts_what_is_active() {
        let rows: Vec<StoredBan> = (0..3_000_u32)
            .map(|i| {
                row(
                    &Ipv4Addr::from(0x0a00_0000 + i % 2_000).to_string(),
                    Some(i64::from(i)),
                    i,
                )
            })
            .chain([
                row("2001:db8::7", None, 4),
                row("198.51.100.0/24", None, 5),
                row("2001:db8::/64", Some(1), 1),
            ])
            .collect();
        let mut loader = Loader::default();
        for r in &rows {
            loader.add(r);
        }
        let index = loader.finish();
        let built = Index::from_rows(&rows);
        let mut a: Vec<Held> = index.iter().collect();
        let mut b: Vec<Held> = built.iter().collect();
        a.sort_by_key(|h| h.target);
        b.sort_by_key(|h| h.target);
        assert_eq!(a, b);
        assert_eq!(index.len(), 2_003);
        let mut counts = [0; 4];
        let mut cursor = Cursor::default();
        while !cursor.is_done() {
            cursor = index.count_active(cursor, 50, 1_500, &mut counts);
        }
        // Addresses 0..2000 hold the row of i or i + 2000: active past 1500
        // for i >= 1501 (499) and for the 1000 rewritten by i >= 2000.
        assert_eq!(counts, [1_499, 1, 1, 0]);
    }

    #[test]
    fn many_lookups_at_once_answer_as_one_each() {
        let mut index = Index::new();
        let rows: Vec<StoredBan> = (0..3_000_u32)
            .map(|i| {
                row(
                    &Ipv4Addr::from(0x0a00_0000 + i * 3).to_string(),
                    Some(i64::from(i)),
                    1,
                )
            })
            .chain([row("2001:db8::7", None, 4), row("198.51.100.0/24", None, 5)])
            .collect();
        index.insert_many(&rows);
        let targets: Vec<IpNet> = (0..9_000_u32)
            .rev()
            .map(|i| v4_net(0x0a00_0000 + i))
            .chain(
                [
                    "2001:db8::7/128",
                    "2001:db8::8/128",
                    "198.51.100.0/24",
                    "198.51.100.0/25",
                ]
                .map(|t| t.parse().expect("net")),
            )
            .collect();
        let found = index.get_many(&targets);
        let many: Vec<Option<Held>> = targets
            .iter()
            .enumerate()
            .map(|(at, t)| index.found(&found, at, *t))
            .collect();
        let one: Vec<Option<Held>> = targets.iter().map(|t| index.get(t)).collect();
        assert_eq!(many, one);
        assert_eq!(many.iter().flatten().count(), 3_002);
    }

    #[test]
    fn end_and_remove_update_rows_in_place() {
        let mut index = Index::new();
        index.insert_many(&[row("192.0.2.1", None, 1), row("192.0.2.2", Some(50), 1)]);
        index.end(&"192.0.2.1/32".parse().expect("net"), 40);
        assert_eq!(
            index
                .get(&"192.0.2.1/32".parse().expect("net"))
                .expect("row")
                .expires_at,
            Some(40)
        );
        index.remove(&"192.0.2.1/32".parse().expect("net"));
        index.remove(&"192.0.2.9/32".parse().expect("net"));
        assert_eq!(index.len(), 1);
        assert_eq!(index.iter().count(), 1);
        let rows: Vec<StoredBan> = (0..5_000_u32)
            .map(|i| {
                row(
                    &Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                    Some(i64::from(i % 2)),
                    1,
                )
            })
            .collect();
        index.insert_many(&rows);
        for r in rows.iter().filter(|r| r.expires_at == Some(0)) {
            index.remove(&r.target);
        }
        assert_eq!(index.len(), 2_501, "the odd ones and 192.0.2.2");
        assert_eq!(index.iter().count(), 2_501);
    }

    #[test]
    fn a_million_ipv4_bans_fit_in_32_mib() {
        let rows: Vec<StoredBan> = (0..1_000_000_u32)
            .map(|i| StoredBan {
                target: v4_net(0x6440_0000 + i),
                ..row("192.0.2.1", Some(1000), 1)
            })
            .collect();
        let index = Index::from_rows(&rows);
        assert_eq!(index.len(), 1_000_000);
        assert!(
            index.heap_bytes() < 32 << 20,
            "{} bytes",
            index.heap_bytes()
        );
    }
}
