//! Scoring per mail and the threshold table.
//!
//! Postfix sends one request per recipient, each with the same `instance`.
//! Scores and details add up per instance, each check counted once per
//! mail, in an in-process cache that forgets a mail after `score_ttl`. The
//! highest threshold reached decides the answer; a threshold with `ban`
//! sends the client through the ban manager once per mail. Reaching a
//! threshold is logged once per mail, not for each of its RCPTs.
//!
//! Fail-open: every request is answered by its deadline. A check that
//! errors or is still running then contributes nothing; with nothing
//! reached the answer is `DUNNO`.

use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use smallvec::SmallVec;
use tracing::{debug, info, warn};

use super::{
    PolicyError, PolicyStats,
    action::{DUNNO, score_text},
    cache::TtlCache,
    checks::{Chain, Check, Hit, Local, MAX_CHECKS, Mail},
    codec::Request,
    config::PolicyConfig,
    dns::{AddressLookup, Dns, HickoryLookup, ResolverError},
    greylist::{Answer, Greylist},
    join::JoinAll,
    ratelimit::{Overrun, RateLimits, severity},
};
use crate::bans::{BanLength, BanScope, BanSink, Source};

mod thresholds;

pub use thresholds::Thresholds;

/// A mail's key in the score cache, kept in place (no allocation, no
/// pointer to follow when keys are compared) up to this many bytes: an
/// IPv6 client and an `instance` as Postfix writes it (four hex numbers,
/// about 20 characters) fit; a longer one moves to the heap.
type MailKey = SmallVec<[u8; 48]>;

/// The mail a request belongs to: its `instance`, and the client, so
/// that two clients never share a score even if instances collide. The
/// client's family and address bytes come first, fixed in length by the
/// family, so no two pairs make the same key; nothing is formatted.
fn mail_key(mail: &Mail<'_>) -> Option<MailKey> {
    let instance = mail.instance?;
    let mut key = MailKey::with_capacity(1 + 16 + instance.len());
    match mail.client {
        None => key.push(0),
        Some(IpAddr::V4(ip)) => {
            key.push(4);
            key.extend_from_slice(&ip.octets());
        }
        Some(IpAddr::V6(ip)) => {
            key.push(6);
            key.extend_from_slice(&ip.octets());
        }
    }
    key.extend_from_slice(instance.as_bytes());
    Some(key)
}

/// `ip` as text, as `Display` writes it (empty for none); an IPv4
/// address, the usual client, without the formatting machinery.
fn address_text(ip: Option<IpAddr>) -> String {
    match ip {
        None => String::new(),
        Some(IpAddr::V4(ip)) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        Some(ip) => ip.to_string(),
    }
}

/// Which checks already fired for a mail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fired([u64; MAX_CHECKS / 64]);

impl Fired {
    fn contains(self, i: usize) -> bool {
        self.0
            .get(i / 64)
            .is_some_and(|word| word & (1 << (i % 64)) != 0)
    }

    fn insert(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }
}

/// What is known about one mail (one `instance`).
#[derive(Clone, Debug, Default)]
struct MailState {
    fired: Fired,
    score: f64,
    detail: String,
    banned: bool,
}

/// A mail's state as read before its checks ran.
struct Known {
    fired: Fired,
    score: f64,
    detail: String,
}

/// What the first read of a mail's state says by the time it is scored.
enum Read {
    /// Still what the mail has at `at`, when it was read (no lookup ran
    /// in between): its state, or `None` when nothing is kept for it.
    Current { known: Option<Known>, at: Instant },
    /// To be read again: lookups ran, the state may have changed.
    Stale,
}

/// The answer to one request and how it came about.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The access(5) action for Postfix; `DUNNO` is not copied.
    pub action: Cow<'static, str>,
    /// The mail's score so far.
    pub score: f64,
    /// The mail's detail so far.
    pub detail: String,
    /// Whether a check was still running or failed.
    pub incomplete: bool,
}

/// The check chain, the thresholds and the per-mail scores.
pub struct Engine {
    chain: Chain,
    thresholds: Thresholds,
    dns: Dns,
    mails: TtlCache<MailKey, MailState>,
    score_ttl: Duration,
    sink: Option<Arc<dyn BanSink>>,
    stats: Arc<PolicyStats>,
    greylist: Option<Arc<Greylist>>,
    /// `[[policy.ratelimit]]`; none configured costs nothing per request.
    ratelimits: Option<RateLimits>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("chain", &self.chain)
            .field("thresholds", &self.thresholds)
            .field("dns", &self.dns)
            .field("score_ttl", &self.score_ttl)
            .field("bans", &self.sink.is_some())
            .field("greylist", &self.greylist)
            .field("ratelimits", &self.ratelimits)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Compiles `config` with hickory resolvers; bans go to `sink`.
    pub fn new(
        config: &PolicyConfig,
        sink: Option<Arc<dyn BanSink>>,
        stats: Arc<PolicyStats>,
    ) -> Result<Self, PolicyError> {
        Self::with_lookups(config, sink, stats, |server| {
            HickoryLookup::new(server).map(|l| Arc::new(l) as Arc<dyn AddressLookup>)
        })
    }

    /// Compiles `config`, asking `lookup` for the resolver of each DNS
    /// server the checks use (`None`: the system's).
    pub fn with_lookups(
        config: &PolicyConfig,
        sink: Option<Arc<dyn BanSink>>,
        stats: Arc<PolicyStats>,
        lookup: impl Fn(Option<SocketAddr>) -> Result<Arc<dyn AddressLookup>, ResolverError>,
    ) -> Result<Self, PolicyError> {
        let chain = Chain::compile(config).map_err(|problems| PolicyError::Config { problems })?;
        let thresholds = Thresholds::compile(&config.threshold, config.greylist.is_some())
            .map_err(|problems| PolicyError::Config { problems })?;
        let mut resolvers = Vec::new();
        for server in &chain.resolvers {
            let label = server.map_or_else(|| "system resolver".to_owned(), |s| s.to_string());
            resolvers.push((label, lookup(*server)?));
        }
        Ok(Self {
            chain,
            thresholds,
            dns: Dns::new(resolvers, config.dns_cache_size, config.dns_negative_ttl),
            mails: TtlCache::new(config.score_cache_size),
            score_ttl: config.score_ttl,
            sink,
            stats,
            greylist: None,
            ratelimits: None,
        })
    }

    /// Answers greylisting thresholds with `greylist`.
    #[must_use]
    pub fn with_greylist(mut self, greylist: Option<Arc<Greylist>>) -> Self {
        self.greylist = greylist;
        self
    }

    /// Counts requests against `limits` from now on; an overrun's score
    /// joins the mail's, its answer stands unless a threshold's is harder.
    #[must_use]
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        self.ratelimits = (!limits.is_empty()).then_some(limits);
        self
    }

    /// Answers one request by `deadline`.
    pub async fn decide(&self, request: &Request, deadline: Instant) -> Decision {
        let mail = Mail::from_request(request);
        let now = Instant::now();
        let key = mail_key(&mail);
        let known = key.as_deref().and_then(|key| {
            self.mails.get(key, now, |state| Known {
                fired: state.fired,
                score: state.score,
                detail: state.detail.clone(),
            })
        });
        let fired = known.as_ref().map(|known| known.fired).unwrap_or_default();
        let context = self.chain.context();
        let mut hits: Vec<(usize, Hit)> = Vec::new();
        let mut dns_checks: Vec<(usize, &Check)> = Vec::new();
        for (i, check) in self.chain.checks.iter().enumerate() {
            if fired.contains(i) {
                continue;
            }
            if check.is_dns() {
                dns_checks.push((i, check));
                continue;
            }
            match check.local(&mail, context) {
                Local::Pass => {}
                Local::Hit(hit) => hits.push((i, hit)),
                Local::Allow(action) => {
                    debug!(check = %check.name, client = ?mail.client, %action, "allow list matched");
                    return Decision {
                        action: Cow::Owned(action.to_owned()),
                        score: 0.0,
                        detail: format!("{}=allow", check.name),
                        incomplete: false,
                    };
                }
            }
        }
        // After the allow lists: an allowed client is never counted.
        let overruns = match &self.ratelimits {
            Some(limits) => {
                let overruns = limits.count(request, &mail, deadline).await;
                let first = self.chain.checks.len();
                hits.extend(overruns.iter().map(|o| (first + o.index, o.hit.clone())));
                overruns
            }
            None => Vec::new(),
        };
        // With no lookup to wait for, what was read above is still what
        // the mail has: no need to read it again.
        let known = if dns_checks.is_empty() {
            Read::Current { known, at: now }
        } else {
            Read::Stale
        };
        let incomplete = self.run_dns(&mail, &dns_checks, deadline, &mut hits).await;
        hits.sort_by_key(|(i, _)| *i);
        let decision = self
            .score(&mail, key, known, &hits, incomplete, deadline)
            .await;
        if overruns.is_empty() {
            return decision;
        }
        self.over_limits(&mail, decision, overruns, deadline).await
    }

    /// The answer of the hardest limit `overruns` holds, unless the
    /// threshold's is harder (REJECT beats DEFER; at the same level the
    /// limit's, which says why); bans the client for each limit that says
    /// so.
    async fn over_limits(
        &self,
        mail: &Mail<'_>,
        mut decision: Decision,
        overruns: Vec<Overrun>,
        deadline: Instant,
    ) -> Decision {
        let ip = address_text(mail.client);
        let hardest = overruns
            .iter()
            .map(|o| o.action.render(&ip, decision.score, &decision.detail))
            .reduce(|best, next| {
                if severity(&next) > severity(&best) {
                    next
                } else {
                    best
                }
            });
        if let Some(action) = hardest
            && severity(&action) >= severity(&decision.action)
        {
            decision.action = Cow::Owned(action);
        }
        if let Some(client) = mail.client {
            for (length, reason) in overruns.into_iter().filter_map(|o| o.ban) {
                self.ban(client, length, RateLimits::scope(), reason, deadline)
                    .await;
            }
        }
        decision
    }

    /// Runs the DNS checks concurrently until they finish or `deadline`;
    /// their hits join `hits`. Returns whether any failed or was cut off.
    async fn run_dns(
        &self,
        mail: &Mail<'_>,
        checks: &[(usize, &Check)],
        deadline: Instant,
        hits: &mut Vec<(usize, Hit)>,
    ) -> bool {
        if checks.is_empty() {
            return false;
        }
        let context = self.chain.context();
        let mut join = JoinAll::new(
            checks
                .iter()
                .map(|(_, check)| check.dns(mail, &self.dns, deadline, context)),
        );
        let timed_out = tokio::time::timeout_at(deadline.into(), &mut join)
            .await
            .is_err();
        if timed_out {
            self.stats.deadline_answers.fetch_add(1, Ordering::Relaxed);
        }
        let mut incomplete = false;
        for ((i, check), outcome) in checks.iter().zip(join.into_outputs()) {
            match outcome {
                Some(Ok(Some(hit))) => hits.push((*i, hit)),
                Some(Ok(None)) => {}
                Some(Err(error)) => {
                    incomplete = true;
                    self.stats.check_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(check = %check.name, %error, "check failed; it counts nothing for this request");
                }
                None => {
                    incomplete = true;
                    self.stats.check_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        check = %check.name,
                        client = ?mail.client,
                        "check still running at the request deadline; answering without it"
                    );
                }
            }
        }
        incomplete
    }

    /// Adds this request's hits to the mail's score, picks the threshold
    /// and bans if it says so.
    async fn score(
        &self,
        mail: &Mail<'_>,
        key: Option<MailKey>,
        known: Read,
        hits: &[(usize, Hit)],
        incomplete: bool,
        deadline: Instant,
    ) -> Decision {
        let now = match known {
            Read::Current { at, .. } => at,
            Read::Stale => Instant::now(),
        };
        let add = |state: &mut MailState| {
            let before = self.thresholds.reached(state.score).map(|(i, _)| i);
            for (i, hit) in hits {
                if state.fired.contains(*i) {
                    continue;
                }
                state.fired.insert(*i);
                state.score += hit.score;
                if !state.detail.is_empty() {
                    state.detail.push(' ');
                }
                state.detail.push_str(&hit.detail);
            }
            let reached = self.thresholds.reached(state.score);
            let ban = reached
                .and_then(|(_, threshold)| threshold.ban.map(|length| (length, &threshold.scope)))
                .filter(|_| !state.banned);
            if ban.is_some() {
                state.banned = true;
            }
            let reached = reached.map(|(i, _)| i);
            (
                state.score,
                state.detail.clone(),
                reached,
                ban,
                reached != before,
            )
        };
        let (score, detail, reached, ban, newly_reached) = match (key, known) {
            (Some(key), _) if !hits.is_empty() => {
                self.mails
                    .update(key, now, now + self.score_ttl, MailState::default, add)
            }
            // Nothing new: what the mail has, creating nothing.
            (
                Some(_),
                Read::Current {
                    known: Some(known), ..
                },
            ) => {
                let reached = self.thresholds.reached(known.score).map(|(i, _)| i);
                (known.score, known.detail, reached, None, false)
            }
            (Some(_), Read::Current { known: None, .. }) | (None, _) => {
                add(&mut MailState::default())
            }
            (Some(key), Read::Stale) => self
                .mails
                .get(&key, now, |state| {
                    let reached = self.thresholds.reached(state.score).map(|(i, _)| i);
                    (state.score, state.detail.clone(), reached, None, false)
                })
                .unwrap_or_else(|| add(&mut MailState::default())),
        };
        let action = self
            .answer(mail, reached, score, &detail, newly_reached, deadline)
            .await;
        // Once per mail: only the request whose SPF check ran has it.
        let action = match hits.iter().find_map(|(_, hit)| hit.header.as_deref()) {
            Some(header) if action.eq_ignore_ascii_case(DUNNO) => {
                Cow::Owned(format!("PREPEND {header}"))
            }
            _ => action,
        };
        if let (Some((length, scope)), Some(ip)) = (ban, mail.client) {
            let reason = format!("policy score {score}: {detail}");
            self.ban(ip, length, scope.clone(), reason, deadline).await;
        }
        Decision {
            action,
            score,
            detail,
            incomplete,
        }
    }

    /// The answer of the threshold `reached` (an index into the table),
    /// greylisting's when it is a greylisting threshold.
    async fn answer(
        &self,
        mail: &Mail<'_>,
        reached: Option<usize>,
        score: f64,
        detail: &str,
        newly_reached: bool,
        deadline: Instant,
    ) -> Cow<'static, str> {
        match reached.and_then(|i| self.thresholds.get(i)) {
            None => Cow::Borrowed(DUNNO),
            Some(threshold) if threshold.greylist => match &self.greylist {
                Some(greylist) => {
                    let ip = address_text(mail.client);
                    match greylist.decide(mail, &ip, score, detail, deadline).await {
                        Answer::Defer(action) => Cow::Owned(action),
                        Answer::Pass => Cow::Borrowed(DUNNO),
                    }
                }
                None => Cow::Borrowed(DUNNO),
            },
            Some(threshold) => {
                let ip = address_text(mail.client);
                let action = threshold.action.render(&ip, score, detail);
                // Once per mail and threshold, without the answer: Postfix
                // logs each RCPT's answer itself.
                if newly_reached {
                    info!(
                        client = %ip,
                        instance = mail.instance.unwrap_or(""),
                        score = %score_text(score),
                        %detail,
                        "threshold reached"
                    );
                } else {
                    debug!(client = %ip, instance = mail.instance.unwrap_or(""), %action, "threshold still reached");
                }
                Cow::Owned(action)
            }
        }
    }

    /// Bans `ip` through the sink, waiting for it at most until
    /// `deadline`: the answer never waits longer than the request may.
    async fn ban(
        &self,
        ip: IpAddr,
        length: BanLength,
        ban_scope: BanScope,
        reason: String,
        deadline: Instant,
    ) {
        let Some(sink) = &self.sink else {
            return;
        };
        let sink = Arc::clone(sink);
        let task = tokio::task::spawn_blocking(move || {
            sink.ban(IpNet::from(ip), length, Source::Policy, &reason, &ban_scope)
        });
        match tokio::time::timeout_at(deadline.into(), task).await {
            Ok(Ok(Ok(_))) => {
                self.stats.bans.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(Err(error))) => {
                self.stats.bans_refused.fetch_add(1, Ordering::Relaxed);
                info!(client = %ip, %error, "policy ban refused; the answer stands");
            }
            Ok(Err(error)) => warn!(client = %ip, %error, "policy ban failed"),
            Err(_) => warn!(client = %ip, "policy ban still pending at the request deadline"),
        }
    }
}

#[cfg(test)]
mod tests;
