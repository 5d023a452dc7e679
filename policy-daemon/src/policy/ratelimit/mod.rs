//! Rate limits (`[[policy.ratelimit]]`): how many RCPT requests, or mails,
//! one value of a request attribute (a client address, a sender, a SASL
//! login) may send in a sliding window.
//!
//! Limits count at `protocol_state=RCPT` only, after the allow lists of the
//! check chain (an allow match answers before any limit counts). A request
//! without the key attribute, or with it empty, is not counted. Values are
//! compared without ASCII case. `recipients` counts every RCPT request;
//! `mails` counts a mail (`instance`) once, at its first RCPT, and every
//! later RCPT of a mail found over the limit is answered the same way.
//! Requests over the limit count too: a client that keeps trying stays
//! over.
//!
//! - [`window`] is the sliding-window arithmetic, the same locally and in
//!   Redis;
//! - [`table`] holds the counters in memory, bounded;
//! - [`persist`] writes them behind to the daemon's database, so that they
//!   survive a restart;
//! - [`SharedCounter`] is what `[fleet]` implements to count in Redis;
//!   local counting goes on meanwhile and takes over when Redis fails.

mod persist;
mod table;
mod window;

use std::{
    fmt,
    path::Path,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

pub use super::config::ratelimit::{Compiled, Count, DEFAULT_KEYS, RateLimitConfig, compile};
pub use persist::PersistError;
pub use window::{estimate, window_start};

use self::{persist::Persist, table::Table};
use super::{
    action::Template,
    cache::TtlCache,
    checks::{Hit, Mail},
    codec::Request,
};
use crate::{
    bans::{BanLength, BanScope},
    duration::BanTime,
};

/// How often changed counters are written to disk.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a mail's `mails` verdict is remembered for its later RCPTs.
const MAIL_TTL: Duration = Duration::from_hours(1);
/// Longer values are counted by their SHA-256: a client choosing long
/// senders cannot make each counter cost kilobytes, here or in Redis.
pub const MAX_VALUE_BYTES: usize = 128;

/// What [`SharedCounter::add`] returns: the counts of the current and
/// the previous fixed window, or `None`.
pub type Counted<'a> = Pin<Box<dyn Future<Output = Option<(u64, u64)>> + Send + 'a>>;

/// Counters shared by several hosts (Redis, through `[fleet]`).
pub trait SharedCounter: Send + Sync + fmt::Debug {
    /// Adds `add` to the fixed window starting at `start` (Unix ms, length
    /// `length` ms) of `key`, atomically, and returns the counts of that
    /// window and of the one before it; `None` when the shared store did
    /// not answer by `deadline` (the caller counts locally).
    fn add<'a>(
        &'a self,
        key: &'a [u8],
        start: u64,
        length: u64,
        add: u64,
        deadline: Instant,
    ) -> Counted<'a>;
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The counters of every limit, kept across reloads: in memory, on disk
/// and, with `[fleet]`, in Redis.
#[derive(Debug)]
pub struct RateState {
    table: Table,
    /// `mails`: the count each mail was given at its first RCPT.
    mails: TtlCache<Vec<u8>, u64>,
    persist: Option<Persist>,
    shared: Option<Arc<dyn SharedCounter>>,
}

impl RateState {
    /// Counters for at most `capacity` keys, loaded from and written to the
    /// database at `database` (none: memory only), counted in `shared` as
    /// well when given. A database that cannot be read leaves the counters
    /// empty (logged): limits count afresh rather than not at all.
    pub fn open(
        capacity: usize,
        database: Option<&Path>,
        shared: Option<Arc<dyn SharedCounter>>,
    ) -> Arc<Self> {
        let table = Table::new(capacity);
        let persist = database.and_then(|path| match Persist::open(path) {
            Ok(persist) => {
                match persist.load(&table, unix_ms(), capacity) {
                    Ok(loaded) if loaded > 0 => info!(loaded, "rate limit counters restored"),
                    Ok(_) => {}
                    Err(error) => {
                        warn!(%error, "rate limit counters not restored; counting afresh");
                    }
                }
                Some(persist)
            }
            Err(error) => {
                warn!(%error, "rate limit counters kept in memory only");
                None
            }
        });
        Arc::new(Self {
            table,
            mails: TtlCache::new(capacity),
            persist,
            shared,
        })
    }

    /// Writes the changed counters to disk (blocking).
    #[expect(
        clippy::cast_precision_loss,
        reason = "a count of keys, far below 2^52"
    )]
    pub fn flush(&self) {
        metrics::gauge!(crate::metrics::RATELIMIT_KEYS).set(self.table.len() as f64);
        if let Some(persist) = &self.persist
            && let Err(error) = persist.flush(&self.table, unix_ms())
        {
            warn!(%error, "rate limit counters not written; retrying with the next write");
        }
    }

    /// Writes the counters every [`WRITE_INTERVAL`] and once more when
    /// `shutdown` turns true.
    pub fn spawn_writer(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let state = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => true,
                    () = tokio::time::sleep(WRITE_INTERVAL) => false,
                };
                let writing = Arc::clone(&state);
                let _ = tokio::task::spawn_blocking(move || writing.flush()).await;
                if stop {
                    break;
                }
            }
        })
    }

    /// Counters held and dropped at the cap, for tests and `stats`.
    pub fn counters(&self) -> (usize, u64) {
        (self.table.len(), self.table.dropped())
    }
}

/// One compiled limit.
#[derive(Debug)]
struct Limit {
    config: Compiled,
    action: Template,
    length: u64,
    ban: Option<BanLength>,
}

/// A limit a request went over.
#[derive(Debug)]
pub struct Overrun {
    /// The limit's place in `[[policy.ratelimit]]`.
    pub index: usize,
    /// Its detail and score for the mail.
    pub hit: Hit,
    /// Its answer, not yet rendered.
    pub action: Template,
    /// A ban to make now (once per key and window).
    pub ban: Option<(BanLength, String)>,
}

/// The limits of one configuration, counting in a [`RateState`].
#[derive(Debug)]
pub struct RateLimits {
    limits: Vec<Limit>,
    state: Arc<RateState>,
}

impl RateLimits {
    /// `configs`, compiled, counting in `state`.
    pub fn new(configs: &[RateLimitConfig], state: Arc<RateState>) -> Result<Self, Vec<String>> {
        let limits = compile(configs)?
            .into_iter()
            .map(|config| Limit {
                action: Template::parse(&config.action),
                length: u64::try_from(config.window.as_millis()).unwrap_or(u64::MAX),
                ban: config
                    .ban
                    .map(|BanTime(length)| length.map_or(BanLength::Permanent, BanLength::Base)),
                config,
            })
            .collect();
        Ok(Self { limits, state })
    }

    /// How many limits there are.
    pub fn len(&self) -> usize {
        self.limits.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// The scope rate-limit bans hold in: `xdp.ports`.
    pub const fn scope() -> BanScope {
        BanScope::Default
    }

    /// Counts `request` against every limit (at RCPT only) and returns the
    /// limits it is over. Shared counting waits at most until `deadline`.
    pub async fn count(
        &self,
        request: &Request,
        mail: &Mail<'_>,
        deadline: Instant,
    ) -> Vec<Overrun> {
        let mut overruns = Vec::new();
        if !mail
            .protocol_state
            .is_some_and(|state| state.eq_ignore_ascii_case("RCPT"))
        {
            return overruns;
        }
        for (index, limit) in self.limits.iter().enumerate() {
            let Some(value) = request
                .attributes()
                .find_map(|(name, value)| (name == limit.config.key).then_some(value))
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            let key = counter_key(&limit.config.name, value);
            if let Some(overrun) = self.count_one(index, limit, &key, mail, deadline).await {
                overruns.push(overrun);
            }
        }
        overruns
    }

    async fn count_one(
        &self,
        index: usize,
        limit: &Limit,
        key: &[u8],
        mail: &Mail<'_>,
        deadline: Instant,
    ) -> Option<Overrun> {
        let now = unix_ms();
        let length = limit.length;
        // `mails`: a mail already counted keeps the count it was given.
        let mail_key = (limit.config.count == Count::Mails)
            .then(|| {
                mail.instance.map(|instance| {
                    let mut mail_key = key.to_vec();
                    mail_key.push(0);
                    mail_key.extend_from_slice(instance.as_bytes());
                    mail_key
                })
            })
            .flatten();
        if let Some(mail_key) = &mail_key
            && let Some(count) = self.state.mails.get(mail_key, Instant::now(), |c| *c)
        {
            return (count > limit.config.limit).then(|| Self::overrun(index, limit, count, None));
        }
        let local = self
            .state
            .table
            .update(key, length, now, |entry| entry.window.add(1, now, length));
        let start = window_start(now, length);
        let count = match &self.state.shared {
            Some(shared) => match shared.add(key, start, length, 1, deadline).await {
                Some((current, previous)) => estimate(current, previous, now, length),
                None => local,
            },
            None => local,
        };
        if let Some(mail_key) = mail_key {
            let at = Instant::now();
            self.state.mails.insert(mail_key, count, at + MAIL_TTL, at);
        }
        if count <= limit.config.limit {
            return None;
        }
        metrics::counter!(crate::metrics::RATELIMIT_OVERRUNS, "limit" => limit.config.name.clone())
            .increment(1);
        // Once per key and fixed window.
        let ban = limit.ban.filter(|_| {
            self.state.table.update(key, length, now, |entry| {
                let fresh = entry.banned != start + 1;
                entry.banned = start + 1;
                fresh
            })
        });
        let value = String::from_utf8_lossy(&key[limit.config.name.len() + 1..]).into_owned();
        if ban.is_some() || count == limit.config.limit + 1 {
            info!(limit = %limit.config.name, key = %value, count, "rate limit exceeded");
        } else {
            debug!(limit = %limit.config.name, key = %value, count, "rate limit still exceeded");
        }
        let ban = ban.map(|length| {
            (
                length,
                format!(
                    "rate limit {}: {} {value} over {} in {}",
                    limit.config.name,
                    limit.config.key,
                    limit.config.limit,
                    humantime::format_duration(limit.config.window)
                ),
            )
        });
        Some(Self::overrun(index, limit, count, ban))
    }

    fn overrun(
        index: usize,
        limit: &Limit,
        count: u64,
        ban: Option<(BanLength, String)>,
    ) -> Overrun {
        let what = format!(
            "ratelimit/{}={count}/{}",
            limit.config.name, limit.config.limit
        );
        Overrun {
            index,
            hit: Hit::new(limit.config.score, &what),
            action: limit.action.clone(),
            ban,
        }
    }
}

/// The counter of `value` under limit `name`: the name, a NUL, and the
/// value in ASCII lower case, or `sha256:` and its hex digest when longer
/// than [`MAX_VALUE_BYTES`].
fn counter_key(name: &str, value: &str) -> Vec<u8> {
    let lowered = value.to_ascii_lowercase();
    let mut key = Vec::with_capacity(name.len() + 1 + MAX_VALUE_BYTES.min(lowered.len()));
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    if lowered.len() > MAX_VALUE_BYTES {
        let digest = ring::digest::digest(&ring::digest::SHA256, lowered.as_bytes());
        key.extend_from_slice(b"sha256:");
        key.extend_from_slice(data_encoding::HEXLOWER.encode(digest.as_ref()).as_bytes());
    } else {
        key.extend_from_slice(lowered.as_bytes());
    }
    key
}

/// How hard an access(5) answer is: 3 refuses for good (`REJECT`, `5NN`,
/// `DISCARD`), 2 for now (`DEFER…`, `4NN`), 1 anything else that does
/// something, 0 `DUNNO` and `OK`. A rate limit's answer stands unless a
/// threshold's is harder.
pub fn severity(action: &str) -> u8 {
    let word = action.split_whitespace().next().unwrap_or("");
    let upper = word.to_ascii_uppercase();
    if upper.starts_with('5')
        || upper == "REJECT"
        || upper == "DISCARD"
        || upper.starts_with("REJECT_")
    {
        3
    } else if upper.starts_with('4') || upper.starts_with("DEFER") {
        2
    } else {
        u8::from(!(upper.is_empty() || upper == "DUNNO" || upper == "OK"))
    }
}

#[cfg(test)]
#[expect(clippy::float_cmp, reason = "scores are small integers, exact in f64")]
mod tests;
