//! Reading and writing the ban maps, the port scopes and the counters.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    path::PathBuf,
};

use aya::maps::{HashMap, IterableMap as _, MapData, MapError, lpm_trie::Key};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use xdp_common::{
    BanValue, Counter, MAP_BANS_V4, MAP_BANS_V6, MAP_CONFIG, MAP_PORT_SCOPES, MAP_PREFIX_V4,
    MAP_PREFIX_V6, MAP_STATS, XdpConfig, XdpSettings,
};

use super::{Capacities, Dataplane, DataplaneError, PacketCounters, Result, settings::Family, sys};

/// The scopes of each destination port, one byte per port: bit `s` set
/// when scope `s` enforces bans on it.
#[derive(Clone, PartialEq, Eq)]
pub struct PortScopeTable(Box<[u8]>);

impl Default for PortScopeTable {
    fn default() -> Self {
        Self(vec![0; 1 << 16].into_boxed_slice())
    }
}

impl PortScopeTable {
    /// Adds `port` to the scopes `scopes`.
    pub fn add(&mut self, port: u16, scopes: u8) {
        self.0[usize::from(port)] |= scopes;
    }

    /// The scopes of `port`.
    pub fn get(&self, port: u16) -> u8 {
        self.0[usize::from(port)]
    }
}

impl std::fmt::Debug for PortScopeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports = self.0.iter().filter(|&&scopes| scopes != 0).count();
        write!(f, "PortScopeTable({ports} ports in a scope)")
    }
}

impl Dataplane {
    /// Writes the port scopes: `table` gives, for each destination port,
    /// the scopes (one bit each) that enforce bans on it; `all_traffic` the
    /// scopes that cover every packet. With no port in any scope and every
    /// scope covering all traffic, the program reads no port at all.
    ///
    /// The program switches to reading ports only once the table is
    /// written, and stops before it is cleared, so no packet sees half of it.
    pub fn set_port_scopes(&mut self, table: &PortScopeTable, all_traffic: u8) -> Result<()> {
        let ports_only = u32::from(table.0.iter().any(|&scopes| scopes != 0));
        let config = XdpConfig {
            ports_only,
            all_traffic: u32::from(all_traffic),
        };
        let settings = XdpSettings {
            ports_only,
            all_traffic: u32::from(all_traffic),
            ..self.settings
        };
        let map_error = |name| move |source| DataplaneError::Map { name, source };
        if ports_only == 0 {
            self.write_settings(settings)?;
            self.config
                .set(0, config, 0)
                .map_err(map_error(MAP_CONFIG))?;
        }
        for port in (0..=u16::MAX).step_by(8) {
            let (index, _) = xdp_common::port_scope_slot(port);
            let word = (port..=port.saturating_add(7))
                .map(|p| {
                    let (_, shift) = xdp_common::port_scope_slot(p);
                    u64::from(table.get(p)) << shift
                })
                .fold(0, |word, byte| word | byte);
            self.port_scopes
                .set(index, word, 0)
                .map_err(map_error(MAP_PORT_SCOPES))?;
        }
        if ports_only != 0 {
            self.write_settings(settings)?;
            self.config
                .set(0, config, 0)
                .map_err(map_error(MAP_CONFIG))?;
        }
        Ok(())
    }

    /// Enforces every ban on `ports` only (all traffic when empty): one
    /// scope, [`xdp_common::SCOPE_DEFAULT`].
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<()> {
        let mut table = PortScopeTable::default();
        for &port in ports {
            table.add(port, xdp_common::SCOPE_DEFAULT);
        }
        let all_traffic = if ports.is_empty() {
            xdp_common::SCOPE_DEFAULT
        } else {
            0
        };
        self.set_port_scopes(&table, all_traffic)
    }

    /// Stores a ban: single addresses in the LRU maps, wider prefixes in the
    /// tries. An existing entry is overwritten. A prefix is enforced as soon
    /// as this returns: the program is told to consult its trie first.
    pub fn insert(&mut self, net: IpNet, value: BanValue) -> Result<()> {
        if let Some(family) = Family::of_prefix(net) {
            self.expect_prefixes(family)?;
        }
        match net {
            IpNet::V4(net) if net.prefix_len() == 32 => self
                .bans_v4
                .insert(net.addr().octets(), value, 0)
                .map_err(|source| DataplaneError::Map {
                    name: MAP_BANS_V4,
                    source,
                }),
            IpNet::V6(net) if net.prefix_len() == 128 => self
                .bans_v6
                .insert(net.addr().octets(), value, 0)
                .map_err(|source| DataplaneError::Map {
                    name: MAP_BANS_V6,
                    source,
                }),
            IpNet::V4(net) => self
                .prefix_v4
                .insert(&v4_key(net), value, 0)
                .map_err(|source| DataplaneError::Map {
                    name: MAP_PREFIX_V4,
                    source,
                }),
            IpNet::V6(net) => self
                .prefix_v6
                .insert(&v6_key(net), value, 0)
                .map_err(|source| DataplaneError::Map {
                    name: MAP_PREFIX_V6,
                    source,
                }),
        }
    }

    /// Stores many bans with as few syscalls as the kernel allows
    /// (`BPF_MAP_UPDATE_BATCH` for single addresses).
    pub fn insert_many(&mut self, bans: &[(IpNet, BanValue)]) -> Result<()> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for &(net, value) in bans {
            match net {
                IpNet::V4(n) if n.prefix_len() == 32 => v4.push((n.addr().octets(), value)),
                IpNet::V6(n) if n.prefix_len() == 128 => v6.push((n.addr().octets(), value)),
                _ => self.insert(net, value)?,
            }
        }
        batch_update(&mut self.bans_v4, MAP_BANS_V4, &v4)?;
        batch_update(&mut self.bans_v6, MAP_BANS_V6, &v6)
    }

    /// Removes a ban; `false` when there was none for exactly this key.
    /// Once a trie is left empty the program skips it.
    pub fn remove(&mut self, net: IpNet) -> Result<bool> {
        let outcome = match net {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                (MAP_BANS_V4, self.bans_v4.remove(&n.addr().octets()))
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                (MAP_BANS_V6, self.bans_v6.remove(&n.addr().octets()))
            }
            IpNet::V4(n) => (MAP_PREFIX_V4, self.prefix_v4.remove(&v4_key(n))),
            IpNet::V6(n) => (MAP_PREFIX_V6, self.prefix_v6.remove(&v6_key(n))),
        };
        let removed = match outcome {
            (_, Ok(())) => true,
            (_, Err(MapError::KeyNotFound | MapError::ElementNotFound)) => false,
            (_, Err(MapError::SyscallError(e)))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                false
            }
            (name, Err(source)) => return Err(DataplaneError::Map { name, source }),
        };
        if removed && let Some(family) = Family::of_prefix(net) {
            self.forget_prefixes_if_none(family)?;
        }
        Ok(removed)
    }

    /// The ban stored for exactly this address or prefix.
    pub fn get(&self, net: IpNet) -> Result<Option<BanValue>> {
        let outcome = match net {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                (MAP_BANS_V4, self.bans_v4.get(&n.addr().octets(), 0))
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                (MAP_BANS_V6, self.bans_v6.get(&n.addr().octets(), 0))
            }
            IpNet::V4(n) => (MAP_PREFIX_V4, self.prefix_v4.get(&v4_key(n), 0)),
            IpNet::V6(n) => (MAP_PREFIX_V6, self.prefix_v6.get(&v6_key(n), 0)),
        };
        match outcome {
            (_, Ok(value)) => Ok(Some(value)),
            (_, Err(MapError::KeyNotFound | MapError::ElementNotFound)) => Ok(None),
            (name, Err(source)) => Err(DataplaneError::Map { name, source }),
        }
    }

    /// Every ban in the maps, expired or not.
    pub fn entries(&self) -> Result<Vec<(IpNet, BanValue)>> {
        let mut out = Vec::new();
        exact_entries(self.bans_v4.map(), MAP_BANS_V4, |key: [u8; 4], value| {
            out.push((IpNet::V4(Ipv4Net::from(Ipv4Addr::from(key))), value));
        })?;
        exact_entries(self.bans_v6.map(), MAP_BANS_V6, |key: [u8; 16], value| {
            out.push((IpNet::V6(Ipv6Net::from(Ipv6Addr::from(key))), value));
        })?;
        out.extend(self.prefix_entries()?);
        Ok(out)
    }

    /// The packet counters summed over all CPUs.
    pub fn counters(&self) -> Result<PacketCounters> {
        let mut totals = PacketCounters::default();
        for counter in Counter::ALL {
            let per_cpu =
                self.stats
                    .get(&counter.index(), 0)
                    .map_err(|source| DataplaneError::Map {
                        name: MAP_STATS,
                        source,
                    })?;
            *totals.slot(counter) = per_cpu.iter().sum();
        }
        Ok(totals)
    }

    /// The capacity each ban map was created with.
    pub fn capacities(&self) -> Result<Capacities> {
        let max = |name: &'static str, map: &MapData| {
            map.info()
                .map(|info| info.max_entries())
                .map_err(|source| DataplaneError::Map { name, source })
        };
        Ok(Capacities {
            v4: max(MAP_BANS_V4, self.bans_v4.map())?,
            v6: max(MAP_BANS_V6, self.bans_v6.map())?,
            prefix_v4: max(MAP_PREFIX_V4, self.prefix_v4.map())?,
            prefix_v6: max(MAP_PREFIX_V6, self.prefix_v6.map())?,
        })
    }
}

/// Entries per `BPF_MAP_UPDATE_BATCH` call: bounds each syscall's run time.
pub(super) const BATCH_CHUNK: usize = 65_536;

pub(super) fn batch_update<const N: usize>(
    map: &mut HashMap<MapData, [u8; N], BanValue>,
    name: &'static str,
    entries: &[([u8; N], BanValue)],
) -> Result<()> {
    for chunk in entries.chunks(BATCH_CHUNK) {
        let mut keys = Vec::with_capacity(chunk.len() * N);
        let mut values = Vec::with_capacity(chunk.len() * xdp_common::BAN_VALUE_SIZE);
        for (key, value) in chunk {
            keys.extend_from_slice(key);
            values.extend_from_slice(&value.to_ne_bytes());
        }
        let count = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        match sys::map_update_batch(map.map().fd().as_fd(), &keys, &values, count) {
            Ok(_) => {}
            // Kernels without batch updates for this map type: one by one.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                for (key, value) in chunk {
                    map.insert(key, value, 0)
                        .map_err(|source| DataplaneError::Map { name, source })?;
                }
            }
            Err(source) => {
                return Err(DataplaneError::Io {
                    operation: "BPF_MAP_UPDATE_BATCH on map",
                    path: PathBuf::from(name),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Walks an exact-address map in batches: two syscalls per thousands of
/// entries instead of two per entry.
pub(super) fn exact_entries<const N: usize>(
    map: &MapData,
    name: &'static str,
    mut each: impl FnMut([u8; N], BanValue),
) -> Result<()> {
    let value_size = xdp_common::BAN_VALUE_SIZE;
    sys::map_lookup_batch(map.fd().as_fd(), N, value_size, |keys, values| {
        for (key, value) in keys.chunks_exact(N).zip(values.chunks_exact(value_size)) {
            let mut addr = [0_u8; N];
            addr.copy_from_slice(key);
            let mut bytes = [0_u8; xdp_common::BAN_VALUE_SIZE];
            bytes.copy_from_slice(value);
            each(addr, BanValue::from_ne_bytes(&bytes));
        }
    })
    .map_err(|source| DataplaneError::Io {
        operation: "BPF_MAP_LOOKUP_BATCH on map",
        path: PathBuf::from(name),
        source,
    })
}

pub(super) fn v4_key(net: Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

pub(super) fn v6_key(net: Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

pub(super) fn prefix_len_u8(len: u32) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
}

pub(super) fn corrupt_key(name: &'static str) -> DataplaneError {
    DataplaneError::IncompatiblePin {
        path: PathBuf::from(name),
        detail: "holds a key with an impossible prefix length".to_owned(),
    }
}
