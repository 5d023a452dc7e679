//! The pin directory: bpffs, and pinned maps of the expected shape.

use std::{ffi::CString, fs, io, path::Path};

use aya::maps::MapData;
use tracing::{info, warn};
use xdp_common::{
    BAN_VALUE_SIZE_V1, Counter, MAP_BANS_V4, MAP_BANS_V6, MAP_PREFIX_V4, MAP_PREFIX_V6, MAP_STATS,
    MAPS, MapSpec,
};

use super::{BPF_FS_ROOT, Capacities, DataplaneError, Result};

/// `statfs` magic of the BPF filesystem.
pub(super) const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;

/// Rejects pinned maps whose type, key or value size differ from this
/// program's (an older, incompatible version); warns on capacity changes,
/// which apply only to maps created from now on. Maps an older version
/// made smaller are unpinned, and the program gets new ones: ban maps
/// whose values carry no hit counters (the bans come back from the store
/// when the daemon reconciles at start), and a counter map with fewer
/// counters (they restart from zero).
pub(super) fn check_pinned_maps(pin_dir: &Path, capacities: Capacities) -> Result<()> {
    for spec in &MAPS {
        let path = pin_dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let incompatible = |detail: String| DataplaneError::IncompatiblePin {
            path: path.clone(),
            detail,
        };
        let map = MapData::from_pin(&path).map_err(|e| incompatible(e.to_string()))?;
        let info = map.info().map_err(|e| incompatible(e.to_string()))?;
        let map_type = info.map_type().map_or(u32::MAX, |t| t as u32);
        if map_type == spec.map_type
            && info.key_size() == spec.key_size
            && outgrown(spec, info.value_size(), info.max_entries())
        {
            drop(map);
            fs::remove_file(&path).map_err(|e| incompatible(e.to_string()))?;
            info!(
                map = spec.name,
                value_size = info.value_size(),
                entries = info.max_entries(),
                "map of an older version unpinned: this version's is larger"
            );
            continue;
        }
        if map_type != spec.map_type
            || info.key_size() != spec.key_size
            || info.value_size() != spec.value_size
        {
            return Err(incompatible(format!(
                "type {map_type}, key {} bytes, value {} bytes; expected type {}, key {} bytes, value {} bytes",
                info.key_size(),
                info.value_size(),
                spec.map_type,
                spec.key_size,
                spec.value_size
            )));
        }
        let wanted = match spec.name {
            MAP_BANS_V4 => Some(capacities.v4),
            MAP_BANS_V6 => Some(capacities.v6),
            MAP_PREFIX_V4 => Some(capacities.prefix_v4),
            MAP_PREFIX_V6 => Some(capacities.prefix_v6),
            _ => None,
        };
        if let Some(wanted) = wanted
            && wanted != info.max_entries()
        {
            warn!(
                map = spec.name,
                pinned = info.max_entries(),
                configured = wanted,
                "pinned map keeps its capacity; the configured one applies after `spamwall xdp detach --purge`"
            );
        }
    }
    Ok(())
}

/// Whether a pinned map of `spec`'s type and key is one an older version
/// made smaller, to be replaced rather than refused.
fn outgrown(spec: &MapSpec, value_size: u32, max_entries: u32) -> bool {
    match spec.name {
        MAP_BANS_V4 | MAP_BANS_V6 | MAP_PREFIX_V4 | MAP_PREFIX_V6 => {
            value_size as usize == BAN_VALUE_SIZE_V1
        }
        MAP_STATS => value_size == spec.value_size && max_entries < Counter::COUNT,
        _ => false,
    }
}

/// Makes sure `pin_dir` lies on a bpffs, mounting one at `/sys/fs/bpf` when
/// the directory belongs there and nothing is mounted yet.
pub(super) fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let mut existing = pin_dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    if is_bpffs(existing) {
        return Ok(());
    }
    if !pin_dir.starts_with(BPF_FS_ROOT) {
        return Err(DataplaneError::NotBpffs {
            path: pin_dir.to_owned(),
        });
    }
    let root = Path::new(BPF_FS_ROOT);
    fs::create_dir_all(root).map_err(|source| DataplaneError::MountBpffs {
        path: pin_dir.to_owned(),
        source,
    })?;
    let source = c"bpf";
    let target = c"/sys/fs/bpf";
    // SAFETY: all pointers are NUL-terminated static strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::MountBpffs {
            path: pin_dir.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    info!(path = BPF_FS_ROOT, "mounted bpffs");
    Ok(())
}

pub(super) fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; zeroed is a valid initial state.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and output buffer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &raw mut buf) };
    rc == 0 && buf.f_type == BPF_FS_MAGIC
}

/// Kernels before 5.11 charge BPF memory to `RLIMIT_MEMLOCK`; later ones to
/// the cgroup. Raising the limit may be refused (no `CAP_SYS_RESOURCE`): fine.
pub(super) fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) };
}
