//! `spamwall run`: load the program, attach, serve the control socket.
//!
//! On SIGTERM or SIGINT the daemon stops serving and exits, leaving the
//! pinned program, maps and links in place: drops go on without it. SIGHUP
//! re-reads the configuration.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    bans::{
        BanEntry, BanError, BanLength, BanManager, BanPolicy, BanSink, Source, parse_target,
        target_to_string,
    },
    config::Config,
    control::{self, BackendStatus, BindError, Refusal, Request, Response, Status},
    dataplane::{self, Attachment, Dataplane, DataplaneError},
};

/// How often expired entries are deleted from the maps.
const SWEEP_INTERVAL: Duration = Duration::from_mins(1);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// State shared by the control handler, the sweeper and reload.
struct Shared {
    manager: Mutex<BanManager>,
    runtime: Mutex<Runtime>,
}

/// What the daemon knows about itself, for `status` and reload.
struct Runtime {
    config_path: PathBuf,
    config: Config,
    started_at: SystemTime,
    attachments: Vec<Attachment>,
}

impl Shared {
    fn manager(&self) -> MutexGuard<'_, BanManager> {
        self.manager.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn runtime(&self) -> MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BanSink for Shared {
    fn ban(
        &self,
        target: IpNet,
        length: BanLength,
        source: Source,
        reason: &str,
    ) -> Result<BanEntry, BanError> {
        let entry = self.manager().ban(target, length, source, reason)?;
        info!(
            target = %target_to_string(&entry.addr),
            source = %entry.source,
            reason = %entry.reason,
            count = entry.count,
            "banned"
        );
        Ok(entry)
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config_path: PathBuf, config: Config) -> Result<(), DaemonError> {
    let pin_dir = config.daemon.bpf_pin_dir.clone();
    let mut dataplane = Dataplane::load(&pin_dir, config.ban.capacities())?;
    dataplane.pin_program()?;
    dataplane.set_ports(&config.xdp.ports)?;
    let attachments = attach_all(&mut dataplane, &config)?;
    info!(
        program_id = dataplane.program_id().unwrap_or_default(),
        pin_dir = %pin_dir.display(),
        "XDP program loaded"
    );

    let manager = BanManager::new(dataplane, ban_policy(&config));
    let socket_path = config.daemon.control_socket.clone();
    let listener = control::bind(&socket_path)?;
    let shared = Arc::new(Shared {
        manager: Mutex::new(manager),
        runtime: Mutex::new(Runtime {
            config_path,
            config,
            started_at: SystemTime::now(),
            attachments,
        }),
    });

    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);

    let handler = {
        let shared = Arc::clone(&shared);
        Arc::new(move |request| handle(&shared, request))
    };
    let mut server_stop = stopped.clone();
    let server = tokio::spawn(control::serve(
        listener,
        socket_path.clone(),
        handler,
        async move {
            let _ = server_stop.wait_for(|stop| *stop).await.is_ok();
        },
    ));
    let sweeper = tokio::spawn(sweep_loop(Arc::clone(&shared), stopped));

    info!(socket = %socket_path.display(), "spamwall ready");
    notify_systemd("READY=1\nSTATUS=serving");

    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                let shared = Arc::clone(&shared);
                let _ = tokio::task::spawn_blocking(move || reload(&shared)).await;
            }
        }
    }
    info!("stopping; the XDP program, links and maps stay pinned and keep dropping");
    notify_systemd("STOPPING=1");
    let _ = stop.send(true);
    let _ = server.await;
    let _ = sweeper.await;
    Ok(())
}

fn ban_policy(config: &Config) -> BanPolicy {
    BanPolicy {
        allowlist: config.ban.allowlist.clone(),
        default_bantime: config.ban.bantime.0,
    }
}

/// Attaches to every configured interface and detaches the pinned links of
/// interfaces no longer configured.
fn attach_all(
    dataplane: &mut Dataplane,
    config: &Config,
) -> Result<Vec<Attachment>, DataplaneError> {
    let pin_dir = dataplane.pin_dir().to_owned();
    for (interface, _) in dataplane::pinned_links(&pin_dir)? {
        if !config.xdp.interfaces.contains(&interface) {
            dataplane::detach(&pin_dir, Some(&interface), false)?;
            info!(%interface, "detached: no longer in xdp.interfaces");
        }
    }
    if config.xdp.interfaces.is_empty() {
        warn!("xdp.interfaces is empty: bans are recorded but not enforced anywhere");
    }
    let mut attachments = Vec::new();
    for interface in &config.xdp.interfaces {
        let attachment = dataplane.attach(interface, config.xdp.mode)?;
        info!(
            interface = %attachment.interface,
            mode = %attachment.mode,
            kept_link = attachment.reused,
            "attached"
        );
        attachments.push(attachment);
    }
    Ok(attachments)
}

/// Re-reads the configuration; on any error the running one stays.
fn reload(shared: &Shared) {
    let path = shared.runtime().config_path.clone();
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            error!("reload refused, keeping the running configuration: {error}");
            return;
        }
    };
    let mut runtime = shared.runtime();
    let old = &runtime.config;
    if old.daemon.control_socket != config.daemon.control_socket
        || old.daemon.bpf_pin_dir != config.daemon.bpf_pin_dir
        || old.ban.capacities() != config.ban.capacities()
    {
        warn!("daemon paths and map capacities change only on restart");
    }
    let mut manager = shared.manager();
    manager.set_policy(ban_policy(&config));
    let dataplane = manager.dataplane_mut();
    let outcome = dataplane
        .set_ports(&config.xdp.ports)
        .and_then(|()| attach_all(dataplane, &config));
    match outcome {
        Ok(attachments) => {
            runtime.attachments = attachments;
            runtime.config = config;
            info!(config = %path.display(), "configuration reloaded");
        }
        Err(error) => error!("reload: {error}"),
    }
}

async fn sweep_loop(shared: Arc<Shared>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = async { stopped.wait_for(|stop| *stop).await.is_ok() } => return,
            _ = ticker.tick() => {
                let shared = Arc::clone(&shared);
                let swept = tokio::task::spawn_blocking(move || shared.manager().sweep()).await;
                match swept {
                    Ok(Ok(0)) => {}
                    Ok(Ok(removed)) => info!(removed, "expired bans removed from the maps"),
                    Ok(Err(error)) => warn!(%error, "sweeping expired bans failed"),
                    Err(error) => warn!(%error, "sweeper task failed"),
                }
            }
        }
    }
}

/// Answers one control request.
fn handle(shared: &Shared, request: Request) -> Response {
    match request {
        Request::Ban {
            targets,
            length,
            reason,
        } => {
            let mut banned = Vec::new();
            let mut refused = Vec::new();
            let mut manager = shared.manager();
            for target in targets {
                match parse_target(&target)
                    .and_then(|net| manager.ban(net, length, Source::Cli, &reason))
                {
                    Ok(entry) => {
                        info!(
                            target = %target_to_string(&entry.addr),
                            expires_at = %entry.expires_at.map_or_else(|| "never".to_owned(), |t| humantime::format_rfc3339_seconds(t).to_string()),
                            source = %entry.source,
                            reason = %entry.reason,
                            count = entry.count,
                            "banned"
                        );
                        banned.push(entry);
                    }
                    Err(error) => {
                        warn!(%target, %error, "ban refused");
                        refused.push(Refusal {
                            target,
                            reason: error.to_string(),
                        });
                    }
                }
            }
            Response::Banned { banned, refused }
        }
        Request::Unban { targets } => {
            let mut unbanned = Vec::new();
            let mut not_banned = Vec::new();
            let mut refused = Vec::new();
            let mut manager = shared.manager();
            for target in targets {
                match parse_target(&target).and_then(|net| Ok((net, manager.unban(net)?))) {
                    Ok((net, true)) => {
                        info!(target = %target_to_string(&net), "unbanned");
                        unbanned.push(target_to_string(&net));
                    }
                    Ok((net, false)) => not_banned.push(target_to_string(&net)),
                    Err(error) => refused.push(Refusal {
                        target,
                        reason: error.to_string(),
                    }),
                }
            }
            Response::Unbanned {
                unbanned,
                not_banned,
                refused,
            }
        }
        Request::List => match shared.manager().list() {
            Ok(bans) => Response::Bans { bans },
            Err(error) => Response::Error {
                message: error.to_string(),
            },
        },
        Request::Stats => match shared.manager().stats() {
            Ok(stats) => Response::Stats { stats },
            Err(error) => Response::Error {
                message: error.to_string(),
            },
        },
        Request::Status => match status(shared) {
            Ok(status) => Response::Status {
                status: Box::new(status),
            },
            Err(error) => Response::Error {
                message: error.to_string(),
            },
        },
    }
}

fn status(shared: &Shared) -> Result<Status, DataplaneError> {
    let runtime = shared.runtime();
    let manager = shared.manager();
    let dataplane = manager.dataplane();
    let capacities = dataplane.capacities()?;
    let stats = manager.stats()?;
    let interfaces = runtime.attachments.clone();
    let detail = if interfaces.is_empty() {
        "loaded, attached to no interface: bans are not enforced".to_owned()
    } else {
        let names: Vec<String> = interfaces
            .iter()
            .map(|a| format!("{} ({})", a.interface, a.mode))
            .collect();
        format!("attached to {}", names.join(", "))
    };
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        started_at: humantime::format_rfc3339_seconds(runtime.started_at).to_string(),
        config: runtime.config_path.display().to_string(),
        pin_dir: dataplane.pin_dir().display().to_string(),
        program_id: dataplane.program_id()?,
        backends: vec![BackendStatus {
            name: "xdp".to_owned(),
            active: !interfaces.is_empty(),
            detail,
        }],
        interfaces,
        ports: runtime.config.xdp.ports.clone(),
        bans_active: stats.bans_active,
        capacity_v4: capacities.v4,
        capacity_v6: capacities.v6,
        capacity_prefix_v4: capacities.prefix_v4,
        capacity_prefix_v6: capacities.prefix_v6,
        allowlist: manager.policy().allowlist.entries().to_vec(),
        default_bantime: runtime.config.ban.bantime.to_string(),
    })
}

/// Tells systemd (`Type=notify`) about the daemon's state; a no-op outside
/// systemd.
fn notify_systemd(state: &str) {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::SocketAddr};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let address = match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(Path::new(&path)),
    };
    let sent = address.and_then(|address| {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &address)
    });
    if let Err(error) = sent {
        warn!(%error, "sd_notify failed");
    }
}
