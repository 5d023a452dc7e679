//! What `spamwall explain` answers: why an address or prefix is blocked or
//! not, from the store, the allowlist, the kernel maps and fail2ban.

use serde::{Deserialize, Serialize};

use super::{BanEntry, Source};

/// Everything that decides whether a target is blocked. Targets are
/// written as administrators write them (`192.0.2.7`, `2001:db8::/64`),
/// times in RFC 3339 UTC, `null` for no expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The target as given.
    pub input: String,
    /// The target as read: IPv4-mapped IPv6 becomes IPv4.
    pub target: String,
    pub verdict: Verdict,
    /// The active ban on exactly this target.
    pub ban: Option<BanDetail>,
    /// Active bans on wider prefixes that contain the target, narrowest
    /// first.
    pub covered_by: Vec<BanDetail>,
    /// The ended ban on exactly this target, kept as history: it still
    /// counts for escalation.
    pub history: Option<BanDetail>,
    /// How long a ban at `ban.bantime` would last if made now (escalated
    /// for a repeat offender); `null`: permanent.
    pub next_bantime: Option<String>,
    /// For a prefix: how many active bans lie inside it, and the first of
    /// them.
    pub inside: u64,
    pub inside_first: Vec<BanEntry>,
    /// The allowlist entry that overlaps the target: it cannot be banned,
    /// and a ban covering it is lifted.
    pub allowlisted_by: Option<String>,
    /// The address of this host the target contains (`ban.ignore_self`).
    pub own_address: Option<String>,
    pub kernel: KernelView,
    /// `null` when no fail2ban backend is configured.
    pub fail2ban: Option<Fail2banView>,
    /// `xdp.ports`: the destination ports bans apply to; empty means all
    /// traffic.
    pub ports: Vec<u16>,
}

/// The short answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// An active ban on exactly this target.
    Banned,
    /// No ban of its own, but an active ban on a prefix that contains it.
    Covered,
    /// Not banned, and the allowlist keeps it so.
    Allowlisted,
    /// Not banned, and `ban.ignore_self` keeps it so.
    OwnAddress,
    NotBanned,
}

/// A ban as the store holds it, with its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanDetail {
    #[serde(flatten)]
    pub entry: BanEntry,
    /// RFC 3339 UTC.
    pub first_banned_at: String,
    /// RFC 3339 UTC; `count` is the escalation step of the ban made then.
    pub last_banned_at: String,
}

/// What the kernel maps hold for the target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelView {
    /// Whether the maps could be read; `note` says why not.
    pub available: bool,
    /// Whether the program is attached, so packets are checked.
    pub enforcing: bool,
    /// The XDP backend's state, as `status` shows it.
    pub note: String,
    /// The exact entry, then the prefix entries containing the target,
    /// longest first; expired ones included.
    pub entries: Vec<MapEntry>,
    /// Whether a live entry drops the target's packets now.
    pub dropped: bool,
}

/// One map entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    pub map: String,
    pub key: String,
    pub live: bool,
    /// The entry's monotonic expiry as wall-clock time; `null`: permanent.
    pub expires_at: Option<String>,
    pub source: Source,
    pub count: u32,
    /// The ports the entry's scope bits stand for under the running
    /// configuration: absent for `xdp.ports`, empty for all traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
}

/// What the fail2ban backend holds for the target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fail2banView {
    pub jail: String,
    /// Whether bans go to fail2ban now (always, or as the fallback while
    /// XDP is not enforcing).
    pub active: bool,
    /// The target and covering prefixes the jail holds.
    pub held: Vec<String>,
    /// Operations waiting for delivery to fail2ban.
    pub queued: u64,
    /// Why the jail could not be asked.
    pub error: Option<String>,
}
