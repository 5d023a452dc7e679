//! A bounded map whose entries expire, split into shards so that the
//! request path of many connections rarely waits on one lock. Used for DNS
//! answers and for per-mail scores.
//!
//! Keys are hashed with foldhash, several times faster than `SipHash` on
//! these short keys and seeded per map, so keys a peer chooses (sender
//! domains, instances) cannot aim at collisions.

use std::{
    borrow::Borrow,
    collections::{HashMap, hash_map},
    hash::{BuildHasher, Hash},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use foldhash::fast::RandomState;

const SHARDS: usize = 16;

/// Bounded expiring map. When a shard is full, expired entries go first,
/// then the half of the shard that expires soonest.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// Picks the shard; seeded apart from the shards' own maps, whose
    /// buckets then spread evenly within a shard.
    hasher: RandomState,
    per_shard: usize,
}

type Shard<K, V> = Mutex<Map<K, V>>;
type Map<K, V> = HashMap<K, Entry<V>, RandomState>;

#[derive(Debug)]
struct Entry<V> {
    expires: Instant,
    value: V,
}

impl<K: Hash + Eq, V> TtlCache<K, V> {
    /// A cache holding at most about `capacity` entries (at least one per
    /// shard).
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(RandomState::default())))
                .collect(),
            hasher: RandomState::default(),
            per_shard,
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Map<K, V>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `read` to the live value of `key`, if any.
    pub fn get<Q, R>(&self, key: &Q, now: Instant, read: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        shard
            .get(key)
            .filter(|entry| entry.expires > now)
            .map(|entry| read(&entry.value))
    }

    /// Stores `value` until `expires`, replacing any previous value.
    pub fn insert(&self, key: K, value: V, expires: Instant, now: Instant) {
        let mut shard = self.shard(&key);
        // Only a full shard needs to know whether the key is new.
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            self.make_room(&mut shard, now);
        }
        shard.insert(key, Entry { expires, value });
    }

    /// Applies `update` to the live value of `key`, first storing
    /// `fresh()` until `expires` when there is none.
    pub fn update<R>(
        &self,
        key: K,
        now: Instant,
        expires: Instant,
        fresh: impl FnOnce() -> V,
        update: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut shard = self.shard(&key);
        // Only a full shard needs to know whether the key is new.
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            self.make_room(&mut shard, now);
        }
        let entry = match shard.entry(key) {
            hash_map::Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                if entry.expires <= now {
                    // Expired but not yet swept: a new mail under a reused key.
                    *entry = Entry {
                        expires,
                        value: fresh(),
                    };
                }
                entry
            }
            hash_map::Entry::Vacant(vacant) => vacant.insert(Entry {
                expires,
                value: fresh(),
            }),
        };
        update(&mut entry.value)
    }

    fn make_room(&self, shard: &mut Map<K, V>, now: Instant) {
        if shard.len() < self.per_shard {
            return;
        }
        shard.retain(|_, entry| entry.expires > now);
        if shard.len() < self.per_shard {
            return;
        }
        let mut expiries: Vec<Instant> = shard.values().map(|entry| entry.expires).collect();
        let middle = expiries.len() / 2;
        let (_, cutoff, _) = expiries.select_nth_unstable(middle);
        let cutoff = *cutoff;
        shard.retain(|_, entry| entry.expires > cutoff);
    }

    #[cfg(test)]
    /// Live and expired entries currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    #[cfg(test)]
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_expire_and_updates_start_fresh_after_expiry() {
        let cache: TtlCache<String, u32> = TtlCache::new(100);
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        cache.insert("a".to_owned(), 1, later, now);
        assert_eq!(cache.get("a", now, |v| *v), Some(1));
        assert_eq!(
            cache.get("a", later, |v| *v),
            None,
            "expired at its instant"
        );
        let total = cache.update(
            "b".to_owned(),
            now,
            later,
            || 0,
            |v| {
                *v += 5;
                *v
            },
        );
        assert_eq!(total, 5);
        let total = cache.update(
            "b".to_owned(),
            now,
            later,
            || 0,
            |v| {
                *v += 5;
                *v
            },
        );
        assert_eq!(total, 10);
        let after = later + Duration::from_secs(1);
        let total = cache.update(
            "b".to_owned(),
            after,
            after + Duration::from_secs(10),
            || 0,
            |v| {
                *v += 1;
                *v
            },
        );
        assert_eq!(total, 1, "a new mail under an expired key starts from zero");
    }

    #[test]
    fn the_size_stays_bounded() {
        let cache: TtlCache<u32, u32> = TtlCache::new(160);
        let now = Instant::now();
        for i in 0..10_000 {
            cache.insert(i, i, now + Duration::from_secs(u64::from(i)), now);
        }
        assert!(cache.len() <= 160, "{}", cache.len());
        assert_eq!(
            cache.get(&9_999, now, |v| *v),
            Some(9_999),
            "the newest stays"
        );
    }
}
