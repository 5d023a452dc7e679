//! Bans: targets, the allowlist, the manager every ban goes through, and
//! the store that records them.

use std::{
    fmt::{self, Write as _},
    net::IpAddr,
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use xdp_common::{SOURCE_CLI, SOURCE_FEED, SOURCE_FLEET, SOURCE_LOGWATCH, SOURCE_POLICY};

use crate::dataplane::PacketCounters;

mod allowlist;
mod backend;
pub mod explain;
pub mod fail2ban;
mod manager;
mod scope;
mod source_filter;
pub mod store;

pub use allowlist::Allowlist;
pub use backend::{Backend, BackendStatus};
pub use manager::{
    Aggregation, BanEvent, BanManager, BanObserver, BanPolicy, BanRequest, Breadth, Cursor,
    Escalation, Fail2banLink, Fail2banReconciled, Glance, Held, MapBatch, Reconciled, Widest,
    XdpBackend, bulk_requests, host_addresses,
};
pub use scope::{BanScope, PortScopes, ScopeTextError, TooManyScopes};
pub use source_filter::{SourceFilter, UnknownSourceFilter, is_feed_name};

/// Why a text is not a ban target.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{input:?} is not an IP address or CIDR prefix")]
    NotAnAddress { input: String },
    #[error("{input} has host bits set; the prefix is {network}")]
    HostBits { input: String, network: IpNet },
    /// A scope (zone) id names a link of this host; a ban applies to the
    /// address on every link.
    #[error("{input:?} has a scope id (%{zone}); give the address without it: {address}")]
    ScopeId {
        input: String,
        zone: String,
        address: String,
    },
}

/// Why an address cannot be banned, or a ban not made or lifted.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BanError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "{} is in the allowlist ({}); not banned",
        target_to_string(target),
        target_to_string(entry)
    )]
    Allowlisted { target: IpNet, entry: IpNet },
    #[error(
        "{} is an address of this host ({}); not banned (ban.ignore_self)",
        target_to_string(target),
        target_to_string(own)
    )]
    OwnAddress { target: IpNet, own: IpNet },
    #[error(
        "{} is wider than ban.widest_{} (/{widest}); not banned (`spamwall ban --force` goes wider)",
        target_to_string(target),
        if target.addr().is_ipv4() { "v4" } else { "v6" }
    )]
    TooWide { target: IpNet, widest: u8 },
    #[error("{}: {reason}", target_to_string(target))]
    TooLong {
        target: IpNet,
        reason: crate::clock::TooLong,
    },
    #[error("{}: {source}", target_to_string(target))]
    Kernel {
        target: IpNet,
        #[source]
        source: Arc<crate::dataplane::DataplaneError>,
    },
    /// The store failed; shared by every request of the batch it failed.
    #[error("{source}; nothing was banned")]
    Store {
        #[source]
        source: Arc<store::StoreError>,
    },
    /// A request the manager has no result for (a broken invariant).
    #[error("{0}; nothing was banned")]
    Lost(&'static str),
}

impl From<store::StoreError> for BanError {
    fn from(source: store::StoreError) -> Self {
        Self::Store {
            source: Arc::new(source),
        }
    }
}

/// Parses a ban target: an IPv4 or IPv6 address (optionally in brackets, as
/// Postfix logs it), or a CIDR prefix without host bits. IPv4-mapped IPv6
/// addresses become IPv4.
pub fn parse_target(input: &str) -> Result<IpNet, TargetError> {
    let text = input.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let not_an_address = || TargetError::NotAnAddress {
        input: input.to_owned(),
    };
    if let Ok(addr) = IpAddr::from_str(text) {
        return Ok(IpNet::from(addr.to_canonical()));
    }
    if let Some((address, zone)) = text.split_once('%')
        && let Ok(addr) = IpAddr::from_str(address)
    {
        let (zone, length) = zone.split_once('/').map_or((zone, ""), |(z, l)| (z, l));
        let without = if length.is_empty() {
            addr.to_canonical().to_string()
        } else {
            format!("{addr}/{length}")
        };
        return Err(TargetError::ScopeId {
            input: input.to_owned(),
            zone: zone.to_owned(),
            address: without,
        });
    }
    let net = IpNet::from_str(text).map_err(|_| not_an_address())?;
    if net.trunc() != net {
        return Err(TargetError::HostBits {
            input: input.to_owned(),
            network: net.trunc(),
        });
    }
    Ok(canonical_net(net))
}

/// `::ffff:a.b.c.d/(96+n)` is the IPv4 prefix `a.b.c.d/n`.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// Who asked for a ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Policy,
    Cli,
    Logwatch,
    Fleet,
    /// A blocklist feed; the feed's name starts the ban's reason
    /// (`feed:NAME …`).
    Feed,
}

impl Source {
    /// Every source.
    pub const ALL: [Self; 5] = [
        Self::Policy,
        Self::Cli,
        Self::Logwatch,
        Self::Fleet,
        Self::Feed,
    ];

    /// The position of this source in [`Source::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The code stored in the kernel map value.
    pub const fn code(self) -> u16 {
        match self {
            Self::Policy => SOURCE_POLICY,
            Self::Cli => SOURCE_CLI,
            Self::Logwatch => SOURCE_LOGWATCH,
            Self::Fleet => SOURCE_FLEET,
            Self::Feed => SOURCE_FEED,
        }
    }

    /// The source for a stored code; unknown codes read as `cli`.
    pub const fn from_code(code: u16) -> Self {
        match code {
            SOURCE_POLICY => Self::Policy,
            SOURCE_LOGWATCH => Self::Logwatch,
            SOURCE_FLEET => Self::Fleet,
            SOURCE_FEED => Self::Feed,
            _ => Self::Cli,
        }
    }
}

impl Source {
    /// The name used in JSON, the store and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Cli => "cli",
            Self::Logwatch => "logwatch",
            Self::Fleet => "fleet",
            Self::Feed => "feed",
        }
    }
}

/// A name that is not a ban source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a ban source (policy, cli, logwatch, fleet or feed)")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|source| source.as_str() == text)
            .ok_or_else(|| UnknownSource(text.to_owned()))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One active ban as `list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanEntry {
    /// Address or CIDR prefix; a single address is written without `/32`
    /// or `/128`.
    #[serde(with = "target_text")]
    pub addr: IpNet,
    /// RFC 3339 UTC expiry, `None` for permanent.
    #[serde(with = "rfc3339_opt")]
    pub expires_at: Option<SystemTime>,
    pub source: Source,
    pub reason: String,
    /// Score detail of a policy verdict.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Times this address has been banned within the history age.
    pub count: u32,
    /// The destination ports the ban holds on: absent for `xdp.ports`,
    /// empty for all traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// Packets the XDP program dropped for this ban (in a dry run: would
    /// have dropped) while its entry has been in the kernel maps.
    #[serde(default)]
    pub packets: u64,
    /// RFC 3339 UTC time of the last of them, `None` before the first.
    #[serde(default, with = "rfc3339_opt")]
    pub last_hit: Option<SystemTime>,
}

/// Figures for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanStats {
    pub bans_active: u64,
    pub bans_v4: u64,
    pub bans_v6: u64,
    pub prefixes_v4: u64,
    pub prefixes_v6: u64,
    #[serde(flatten)]
    pub packets: PacketCounters,
    /// Live bans found missing from an LRU map.
    pub evicted: u64,
    /// Failed writes to a ban backend.
    pub backend_errors: u64,
    /// Operations waiting for fail2ban.
    pub queue_depth: u64,
    pub policy_requests: u64,
}

/// Where verdict sources (policy thresholds, log rules, the fleet) send
/// their bans: the daemon's ban manager behind its lock. Blocking: call it
/// from a blocking context (`tokio::task::spawn_blocking`).
pub trait BanSink: Send + Sync {
    /// Bans `target` through the manager on the ports of `scope`; the
    /// allowlist applies.
    fn ban(
        &self,
        target: IpNet,
        length: BanLength,
        source: Source,
        reason: &str,
        scope: &BanScope,
    ) -> Result<BanEntry, BanError>;
}

/// A ban length as requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanLength {
    /// `ban.bantime`, escalated for repeat offenders.
    Default,
    /// No expiry.
    Permanent,
    /// Exactly this long (a length given by hand).
    #[serde(with = "secs")]
    For(Duration),
    /// This long the first time, escalated for repeat offenders (a rule's
    /// own bantime).
    #[serde(with = "secs")]
    Base(Duration),
    /// Until this Unix time (`i64::MAX`: permanent), as another host
    /// decided it: not escalated and not counted again (fleet bans).
    Until(i64),
}

/// A target as an administrator writes it: `192.0.2.7`, `2001:db8::/64`.
pub fn target_to_string(net: &IpNet) -> String {
    let mut text = String::with_capacity(18);
    push_target(&mut text, net);
    text
}

/// Appends [`target_to_string`]'s text of `net` to `text`. IPv4 digits
/// are written directly: a bulk store write formats every target, and the
/// formatting machinery costs several times the digits.
pub fn push_target(text: &mut String, net: &IpNet) {
    match net.addr() {
        IpAddr::V4(addr) => {
            for (i, octet) in addr.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                push_decimal(text, octet);
            }
        }
        IpAddr::V6(addr) => {
            let _ = write!(text, "{addr}");
        }
    }
    if net.prefix_len() != net.max_prefix_len() {
        text.push('/');
        push_decimal(text, net.prefix_len());
    }
}

/// Appends `n` in decimal.
fn push_decimal(text: &mut String, n: u8) {
    if n >= 100 {
        text.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        text.push(char::from(b'0' + n / 10 % 10));
    }
    text.push(char::from(b'0' + n % 10));
}

mod target_text {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(value: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::target_to_string(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_target(&text).map_err(de::Error::custom)
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de};

    #[expect(
        clippy::ref_option,
        reason = "serde's `with` passes a reference to the field"
    )]
    pub fn serialize<S: Serializer>(value: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(time) => s.serialize_str(&crate::clock::rfc3339(*time)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339(&text).map_err(de::Error::custom))
            .transpose()
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// A [`BanSink`] for unit tests of verdict sources: records every ban and
/// refuses loopback, as the manager's allowlist would.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct RecordingSink {
    pub bans: std::sync::Mutex<Vec<(IpNet, BanLength, Source, String)>>,
    /// The scope of each ban in `bans`, in the same order.
    pub scopes: std::sync::Mutex<Vec<BanScope>>,
}

#[cfg(test)]
impl RecordingSink {
    /// The bans recorded so far.
    ///
    /// # Panics
    /// When a test panicked while holding the lock.
    pub fn recorded(&self) -> Vec<(IpNet, BanLength, Source, String)> {
        self.bans.lock().expect("lock").clone()
    }
}

#[cfg(test)]
impl BanSink for RecordingSink {
    fn ban(
        &self,
        target: IpNet,
        length: BanLength,
        source: Source,
        reason: &str,
        scope: &BanScope,
    ) -> Result<BanEntry, BanError> {
        if target.addr().is_loopback() {
            return Err(BanError::Allowlisted {
                target,
                entry: target,
            });
        }
        self.bans
            .lock()
            .expect("lock")
            .push((target, length, source, reason.to_owned()));
        self.scopes.lock().expect("lock").push(scope.clone());
        Ok(BanEntry {
            addr: target,
            expires_at: None,
            source,
            reason: reason.to_owned(),
            detail: String::new(),
            count: 1,
            ports: None,
            packets: 0,
            last_hit: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test net")
    }

    #[test]
    fn targets_parse_and_normalise() {
        assert_eq!(parse_target("192.0.2.7"), Ok(net("192.0.2.7/32")));
        assert_eq!(parse_target(" 2001:db8::1 "), Ok(net("2001:db8::1/128")));
        assert_eq!(parse_target("[2001:db8::1]"), Ok(net("2001:db8::1/128")));
        assert_eq!(parse_target("::ffff:192.0.2.7"), Ok(net("192.0.2.7/32")));
        assert_eq!(
            parse_target("::ffff:192.0.2.0/120"),
            Ok(net("192.0.2.0/24"))
        );
        assert_eq!(parse_target("198.51.100.0/24"), Ok(net("198.51.100.0/24")));
        assert_eq!(
            parse_target("2001:db8:1:2::/64"),
            Ok(net("2001:db8:1:2::/64"))
        );
    }

    #[test]
    fn target_text_is_what_the_standard_formatting_writes() {
        let standard = |net: &IpNet| {
            if net.prefix_len() == net.max_prefix_len() {
                net.addr().to_string()
            } else {
                net.to_string()
            }
        };
        let mut nets = Vec::new();
        for octet in 0..=u8::MAX {
            for place in 0..4 {
                let mut octets = [192, 0, 2, 7];
                octets[place] = octet;
                nets.push(IpNet::from(IpAddr::from(octets)));
            }
        }
        for len in 0..=32 {
            nets.push(IpNet::new(IpAddr::from([198, 51, 100, 0]), len).expect("len"));
        }
        for len in [0, 1, 48, 64, 99, 127, 128] {
            nets.push(IpNet::new("2001:db8::".parse().expect("v6"), len).expect("len"));
        }
        nets.extend(
            [
                "::/128",
                "::1/128",
                "2001:db8:0:0:1::1/128",
                "::ffff:0:0/96",
            ]
            .map(net),
        );
        let mut text = String::from("kept ");
        for net in &nets {
            assert_eq!(target_to_string(net), standard(net));
            push_target(&mut text, net);
            text.push(' ');
        }
        let expected: Vec<String> = nets.iter().map(standard).collect();
        assert_eq!(text, format!("kept {} ", expected.join(" ")));
    }

    #[test]
    fn bad_targets_name_the_input() {
        for input in [
            "",
            "example.com",
            "192.0.2.256",
            "192.0.2.0/33",
            "1.2.3",
            "192.0.2.7; rm",
        ] {
            let error = parse_target(input).expect_err(input);
            assert!(error.to_string().contains(&format!("{input:?}")), "{error}");
        }
        let error = parse_target("192.0.2.5/24").expect_err("host bits");
        assert_eq!(
            error,
            TargetError::HostBits {
                input: "192.0.2.5/24".into(),
                network: net("192.0.2.0/24")
            }
        );
        assert!(error.to_string().contains("192.0.2.0/24"));
        let error = parse_target("fe80::1%eth0").expect_err("scope id");
        assert_eq!(
            error.to_string(),
            "\"fe80::1%eth0\" has a scope id (%eth0); give the address without it: fe80::1"
        );
        let error = parse_target("fe80::%2/64").expect_err("scope id");
        assert!(
            error
                .to_string()
                .ends_with("(%2); give the address without it: fe80::/64"),
            "{error}"
        );
    }

    #[test]
    fn allowlist_always_holds_loopback_and_catches_overlaps() {
        let allow = Allowlist::new([net("192.0.2.0/24"), net("2001:db8::/32")]);
        assert_eq!(
            allow.covers(&net("127.0.0.53/32")),
            Some(net("127.0.0.0/8"))
        );
        assert_eq!(allow.covers(&net("::1/128")), Some(net("::1/128")));
        assert_eq!(
            allow.covers(&net("192.0.2.9/32")),
            Some(net("192.0.2.0/24"))
        );
        // A wider prefix that would swallow an allowlisted range is refused.
        assert_eq!(
            allow.covers(&net("192.0.0.0/16")),
            Some(net("192.0.2.0/24"))
        );
        assert_eq!(allow.covers(&net("0.0.0.0/0")), Some(net("127.0.0.0/8")));
        assert_eq!(
            allow.covers(&net("2001:db8:5::/48")),
            Some(net("2001:db8::/32"))
        );
        assert_eq!(allow.covers(&net("198.51.100.1/32")), None);
        assert_eq!(allow.covers(&net("2001:db9::/32")), None);
    }

    #[test]
    fn sources_round_trip_through_their_codes() {
        for (i, source) in Source::ALL.into_iter().enumerate() {
            assert_eq!(source.index(), i);
            assert_eq!(Source::from_code(source.code()), source);
            assert_eq!(source.as_str().parse(), Ok(source));
        }
        assert_eq!(
            "CLI"
                .parse::<Source>()
                .expect_err("case matters")
                .to_string(),
            "\"CLI\" is not a ban source (policy, cli, logwatch, fleet or feed)"
        );
    }

    #[test]
    fn stats_json_names_every_packet_counter_at_the_top_level() {
        let mut stats = BanStats {
            bans_active: 3,
            ..BanStats::default()
        };
        let mut json = serde_json::to_value(stats).expect("json");
        for (i, counter) in xdp_common::Counter::ALL.iter().enumerate() {
            assert_eq!(json[counter.name()], 0, "{json}");
            json[counter.name()] = serde_json::json!(i + 10);
        }
        assert_eq!(json["bans_active"], 3);
        json["from_a_newer_daemon"] = serde_json::json!({"nested": true});
        stats = serde_json::from_value(json).expect("back");
        assert_eq!(stats.bans_active, 3);
        assert_eq!(stats.packets.get(xdp_common::Counter::DroppedV6), 12);
        assert_eq!(stats.packets.get(xdp_common::Counter::OutOfScopePassed), 16);
    }

    #[test]
    fn ban_entry_json_shape() {
        let entry = BanEntry {
            addr: net("192.0.2.7/32"),
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_hours(500_000)),
            source: Source::Cli,
            reason: "test".into(),
            detail: String::new(),
            count: 2,
            ports: None,
            packets: 0,
            last_hit: None,
        };
        let json = serde_json::to_value(&entry).expect("json");
        assert_eq!(json["addr"], "192.0.2.7");
        assert_eq!(json["expires_at"], "2027-01-15T08:00:00Z");
        assert_eq!(json["source"], "cli");
        assert_eq!(json["count"], 2);
        assert_eq!(json["packets"], 0);
        assert!(json["last_hit"].is_null());
        let hit = BanEntry {
            packets: 12,
            last_hit: Some(SystemTime::UNIX_EPOCH + Duration::from_hours(400_000)),
            ..entry.clone()
        };
        let json = serde_json::to_value(&hit).expect("json");
        assert_eq!(json["packets"], 12);
        assert_eq!(json["last_hit"], "2015-08-19T16:00:00Z");
        let permanent = BanEntry {
            expires_at: None,
            addr: net("2001:db8::/64"),
            ..entry
        };
        let json = serde_json::to_value(&permanent).expect("json");
        assert!(json["expires_at"].is_null());
        assert_eq!(json["addr"], "2001:db8::/64");
        let back: BanEntry = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, permanent);
    }
}
