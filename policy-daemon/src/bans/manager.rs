//! The ban manager: the one path every ban takes, whatever its source.
//!
//! It validates the target, enforces the allowlist (and, optionally, the
//! host's own addresses), computes the ban length with escalation for repeat
//! offenders, writes the store — the source of truth — before anything is
//! acknowledged, then brings the backends in line: the XDP maps and the
//! fail2ban queue. Reconciliation repairs the maps from the store (after a
//! reboot wiped the pins, or when the LRU map evicted a live ban).

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

// foldhash: several times faster than SipHash on address keys, and seeded
// per process, so attacker-chosen addresses cannot aim at collisions.
use foldhash::{HashMap, HashMapExt as _, HashSet};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::{debug, info, warn};
use xdp_common::BanValue;

use super::{
    Allowlist, BanEntry, BanError, BanLength, BanStats, Source, canonical_net,
    fail2ban::{Fail2banBackend, Fail2banOp},
    store::{Store, StoredBan},
    target_to_string,
};
use crate::{
    clock::{self, expiry_after, secs_i64, unix_now},
    dataplane::{Dataplane, monotonic_now_ns},
};

/// Escalation for repeat offenders, like fail2ban's `bantime.increment`:
/// the n-th ban within the history age lasts `base × 2^min(n−1, 20) × factor`,
/// capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Escalation {
    pub factor: f64,
    pub max: Duration,
}

/// Ban a whole prefix once `threshold` of its addresses were banned within
/// `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregation {
    pub threshold: u32,
    pub window: Duration,
    pub v4_prefix: u8,
    pub v6_prefix: u8,
}

/// The widest prefix a ban may cover, per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widest {
    pub v4: u8,
    pub v6: u8,
}

impl Default for Widest {
    fn default() -> Self {
        Self { v4: 16, v6: 32 }
    }
}

impl Widest {
    /// The limit for `target`'s family, if `target` is wider than it.
    pub const fn exceeded_by(self, target: &IpNet) -> Option<u8> {
        let (len, widest) = match target {
            IpNet::V4(n) => (n.prefix_len(), self.v4),
            IpNet::V6(n) => (n.prefix_len(), self.v6),
        };
        if len < widest { Some(widest) } else { None }
    }
}

/// Whether a ban may be wider than [`BanPolicy::widest`]: only a person at
/// the command line says so (`--force`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breadth {
    Bounded,
    Forced,
}

/// Settings the manager applies to every ban.
#[derive(Clone, Debug, PartialEq)]
pub struct BanPolicy {
    pub allowlist: Allowlist,
    /// Length of a ban that names none; `None` is permanent.
    pub default_bantime: Option<Duration>,
    /// `None`: every ban lasts its base length.
    pub escalation: Option<Escalation>,
    /// How long a past ban counts towards escalation before it is purged.
    pub history_age: Duration,
    pub aggregation: Option<Aggregation>,
    /// Never ban the host's own addresses.
    pub ignore_self: bool,
    /// No ban covers a wider prefix than this unless forced.
    pub widest: Widest,
}

impl Default for BanPolicy {
    fn default() -> Self {
        Self {
            allowlist: Allowlist::default(),
            default_bantime: Some(Duration::from_hours(1)),
            escalation: None,
            history_age: Duration::from_hours(24 * 7),
            aggregation: None,
            ignore_self: false,
            widest: Widest::default(),
        }
    }
}

/// One ban to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRequest {
    pub target: IpNet,
    pub length: BanLength,
    pub source: Source,
    pub reason: String,
    /// Score detail of a policy verdict.
    pub detail: String,
}

/// Where the XDP backend stands.
#[derive(Debug)]
pub struct XdpBackend {
    /// The loaded program and maps; `None` when loading failed.
    pub dataplane: Option<Dataplane>,
    /// Whether packets are being checked (attached to an interface).
    pub enforcing: bool,
    /// Why not, or where: shown by `status`.
    pub note: String,
}

/// fail2ban as a backend, and when it is used.
#[derive(Debug)]
pub struct Fail2banLink {
    pub backend: Fail2banBackend,
    /// `ban.backends` names it: used always. Otherwise only while XDP is
    /// not enforcing (fallback).
    pub always: bool,
}

/// A change the manager made, told to its observer after the store
/// committed it (the fleet publishes shared ones).
#[derive(Debug)]
pub enum BanEvent<'a> {
    /// These rows were stored and enforced.
    Banned(&'a [StoredBan]),
    /// The ban on `target` was lifted at the request of `source`.
    Unbanned { target: IpNet, source: Source },
}

/// Called with every [`BanEvent`], under the manager's lock: keep it short.
pub type BanObserver = Box<dyn Fn(&BanEvent<'_>) + Send + Sync>;

/// The optional observer; `Debug` by name only.
#[derive(Default)]
struct Observer(Option<BanObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(set)"
        } else {
            "Observer(none)"
        })
    }
}

/// What a reconciliation of the fail2ban jail did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fail2banReconciled {
    /// Active bans the jail lacked, queued again.
    pub resent: u64,
    /// Jail entries no active ban explains (expired, lifted, or never
    /// ours), queued for lifting.
    pub lifted: u64,
    /// Jail entries that are not an address or prefix, left alone.
    pub foreign: u64,
}

/// What a reconciliation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Live bans missing from the maps at start, written back.
    pub restored: u64,
    /// Live bans that disappeared from the LRU maps while running.
    pub evicted: u64,
    /// Map entries the store does not hold (or expired), removed.
    pub removed: u64,
    /// Entries whose expiry or count differed from the store, rewritten.
    pub corrected: u64,
}

/// The one path for bans.
#[derive(Debug)]
pub struct BanManager {
    store: Arc<Store>,
    /// Every store row (active and history), mirrored for lookups.
    index: HashMap<IpNet, StoredBan>,
    xdp: XdpBackend,
    fail2ban: Option<Fail2banLink>,
    policy: BanPolicy,
    own_addresses: Vec<IpNet>,
    /// When each ban sent to fail2ban ends, soonest first; an entry whose
    /// row has since changed is skipped when it comes due.
    fail2ban_expiries: BTreeSet<(i64, IpNet)>,
    /// Per aggregation prefix: each address newly banned in it, with when.
    recent: HashMap<IpNet, Vec<(IpNet, i64)>>,
    evicted: u64,
    backend_errors: u64,
    observer: Observer,
}

impl BanManager {
    /// Loads the store into memory. Call [`BanManager::reconcile`] next.
    pub fn new(
        store: Arc<Store>,
        xdp: XdpBackend,
        fail2ban: Option<Fail2banLink>,
        policy: BanPolicy,
    ) -> Result<Self, BanError> {
        let rows = store.all().map_err(|e| BanError::Store {
            message: e.to_string(),
        })?;
        let index = rows.into_iter().map(|ban| (ban.target, ban)).collect();
        let mut manager = Self {
            store,
            index,
            xdp,
            fail2ban,
            policy: BanPolicy::default(),
            own_addresses: Vec::new(),
            recent: HashMap::new(),
            fail2ban_expiries: BTreeSet::new(),
            evicted: 0,
            backend_errors: 0,
            observer: Observer::default(),
        };
        manager.set_policy(policy);
        Ok(manager)
    }

    /// Replaces the settings (on reload).
    pub fn set_policy(&mut self, policy: BanPolicy) {
        self.own_addresses = if policy.ignore_self {
            host_addresses()
        } else {
            Vec::new()
        };
        self.policy = policy;
        self.lift_disallowed();
    }

    /// Sets the observer told about every ban and unban after the store
    /// committed it.
    pub fn set_observer(&mut self, observer: BanObserver) {
        self.observer = Observer(Some(observer));
    }

    fn tell(&self, event: &BanEvent<'_>) {
        if let Some(observer) = &self.observer.0 {
            observer(event);
        }
    }

    /// The settings in force.
    pub fn policy(&self) -> &BanPolicy {
        &self.policy
    }

    /// The XDP backend, for attach, reload and status.
    pub fn xdp(&self) -> &XdpBackend {
        &self.xdp
    }

    /// The XDP backend, mutable.
    pub fn xdp_mut(&mut self) -> &mut XdpBackend {
        &mut self.xdp
    }

    /// The fail2ban backend, if configured.
    pub fn fail2ban(&self) -> Option<&Fail2banLink> {
        self.fail2ban.as_ref()
    }

    /// Whether bans currently go to fail2ban.
    pub fn fail2ban_active(&self) -> bool {
        self.fail2ban
            .as_ref()
            .is_some_and(|link| link.always || !self.xdp.enforcing)
    }

    /// Queues every active ban for fail2ban (at start, or when it becomes
    /// the fallback); fail2ban answers "already banned" for those it has.
    pub fn sync_fail2ban(&mut self) {
        if !self.fail2ban_active() {
            return;
        }
        let now = unix_now();
        let ops = self
            .index
            .values()
            .filter(|row| row.is_active(now))
            .map(|row| Fail2banOp::ban(row.target))
            .collect();
        self.track_fail2ban_expiries();
        self.queue_for_fail2ban(ops);
    }

    /// Notes when every active ban ends, so that [`Self::expire_fail2ban`]
    /// lifts it from fail2ban then (at start, and when fail2ban takes
    /// over).
    pub fn track_fail2ban_expiries(&mut self) {
        if !self.fail2ban_active() {
            return;
        }
        let now = unix_now();
        let expiries: Vec<(i64, IpNet)> = self
            .index
            .values()
            .filter(|row| row.is_active(now))
            .filter_map(|row| row.expires_at.map(|at| (at, row.target)))
            .collect();
        self.fail2ban_expiries.extend(expiries);
    }

    /// Queues the unban of every ban sent to fail2ban whose expiry has
    /// come; returns how many. Called every second or so: fail2ban keeps a
    /// ban until told (the jail's `bantime = -1`), so its end is ours to
    /// send. An unban that cannot be delivered waits in the outbox.
    pub fn expire_fail2ban(&mut self) -> usize {
        let now = unix_now();
        let mut ops = Vec::new();
        while let Some(&(at, target)) = self.fail2ban_expiries.first() {
            if at > now {
                break;
            }
            self.fail2ban_expiries.pop_first();
            // A ban extended or lifted since has another entry or was
            // already unbanned.
            if self
                .index
                .get(&target)
                .is_some_and(|row| row.expires_at == Some(at))
            {
                ops.push(Fail2banOp::unban(target));
            }
        }
        let expired = ops.len();
        if expired > 0 {
            debug!(expired, "bans ended: unbans queued for fail2ban");
            self.queue_for_fail2ban(ops);
        }
        expired
    }

    /// Brings the fail2ban jail, whose entries are `in_jail`, in line with
    /// the store: while fail2ban is in use every active ban must be in it,
    /// and nothing else; while it is an idle fallback, nothing. Missing
    /// bans and stray entries are queued through the outbox.
    pub fn reconcile_fail2ban(&mut self, in_jail: &[String]) -> Fail2banReconciled {
        let mut report = Fail2banReconciled::default();
        let now = unix_now();
        let active = self.fail2ban_active();
        let mut jail: HashSet<IpNet> = HashSet::default();
        for entry in in_jail {
            match super::parse_target(entry) {
                Ok(net) => {
                    jail.insert(net);
                }
                Err(_) => report.foreign += 1,
            }
        }
        let wanted = |row: &StoredBan| active && row.is_active(now);
        let mut ops = Vec::new();
        let mut expiries = Vec::new();
        for row in self.index.values().filter(|row| wanted(row)) {
            if !jail.contains(&row.target) {
                ops.push(Fail2banOp::ban(row.target));
                if let Some(at) = row.expires_at {
                    expiries.push((at, row.target));
                }
                report.resent += 1;
            }
        }
        for net in jail {
            if !self.index.get(&net).is_some_and(&wanted) {
                ops.push(Fail2banOp::unban(net));
                report.lifted += 1;
            }
        }
        self.fail2ban_expiries.extend(expiries);
        if let Some(link) = &self.fail2ban
            && let Err(error) = link.backend.submit_many(ops)
        {
            self.backend_errors += 1;
            warn!(%error, "queueing the fail2ban reconciliation failed; the next one retries");
        }
        report
    }

    fn queue_for_fail2ban(&mut self, ops: Vec<Fail2banOp>) {
        if ops.is_empty() || !self.fail2ban_active() {
            return;
        }
        let Some(link) = &self.fail2ban else { return };
        if let Err(error) = link.backend.submit_many(ops) {
            self.backend_errors += 1;
            warn!(%error, "queueing bans for fail2ban failed; the store keeps them");
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Bans one target. See [`BanManager::ban_many`].
    pub fn ban(&mut self, request: BanRequest) -> Result<BanEntry, BanError> {
        self.ban_many(vec![request]).pop().unwrap_or_else(|| {
            Err(BanError::Store {
                message: "no result for the ban".to_owned(),
            })
        })
    }

    /// Bans every target, one result per request in order. All accepted
    /// bans are written to the store in one transaction before any result
    /// is returned; if that write fails, every one of them fails.
    pub fn ban_many(&mut self, requests: Vec<BanRequest>) -> Vec<Result<BanEntry, BanError>> {
        self.ban_many_as(requests, Breadth::Bounded)
    }

    /// [`BanManager::ban_many`], allowing prefixes wider than
    /// [`BanPolicy::widest`] when `breadth` is [`Breadth::Forced`].
    pub fn ban_many_as(
        &mut self,
        requests: Vec<BanRequest>,
        breadth: Breadth,
    ) -> Vec<Result<BanEntry, BanError>> {
        self.apply(requests, breadth)
            .into_iter()
            .map(|r| {
                r.and_then(|target| self.index.get(&target).map(Self::entry).ok_or_else(no_row))
            })
            .collect()
    }

    /// Bans many targets with one reason, as `ban --file` does; returns how
    /// many were banned and the refusals by position in `targets`.
    pub fn ban_bulk(
        &mut self,
        targets: &[IpNet],
        length: BanLength,
        source: Source,
        reason: &str,
        breadth: Breadth,
    ) -> (usize, Vec<(usize, BanError)>) {
        let requests = targets
            .iter()
            .map(|&target| BanRequest {
                target,
                length,
                source,
                reason: reason.to_owned(),
                detail: String::new(),
            })
            .collect();
        let mut banned = 0;
        let mut refused = Vec::new();
        for (i, result) in self.apply(requests, breadth).into_iter().enumerate() {
            match result {
                Ok(_) => banned += 1,
                Err(error) => refused.push((i, error)),
            }
        }
        (banned, refused)
    }

    /// The common path: validate, compute, store, enforce, aggregate.
    fn apply(
        &mut self,
        requests: Vec<BanRequest>,
        breadth: Breadth,
    ) -> Vec<Result<IpNet, BanError>> {
        let now = unix_now();
        let mut results = Vec::with_capacity(requests.len());
        let mut rows: Vec<StoredBan> = Vec::with_capacity(requests.len());
        // Whether each row starts a ban rather than re-applying a live one.
        let mut fresh: Vec<bool> = Vec::with_capacity(requests.len());
        let mut pending: HashMap<IpNet, usize> = HashMap::with_capacity(requests.len());
        for request in requests {
            let target = canonical_net(request.target.trunc());
            if let Err(error) = self
                .admissible_breadth(target, breadth)
                .and_then(|()| self.admissible(target))
                .and_then(|()| admissible_length(target, request.length, now))
            {
                results.push(Err(error));
                continue;
            }
            let previous = pending
                .get(&target)
                .map(|&i| &rows[i])
                .or_else(|| self.index.get(&target));
            let starts = previous.is_none_or(|p| !p.is_active(now));
            let row = self.next_row(previous, target, request, now);
            results.push(Ok(target));
            if let Some(&i) = pending.get(&target) {
                rows[i] = row;
            } else {
                pending.insert(target, rows.len());
                rows.push(row);
                fresh.push(starts);
            }
        }
        if rows.is_empty() {
            return results;
        }
        debug!(rows = rows.len(), "bans validated");
        let started = std::time::Instant::now();
        // The store and the kernel are written at the same time; the call
        // returns only once the store has committed.
        let store = Arc::clone(&self.store);
        let (stored, enforced) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| store.put_bans(&rows).map(|()| started.elapsed()));
            self.enforce(&rows);
            let enforced = started.elapsed();
            (writer.join(), enforced)
        });
        let stored = match stored {
            Ok(Ok(elapsed)) => elapsed,
            Ok(Err(error)) => return self.undo(&rows, results, &error.to_string()),
            Err(_) => return self.undo(&rows, results, "the store writer panicked"),
        };
        debug!(rows = rows.len(), ?stored, ?enforced, "bans written");
        for source in [Source::Policy, Source::Cli, Source::Logwatch, Source::Fleet] {
            let n = rows.iter().filter(|row| row.source == source).count() as u64;
            if n > 0 {
                metrics::counter!(crate::metrics::BANS_TOTAL, "source" => source.as_str())
                    .increment(n);
            }
        }
        self.tell(&BanEvent::Banned(&rows));
        let aggregates = self.aggregate(&rows, &fresh, now);
        if self.fail2ban_active() {
            self.fail2ban_expiries.extend(
                rows.iter()
                    .filter_map(|row| row.expires_at.map(|at| (at, row.target))),
            );
        }
        self.queue_for_fail2ban(rows.iter().map(|row| Fail2banOp::ban(row.target)).collect());
        for row in rows {
            self.index.insert(row.target, row);
        }
        debug!("index updated");
        if !aggregates.is_empty() {
            for result in self.ban_many(aggregates) {
                match result {
                    Ok(entry) => {
                        info!(prefix = %target_to_string(&entry.addr), reason = %entry.reason, "prefix banned");
                    }
                    Err(error) => warn!(%error, "prefix ban refused"),
                }
            }
        }
        results
    }

    /// The store refused the bans: take them back out of the kernel (the
    /// earlier state of each target is restored by the next
    /// reconciliation) and fail every accepted request.
    fn undo(
        &mut self,
        rows: &[StoredBan],
        results: Vec<Result<IpNet, BanError>>,
        message: &str,
    ) -> Vec<Result<IpNet, BanError>> {
        if let Some(dataplane) = self.xdp.dataplane.as_mut() {
            for row in rows
                .iter()
                .filter(|row| !self.index.contains_key(&row.target))
            {
                let _ = dataplane.remove(row.target);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.and_then(|_| {
                    Err(BanError::Store {
                        message: message.to_owned(),
                    })
                })
            })
            .collect()
    }

    fn admissible_breadth(&self, target: IpNet, breadth: Breadth) -> Result<(), BanError> {
        match self.policy.widest.exceeded_by(&target) {
            Some(widest) if breadth == Breadth::Bounded => {
                Err(BanError::TooWide { target, widest })
            }
            _ => Ok(()),
        }
    }

    fn admissible(&self, target: IpNet) -> Result<(), BanError> {
        if let Some(entry) = self.policy.allowlist.covers(&target) {
            return Err(BanError::Allowlisted { target, entry });
        }
        if let Some(own) = self
            .own_addresses
            .iter()
            .find(|own| target.contains(&own.network()))
        {
            return Err(BanError::OwnAddress { target, own: *own });
        }
        Ok(())
    }

    fn next_row(
        &self,
        previous: Option<&StoredBan>,
        target: IpNet,
        request: BanRequest,
        now: i64,
    ) -> StoredBan {
        let cutoff = now.saturating_sub(secs_i64(self.policy.history_age));
        let previous = previous.filter(|p| p.last_banned_at >= cutoff);
        if let BanLength::Until(until) = request.length {
            return Self::remote_row(previous, target, request, until, now);
        }
        let count = previous.map_or(0, |p| p.count).saturating_add(1);
        let length = match request.length {
            BanLength::Permanent | BanLength::Until(_) => None,
            BanLength::For(d) => (!d.is_zero()).then_some(d),
            BanLength::Default => self
                .policy
                .default_bantime
                .map(|base| self.escalate(base, count)),
            BanLength::Base(base) => (!base.is_zero()).then(|| self.escalate(base, count)),
        };
        StoredBan {
            target,
            expires_at: length.map(|d| expiry_after(now, d)),
            source: request.source,
            reason: request.reason,
            detail: request.detail,
            count,
            first_banned_at: previous.map_or(now, |p| p.first_banned_at),
            last_banned_at: now,
        }
    }

    /// A ban another host made: its absolute expiry (`i64::MAX` is
    /// permanent), the longer of it and a live local ban, and no new count,
    /// so escalation is not counted twice. A live ban made here keeps its
    /// source and reason, so a remote unban cannot lift it.
    fn remote_row(
        previous: Option<&StoredBan>,
        target: IpNet,
        request: BanRequest,
        until: i64,
        now: i64,
    ) -> StoredBan {
        let remote = (until != i64::MAX).then_some(until.max(now.saturating_add(1)));
        let live = previous.filter(|p| p.is_active(now));
        let expires_at = match live {
            Some(p) => p.expires_at.zip(remote).map(|(a, b)| a.max(b)),
            None => remote,
        };
        let (source, reason, detail) = match live {
            Some(p) if p.source != Source::Fleet => (p.source, p.reason.clone(), p.detail.clone()),
            _ => (request.source, request.reason, request.detail),
        };
        StoredBan {
            target,
            expires_at,
            source,
            reason,
            detail,
            count: previous.map_or(0, |p| p.count),
            first_banned_at: previous.map_or(now, |p| p.first_banned_at),
            last_banned_at: previous.map_or(now, |p| p.last_banned_at),
        }
    }

    fn escalate(&self, base: Duration, count: u32) -> Duration {
        match self.policy.escalation {
            None => base,
            Some(Escalation { factor, max }) => {
                let multiplier = f64::from(1_u32 << (count - 1).min(20));
                let secs = (base.as_secs_f64() * multiplier * factor).min(max.as_secs_f64());
                Duration::from_secs_f64(secs.max(1.0))
            }
        }
    }

    /// Writes rows to the kernel maps; a failure is logged and repaired by
    /// the next reconciliation (the store already holds the bans).
    fn enforce(&mut self, rows: &[StoredBan]) {
        let Some(dataplane) = self.xdp.dataplane.as_mut() else {
            return;
        };
        let mono = monotonic_now_ns();
        let now = unix_now();
        let values: Vec<(IpNet, BanValue)> = rows
            .iter()
            .map(|row| (row.target, kernel_value(row, now, mono)))
            .collect();
        if let Err(error) = dataplane.insert_many(&values) {
            self.backend_errors += 1;
            warn!(%error, "writing bans to the XDP maps failed; the next reconciliation retries");
        }
    }

    /// Records the addresses whose ban starts now (`fresh`) per prefix;
    /// returns prefix bans that reached the aggregation threshold. Distinct
    /// addresses count, not events: an address banned again, or a live ban
    /// applied again (a fleet resync), does not add to its prefix.
    fn aggregate(&mut self, rows: &[StoredBan], fresh: &[bool], now: i64) -> Vec<BanRequest> {
        let Some(rule) = self.policy.aggregation else {
            return Vec::new();
        };
        let since = now.saturating_sub(secs_i64(rule.window));
        let mut requests = Vec::new();
        for (row, _) in rows.iter().zip(fresh).filter(|(_, fresh)| **fresh) {
            let Some(prefix) = aggregation_prefix(row.target, rule) else {
                continue;
            };
            let addresses = self.recent.entry(prefix).or_default();
            addresses.retain(|&(_, at)| at >= since);
            match addresses.iter_mut().find(|(addr, _)| *addr == row.target) {
                Some((_, at)) => *at = now,
                None => addresses.push((row.target, now)),
            }
            let distinct = addresses.len();
            let already = self.index.get(&prefix).is_some_and(|b| b.is_active(now))
                || requests.iter().any(|r: &BanRequest| r.target == prefix);
            if distinct >= rule.threshold as usize && !already {
                requests.push(BanRequest {
                    target: prefix,
                    length: BanLength::Default,
                    source: row.source,
                    reason: format!(
                        "{distinct} addresses of {} banned within {}",
                        target_to_string(&prefix),
                        humantime::format_duration(rule.window)
                    ),
                    detail: String::new(),
                });
            }
        }
        requests
    }

    /// Lifts the ban on exactly `target`; `false` when there was none.
    pub fn unban(&mut self, target: IpNet) -> Result<bool, BanError> {
        self.unban_from(target, Source::Cli)
    }

    /// [`BanManager::unban`] at the request of `source` (the fleet's
    /// unbans are not published again).
    pub fn unban_from(&mut self, target: IpNet, source: Source) -> Result<bool, BanError> {
        let target = canonical_net(target.trunc());
        let lifted = self.end(target, unix_now())?;
        if lifted {
            self.tell(&BanEvent::Unbanned { target, source });
        }
        Ok(lifted)
    }

    /// Lifts the ban on `target` at another node's request, only when it
    /// came from the fleet: a ban made here (command line, policy, log
    /// watcher) stays. `false` when nothing was lifted.
    pub fn unban_remote(&mut self, target: IpNet) -> Result<bool, BanError> {
        let target = canonical_net(target.trunc());
        let now = unix_now();
        match self.index.get(&target) {
            Some(row) if row.is_active(now) && row.source != Source::Fleet => {
                debug!(target = %target_to_string(&target), source = %row.source, "fleet unban ignored: the ban was made here");
                Ok(false)
            }
            _ => self.unban_from(target, Source::Fleet),
        }
    }

    /// Ends the ban on `target` everywhere: store, fail2ban, kernel maps.
    fn end(&mut self, target: IpNet, now: i64) -> Result<bool, BanError> {
        let ended = self
            .store
            .end_ban(&target, now)
            .map_err(|e| BanError::Store {
                message: e.to_string(),
            })?;
        if let Some(row) = self.index.get_mut(&target)
            && row.is_active(now)
        {
            row.expires_at = Some(now);
        }
        if ended {
            self.queue_for_fail2ban(vec![Fail2banOp::unban(target)]);
        }
        let mut removed = false;
        if let Some(dataplane) = self.xdp.dataplane.as_mut() {
            removed = dataplane.remove(target).map_err(|e| BanError::Kernel {
                target,
                message: e.to_string(),
            })?;
        }
        Ok(ended || removed)
    }

    /// Lifts every active ban that the allowlist (or, with `ignore_self`,
    /// an address of this host) now covers, in the store, the kernel maps
    /// and fail2ban, and logs the entry that lifted it: an allowlist entry
    /// added by a reload or present at start is retroactive. Returns the
    /// lifted targets with the entry that covered each. A local decision:
    /// not published to the fleet.
    pub fn lift_disallowed(&mut self) -> Vec<(IpNet, IpNet)> {
        let now = unix_now();
        let covered: Vec<(IpNet, IpNet)> = self
            .index
            .values()
            .filter(|row| row.is_active(now))
            .filter_map(|row| match self.admissible(row.target) {
                Err(BanError::Allowlisted { entry, .. }) => Some((row.target, entry)),
                Err(BanError::OwnAddress { own, .. }) => Some((row.target, own)),
                _ => None,
            })
            .collect();
        let mut lifted = Vec::with_capacity(covered.len());
        for (target, entry) in covered {
            match self.end(target, now) {
                Ok(_) => {
                    info!(
                        target = %target_to_string(&target),
                        entry = %target_to_string(&entry),
                        "ban lifted: the allowlist covers it"
                    );
                    lifted.push((target, entry));
                }
                Err(error) => {
                    warn!(%error, target = %target_to_string(&target), "lifting an allowlisted ban failed");
                }
            }
        }
        lifted
    }

    /// Every active ban, sorted by address.
    pub fn list(&self) -> Vec<BanEntry> {
        let now = unix_now();
        let mut bans: Vec<BanEntry> = self
            .index
            .values()
            .filter(|row| row.is_active(now))
            .map(Self::entry)
            .collect();
        bans.sort_by_key(|ban| ban.addr);
        bans
    }

    /// Ban counts, packet counters and backend figures.
    pub fn stats(&self) -> BanStats {
        let now = unix_now();
        let mut stats = BanStats {
            evicted: self.evicted,
            backend_errors: self.backend_errors,
            ..BanStats::default()
        };
        if let Some(link) = &self.fail2ban {
            stats.queue_depth = link.backend.health().queue_depth;
        }
        if let Some(dataplane) = &self.xdp.dataplane {
            match dataplane.counters() {
                Ok(packets) => stats.packets = packets,
                Err(error) => warn!(%error, "reading the packet counters failed"),
            }
        }
        for row in self.index.values().filter(|row| row.is_active(now)) {
            stats.bans_active += 1;
            match row.target {
                IpNet::V4(n) if n.prefix_len() == 32 => stats.bans_v4 += 1,
                IpNet::V6(n) if n.prefix_len() == 128 => stats.bans_v6 += 1,
                IpNet::V4(_) => stats.prefixes_v4 += 1,
                IpNet::V6(_) => stats.prefixes_v6 += 1,
            }
        }
        stats
    }

    /// Brings the kernel maps in line with the store: writes missing or
    /// different live bans, removes what the store does not hold. With
    /// `at_start`, missing bans count as restored (the pins were wiped);
    /// otherwise a missing single address counts as an LRU eviction.
    ///
    /// On the very first start with an empty store, live map entries are
    /// adopted into the store instead of removed.
    pub fn reconcile(&mut self, at_start: bool) -> Reconciled {
        let mut report = Reconciled::default();
        let Some(dataplane) = self.xdp.dataplane.as_mut() else {
            return report;
        };
        let entries = match dataplane.entries() {
            Ok(entries) => entries,
            Err(error) => {
                self.backend_errors += 1;
                warn!(%error, "reading the XDP maps failed; reconciliation skipped");
                return report;
            }
        };
        let now = unix_now();
        let mono = monotonic_now_ns();
        if at_start && self.index.is_empty() {
            let adopted = adopt(&entries, now, mono);
            if !adopted.is_empty() {
                info!(
                    count = adopted.len(),
                    "adopting bans found in the kernel maps into an empty store"
                );
                if let Err(error) = self.store.put_bans(&adopted) {
                    warn!(%error, "adopting kernel bans failed");
                } else {
                    for row in adopted {
                        self.index.insert(row.target, row);
                    }
                }
            }
        }
        let in_map: HashMap<IpNet, BanValue> = entries.into_iter().collect();
        let mut writes = Vec::new();
        let mut evicted_v4 = 0_u64;
        let mut evicted_v6 = 0_u64;
        let active: HashSet<IpNet> = self
            .index
            .values()
            .filter(|r| r.is_active(now))
            .map(|r| r.target)
            .collect();
        for row in self.index.values().filter(|r| r.is_active(now)) {
            let wanted = kernel_value(row, now, mono);
            match in_map.get(&row.target) {
                None if at_start => report.restored += 1,
                None => {
                    report.evicted += 1;
                    if row.target.prefix_len() == row.target.max_prefix_len() {
                        if row.target.addr().is_ipv4() {
                            evicted_v4 += 1;
                        } else {
                            evicted_v6 += 1;
                        }
                    }
                }
                Some(value) if !close_enough(value, &wanted) => report.corrected += 1,
                Some(_) => continue,
            }
            writes.push((row.target, wanted));
        }
        for net in in_map.keys().filter(|net| !active.contains(net)) {
            match dataplane.remove(*net) {
                Ok(_) => report.removed += 1,
                Err(error) => {
                    warn!(%error, target = %target_to_string(net), "removing a stale map entry failed");
                }
            }
        }
        if let Err(error) = dataplane.insert_many(&writes) {
            self.backend_errors += 1;
            warn!(%error, "rewriting bans into the XDP maps failed");
        }
        if evicted_v4 + evicted_v6 > 0 {
            let capacities = dataplane.capacities().ok();
            warn!(
                evicted_v4,
                evicted_v6,
                capacity_v4 = capacities.map(|c| c.v4),
                capacity_v6 = capacities.map(|c| c.v6),
                "live bans were evicted from the LRU maps and written back; raise ban.capacity_v4 / ban.capacity_v6"
            );
        }
        self.evicted += report.evicted;
        report
    }

    /// Deletes history older than the history age.
    pub fn purge(&mut self) -> Result<usize, BanError> {
        let cutoff = unix_now().saturating_sub(secs_i64(self.policy.history_age));
        let purged = self.store.purge(cutoff).map_err(|e| BanError::Store {
            message: e.to_string(),
        })?;
        self.index.retain(|_, row| {
            row.expires_at.is_none_or(|at| at >= cutoff) || row.last_banned_at >= cutoff
        });
        let window = self.policy.aggregation.map_or(0, |a| secs_i64(a.window));
        let since = unix_now().saturating_sub(window);
        self.recent.retain(|_, addresses| {
            addresses.retain(|&(_, at)| at >= since);
            !addresses.is_empty()
        });
        Ok(purged)
    }

    fn entry(row: &StoredBan) -> BanEntry {
        BanEntry {
            addr: row.target,
            expires_at: row.expires_at.map(clock::system_time),
            source: row.source,
            reason: row.reason.clone(),
            detail: row.detail.clone(),
            count: row.count,
        }
    }
}

/// The map value for a stored ban: its wall-clock expiry moved onto the
/// kernel's monotonic clock.
fn kernel_value(row: &StoredBan, now: i64, mono_now: u64) -> BanValue {
    let expires_ns = row.expires_at.map_or(BanValue::PERMANENT, |at| {
        let left = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
        mono_now
            .saturating_add(left.saturating_mul(1_000_000_000))
            .max(1)
    });
    BanValue::new(
        expires_ns,
        row.source.code(),
        row.target.prefix_len(),
        row.count,
    )
}

/// Equal but for clock jitter between the two conversions.
fn close_enough(a: &BanValue, b: &BanValue) -> bool {
    const TOLERANCE_NS: u64 = 2_000_000_000;
    let same_expiry = match (a.expires_ns, b.expires_ns) {
        (BanValue::PERMANENT, BanValue::PERMANENT) => true,
        (BanValue::PERMANENT, _) | (_, BanValue::PERMANENT) => false,
        (x, y) => x.abs_diff(y) <= TOLERANCE_NS,
    };
    same_expiry && a.source == b.source && a.prefix_len == b.prefix_len && a.count == b.count
}

fn adopt(entries: &[(IpNet, BanValue)], now: i64, mono: u64) -> Vec<StoredBan> {
    entries
        .iter()
        .filter(|(_, value)| value.is_live(mono))
        .map(|&(target, value)| StoredBan {
            target,
            expires_at: (value.expires_ns != BanValue::PERMANENT).then(|| {
                let left = value.expires_ns.saturating_sub(mono) / 1_000_000_000;
                now.saturating_add(i64::try_from(left).unwrap_or(i64::MAX))
                    .saturating_add(1)
            }),
            source: Source::from_code(value.source),
            reason: "found in the kernel maps".to_owned(),
            detail: String::new(),
            count: value.count.max(1),
            first_banned_at: now,
            last_banned_at: now,
        })
        .collect()
}

/// The length of a request, refused beyond [`clock::MAX_BAN_LENGTH`]; a
/// fleet ban's absolute expiry likewise.
fn admissible_length(target: IpNet, length: BanLength, now: i64) -> Result<(), BanError> {
    let asked = match length {
        BanLength::Default | BanLength::Permanent | BanLength::Until(i64::MAX) => return Ok(()),
        BanLength::For(d) | BanLength::Base(d) => d,
        BanLength::Until(at) => {
            Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
        }
    };
    clock::check_ban_length(asked)
        .map(drop)
        .map_err(|reason| BanError::TooLong { target, reason })
}

/// The prefix an address is aggregated into; `None` for a prefix ban.
fn aggregation_prefix(target: IpNet, rule: Aggregation) -> Option<IpNet> {
    match target {
        IpNet::V4(n) if n.prefix_len() == 32 => Ipv4Net::new(n.addr(), rule.v4_prefix)
            .ok()
            .map(|p| IpNet::V4(p.trunc())),
        IpNet::V6(n) if n.prefix_len() == 128 => Ipv6Net::new(n.addr(), rule.v6_prefix)
            .ok()
            .map(|p| IpNet::V6(p.trunc())),
        _ => None,
    }
}

fn no_row() -> BanError {
    BanError::Store {
        message: "the ban was not recorded".to_owned(),
    }
}

/// The addresses configured on this host's interfaces.
pub fn host_addresses() -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
        return out;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned.
        let node = unsafe { &*cursor };
        if !node.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            let family = i32::from(unsafe { (*node.ifa_addr).sa_family });
            let addr = match family {
                libc::AF_INET => {
                    // SAFETY: family AF_INET means the kernel wrote a whole,
                    // suitably aligned sockaddr_in there.
                    #[expect(
                        clippy::cast_ptr_alignment,
                        reason = "getifaddrs allocates each address for its family"
                    )]
                    let sin = unsafe { &*node.ifa_addr.cast::<libc::sockaddr_in>() };
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    // SAFETY: as above, for sockaddr_in6.
                    #[expect(
                        clippy::cast_ptr_alignment,
                        reason = "getifaddrs allocates each address for its family"
                    )]
                    let sin6 = unsafe { &*node.ifa_addr.cast::<libc::sockaddr_in6>() };
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if let Some(addr) = addr
                && !out.contains(&IpNet::from(addr))
            {
                out.push(IpNet::from(addr));
            }
        }
        cursor = node.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("net")
    }

    fn manager(policy: BanPolicy) -> (tempfile::TempDir, BanManager) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open_in(dir.path()).expect("store"));
        let xdp = XdpBackend {
            dataplane: None,
            enforcing: false,
            note: "test".into(),
        };
        (
            dir,
            BanManager::new(store, xdp, None, policy).expect("manager"),
        )
    }

    fn request(target: &str, length: BanLength) -> BanRequest {
        BanRequest {
            target: net(target),
            length,
            source: Source::Logwatch,
            reason: "r".into(),
            detail: String::new(),
        }
    }

    fn length_of(entry: &BanEntry) -> u64 {
        let expires = entry.expires_at.expect("not permanent");
        expires
            .duration_since(SystemTime::now())
            .map_or(0, |d| d.as_secs() + 1)
    }

    #[test]
    fn escalation_doubles_and_is_capped() {
        let policy = BanPolicy {
            default_bantime: Some(Duration::from_mins(10)),
            escalation: Some(Escalation {
                factor: 1.0,
                max: Duration::from_hours(1),
            }),
            ..BanPolicy::default()
        };
        let (_dir, mut bans) = manager(policy);
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let entry = bans
                .ban(request("192.0.2.7/32", BanLength::Default))
                .expect("ban");
            lengths.push((entry.count, length_of(&entry).div_ceil(60)));
        }
        assert_eq!(lengths, [(1, 10), (2, 20), (3, 40), (4, 60), (5, 60)]);
        // An explicit length is taken as given.
        let exact = bans
            .ban(request(
                "192.0.2.7/32",
                BanLength::For(Duration::from_mins(5)),
            ))
            .expect("ban");
        assert_eq!(length_of(&exact).div_ceil(60), 5);
        assert_eq!(exact.count, 6);
    }

    #[test]
    fn history_survives_a_restart_and_unban_keeps_the_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            let store = Arc::new(Store::open_in(dir.path()).expect("store"));
            let xdp = XdpBackend {
                dataplane: None,
                enforcing: false,
                note: String::new(),
            };
            BanManager::new(store, xdp, None, BanPolicy::default()).expect("manager")
        };
        let mut bans = open();
        bans.ban(request("2001:db8::7/128", BanLength::Default))
            .expect("ban");
        assert!(bans.unban(net("2001:db8::7/128")).expect("unban"));
        assert!(bans.list().is_empty());
        drop(bans);
        let mut bans = open();
        let again = bans
            .ban(request("2001:db8::7/128", BanLength::Default))
            .expect("ban");
        assert_eq!(again.count, 2, "the earlier ban counts after a restart");
        assert_eq!(bans.list().len(), 1);
    }

    #[test]
    fn allowlist_and_own_addresses_are_refused() {
        let policy = BanPolicy {
            allowlist: Allowlist::new([net("198.51.100.0/24")]),
            ignore_self: true,
            ..BanPolicy::default()
        };
        let (_dir, mut bans) = manager(policy);
        let results = bans.ban_many(vec![
            request("198.51.100.4/32", BanLength::Default),
            request("192.0.2.1/32", BanLength::Default),
            request("127.0.0.1/32", BanLength::Default),
        ]);
        assert!(matches!(results[0], Err(BanError::Allowlisted { .. })));
        assert!(results[1].is_ok());
        assert!(results[2].is_err(), "loopback is always refused");
        assert_eq!(bans.list().len(), 1);
        if let Some(own) = host_addresses()
            .into_iter()
            .find(|a| !a.addr().is_loopback())
        {
            let refused = bans.ban(BanRequest {
                target: own,
                ..request("192.0.2.2/32", BanLength::Default)
            });
            assert!(
                matches!(refused, Err(BanError::OwnAddress { .. })),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn prefix_is_banned_once_enough_of_its_addresses_are() {
        let policy = BanPolicy {
            aggregation: Some(Aggregation {
                threshold: 3,
                window: Duration::from_mins(10),
                v4_prefix: 24,
                v6_prefix: 64,
            }),
            ..BanPolicy::default()
        };
        let (_dir, mut bans) = manager(policy);
        for host in ["2001:db8:1:2::a/128", "2001:db8:1:2::b/128", "192.0.2.1/32"] {
            bans.ban(request(host, BanLength::Default)).expect("ban");
        }
        assert!(
            !bans
                .list()
                .iter()
                .any(|b| b.addr == net("2001:db8:1:2::/64"))
        );
        bans.ban(request("2001:db8:1:2::c/128", BanLength::Default))
            .expect("ban");
        let prefix = bans
            .list()
            .into_iter()
            .find(|b| b.addr == net("2001:db8:1:2::/64"))
            .expect("prefix banned");
        assert!(prefix.reason.contains("3 addresses"), "{}", prefix.reason);
        assert!(!bans.list().iter().any(|b| b.addr == net("192.0.2.0/24")));
    }

    fn aggregating(threshold: u32) -> BanPolicy {
        BanPolicy {
            aggregation: Some(Aggregation {
                threshold,
                window: Duration::from_mins(10),
                v4_prefix: 24,
                v6_prefix: 64,
            }),
            escalation: Some(Escalation {
                factor: 1.0,
                max: Duration::from_hours(24),
            }),
            ..BanPolicy::default()
        }
    }

    fn has(bans: &BanManager, target: &str) -> bool {
        bans.list().iter().any(|b| b.addr == net(target))
    }

    #[test]
    fn one_address_banned_three_times_does_not_ban_its_prefix() {
        let (_dir, mut bans) = manager(aggregating(3));
        for _ in 0..3 {
            bans.ban(request("192.0.2.7/32", BanLength::Default))
                .expect("ban");
        }
        // Lifted and banned again: a repeat offence, still one address.
        bans.unban(net("192.0.2.7/32")).expect("unban");
        bans.ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban");
        assert!(!has(&bans, "192.0.2.0/24"), "{:?}", bans.list());
        // Live fleet bans applied again (a resync) add nothing either.
        let fleet = |target: &str| BanRequest {
            source: Source::Fleet,
            ..request(target, BanLength::Until(unix_now() + 600))
        };
        for _ in 0..3 {
            bans.ban_many(vec![fleet("198.51.100.1/32"), fleet("198.51.100.2/32")]);
        }
        assert!(!has(&bans, "198.51.100.0/24"), "{:?}", bans.list());
    }

    #[test]
    fn three_distinct_addresses_ban_their_prefix() {
        let (_dir, mut bans) = manager(aggregating(3));
        bans.ban(request("192.0.2.1/32", BanLength::Default))
            .expect("ban");
        bans.ban(request("192.0.2.2/32", BanLength::Default))
            .expect("ban");
        bans.ban(request("192.0.2.1/32", BanLength::Default))
            .expect("ban");
        assert!(!has(&bans, "192.0.2.0/24"), "two addresses so far");
        bans.ban(request("192.0.2.3/32", BanLength::Default))
            .expect("ban");
        assert!(has(&bans, "192.0.2.0/24"), "{:?}", bans.list());
        // Three new fleet bans are three distinct addresses too.
        let fleet = |target: &str| BanRequest {
            source: Source::Fleet,
            ..request(target, BanLength::Until(unix_now() + 600))
        };
        bans.ban_many(vec![
            fleet("2001:db8:5::1/128"),
            fleet("2001:db8:5::2/128"),
            fleet("2001:db8:5::3/128"),
        ]);
        assert!(has(&bans, "2001:db8:5::/64"), "{:?}", bans.list());
    }

    #[test]
    fn an_allowlist_entry_lifts_the_bans_it_covers() {
        let (_dir, mut bans) = manager(BanPolicy::default());
        for target in [
            "192.0.2.7/32",
            "192.0.2.0/25",
            "198.51.0.0/16",
            "203.0.113.9/32",
        ] {
            bans.ban(request(target, BanLength::Default)).expect("ban");
        }
        let lifted = bans.lift_disallowed();
        assert!(lifted.is_empty(), "nothing is allowlisted yet: {lifted:?}");
        // The operator's own network, inside a /16 they banned by mistake,
        // and a /24 that covers two bans.
        let mut policy = BanPolicy {
            allowlist: Allowlist::new([net("198.51.100.0/24"), net("192.0.2.0/24")]),
            ..BanPolicy::default()
        };
        bans.set_policy(policy.clone());
        let remaining: Vec<String> = bans
            .list()
            .iter()
            .map(|b| target_to_string(&b.addr))
            .collect();
        assert_eq!(remaining, ["203.0.113.9"]);
        // History is kept: banned again later it counts as a repeat.
        policy.allowlist = Allowlist::default();
        bans.set_policy(policy);
        let again = bans
            .ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban");
        assert_eq!(again.count, 2);
        let mut lifted = {
            let (_dir, mut fresh) = manager(BanPolicy::default());
            fresh
                .ban(request("192.0.2.7/32", BanLength::Default))
                .expect("ban");
            fresh.policy.allowlist = Allowlist::new([net("192.0.2.0/24")]);
            fresh.lift_disallowed()
        };
        lifted.sort();
        assert_eq!(lifted, [(net("192.0.2.7/32"), net("192.0.2.0/24"))]);
    }

    #[test]
    fn lengths_beyond_the_maximum_are_refused_on_every_path() {
        let (_dir, mut bans) = manager(BanPolicy::default());
        let too_long = clock::MAX_BAN_LENGTH + Duration::from_secs(1);
        let results = bans.ban_many(vec![
            request("192.0.2.1/32", BanLength::For(too_long)),
            request(
                "192.0.2.2/32",
                BanLength::Base(Duration::from_secs(u64::MAX)),
            ),
            BanRequest {
                source: Source::Fleet,
                ..request("192.0.2.3/32", BanLength::Until(i64::MAX - 1))
            },
            request("192.0.2.4/32", BanLength::For(clock::MAX_BAN_LENGTH)),
            BanRequest {
                source: Source::Fleet,
                ..request("192.0.2.5/32", BanLength::Until(i64::MAX))
            },
        ]);
        for (i, result) in results.iter().take(3).enumerate() {
            let error = result.as_ref().expect_err("too long");
            assert!(
                matches!(error, BanError::TooLong { .. })
                    && error.to_string().contains("exceeds the maximum"),
                "request {i}: {error}"
            );
        }
        assert!(results[3].is_ok() && results[4].is_ok(), "{results:?}");
        let listed = bans.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].expires_at, None, "i64::MAX is permanent");
    }

    #[test]
    fn prefixes_wider_than_the_limit_are_refused_unless_forced() {
        let (_dir, mut bans) = manager(BanPolicy::default());
        let results = bans.ban_many(vec![
            request("128.0.0.0/1", BanLength::Default),
            request("10.0.0.0/8", BanLength::Default),
            request("10.1.0.0/16", BanLength::Default),
            request("2001:db8::/31", BanLength::Default),
            request("2001:db8::/32", BanLength::Default),
            request("::/0", BanLength::Default),
        ]);
        let outcome: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(entry) => format!("ok {}", target_to_string(&entry.addr)),
                Err(error) => error.to_string(),
            })
            .collect();
        assert!(
            outcome[0].contains("128.0.0.0/1 is wider than ban.widest_v4 (/16)"),
            "{outcome:?}"
        );
        assert!(outcome[0].contains("--force"), "{outcome:?}");
        assert!(
            outcome[1].contains("wider than ban.widest_v4"),
            "{outcome:?}"
        );
        assert_eq!(outcome[2], "ok 10.1.0.0/16");
        assert!(
            outcome[3].contains("wider than ban.widest_v6 (/32)"),
            "{outcome:?}"
        );
        assert_eq!(outcome[4], "ok 2001:db8::/32");
        assert!(outcome[5].contains("widest_v6"), "{outcome:?}");
        let forced = bans.ban_many_as(
            vec![request("10.0.0.0/8", BanLength::Default)],
            Breadth::Forced,
        );
        assert!(forced[0].is_ok(), "{forced:?}");
        // A remote node cannot force: fleet bans go through ban_many.
        let fleet = bans.ban(BanRequest {
            source: Source::Fleet,
            ..request("172.16.0.0/12", BanLength::Until(unix_now() + 60))
        });
        assert!(
            matches!(fleet, Err(BanError::TooWide { widest: 16, .. })),
            "{fleet:?}"
        );
    }

    #[test]
    fn a_remote_unban_lifts_only_fleet_bans() {
        let (_dir, mut bans) = manager(BanPolicy::default());
        let remote = |target: &str| BanRequest {
            source: Source::Fleet,
            ..request(target, BanLength::Until(unix_now() + 600))
        };
        bans.ban(BanRequest {
            source: Source::Cli,
            ..request("192.0.2.1/32", BanLength::Permanent)
        })
        .expect("local ban");
        // A remote ban of the same address, then its unban: the hand-made
        // ban stays, with its own source.
        let merged = bans.ban(remote("192.0.2.1/32")).expect("remote ban");
        assert_eq!((merged.source, merged.expires_at), (Source::Cli, None));
        assert!(!bans.unban_remote(net("192.0.2.1/32")).expect("unban"));
        assert!(has(&bans, "192.0.2.1/32"), "the local ban stays");
        bans.ban(remote("192.0.2.2/32")).expect("remote ban");
        assert!(bans.unban_remote(net("192.0.2.2/32")).expect("unban"));
        assert!(!has(&bans, "192.0.2.2/32"), "the fleet's own ban is lifted");
        assert!(
            !bans
                .unban_remote(net("192.0.2.3/32"))
                .expect("nothing there")
        );
    }

    fn any_row() -> impl Strategy<Value = StoredBan> {
        (
            any::<u32>(),
            proptest::option::of(any::<i64>()),
            any::<u32>(),
            any::<i64>(),
            any::<i64>(),
            prop_oneof![Just(32_u8), 0..32_u8],
        )
            .prop_map(|(addr, expires_at, count, first, last, len)| StoredBan {
                target: IpNet::V4(Ipv4Net::new(addr.into(), len).unwrap_or_default().trunc()),
                expires_at,
                source: Source::Cli,
                reason: String::new(),
                detail: String::new(),
                count,
                first_banned_at: first,
                last_banned_at: last,
            })
    }

    proptest! {
        #[test]
        fn any_stored_row_converts_without_panic(row in any_row(), now in any::<i64>(), mono in any::<u64>()) {
            let value = kernel_value(&row, now, mono);
            prop_assert_eq!(value.prefix_len, row.target.prefix_len());
            prop_assert_eq!(value.expires_ns == BanValue::PERMANENT, row.expires_at.is_none());
            let entry = BanManager::entry(&row);
            let json = serde_json::to_value(&entry).expect("serializes");
            let back: BanEntry = serde_json::from_value(json).expect("parses back");
            prop_assert_eq!(back.expires_at.is_none(), row.expires_at.is_none());
        }

        #[test]
        fn any_kernel_value_is_adopted_without_panic(expires_ns in any::<u64>(), mono in any::<u64>(), now in any::<i64>()) {
            let value = BanValue::new(expires_ns, 2, 32, 1);
            let adopted = adopt(&[(net("192.0.2.1/32"), value)], now, mono);
            if let Some(row) = adopted.first() {
                prop_assert!(row.expires_at.is_none_or(|at| at >= now));
            }
        }
    }

    #[test]
    fn repeated_target_in_one_batch_counts_once_per_occurrence() {
        let (_dir, mut bans) = manager(BanPolicy::default());
        let results = bans.ban_many(vec![
            request("192.0.2.9/32", BanLength::Default),
            request("192.0.2.9/32", BanLength::Permanent),
        ]);
        assert!(results.iter().all(Result::is_ok));
        let listed = bans.list();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].count, listed[0].expires_at), (2, None));
    }

    #[test]
    fn fleet_bans_keep_their_expiry_and_do_not_escalate() {
        let policy = BanPolicy {
            allowlist: Allowlist::new([net("198.51.100.0/24")]),
            escalation: Some(Escalation {
                factor: 1.0,
                max: Duration::from_hours(24),
            }),
            ..BanPolicy::default()
        };
        let (_dir, mut bans) = manager(policy);
        let until = unix_now() + 7200;
        let fleet = |target: &str, until: i64| BanRequest {
            source: Source::Fleet,
            ..request(target, BanLength::Until(until))
        };
        let entry = bans.ban(fleet("192.0.2.7/32", until)).expect("ban");
        assert_eq!(entry.count, 0, "a fleet ban is not a local offence");
        let expected = UNIX_EPOCH + Duration::from_secs(until.unsigned_abs());
        assert_eq!(entry.expires_at, Some(expected));
        // The next local ban is the first offence here.
        let local = bans
            .ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban");
        assert_eq!(local.count, 1);
        // A shorter remote ban does not cut a longer local one short.
        let again = bans
            .ban(fleet("192.0.2.7/32", unix_now() + 60))
            .expect("ban");
        assert_eq!(again.count, 1);
        assert_eq!(again.expires_at, local.expires_at);
        let permanent = bans.ban(fleet("192.0.2.8/32", i64::MAX)).expect("ban");
        assert_eq!(permanent.expires_at, None);
        assert!(matches!(
            bans.ban(fleet("198.51.100.9/32", until)),
            Err(BanError::Allowlisted { .. })
        ));
    }

    #[test]
    fn the_observer_sees_bans_and_unbans_with_their_source() {
        let (_dir, mut bans) = manager(BanPolicy::default());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        bans.set_observer(Box::new(move |event| {
            let line = match event {
                BanEvent::Banned(rows) => format!("ban {}", rows.len()),
                BanEvent::Unbanned { source, .. } => format!("unban {source}"),
            };
            log.lock().expect("lock").push(line);
        }));
        bans.ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban");
        bans.unban_from(net("192.0.2.7/32"), Source::Fleet)
            .expect("unban");
        bans.unban(net("192.0.2.7/32")).expect("unban");
        assert_eq!(*seen.lock().expect("lock"), ["ban 1", "unban fleet"]);
    }
}
