//! Loading the XDP program and attaching it to the configured interfaces,
//! at start and on reload.

use tracing::{error, info, warn};

use crate::{
    bans::XdpBackend,
    config::Config,
    dataplane::{self, Attachment, Capacities, Dataplane, DataplaneError},
};

/// Loads, pins and attaches the XDP program. Failure is not fatal: the
/// daemon runs on without XDP and says why.
pub(super) fn start(config: &Config) -> (XdpBackend, Vec<Attachment>) {
    let pin_dir = &config.daemon.bpf_pin_dir;
    let loaded = Dataplane::load(pin_dir, config.ban.capacities()).and_then(|mut dataplane| {
        dataplane.set_dry_run(config.xdp.dry_run);
        dataplane.pin_program()?;
        let (table, all_traffic) = config.port_scopes().unwrap_or_default().kernel_table();
        dataplane.set_port_scopes(&table, all_traffic)?;
        Ok(dataplane)
    });
    let mut dataplane = match loaded {
        Ok(dataplane) => dataplane,
        Err(error) => {
            error!("XDP unavailable, bans are stored but not dropped in the kernel: {error}");
            let note = format!("unavailable: {error}");
            return (
                XdpBackend {
                    dataplane: None,
                    enforcing: false,
                    note,
                },
                Vec::new(),
            );
        }
    };
    info!(
        program_id = dataplane.program_id().unwrap_or_default(),
        pin_dir = %pin_dir.display(),
        "XDP program loaded"
    );
    if config.xdp.dry_run {
        warn_dry_run();
    }
    let (attachments, failures) = attach_all(&mut dataplane, config);
    let xdp = backend(dataplane, &attachments, &failures);
    (xdp, attachments)
}

fn warn_dry_run() {
    warn!(
        "XDP dry run ([xdp] dry_run = true): banned sources are counted (would_drop_v4, \
         would_drop_v6, and each ban's packets) and passed, not dropped"
    );
}

fn backend(dataplane: Dataplane, attachments: &[Attachment], failures: &[String]) -> XdpBackend {
    let enforcing = !attachments.is_empty();
    let mut parts: Vec<String> = Vec::new();
    if enforcing {
        let names: Vec<String> = attachments
            .iter()
            .map(|a| format!("{} ({})", a.interface, a.mode))
            .collect();
        parts.push(format!("attached to {}", names.join(", ")));
    } else if failures.is_empty() {
        parts.push(
            "loaded, attached to no interface (xdp.interfaces is empty): bans are not enforced"
                .to_owned(),
        );
    }
    parts.extend(failures.iter().cloned());
    XdpBackend {
        dataplane: Some(dataplane),
        enforcing,
        note: parts.join("; "),
    }
}

/// Attaches to every configured interface and detaches the pinned links of
/// interfaces no longer configured. Returns the attachments and a message
/// for each interface that failed.
pub(super) fn attach_all(
    dataplane: &mut Dataplane,
    config: &Config,
) -> (Vec<Attachment>, Vec<String>) {
    let pin_dir = dataplane.pin_dir().to_owned();
    let mut failures = Vec::new();
    match dataplane::pinned_links(&pin_dir) {
        Ok(pinned) => {
            for (interface, _) in pinned {
                if config.xdp.interfaces.contains(&interface) {
                    continue;
                }
                match dataplane::detach(&pin_dir, Some(&interface), false) {
                    Ok(_) => info!(%interface, "detached: no longer in xdp.interfaces"),
                    Err(error) => failures.push(error.to_string()),
                }
            }
        }
        Err(error) => failures.push(error.to_string()),
    }
    if config.xdp.interfaces.is_empty() {
        warn!("xdp.interfaces is empty: bans are recorded but not enforced anywhere");
    }
    let mut attachments = Vec::new();
    for interface in &config.xdp.interfaces {
        match dataplane.attach(interface, config.xdp.mode) {
            Ok(attachment) => {
                info!(
                    interface = %attachment.interface,
                    mode = %attachment.mode,
                    kept_link = attachment.reused,
                    "attached"
                );
                attachments.push(attachment);
            }
            Err(error) => {
                error!("{error}");
                failures.push(error.to_string());
            }
        }
    }
    (attachments, failures)
}

impl XdpBackend {
    /// Applies a reloaded configuration's interfaces (attaching new ones,
    /// detaching those no longer listed); the ban manager writes the port
    /// scopes with its settings. Returns the attachments now in place;
    /// nothing without a loaded program.
    pub(super) fn reconfigure(&mut self, config: &Config) -> Option<Vec<Attachment>> {
        let mut dataplane = self.dataplane.take()?;
        let switched = dataplane.dry_run() != config.xdp.dry_run;
        dataplane.set_dry_run(config.xdp.dry_run);
        // Attaching again swaps the instance on every kept link.
        let (attachments, failures) = attach_all(&mut dataplane, config);
        if switched {
            if config.xdp.dry_run {
                warn_dry_run();
            } else {
                info!("XDP dry run off: banned sources are dropped");
            }
            if let Err(error) = dataplane.pin_program() {
                error!("pinning the XDP program: {error}");
            }
        }
        *self = backend(dataplane, &attachments, &failures);
        Some(attachments)
    }

    /// The loaded program's id, the maps' capacities and the pin
    /// directory, for `status`; `None` without a loaded program.
    pub(super) fn program(&self) -> Result<Option<(u32, Capacities, String)>, DataplaneError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(None);
        };
        Ok(Some((
            dataplane.program_id()?,
            dataplane.capacities()?,
            dataplane.pin_dir().display().to_string(),
        )))
    }
}
