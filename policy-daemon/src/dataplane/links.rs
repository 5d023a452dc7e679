//! Attaching the program to interfaces through pinned links, and
//! detaching it.

use std::{
    ffi::CString,
    fmt, fs, io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::programs::{
    XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use xdp_common::{LINK_PIN_DIR, MAPS, PROGRAM_NAME, RETIRED_MAPS};

use super::{Dataplane, DataplaneError, Result, error_chain, program_mut, sys};

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

impl Dataplane {
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
            let name = self.program_name();
            let program = program_mut(&mut self.ebpf, name)?;
            match program.attach_to_if_index(ifindex, candidate.xdp_mode()) {
                Ok(link_id) => {
                    let link = program
                        .take_link(link_id)
                        .map_err(|source| DataplaneError::Program { name, source })?;
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

    pub(super) fn swap_program(&mut self, path: &Path) -> Result<()> {
        let pinned = PinnedLink::from_pin(path).map_err(|source| DataplaneError::Attach {
            interface: path.display().to_string(),
            detail: source.to_string(),
        })?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(|source| DataplaneError::Attach {
                interface: path.display().to_string(),
                detail: source.to_string(),
            })?;
        let name = self.program_name();
        let program = program_mut(&mut self.ebpf, name)?;
        let link_id = program
            .attach_to_link(link)
            .map_err(|source| DataplaneError::Program { name, source })?;
        // The pin keeps the link; this process holds no reference to it, so
        // `spamwall xdp detach` can release it.
        drop(program.take_link(link_id));
        Ok(())
    }
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
            for name in MAPS.iter().map(|spec| spec.name).chain(RETIRED_MAPS) {
                detached.maps |= remove_if_present(&pin_dir.join(name))?;
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

pub(super) fn interface_index(interface: &str) -> Result<u32> {
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
pub(super) fn link_pins(
    links_dir: &Path,
    interface: Option<&str>,
) -> Result<Vec<(PathBuf, AttachedMode)>> {
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
pub(super) fn link_pin_file(interface: &str, mode: AttachedMode) -> String {
    let encoded = interface.replace('%', "%25").replace('.', "%2E");
    format!("{encoded}:{mode}")
}

pub(super) fn link_pin_name(path: &Path) -> Option<(String, AttachedMode)> {
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

pub(super) fn detach_link_pin(path: &Path) -> Result<()> {
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

pub(super) fn remove_if_present(path: &Path) -> Result<bool> {
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
