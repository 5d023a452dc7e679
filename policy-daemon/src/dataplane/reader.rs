//! Read handles on the exact-address ban maps that live apart from the
//! [`Dataplane`], so a long walk (a reconciliation of a million bans) runs
//! without the lock its owner sits behind.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
    path::PathBuf,
};

use aya::maps::IterableMap as _;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use xdp_common::{
    BAN_VALUE_SIZE, BanValue, MAP_BANS_V4, MAP_BANS_V6, MAP_PREFIX_V4, MAP_PREFIX_V6,
};

use super::{
    Dataplane, DataplaneError, Result,
    maps::{corrupt_key, prefix_len_u8},
    sys,
};

/// Duplicated descriptors of the two exact-address maps.
#[derive(Debug)]
pub struct ExactMaps {
    v4: OwnedFd,
    v6: OwnedFd,
}

impl Dataplane {
    /// Read handles on the exact-address maps.
    pub fn exact_maps(&self) -> Result<ExactMaps> {
        let dup = |name: &'static str, fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|source| DataplaneError::Io {
                    operation: "duplicating the descriptor of map",
                    path: PathBuf::from(name),
                    source,
                })
        };
        Ok(ExactMaps {
            v4: dup(MAP_BANS_V4, self.bans_v4.map().fd().as_fd())?,
            v6: dup(MAP_BANS_V6, self.bans_v6.map().fd().as_fd())?,
        })
    }

    /// Every entry of the prefix tries.
    pub fn prefix_entries(&self) -> Result<Vec<(IpNet, BanValue)>> {
        let mut out = Vec::new();
        for item in &self.prefix_v4 {
            let (key, value) = item.map_err(|source| DataplaneError::Map {
                name: MAP_PREFIX_V4,
                source,
            })?;
            let net = Ipv4Net::new(Ipv4Addr::from(key.data()), prefix_len_u8(key.prefix_len()))
                .map_err(|_| corrupt_key(MAP_PREFIX_V4))?;
            out.push((IpNet::V4(net), value));
        }
        for item in &self.prefix_v6 {
            let (key, value) = item.map_err(|source| DataplaneError::Map {
                name: MAP_PREFIX_V6,
                source,
            })?;
            let net = Ipv6Net::new(Ipv6Addr::from(key.data()), prefix_len_u8(key.prefix_len()))
                .map_err(|_| corrupt_key(MAP_PREFIX_V6))?;
            out.push((IpNet::V6(net), value));
        }
        Ok(out)
    }
}

impl ExactMaps {
    /// Calls `each` with every entry of both maps, a few thousand at a
    /// time (`BPF_MAP_LOOKUP_BATCH`). Entries added or removed meanwhile
    /// may or may not be seen.
    pub fn each_chunk(&self, mut each: impl FnMut(&[(IpNet, BanValue)])) -> Result<()> {
        let mut chunk = Vec::new();
        walk::<4>(&self.v4, MAP_BANS_V4, |keys, values| {
            chunk.clear();
            for (key, value) in keys
                .chunks_exact(4)
                .zip(values.chunks_exact(BAN_VALUE_SIZE))
            {
                let mut addr = [0_u8; 4];
                addr.copy_from_slice(key);
                let net = IpNet::V4(Ipv4Net::from(Ipv4Addr::from(addr)));
                chunk.push((net, value_of(value)));
            }
            each(&chunk);
        })?;
        walk::<16>(&self.v6, MAP_BANS_V6, |keys, values| {
            chunk.clear();
            for (key, value) in keys
                .chunks_exact(16)
                .zip(values.chunks_exact(BAN_VALUE_SIZE))
            {
                let mut addr = [0_u8; 16];
                addr.copy_from_slice(key);
                let net = IpNet::V6(Ipv6Net::from(Ipv6Addr::from(addr)));
                chunk.push((net, value_of(value)));
            }
            each(&chunk);
        })
    }
}

fn value_of(bytes: &[u8]) -> BanValue {
    let mut value = [0_u8; BAN_VALUE_SIZE];
    value.copy_from_slice(bytes);
    BanValue::from_ne_bytes(&value)
}

fn walk<const N: usize>(
    map: &OwnedFd,
    name: &'static str,
    each: impl FnMut(&[u8], &[u8]),
) -> Result<()> {
    sys::map_lookup_batch(map.as_fd(), N, BAN_VALUE_SIZE, each).map_err(|source| {
        DataplaneError::Io {
            operation: "BPF_MAP_LOOKUP_BATCH on map",
            path: PathBuf::from(name),
            source,
        }
    })
}
