//! The shards of one family in the index: sorted vectors chosen by a
//! seeded hash of the key, each with its count of active bans kept.

use std::hash::{BuildHasher, Hash};

use super::{SHARDS, Slot};

/// A shard's active entries as last counted, by class (see
/// [`Shards::tally`]), and the span of time the count holds for: from
/// when it was made until the first of those bans ends. Any change to the
/// shard voids it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tally {
    counts: [u64; 2],
    from: i64,
    /// Not after `from`: void.
    until: i64,
}

impl Tally {
    fn holds_at(&self, now: i64) -> bool {
        self.from <= now && now < self.until
    }
}

/// A family's entries: [`SHARDS`] vectors sorted by key.
#[derive(Debug)]
pub(super) struct Shards<K> {
    pub(super) parts: Box<[Vec<(K, Slot)>]>,
    /// Per shard, its count of active entries: a count of every ban
    /// reads the shards only when a ban in them changed or ended.
    pub(super) tallies: Box<[Tally]>,
    pub(super) hasher: foldhash::fast::RandomState,
    pub(super) len: usize,
}

impl<K: Ord + Copy + Hash> Shards<K> {
    pub(super) fn new() -> Self {
        Self {
            parts: (0..SHARDS).map(|_| Vec::new()).collect(),
            tallies: vec![Tally::default(); SHARDS].into_boxed_slice(),
            hasher: foldhash::fast::RandomState::default(),
            len: 0,
        }
    }

    pub(super) fn shard_of(&self, key: &K) -> usize {
        // The low bits of a seeded hash: attacker-chosen keys spread evenly.
        #[expect(clippy::cast_possible_truncation, reason = "masked to SHARDS")]
        let shard = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        shard
    }

    pub(super) fn get(&self, key: &K) -> Option<&Slot> {
        let shard = &self.parts[self.shard_of(key)];
        shard
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &shard[i].1)
    }

    /// The slot of `key`, to change: its shard's tally is voided.
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut Slot> {
        let i = self.shard_of(key);
        self.tallies[i] = Tally::default();
        let shard = &mut self.parts[i];
        match shard.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(at) => Some(&mut shard[at].1),
            Err(_) => None,
        }
    }

    /// Marks `key` as seen by reconciliation pass `pass` (the tally
    /// stays: it does not count that); returns its slot.
    pub(super) fn see(&mut self, key: &K, pass: u8) -> Option<Slot> {
        let shard = &mut self.parts[self.shard_of(key)];
        let at = shard.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        shard[at].1.seen = pass;
        Some(shard[at].1)
    }

    /// [`Self::see`] for keys looked up in order: `from` is where the
    /// previous key of shard `shard` was found (0 for the first), and the
    /// search goes on from there. A key of another shard, or not after the
    /// previous one, is looked up afresh.
    pub(super) fn see_from(
        &mut self,
        from: &mut usize,
        shard: usize,
        key: &K,
        pass: u8,
    ) -> Option<Slot> {
        if self.shard_of(key) != shard {
            return self.see(key, pass);
        }
        let part = &mut self.parts[shard];
        if *from > part.len() || (*from > 0 && part[*from - 1].0 >= *key) {
            *from = 0;
        }
        *from = seek(part, *from, key);
        match part.get_mut(*from) {
            Some((k, slot)) if k == key => {
                slot.seen = pass;
                Some(*slot)
            }
            _ => None,
        }
    }

    /// The active entries of shard `i` at `now`, by `class`: its tally
    /// when that still holds, else counted afresh and kept.
    pub(super) fn tally(&mut self, i: usize, now: i64, class: impl Fn(&K) -> usize) -> [u64; 2] {
        if self.tallies[i].holds_at(now) {
            return self.tallies[i].counts;
        }
        let mut counts = [0; 2];
        let mut until = i64::MAX;
        for (key, slot) in &self.parts[i] {
            if slot.is_active(now) {
                counts[class(key)] += 1;
                if let Some(at) = slot.expires_at() {
                    until = until.min(at);
                }
            }
        }
        self.tallies[i] = Tally {
            counts,
            from: now,
            until,
        };
        counts
    }

    /// Whether shard `i`'s tally holds at `now`.
    pub(super) fn tallied(&self, i: usize, now: i64) -> bool {
        self.tallies[i].holds_at(now)
    }

    pub(super) fn insert(&mut self, key: K, slot: Slot) {
        let i = self.shard_of(&key);
        self.tallies[i] = Tally::default();
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
    pub(super) fn insert_many(&mut self, items: Vec<(K, Slot)>) {
        if items.len() < 64 {
            for (key, slot) in items {
                self.insert(key, slot);
            }
            return;
        }
        // Stable: among equal keys the later item stays last.
        let keyed = by_shard_then_key(
            items
                .into_iter()
                .map(|(key, slot)| (self.shard_of(&key), key, slot))
                .collect(),
        );
        for run in keyed.chunk_by(|a, b| a.0 == b.0) {
            let shard = run[0].0;
            self.tallies[shard] = Tally::default();
            let old = std::mem::take(&mut self.parts[shard]);
            let before = old.len();
            let merged = merge(old, run);
            self.len = self.len - before + merged.len();
            self.parts[shard] = merged;
        }
    }

    /// The slots of `keys` (each with its position in the caller's list),
    /// written to `out` by position: grouped and sorted, then one pass per
    /// shard, instead of a binary search each.
    pub(super) fn get_many(&self, keys: Vec<(K, usize)>, mut found: impl FnMut(usize, &K, &Slot)) {
        let keyed = by_shard_then_key(
            keys.into_iter()
                .map(|(key, at)| (self.shard_of(&key), key, at))
                .collect(),
        );
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

    pub(super) fn remove(&mut self, key: &K) {
        let i = self.shard_of(key);
        self.tallies[i] = Tally::default();
        let shard = &mut self.parts[i];
        if let Ok(at) = shard.binary_search_by(|(k, _)| k.cmp(key)) {
            shard.remove(at);
            self.len -= 1;
        }
    }

    pub(super) fn shard(&self, i: usize) -> &[(K, Slot)] {
        &self.parts[i]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &(K, Slot)> {
        self.parts.iter().flatten()
    }
}

/// `keyed` (shard, key, value) in the order of shard, then key; items of
/// equal shard and key keep their order. Grouped by shard with a counting
/// sort (one pass counts, one places), then each shard's few items sorted:
/// far fewer comparisons than one sort of the whole batch.
fn by_shard_then_key<K: Ord + Copy, T: Copy>(keyed: Vec<(usize, K, T)>) -> Vec<(usize, K, T)> {
    let mut next = vec![0_usize; SHARDS];
    for &(shard, _, _) in &keyed {
        next[shard] += 1;
    }
    let mut start = 0;
    for at in &mut next {
        let count = *at;
        *at = start;
        start += count;
    }
    let mut grouped = keyed.clone();
    for item in keyed {
        grouped[next[item.0]] = item;
        next[item.0] += 1;
    }
    for run in grouped.chunk_by_mut(|a, b| a.0 == b.0) {
        run.sort_by_key(|item| item.1);
    }
    grouped
}

/// The first position from `from` on in the sorted `part` whose key is not
/// below `key` (every key before `from` is): a gallop, then a binary search
/// in the stretch found, so keys looked up in order read the shard once.
fn seek<K: Ord>(part: &[(K, Slot)], from: usize, key: &K) -> usize {
    let mut low = from;
    let mut high = from;
    let mut step = 1;
    while high < part.len() && part[high].0 < *key {
        low = high + 1;
        high += step;
        step *= 2;
    }
    let high = high.min(part.len());
    low + part[low..high].partition_point(|(k, _)| k < key)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_orders_by_shard_then_key_and_keeps_the_order_of_equals() {
        // A fixed pseudo-random batch: shards and keys repeat, and the
        // value tells the items apart.
        let mut state = 0x9E37_79B9_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let keyed: Vec<(usize, u32, usize)> = (0..5_000)
            .map(|at| (next() as usize % SHARDS, next() % 3_000, at))
            .collect();
        let mut expected = keyed.clone();
        expected.sort_by_key(|item| (item.0, item.1));
        assert_eq!(by_shard_then_key(keyed), expected);
        assert!(by_shard_then_key(Vec::<(usize, u32, usize)>::new()).is_empty());
    }
}
