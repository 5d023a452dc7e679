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
    hash::BuildHasher,
    net::{Ipv4Addr, Ipv6Addr},
};

use foldhash::{HashMap, HashMapExt as _};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::bans::{BanScope, Source, store::StoredBan};
pub use glance::Glance;
use shards::Shards;

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

/// Where targets sit in an [`Index`], known without it: to put many
/// targets in the order the index keeps them before looking them up.
#[derive(Clone, Debug)]
pub struct Order {
    v4: foldhash::fast::RandomState,
    v6: foldhash::fast::RandomState,
    prefixes: foldhash::fast::RandomState,
}

impl Order {
    /// The shard of `target`, numbered as a [`Cursor`] numbers them.
    pub fn position(&self, target: &IpNet) -> usize {
        #[expect(clippy::cast_possible_truncation, reason = "masked to SHARDS")]
        let shard = |hash: u64| (hash as usize) & (SHARDS - 1);
        match key_of(target) {
            Key::V4(k) => shard(self.v4.hash_one(k)),
            Key::V6(k) => SHARDS + shard(self.v6.hash_one(k)),
            Key::Prefix(k) => 2 * SHARDS + shard(self.prefixes.hash_one(k)),
        }
    }
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

    /// Where this index keeps each target.
    pub fn order(&self) -> Order {
        Order {
            v4: self.v4.hasher.clone(),
            v6: self.v6.hasher.clone(),
            prefixes: self.prefixes.hasher.clone(),
        }
    }

    /// Marks targets as found in the kernel maps by reconciliation pass
    /// `pass`. They come as `(position, target)` sorted by position then
    /// target, where `position` is the target's [`Order::position`], so
    /// each shard is read once, in order; in any other order each is
    /// still found, only slower. Calls `found` with each target's place
    /// among them and its row when its ban is active at `now`.
    pub fn see_sorted(
        &mut self,
        targets: impl IntoIterator<Item = (usize, IpNet)>,
        now: i64,
        pass: u8,
        mut found: impl FnMut(usize, Option<Held>),
    ) {
        let mut from = 0;
        let mut current = usize::MAX;
        for (at, (position, target)) in targets.into_iter().enumerate() {
            if position != current {
                from = 0;
                current = position;
            }
            let shard = position % SHARDS;
            let slot = match key_of(&target) {
                Key::V4(k) => self.v4.see_from(&mut from, shard, &k, pass),
                Key::V6(k) => self.v6.see_from(&mut from, shard, &k, pass),
                Key::Prefix(k) => self.prefixes.see_from(&mut from, shard, &k, pass),
            };
            found(
                at,
                slot.filter(|slot| slot.is_active(now))
                    .map(|slot| self.held(target, &slot)),
            );
        }
    }

    /// Counts the rows active at `now` in the next shards from `cursor`
    /// (about `budget` rows read) into `counts`: single IPv4 addresses,
    /// single IPv6 addresses, IPv4 prefixes, IPv6 prefixes. A shard
    /// nothing changed in since it was last counted, and in which no ban
    /// ended since, is not read again.
    pub fn count_active(
        &mut self,
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
                    if !self.v4.tallied(shard, now) {
                        done += self.v4.shard(shard).len();
                    }
                    counts[0] += self.v4.tally(shard, now, |_| 0)[0];
                }
                1 => {
                    if !self.v6.tallied(shard, now) {
                        done += self.v6.shard(shard).len();
                    }
                    counts[1] += self.v6.tally(shard, now, |_| 0)[0];
                }
                _ => {
                    if !self.prefixes.tallied(shard, now) {
                        done += self.prefixes.shard(shard).len();
                    }
                    let [v4, v6] = self
                        .prefixes
                        .tally(shard, now, |net| usize::from(!net.addr().is_ipv4()));
                    counts[2] += v4;
                    counts[3] += v6;
                }
            }
            done += 1;
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
                + SHARDS * (size_of::<Vec<(K, Slot)>>() + size_of::<shards::Tally>())
        }
        family(&self.v4) + family(&self.v6) + family(&self.prefixes)
    }
}

mod glance;
mod shards;
#[cfg(test)]
mod tests;
