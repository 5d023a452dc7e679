//! `spamwall xdp load` and `spamwall xdp status`: the pinned program without
//! the daemon.

use std::fmt::Write as _;

use super::{Failure, print_out};
use crate::{
    config::Config,
    dataplane::{self, AttachMode, AttachedMode, Dataplane, XdpStatus},
};

/// `--mode` of `xdp load`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ModeArg {
    Auto,
    Native,
    Skb,
}

impl From<ModeArg> for AttachMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Auto => Self::Auto,
            ModeArg::Native => Self::Native,
            ModeArg::Skb => Self::Skb,
        }
    }
}

/// Loads the program on the configuration's pin directory (reusing its
/// pinned maps and the bans in them), pins it, writes the port scopes of
/// `xdp.ports` and the rules, and attaches it to `interfaces` (default
/// `xdp.interfaces`) in `mode` (default `xdp.mode`), as the daemon does at
/// start. A daemon started later adopts the pins and swaps its own program
/// into the links.
pub fn load(config: &Config, interfaces: &[String], mode: Option<ModeArg>) -> Result<(), Failure> {
    let interfaces = if interfaces.is_empty() {
        config.xdp.interfaces.clone()
    } else {
        interfaces.to_vec()
    };
    if interfaces.is_empty() {
        return Err(Failure::usage(
            "no interface to attach to: name one with --iface IFACE, or set xdp.interfaces",
        ));
    }
    let mode = mode.map_or(config.xdp.mode, AttachMode::from);
    let pin_dir = &config.daemon.bpf_pin_dir;
    let runtime = |e: dataplane::DataplaneError| Failure::runtime(e.to_string());
    let mut dataplane = Dataplane::load(pin_dir, config.ban.capacities()).map_err(runtime)?;
    dataplane.pin_program().map_err(runtime)?;
    let (table, all_traffic) = config.port_scopes().unwrap_or_default().kernel_table();
    dataplane
        .set_port_scopes(&table, all_traffic)
        .map_err(runtime)?;
    let id = dataplane.program_id().map_err(runtime)?;
    let mut out = format!(
        "program {id} pinned as {}\n",
        pin_dir.join(xdp_common::PROGRAM_NAME).display()
    );
    for interface in &interfaces {
        let attachment = dataplane.attach(interface, mode).map_err(runtime)?;
        let how = if attachment.reused {
            "its pinned link kept, the program swapped in"
        } else {
            "new pinned link"
        };
        let _ = writeln!(
            out,
            "attached to {interface} in {} mode ({how})",
            attachment.mode
        );
    }
    // Links pinned before, to other interfaces, run this program too: one
    // program, one set of settings.
    let pinned = dataplane::pinned_links(pin_dir).map_err(runtime)?;
    for (interface, pinned_mode) in pinned {
        if interfaces.contains(&interface) {
            continue;
        }
        let keep = match pinned_mode {
            AttachedMode::Native => AttachMode::Native,
            AttachedMode::Skb => AttachMode::Skb,
        };
        match dataplane.attach(&interface, keep) {
            Ok(_) => {
                let _ = writeln!(out, "{interface} ({pinned_mode} mode) runs it too");
            }
            Err(error) => {
                let _ = writeln!(out, "{interface}: left as it was: {error}");
            }
        }
    }
    print_out(&out)
}

/// Prints what is pinned and attached, from the pins alone.
pub fn status(config: &Config, json: bool) -> Result<(), Failure> {
    let status = dataplane::status(&config.daemon.bpf_pin_dir)
        .map_err(|e| Failure::runtime(e.to_string()))?;
    if json {
        let text = serde_json::to_string(&status).map_err(|e| Failure::runtime(e.to_string()))?;
        return print_out(&format!("{text}\n"));
    }
    print_out(&human(&status))
}

fn human(status: &XdpStatus) -> String {
    let mut out = format!("pin directory: {}\n", status.pin_dir.display());
    match status.program_id {
        Some(id) => {
            let _ = writeln!(
                out,
                "program: id {id}, pinned as {}",
                xdp_common::PROGRAM_NAME
            );
        }
        None => out.push_str("program: none pinned\n"),
    }
    if status.links.is_empty() {
        out.push_str("attached: nowhere\n");
    } else {
        out.push_str("attached:\n");
        for link in &status.links {
            let _ = writeln!(
                out,
                "  {:<16} {:<6} link {:<6} program {}",
                link.interface, link.mode, link.link_id, link.program_id
            );
        }
    }
    if !status.maps.is_empty() {
        out.push_str("maps:\n");
        for map in &status.maps {
            let entries = map.entries.map_or_else(
                || format!("array of {}", map.max_entries),
                |n| format!("{n} of {} entries", map.max_entries),
            );
            let _ = writeln!(out, "  {:<16} id {:<6} {entries}", map.name, map.id);
        }
    }
    if let Some(counters) = &status.counters {
        out.push_str("counters:\n");
        for (counter, value) in counters.iter() {
            let _ = writeln!(out, "  {:<20} {value}", counter.name());
        }
    }
    out
}
