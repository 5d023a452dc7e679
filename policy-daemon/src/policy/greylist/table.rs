//! The greylisting state in memory: triplets and the pass counts of client
//! networks, in shards, bounded in size, with the changes since the last
//! save kept for the store. Times are Unix milliseconds, so the state
//! means the same after a restart.

use std::{collections::HashMap, mem};

use foldhash::fast::RandomState;
use parking_lot::Mutex;

/// A triplet's identity: the first 16 bytes of the SHA-256 of its client
/// network, sender and recipient ([`super::key`]). Fixed-size, and the
/// same on every host of a fleet.
pub type TripletKey = [u8; 16];

/// A client network: the family (4 or 6), then the masked address.
pub type NetworkKey = [u8; 17];

const SHARDS: usize = 16;

/// What is known about one triplet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Triplet {
    /// When it was first seen (deferred).
    pub first_seen: i64,
    /// When it was last seen.
    pub last_seen: i64,
    /// Whether a retry came after the delay.
    pub passed: bool,
}

/// What is known about one client network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// Distinct triplets that passed.
    pub passes: u32,
    /// When the last of them passed.
    pub last_seen: i64,
}

/// How long things are kept, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub delay: i64,
    /// A triplet never retried is forgotten this long after first seen.
    pub expire: i64,
    /// A passed triplet and a client are kept this long after last seen.
    pub keep: i64,
    /// Most triplets, and most client networks, kept.
    pub max_entries: usize,
}

/// The answer for one triplet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Not yet: this many milliseconds are left of the delay.
    Defer { remaining: i64 },
    /// Passed; `first` the first time, after waiting `waited` ms.
    Pass { first: bool, waited: i64 },
}

/// A change not yet saved: the new value, or `None` for a removal.
pub type Changes<K, V> = HashMap<K, Option<V>, RandomState>;

struct Shard {
    triplets: HashMap<TripletKey, Triplet, RandomState>,
    clients: HashMap<NetworkKey, Client, RandomState>,
    triplet_changes: Changes<TripletKey, Triplet>,
    client_changes: Changes<NetworkKey, Client>,
}

impl Shard {
    fn new() -> Self {
        Self {
            triplets: HashMap::default(),
            clients: HashMap::default(),
            triplet_changes: HashMap::default(),
            client_changes: HashMap::default(),
        }
    }
}

/// Counts of what [`Table::purge`] and the size cap removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub expired: u64,
    /// Dropped at the cap, least recently seen first.
    pub dropped: u64,
}

/// Triplets and client networks.
pub struct Table {
    shards: Vec<Mutex<Shard>>,
    limits: Mutex<Limits>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("triplets", &self.len())
            .finish_non_exhaustive()
    }
}

fn live_triplet(triplet: &Triplet, now: i64, limits: &Limits) -> bool {
    if triplet.passed {
        now.saturating_sub(triplet.last_seen) <= limits.keep
    } else {
        now.saturating_sub(triplet.first_seen) <= limits.expire
    }
}

fn live_client(client: &Client, now: i64, limits: &Limits) -> bool {
    now.saturating_sub(client.last_seen) <= limits.keep
}

/// Removes the least recently seen eighth of `map` (at least one entry)
/// when it holds more than `cap`, recording each removal in `changes`.
fn shed<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V, RandomState>,
    changes: &mut Changes<K, V>,
    cap: usize,
    last_seen: impl Fn(&V) -> i64,
) -> u64 {
    if map.len() <= cap {
        return 0;
    }
    let excess = map.len() - cap;
    let n = excess.max(cap / 8).max(1).min(map.len());
    let mut ages: Vec<(i64, K)> = map.iter().map(|(k, v)| (last_seen(v), *k)).collect();
    ages.select_nth_unstable_by_key(n - 1, |(at, _)| *at);
    for (_, key) in &ages[..n] {
        map.remove(key);
        changes.insert(*key, None);
    }
    n as u64
}

impl Table {
    pub fn new(limits: Limits) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            limits: Mutex::new(limits),
        }
    }

    /// New settings for later visits (a reload); what is kept stays.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock() = limits;
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock()
    }

    fn shard(&self, first_byte: u8) -> &Mutex<Shard> {
        &self.shards[usize::from(first_byte) % SHARDS]
    }

    fn network_shard(&self, network: &NetworkKey) -> &Mutex<Shard> {
        // The last address byte varies most between networks.
        let byte = network.iter().rev().find(|b| **b != 0).copied();
        self.shard(byte.unwrap_or(0))
    }

    fn per_shard(limits: &Limits) -> usize {
        limits.max_entries.div_ceil(SHARDS).max(1)
    }

    /// Triplets kept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().triplets.len()).sum()
    }

    /// How many distinct triplets `network` passed, if it is still kept.
    pub fn passes(&self, network: &NetworkKey, now: i64) -> u32 {
        let limits = self.limits();
        let shard = self.network_shard(network).lock();
        shard
            .clients
            .get(network)
            .filter(|c| live_client(c, now, &limits))
            .map_or(0, |c| c.passes)
    }

    /// Whether `key` passed already (and is still kept): a visit needs no
    /// word from the fleet.
    pub fn passed(&self, key: &TripletKey, now: i64) -> bool {
        let limits = self.limits();
        let shard = self.shard(key[0]).lock();
        shard
            .triplets
            .get(key)
            .is_some_and(|t| t.passed && live_triplet(t, now, &limits))
    }

    /// Records a request for `key` at `now`. `elsewhere` is when another
    /// host first saw it, if it did: the earlier of the two counts.
    /// Returns the answer and how many entries the cap dropped.
    pub fn visit(&self, key: TripletKey, now: i64, elsewhere: Option<i64>) -> (Visit, u64) {
        let limits = self.limits();
        let mut guard = self.shard(key[0]).lock();
        let shard = &mut *guard;
        let known = shard
            .triplets
            .get(&key)
            .copied()
            .filter(|t| live_triplet(t, now, &limits));
        // Another host's first sighting counts only inside the window a
        // retry can pass in, and never from the future.
        let elsewhere = elsewhere.filter(|at| *at <= now && now - at <= limits.expire);
        let mut triplet = known.unwrap_or(Triplet {
            first_seen: now,
            last_seen: now,
            passed: false,
        });
        if let Some(at) = elsewhere {
            triplet.first_seen = triplet.first_seen.min(at);
        }
        triplet.last_seen = now;
        let waited = now - triplet.first_seen;
        let visit = if triplet.passed {
            Visit::Pass {
                first: false,
                waited,
            }
        } else if waited >= limits.delay {
            triplet.passed = true;
            Visit::Pass {
                first: true,
                waited,
            }
        } else {
            Visit::Defer {
                remaining: limits.delay - waited,
            }
        };
        shard.triplets.insert(key, triplet);
        shard.triplet_changes.insert(key, Some(triplet));
        let cap = Self::per_shard(&limits);
        let dropped = shed(&mut shard.triplets, &mut shard.triplet_changes, cap, |t| {
            t.last_seen
        });
        (visit, dropped)
    }

    /// Counts one more passed triplet for `network`.
    pub fn add_pass(&self, network: NetworkKey, now: i64) -> u64 {
        let limits = self.limits();
        let mut guard = self.network_shard(&network).lock();
        let shard = &mut *guard;
        let client = shard
            .clients
            .get(&network)
            .copied()
            .filter(|c| live_client(c, now, &limits))
            .map_or(
                Client {
                    passes: 1,
                    last_seen: now,
                },
                |c| Client {
                    passes: c.passes.saturating_add(1),
                    last_seen: now,
                },
            );
        shard.clients.insert(network, client);
        shard.client_changes.insert(network, Some(client));
        shed(
            &mut shard.clients,
            &mut shard.client_changes,
            Self::per_shard(&limits),
            |c| c.last_seen,
        )
    }

    /// Removes what expired by `now`.
    pub fn purge(&self, now: i64) -> Removed {
        let limits = self.limits();
        let mut removed = Removed::default();
        for shard in &self.shards {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            let before = shard.triplets.len() + shard.clients.len();
            let changes = &mut shard.triplet_changes;
            shard.triplets.retain(|key, t| {
                let keep = live_triplet(t, now, &limits);
                if !keep {
                    changes.insert(*key, None);
                }
                keep
            });
            let changes = &mut shard.client_changes;
            shard.clients.retain(|key, c| {
                let keep = live_client(c, now, &limits);
                if !keep {
                    changes.insert(*key, None);
                }
                keep
            });
            removed.expired += (before - shard.triplets.len() - shard.clients.len()) as u64;
            let cap = Self::per_shard(&limits);
            removed.dropped += shed(&mut shard.triplets, &mut shard.triplet_changes, cap, |t| {
                t.last_seen
            });
            removed.dropped += shed(&mut shard.clients, &mut shard.client_changes, cap, |c| {
                c.last_seen
            });
        }
        removed
    }

    /// Takes the changes since the last call, for the store.
    pub fn take_changes(&self) -> (Changes<TripletKey, Triplet>, Changes<NetworkKey, Client>) {
        let mut triplets = Changes::default();
        let mut clients = Changes::default();
        for shard in &self.shards {
            let mut shard = shard.lock();
            triplets.extend(mem::take(&mut shard.triplet_changes));
            clients.extend(mem::take(&mut shard.client_changes));
        }
        (triplets, clients)
    }

    /// Returns changes a failed save took; a newer change of the same
    /// entry wins.
    pub fn give_back(
        &self,
        triplets: Changes<TripletKey, Triplet>,
        clients: Changes<NetworkKey, Client>,
    ) {
        for (key, change) in triplets {
            self.shard(key[0])
                .lock()
                .triplet_changes
                .entry(key)
                .or_insert(change);
        }
        for (network, change) in clients {
            self.network_shard(&network)
                .lock()
                .client_changes
                .entry(network)
                .or_insert(change);
        }
    }

    /// Puts back what the store had, without recording changes; expired
    /// rows are left out.
    pub fn restore(
        &self,
        triplets: impl IntoIterator<Item = (TripletKey, Triplet)>,
        clients: impl IntoIterator<Item = (NetworkKey, Client)>,
        now: i64,
    ) {
        let limits = self.limits();
        for (key, triplet) in triplets {
            if live_triplet(&triplet, now, &limits) {
                self.shard(key[0]).lock().triplets.insert(key, triplet);
            }
        }
        for (network, client) in clients {
            if live_client(&client, now, &limits) {
                self.network_shard(&network)
                    .lock()
                    .clients
                    .insert(network, client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn limits(max_entries: usize) -> Limits {
        Limits {
            delay: 5 * MIN,
            expire: 48 * 60 * MIN,
            keep: 35 * 24 * 60 * MIN,
            max_entries,
        }
    }

    fn key(n: u16) -> TripletKey {
        let mut key = [0; 16];
        key[..2].copy_from_slice(&n.to_be_bytes());
        key[15] = 1;
        key
    }

    #[test]
    fn a_triplet_is_deferred_until_the_delay_then_passes() {
        let table = Table::new(limits(100));
        let t0 = 1_700_000_000_000;
        assert_eq!(
            table.visit(key(1), t0, None).0,
            Visit::Defer { remaining: 5 * MIN }
        );
        assert_eq!(
            table.visit(key(1), t0 + MIN, None).0,
            Visit::Defer { remaining: 4 * MIN },
            "an early retry does not restart the delay"
        );
        assert_eq!(
            table.visit(key(1), t0 + 5 * MIN, None).0,
            Visit::Pass {
                first: true,
                waited: 5 * MIN
            }
        );
        assert!(table.passed(&key(1), t0 + 6 * MIN));
        assert_eq!(
            table.visit(key(1), t0 + 6 * MIN, None).0,
            Visit::Pass {
                first: false,
                waited: 6 * MIN
            }
        );
        // Another triplet is its own.
        assert!(matches!(
            table.visit(key(2), t0 + 6 * MIN, None).0,
            Visit::Defer { .. }
        ));
    }

    #[test]
    fn a_triplet_never_retried_starts_over_after_expire() {
        let table = Table::new(limits(100));
        let t0 = 1_700_000_000_000;
        table.visit(key(1), t0, None);
        let late = t0 + 48 * 60 * MIN + 1;
        assert_eq!(
            table.visit(key(1), late, None).0,
            Visit::Defer { remaining: 5 * MIN }
        );
        assert_eq!(table.purge(late + 48 * 60 * MIN + 1).expired, 1);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn another_hosts_first_sighting_counts_inside_the_window_only() {
        let table = Table::new(limits(100));
        let t0 = 1_700_000_000_000;
        assert!(matches!(
            table.visit(key(1), t0 + 10 * MIN, Some(t0)).0,
            Visit::Pass { first: true, .. }
        ));
        // From the future, or older than expire: ignored.
        assert!(matches!(
            table.visit(key(2), t0, Some(t0 + MIN)).0,
            Visit::Defer { remaining } if remaining == 5 * MIN
        ));
        assert!(matches!(
            table.visit(key(3), t0 + 49 * 60 * MIN, Some(t0)).0,
            Visit::Defer { .. }
        ));
    }

    #[test]
    fn the_cap_drops_the_least_recently_seen_and_says_how_many() {
        let table = Table::new(limits(SHARDS * 8));
        let t0 = 1_700_000_000_000;
        let mut dropped = 0;
        // Keys whose first byte is 0 share one shard of 8.
        for n in 0..9u16 {
            dropped += table.visit(key(n), t0 + i64::from(n), None).1;
        }
        assert_eq!(dropped, 1);
        assert!(!table.shards[0].lock().triplets.contains_key(&key(0)));
        assert!(table.shards[0].lock().triplets.contains_key(&key(8)));
        let (changes, _) = table.take_changes();
        assert_eq!(changes.get(&key(0)), Some(&None), "the drop is saved");
        assert!(table.take_changes().0.is_empty(), "changes are taken once");
    }

    #[test]
    fn client_passes_count_and_expire() {
        let table = Table::new(limits(100));
        let t0 = 1_700_000_000_000;
        let net = [4, 192, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(table.passes(&net, t0), 0);
        table.add_pass(net, t0);
        table.add_pass(net, t0 + 1);
        assert_eq!(table.passes(&net, t0 + 2), 2);
        let gone = t0 + 1 + 35 * 24 * 60 * MIN + 1;
        assert_eq!(table.passes(&net, gone), 0);
        assert_eq!(table.purge(gone).expired, 1);
    }

    #[test]
    fn restore_skips_expired_rows_and_records_nothing() {
        let table = Table::new(limits(100));
        let t0 = 1_700_000_000_000;
        let fresh = Triplet {
            first_seen: t0,
            last_seen: t0,
            passed: false,
        };
        let stale = Triplet {
            first_seen: t0 - 49 * 60 * MIN,
            last_seen: t0 - 49 * 60 * MIN,
            passed: false,
        };
        table.restore([(key(1), fresh), (key(2), stale)], [], t0);
        assert_eq!(table.len(), 1);
        assert!(table.take_changes().0.is_empty());
    }
}
