//! The ban manager: the one path every ban takes, whatever its source.
//!
//! It validates the target, enforces the allowlist (and, optionally, the
//! host's own addresses), computes the ban length with escalation for repeat
//! offenders, writes the store — the source of truth — before anything is
//! acknowledged, then brings the backends in line: the XDP maps and the
//! fail2ban queue. Reconciliation repairs the maps from the store (after a
//! reboot wiped the pins, or when the LRU map evicted a live ban).
//!
//! Here: validation, the store write and the kernel write of every ban.
//! [`policy`] holds the settings, [`length`] how long a ban lasts,
//! [`aggregate`] prefix aggregation, [`unban`] lifting bans, [`explain`]
//! why a target is blocked or not, [`fail2ban`] the fail2ban backend's
//! expiry and jail reconciliation, [`reconcile`] the kernel maps'
//! reconciliation and purging, [`host`] the host's own addresses.

mod aggregate;
mod explain;
mod extend;
mod fail2ban;
mod host;
mod index;
mod length;
mod policy;
mod reconcile;
#[cfg(test)]
mod tests;
mod unban;

use std::{collections::BTreeSet, sync::Arc};

// foldhash: several times faster than SipHash on address keys, and seeded
// per process, so attacker-chosen addresses cannot aim at collisions.
use foldhash::{HashMap, HashMapExt as _};
use ipnet::IpNet;
use tracing::{debug, info, warn};
use xdp_common::BanValue;

use super::{
    BanEntry, BanError, BanLength, BanScope, BanStats, Source, canonical_net,
    fail2ban::Fail2banOp,
    store::{Store, StoredBan},
    target_to_string,
};
use crate::{
    clock::{self, unix_now},
    dataplane::{Dataplane, HitReader, monotonic_now_ns},
};

/// Rows from which a batch writes the store and the kernel maps on two
/// threads: below, the kernel's part takes less than starting a thread.
const PARALLEL_WRITE: usize = 1_024;

/// The requests of a bulk ban: every target with one length, source and
/// reason.
pub fn bulk_requests(
    targets: &[IpNet],
    length: BanLength,
    source: Source,
    reason: &str,
) -> Vec<BanRequest> {
    targets
        .iter()
        .map(|&target| BanRequest::new(target, length, source, reason, &BanScope::Default))
        .collect()
}

/// Where the hit counters of the kernel entries a write replaces come
/// from.
#[derive(Clone, Copy)]
enum Carry<'a> {
    /// Read from the maps, one lookup for each row marked.
    Read(&'a [bool]),
    /// Read beforehand: the entries' values by target.
    Known(&'a HashMap<IpNet, BanValue>),
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
    /// The destination ports the ban holds on.
    pub scope: BanScope,
}

impl BanRequest {
    /// A ban of `target` on the ports of `scope`, without score detail.
    pub fn new(
        target: IpNet,
        length: BanLength,
        source: Source,
        reason: &str,
        scope: &BanScope,
    ) -> Self {
        Self {
            target,
            length,
            source,
            reason: reason.to_owned(),
            detail: String::new(),
            scope: scope.clone(),
        }
    }
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

/// The optional observer and the sources whose bans it must be told;
/// `Debug` by name only.
#[derive(Default)]
struct Observer(Option<(BanObserver, Vec<Source>)>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(set)"
        } else {
            "Observer(none)"
        })
    }
}

/// The one path for bans.
#[derive(Debug)]
pub struct BanManager {
    store: Arc<Store>,
    /// Every store row (active and history), compactly, for the ban path.
    index: Index,
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
    /// The number of the last reconciliation pass (never 0).
    pass: u8,
}

impl BanManager {
    /// Loads the store into memory. Call [`BanManager::reconcile`] next.
    pub fn new(
        store: Arc<Store>,
        xdp: XdpBackend,
        fail2ban: Option<Fail2banLink>,
        policy: BanPolicy,
    ) -> Result<Self, BanError> {
        let index = load_index(&store)?;
        let mut manager = Self {
            store,
            index,
            xdp,
            fail2ban,
            // The kernel already holds these scopes (written at load).
            policy: BanPolicy {
                scopes: policy.scopes.clone(),
                ..BanPolicy::default()
            },
            own_addresses: Vec::new(),
            recent: HashMap::new(),
            fail2ban_expiries: BTreeSet::new(),
            evicted: 0,
            backend_errors: 0,
            observer: Observer::default(),
            pass: 0,
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
        let rescoped = policy.scopes != self.policy.scopes;
        self.policy = policy;
        self.lift_disallowed();
        if rescoped {
            self.write_port_scopes();
        }
    }

    /// Writes the port scopes to the kernel, then every ban's scope bits
    /// under the new numbering.
    fn write_port_scopes(&mut self) {
        let Some(dataplane) = self.xdp.dataplane.as_mut() else {
            return;
        };
        let (table, all_traffic) = self.policy.scopes.kernel_table();
        if let Err(error) = dataplane.set_port_scopes(&table, all_traffic) {
            self.backend_errors += 1;
            warn!(%error, "writing the port scopes failed");
            return;
        }
        let report = self.reconcile(false);
        info!(rewritten = report.corrected, "port scopes written");
    }

    /// Sets the observer told about bans and unbans after the store
    /// committed them. Every ban of a source in `sources` is told; the
    /// others may be left out (a feed's refresh tells the bans it extends
    /// only when `sources` holds [`Source::Feed`]).
    pub fn set_observer(&mut self, observer: BanObserver, sources: Vec<Source>) {
        self.observer = Observer(Some((observer, sources)));
    }

    fn tell(&self, event: &BanEvent<'_>) {
        if let Some((observer, _)) = &self.observer.0 {
            observer(event);
        }
    }

    /// Whether the observer must be told the bans of `source`.
    fn observes(&self, source: Source) -> bool {
        self.observer
            .0
            .as_ref()
            .is_some_and(|(_, sources)| sources.contains(&source))
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

    /// Every backend and its health, for `status` and metrics.
    pub fn backends(&self) -> Vec<super::BackendStatus> {
        use super::Backend as _;
        let mut backends = vec![self.xdp.status(self.xdp.enforcing)];
        if let Some(link) = &self.fail2ban {
            backends.push(link.status(self.fail2ban_active()));
        }
        backends
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Read handles on the kernel maps' hit counters; `None` without a
    /// loaded program or when they cannot be opened.
    pub fn hit_reader(&self) -> Option<HitReader> {
        let dataplane = self.xdp.dataplane.as_ref()?;
        dataplane
            .hit_reader()
            .inspect_err(|error| warn!(%error, "opening the XDP maps for their counters failed"))
            .ok()
    }

    /// Bans one target. See [`BanManager::ban_many`].
    pub fn ban(&mut self, request: BanRequest) -> Result<BanEntry, BanError> {
        self.ban_many(vec![request])
            .pop()
            .unwrap_or_else(|| Err(BanError::Lost("no result for the ban")))
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
        let (results, rows) = self.apply(requests, breadth);
        results
            .into_iter()
            .map(|r| r.and_then(|i| rows.get(i).map(Self::entry).ok_or_else(no_row)))
            .collect()
    }

    /// Bans many targets, as `ban --file` does (the requests made with
    /// [`bulk_requests`] before the manager's lock is taken); returns how
    /// many were banned and the refusals by position.
    pub fn ban_bulk(
        &mut self,
        requests: Vec<BanRequest>,
        breadth: Breadth,
    ) -> (usize, Vec<(usize, BanError)>) {
        let mut banned = 0;
        let mut refused = Vec::new();
        for (i, result) in self.apply(requests, breadth).0.into_iter().enumerate() {
            match result {
                Ok(_) => banned += 1,
                Err(error) => refused.push((i, error)),
            }
        }
        (banned, refused)
    }

    /// The common path: validate, compute, store, enforce, aggregate.
    /// Returns, per request, the position of its row among the rows
    /// written (a target asked twice has one row), and those rows.
    #[expect(
        clippy::too_many_lines,
        reason = "one pass over the requests; split, it would pass six vectors around"
    )]
    fn apply(
        &mut self,
        requests: Vec<BanRequest>,
        breadth: Breadth,
    ) -> (Vec<Result<usize, BanError>>, Vec<StoredBan>) {
        let now = unix_now();
        let mut results = Vec::with_capacity(requests.len());
        let mut rows: Vec<StoredBan> = Vec::with_capacity(requests.len());
        // Whether each row starts a ban rather than re-applying a live one.
        let mut fresh: Vec<bool> = Vec::with_capacity(requests.len());
        // What the index held for each row's target before (counters kept
        // when it held one; put back if the store refuses the rows).
        let mut before: Vec<Option<Held>> = Vec::with_capacity(requests.len());
        let mut pending: HashMap<IpNet, usize> = HashMap::with_capacity(requests.len());
        let targets: Vec<IpNet> = requests
            .iter()
            .map(|request| canonical_net(request.target.trunc()))
            .collect();
        let found = self.index.get_many(&targets);
        for (at, (request, target)) in requests.into_iter().zip(targets).enumerate() {
            let held = self.index.found(&found, at, target);
            if let Err(error) = self
                .admissible_breadth(target, breadth)
                .and_then(|()| self.admissible(target))
                .and_then(|()| admissible_length(target, request.length, now))
            {
                results.push(Err(error));
                continue;
            }
            let queued = pending.get(&target).map(|&i| &rows[i]);
            // A target's first request starts from what the index holds.
            let previous = queued.map(Held::from).or(held);
            let starts = previous.as_ref().is_none_or(|p| !p.is_active(now));
            let row = self.next_row(previous.as_ref(), queued, target, request, now);
            if let Some(&i) = pending.get(&target) {
                results.push(Ok(i));
                rows[i] = row;
            } else {
                results.push(Ok(rows.len()));
                pending.insert(target, rows.len());
                rows.push(row);
                fresh.push(starts);
                before.push(previous);
            }
        }
        drop(pending);
        if rows.is_empty() {
            return (results, rows);
        }
        debug!(rows = rows.len(), "bans validated");
        let started = std::time::Instant::now();
        // A large batch writes the store and the kernel at the same time;
        // a small one, one after the other, sparing a thread's start. The
        // call returns only once the store has committed.
        // The index too, for a large batch: the lock is held until the
        // commit, so nothing reads it ahead of the store, and a refusal
        // puts the rows it held back.
        let store = Arc::clone(&self.store);
        let existed: Vec<bool> = before.iter().map(Option::is_some).collect();
        let parallel = rows.len() >= PARALLEL_WRITE;
        let (stored, enforced) = if parallel {
            std::thread::scope(|scope| {
                let writer = scope.spawn(|| store.put_bans(&rows).map(|()| started.elapsed()));
                self.enforce(&rows, &existed);
                let enforced = started.elapsed();
                self.index.insert_many(&rows);
                (writer.join(), enforced)
            })
        } else {
            self.enforce(&rows, &existed);
            let enforced = started.elapsed();
            (
                Ok(store.put_bans(&rows).map(|()| started.elapsed())),
                enforced,
            )
        };
        let stored = match stored {
            Ok(Ok(elapsed)) => elapsed,
            Ok(Err(error)) => {
                return self.refused(rows, before, parallel, results, &BanError::from(error));
            }
            Err(_) => {
                let error = BanError::Lost("the store writer panicked");
                return self.refused(rows, before, parallel, results, &error);
            }
        };
        debug!(rows = rows.len(), ?stored, ?enforced, "bans written");
        // One pass over the rows, not one per source: they are many.
        let mut per_source = [0_u64; Source::ALL.len()];
        for row in &rows {
            per_source[row.source.index()] += 1;
        }
        for (source, n) in Source::ALL.into_iter().zip(per_source) {
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
            self.queue_for_fail2ban(rows.iter().map(|row| Fail2banOp::ban(row.target)).collect());
        }
        if !parallel {
            self.index.insert_many(&rows);
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
        (results, rows)
    }

    /// The store refused `rows`: the index (when it took them already)
    /// and the kernel are put back, and every accepted request fails.
    fn refused(
        &mut self,
        rows: Vec<StoredBan>,
        before: Vec<Option<Held>>,
        indexed: bool,
        results: Vec<Result<usize, BanError>>,
        error: &BanError,
    ) -> (Vec<Result<usize, BanError>>, Vec<StoredBan>) {
        if indexed {
            self.put_back(&rows, before);
        }
        (self.undo(&rows, results, error), rows)
    }

    /// The store refused `rows` after the index took them: each target
    /// gets back the row the index held before (`before`), or none.
    fn put_back(&mut self, rows: &[StoredBan], before: Vec<Option<Held>>) {
        let mut held = Vec::new();
        for (row, previous) in rows.iter().zip(before) {
            match previous {
                Some(previous) => held.push(StoredBan::from(&previous)),
                None => self.index.remove(&row.target),
            }
        }
        self.index.insert_many(&held);
    }

    /// The store refused the bans: take them back out of the kernel (the
    /// earlier state of each target is restored by the next
    /// reconciliation) and fail every accepted request.
    fn undo(
        &mut self,
        rows: &[StoredBan],
        results: Vec<Result<usize, BanError>>,
        error: &BanError,
    ) -> Vec<Result<usize, BanError>> {
        if let Some(dataplane) = self.xdp.dataplane.as_mut() {
            for row in rows.iter().filter(|row| !self.index.contains(&row.target)) {
                let _ = dataplane.remove(row.target);
            }
        }
        results
            .into_iter()
            .map(|r| r.and_then(|_| Err(error.clone())))
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

    /// Writes rows to the kernel maps; a failure is logged and repaired by
    /// the next reconciliation (the store already holds the bans). A row
    /// that `existed` keeps the hit counters of the entry it replaces; a
    /// new one is written without reading anything first.
    fn enforce(&mut self, rows: &[StoredBan], existed: &[bool]) {
        self.enforce_carrying(rows, Carry::Read(existed));
    }

    /// [`BanManager::enforce`], the hit counters kept as `carry` says.
    fn enforce_carrying(&mut self, rows: &[StoredBan], carry: Carry<'_>) {
        let Some(dataplane) = self.xdp.dataplane.as_mut() else {
            return;
        };
        let mono = monotonic_now_ns();
        let now = unix_now();
        let values: Vec<(IpNet, BanValue)> = rows
            .iter()
            .map(|row| {
                (
                    row.target,
                    kernel_value(&Held::from(row), now, mono, &self.policy.scopes),
                )
            })
            .collect();
        let mut values = values;
        match carry {
            Carry::Read(existed) => {
                if let Err(error) = dataplane.carry_hits(&mut values, existed) {
                    warn!(%error, "reading the hit counters of bans being extended failed");
                }
            }
            Carry::Known(previous) => {
                for (net, value) in &mut values {
                    if let Some(previous) = previous.get(net) {
                        *value = value.with_hits_of(previous);
                    }
                }
            }
        }
        if let Err(error) = dataplane.insert_many(&values) {
            self.backend_errors += 1;
            warn!(%error, "writing bans to the XDP maps failed; the next reconciliation retries");
        }
    }

    /// Every active ban, sorted by address, read from the store.
    pub fn list(&self) -> Result<Vec<BanEntry>, BanError> {
        let now = unix_now();
        let mut bans = Vec::new();
        self.store.each(|row| {
            if row.is_active(now) {
                bans.push(Self::entry(&row));
            }
        })?;
        bans.sort_by_key(|ban| ban.addr);
        Ok(bans)
    }

    /// Ban counts, packet counters and backend figures, counting every
    /// ban at once: [`Self::stats_head`] and [`Self::count_active`] let a
    /// caller release the lock between parts.
    pub fn stats(&mut self) -> BanStats {
        let mut stats = self.stats_head();
        let now = unix_now();
        let mut cursor = Cursor::default();
        while !cursor.is_done() {
            cursor = self.count_active(cursor, usize::MAX, now, &mut stats);
        }
        stats
    }

    /// Adds the active bans of the next shards (about `budget` rows) from
    /// `cursor` to `stats`; returns where to go on.
    pub fn count_active(
        &mut self,
        cursor: Cursor,
        budget: usize,
        now: i64,
        stats: &mut BanStats,
    ) -> Cursor {
        let mut counts = [0; 4];
        let next = self.index.count_active(cursor, budget, now, &mut counts);
        stats.bans_v4 += counts[0];
        stats.bans_v6 += counts[1];
        stats.prefixes_v4 += counts[2];
        stats.prefixes_v6 += counts[3];
        stats.bans_active += counts.iter().sum::<u64>();
        next
    }

    /// Shows `visit` the active bans of the next shards from `cursor`
    /// (about `budget` rows read), as the index holds them; returns where
    /// to go on.
    pub fn glance_active(
        &self,
        cursor: Cursor,
        budget: usize,
        now: i64,
        visit: impl FnMut(Glance),
    ) -> Cursor {
        self.index.glance_active(cursor, budget, now, visit)
    }

    /// Packet counters and backend figures, without ban counts.
    pub fn stats_head(&self) -> BanStats {
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
        stats
    }

    /// The list entry of a ban the index holds, with its reason read from
    /// the store (empty when the store cannot be read).
    fn held_entry(&self, held: &Held) -> BanEntry {
        match self.store.get(&held.target) {
            Ok(Some(row)) => Self::entry(&row),
            Ok(None) => Self::entry(&StoredBan::from(held)),
            Err(error) => {
                warn!(%error, "reading a ban's reason failed");
                Self::entry(&StoredBan::from(held))
            }
        }
    }

    fn entry(row: &StoredBan) -> BanEntry {
        BanEntry {
            addr: row.target,
            expires_at: row.expires_at.map(clock::system_time),
            source: row.source,
            reason: row.reason.clone(),
            detail: row.detail.clone(),
            count: row.count,
            ports: row.scope.to_ports(),
            packets: 0,
            last_hit: None,
        }
    }
}

/// The store's rows as an index, read one row at a time; each shard is
/// allocated once, at its final size.
fn load_index(store: &Store) -> Result<Index, BanError> {
    let mut loader = index::Loader::default();
    store.each(|row| loader.add(&row))?;
    Ok(loader.finish())
}

fn no_row() -> BanError {
    BanError::Lost("the ban was not recorded")
}

pub use fail2ban::{Fail2banLink, Fail2banReconciled};
pub use host::host_addresses;
use index::Index;
pub use index::{Cursor, Glance, Held};
use length::admissible_length;
pub use policy::{Aggregation, BanPolicy, Breadth, Escalation, Widest};
use reconcile::kernel_value;
pub use reconcile::{MapBatch, Reconciled};
