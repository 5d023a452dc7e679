//! fail2ban as a ban backend, spoken to natively over its control socket.
//!
//! - [`pickle`] encodes commands and decodes replies;
//! - [`client`] holds one persistent connection and checks every reply;
//! - [`backend`] delivers ban and unban operations in order from a durable
//!   outbox ([`OutboxStore`]) and retries with backoff until fail2ban
//!   acknowledges each one, so an outage or restart loses nothing.
//!
//! Prefix bans are sent as CIDR text (`198.51.100.0/24`): fail2ban 1.0
//! parses them as subnets, keeps them in its database and hands them to
//! its actions. The iptables actions (Debian's default `banaction`) enforce
//! them; actions that cannot (nftables sets without the `interval` flag,
//! `ipset hash:ip` for IPv6) log the failure in fail2ban's log. Expanding
//! prefixes into addresses was rejected: an IPv6 /64 cannot be expanded,
//! and an IPv4 /24 would become 256 rules in the common iptables actions.

mod backend;
mod client;
pub mod pickle;

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use backend::{Fail2banBackend, Fail2banBackendError, check_jail_name};
#[cfg(any(test, feature = "test-support"))]
pub use client::{BanOutcome, JailStatus, UnbanOutcome};
pub use client::{Fail2banClient, Fail2banError};

use super::target_to_string;

/// fail2ban's default control socket.
pub const DEFAULT_SOCKET: &str = "/var/run/fail2ban/fail2ban.sock";
/// The jail spamwall bans into unless configured otherwise.
pub const DEFAULT_JAIL: &str = "spamwall";

/// Whether an operation bans or lifts a ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Ban,
    Unban,
}

impl OpKind {
    /// `"ban"` or `"unban"`, the form [`FromStr`] reads back.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ban => "ban",
            Self::Unban => "unban",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation kind that is neither `ban` nor `unban`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a fail2ban operation (ban or unban)")]
pub struct UnknownOpKind(pub String);

impl FromStr for OpKind {
    type Err = UnknownOpKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ban" => Ok(Self::Ban),
            "unban" => Ok(Self::Unban),
            other => Err(UnknownOpKind(other.to_owned())),
        }
    }
}

/// One ban or unban waiting for fail2ban's acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fail2banOp {
    pub kind: OpKind,
    /// A single address (`/32`, `/128`) or a prefix.
    pub target: IpNet,
}

impl Fail2banOp {
    pub const fn ban(target: IpNet) -> Self {
        Self {
            kind: OpKind::Ban,
            target,
        }
    }

    pub const fn unban(target: IpNet) -> Self {
        Self {
            kind: OpKind::Unban,
            target,
        }
    }
}

impl fmt::Display for Fail2banOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, target_to_string(&self.target))
    }
}

/// Durable storage for operations not yet acknowledged by fail2ban.
///
/// The backend calls [`push`](Self::push) before it accepts an operation,
/// [`remove`](Self::remove) only after fail2ban acknowledged it, and
/// [`pending`](Self::pending) once at start, so operations accepted before
/// a crash are delivered after it. Delivery is at least once: an operation
/// acknowledged just before a crash may be sent again, which fail2ban
/// treats as a no-op.
pub trait OutboxStore: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Stores `op` and returns its id. Ids increase in push order.
    fn push(&self, op: &Fail2banOp) -> Result<u64, Self::Error>;

    /// Every stored operation, in push order (ascending id).
    fn pending(&self) -> Result<Vec<(u64, Fail2banOp)>, Self::Error>;

    /// Forgets operation `id`; removing an unknown id is not an error.
    fn remove(&self, id: u64) -> Result<(), Self::Error>;

    /// Stores several operations at once (a bulk ban); ids in order. The
    /// default pushes one by one; stores with transactions do better.
    fn push_many(&self, ops: &[Fail2banOp]) -> Result<Vec<u64>, Self::Error> {
        ops.iter().map(|op| self.push(op)).collect()
    }
}

/// How to reach fail2ban and how hard to retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fail2banSettings {
    /// fail2ban's control socket. Default [`DEFAULT_SOCKET`].
    pub socket: PathBuf,
    /// The jail bans go into; it must exist in fail2ban's configuration.
    /// Default [`DEFAULT_JAIL`].
    pub jail: String,
    /// Longest wait for one reply (and for a write). Default 10 s.
    pub timeout: Duration,
    /// First wait after a failed delivery; doubled after each further
    /// failure. Default 500 ms.
    pub backoff_initial: Duration,
    /// Longest wait between retries. Default 30 s.
    pub backoff_max: Duration,
    /// How often an idle backend checks that fail2ban and the jail are
    /// there, so health stays current. Default 30 s.
    pub probe_interval: Duration,
}

impl Default for Fail2banSettings {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            jail: DEFAULT_JAIL.to_owned(),
            timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            probe_interval: Duration::from_secs(30),
        }
    }
}

/// The backend's state for `status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fail2banHealth {
    /// Whether the last exchange with fail2ban succeeded at the socket
    /// level.
    pub connected: bool,
    /// The last failure, cleared by the next successful exchange.
    pub last_error: Option<String>,
    /// Operations accepted but not yet acknowledged.
    pub queue_depth: u64,
    /// Operations fail2ban acknowledged.
    pub delivered: u64,
    /// Failed exchanges (each retry counts).
    pub errors: u64,
    /// Operations dropped because fail2ban refused them for good (an
    /// exception other than an unknown jail); each is logged as an error.
    pub rejected: u64,
}
