//! The fleet: bans shared between MX hosts through Redis (or Valkey). The
//! only module that speaks Redis.
//!
//! Every host still enforces locally. A local ban whose source is in
//! `fleet.share` is written to the store's durable outbox (backend
//! `fleet`) by the ban manager's observer, under the manager's lock and
//! after the store committed it; one task publishes the outbox to Redis —
//! a JSON message on the pub/sub channel, the target in the sorted set
//! `<prefix>:bans` scored by expiry (permanent: `+inf`) and its details in
//! the hash `<prefix>:details` — and removes what Redis acknowledged. While
//! Redis is away the outbox grows and nothing is lost.
//!
//! On connect (at start, before the daemon reports ready, and after every
//! reconnect) the task subscribes, purges expired entries, and resyncs all
//! active bans of other nodes into the local manager as source `fleet`
//! with their absolute expiry ([`BanLength::Until`]: no escalation, no new
//! count). Messages from this node are ignored; the local allowlist wins.
//!
//! With `fleet.secret_file`, messages are signed when published and only
//! messages signed with the same secret are applied ([`wire`]). Whatever
//! another node sends is bounded here: remote expiries are cut to
//! `fleet.max_bantime`, reasons to 200 bytes, prefixes to the widest the
//! local manager accepts, and a remote unban lifts only a ban that came
//! from the fleet.

mod config;
mod counter;
mod link;
mod triplets;
pub mod wire;

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::warn;

pub use config::FleetConfig;
pub use counter::RedisCounter;
pub use link::run;

use crate::{
    bans::{
        BanEvent, BanObserver, BanRequest, Source,
        store::{Store, StoreError},
        target_to_string,
    },
    clock::unix_now,
};

/// The outbox backend name of queued fleet messages.
pub const OUTBOX_BACKEND: &str = "fleet";

/// Link state, 1 up and 0 down.
pub const METRIC_CONNECTED: &str = "spamwall_fleet_connected";
/// Messages waiting in the outbox.
pub const METRIC_QUEUE: &str = "spamwall_fleet_queue_depth";
/// Now minus the event time of the last message received, seconds.
pub const METRIC_LAG: &str = "spamwall_fleet_lag_seconds";
/// Messages published.
pub const METRIC_PUBLISHED: &str = "spamwall_fleet_published_total";
/// Messages received from other nodes.
pub const METRIC_RECEIVED: &str = "spamwall_fleet_received_total";
/// Received messages not applied, by `reason` ([`wire::Rejected`]).
pub const METRIC_REJECTED: &str = "spamwall_fleet_rejected_total";
/// How often each kind of rejected message is logged at most.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_mins(1);

/// ` (key K)` after an operation on a key; nothing for one on none
/// (connecting).
fn key_part(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" (key {key})")
    }
}

/// Why talking to Redis failed. URLs are shown without their password.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet.redis {url:?} is not a Redis URL: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("fleet: {operation} on {url}{}: {source}", key_part(.key))]
    Redis {
        url: String,
        operation: &'static str,
        key: String,
        source: redis::RedisError,
    },
    #[error("fleet: {operation} on {url} timed out after {after:?}")]
    Timeout {
        url: String,
        operation: &'static str,
        after: Duration,
    },
    #[error("fleet: the subscription to channel {channel} on {url} ended")]
    Disconnected { url: String, channel: String },
    #[error("fleet: the outbox in the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] wire::SecretError),
}

/// What a message asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Ban,
    Unban,
}

impl Op {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Ban => "ban",
            Self::Unban => "unban",
        }
    }
}

/// One fleet message, as published on the channel and kept in the hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub op: Op,
    /// Address or CIDR prefix, as `list` writes it.
    pub target: String,
    /// Absolute expiry, Unix seconds (UTC); `None` is permanent.
    pub expires_at: Option<i64>,
    pub source: Source,
    pub reason: String,
    /// The node that made the ban.
    pub node: String,
    /// Unique per message: `<node>-<event time ms>-<sequence>`.
    pub id: String,
    /// Event time, Unix milliseconds, for the lag.
    #[serde(default)]
    pub at: i64,
    /// The destination ports the ban holds on: absent for each node's
    /// `xdp.ports`, empty for all traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
}

/// Link state for `status` and metrics.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    queue_depth: AtomicU64,
    lag_ms: AtomicI64,
    published: AtomicU64,
    received: AtomicU64,
    /// Rejected messages, per reason in [`wire::Rejected::ALL`] order.
    rejected: [AtomicU64; wire::Rejected::ALL.len()],
    last_error: Mutex<Option<String>>,
    /// Per rejection reason: when it was last logged, and how many came
    /// since.
    rejections: Mutex<Vec<(wire::Rejected, Option<Instant>, u64)>>,
}

impl Health {
    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        metrics::gauge!(METRIC_CONNECTED).set(if up { 1.0 } else { 0.0 });
    }

    fn set_queue_depth(&self, depth: u64) {
        self.queue_depth.store(depth, Ordering::Relaxed);
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!(METRIC_QUEUE).set(depth as f64);
    }

    fn set_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    fn record_received(&self, n: u64, event_ms: i64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(METRIC_RECEIVED).increment(n);
        let lag = (now_ms() - event_ms).max(0);
        self.lag_ms.store(lag, Ordering::Relaxed);
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!(METRIC_LAG).set(lag as f64 / 1000.0);
    }

    fn record_published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(METRIC_PUBLISHED).increment(n);
    }

    /// Whether the link to Redis is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Messages waiting in the outbox.
    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// Received messages that were not applied.
    pub fn rejected(&self) -> u64 {
        self.rejected
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts `n` rejected messages and logs the reason, at most once per
    /// [`REJECTION_LOG_INTERVAL`] per reason, with how many came since.
    fn record_rejected(&self, reason: wire::Rejected, n: u64, example: &str) {
        if n == 0 {
            return;
        }
        if let Some(count) = wire::Rejected::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.rejected.get(i))
        {
            count.fetch_add(n, Ordering::Relaxed);
        }
        let mut log = self
            .rejections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let index = if let Some(index) = log.iter().position(|(r, _, _)| *r == reason) {
            index
        } else {
            log.push((reason, None, 0));
            log.len() - 1
        };
        let (_, last, since) = &mut log[index];
        *since += n;
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= REJECTION_LOG_INTERVAL) {
            warn!(
                reason = reason.as_str(),
                count = *since,
                example = %example.escape_debug(),
                "fleet: received messages rejected"
            );
            *last = Some(now);
            *since = 0;
        }
    }
}

/// Applies what other nodes decided to the local ban manager.
pub trait FleetTarget: Send + Sync {
    /// Bans through the manager (allowlist, widest prefix and length
    /// apply); returns how many were accepted. Blocking.
    fn ban_remote(&self, requests: Vec<BanRequest>) -> usize;
    /// Lifts a ban that came from the fleet, without publishing it again;
    /// a ban made here stays. Blocking.
    fn unban_remote(&self, target: IpNet);
}

/// The fleet of this daemon: its settings, outbox and link state.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    secret: Option<wire::Secret>,
    node: String,
    store: Arc<Store>,
    health: Health,
    wake: tokio::sync::Notify,
    sequence: AtomicU64,
}

impl Fleet {
    /// The fleet over `store`'s outbox; fails when the secret file cannot
    /// be read.
    pub fn new(config: FleetConfig, store: Arc<Store>) -> Result<Arc<Self>, FleetError> {
        let node = config.node_name();
        let secret = config
            .secret_file
            .as_deref()
            .map(wire::Secret::load)
            .transpose()?;
        if config.unprotected() {
            warn!(
                redis = %config.redacted_url(),
                "fleet: Redis is reached in plaintext off this host and fleet.secret_file is not set: \
                 anyone who can publish on the channel can ban on every node"
            );
        }
        let fleet = Arc::new(Self {
            config,
            secret,
            node,
            store,
            health: Health::default(),
            wake: tokio::sync::Notify::new(),
            sequence: AtomicU64::new(0),
        });
        fleet.health.set_connected(false);
        match fleet.store.outbox_len(OUTBOX_BACKEND) {
            Ok(depth) => fleet.health.set_queue_depth(depth),
            Err(error) => warn!(%error, "fleet: counting the outbox failed"),
        }
        Ok(fleet)
    }

    /// Greylisting's first sightings, shared through this fleet's Redis.
    pub fn triplets(self: &Arc<Self>) -> Arc<dyn crate::policy::SharedTriplets> {
        Arc::new(triplets::FleetTriplets::new(Arc::clone(self)))
    }

    /// Link state.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Sets the link gauges and the rejection counters (before a scrape;
    /// messages are rejected from the first resync on, before the metrics
    /// endpoint exists). Every rejection reason is listed.
    pub fn record_gauges(&self) {
        for (reason, count) in wire::Rejected::ALL.iter().zip(&self.health.rejected) {
            metrics::counter!(METRIC_REJECTED, "reason" => reason.as_str())
                .absolute(count.load(Ordering::Relaxed));
        }
        self.health.set_connected(self.health.connected());
        self.health.set_queue_depth(self.health.queue_depth());
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!(METRIC_LAG).set(self.health.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0);
    }

    /// One line for `status`.
    pub fn describe(&self) -> String {
        let state = if self.health.connected() {
            format!("connected to {}", self.config.redacted_url())
        } else {
            format!(
                "not connected to {} ({})",
                self.config.redacted_url(),
                self.health
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_deref()
                    .unwrap_or("not tried yet")
            )
        };
        format!(
            "node {}; {state}; {}; {} queued, {} published, {} received, {} rejected, lag {} ms",
            self.node,
            if self.secret.is_some() {
                "signed"
            } else {
                "unsigned"
            },
            self.health.queue_depth(),
            self.health.published.load(Ordering::Relaxed),
            self.health.received.load(Ordering::Relaxed),
            self.health.rejected(),
            self.health.lag_ms.load(Ordering::Relaxed),
        )
    }

    /// The manager observer that queues shared bans and every non-fleet
    /// unban in the outbox and wakes the publisher.
    pub fn observer(self: &Arc<Self>) -> BanObserver {
        let fleet = Arc::clone(self);
        Box::new(move |event| fleet.queue(event))
    }

    fn queue(&self, event: &BanEvent<'_>) {
        let messages: Vec<Message> = match event {
            BanEvent::Banned(rows) => rows
                .iter()
                .filter(|row| self.config.share.contains(&row.source))
                .map(|row| {
                    self.message(
                        Op::Ban,
                        &row.target,
                        row.expires_at,
                        row.source,
                        &row.reason,
                        row.scope.to_ports(),
                    )
                })
                .collect(),
            // Each node loads its feeds itself: a feed's lifting is its own
            // unless feeds are shared.
            BanEvent::Unbanned { target, source }
                if *source != Source::Fleet
                    && (*source != Source::Feed || self.config.share.contains(source)) =>
            {
                vec![self.message(Op::Unban, target, None, *source, "unbanned", None)]
            }
            BanEvent::Unbanned { .. } => Vec::new(),
        };
        if messages.is_empty() {
            return;
        }
        let ops: Vec<(&str, String)> = messages
            .iter()
            .filter_map(|m| {
                serde_json::to_string(m)
                    .ok()
                    .map(|json| (m.op.as_str(), json))
            })
            .collect();
        match self
            .store
            .outbox_push_many(OUTBOX_BACKEND, &ops, unix_now())
        {
            Ok(ids) => {
                self.health
                    .set_queue_depth(self.health.queue_depth() + ids.len() as u64);
                self.wake.notify_one();
            }
            Err(error) => {
                tracing::error!(%error, count = ops.len(), "fleet: queueing bans for the fleet failed; they stay local");
            }
        }
    }

    /// A received payload as a message, or `None` when it is rejected
    /// (counted and logged).
    fn read(&self, payload: &[u8]) -> Option<Message> {
        wire::decode(payload, self.secret.as_ref())
            .inspect_err(|&reason| {
                let shown = String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
                self.health.record_rejected(reason, 1, &shown);
            })
            .ok()
    }

    fn message(
        &self,
        op: Op,
        target: &IpNet,
        expires_at: Option<i64>,
        source: Source,
        reason: &str,
        ports: Option<Vec<u16>>,
    ) -> Message {
        let at = now_ms();
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        Message {
            op,
            target: target_to_string(target),
            expires_at,
            source,
            reason: reason.to_owned(),
            node: self.node.clone(),
            id: format!("{}-{at}-{n}", self.node),
            at,
            ports,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_errors_name_the_key_only_when_there_is_one() {
        let error = |key: &str| FleetError::Redis {
            url: "redis://***@192.0.2.10:6379".into(),
            operation: "connecting",
            key: key.into(),
            source: redis::RedisError::from((redis::ErrorKind::Io, "refused")),
        };
        let connecting = error("").to_string();
        assert!(
            connecting.starts_with("fleet: connecting on redis://***@192.0.2.10:6379: "),
            "{connecting}"
        );
        assert!(!connecting.contains("key"), "{connecting}");
        let zadd = error("spamwall:bans").to_string();
        assert!(zadd.contains(" (key spamwall:bans): "), "{zadd}");
    }

    #[test]
    fn message_json_shape() {
        let message = Message {
            op: Op::Ban,
            target: "192.0.2.7".into(),
            expires_at: None,
            source: Source::Policy,
            reason: "r".into(),
            node: "mx1".into(),
            id: "mx1-1-0".into(),
            at: 1,
            ports: Some(vec![465, 587]),
        };
        let json = serde_json::to_value(&message).expect("json");
        assert_eq!(json["op"], "ban");
        assert!(json["expires_at"].is_null());
        assert_eq!(json["source"], "policy");
        let back: Message = serde_json::from_value(json).expect("back");
        assert_eq!(back, message);
        let bytes = serde_json::to_vec(&message).expect("bytes");
        assert_eq!(wire::decode(&bytes, None), Ok(message));
        assert!(wire::decode(b"{\"op\":\"ban\"}", None).is_err());
    }
}
