//! Rate limit counters shared by the fleet: one Redis key per limit, key
//! value and fixed window (`<prefix>:rl:<limit>\0<value>:<window start>`),
//! added to and read with its predecessor by one Lua script, so each count
//! is atomic across every node. Keys expire two windows after their last
//! count.
//!
//! A request never waits for a connection: while none is up it is counted
//! locally (the policy engine always counts locally too), the outage is
//! shown in `status` and counted in a metric, and a keeper task connects
//! again every [`RETRY`]. The keeper also pings a live link as often, so
//! that `status` tells an outage even when no request came.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use redis::aio::MultiplexedConnection;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

use super::{FleetConfig, FleetError};
use crate::{
    bans::BackendStatus,
    metrics::{RATELIMIT_FALLBACK, RATELIMIT_SHARED},
    policy::ratelimit::{Counted, SharedCounter},
};

/// How often the keeper tries to connect while Redis is away.
pub const RETRY: Duration = Duration::from_secs(1);
/// The longest a count waits for Redis, even with a later deadline: past
/// it the request is counted locally.
pub const COUNT_TIMEOUT: Duration = Duration::from_millis(500);
/// Adds ARGV[1] to KEYS[1], keeps it ARGV[2] ms, returns it with KEYS[2].
const SCRIPT: &str = "local c = redis.call('INCRBY', KEYS[1], ARGV[1]) \
    redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
    local p = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 \
    return {c, p}";

/// What `status` says about the shared counters.
#[derive(Debug)]
struct Link {
    connection: Option<MultiplexedConnection>,
    /// When the link last went up or down.
    since: SystemTime,
    error: Option<String>,
}

/// Rate limit counting in Redis.
#[derive(Debug)]
pub struct RedisCounter {
    client: redis::Client,
    url: String,
    prefix: Vec<u8>,
    link: Mutex<Link>,
}

impl RedisCounter {
    /// A counter for `config`'s Redis; not connected until
    /// [`RedisCounter::spawn_keeper`] runs.
    pub fn new(config: &FleetConfig) -> Result<Arc<Self>, FleetError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            redis::Client::open(config.redis.as_str()).map_err(|source| FleetError::Url {
                url: config.redacted_url(),
                source,
            })?;
        metrics::gauge!(RATELIMIT_SHARED).set(0.0);
        Ok(Arc::new(Self {
            client,
            url: config.redacted_url(),
            prefix: format!("{}:rl:", config.prefix).into_bytes(),
            link: Mutex::new(Link {
                connection: None,
                since: SystemTime::now(),
                error: Some("not connected yet".to_owned()),
            }),
        }))
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects now and again whenever the link is down, and pings it
    /// while it is up, until `stopped` turns true.
    pub fn spawn_keeper(self: &Arc<Self>, mut stopped: watch::Receiver<bool>) -> JoinHandle<()> {
        let counter = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let connection = counter.link().connection.clone();
                match connection {
                    None => counter.connect().await,
                    Some(mut connection) => {
                        let command = redis::cmd("PING");
                        let ping = command.query_async::<String>(&mut connection);
                        match tokio::time::timeout(RETRY, ping).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(error)) => counter.fail(error.to_string()),
                            Err(_) => counter.fail(format!("no answer to PING within {RETRY:?}")),
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
            }
        })
    }

    async fn connect(&self) {
        let connecting = self.client.get_multiplexed_async_connection();
        let outcome = match tokio::time::timeout(RETRY * 2, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", RETRY * 2)),
        };
        let mut link = self.link();
        match outcome {
            Ok(connection) => {
                link.connection = Some(connection);
                link.since = SystemTime::now();
                link.error = None;
                metrics::gauge!(RATELIMIT_SHARED).set(1.0);
                info!(redis = %self.url, "rate limits counted in Redis");
            }
            Err(error) => {
                if link.error.as_deref() != Some(error.as_str()) {
                    warn!(redis = %self.url, %error, "rate limits counted locally: Redis unreachable");
                }
                link.error = Some(error);
            }
        }
    }

    /// Drops the connection after a failed count: later requests count
    /// locally until the keeper connects again.
    fn fail(&self, error: String) {
        let mut link = self.link();
        if link.connection.take().is_some() {
            link.since = SystemTime::now();
            metrics::gauge!(RATELIMIT_SHARED).set(0.0);
            warn!(redis = %self.url, %error, "rate limits counted locally until Redis answers again");
        }
        link.error = Some(error);
    }

    /// The `ratelimit` line of `status`.
    pub fn status(&self) -> BackendStatus {
        let link = self.link();
        let since = crate::clock::rfc3339(link.since);
        let (active, detail) = match (&link.connection, &link.error) {
            (Some(_), _) => (true, format!("shared in Redis {} since {since}", self.url)),
            (None, error) => (
                false,
                format!(
                    "counting locally: Redis {} unreachable since {since} ({})",
                    self.url,
                    error.as_deref().unwrap_or("down")
                ),
            ),
        };
        BackendStatus {
            name: "ratelimit".to_owned(),
            active,
            detail,
            queue_depth: None,
        }
    }

    fn redis_key(&self, key: &[u8], start: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + key.len() + 21);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(key);
        out.push(b':');
        out.extend_from_slice(start.to_string().as_bytes());
        out
    }
}

impl SharedCounter for RedisCounter {
    fn add<'a>(
        &'a self,
        key: &'a [u8],
        start: u64,
        length: u64,
        add: u64,
        deadline: Instant,
    ) -> Counted<'a> {
        Box::pin(async move {
            let Some(mut connection) = self.link().connection.clone() else {
                metrics::counter!(RATELIMIT_FALLBACK).increment(1);
                return None;
            };
            let mut command = redis::cmd("EVAL");
            command
                .arg(SCRIPT)
                .arg(2)
                .arg(self.redis_key(key, start))
                .arg(self.redis_key(key, start.saturating_sub(length)))
                .arg(add)
                .arg(length.saturating_mul(2));
            let until = deadline.min(Instant::now() + COUNT_TIMEOUT);
            let answer = tokio::time::timeout_at(
                until.into(),
                command.query_async::<(u64, u64)>(&mut connection),
            )
            .await;
            match answer {
                Ok(Ok(counts)) => Some(counts),
                Ok(Err(error)) => {
                    self.fail(error.to_string());
                    metrics::counter!(RATELIMIT_FALLBACK).increment(1);
                    None
                }
                Err(_) => {
                    self.fail(format!("no answer within {COUNT_TIMEOUT:?}"));
                    metrics::counter!(RATELIMIT_FALLBACK).increment(1);
                    None
                }
            }
        })
    }
}
