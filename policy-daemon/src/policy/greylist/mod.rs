//! Greylisting, selective by score: a mail that reaches a threshold whose
//! action is `greylist` is deferred the first time its triplet (client
//! network, sender, recipient) is seen, and passes when the client
//! retries after `delay`, as a real MTA does and most bots do not.
//!
//! - Triplets are keyed by a hash ([`table::TripletKey`]), so every host
//!   of a fleet names a triplet the same way and memory per triplet is
//!   fixed, whatever the addresses' length.
//! - A client network that passed `auto_allow` distinct triplets skips
//!   greylisting; the ban allowlist is never greylisted.
//! - State lives in memory ([`table`]), is saved behind the requests to
//!   the daemon's `SQLite` store every second ([`store`]) and read back at
//!   start.
//! - With a fleet, the first sighting of a triplet is shared
//!   ([`SharedTriplets`]): a retry that lands on another MX passes. When
//!   the fleet cannot answer, greylisting goes on locally and says so.

mod store;
mod table;

use std::{
    net::IpAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::future::BoxFuture;
use ipnet::IpNet;
use parking_lot::{Mutex, RwLock};
use tracing::{debug, info, warn};

pub use store::StateError;
pub use table::TripletKey;

use super::{
    action::Template,
    checks::Mail,
    config::{DELAY_PLACEHOLDER, GreylistConfig},
};
use table::{Limits, NetworkKey, Table, Visit};

/// Triplets kept.
pub const METRIC_TRIPLETS: &str = "spamwall_greylist_triplets";
/// Greylisting answers, by `answer`: `defer`, `pass`, `auto_allowed`.
pub const METRIC_ANSWERS: &str = "spamwall_greylist_answers_total";
/// Triplets and client networks dropped at `max_triplets`.
pub const METRIC_DROPPED: &str = "spamwall_greylist_dropped_total";
/// Lookups of the fleet's triplets that failed (greylisting went on
/// locally).
pub const METRIC_SHARED_ERRORS: &str = "spamwall_greylist_shared_errors_total";

/// How often the state is saved.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired state is purged.
const PURGE_INTERVAL: Duration = Duration::from_mins(1);
/// Longest a request waits for the fleet's word on a triplet.
const SHARED_TIMEOUT: Duration = Duration::from_millis(500);

/// The first sightings of triplets, shared between the MX hosts of a
/// fleet (Redis).
pub trait SharedTriplets: Send + Sync + std::fmt::Debug {
    /// Records `now` (Unix ms) as `key`'s first sighting unless a host
    /// recorded one within `expire`; returns the sighting that stands.
    fn first_seen(
        &self,
        key: TripletKey,
        now: i64,
        expire: Duration,
    ) -> BoxFuture<'_, Result<i64, String>>;

    /// One line on how sharing goes, for `status`.
    fn describe(&self) -> String;
}

/// Now, in Unix milliseconds.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// What a reload may change.
#[derive(Debug)]
struct Settings {
    v4_prefix: u8,
    v6_prefix: u8,
    auto_allow: u32,
    expire: Duration,
    /// The action, split at each `%DELAY%`.
    action: Vec<Template>,
    allowlist: Vec<IpNet>,
}

impl Settings {
    fn new(config: &GreylistConfig, allowlist: &[IpNet]) -> Self {
        Self {
            v4_prefix: config.v4_prefix,
            v6_prefix: config.v6_prefix,
            auto_allow: config.auto_allow,
            expire: config.expire,
            action: config
                .action
                .trim()
                .split(DELAY_PLACEHOLDER)
                .map(Template::parse)
                .collect(),
            allowlist: allowlist.to_vec(),
        }
    }

    fn network(&self, ip: IpAddr) -> NetworkKey {
        let mut key = [0; 17];
        match ip {
            IpAddr::V4(ip) => {
                let bits = u32::from(ip)
                    & u32::MAX
                        .checked_shl(32 - u32::from(self.v4_prefix))
                        .unwrap_or(0);
                key[0] = 4;
                key[1..5].copy_from_slice(&bits.to_be_bytes());
            }
            IpAddr::V6(ip) => {
                let bits = u128::from(ip)
                    & u128::MAX
                        .checked_shl(128 - u32::from(self.v6_prefix))
                        .unwrap_or(0);
                key[0] = 6;
                key[1..].copy_from_slice(&bits.to_be_bytes());
            }
        }
        key
    }

    fn render(&self, ip: &str, score: f64, detail: &str, remaining: i64) -> String {
        let delay = humantime::format_duration(Duration::from_secs(
            u64::try_from(remaining).unwrap_or(0).div_ceil(1000),
        ))
        .to_string();
        let mut out = String::new();
        for (i, part) in self.action.iter().enumerate() {
            if i > 0 {
                out.push_str(&delay);
            }
            out.push_str(&part.render(ip, score, detail));
        }
        out
    }
}

/// The sender as a triplet holds it, as postgrey keys it: lower case,
/// without a BATV tag (`prvs=…=`) or a `+extension`, and each number that
/// is a word of its own as `#`, so a newsletter's per-message bounce
/// address (`news-2024-1234@…`) is one sender.
fn sender_key(sender: &str) -> String {
    let lower = sender.to_ascii_lowercase();
    let (local, domain) = lower.rsplit_once('@').unwrap_or((lower.as_str(), ""));
    let local = local
        .strip_prefix("prvs=")
        .and_then(|rest| rest.split_once('=').map(|(_, rest)| rest))
        .unwrap_or(local);
    let local = local.split_once('+').map_or(local, |(base, _)| base);
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = local.as_bytes();
    let mut out = String::with_capacity(lower.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let alone = run > 0
            && (i == 0 || !word(bytes[i - 1]))
            && bytes.get(i + run).is_none_or(|b| !word(*b));
        if alone {
            out.push('#');
            i += run;
        } else {
            let end = i + run.max(1);
            out.push_str(&local[i..end]);
            i = end;
        }
    }
    if !domain.is_empty() {
        out.push('@');
        out.push_str(domain);
    }
    out
}

/// A triplet's key: the first 16 bytes of SHA-256 over the network, the
/// sender's key and the recipient, each ended by a 0 byte (which neither
/// address can hold: the codec refuses it).
pub fn key(network: &NetworkKey, sender: &str, recipient: &str) -> TripletKey {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(network);
    digest.update(sender_key(sender).as_bytes());
    digest.update(&[0]);
    digest.update(recipient.to_ascii_lowercase().as_bytes());
    digest.update(&[0]);
    let mut key = [0; 16];
    key.copy_from_slice(&digest.finish().as_ref()[..16]);
    key
}

/// Counters for metrics and `status`.
#[derive(Debug, Default)]
struct Counters {
    deferred: AtomicU64,
    passed: AtomicU64,
    auto_allowed: AtomicU64,
    shared_errors: AtomicU64,
}

/// How greylisting answered one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Deferred, with this action.
    Defer(String),
    /// Let through.
    Pass,
}

/// Greylisting: its state, its saver thread and its fleet link.
pub struct Greylist {
    settings: RwLock<Arc<Settings>>,
    table: Arc<Table>,
    shared: Option<Arc<dyn SharedTriplets>>,
    counters: Arc<Counters>,
    saver: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// When the fleet last failed to answer, to warn once a minute.
    warned: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Greylist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Greylist")
            .field("table", &self.table)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

fn limits(config: &GreylistConfig) -> Limits {
    Limits {
        delay: millis(config.delay),
        expire: millis(config.expire),
        keep: millis(config.keep),
        max_entries: config.max_triplets,
    }
}

impl Greylist {
    /// Greylisting on `config`, its state read from and saved to the
    /// `SQLite` file `store` (none: memory only), the ban `allowlist`
    /// exempt, first sightings shared through `shared`.
    pub fn start(
        config: &GreylistConfig,
        store: Option<&Path>,
        allowlist: &[IpNet],
        shared: Option<Arc<dyn SharedTriplets>>,
    ) -> Result<Self, StateError> {
        let table = Arc::new(Table::new(limits(config)));
        let counters = Arc::new(Counters::default());
        let saver = match store {
            Some(path) => {
                let mut state = store::StateStore::open(path)?;
                let (triplets, clients) = state.load()?;
                table.restore(triplets, clients, unix_ms());
                info!(triplets = table.len(), store = %path.display(), "greylisting state loaded");
                let (stop, stopping) = mpsc::channel();
                let thread = {
                    let table = Arc::clone(&table);
                    std::thread::Builder::new()
                        .name("greylist-save".to_owned())
                        .spawn(move || save_loop(&table, &mut state, &stopping))
                        .map_err(|e| StateError::thread(path, e))?
                };
                Some((stop, thread))
            }
            None => None,
        };
        Ok(Self {
            settings: RwLock::new(Arc::new(Settings::new(config, allowlist))),
            table,
            shared,
            counters,
            saver: Mutex::new(saver),
            warned: Mutex::new(None),
        })
    }

    /// New settings for later requests (a reload); the state stays.
    pub fn reconfigure(&self, config: &GreylistConfig, allowlist: &[IpNet]) {
        self.table.set_limits(limits(config));
        *self.settings.write() = Arc::new(Settings::new(config, allowlist));
    }

    /// Triplets kept.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no triplet is kept.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// One line for `status`.
    pub fn describe(&self) -> String {
        let sharing = self
            .shared
            .as_ref()
            .map_or_else(|| "local".to_owned(), |shared| shared.describe());
        format!(
            "{} triplets, {} deferred, {} passed, {} auto-allowed; {sharing}",
            self.table.len(),
            self.counters.deferred.load(Ordering::Relaxed),
            self.counters.passed.load(Ordering::Relaxed),
            self.counters.auto_allowed.load(Ordering::Relaxed),
        )
    }

    /// Greylists one request of a mail that reached a greylisting
    /// threshold. Only RCPT requests with a client and a recipient are
    /// greylisted; the rest pass.
    pub async fn decide(
        &self,
        mail: &Mail<'_>,
        ip_text: &str,
        score: f64,
        detail: &str,
        deadline: Instant,
    ) -> Answer {
        let (Some(ip), Some(recipient)) = (mail.client, mail.recipient) else {
            return Answer::Pass;
        };
        if !mail
            .protocol_state
            .is_some_and(|state| state.eq_ignore_ascii_case("RCPT"))
        {
            return Answer::Pass;
        }
        let settings = Arc::clone(&self.settings.read());
        if settings.allowlist.iter().any(|net| net.contains(&ip)) {
            return Answer::Pass;
        }
        let now = unix_ms();
        let network = settings.network(ip);
        if settings.auto_allow > 0 && self.table.passes(&network, now) >= settings.auto_allow {
            self.counters.auto_allowed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(METRIC_ANSWERS, "answer" => "auto_allowed").increment(1);
            return Answer::Pass;
        }
        let key = key(&network, mail.sender.unwrap_or(""), recipient);
        let elsewhere = match &self.shared {
            Some(shared) if !self.table.passed(&key, now) => {
                let until = deadline.min(Instant::now() + SHARED_TIMEOUT);
                match tokio::time::timeout_at(
                    until.into(),
                    shared.first_seen(key, now, settings.expire),
                )
                .await
                {
                    Ok(Ok(at)) => Some(at),
                    Ok(Err(error)) => {
                        self.shared_failed(&error);
                        None
                    }
                    Err(_) => {
                        self.shared_failed("no answer in time");
                        None
                    }
                }
            }
            _ => None,
        };
        let (visit, dropped) = self.table.visit(key, now, elsewhere);
        if dropped > 0 {
            metrics::counter!(METRIC_DROPPED).increment(dropped);
        }
        match visit {
            Visit::Defer { remaining } => {
                self.counters.deferred.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_ANSWERS, "answer" => "defer").increment(1);
                debug!(
                    client = ip_text,
                    sender = mail.sender.unwrap_or(""),
                    recipient,
                    remaining_ms = remaining,
                    "greylisted"
                );
                Answer::Defer(settings.render(ip_text, score, detail, remaining))
            }
            Visit::Pass { first, waited } => {
                self.counters.passed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_ANSWERS, "answer" => "pass").increment(1);
                if first {
                    let dropped = self.table.add_pass(network, now);
                    if dropped > 0 {
                        metrics::counter!(METRIC_DROPPED).increment(dropped);
                    }
                    info!(
                        client = ip_text,
                        sender = mail.sender.unwrap_or(""),
                        recipient,
                        waited_s = waited / 1000,
                        "greylisting passed"
                    );
                }
                Answer::Pass
            }
        }
    }

    fn shared_failed(&self, error: &str) {
        self.counters.shared_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_SHARED_ERRORS).increment(1);
        let mut warned = self.warned.lock();
        if warned.is_none_or(|at| at.elapsed() >= Duration::from_mins(1)) {
            warn!(%error, "greylisting: the fleet's triplets are out of reach; greylisting locally");
            *warned = Some(Instant::now());
        }
    }

    /// Sets the triplet gauge (before a scrape).
    pub fn record_gauges(&self) {
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!(METRIC_TRIPLETS).set(self.table.len() as f64);
    }

    /// Saves what is left and stops the saver thread.
    pub fn stop(&self) {
        if let Some((stop, thread)) = self.saver.lock().take() {
            let _ = stop.send(());
            if thread.join().is_err() {
                warn!("greylisting: the save thread panicked");
            }
        }
    }
}

impl Drop for Greylist {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Saves the table's changes every [`SAVE_INTERVAL`] and purges every
/// [`PURGE_INTERVAL`], until `stop` says so or is dropped; saves once
/// more on the way out. A failed save keeps its changes for the next.
fn save_loop(table: &Table, state: &mut store::StateStore, stop: &mpsc::Receiver<()>) {
    let mut purged = Instant::now();
    loop {
        let stopping = !matches!(
            stop.recv_timeout(SAVE_INTERVAL),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        if purged.elapsed() >= PURGE_INTERVAL {
            let removed = table.purge(unix_ms());
            if removed.dropped > 0 {
                metrics::counter!(METRIC_DROPPED).increment(removed.dropped);
            }
            purged = Instant::now();
        }
        let (triplets, clients) = table.take_changes();
        if let Err(error) = state.save(&triplets, &clients) {
            warn!(%error, "greylisting state not saved; retrying");
            table.give_back(triplets, clients);
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
