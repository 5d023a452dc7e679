//! What every policy connection of every listener shares: the engine
//! (swapped on reload), the request limits and timeouts, the client
//! registry and the counters.

use std::{
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{PolicyStats, codec::Limits, config::PolicyConfig, engine::Engine};
use tracing::warn;

use crate::listen::{Clients, LogLimit, WARN_INTERVAL};

/// Warnings a peer can provoke, each at most once per [`WARN_INTERVAL`].
#[derive(Debug)]
pub(super) struct Warnings {
    pub(super) accept: LogLimit,
    pub(super) at_cap: LogLimit,
    pub(super) refused: LogLimit,
    pub(super) malformed: LogLimit,
    pub(super) bad_attributes: LogLimit,
}

/// What every connection of every listener shares.
#[derive(Debug)]
pub struct Service {
    pub(super) engine: RwLock<Arc<Engine>>,
    /// Bumped after each engine swap: a connection keeps its engine until
    /// this changes, instead of touching the lock for each request.
    generation: AtomicU64,
    pub(super) limits: Limits,
    pub(super) request_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) clients: Arc<Clients>,
    /// The cap; also the most connections waiting for a place while every
    /// admitted one is busy.
    pub(super) max_connections: usize,
    pub(super) stats: Arc<PolicyStats>,
    pub(super) warnings: Warnings,
}

impl Service {
    /// A service answering with `engine` under the limits of `config`.
    pub fn new(engine: Engine, config: &PolicyConfig, stats: Arc<PolicyStats>) -> Self {
        Self {
            engine: RwLock::new(Arc::new(engine)),
            generation: AtomicU64::new(0),
            limits: Limits {
                max_line_length: config.max_line_length,
                max_attributes: config.max_attributes,
                max_request_size: config.max_request_size,
            },
            request_timeout: config.request_timeout,
            idle_timeout: config.idle_timeout,
            clients: Clients::new(config.max_connections),
            max_connections: config.max_connections.max(1),
            stats,
            warnings: Warnings {
                accept: LogLimit::new(WARN_INTERVAL),
                at_cap: LogLimit::new(WARN_INTERVAL),
                refused: LogLimit::new(WARN_INTERVAL),
                malformed: LogLimit::new(WARN_INTERVAL),
                bad_attributes: LogLimit::new(WARN_INTERVAL),
            },
        }
    }

    /// The engine answering requests now.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Answers later requests with `engine`; requests in flight finish
    /// with the old one.
    pub fn replace_engine(&self, engine: Engine) {
        *self.engine.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(engine);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The engine answering requests now, through `cached`: taken anew
    /// only after a swap.
    pub(super) fn current_engine<'a>(
        &self,
        cached: &'a mut Option<(u64, Arc<Engine>)>,
    ) -> &'a Engine {
        let generation = self.generation.load(Ordering::Acquire);
        if cached.as_ref().is_none_or(|(seen, _)| *seen != generation) {
            *cached = Some((generation, self.engine()));
        }
        let (_, engine) = cached.get_or_insert_with(|| (generation, self.engine()));
        engine
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<PolicyStats> {
        &self.stats
    }

    /// Counts and logs (rate-limited) an idle connection closed to admit
    /// a new one.
    pub(super) fn closed_idle(&self) {
        self.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.warnings.at_cap.check() {
            warn!(
                max_connections = self.max_connections,
                held_back,
                "policy connections at max_connections: closed the longest-idle one to admit a new one"
            );
        }
    }
}
