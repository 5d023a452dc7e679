//! The counters held in memory: one [`Window`] per limit and key, in
//! shards so that concurrent requests rarely wait on one lock. Bounded:
//! expired counters go first, then, when a shard is full, the half of it
//! touched longest ago (counted in [`Table::dropped`]). Changes are marked
//! for the next write to disk.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use super::window::Window;

const SHARDS: usize = 16;

/// One counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub window: Window,
    /// The window length the counts were made with, milliseconds; a
    /// changed limit starts afresh.
    pub length: u64,
    /// Last counted, Unix milliseconds: the oldest go first at the cap.
    pub last: u64,
    /// Start of the fixed window in which the client was last banned for
    /// this key, plus one; 0 never.
    pub banned: u64,
}

/// A counter as written to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub key: Box<[u8]>,
    pub entry: Entry,
}

#[derive(Debug, Default)]
struct Slot {
    entry: Entry,
    dirty: bool,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Slot>,
    /// Keys dropped at the cap since the last write, to delete on disk.
    gone: Vec<Box<[u8]>>,
}

/// What has changed since the last write.
#[derive(Debug, Default)]
pub struct Changes {
    /// Counters to write.
    pub rows: Vec<Row>,
    /// Keys to delete.
    pub gone: Vec<Box<[u8]>>,
    /// Replace everything on disk with `rows`.
    pub rewrite: bool,
}

/// The bounded set of counters.
#[derive(Debug)]
pub struct Table {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    dropped: AtomicU64,
    /// The next write replaces everything on disk: too many keys were
    /// dropped to list, or a write failed.
    rewrite: AtomicBool,
}

impl Table {
    /// A table of at most about `capacity` counters (at least one per
    /// shard).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            dropped: AtomicU64::new(0),
            rewrite: AtomicBool::new(false),
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `update` to the counter of `key` (created empty, or reset
    /// when its window length is not `length`) at `now` and marks it
    /// changed.
    pub fn update<R>(
        &self,
        key: &[u8],
        length: u64,
        now: u64,
        update: impl FnOnce(&mut Entry) -> R,
    ) -> R {
        let mut shard = self.shard(key);
        if !shard.map.contains_key(key) {
            self.make_room(&mut shard, now);
            shard.map.insert(key.into(), Slot::default());
        }
        let Some(slot) = shard.map.get_mut(key) else {
            return update(&mut Entry::default());
        };
        if slot.entry.length != length {
            slot.entry = Entry {
                length,
                ..Entry::default()
            };
        }
        slot.entry.last = slot.entry.last.max(now);
        slot.dirty = true;
        update(&mut slot.entry)
    }

    /// Keeps what was on disk; a counter already counted here wins.
    pub fn load(&self, rows: impl IntoIterator<Item = Row>, now: u64) {
        for row in rows {
            let mut shard = self.shard(&row.key);
            if shard.map.contains_key(&row.key) {
                continue;
            }
            self.make_room(&mut shard, now);
            shard.map.insert(
                row.key,
                Slot {
                    entry: row.entry,
                    dirty: false,
                },
            );
        }
    }

    fn make_room(&self, shard: &mut Shard, now: u64) {
        if shard.map.len() < self.per_shard {
            return;
        }
        shard
            .map
            .retain(|_, slot| !slot.entry.window.expired(now, slot.entry.length));
        if shard.map.len() < self.per_shard {
            return;
        }
        let mut lasts: Vec<u64> = shard.map.values().map(|slot| slot.entry.last).collect();
        let middle = lasts.len() / 2;
        let (_, cutoff, _) = lasts.select_nth_unstable(middle);
        let cutoff = *cutoff;
        let before = shard.map.len();
        let mut gone = std::mem::take(&mut shard.gone);
        shard.map.retain(|key, slot| {
            let keep = slot.entry.last > cutoff;
            if !keep {
                gone.push(key.clone());
            }
            keep
        });
        if gone.len() > self.per_shard {
            gone = Vec::new();
            self.rewrite.store(true, Ordering::Relaxed);
        }
        shard.gone = gone;
        let dropped = (before - shard.map.len()) as u64;
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        metrics::counter!(crate::metrics::RATELIMIT_DROPPED).increment(dropped);
    }

    /// Takes what changed since the last call, and forgets expired
    /// counters.
    pub fn changes(&self, now: u64) -> Changes {
        let rewrite = self.rewrite.swap(false, Ordering::Relaxed);
        let mut changes = Changes {
            rewrite,
            ..Changes::default()
        };
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard
                .map
                .retain(|_, slot| !slot.entry.window.expired(now, slot.entry.length));
            let gone = std::mem::take(&mut shard.gone);
            if !rewrite {
                changes.gone.extend(gone);
            }
            for (key, slot) in &mut shard.map {
                if rewrite || slot.dirty {
                    changes.rows.push(Row {
                        key: key.clone(),
                        entry: slot.entry,
                    });
                }
                slot.dirty = false;
            }
        }
        changes
    }

    /// Makes the next [`Table::changes`] take everything, after a write
    /// that failed.
    pub fn rewrite_all(&self) {
        self.rewrite.store(true, Ordering::Relaxed);
    }

    /// Counters held, expired or not.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map
                    .len()
            })
            .sum()
    }

    /// Counters dropped at the cap so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn count(table: &Table, key: &str, now: u64) -> u64 {
        table.update(key.as_bytes(), MINUTE, now, |entry| {
            entry.window.add(1, now, MINUTE)
        })
    }

    #[test]
    fn counters_are_kept_per_key_and_reset_by_a_new_window_length() {
        let table = Table::new(100);
        let now = 1_000 * MINUTE;
        assert_eq!(count(&table, "a", now), 1);
        assert_eq!(count(&table, "a", now + 1), 2);
        assert_eq!(count(&table, "b", now + 2), 1);
        let other = table.update(b"a", 2 * MINUTE, now + 3, |entry| {
            entry.window.add(1, now + 3, 2 * MINUTE)
        });
        assert_eq!(other, 1, "a changed window starts afresh");
    }

    #[test]
    fn at_the_cap_the_oldest_go_and_are_counted() {
        let table = Table::new(SHARDS * 4);
        let now = 1_000 * MINUTE;
        for i in 0..10_000_u64 {
            count(&table, &format!("key-{i}"), now + i);
        }
        assert!(table.len() <= SHARDS * 4, "{}", table.len());
        assert!(table.dropped() >= 10_000 - SHARDS as u64 * 4);
        // The newest key survived.
        assert_eq!(count(&table, "key-9999", now + 10_000), 2);
        let changes = table.changes(now + 10_000);
        assert!(changes.rewrite, "more keys dropped than can be listed");
        assert_eq!(changes.rows.len(), table.len());
    }

    #[test]
    fn expired_counters_are_forgotten_and_changes_are_taken_once() {
        let table = Table::new(100);
        let now = 1_000 * MINUTE;
        count(&table, "old", now);
        count(&table, "new", now + 2 * MINUTE);
        let changes = table.changes(now + 2 * MINUTE);
        assert_eq!(changes.rows.len(), 1, "{changes:?}");
        assert_eq!(&*changes.rows[0].key, b"new");
        assert!(table.changes(now + 2 * MINUTE).rows.is_empty());
        table.rewrite_all();
        assert_eq!(table.changes(now + 2 * MINUTE).rows.len(), 1);
    }

    #[test]
    fn loaded_counters_do_not_override_fresh_ones() {
        let table = Table::new(100);
        let now = 1_000 * MINUTE;
        count(&table, "a", now);
        let mut stored = Entry {
            length: MINUTE,
            last: now,
            ..Entry::default()
        };
        stored.window.add(7, now, MINUTE);
        table.load(
            [
                Row {
                    key: (*b"a").into(),
                    entry: stored,
                },
                Row {
                    key: (*b"b").into(),
                    entry: stored,
                },
            ],
            now,
        );
        assert_eq!(count(&table, "a", now), 2);
        assert_eq!(count(&table, "b", now), 8);
    }
}
