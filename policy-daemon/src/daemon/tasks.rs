//! The daemon's background work: the fleet link, the metrics endpoint,
//! the fail2ban backend's expiry and jail reconciliation, and the periodic
//! reconciliation of the kernel maps with the store.

use std::{sync::Arc, time::Duration};

use metrics::{counter, gauge};
use tracing::{info, warn};

use super::{DaemonError, Shared, WALK_BUDGET};
use crate::{
    bans::{
        BackendStatus, BanStats, Cursor, Fail2banLink, MapBatch, Reconciled,
        fail2ban::Fail2banBackend, store::Store,
    },
    config::{Backend, Config, Fail2banConfig},
};

/// Starts the fleet link and waits for its first resync (or first failure)
/// so the daemon reports ready with the fleet's bans in place.
pub(super) async fn start_fleet(
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

pub(super) async fn start_metrics(
    addr: &str,
    shared: &Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let handle = crate::metrics::install()?;
    let listener = crate::metrics::bind(addr).await?;
    let refresh = {
        let shared = Arc::clone(shared);
        Arc::new(move || {
            let stats = shared.ban_stats();
            record_snapshot(&stats, &shared.manager().backends());
            if let Some(fleet) = &shared.fleet {
                fleet.record_gauges();
            }
            if let Some(greylist) = shared.greylist.lock().as_ref() {
                greylist.record_gauges();
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

/// Starts the fail2ban backend when `ban.backends` names it or a
/// `[fail2ban]` section asks for it as the fallback.
pub(super) fn start_fail2ban(
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

/// How often the store's write-ahead log is copied into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The niceness of the maintenance thread: it runs behind the ban path
/// and the policy server when they want the CPU.
const MAINTENANCE_NICE: libc::c_int = 10;

/// Reconciles the maps with the store and purges history every `every`
/// (`ban.reconcile_interval`; a span is never zero), and checkpoints the
/// store every [`CHECKPOINT_INTERVAL`].
///
/// The passes run one at a time on their own thread, `spamwall-maint`, at
/// niceness [`MAINTENANCE_NICE`]: at a million bans a pass keeps a core
/// busy for a good part of a second, and a ban or a policy answer should
/// not wait for the CPU behind it. The thread ends with the loop; one
/// that ended with a pass (a panic) is started again for the next.
pub(super) async fn maintenance_loop(
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut checkpoints = tokio::time::interval(CHECKPOINT_INTERVAL);
    checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let store = Arc::clone(shared.manager().store());
    let mut thread = None;
    let mut checkpointing = None::<tokio::task::JoinHandle<()>>;
    loop {
        tokio::select! {
            _ = async { stopped.wait_for(|stop| *stop).await.is_ok() } => return,
            _ = ticker.tick() => run_pass(&mut thread, &shared).await,
            _ = checkpoints.tick() => {
                // One at a time, beside the maintenance pass.
                if checkpointing.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                    let store = Arc::clone(&store);
                    checkpointing = Some(tokio::task::spawn_blocking(move || {
                        if let Err(error) = store.checkpoint() {
                            tracing::debug!(%error, "checkpoint failed; the next one retries");
                        }
                    }));
                }
            }
        }
    }
}

/// The sending side of the maintenance thread's queue of passes.
type Passes = std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>;

/// Runs one maintenance pass on the maintenance thread, starting it if it
/// is not running; when it cannot be started, on the shared blocking
/// pool, so reconciliation and purging never stop.
async fn run_pass(thread: &mut Option<Passes>, shared: &Arc<Shared>) {
    if thread.is_none() {
        match maintenance_thread(Arc::clone(shared)) {
            Ok(passes) => *thread = Some(passes),
            Err(error) => {
                warn!(%error, "starting the maintenance thread failed; this pass runs on the shared pool");
            }
        }
    }
    if let Some(passes) = thread {
        let (done, finished) = tokio::sync::oneshot::channel();
        if passes.send(done).is_err() || finished.await.is_err() {
            // The thread ended with this pass (a panic): the next pass
            // starts a new one.
            *thread = None;
        }
        return;
    }
    let shared = Arc::clone(shared);
    let _ = tokio::task::spawn_blocking(move || maintain(&shared)).await;
}

/// Starts the thread that runs a maintenance pass for each sender it
/// receives, and answers on it when done; it ends when the channel's
/// sending side is dropped.
fn maintenance_thread(shared: Arc<Shared>) -> std::io::Result<Passes> {
    let (passes, queue) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
    std::thread::Builder::new()
        .name("spamwall-maint".to_owned())
        .spawn(move || {
            lower_priority(MAINTENANCE_NICE);
            for done in queue {
                maintain(&shared);
                let _ = done.send(());
            }
        })?;
    Ok(passes)
}

/// Sets the calling thread's niceness (Linux keeps one per thread).
/// A failure only costs the ban path some CPU under load: logged.
fn lower_priority(nice: libc::c_int) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let Ok(tid) = libc::id_t::try_from(tid) else {
        return;
    };
    // SAFETY: setpriority reads its three integer arguments only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
        let error = std::io::Error::last_os_error();
        warn!(%error, nice, "lowering the maintenance thread's priority failed");
    }
}

/// Reconciles the maps with the store and purges old history.
/// The lock is taken per chunk of a few thousand bans, never for the
/// whole walk.
pub(super) fn maintain(shared: &Shared) {
    let report = reconcile(shared);
    if report.removed + report.corrected > 0 {
        info!(
            removed = report.removed,
            corrected = report.corrected,
            "kernel maps brought in line with the store"
        );
    }
    match purge(shared) {
        Ok(0) => {}
        Ok(purged) => {
            info!(purged, "old ban history purged");
            if purged >= super::memory::LARGE_REQUEST {
                let store = Arc::clone(shared.manager().store());
                super::memory::give_back(&store);
            }
        }
        Err(error) => warn!(%error, "purging ban history failed"),
    }
}

/// [`BanManager::purge`] without holding the ban path: old history is
/// found in the index a chunk at a time, deleted from the store by key a
/// few thousand rows per transaction, then forgotten by the index.
fn purge(shared: &Shared) -> Result<usize, crate::bans::BanError> {
    let (store, cutoff) = {
        let manager = shared.manager();
        (Arc::clone(manager.store()), manager.history_cutoff())
    };
    let mut stale = Vec::new();
    let mut cursor = Cursor::default();
    while !cursor.is_done() {
        cursor = shared.step(|manager| manager.stale_part(cursor, WALK_BUDGET, cutoff, &mut stale));
    }
    let mut purged = 0;
    for chunk in stale.chunks(WALK_BUDGET) {
        purged += store.purge_targets(chunk, cutoff)?;
        shared.step(|manager| manager.forget(chunk, cutoff));
    }
    shared.manager().prune_recent();
    Ok(purged)
}

/// Kernel map entries checked per hold of the manager's lock: each is
/// looked up in the index, so a part takes several times a walk's row.
const RECONCILE_PART: usize = 64;

/// [`BanManager::reconcile`] in chunks: the kernel maps are read, and
/// their entries put in the index's order, without the lock; each part is
/// checked under it.
fn reconcile(shared: &Shared) -> Reconciled {
    let mut report = Reconciled::default();
    let Some((maps, pass)) = shared.manager().begin_reconcile() else {
        return report;
    };
    let mut batch = shared.manager().map_batch();
    let read = maps.each_chunk(|chunk| {
        batch.add(chunk);
        if batch.is_full() {
            check_batch(shared, &mut batch, pass, &mut report);
        }
    });
    check_batch(shared, &mut batch, pass, &mut report);
    if let Err(error) = read {
        warn!(%error, "reading the XDP maps failed; every ban is checked one by one");
    }
    shared.manager().reconcile_prefixes(pass, &mut report);
    let mut cursor = Cursor::default();
    while !cursor.is_done() {
        cursor = shared.step(|manager| {
            manager.reconcile_missing(cursor, WALK_BUDGET, pass, false, &mut report)
        });
    }
    shared.manager().end_reconcile(&report);
    report
}

/// Sorts the kernel map entries of `batch`, checks them
/// [`RECONCILE_PART`] per hold of the lock, and empties it.
fn check_batch(shared: &Shared, batch: &mut MapBatch, pass: u8, report: &mut Reconciled) {
    batch.sort();
    for part in batch.parts(RECONCILE_PART) {
        shared.step(|manager| manager.reconcile_sorted(part, pass, report));
    }
    batch.clear();
}

/// How often the fail2ban jail is reconciled, when there is a fail2ban
/// backend.
pub(super) fn fail2ban_interval(config: &Config) -> Option<Duration> {
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
pub(super) async fn fail2ban_loop(
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
pub(super) enum JailCheck {
    Done,
    /// Operations were still queued; comparing now would see them as
    /// missing or stray.
    Deferred,
    Failed,
}

/// Reads the jail's entries (outside the manager's lock) and brings it in
/// line with the store.
pub(super) fn reconcile_fail2ban(shared: &Shared) -> JailCheck {
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

/// Copies a snapshot of the ban manager into the recorder.
fn record_snapshot(stats: &BanStats, backends: &[BackendStatus]) {
    for (kind, value) in [
        ("v4", stats.bans_v4),
        ("v6", stats.bans_v6),
        ("prefix_v4", stats.prefixes_v4),
        ("prefix_v6", stats.prefixes_v6),
    ] {
        #[expect(
            clippy::cast_precision_loss,
            reason = "gauges are f64; ban counts stay far below 2^52"
        )]
        gauge!("spamwall_bans_active", "kind" => kind).set(value as f64);
    }
    for (outcome, value) in stats.packets.iter() {
        counter!("spamwall_xdp_packets_total", "outcome" => outcome.name()).absolute(value);
    }
    counter!("spamwall_bans_evicted_total").absolute(stats.evicted);
    counter!("spamwall_backend_errors_total").absolute(stats.backend_errors);
    for backend in backends {
        gauge!("spamwall_backend_up", "backend" => backend.name.clone())
            .set(f64::from(u8::from(backend.active)));
        if let Some(depth) = backend.queue_depth {
            #[expect(
                clippy::cast_precision_loss,
                reason = "gauges are f64; queue depths stay far below 2^52"
            )]
            gauge!("spamwall_backend_queue_depth", "backend" => backend.name.clone())
                .set(depth as f64);
        }
    }
}
