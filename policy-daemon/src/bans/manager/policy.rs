//! The settings the manager applies to every ban: escalation, prefix
//! aggregation, the widest prefix, the allowlist.

use std::time::Duration;

use ipnet::IpNet;

use crate::bans::{Allowlist, PortScopes};

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
    /// The port scopes bans are enforced in.
    pub scopes: PortScopes,
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
            scopes: PortScopes::default(),
        }
    }
}
