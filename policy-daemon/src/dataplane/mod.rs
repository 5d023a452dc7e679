//! The kernel side: loading the XDP program, its pinned maps and links.
//!
//! This is the only module that speaks to the kernel's BPF subsystem. Maps
//! are pinned under the pin directory and reused on every start, so bans
//! survive daemon restarts; each interface gets one pinned link, so packets
//! keep being dropped while no daemon runs. A restart swaps the program in
//! place on the existing links (`BPF_LINK_UPDATE`): no packet sees a gap.

mod clock;
mod counters;
mod hits;
mod inspect;
mod links;
mod lookup;
mod maps;
mod pins;
mod reader;
mod settings;
mod sys;

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray},
    pin::PinError,
    programs::{ProgramError, Xdp},
};
#[cfg(any(test, feature = "test-support"))]
pub use sys::TestRun;
use xdp_common::{
    BanValue, DRY_RUN_PROGRAM_NAME, MAP_BANS_V4, MAP_BANS_V6, MAP_CONFIG, MAP_HIT_BATCH,
    MAP_PORT_SCOPES, MAP_PREFIX_V4, MAP_PREFIX_V6, MAP_STATS, MAPS, PROGRAM_NAME, SETTINGS_MAP,
    XdpConfig, XdpSettings,
};

/// The XDP object built from `xdp-ebpf`, embedded at compile time.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-ebpf"));

/// Where bpffs is conventionally mounted.
const BPF_FS_ROOT: &str = "/sys/fs/bpf";

/// Errors from the kernel side, each naming the object and the operation.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "{path} is not on a BPF filesystem and bpffs could not be mounted at {BPF_FS_ROOT}: {source} (needs CAP_SYS_ADMIN, or mount it first: mount -t bpf bpf {BPF_FS_ROOT})"
    )]
    MountBpffs { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not on a BPF filesystem; bpf_pin_dir must be below a bpffs mount such as {BPF_FS_ROOT}"
    )]
    NotBpffs { path: PathBuf },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "pinned map {path} does not fit this program ({detail}); `spamwall xdp detach --purge` removes it together with the bans it holds"
    )]
    IncompatiblePin { path: PathBuf, detail: String },
    #[error(
        "loading the XDP program: {} (needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, or root)",
        error_chain(source)
    )]
    Load { source: EbpfError },
    #[error("the XDP object has no map {name}")]
    MissingMap { name: &'static str },
    #[error("map {name}: {}", error_chain(source))]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("program {name}: {}", error_chain(source))]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("interface {interface} does not exist")]
    UnknownInterface { interface: String },
    #[error("attaching XDP to {interface}: {detail}")]
    Attach { interface: String, detail: String },
    #[error("reading {path}: {detail}")]
    Inspect { path: PathBuf, detail: String },
    #[error("reading the kernel clock for the XDP program: {detail}")]
    Clock { detail: String },
    #[error("pinning {path}: {}", error_chain(source))]
    Pin { path: PathBuf, source: PinError },
    #[cfg(any(test, feature = "test-support"))]
    #[error("BPF_PROG_TEST_RUN: {source}")]
    TestRun { source: io::Error },
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// Map sizes. A map that already exists keeps the size it was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    pub v4: u32,
    pub v6: u32,
    pub prefix_v4: u32,
    pub prefix_v6: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            v4: xdp_common::DEFAULT_CAPACITY,
            v6: xdp_common::DEFAULT_CAPACITY,
            prefix_v4: xdp_common::DEFAULT_PREFIX_CAPACITY,
            prefix_v6: xdp_common::DEFAULT_PREFIX_CAPACITY,
        }
    }
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    bans_v4: HashMap<MapData, [u8; 4], BanValue>,
    bans_v6: HashMap<MapData, [u8; 16], BanValue>,
    prefix_v4: LpmTrie<MapData, [u8; 4], BanValue>,
    prefix_v6: LpmTrie<MapData, [u8; 16], BanValue>,
    config: Array<MapData, XdpConfig>,
    port_scopes: Array<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    /// The program's global data, and what was last written to it.
    settings_map: Array<MapData, XdpSettings>,
    settings: XdpSettings,
    /// Whether the dry-run instance is the one attached and pinned.
    dry_run: bool,
    hit_batches: MapData,
}

impl fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the program into the kernel, reusing the maps pinned under
    /// `pin_dir` (creating and pinning those that are missing). Mounts bpffs
    /// at `/sys/fs/bpf` when the pin directory needs it and it is absent.
    /// Nothing is attached yet. The program skips the prefix tries found
    /// empty and reads no port until [`Dataplane::set_port_scopes`].
    pub fn load(pin_dir: &Path, capacities: Capacities) -> Result<Self> {
        ensure_bpffs(pin_dir)?;
        fs::create_dir_all(pin_dir).map_err(|source| DataplaneError::Io {
            operation: "creating pin directory",
            path: pin_dir.to_owned(),
            source,
        })?;
        check_pinned_maps(pin_dir, capacities)?;
        raise_memlock_limit();

        let mut loader = EbpfLoader::new();
        for spec in &MAPS {
            loader.map_pin_path(spec.name, pin_dir.join(spec.name));
        }
        loader
            .map_max_entries(MAP_BANS_V4, capacities.v4)
            .map_max_entries(MAP_BANS_V6, capacities.v6)
            .map_max_entries(MAP_PREFIX_V4, capacities.prefix_v4)
            .map_max_entries(MAP_PREFIX_V6, capacities.prefix_v6);
        let mut ebpf = loader
            .load(XDP_OBJECT)
            .map_err(|source| DataplaneError::Load { source })?;
        for name in [PROGRAM_NAME, DRY_RUN_PROGRAM_NAME] {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        // A program still attached keeps its own maps; only the names go.
        for name in xdp_common::RETIRED_MAPS {
            if remove_if_present(&pin_dir.join(name))? {
                tracing::info!(
                    map = name,
                    "removed the pin of a map this version no longer uses"
                );
            }
        }

        let (clock_scale, clock_offset) = clock::measure(&mut ebpf)?;
        let mut dataplane = Self {
            settings_map: take_map(&mut ebpf, SETTINGS_MAP)?,
            settings: XdpSettings {
                clock_scale,
                clock_offset,
                ..XdpSettings::default()
            },
            bans_v4: take_map(&mut ebpf, MAP_BANS_V4)?,
            bans_v6: take_map(&mut ebpf, MAP_BANS_V6)?,
            prefix_v4: take_map(&mut ebpf, MAP_PREFIX_V4)?,
            prefix_v6: take_map(&mut ebpf, MAP_PREFIX_V6)?,
            config: take_map(&mut ebpf, MAP_CONFIG)?,
            port_scopes: take_map(&mut ebpf, MAP_PORT_SCOPES)?,
            stats: take_map(&mut ebpf, MAP_STATS)?,
            hit_batches: match ebpf.take_map(MAP_HIT_BATCH) {
                Some(Map::PerCpuArray(data)) => data,
                _ => {
                    return Err(DataplaneError::MissingMap {
                        name: MAP_HIT_BATCH,
                    });
                }
            },
            ebpf,
            pin_dir: pin_dir.to_owned(),
            dry_run: false,
        };
        dataplane.mark_empty_tries()?;
        Ok(dataplane)
    }

    /// The directory holding the pins.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Pins the program in use (see [`Self::set_dry_run`]) as
    /// `<pin_dir>/xdp_spamwall`, replacing the pin of an older instance.
    pub fn pin_program(&mut self) -> Result<()> {
        let path = self.pin_dir.join(PROGRAM_NAME);
        remove_if_present(&path)?;
        let name = self.program_name();
        program_mut(&mut self.ebpf, name)?
            .pin(&path)
            .map_err(|source| DataplaneError::Pin { path, source })
    }

    /// Chooses the instance [`Self::attach`] attaches and
    /// [`Self::pin_program`] pins: with `on`, the dry run, which counts
    /// what it would drop and passes it. Links already attached keep
    /// their program until attached again.
    pub fn set_dry_run(&mut self, on: bool) {
        self.dry_run = on;
    }

    /// Whether the dry-run instance is the one in use.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The name of the instance in use.
    pub(super) fn program_name(&self) -> &'static str {
        if self.dry_run {
            DRY_RUN_PROGRAM_NAME
        } else {
            PROGRAM_NAME
        }
    }

    /// The kernel's id of the program in use.
    pub fn program_id(&self) -> Result<u32> {
        let name = self.program_name();
        let program = self.ebpf.program(name).ok_or(DataplaneError::Program {
            name,
            source: ProgramError::NotLoaded,
        })?;
        program
            .info()
            .map(|info| info.id())
            .map_err(|source| DataplaneError::Program { name, source })
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Runs the loaded program on one frame (`BPF_PROG_TEST_RUN`), against
    /// the live maps: counters move as for a real packet.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRun> {
        let name = self.program_name();
        let program = self.ebpf.program(name).ok_or(DataplaneError::Program {
            name,
            source: ProgramError::NotLoaded,
        })?;
        let fd = program
            .fd()
            .map_err(|source| DataplaneError::Program { name, source })?;
        sys::prog_test_run(std::os::fd::AsFd::as_fd(&fd), frame, repeat)
            .map_err(|source| DataplaneError::TestRun { source })
    }
}

#[cfg(any(test, feature = "test-support"))]
/// Runs any loaded XDP program, found by its kernel id, on one frame.
pub fn test_run_program_id(id: u32, frame: &[u8], repeat: u32) -> Result<TestRun> {
    let info = aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .find(|info| info.id() == id)
        .ok_or(DataplaneError::Program {
            name: "by id",
            source: ProgramError::NotLoaded,
        })?;
    let fd = info.fd().map_err(|source| DataplaneError::Program {
        name: "by id",
        source,
    })?;
    sys::prog_test_run(std::os::fd::AsFd::as_fd(&fd), frame, repeat)
        .map_err(|source| DataplaneError::TestRun { source })
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::Program {
            name,
            source: ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap { name })?;
    T::try_from(map).map_err(|source| DataplaneError::Map { name, source })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub use counters::PacketCounters;
pub use hits::{HitReader, Hits};
pub use inspect::{LinkStatus, MapStatus, XdpStatus, status};
use links::remove_if_present;
pub use links::{AttachMode, AttachedMode, Attachment, Detached, detach, pinned_links};
pub use lookup::MapHit;
pub use maps::PortScopeTable;
use pins::{check_pinned_maps, ensure_bpffs, raise_memlock_limit};
pub use reader::ExactMaps;
