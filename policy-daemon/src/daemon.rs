//! `spamwall run`: open the store, load and attach the XDP program, serve
//! the control socket.
//!
//! On SIGTERM or SIGINT the daemon stops serving and exits, leaving the
//! pinned program, maps and links in place: drops go on without it. SIGHUP
//! re-reads the configuration. When XDP cannot be used (no privilege, no
//! such interface, the load fails), the daemon still runs: bans are stored
//! and go to the other backends, and `status` says why XDP is inactive.

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
        BanEntry, BanError, BanLength, BanManager, BanRequest, BanSink, Breadth, Fail2banLink,
        Source, XdpBackend,
        fail2ban::Fail2banBackend,
        parse_target,
        store::{Store, StoreError},
        target_to_string,
    },
    config::{Backend, Config, Fail2banConfig},
    control::{self, BackendStatus, BindError, Refusal, Request, Response, Status},
    dataplane::{self, Attachment, Dataplane, DataplaneError},
};

/// How often the maps are reconciled with the store and history purged.
const MAINTENANCE_INTERVAL: Duration = Duration::from_mins(1);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bans(#[from] BanError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Fail2ban(#[from] crate::bans::fail2ban::Fail2banBackendError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// State shared by the control handler, verdict sources, maintenance and
/// reload.
struct Shared {
    manager: Mutex<BanManager>,
    runtime: Mutex<Runtime>,
    policy_stats: Arc<crate::policy::PolicyStats>,
    fleet: Option<Arc<crate::fleet::Fleet>>,
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
        let entry = self.manager().ban(BanRequest {
            target,
            length,
            source,
            reason: reason.to_owned(),
            detail: String::new(),
        })?;
        log_ban(&entry);
        Ok(entry)
    }
}

impl crate::fleet::FleetTarget for Shared {
    fn ban_remote(&self, requests: Vec<BanRequest>) -> usize {
        self.manager()
            .ban_many(requests)
            .into_iter()
            .flatten()
            .count()
    }

    fn unban_remote(&self, target: IpNet) {
        if let Err(error) = self.manager().unban_remote(target) {
            warn!(%error, "fleet unban failed");
        }
    }
}

/// Starts the fleet link and waits for its first resync (or first failure)
/// so the daemon reports ready with the fleet's bans in place.
async fn start_fleet(
    shared: &Arc<Shared>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let fleet = shared.fleet.clone()?;
    let (ready, resynced) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(crate::fleet::run(
        fleet,
        Arc::clone(shared) as Arc<dyn crate::fleet::FleetTarget>,
        stopped,
        ready,
    ));
    let _ = resynced.await;
    Some(task)
}

fn log_ban(entry: &BanEntry) {
    info!(
        target = %target_to_string(&entry.addr),
        expires_at = %entry.expires_at.map_or_else(|| "never".to_owned(), crate::clock::rfc3339),
        source = %entry.source,
        reason = %entry.reason,
        count = entry.count,
        "banned"
    );
}

/// Runs the daemon until SIGTERM or SIGINT.
#[expect(
    clippy::too_many_lines,
    reason = "the start and stop sequence reads best in one place"
)]
pub async fn run(config_path: PathBuf, config: Config) -> Result<(), DaemonError> {
    // The control socket first: a second daemon on the same configuration
    // must stop here, before it touches the store, the maps or the links.
    let socket_path = config.daemon.control_socket.clone();
    let listener = control::bind(&socket_path)?;
    for warning in config.warnings() {
        warn!("{warning}");
    }
    crate::listen::ensure_fd_budget(if config.policy.serves() {
        config.policy.max_connections
    } else {
        0
    });
    let store = Arc::new(Store::open_in(&config.daemon.state_dir)?);
    let (xdp, attachments) = if config.ban.backends.contains(&Backend::Xdp) {
        start_xdp(&config)
    } else {
        let note = "not in ban.backends".to_owned();
        (
            XdpBackend {
                dataplane: None,
                enforcing: false,
                note,
            },
            Vec::new(),
        )
    };
    let fail2ban = start_fail2ban(&config, &store)?;
    let mut manager = BanManager::new(store, xdp, fail2ban, config.ban.policy())?;
    // The jail itself is compared with the store by the fail2ban task as
    // soon as it starts.
    manager.track_fail2ban_expiries();
    let report = manager.reconcile(true);
    if report.restored + report.removed + report.corrected > 0 {
        info!(
            restored = report.restored,
            removed = report.removed,
            corrected = report.corrected,
            "kernel maps brought in line with the store"
        );
    }
    let fleet = match config.fleet.clone() {
        Some(section) => {
            let fleet = crate::fleet::Fleet::new(section, Arc::clone(manager.store()))?;
            manager.set_observer(fleet.observer());
            Some(fleet)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        manager: Mutex::new(manager),
        runtime: Mutex::new(Runtime {
            config_path,
            config,
            started_at: SystemTime::now(),
            attachments,
        }),
        policy_stats: Arc::default(),
        fleet,
    });

    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);

    // Before the control socket answers: a node reports ready with the
    // fleet's active bans in place.
    let fleet_task = start_fleet(&shared, stopped.clone()).await;
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
    let metrics_listen = shared.runtime().config.metrics.listen.clone();
    let metrics = match metrics_listen {
        Some(addr) => Some(start_metrics(&addr, &shared, stopped.clone()).await?),
        None => None,
    };
    let policy_config = shared.runtime().config.policy.clone();
    let policy = crate::policy::PolicyServer::start(
        &policy_config,
        Arc::clone(&shared) as Arc<dyn BanSink>,
        Arc::clone(&shared.policy_stats),
        stopped.clone(),
    )
    .await?;
    let fail2ban_task = fail2ban_interval(&shared.runtime().config)
        .map(|every| tokio::spawn(fail2ban_loop(Arc::clone(&shared), stopped.clone(), every)));
    let maintenance = tokio::spawn(maintenance_loop(Arc::clone(&shared), stopped));
    let logwatch = {
        let config = shared.runtime().config.logwatch.clone();
        let store = Arc::clone(shared.manager().store());
        let sink = Arc::clone(&shared) as Arc<dyn BanSink>;
        tokio::task::spawn_blocking(move || crate::logwatch::Watcher::start(&config, &store, &sink))
            .await
            .unwrap_or_default()
    };

    info!(socket = %socket_path.display(), "spamwall ready");
    notify_systemd("READY=1\nSTATUS=serving");

    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                let reloading = Arc::clone(&shared);
                let _ = tokio::task::spawn_blocking(move || reload(&reloading)).await;
                let policy_config = shared.runtime().config.policy.clone();
                policy.reload(&policy_config, Arc::clone(&shared) as Arc<dyn BanSink>);
                if logwatch.is_active() {
                    info!("logwatch changes apply on restart");
                }
            }
        }
    }
    info!("stopping; the XDP program, links and maps stay pinned and keep dropping");
    notify_systemd("STOPPING=1");
    let _ = stop.send(true);
    let _ = server.await;
    policy.stopped().await;
    let _ = maintenance.await;
    if let Some(task) = fail2ban_task {
        let _ = task.await;
    }
    let _ = tokio::task::spawn_blocking(move || logwatch.stop()).await;
    if let Some(task) = fleet_task {
        let _ = task.await;
    }
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    Ok(())
}

async fn start_metrics(
    addr: &str,
    shared: &Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let handle = crate::metrics::install()?;
    let listener = crate::metrics::bind(addr).await?;
    let refresh = {
        let shared = Arc::clone(shared);
        Arc::new(move || {
            let manager = shared.manager();
            crate::metrics::record_snapshot(&manager.stats(), &backends(&manager));
            if let Some(fleet) = &shared.fleet {
                fleet.record_gauges();
            }
        })
    };
    info!(%addr, "metrics at http://{addr}/metrics");
    Ok(tokio::spawn(crate::metrics::serve(
        listener,
        handle,
        refresh,
        async move {
            let _ = stopped.wait_for(|stop| *stop).await.is_ok();
        },
    )))
}

/// Every backend and its health, for `status` and metrics.
fn backends(manager: &BanManager) -> Vec<BackendStatus> {
    let xdp = manager.xdp();
    let mut backends = vec![BackendStatus {
        name: "xdp".to_owned(),
        active: xdp.enforcing,
        detail: xdp.note.clone(),
        queue_depth: None,
    }];
    if let Some(link) = manager.fail2ban() {
        let health = link.backend.health();
        let settings = link.backend.settings();
        let role = match (link.always, manager.fail2ban_active()) {
            (true, _) => "backend".to_owned(),
            (false, true) => "fallback, in use because XDP is not enforcing".to_owned(),
            (false, false) => "fallback, idle while XDP enforces".to_owned(),
        };
        let connection = if health.connected {
            format!(
                "connected to {} jail {}",
                settings.socket.display(),
                settings.jail
            )
        } else {
            format!(
                "not connected to {} ({})",
                settings.socket.display(),
                health.last_error.as_deref().unwrap_or("not tried yet")
            )
        };
        backends.push(BackendStatus {
            name: "fail2ban".to_owned(),
            active: manager.fail2ban_active(),
            detail: format!(
                "{role}; {connection}; {} queued, {} delivered, {} errors, {} rejected",
                health.queue_depth, health.delivered, health.errors, health.rejected
            ),
            queue_depth: Some(health.queue_depth),
        });
    }
    backends
}

/// Starts the fail2ban backend when `ban.backends` names it or a
/// `[fail2ban]` section asks for it as the fallback.
fn start_fail2ban(
    config: &Config,
    store: &Arc<Store>,
) -> Result<Option<Fail2banLink>, DaemonError> {
    let always = config.ban.backends.contains(&Backend::Fail2ban);
    let section = match (&config.fail2ban, always) {
        (Some(section), _) => section.clone(),
        (None, true) => Fail2banConfig::default(),
        (None, false) => return Ok(None),
    };
    let backend = Fail2banBackend::start(section.settings(), Arc::clone(store))?;
    info!(
        socket = %section.socket.display(),
        jail = %section.jail,
        role = if always { "backend" } else { "fallback" },
        "fail2ban backend started"
    );
    Ok(Some(Fail2banLink { backend, always }))
}

/// Loads, pins and attaches the XDP program. Failure is not fatal: the
/// daemon runs on without XDP and says why.
fn start_xdp(config: &Config) -> (XdpBackend, Vec<Attachment>) {
    let pin_dir = &config.daemon.bpf_pin_dir;
    let loaded = Dataplane::load(pin_dir, config.ban.capacities()).and_then(|mut dataplane| {
        dataplane.pin_program()?;
        dataplane.set_ports(&config.xdp.ports)?;
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
    let (attachments, failures) = attach_all(&mut dataplane, config);
    let xdp = xdp_backend(dataplane, &attachments, &failures);
    (xdp, attachments)
}

fn xdp_backend(
    dataplane: Dataplane,
    attachments: &[Attachment],
    failures: &[String],
) -> XdpBackend {
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
fn attach_all(dataplane: &mut Dataplane, config: &Config) -> (Vec<Attachment>, Vec<String>) {
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
    if old.daemon != config.daemon || old.ban.capacities() != config.ban.capacities() {
        warn!("[daemon] paths and map capacities change only on restart");
    }
    let mut manager = shared.manager();
    let fail2ban_was_active = manager.fail2ban_active();
    manager.set_policy(config.ban.policy());
    if let Some(mut dataplane) = manager.xdp_mut().dataplane.take() {
        if let Err(error) = dataplane.set_ports(&config.xdp.ports) {
            error!("reload: setting ports: {error}");
        }
        let (attachments, failures) = attach_all(&mut dataplane, &config);
        *manager.xdp_mut() = xdp_backend(dataplane, &attachments, &failures);
        runtime.attachments = attachments;
    }
    if manager.fail2ban_active() && !fail2ban_was_active {
        warn!("XDP no longer enforces: bans go to the fail2ban fallback");
        manager.sync_fail2ban();
    }
    runtime.config = config;
    info!(config = %path.display(), "configuration reloaded");
}

async fn maintenance_loop(shared: Arc<Shared>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = async { stopped.wait_for(|stop| *stop).await.is_ok() } => return,
            _ = ticker.tick() => {
                let shared = Arc::clone(&shared);
                let _ = tokio::task::spawn_blocking(move || maintain(&shared)).await;
            }
        }
    }
}

/// How often the fail2ban jail is reconciled, when there is a fail2ban
/// backend.
fn fail2ban_interval(config: &Config) -> Option<Duration> {
    match (
        &config.fail2ban,
        config.ban.backends.contains(&Backend::Fail2ban),
    ) {
        (Some(section), _) => Some(section.reconcile_interval.0),
        (None, true) => Some(Fail2banConfig::default().reconcile_interval.0),
        (None, false) => None,
    }
}

/// Ends fail2ban bans when they expire (checked every second) and
/// reconciles the jail with the store at start and every `every`.
async fn fail2ban_loop(
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconcile_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = async { stopped.wait_for(|stop| *stop).await.is_ok() } => return,
            _ = ticker.tick() => {}
        }
        let due = tokio::time::Instant::now() >= reconcile_at;
        let worker = Arc::clone(&shared);
        let outcome = tokio::task::spawn_blocking(move || {
            worker.manager().expire_fail2ban();
            due.then(|| reconcile_fail2ban(&worker))
        })
        .await;
        // A deferred check (the queue was still draining) is tried again
        // at the next tick.
        if let Ok(Some(JailCheck::Done | JailCheck::Failed)) = outcome {
            reconcile_at = tokio::time::Instant::now() + every;
        }
    }
}

/// How a jail reconciliation went.
enum JailCheck {
    Done,
    /// Operations were still queued; comparing now would see them as
    /// missing or stray.
    Deferred,
    Failed,
}

/// Reads the jail's entries (outside the manager's lock) and brings it in
/// line with the store.
fn reconcile_fail2ban(shared: &Shared) -> JailCheck {
    let settings = {
        let manager = shared.manager();
        let Some(link) = manager.fail2ban() else {
            return JailCheck::Done;
        };
        if link.backend.health().queue_depth > 0 {
            return JailCheck::Deferred;
        }
        link.backend.settings().clone()
    };
    let mut client = crate::bans::fail2ban::Fail2banClient::new(&settings.socket, settings.timeout);
    let entries = match client.banned(&settings.jail) {
        Ok(entries) => entries,
        Err(error) => {
            warn!(%error, "reading the fail2ban jail failed; reconciliation retries later");
            return JailCheck::Failed;
        }
    };
    client.disconnect();
    let report = shared.manager().reconcile_fail2ban(&entries);
    if report.resent + report.lifted > 0 {
        info!(
            jail = %settings.jail,
            resent = report.resent,
            lifted = report.lifted,
            foreign = report.foreign,
            "fail2ban jail brought in line with the store"
        );
    }
    JailCheck::Done
}

/// Reconciles the maps with the store and purges old history.
fn maintain(shared: &Shared) {
    let mut manager = shared.manager();
    let report = manager.reconcile(false);
    if report.removed + report.corrected > 0 {
        info!(
            removed = report.removed,
            corrected = report.corrected,
            "kernel maps brought in line with the store"
        );
    }
    match manager.purge() {
        Ok(0) => {}
        Ok(purged) => info!(purged, "old ban history purged"),
        Err(error) => warn!(%error, "purging ban history failed"),
    }
}

/// Answers one control request.
fn handle(shared: &Shared, request: Request) -> Response {
    match request {
        Request::Ban {
            targets,
            length,
            reason,
            force,
        } => {
            let (banned, refused) = ban_targets(shared, targets, length, &reason, breadth(force));
            Response::Banned { banned, refused }
        }
        Request::BanBulk {
            targets,
            length,
            reason,
            force,
        } => ban_bulk(shared, targets, length, &reason, breadth(force)),
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
        Request::List => Response::Bans {
            bans: shared.manager().list(),
        },
        Request::Stats => {
            let mut stats = shared.manager().stats();
            stats.policy_requests = shared.policy_stats.requests();
            Response::Stats { stats }
        }
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

/// `ban --file`: one batch, answered with a count.
/// How wide a command-line ban may be.
const fn breadth(force: bool) -> Breadth {
    if force {
        Breadth::Forced
    } else {
        Breadth::Bounded
    }
}

fn ban_bulk(
    shared: &Shared,
    targets: Vec<String>,
    length: BanLength,
    reason: &str,
    breadth: Breadth,
) -> Response {
    tracing::debug!(targets = targets.len(), "bulk ban request parsed");
    let mut refused = Vec::new();
    let mut nets = Vec::with_capacity(targets.len());
    let mut texts = Vec::with_capacity(targets.len());
    for target in targets {
        match parse_target(&target) {
            Ok(net) => {
                nets.push(net);
                texts.push(target);
            }
            Err(error) => refused.push(Refusal {
                target,
                reason: error.to_string(),
            }),
        }
    }
    let (banned, rejected) = shared
        .manager()
        .ban_bulk(&nets, length, Source::Cli, reason, breadth);
    for (i, error) in rejected {
        refused.push(Refusal {
            target: std::mem::take(&mut texts[i]),
            reason: error.to_string(),
        });
    }
    info!(banned, refused = refused.len(), %reason, "bulk ban");
    Response::BulkBanned {
        banned: banned as u64,
        refused,
    }
}

/// Bans command-line targets through the manager in one batch.
fn ban_targets(
    shared: &Shared,
    targets: Vec<String>,
    length: BanLength,
    reason: &str,
    breadth: Breadth,
) -> (Vec<BanEntry>, Vec<Refusal>) {
    let mut refused = Vec::new();
    let mut requests = Vec::with_capacity(targets.len());
    let mut texts = Vec::with_capacity(targets.len());
    for target in targets {
        match parse_target(&target) {
            Ok(net) => {
                requests.push(BanRequest {
                    target: net,
                    length,
                    source: Source::Cli,
                    reason: reason.to_owned(),
                    detail: String::new(),
                });
                texts.push(target);
            }
            Err(error) => refused.push(Refusal {
                target,
                reason: error.to_string(),
            }),
        }
    }
    let count = requests.len();
    let results = shared.manager().ban_many_as(requests, breadth);
    let mut banned = Vec::with_capacity(count);
    for (target, result) in texts.into_iter().zip(results) {
        match result {
            Ok(entry) => {
                log_ban(&entry);
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
    (banned, refused)
}

fn status(shared: &Shared) -> Result<Status, DataplaneError> {
    let runtime = shared.runtime();
    let manager = shared.manager();
    let xdp = manager.xdp();
    let stats = manager.stats();
    let (program_id, capacities, pin_dir) = match &xdp.dataplane {
        Some(dataplane) => (
            dataplane.program_id()?,
            dataplane.capacities()?,
            dataplane.pin_dir().display().to_string(),
        ),
        None => (
            0,
            runtime.config.ban.capacities(),
            runtime.config.daemon.bpf_pin_dir.display().to_string(),
        ),
    };
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        started_at: crate::clock::rfc3339(runtime.started_at),
        config: runtime.config_path.display().to_string(),
        pin_dir,
        program_id,
        backends: {
            let mut list = backends(&manager);
            if let Some(fleet) = &shared.fleet {
                list.push(BackendStatus {
                    name: "fleet".to_owned(),
                    active: fleet.health().connected(),
                    detail: fleet.describe(),
                    queue_depth: Some(fleet.health().queue_depth()),
                });
            }
            list
        },
        interfaces: runtime.attachments.clone(),
        ports: runtime.config.xdp.ports.clone(),
        bans_active: stats.bans_active,
        capacity_v4: capacities.v4,
        capacity_v6: capacities.v6,
        capacity_prefix_v4: capacities.prefix_v4,
        capacity_prefix_v6: capacities.prefix_v6,
        allowlist: manager.policy().allowlist.entries().to_vec(),
        default_bantime: runtime.config.ban.bantime.to_string(),
        store: manager.store().path().display().to_string(),
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
