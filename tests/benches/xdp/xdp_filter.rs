//! xdp-filter (Debian's xdp-tools) in a private network namespace: loaded
//! on a veth in skb mode, its source filters filled through bpftool, and
//! everything it created removed on drop.

use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{BANNED_V4, BANNED_V6, millis, xdp_filter_entries};

/// Where xdp-filter pins its maps.
const XDP_FILTER_PIN_DIR: &str = "/sys/fs/bpf/xdp-filter";
/// Where libxdp keeps its own pins (dispatchers).
const LIBXDP_PIN_DIR: &str = "/sys/fs/bpf/xdp";

/// A private network namespace with a veth pair for xdp-filter to attach
/// to; removed on drop.
pub(super) struct XdpFilterSetup {
    netns: Netns,
    iface: String,
}

impl XdpFilterSetup {
    pub(super) fn start() -> Result<Self> {
        ensure!(
            !Path::new(XDP_FILTER_PIN_DIR).exists(),
            "{XDP_FILTER_PIN_DIR} exists: xdp-filter is in use on this host, not touching it"
        );
        let pid = std::process::id();
        let netns = Netns::create(&format!("spamwall-bench-{pid}"))?;
        let iface = format!("swb{pid}a");
        netns.run(&[
            "ip",
            "link",
            "add",
            &iface,
            "type",
            "veth",
            "peer",
            "name",
            &format!("swb{pid}b"),
        ])?;
        Ok(Self { netns, iface })
    }

    /// xdp-filter on the veth, filtering the two banned sources.
    pub(super) fn load(&self) -> Result<XdpFilter<'_>> {
        let filter = XdpFilter::load(&self.netns, &self.iface)?;
        filter.run(&["ip", "-m", "src", &BANNED_V4.to_string()])?;
        filter.run(&["ip", "-m", "src", &BANNED_V6.to_string()])?;
        Ok(filter)
    }
}

/// Fills both source filters of the loaded xdp-filter to
/// [`xdp_filter_entries`]; returns how many entries each then holds.
pub(super) fn fill_xdp_filter(report: &mut String) -> Result<(usize, usize)> {
    let started = Instant::now();
    let v4_fillers =
        (1..xdp_filter_entries()).map(|i| Ipv4Addr::from(0xC612_0000 | i).octets().to_vec()); // 198.18.0.0/15
    let held_v4 = fill_map("filter_ipv4", &BANNED_V4.octets(), v4_fillers)?;
    let v6_fillers = (1..xdp_filter_entries()).map(|i| {
        Ipv6Addr::from(0x2001_0db8_eeee_0000_0000_0000_0000_0000_u128 | u128::from(i))
            .octets()
            .to_vec()
    });
    let held_v6 = fill_map("filter_ipv6", &BANNED_V6.octets(), v6_fillers)?;
    writeln!(
        report,
        "xdp-filter: source filters filled to {held_v4} IPv4 + {held_v6} IPv6 entries in {}",
        millis(started.elapsed())
    )?;
    Ok((held_v4, held_v6))
}

/// Fills the pinned xdp-filter map `name` with `keys`, giving each the
/// value xdp-filter wrote for `model` (the mode bits for a source match).
/// Returns how many entries the map then holds.
fn fill_map(name: &str, model: &[u8], keys: impl Iterator<Item = Vec<u8>>) -> Result<usize> {
    let path = format!("{XDP_FILTER_PIN_DIR}/{name}");
    let dump: serde_json::Value = serde_json::from_str(&command(&[
        "bpftool", "-j", "map", "dump", "pinned", &path,
    ])?)
    .with_context(|| format!("parsing bpftool's dump of {path}"))?;
    let hex_bytes = |json: &serde_json::Value| -> Option<Vec<u8>> {
        json.as_array()?
            .iter()
            .map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
            .collect()
    };
    let value = dump
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| hex_bytes(&entry["key"]).as_deref() == Some(model))
        .and_then(|entry| hex_bytes(&entry["values"][0]["value"]))
        .with_context(|| format!("{path} has no entry for the address added through the CLI"))?;
    let hex = |bytes: &[u8]| {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, " {b:02x}");
            s
        })
    };
    let value_hex = hex(&value);
    let mut batch = tempfile::NamedTempFile::new().context("creating a bpftool batch file")?;
    for key in keys {
        writeln!(
            batch,
            "map update pinned {path} key hex{} value hex{value_hex}",
            hex(&key)
        )?;
    }
    batch.flush()?;
    command(&["bpftool", "batch", "file", &batch.path().to_string_lossy()])?;
    let dump: serde_json::Value = serde_json::from_str(&command(&[
        "bpftool", "-j", "map", "dump", "pinned", &path,
    ])?)?;
    Ok(dump.as_array().map_or(0, Vec::len))
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn command(argv: &[&str]) -> Result<String> {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("running {}", argv[0]))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str) -> Result<Self> {
        command(&["ip", "netns", "add", name])?;
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// Runs `argv` inside the namespace. `nsenter --net` keeps this mount
    /// namespace's /sys, and with it bpffs (`ip netns exec` would not).
    fn run(&self, argv: &[&str]) -> Result<String> {
        let netns = format!("--net=/run/netns/{}", self.name);
        let mut full = vec!["nsenter", netns.as_str()];
        full.extend_from_slice(argv);
        command(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = command(&["ip", "netns", "del", &self.name]) {
            eprintln!("cleanup: {error:#}");
        }
    }
}

/// xdp-filter loaded on one interface; unloaded on drop, with any pins it
/// left behind that did not exist before.
pub(super) struct XdpFilter<'a> {
    netns: &'a Netns,
    iface: String,
    created_libxdp_dir: bool,
}

impl<'a> XdpFilter<'a> {
    fn load(netns: &'a Netns, iface: &str) -> Result<Self> {
        let filter = Self {
            netns,
            iface: iface.to_owned(),
            created_libxdp_dir: !Path::new(LIBXDP_PIN_DIR).exists(),
        };
        // Policy allow: unmatched packets pass, filtered sources are dropped.
        filter.run(&[
            "load",
            "--mode",
            "skb",
            "--policy",
            "allow",
            "--features",
            "ipv4,ipv6",
            iface,
        ])?;
        Ok(filter)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let mut command_line = vec!["xdp-filter"];
        command_line.extend_from_slice(args);
        self.netns.run(&command_line)
    }

    /// The id and name of the program attached to the interface.
    pub(super) fn program(&self) -> Result<(u32, String)> {
        let json = self
            .netns
            .run(&["ip", "-j", "link", "show", "dev", &self.iface])?;
        let link: serde_json::Value =
            serde_json::from_str(&json).context("parsing `ip -j link show`")?;
        let prog = &link[0]["xdp"]["prog"];
        let id = prog["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .with_context(|| format!("no XDP program on {}: {json}", self.iface))?;
        Ok((id, prog["name"].as_str().unwrap_or("?").to_owned()))
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.run(&["unload", &self.iface]) {
            eprintln!("cleanup: {error:#}");
        }
        // The guard only exists when the directory did not before.
        if Path::new(XDP_FILTER_PIN_DIR).exists()
            && let Err(error) = fs::remove_dir_all(XDP_FILTER_PIN_DIR)
        {
            eprintln!("cleanup: removing {XDP_FILTER_PIN_DIR}: {error}");
        }
        if self.created_libxdp_dir && Path::new(LIBXDP_PIN_DIR).exists() {
            // Only if empty: another libxdp user may have pinned there since.
            let _ = fs::remove_dir(LIBXDP_PIN_DIR);
        }
    }
}
