//! The kernel side: loading the XDP program, its pinned maps and links.
//!
//! This is the only module that speaks to the kernel's BPF subsystem. Maps
//! are pinned under the pin directory and reused on every start, so bans
//! survive daemon restarts; each interface gets one pinned link, so packets
//! keep being dropped while no daemon runs. A restart swaps the program in
//! place on the existing links (`BPF_LINK_UPDATE`): no packet sees a gap.

mod sys;

use std::{
    ffi::CString,
    fmt, fs, io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, HashMap, IterableMap as _, LpmTrie, Map, MapData, MapError, PerCpuArray,
        lpm_trie::Key,
    },
    pin::PinError,
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
pub use sys::TestRun;
use tracing::{info, warn};
use xdp_common::{
    BanValue, Counter, LINK_PIN_DIR, MAP_BANS_V4, MAP_BANS_V6, MAP_CONFIG, MAP_PORTS,
    MAP_PREFIX_V4, MAP_PREFIX_V6, MAP_STATS, MAPS, PORT_BITMAP_WORDS, PROGRAM_NAME, XdpConfig,
};

/// The XDP object built from `xdp-ebpf`, embedded at compile time.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-ebpf"));

/// `statfs` magic of the BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;
/// Where bpffs is conventionally mounted.
const BPF_FS_ROOT: &str = "/sys/fs/bpf";
/// Entries per `BPF_MAP_UPDATE_BATCH` call: bounds each syscall's run time.
const BATCH_CHUNK: usize = 65_536;

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
    #[error("program {PROGRAM_NAME}: {}", error_chain(source))]
    Program { source: ProgramError },
    #[error("interface {interface} does not exist")]
    UnknownInterface { interface: String },
    #[error("attaching XDP to {interface}: {detail}")]
    Attach { interface: String, detail: String },
    #[error("pinning {path}: {}", error_chain(source))]
    Pin { path: PathBuf, source: PinError },
    #[error("BPF_PROG_TEST_RUN: {source}")]
    TestRun { source: io::Error },
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// How to attach to an interface, as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Skb,
}

/// The mode an attachment actually runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    Native,
    Skb,
}

impl AttachedMode {
    const fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Skb => XdpMode::Skb,
        }
    }

    fn from_suffix(suffix: &str) -> Option<Self> {
        match suffix {
            "native" => Some(Self::Native),
            "skb" => Some(Self::Skb),
            _ => None,
        }
    }

    const fn suffix(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

impl AttachMode {
    const fn candidates(self) -> &'static [AttachedMode] {
        match self {
            Self::Auto => &[AttachedMode::Native, AttachedMode::Skb],
            Self::Native => &[AttachedMode::Native],
            Self::Skb => &[AttachedMode::Skb],
        }
    }

    fn accepts(self, mode: AttachedMode) -> bool {
        self.candidates().contains(&mode)
    }
}

/// One interface the program is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub interface: String,
    pub mode: AttachedMode,
    /// True when an existing pinned link was kept and its program swapped.
    pub reused: bool,
}

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

/// Sums of the per-CPU packet counters, one per [`Counter`]; serialized
/// as one member per counter, named by [`Counter::name`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounters([u64; Counter::COUNT as usize]);

impl PacketCounters {
    /// The value of one counter.
    pub const fn get(&self, counter: Counter) -> u64 {
        self.0[counter.index() as usize]
    }

    /// Every counter with its value, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().zip(self.0)
    }

    const fn slot(&mut self, counter: Counter) -> &mut u64 {
        &mut self.0[counter.index() as usize]
    }
}

impl Serialize for PacketCounters {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (counter, value) in self.iter() {
            map.serialize_entry(counter.name(), &value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PacketCounters {
    /// Reads the counters it knows by name; other members (those of a
    /// struct it is flattened into, or a newer daemon's) are ignored.
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Members;

        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = PacketCounters;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("packet counters by name")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<PacketCounters, A::Error> {
                let mut counters = PacketCounters::default();
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match Counter::ALL.into_iter().find(|c| c.name() == name) {
                        Some(counter) => *counters.slot(counter) = map.next_value()?,
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(counters)
            }
        }

        deserializer.deserialize_map(Members)
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
    ports: Array<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
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
    /// Nothing is attached yet.
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
        program_mut(&mut ebpf)?
            .load()
            .map_err(|source| DataplaneError::Program { source })?;

        Ok(Self {
            bans_v4: take_map(&mut ebpf, MAP_BANS_V4)?,
            bans_v6: take_map(&mut ebpf, MAP_BANS_V6)?,
            prefix_v4: take_map(&mut ebpf, MAP_PREFIX_V4)?,
            prefix_v6: take_map(&mut ebpf, MAP_PREFIX_V6)?,
            config: take_map(&mut ebpf, MAP_CONFIG)?,
            ports: take_map(&mut ebpf, MAP_PORTS)?,
            stats: take_map(&mut ebpf, MAP_STATS)?,
            ebpf,
            pin_dir: pin_dir.to_owned(),
        })
    }

    /// The directory holding the pins.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Pins the loaded program as `<pin_dir>/xdp_spamwall`, replacing the
    /// pin of an older instance.
    pub fn pin_program(&mut self) -> Result<()> {
        let path = self.pin_dir.join(PROGRAM_NAME);
        remove_if_present(&path)?;
        program_mut(&mut self.ebpf)?
            .pin(&path)
            .map_err(|source| DataplaneError::Pin { path, source })
    }

    /// The kernel's id of the loaded program.
    pub fn program_id(&self) -> Result<u32> {
        let program = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(DataplaneError::Program {
                source: ProgramError::NotLoaded,
            })?;
        program
            .info()
            .map(|info| info.id())
            .map_err(|source| DataplaneError::Program { source })
    }

    /// Attaches the program to `interface` and pins the link as
    /// `<pin_dir>/links/<interface>:<mode>`. An existing pinned link in an
    /// acceptable mode is kept and its program swapped atomically, so drops
    /// never pause across a restart.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<Attachment> {
        let ifindex = interface_index(interface)?;
        let links_dir = self.pin_dir.join(LINK_PIN_DIR);
        fs::create_dir_all(&links_dir).map_err(|source| DataplaneError::Io {
            operation: "creating link directory",
            path: links_dir.clone(),
            source,
        })?;

        for (path, pinned_mode) in link_pins(&links_dir, Some(interface))? {
            if mode.accepts(pinned_mode) {
                match self.swap_program(&path) {
                    Ok(()) => {
                        return Ok(Attachment {
                            interface: interface.to_owned(),
                            mode: pinned_mode,
                            reused: true,
                        });
                    }
                    Err(error) => {
                        warn!(link = %path.display(), %error, "pinned link is unusable, attaching anew");
                    }
                }
            } else {
                info!(%interface, from = %pinned_mode, "attach mode changed, replacing link");
            }
            detach_link_pin(&path)?;
        }

        let mut failures = Vec::new();
        for &candidate in mode.candidates() {
            let program = program_mut(&mut self.ebpf)?;
            match program.attach_to_if_index(ifindex, candidate.xdp_mode()) {
                Ok(link_id) => {
                    let link = program
                        .take_link(link_id)
                        .map_err(|source| DataplaneError::Program { source })?;
                    let fd_link = FdLink::try_from(link).map_err(|_| DataplaneError::Attach {
                        interface: interface.to_owned(),
                        detail: "the kernel attached through netlink, which cannot be pinned (needs Linux 5.9 or later)".to_owned(),
                    })?;
                    let path = links_dir.join(link_pin_file(interface, candidate));
                    fd_link
                        .pin(&path)
                        .map_err(|source| DataplaneError::Pin { path, source })?;
                    return Ok(Attachment {
                        interface: interface.to_owned(),
                        mode: candidate,
                        reused: false,
                    });
                }
                Err(error) => failures.push(format!("{candidate} mode: {}", error_chain(&error))),
            }
        }
        let hint = match mode {
            AttachMode::Native => "; try mode = \"skb\" or \"auto\"",
            _ => "; is another XDP program attached? (ip link show dev IFACE)",
        };
        Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            detail: format!("{}{hint}", failures.join("; ")),
        })
    }

    fn swap_program(&mut self, path: &Path) -> Result<()> {
        let pinned = PinnedLink::from_pin(path).map_err(|source| DataplaneError::Attach {
            interface: path.display().to_string(),
            detail: source.to_string(),
        })?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(|source| DataplaneError::Attach {
                interface: path.display().to_string(),
                detail: source.to_string(),
            })?;
        let program = program_mut(&mut self.ebpf)?;
        let link_id = program
            .attach_to_link(link)
            .map_err(|source| DataplaneError::Program { source })?;
        // The pin keeps the link; this process holds no reference to it, so
        // `spamwall xdp detach` can release it.
        drop(program.take_link(link_id));
        Ok(())
    }

    /// Writes the set of enforced destination ports; empty enforces bans on
    /// all traffic.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<()> {
        let mut bitmap = vec![0_u64; PORT_BITMAP_WORDS as usize];
        for &port in ports {
            let (word, bit) = xdp_common::port_slot(port);
            bitmap[word as usize] |= bit;
        }
        let ports_only = u32::from(!ports.is_empty());
        let map_error = |name| move |source| DataplaneError::Map { name, source };
        if ports_only == 0 {
            self.config
                .set(
                    0,
                    XdpConfig {
                        ports_only,
                        reserved: 0,
                    },
                    0,
                )
                .map_err(map_error(MAP_CONFIG))?;
        }
        for (index, word) in (0..).zip(bitmap) {
            self.ports
                .set(index, word, 0)
                .map_err(map_error(MAP_PORTS))?;
        }
        if ports_only != 0 {
            self.config
                .set(
                    0,
                    XdpConfig {
                        ports_only,
                        reserved: 0,
                    },
                    0,
                )
                .map_err(map_error(MAP_CONFIG))?;
        }
        Ok(())
    }

    /// Stores a ban: single addresses in the LRU maps, wider prefixes in the
    /// tries. An existing entry is overwritten.
    pub fn insert(&mut self, net: IpNet, value: BanValue) -> Result<()> {
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
        match outcome {
            (_, Ok(())) => Ok(true),
            (_, Err(MapError::KeyNotFound | MapError::ElementNotFound)) => Ok(false),
            (_, Err(MapError::SyscallError(e)))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            (name, Err(source)) => Err(DataplaneError::Map { name, source }),
        }
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

    /// Runs the loaded program on one frame (`BPF_PROG_TEST_RUN`), against
    /// the live maps: counters move as for a real packet.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRun> {
        let program = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(DataplaneError::Program {
                source: ProgramError::NotLoaded,
            })?;
        let fd = program
            .fd()
            .map_err(|source| DataplaneError::Program { source })?;
        sys::prog_test_run(fd.as_fd(), frame, repeat)
            .map_err(|source| DataplaneError::TestRun { source })
    }
}

/// Runs any loaded XDP program, found by its kernel id, on one frame.
pub fn test_run_program_id(id: u32, frame: &[u8], repeat: u32) -> Result<TestRun> {
    let info = aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .find(|info| info.id() == id)
        .ok_or(DataplaneError::Program {
            source: ProgramError::NotLoaded,
        })?;
    let fd = info
        .fd()
        .map_err(|source| DataplaneError::Program { source })?;
    sys::prog_test_run(fd.as_fd(), frame, repeat)
        .map_err(|source| DataplaneError::TestRun { source })
}

/// What `detach` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub interfaces: Vec<String>,
    pub program: bool,
    pub maps: bool,
}

/// Detaches pinned links without a running daemon: those of `interface`,
/// or all of them and the program pin when `interface` is `None`. With
/// `purge`, also removes the pinned maps and with them every ban.
pub fn detach(pin_dir: &Path, interface: Option<&str>, purge: bool) -> Result<Detached> {
    let mut detached = Detached::default();
    let links_dir = pin_dir.join(LINK_PIN_DIR);
    if links_dir.is_dir() {
        for (path, _mode) in link_pins(&links_dir, interface)? {
            detach_link_pin(&path)?;
            if let Some((name, _)) = link_pin_name(&path) {
                detached.interfaces.push(name);
            }
        }
    }
    if interface.is_none() {
        detached.program = remove_if_present(&pin_dir.join(PROGRAM_NAME))?;
        if purge {
            for spec in &MAPS {
                detached.maps |= remove_if_present(&pin_dir.join(spec.name))?;
            }
            for dir in [links_dir.as_path(), pin_dir] {
                if dir.is_dir() {
                    fs::remove_dir(dir).map_err(|source| DataplaneError::Io {
                        operation: "removing",
                        path: dir.to_owned(),
                        source,
                    })?;
                }
            }
        }
    }
    Ok(detached)
}

/// The interfaces with a pinned link, and their mode.
pub fn pinned_links(pin_dir: &Path) -> Result<Vec<(String, AttachedMode)>> {
    let links_dir = pin_dir.join(LINK_PIN_DIR);
    if !links_dir.is_dir() {
        return Ok(Vec::new());
    }
    Ok(link_pins(&links_dir, None)?
        .iter()
        .filter_map(|(path, _)| link_pin_name(path))
        .collect())
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

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(DataplaneError::Program {
            source: ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(|source| DataplaneError::Program { source })
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

fn batch_update<const N: usize>(
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
fn exact_entries<const N: usize>(
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

fn v4_key(net: Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

fn v6_key(net: Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

fn prefix_len_u8(len: u32) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
}

fn corrupt_key(name: &'static str) -> DataplaneError {
    DataplaneError::IncompatiblePin {
        path: PathBuf::from(name),
        detail: "holds a key with an impossible prefix length".to_owned(),
    }
}

fn interface_index(interface: &str) -> Result<u32> {
    let unknown = || DataplaneError::UnknownInterface {
        interface: interface.to_owned(),
    };
    let name = CString::new(interface).map_err(|_| unknown())?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(unknown())
    } else {
        Ok(index)
    }
}

/// Link pins in `links_dir`, optionally only those of one interface.
fn link_pins(links_dir: &Path, interface: Option<&str>) -> Result<Vec<(PathBuf, AttachedMode)>> {
    let entries = fs::read_dir(links_dir).map_err(|source| DataplaneError::Io {
        operation: "reading",
        path: links_dir.to_owned(),
        source,
    })?;
    let mut pins = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DataplaneError::Io {
            operation: "reading",
            path: links_dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if let Some((name, mode)) = link_pin_name(&path)
            && interface.is_none_or(|wanted| wanted == name)
        {
            pins.push((path, mode));
        }
    }
    pins.sort();
    Ok(pins)
}

/// `<interface>:<mode>`. bpffs refuses names with a dot, which VLAN
/// interfaces (`eth0.100`) have: `%` and `.` are percent-encoded.
fn link_pin_file(interface: &str, mode: AttachedMode) -> String {
    let encoded = interface.replace('%', "%25").replace('.', "%2E");
    format!("{encoded}:{mode}")
}

fn link_pin_name(path: &Path) -> Option<(String, AttachedMode)> {
    let file = path.file_name()?.to_str()?;
    let (encoded, suffix) = file.rsplit_once(':')?;
    let mut name = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        name.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        name.push(match escape {
            "%2E" => '.',
            "%25" => '%',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    Some((name, AttachedMode::from_suffix(suffix)?))
}

fn detach_link_pin(path: &Path) -> Result<()> {
    // Detach explicitly: removing the pin alone leaves the link attached
    // while any other process still holds a descriptor to it.
    if let Ok(link) = sys::obj_get(path)
        && let Err(error) = sys::link_detach(link.as_fd())
        // ENOLINK: the interface is gone and the link with it.
        && error.raw_os_error() != Some(libc::ENOLINK)
    {
        warn!(link = %path.display(), %error, "BPF_LINK_DETACH failed; removing the pin");
    }
    remove_if_present(path).map(drop)
}

fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DataplaneError::Io {
            operation: "removing",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Rejects pinned maps whose type, key or value size differ from this
/// program's (an older, incompatible version); warns on capacity changes,
/// which apply only to maps created from now on.
fn check_pinned_maps(pin_dir: &Path, capacities: Capacities) -> Result<()> {
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

/// Makes sure `pin_dir` lies on a bpffs, mounting one at `/sys/fs/bpf` when
/// the directory belongs there and nothing is mounted yet.
fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
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

fn is_bpffs(path: &Path) -> bool {
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
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip_without_dots() {
        for interface in ["eth0", "eth0.100", "odd%name.x", "%2E"] {
            for mode in [AttachedMode::Native, AttachedMode::Skb] {
                let file = link_pin_file(interface, mode);
                assert!(!file.contains('.'), "{file} has a dot, which bpffs refuses");
                let parsed = link_pin_name(Path::new(&file));
                assert_eq!(parsed, Some((interface.to_owned(), mode)), "{file}");
            }
        }
        assert_eq!(link_pin_name(Path::new("eth0:turbo")), None);
        assert_eq!(link_pin_name(Path::new("bad%zz:skb")), None);
    }
}
