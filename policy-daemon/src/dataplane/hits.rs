//! The hit counters the program keeps in every ban ([`BanValue::packets`],
//! [`BanValue::last_hit_ns`]), read apart from the [`Dataplane`] so that a
//! long list reads them a chunk at a time without the lock its owner sits
//! behind.

use std::{
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use aya::maps::IterableMap as _;
use ipnet::IpNet;
use xdp_common::{
    BAN_VALUE_SIZE, BanValue, HitBatch, MAP_BANS_V4, MAP_BANS_V6, MAP_HIT_BATCH, MAP_PREFIX_V4,
    MAP_PREFIX_V6,
};

use super::{Dataplane, DataplaneError, Result, monotonic_now_ns, sys};

/// What the program counted for one ban.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// Packets dropped (in a dry run: passed that would have been).
    pub packets: u64,
    /// When the last of them came; `None` before the first.
    pub last_hit: Option<SystemTime>,
}

impl Hits {
    /// The counters of a map value, its last hit turned from the program's
    /// clock into wall-clock time as of `wall_now` and `mono_now`.
    pub fn of(value: &BanValue, wall_now: SystemTime, mono_now: u64) -> Self {
        let last_hit = (value.last_hit_ns != 0).then(|| {
            let ago = Duration::from_nanos(mono_now.saturating_sub(value.last_hit_ns));
            wall_now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH)
        });
        Self {
            packets: value.packets,
            last_hit,
        }
    }
}

/// Duplicated descriptors of the four ban maps and of the per-CPU
/// batches of hits not yet added to them.
#[derive(Debug)]
pub struct HitReader {
    v4: OwnedFd,
    v6: OwnedFd,
    prefix_v4: OwnedFd,
    prefix_v6: OwnedFd,
    batches: OwnedFd,
}

impl Dataplane {
    /// Read handles on the ban maps, for their hit counters.
    pub fn hit_reader(&self) -> Result<HitReader> {
        let dup = |name: &'static str, fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|source| DataplaneError::Io {
                    operation: "duplicating the descriptor of map",
                    path: PathBuf::from(name),
                    source,
                })
        };
        Ok(HitReader {
            v4: dup(MAP_BANS_V4, self.bans_v4.map().fd().as_fd())?,
            v6: dup(MAP_BANS_V6, self.bans_v6.map().fd().as_fd())?,
            prefix_v4: dup(MAP_PREFIX_V4, self.prefix_v4.map().fd().as_fd())?,
            prefix_v6: dup(MAP_PREFIX_V6, self.prefix_v6.map().fd().as_fd())?,
            batches: dup(MAP_HIT_BATCH, self.hit_batches.fd().as_fd())?,
        })
    }
}

impl Dataplane {
    /// Gives each ban of `bans` marked in `existing` the hit counters of
    /// the entry the maps hold for it, which it is about to replace: one
    /// lookup for each of those, none for the others. A packet counted
    /// between the lookup and the write is not carried over.
    pub fn carry_hits(&self, bans: &mut [(IpNet, BanValue)], existing: &[bool]) -> Result<()> {
        for ((net, value), _) in bans
            .iter_mut()
            .zip(existing)
            .filter(|(_, existed)| **existed)
        {
            if let Some(previous) = self.get(*net)? {
                *value = value.with_hits_of(&previous);
            }
        }
        Ok(())
    }
}

impl HitReader {
    /// The counters of each of `nets`, in order: one lookup each of the
    /// entry stored for exactly that address or prefix; zero when the
    /// maps hold none.
    /// The packets each CPU counted and has not yet added to a ban are
    /// added to it here.
    pub fn hits(&self, nets: &[IpNet]) -> Result<Vec<Hits>> {
        let wall_now = SystemTime::now();
        let mono_now = monotonic_now_ns();
        let pending = self.pending()?;
        nets.iter()
            .map(|&net| {
                let mut hits = self
                    .value(net)?
                    .map(|value| Hits::of(&value, wall_now, mono_now))
                    .unwrap_or_default();
                for (batch_net, packets) in &pending {
                    if *batch_net == net {
                        hits.packets += packets;
                    }
                }
                Ok(hits)
            })
            .collect()
    }

    /// Each CPU's batch with packets pending: the address and how many.
    fn pending(&self) -> Result<Vec<(IpNet, u64)>> {
        let size = size_of::<HitBatch>();
        let cpus = aya::util::nr_cpus().unwrap_or(1);
        let mut values = vec![0_u8; size * cpus];
        let read = sys::map_lookup_elem(self.batches.as_fd(), &0_u32.to_ne_bytes(), &mut values)
            .map_err(|source| DataplaneError::Io {
                operation: "BPF_MAP_LOOKUP_ELEM on map",
                path: PathBuf::from(MAP_HIT_BATCH),
                source,
            })?;
        if !read {
            return Ok(Vec::new());
        }
        Ok(values
            .chunks_exact(size)
            .filter_map(|bytes| {
                let word = |at: usize| {
                    let mut word = [0_u8; 8];
                    word.copy_from_slice(&bytes[at..at + 8]);
                    u64::from_ne_bytes(word)
                };
                let pending = word(8);
                let mut addr = [0_u8; 16];
                addr.copy_from_slice(&bytes[24..40]);
                let len = u32::from_ne_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]);
                let net = match len {
                    4 => IpNet::from(std::net::IpAddr::from([addr[0], addr[1], addr[2], addr[3]])),
                    16 => IpNet::from(std::net::IpAddr::from(addr)),
                    _ => return None,
                };
                (pending > 0).then_some((net, pending))
            })
            .collect())
    }

    fn value(&self, net: IpNet) -> Result<Option<BanValue>> {
        // struct bpf_lpm_trie_key: u32 prefix length, then the address.
        let mut key = [0_u8; 4 + 16];
        let (name, fd, key) = match net {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                key[..4].copy_from_slice(&n.addr().octets());
                (MAP_BANS_V4, &self.v4, &key[..4])
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                key[..16].copy_from_slice(&n.addr().octets());
                (MAP_BANS_V6, &self.v6, &key[..16])
            }
            IpNet::V4(n) => {
                key[..4].copy_from_slice(&u32::from(n.prefix_len()).to_ne_bytes());
                key[4..8].copy_from_slice(&n.network().octets());
                (MAP_PREFIX_V4, &self.prefix_v4, &key[..8])
            }
            IpNet::V6(n) => {
                key[..4].copy_from_slice(&u32::from(n.prefix_len()).to_ne_bytes());
                key[4..].copy_from_slice(&n.network().octets());
                (MAP_PREFIX_V6, &self.prefix_v6, &key[..])
            }
        };
        let mut value = [0_u8; BAN_VALUE_SIZE];
        let found = sys::map_lookup_elem(fd.as_fd(), key, &mut value).map_err(|source| {
            DataplaneError::Io {
                operation: "BPF_MAP_LOOKUP_ELEM on map",
                path: PathBuf::from(name),
                source,
            }
        })?;
        Ok(found.then(|| BanValue::from_ne_bytes(&value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_hit_is_dated_back_from_now_and_zero_is_never() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut value = BanValue::new(0, xdp_common::SOURCE_CLI, 32, 1);
        assert_eq!(Hits::of(&value, wall, 5_000_000_000), Hits::default());
        value.packets = 7;
        value.last_hit_ns = 2_000_000_000;
        assert_eq!(
            Hits::of(&value, wall, 5_000_000_000),
            Hits {
                packets: 7,
                last_hit: Some(wall - Duration::from_secs(3)),
            }
        );
        // A hit stamped after `mono_now` (another CPU, a tick ahead) is now.
        value.last_hit_ns = 6_000_000_000;
        assert_eq!(Hits::of(&value, wall, 5_000_000_000).last_hit, Some(wall));
    }
}
