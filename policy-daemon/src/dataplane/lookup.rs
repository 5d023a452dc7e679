//! What the ban maps hold for one address or prefix, found the way the
//! program finds it.

use aya::maps::MapError;
use ipnet::IpNet;
use xdp_common::{BanValue, MAP_BANS_V4, MAP_BANS_V6, MAP_PREFIX_V4, MAP_PREFIX_V6};

use super::{
    Dataplane, DataplaneError, Result,
    maps::{v4_key, v6_key},
};

/// One map entry that applies to a looked-up target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapHit {
    /// The map's name (a constant of `xdp-common`).
    pub map: &'static str,
    /// The entry's key: the address, or the prefix that contains the target.
    pub net: IpNet,
    pub value: BanValue,
}

impl Dataplane {
    /// The entries the program consults for `target`, live or expired: the
    /// exact entry of a single address, then every prefix-trie entry that
    /// contains it, longest first. Unlike the program, the walk does not
    /// stop at the first live entry.
    pub fn lookup(&self, target: IpNet) -> Result<Vec<MapHit>> {
        let mut hits = Vec::new();
        let exact = match target {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                Some((MAP_BANS_V4, self.bans_v4.get(&n.addr().octets(), 0)))
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                Some((MAP_BANS_V6, self.bans_v6.get(&n.addr().octets(), 0)))
            }
            _ => None,
        };
        if let Some((map, found)) = exact
            && let Some(value) = found_or_none(map, found)?
        {
            hits.push(MapHit {
                map,
                net: target,
                value,
            });
        }
        // A trie lookup answers the longest prefix of at most `len` bits;
        // each step asks for one shorter than the last answer.
        let mut len = target.prefix_len();
        for _ in 0..=target.max_prefix_len() {
            let (map, found) = match target {
                IpNet::V4(n) => match ipnet::Ipv4Net::new(n.addr(), len) {
                    Ok(key) => (MAP_PREFIX_V4, self.prefix_v4.get(&v4_key(key.trunc()), 0)),
                    Err(_) => break,
                },
                IpNet::V6(n) => match ipnet::Ipv6Net::new(n.addr(), len) {
                    Ok(key) => (MAP_PREFIX_V6, self.prefix_v6.get(&v6_key(key.trunc()), 0)),
                    Err(_) => break,
                },
            };
            let Some(value) = found_or_none(map, found)? else {
                break;
            };
            // An entry written before values carried their length says 0:
            // the walk cannot go on below it.
            let matched = if value.prefix_len == 0 || value.prefix_len > len {
                len
            } else {
                value.prefix_len
            };
            let net = IpNet::new(target.addr(), matched)
                .map_err(|_| super::maps::corrupt_key(map))?
                .trunc();
            hits.push(MapHit { map, net, value });
            if value.prefix_len == 0 || value.prefix_len > len || matched == 0 {
                break;
            }
            len = matched - 1;
        }
        Ok(hits)
    }
}

fn found_or_none(
    name: &'static str,
    found: std::result::Result<BanValue, MapError>,
) -> Result<Option<BanValue>> {
    match found {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(source) => Err(DataplaneError::Map { name, source }),
    }
}
