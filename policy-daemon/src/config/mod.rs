//! The TOML configuration: sections, defaults and one validation pass.
//!
//! Unknown keys are errors naming the key and its line. Every value has a
//! documented default, so an empty file is a valid configuration.
//! Reading text so that every mistake is reported at once is in `read`,
//! the validation pass and the warnings in `validate`.

mod read;
#[cfg(test)]
mod tests;
mod validate;

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};

use crate::{
    bans::{
        Aggregation, Allowlist, BanPolicy, BanScope, Escalation, PortScopes, TooManyScopes, Widest,
        parse_target,
    },
    dataplane::{AttachMode, Capacities},
    duration::{BanTime, Span},
};

pub use read::{ParseError, Reading};
pub use validate::HostPaths;

/// Where the configuration is looked for when neither `--config` nor
/// `SPAMWALL_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/spamwall/spamwall.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "SPAMWALL_CONFIG";

/// A configuration that cannot be used, with the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}:\n  {}", problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub xdp: XdpConfig,
    pub ban: BanConfig,
    /// Absent: fail2ban is used only when `ban.backends` names it.
    pub fail2ban: Option<Fail2banConfig>,
    pub metrics: MetricsConfig,
    pub policy: crate::policy::PolicyConfig,
    /// Absent: bans stay on this host.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// `[logwatch]`: log sources, filters and ban rules. Default none.
    pub logwatch: crate::logwatch::LogwatchConfig,
    /// `[[feed]]`: blocklists applied as bans. Default none.
    #[serde(rename = "feed")]
    pub feeds: Vec<crate::feeds::FeedConfig>,
}

/// `[daemon]`: where the daemon keeps its socket, state and pins.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// UNIX socket the CLI talks to. Default `/run/spamwall/control.sock`.
    pub control_socket: PathBuf,
    /// Persistent state. Default `/var/lib/spamwall`.
    pub state_dir: PathBuf,
    /// bpffs directory for the pinned program, maps and links.
    /// Default `/sys/fs/bpf/spamwall`.
    pub bpf_pin_dir: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            control_socket: PathBuf::from("/run/spamwall/control.sock"),
            state_dir: PathBuf::from("/var/lib/spamwall"),
            bpf_pin_dir: PathBuf::from("/sys/fs/bpf/spamwall"),
        }
    }
}

/// `[xdp]`: where and how the program is attached.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpConfig {
    /// Interfaces to attach to. Default none: bans are kept but not enforced.
    pub interfaces: Vec<String>,
    /// `auto` (native, then skb), `native` or `skb`. Default `auto`.
    pub mode: AttachMode,
    /// Destination ports bans apply to; empty (the default) means all traffic.
    pub ports: Vec<u16>,
    /// Count what would be dropped (`would_drop_v4`, `would_drop_v6`) and
    /// pass it: a first rollout without risk. Default false.
    pub dry_run: bool,
}

/// `[ban]`: ban policy and map sizes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanConfig {
    /// Ban length when none is given. Default 1 hour; `"permanent"` or 0
    /// for no expiry.
    pub bantime: BanTime,
    /// Addresses and prefixes that are never banned, on any path. Loopback
    /// (`127.0.0.0/8`, `::1`) is always included.
    #[serde(deserialize_with = "deserialize_allowlist")]
    pub allowlist: Allowlist,
    /// Where bans are enforced, in order. Default `["xdp"]`.
    pub backends: Vec<Backend>,
    /// Capacity of the exact IPv4 ban map. Default 1,048,576.
    pub capacity_v4: u32,
    /// Capacity of the exact IPv6 ban map. Default 1,048,576.
    pub capacity_v6: u32,
    /// Capacity of the IPv4 prefix trie. Default 65,536.
    pub capacity_prefix_v4: u32,
    /// Capacity of the IPv6 prefix trie. Default 65,536.
    pub capacity_prefix_v6: u32,
    /// Lengthen bans of repeat offenders: the n-th ban within
    /// `history_age` lasts `bantime × 2^(n−1) × factor`, capped at
    /// `maxtime` (fail2ban's `bantime.increment`). Default true.
    pub increment: bool,
    /// Multiplier of the escalation. Default 1.
    pub factor: f64,
    /// Longest escalated ban. Default 1 week.
    pub maxtime: Span,
    /// How long past bans count for escalation before they are purged.
    /// Default 1 week.
    pub history_age: Span,
    /// Never ban this host's own addresses. Default true.
    pub ignore_self: bool,
    /// Ban a whole prefix once this many of its addresses were banned
    /// within `aggregate_window`; 0 (the default) turns this off.
    pub aggregate_threshold: u32,
    /// Window for `aggregate_threshold`. Default 10 minutes.
    pub aggregate_window: Span,
    /// IPv4 prefix length aggregated to. Default 24.
    pub aggregate_v4_prefix: u8,
    /// IPv6 prefix length aggregated to. Default 64.
    pub aggregate_v6_prefix: u8,
    /// The widest IPv4 prefix any ban may cover; wider ones are refused on
    /// every path (the command line goes wider only with `--force`).
    /// Default 16.
    pub widest_v4: u8,
    /// The widest IPv6 prefix any ban may cover. Default 32.
    pub widest_v6: u8,
    /// How often the kernel maps are reconciled with the store (missing
    /// bans written back, stray and expired entries removed) and old
    /// history purged; also done at start. Default 1 minute. Read at start.
    pub reconcile_interval: Span,
}

/// `[fail2ban]`: the fail2ban server bans go to when `ban.backends` names
/// it, or, when the section is present, whenever XDP cannot be used.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fail2banConfig {
    /// fail2ban's control socket. Default `/var/run/fail2ban/fail2ban.sock`.
    pub socket: PathBuf,
    /// The jail bans are added to. Default `spamwall`. It belongs to
    /// spamwall: entries spamwall does not hold are lifted.
    pub jail: String,
    /// How often the jail is compared with the store, both ways: bans it
    /// lacks are sent again, entries no active ban explains are lifted.
    /// Also done at start. Default 1 minute.
    pub reconcile_interval: Span,
}

impl Fail2banConfig {
    /// The backend's settings; retry timings keep their defaults.
    pub fn settings(&self) -> crate::bans::fail2ban::Fail2banSettings {
        crate::bans::fail2ban::Fail2banSettings {
            socket: self.socket.clone(),
            jail: self.jail.clone(),
            ..crate::bans::fail2ban::Fail2banSettings::default()
        }
    }
}

impl Default for Fail2banConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/var/run/fail2ban/fail2ban.sock"),
            jail: "spamwall".to_owned(),
            reconcile_interval: Span(Duration::from_mins(1)),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` serving `GET /metrics`, e.g. `127.0.0.1:9465`. Default
    /// none: no endpoint.
    pub listen: Option<String>,
}

impl Default for BanConfig {
    fn default() -> Self {
        let capacities = Capacities::default();
        Self {
            bantime: BanTime(Some(Duration::from_hours(1))),
            allowlist: Allowlist::default(),
            backends: vec![Backend::Xdp],
            capacity_v4: capacities.v4,
            capacity_v6: capacities.v6,
            capacity_prefix_v4: capacities.prefix_v4,
            capacity_prefix_v6: capacities.prefix_v6,
            increment: true,
            factor: 1.0,
            maxtime: Span(Duration::from_hours(24 * 7)),
            history_age: Span(Duration::from_hours(24 * 7)),
            ignore_self: true,
            aggregate_threshold: 0,
            aggregate_window: Span(Duration::from_mins(10)),
            aggregate_v4_prefix: 24,
            aggregate_v6_prefix: 64,
            widest_v4: 16,
            widest_v6: 32,
            reconcile_interval: Span(Duration::from_mins(1)),
        }
    }
}

impl BanConfig {
    /// The manager's settings.
    pub fn policy(&self) -> BanPolicy {
        BanPolicy {
            allowlist: self.allowlist.clone(),
            default_bantime: self.bantime.0,
            escalation: self.increment.then_some(Escalation {
                factor: self.factor,
                max: self.maxtime.0,
            }),
            history_age: self.history_age.0,
            aggregation: (self.aggregate_threshold > 0).then_some(Aggregation {
                threshold: self.aggregate_threshold,
                window: self.aggregate_window.0,
                v4_prefix: self.aggregate_v4_prefix,
                v6_prefix: self.aggregate_v6_prefix,
            }),
            ignore_self: self.ignore_self,
            widest: Widest {
                v4: self.widest_v4,
                v6: self.widest_v6,
            },
            scopes: PortScopes::default(),
        }
    }

    /// Map sizes as the dataplane takes them.
    pub const fn capacities(&self) -> Capacities {
        Capacities {
            v4: self.capacity_v4,
            v6: self.capacity_v6,
            prefix_v4: self.capacity_prefix_v4,
            prefix_v6: self.capacity_prefix_v6,
        }
    }
}

/// A ban backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The XDP program's maps.
    Xdp,
    /// fail2ban's control socket.
    Fail2ban,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Xdp => "xdp",
            Self::Fail2ban => "fail2ban",
        })
    }
}

fn deserialize_allowlist<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Allowlist, D::Error> {
    let entries = Vec::<String>::deserialize(deserializer)?;
    let mut nets: Vec<IpNet> = Vec::with_capacity(entries.len());
    let mut bad = Vec::new();
    for entry in &entries {
        match parse_target(entry) {
            Ok(net) => nets.push(net),
            Err(e) => bad.push(format!("allowlist entry {e}")),
        }
    }
    if bad.is_empty() {
        Ok(Allowlist::new(nets))
    } else {
        Err(de::Error::custom(bad.join("; ")))
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            ParseError::Syntax(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ParseError::Invalid(problems) => ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            },
        })
    }

    /// Parses and validates configuration text, reporting every problem
    /// at once: a key with an unknown name, a wrong type or a bad value is
    /// set aside (its default stands in) and the rest read again, so one
    /// mistake does not hide the next; then the validation pass runs on
    /// what remains. Only broken TOML stops at its first error.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let reading = Self::read(text).map_err(ParseError::Syntax)?;
        match reading.config {
            Some(config) if reading.problems.is_empty() => Ok(config),
            _ => Err(ParseError::Invalid(reading.problems)),
        }
    }

    /// The manager's settings: `[ban]`, and the port scopes of `xdp.ports`
    /// and of every rule and threshold.
    pub fn ban_policy(&self) -> BanPolicy {
        BanPolicy {
            scopes: self.port_scopes().unwrap_or_default(),
            ..self.ban.policy()
        }
    }

    /// The port scopes: `xdp.ports`, then each rule's and threshold's own
    /// `ports`.
    pub fn port_scopes(&self) -> Result<PortScopes, TooManyScopes> {
        let named: Vec<BanScope> = self
            .scoped_ports()
            .map(|(_, ports)| BanScope::from_ports(ports))
            .collect();
        PortScopes::new(&self.xdp.ports, &named)
    }

    /// Every rule's and threshold's own `ports`, with its key.
    fn scoped_ports(&self) -> impl Iterator<Item = (String, &[u16])> {
        let rules = self
            .logwatch
            .rule
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| {
                rule.ports
                    .as_deref()
                    .map(|ports| (format!("logwatch.rule[{i}].ports"), ports))
            });
        let thresholds = self
            .policy
            .threshold
            .iter()
            .enumerate()
            .filter_map(|(i, threshold)| {
                threshold
                    .ports
                    .as_deref()
                    .map(|ports| (format!("policy.threshold[{i}].ports"), ports))
            });
        rules.chain(thresholds)
    }
}

/// The configuration path to use: `--config`, then `SPAMWALL_CONFIG`, then
/// the default.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}
