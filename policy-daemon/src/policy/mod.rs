//! The Postfix policy server: protocol, listeners, check chain, scoring
//! per mail, thresholds and bans.
//!
//! - [`codec`] is the only module that knows Postfix's byte format;
//! - [`server`] owns the listeners and admits connections, [`workers`]
//!   are the threads that serve them, [`connection`] serves one;
//! - [`checks`] holds the check types, [`dns`] their resolvers and cache,
//!   [`spf`] SPF's evaluation and header;
//! - [`engine`] adds scores up per mail and applies the threshold table;
//! - [`ratelimit`] counts requests per attribute value in sliding windows;
//! - [`client`] is `spamwall query`.
//!
//! Fail-open is the rule throughout: every well-framed request gets an
//! answer before its deadline, `DUNNO` when nothing fired or nothing
//! finished. Postfix never has to fall back on its 451 default because of
//! spamwall.

pub(crate) mod action;
mod cache;
pub mod checks;
pub mod client;
pub mod codec;
pub mod config;
mod connection;
mod dns;
mod engine;
pub mod greylist;
mod join;
pub mod ratelimit;
mod server;
mod service;
mod spf;
mod workers;

use std::{
    io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use ipnet::IpNet;
use parking_lot::Mutex;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

pub use config::{ListenAddr, PolicyConfig};
pub use engine::{Decision, Engine};
pub use greylist::{Greylist, SharedTriplets};
pub use ratelimit::{RateState, SharedCounter};
pub use server::{Listener, serve};
pub use service::Service;
pub use spf::parse_record as parse_spf_record;

use crate::bans::BanSink;

/// Every problem of a `[policy]` section: its own keys, then what
/// compiling its checks and thresholds finds (a regex that does not
/// compile, an action Postfix would refuse), each naming its key.
pub fn problems(config: &PolicyConfig) -> Vec<String> {
    let mut problems = config.problems();
    if let Err(mut found) = checks::Chain::compile(config) {
        problems.append(&mut found);
    }
    if let Some(greylist) = &config.greylist {
        problems.append(&mut greylist.problems());
    }
    if let Err(mut found) =
        engine::Thresholds::compile(&config.threshold, config.greylist.is_some())
    {
        problems.append(&mut found);
    }
    if let Err(mut found) = ratelimit::compile(&config.ratelimit) {
        problems.append(&mut found);
    }
    if config.check.len() + config.ratelimit.len() > checks::MAX_CHECKS {
        problems.push(format!(
            "policy.ratelimit: at most {} checks and rate limits together",
            checks::MAX_CHECKS
        ));
    }
    problems
}

/// The engine for `config`, counting its rate limits in `rate`.
fn build_engine(
    config: &PolicyConfig,
    sink: Arc<dyn BanSink>,
    stats: Arc<PolicyStats>,
    rate: Option<&Arc<RateState>>,
) -> Result<Engine, PolicyError> {
    let engine = Engine::new(config, Some(sink), stats)?;
    match rate {
        Some(counters) if !config.ratelimit.is_empty() => {
            let limits = ratelimit::RateLimits::new(&config.ratelimit, Arc::clone(counters))
                .map_err(|problems| PolicyError::Config { problems })?;
            Ok(engine.with_rate_limits(limits))
        }
        _ => Ok(engine),
    }
}

/// Why the policy server could not start.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("[policy]:\n  {}", problems.join("\n  "))]
    Config { problems: Vec<String> },
    #[error(transparent)]
    Resolver(#[from] dns::ResolverError),
    #[error("policy listener {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error(transparent)]
    Socket(#[from] crate::listen::BindError),
    #[error(transparent)]
    Greylist(#[from] greylist::StateError),
}

/// Counters of the policy server; shared with the daemon's `stats`.
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests refused as malformed or incomplete (connection closed).
    pub malformed: AtomicU64,
    /// Requests answered without some of their attributes, whose name or
    /// value was unusable.
    pub bad_attributes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Idle connections closed at `max_connections` to admit a new one.
    pub closed_idle: AtomicU64,
    /// Connections closed at once: every place busy and as many waiting.
    pub refused: AtomicU64,
    /// Requests answered at their deadline with checks still running.
    pub deadline_answers: AtomicU64,
    /// Checks that failed or timed out (each counted per request).
    pub check_errors: AtomicU64,
    /// Bans sent by thresholds and accepted.
    pub bans: AtomicU64,
    /// Bans refused by the ban manager (e.g. allowlisted).
    pub bans_refused: AtomicU64,
}

impl PolicyStats {
    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// What the policy server takes from the rest of the daemon.
#[derive(Clone, Debug, Default)]
pub struct Surroundings {
    /// The daemon's `SQLite` store, where greylisting and rate limits keep
    /// their state; none: in memory only.
    pub store: Option<PathBuf>,
    /// The ban allowlist: never greylisted.
    pub allowlist: Arc<Mutex<Vec<IpNet>>>,
    /// Where the fleet shares greylisting's first sightings.
    pub triplets: Option<Arc<dyn SharedTriplets>>,
    /// Where the fleet counts rate limits (Redis).
    pub counter: Option<Arc<dyn SharedCounter>>,
}

/// The running listeners of the daemon.
#[derive(Debug, Default)]
pub struct PolicyServer {
    service: Option<Arc<Service>>,
    tasks: Vec<JoinHandle<()>>,
    addrs: Vec<ListenAddr>,
    surroundings: Surroundings,
    greylist: Mutex<Option<Arc<Greylist>>>,
    /// Rate limit counters: kept across reloads, written at shutdown.
    rate: Option<Arc<RateState>>,
}

impl PolicyServer {
    /// Binds every listener of `config` and serves until `shutdown` turns
    /// true. Bans go to `sink`; counters to `stats`; state beyond a
    /// request to what `surroundings` gives. With `enabled = false` or no
    /// listener nothing is started.
    pub async fn start(
        config: &PolicyConfig,
        sink: Arc<dyn BanSink>,
        stats: Arc<PolicyStats>,
        surroundings: Surroundings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, PolicyError> {
        if !config.serves() {
            info!("policy server off ([policy] enabled = false or listen = [])");
            return Ok(Self::default());
        }
        let mut server = Self {
            surroundings,
            ..Self::default()
        };
        let counters = {
            let capacity = config.ratelimit_keys;
            let database = server.surroundings.store.clone();
            let shared = server.surroundings.counter.clone();
            tokio::task::spawn_blocking(move || {
                RateState::open(capacity, database.as_deref(), shared)
            })
            .await
            .ok()
        };
        let greylist = server.greylist(config)?;
        let engine = build_engine(config, sink, Arc::clone(&stats), counters.as_ref())?
            .with_greylist(greylist);
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.push(Listener::bind(addr, config.unix_mode).await?);
        }
        let service = Arc::new(Service::new(engine, config, stats));
        server.service = Some(Arc::clone(&service));
        if let Some(counters) = counters {
            server.tasks.push(counters.spawn_writer(shutdown.clone()));
            server.rate = Some(counters);
        }
        for listener in listeners {
            let addr = listener.local_addr().map_err(|source| PolicyError::Bind {
                addr: "policy listener".to_owned(),
                source,
            })?;
            info!(listen = %addr, checks = config.check.len(), "policy server listening");
            server.addrs.push(addr);
            let mut shutdown = shutdown.clone();
            server.tasks.push(tokio::spawn(serve(
                listener,
                Arc::clone(&service),
                async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                },
            )));
        }
        Ok(server)
    }

    /// Replaces checks and thresholds for later requests (SIGHUP):
    /// scores and DNS answers start afresh, greylisting keeps its state
    /// and takes the new settings and ban `allowlist`. Listeners and
    /// limits change only on restart. On error the running chain stays,
    /// and the error is logged.
    pub fn reload(&self, config: &PolicyConfig, sink: Arc<dyn BanSink>, allowlist: &[IpNet]) {
        let Some(service) = &self.service else {
            return;
        };
        self.surroundings
            .allowlist
            .lock()
            .clone_from(&allowlist.to_vec());
        let engine = self.greylist(config).and_then(|greylist| {
            Ok(build_engine(
                config,
                sink,
                Arc::clone(service.stats()),
                self.rate.as_ref(),
            )?
            .with_greylist(greylist))
        });
        match engine {
            Ok(engine) => {
                service.replace_engine(engine);
                info!(
                    checks = config.check.len(),
                    "policy checks and thresholds reloaded"
                );
            }
            Err(error) => warn!("policy reload refused, keeping the running chain: {error}"),
        }
    }

    /// The greylisting of `config`: the running one with new settings, or
    /// a new one reading the saved state; none without `[policy.greylist]`
    /// (a running one is kept, unused, in case it comes back).
    fn greylist(&self, config: &PolicyConfig) -> Result<Option<Arc<Greylist>>, PolicyError> {
        let Some(greylist_config) = &config.greylist else {
            return Ok(None);
        };
        let mut running = self.greylist.lock();
        let surroundings = &self.surroundings;
        let allowlist = surroundings.allowlist.lock().clone();
        if let Some(greylist) = running.as_ref() {
            greylist.reconfigure(greylist_config, &allowlist);
            return Ok(Some(Arc::clone(greylist)));
        }
        let greylist = Arc::new(Greylist::start(
            greylist_config,
            surroundings.store.as_deref(),
            &allowlist,
            surroundings.triplets.clone(),
        )?);
        *running = Some(Arc::clone(&greylist));
        Ok(Some(greylist))
    }

    /// Greylisting, once it runs.
    pub fn running_greylist(&self) -> Option<Arc<Greylist>> {
        self.greylist.lock().clone()
    }

    /// Waits until every listener has stopped, then saves what
    /// greylisting holds.
    pub async fn stopped(self) {
        for task in self.tasks {
            if let Err(error) = task.await {
                warn!(%error, "policy listener task failed");
            }
        }
        let greylist = self.greylist.lock().take();
        if let Some(greylist) = greylist {
            let _ = tokio::task::spawn_blocking(move || greylist.stop()).await;
        }
    }
}
