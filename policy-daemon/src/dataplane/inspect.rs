//! What is pinned under the pin directory and attached where, read through
//! the pins with the `bpf` system call only: nothing is loaded or changed,
//! and no daemon need run.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray},
    programs::{ProgramError, ProgramInfo, links::FdLink, links::PinnedLink},
};
use serde::{Deserialize, Serialize};
use xdp_common::{
    BanValue, Counter, LINK_PIN_DIR, MAP_BANS_V4, MAP_BANS_V6, MAP_PREFIX_V4, MAP_PREFIX_V6,
    MAP_STATS, MAPS, PROGRAM_NAME,
};

use super::{AttachedMode, DataplaneError, PacketCounters, Result, error_chain, links};

/// The pinned program, its links, its maps and its counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpStatus {
    pub pin_dir: PathBuf,
    /// The pinned program's kernel id, `None` when none is pinned.
    pub program_id: Option<u32>,
    pub links: Vec<LinkStatus>,
    pub maps: Vec<MapStatus>,
    /// `None` without a pinned counter map.
    pub counters: Option<PacketCounters>,
}

/// One pinned link: an interface the program is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub interface: String,
    pub mode: AttachedMode,
    pub link_id: u32,
    /// The program the link runs: the pinned one, or another when a
    /// different instance was swapped in.
    pub program_id: u32,
}

/// One pinned map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapStatus {
    pub name: String,
    pub id: u32,
    pub max_entries: u32,
    /// Entries present; `None` for arrays, which always hold `max_entries`.
    pub entries: Option<u64>,
}

fn denied(path: &Path, source: &io::Error) -> DataplaneError {
    DataplaneError::Inspect {
        path: path.to_owned(),
        detail: if source.raw_os_error() == Some(libc::EPERM)
            || source.kind() == io::ErrorKind::PermissionDenied
        {
            format!("{source} (reading pinned BPF objects needs CAP_BPF, or root)")
        } else {
            source.to_string()
        },
    }
}

fn program_error(path: &Path, error: &ProgramError) -> DataplaneError {
    chain_error(path, error)
}

fn map_error(path: &Path, error: &MapError) -> DataplaneError {
    chain_error(path, error)
}

/// `error` and its causes, with the privilege a permission error asks for.
fn chain_error(path: &Path, error: &dyn std::error::Error) -> DataplaneError {
    let text = error_chain(error);
    let hint = if text.contains("Operation not permitted") || text.contains("Permission denied") {
        " (reading pinned BPF objects needs CAP_BPF, or root)"
    } else {
        ""
    };
    DataplaneError::Inspect {
        path: path.to_owned(),
        detail: format!("{text}{hint}"),
    }
}

/// Reads what is pinned under `pin_dir`. A directory that does not exist
/// gives an empty status; one that cannot be read is an error saying so.
pub fn status(pin_dir: &Path) -> Result<XdpStatus> {
    let mut status = XdpStatus {
        pin_dir: pin_dir.to_owned(),
        ..XdpStatus::default()
    };
    match std::fs::read_dir(pin_dir) {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(status),
        Err(error) => return Err(denied(pin_dir, &error)),
    }
    let program = pin_dir.join(PROGRAM_NAME);
    if program.exists() {
        let info = ProgramInfo::from_pin(&program).map_err(|e| program_error(&program, &e))?;
        status.program_id = Some(info.id());
    }
    let links_dir = pin_dir.join(LINK_PIN_DIR);
    if links_dir.is_dir() {
        for (path, mode) in links::link_pins(&links_dir, None)? {
            let Some((interface, _)) = links::link_pin_name(&path) else {
                continue;
            };
            let pinned = PinnedLink::from_pin(&path).map_err(|e| DataplaneError::Inspect {
                path: path.clone(),
                detail: error_chain(&e),
            })?;
            let info = FdLink::from(pinned)
                .info()
                .map_err(|e| DataplaneError::Inspect {
                    path: path.clone(),
                    detail: error_chain(&e),
                })?;
            status.links.push(LinkStatus {
                interface,
                mode,
                link_id: info.id(),
                program_id: info.program_id(),
            });
        }
    }
    for spec in &MAPS {
        let path = pin_dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let data = MapData::from_pin(&path).map_err(|e| map_error(&path, &e))?;
        let info = data.info().map_err(|e| map_error(&path, &e))?;
        let (id, max_entries) = (info.id(), info.max_entries());
        let entries = count_entries(spec.name, data).map_err(|e| map_error(&path, &e))?;
        if spec.name == MAP_STATS {
            let data = MapData::from_pin(&path).map_err(|e| map_error(&path, &e))?;
            status.counters = Some(counters(data).map_err(|e| map_error(&path, &e))?);
        }
        status.maps.push(MapStatus {
            name: spec.name.to_owned(),
            id,
            max_entries,
            entries,
        });
    }
    Ok(status)
}

fn count_entries(name: &str, data: MapData) -> Result<Option<u64>, MapError> {
    fn count<I: Iterator<Item = Result<K, MapError>>, K>(keys: I) -> Result<u64, MapError> {
        let mut n = 0_u64;
        for key in keys {
            key?;
            n += 1;
        }
        Ok(n)
    }
    let counted = match name {
        MAP_BANS_V4 => {
            count(HashMap::<_, [u8; 4], BanValue>::try_from(Map::LruHashMap(data))?.keys())?
        }
        MAP_BANS_V6 => {
            count(HashMap::<_, [u8; 16], BanValue>::try_from(Map::LruHashMap(data))?.keys())?
        }
        MAP_PREFIX_V4 => {
            count(LpmTrie::<_, [u8; 4], BanValue>::try_from(Map::LpmTrie(data))?.keys())?
        }
        MAP_PREFIX_V6 => {
            count(LpmTrie::<_, [u8; 16], BanValue>::try_from(Map::LpmTrie(data))?.keys())?
        }
        _ => return Ok(None),
    };
    Ok(Some(counted))
}

fn counters(data: MapData) -> Result<PacketCounters, MapError> {
    let stats = PerCpuArray::<_, u64>::try_from(Map::PerCpuArray(data))?;
    let mut totals = PacketCounters::default();
    for counter in Counter::ALL {
        *totals.slot(counter) = stats.get(&counter.index(), 0)?.iter().sum();
    }
    Ok(totals)
}
