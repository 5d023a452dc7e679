//! The daemon: open the store, load and attach the XDP program, serve the
//! control socket, the policy server, the metrics endpoint, the log
//! watcher and the fleet link, until told to stop.
//!
//! [`run`] takes an already bound control socket and a stream of
//! [`Event`]s, so it runs the same under `spamwall run` (which binds the
//! socket, turns SIGTERM/SIGINT/SIGHUP into events and tells systemd) and
//! in a test. On stop it exits and leaves the pinned program, maps and
//! links in place: drops go on without it. When XDP cannot be used (no
//! privilege, no such interface, the load fails), it still runs: bans are
//! stored and go to the other backends, and `status` says why XDP is
//! inactive.
//!
//! - [`handler`] answers control requests, [`unban`] and [`explain`]
//!   the unban and explain requests;
//! - [`xdp`] loads and attaches the program;
//! - [`tasks`] runs the background work (fleet, metrics, fail2ban,
//!   maintenance).

mod explain;
mod fd_limit;
mod handler;
mod list;
mod lock;
mod memory;
mod targets;
mod tasks;
mod top;
mod unban;
mod xdp;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::SystemTime,
};

use ipnet::IpNet;
use tokio::{net::UnixListener, sync::mpsc, task::JoinHandle};
use tracing::{error, info, warn};

use crate::{
    bans::{
        BanEntry, BanError, BanLength, BanManager, BanRequest, BanScope, BanSink, Source,
        XdpBackend,
        store::{Store, StoreError},
        target_to_string,
    },
    config::{Backend, Config},
    control::{self, BindError},
    dataplane::Attachment,
};

/// What the daemon is asked to do while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Re-read the configuration file (SIGHUP).
    Reload,
    /// Stop serving and return (SIGTERM, SIGINT).
    Stop,
}

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
}

/// State shared by the control handler, verdict sources, maintenance and
/// reload.
struct Shared {
    /// `parking_lot`'s: the walks of a reconciliation, a count or a purge
    /// hand the lock straight to a waiting ban (`unlock_fair`) instead of
    /// taking it back before the ban's thread wakes.
    manager: lock::WalkLock<BanManager>,
    runtime: Mutex<Runtime>,
    policy_stats: Arc<crate::policy::PolicyStats>,
    fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Greylisting, once the policy server runs it.
    greylist: parking_lot::Mutex<Option<Arc<crate::policy::Greylist>>>,
    /// Rate limits counted in the fleet's Redis: with `[fleet]` and
    /// rate limits at start.
    rate_counter: Option<Arc<crate::fleet::RedisCounter>>,
    /// The blocklist feeds' health, once they run.
    feeds: parking_lot::Mutex<Option<Arc<crate::feeds::FeedBoard>>>,
}

/// What the daemon knows about itself, for `status` and reload.
struct Runtime {
    config_path: PathBuf,
    config: Config,
    started_at: SystemTime,
    attachments: Vec<Attachment>,
}

impl Shared {
    /// The manager for a short hold, ahead of any walk's next step.
    fn manager(&self) -> parking_lot::MutexGuard<'_, BanManager> {
        self.manager.lock()
    }

    /// Runs one step of a long walk under the manager's lock, after any
    /// short hold that waits, then hands the lock to whoever waits for it.
    fn step<T>(&self, step: impl FnOnce(&mut BanManager) -> T) -> T {
        self.manager.step(step)
    }

    fn runtime(&self) -> MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The manager's figures, counted a few thousand bans at a time so a
    /// ban never waits for a whole count; the head too is a step, behind
    /// any waiting ban.
    fn ban_stats(&self) -> crate::bans::BanStats {
        let mut stats = self.step(|manager| manager.stats_head());
        let now = crate::clock::unix_now();
        let mut cursor = crate::bans::Cursor::default();
        while !cursor.is_done() {
            cursor =
                self.step(|manager| manager.count_active(cursor, WALK_BUDGET, now, &mut stats));
        }
        stats
    }
}

/// Rows a walk over the index (a count, a reconciliation) reads per hold
/// of the manager's lock: a ban that arrives during a step waits for the
/// rest of it, some tens of microseconds with a million bans.
const WALK_BUDGET: usize = 256;

impl BanSink for Shared {
    fn ban(
        &self,
        target: IpNet,
        length: BanLength,
        source: Source,
        reason: &str,
        scope: &BanScope,
    ) -> Result<BanEntry, BanError> {
        let entry = self
            .manager()
            .ban(BanRequest::new(target, length, source, reason, scope))?;
        log_ban(&entry);
        Ok(entry)
    }
}

impl crate::feeds::FeedTarget for Shared {
    fn with_manager(&self, step: &mut dyn FnMut(&mut BanManager)) {
        self.step(step);
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

/// Runs the daemon on `config` until an [`Event::Stop`] arrives or
/// `events` closes. `control` is the control socket, bound by the caller
/// with [`control::bind`] before anything else: that is what stops a
/// second daemon on the same configuration before it touches the store,
/// the maps or the links. `ready` is called once every listener is bound
/// and the fleet's bans are in place.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    control: UnixListener,
    mut events: mpsc::Receiver<Event>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let socket_path = config.daemon.control_socket.clone();
    for warning in config.warnings() {
        warn!("{warning}");
    }
    fd_limit::ensure_fd_budget(if config.policy.serves() {
        config.policy.max_connections
    } else {
        0
    });
    let shared = open(config_path, config)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let services = Services::start(&shared, control, socket_path.clone(), stopped).await?;
    info!(socket = %socket_path.display(), "spamwall ready");
    ready();
    while let Some(Event::Reload) = events.recv().await {
        let reloading = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || reload(&reloading)).await;
        let policy_config = shared.runtime().config.policy.clone();
        let allowlist = shared.runtime().config.ban.allowlist.entries().to_vec();
        services.policy.reload(
            &policy_config,
            Arc::clone(&shared) as Arc<dyn BanSink>,
            &allowlist,
        );
        *shared.greylist.lock() = services.policy.running_greylist();
        if services.logwatch.is_active() {
            info!("logwatch changes apply on restart");
        }
    }
    info!("stopping; the XDP program, links and maps stay pinned and keep dropping");
    let _ = stop.send(true);
    services.stopped().await;
    Ok(())
}

/// Opens the store, loads the XDP program (when configured), starts the
/// fail2ban backend and the ban manager, and brings the kernel maps in
/// line with the store.
fn open(config_path: PathBuf, config: Config) -> Result<Arc<Shared>, DaemonError> {
    memory::tune_allocator();
    let store = Arc::new(Store::open_in(&config.daemon.state_dir)?);
    let (xdp, attachments) = if config.ban.backends.contains(&Backend::Xdp) {
        xdp::start(&config)
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
    let fail2ban = tasks::start_fail2ban(&config, &store)?;
    let mut manager = BanManager::new(store, xdp, fail2ban, config.ban_policy())?;
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
    memory::give_back(manager.store());
    let fleet = match config.fleet.clone() {
        Some(section) => {
            let shared = section.share.clone();
            let fleet = crate::fleet::Fleet::new(section, Arc::clone(manager.store()))?;
            manager.set_observer(fleet.observer(), shared);
            Some(fleet)
        }
        None => None,
    };
    let rate_counter = match &config.fleet {
        Some(section) if config.policy.serves() && !config.policy.ratelimit.is_empty() => {
            Some(crate::fleet::RedisCounter::new(section)?)
        }
        _ => None,
    };
    Ok(Arc::new(Shared {
        manager: lock::WalkLock::new(manager),
        runtime: Mutex::new(Runtime {
            config_path,
            config,
            started_at: SystemTime::now(),
            attachments,
        }),
        policy_stats: Arc::default(),
        fleet,
        greylist: parking_lot::Mutex::default(),
        rate_counter,
        feeds: parking_lot::Mutex::default(),
    }))
}

/// Everything the daemon serves and runs in the background, until
/// `stopped` turns true.
struct Services {
    fleet: Option<JoinHandle<()>>,
    control: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    policy: crate::policy::PolicyServer,
    fail2ban: Option<JoinHandle<()>>,
    maintenance: JoinHandle<()>,
    logwatch: crate::logwatch::Watcher,
    feeds: Vec<JoinHandle<()>>,
}

impl Services {
    async fn start(
        shared: &Arc<Shared>,
        control: UnixListener,
        socket_path: PathBuf,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, DaemonError> {
        // Before the control socket answers: a node reports ready with the
        // fleet's active bans in place.
        let fleet = tasks::start_fleet(shared, stopped.clone()).await;
        let handler = {
            let shared = Arc::clone(shared);
            Arc::new(move |request| handler::handle(&shared, request))
        };
        let mut server_stop = stopped.clone();
        let control = tokio::spawn(control::serve(control, socket_path, handler, async move {
            let _ = server_stop.wait_for(|stop| *stop).await.is_ok();
        }));
        let metrics_listen = shared.runtime().config.metrics.listen.clone();
        let metrics = match metrics_listen {
            Some(addr) => Some(tasks::start_metrics(&addr, shared, stopped.clone()).await?),
            None => None,
        };
        let policy_config = shared.runtime().config.policy.clone();
        // Ends by itself when `stopped` turns true.
        let _keeper = shared
            .rate_counter
            .as_ref()
            .map(|counter| counter.spawn_keeper(stopped.clone()));
        let surroundings = crate::policy::Surroundings {
            store: Some(shared.manager().store().path().to_owned()),
            allowlist: Arc::new(parking_lot::Mutex::new(
                shared.runtime().config.ban.allowlist.entries().to_vec(),
            )),
            triplets: shared.fleet.as_ref().map(crate::fleet::Fleet::triplets),
            counter: shared
                .rate_counter
                .clone()
                .map(|counter| counter as Arc<dyn crate::policy::SharedCounter>),
        };
        let policy = crate::policy::PolicyServer::start(
            &policy_config,
            Arc::clone(shared) as Arc<dyn BanSink>,
            Arc::clone(&shared.policy_stats),
            surroundings,
            stopped.clone(),
        )
        .await?;
        *shared.greylist.lock() = policy.running_greylist();
        let fail2ban = tasks::fail2ban_interval(&shared.runtime().config).map(|every| {
            tokio::spawn(tasks::fail2ban_loop(
                Arc::clone(shared),
                stopped.clone(),
                every,
            ))
        });
        let every = shared.runtime().config.ban.reconcile_interval.0;
        let feeds = {
            let runtime = shared.runtime();
            let (board, tasks) = crate::feeds::start(
                &runtime.config.feeds,
                runtime.config.ban_policy().widest,
                shared.manager().store(),
                &(Arc::clone(shared) as Arc<dyn crate::feeds::FeedTarget>),
                &stopped,
            );
            *shared.feeds.lock() = Some(board);
            tasks
        };
        let maintenance = tokio::spawn(tasks::maintenance_loop(Arc::clone(shared), stopped, every));
        let logwatch = {
            let config = shared.runtime().config.logwatch.clone();
            let store = Arc::clone(shared.manager().store());
            let sink = Arc::clone(shared) as Arc<dyn BanSink>;
            tokio::task::spawn_blocking(move || {
                crate::logwatch::Watcher::start(&config, &store, &sink)
            })
            .await
            .unwrap_or_default()
        };
        Ok(Self {
            fleet,
            control,
            metrics,
            policy,
            fail2ban,
            maintenance,
            logwatch,
            feeds,
        })
    }

    /// Waits for everything to wind down once `stopped` turned true.
    async fn stopped(self) {
        let _ = self.control.await;
        self.policy.stopped().await;
        let _ = self.maintenance.await;
        for task in self.feeds {
            let _ = task.await;
        }
        if let Some(task) = self.fail2ban {
            let _ = task.await;
        }
        let logwatch = self.logwatch;
        let _ = tokio::task::spawn_blocking(move || logwatch.stop()).await;
        if let Some(task) = self.fleet {
            let _ = task.await;
        }
        if let Some(metrics) = self.metrics {
            let _ = metrics.await;
        }
    }
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
    manager.set_policy(config.ban_policy());
    if let Some(attachments) = manager.xdp_mut().reconfigure(&config) {
        runtime.attachments = attachments;
    }
    if manager.fail2ban_active() && !fail2ban_was_active {
        warn!("XDP no longer enforces: bans go to the fail2ban fallback");
        manager.sync_fail2ban();
    }
    runtime.config = config;
    info!(config = %path.display(), "configuration reloaded");
}

pub use fd_limit::{RESERVED_FDS, fd_budget};
