//! How long a ban lasts: the requested length, escalation for repeat
//! offenders, another host's absolute expiry, and the ten-year limit.

use std::time::Duration;

use ipnet::IpNet;

use super::Held;
use super::{BanManager, BanRequest, Escalation};
use crate::bans::BanScope;
use crate::{
    bans::{BanError, BanLength, Source, store::StoredBan},
    clock::{self, expiry_after, secs_i64},
};

impl BanManager {
    /// The row a ban of `target` makes, after `previous` (its row in the
    /// index; `queued`, when it is a row of the same batch not stored yet).
    pub(super) fn next_row(
        &self,
        previous: Option<&Held>,
        queued: Option<&StoredBan>,
        target: IpNet,
        request: BanRequest,
        now: i64,
    ) -> StoredBan {
        let cutoff = now.saturating_sub(secs_i64(self.policy.history_age));
        let previous = previous.filter(|p| p.last_banned_at >= cutoff);
        if let BanLength::Until(until) = request.length {
            let scope = self.scope_with(previous, &request.scope, now);
            // A live local ban keeps its reason: read it back.
            let texts = || match queued {
                Some(row) => Some((row.reason.clone(), row.detail.clone())),
                None => self
                    .store
                    .get(&target)
                    .ok()
                    .flatten()
                    .map(|row| (row.reason, row.detail)),
            };
            return Self::remote_row(previous, texts, target, request, until, now, scope);
        }
        let count = previous.map_or(0, |p| p.count).saturating_add(1);
        let scope = self.scope_with(previous, &request.scope, now);
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
            scope,
            first_banned_at: previous.map_or(now, |p| p.first_banned_at),
            last_banned_at: now,
        }
    }

    /// The scope of a ban made in `scope`: with a live ban already there,
    /// the union of both, so a new offence never narrows an older one.
    fn scope_with(&self, previous: Option<&Held>, scope: &BanScope, now: i64) -> BanScope {
        match previous.filter(|p| p.is_active(now)) {
            Some(p) => p.scope.union(scope, self.policy.scopes.default_ports()),
            None => scope.clone(),
        }
    }

    /// A ban another host made: its absolute expiry (`i64::MAX` is
    /// permanent), the longer of it and a live local ban, and no new count,
    /// so escalation is not counted twice. A live ban made here keeps its
    /// source and reason (`texts`: its reason and detail), so a remote
    /// unban cannot lift it.
    pub(super) fn remote_row(
        previous: Option<&Held>,
        texts: impl FnOnce() -> Option<(String, String)>,
        target: IpNet,
        request: BanRequest,
        until: i64,
        now: i64,
        scope: BanScope,
    ) -> StoredBan {
        let remote = (until != i64::MAX).then_some(until.max(now.saturating_add(1)));
        let live = previous.filter(|p| p.is_active(now));
        let expires_at = match live {
            Some(p) => p.expires_at.zip(remote).map(|(a, b)| a.max(b)),
            None => remote,
        };
        let (source, reason, detail) = match live {
            // A feed's ban is renewed by the feed listing it, reason and all.
            Some(p) if p.source != Source::Fleet && p.source != Source::Feed => {
                let (reason, detail) = texts().unwrap_or((request.reason, request.detail));
                (p.source, reason, detail)
            }
            _ => (request.source, request.reason, request.detail),
        };
        StoredBan {
            target,
            expires_at,
            source,
            reason,
            detail,
            count: previous.map_or(0, |p| p.count),
            scope,
            first_banned_at: previous.map_or(now, |p| p.first_banned_at),
            last_banned_at: previous.map_or(now, |p| p.last_banned_at),
        }
    }

    pub(super) fn escalate(&self, base: Duration, count: u32) -> Duration {
        match self.policy.escalation {
            None => base,
            Some(Escalation { factor, max }) => {
                let multiplier = f64::from(1_u32 << (count - 1).min(20));
                let secs = (base.as_secs_f64() * multiplier * factor).min(max.as_secs_f64());
                Duration::from_secs_f64(secs.max(1.0))
            }
        }
    }
}

/// The length of a request, refused beyond [`clock::MAX_BAN_LENGTH`]; a
/// fleet ban's absolute expiry likewise.
pub(super) fn admissible_length(
    target: IpNet,
    length: BanLength,
    now: i64,
) -> Result<(), BanError> {
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
