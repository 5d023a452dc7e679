//! The TOML configuration: sections, defaults and one validation pass.
//!
//! Unknown keys are errors naming the key and its line. Every value has a
//! documented default, so an empty file is a valid configuration.

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

    /// Problems of `xdp.ports` and of the rules' and thresholds' own.
    fn port_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.xdp.ports.contains(&0) {
            problems.push(
                "xdp.ports: port 0 cannot be enforced; list ports from 1 to 65535".to_owned(),
            );
        }
        for (key, ports) in self.scoped_ports() {
            if ports.contains(&0) {
                problems.push(format!(
                    "{key}: port 0 cannot be enforced; list ports from 1 to 65535, or [] for all traffic"
                ));
            }
        }
        if let Err(error) = self.port_scopes() {
            problems.push(format!("ports: {error}"));
        }
        problems
    }

    /// [`Self::parse`] that keeps what it could read: the configuration
    /// with defaults in place of refused keys (none if reading gave up)
    /// next to every problem, for `check-config` to judge the rest too.
    /// `Err` is text that is not TOML.
    pub fn read(text: &str) -> Result<Reading, String> {
        let mut root = toml::de::DeTable::parse(text).map_err(|e| toml_message(&e, text))?;
        // Each with where it is in the file, to be told in the file's order.
        let mut read_problems = Vec::new();
        let mut dropped = DroppedElements::default();
        let config = loop {
            match Self::deserialize(toml::de::Deserializer::from(root.clone())) {
                Ok(config) => break Some(config),
                Err(error) => {
                    let at = error.span().map_or(usize::MAX, |span| span.start);
                    let key = error
                        .span()
                        .and_then(|span| drop_culprit(root.get_mut(), &span, "", &mut dropped));
                    let message = toml_message(&error, text);
                    match key {
                        Some(key) if read_problems.len() < MAX_READ_PROBLEMS => {
                            read_problems.push((at, format!("{key}: {message}")));
                        }
                        // Nothing left to set aside: report it and stop.
                        _ => {
                            read_problems.push((at, message));
                            break None;
                        }
                    }
                }
            }
        };
        read_problems.sort_by_key(|(at, _)| *at);
        let mut problems: Vec<String> = read_problems.into_iter().map(|(_, p)| p).collect();
        if let Some(config) = &config {
            problems.extend(config.problems().iter().map(|p| dropped.original_keys(p)));
        }
        Ok(Reading { config, problems })
    }

    /// What is allowed but risky, each naming its key; `check-config`
    /// prints them and the daemon logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.xdp.interfaces == ["lo"] {
            warnings.push(
                "xdp.interfaces: lo is the only interface: bans hold only for traffic to loopback, never for mail from outside; list the interfaces mail arrives on".to_owned(),
            );
        }
        warnings.extend(self.logwatch.warnings());
        warnings
    }

    /// What this host says about the configuration, each naming its key:
    /// interfaces that do not exist, log files that are not there, DNS
    /// lists asked through a public resolver. `check-config` prints them
    /// after [`Self::warnings`].
    pub fn host_warnings(&self, host: &HostPaths) -> Vec<String> {
        let mut warnings = Vec::new();
        for interface in &self.xdp.interfaces {
            if !interface.is_empty()
                && !interface.contains('/')
                && !host.net_class.join(interface).exists()
            {
                warnings.push(format!(
                    "xdp.interfaces: {interface} does not exist on this host ({} has no {interface}): the daemon cannot attach to it",
                    host.net_class.display()
                ));
            }
        }
        warnings.extend(self.logwatch.host_warnings());
        warnings.extend(self.policy.resolver_warnings(&host.resolv_conf));
        warnings
    }

    /// Every semantic problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for interface in &self.xdp.interfaces {
            if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ', '\0'])
            {
                problems.push(format!(
                    "xdp.interfaces: {interface:?} is not a valid interface name"
                ));
            } else if seen.contains(&interface) {
                problems.push(format!("xdp.interfaces: {interface} is listed twice"));
            }
            seen.push(interface);
        }
        problems.extend(self.port_problems());
        if self.ban.backends.is_empty() {
            problems.push("ban.backends: at least one backend is needed (\"xdp\")".to_owned());
        }
        for (i, backend) in self.ban.backends.iter().enumerate() {
            if self.ban.backends[..i].contains(backend) {
                problems.push(format!("ban.backends: {backend} is listed twice"));
            }
        }
        if let Some(listen) = &self.metrics.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(format!(
                "metrics.listen: {listen:?} is not host:port (e.g. \"127.0.0.1:9465\")"
            ));
        }
        if !(self.ban.factor.is_finite() && self.ban.factor > 0.0) {
            problems.push("ban.factor: must be a positive number".to_owned());
        }
        if let Err(error) = crate::clock::check_ban_length(self.ban.maxtime.0) {
            problems.push(format!("ban.maxtime: {error}"));
        }
        if self.ban.aggregate_v4_prefix > 32 {
            problems.push("ban.aggregate_v4_prefix: must be at most 32".to_owned());
        }
        if self.ban.aggregate_v6_prefix > 128 {
            problems.push("ban.aggregate_v6_prefix: must be at most 128".to_owned());
        }
        if self.ban.widest_v4 > 32 {
            problems.push("ban.widest_v4: must be at most 32".to_owned());
        }
        if self.ban.widest_v6 > 128 {
            problems.push("ban.widest_v6: must be at most 128".to_owned());
        }
        if self.ban.aggregate_threshold > 0 {
            if self.ban.aggregate_v4_prefix < self.ban.widest_v4 {
                problems.push(format!(
                    "ban.aggregate_v4_prefix: /{} is wider than ban.widest_v4 (/{})",
                    self.ban.aggregate_v4_prefix, self.ban.widest_v4
                ));
            }
            if self.ban.aggregate_v6_prefix < self.ban.widest_v6 {
                problems.push(format!(
                    "ban.aggregate_v6_prefix: /{} is wider than ban.widest_v6 (/{})",
                    self.ban.aggregate_v6_prefix, self.ban.widest_v6
                ));
            }
        }
        if let Some(fail2ban) = &self.fail2ban
            && let Err(error) = crate::bans::fail2ban::check_jail_name(&fail2ban.jail)
        {
            problems.push(format!("fail2ban.jail: {error}"));
        }
        for (key, value) in [
            ("ban.capacity_v4", self.ban.capacity_v4),
            ("ban.capacity_v6", self.ban.capacity_v6),
            ("ban.capacity_prefix_v4", self.ban.capacity_prefix_v4),
            ("ban.capacity_prefix_v6", self.ban.capacity_prefix_v6),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        for (key, path) in [
            ("daemon.control_socket", &self.daemon.control_socket),
            ("daemon.state_dir", &self.daemon.state_dir),
            ("daemon.bpf_pin_dir", &self.daemon.bpf_pin_dir),
        ] {
            if !path.is_absolute() {
                problems.push(format!("{key}: {} is not an absolute path", path.display()));
            }
        }
        problems.extend(crate::policy::problems(&self.policy));
        problems.extend(self.logwatch.problems());
        problems.extend(crate::feeds::config::problems(&self.feeds));
        if let Some(fleet) = &self.fleet {
            problems.extend(fleet.problems());
        }
        problems
    }
}

/// A configuration read as far as it goes, with every problem found.
#[derive(Debug)]
pub struct Reading {
    /// What was read, defaults standing in for refused keys; `None` when
    /// reading gave up.
    pub config: Option<Config>,
    /// Every problem, as [`ParseError::Invalid`] lists them.
    pub problems: Vec<String>,
}

/// Where [`Config::host_warnings`] looks on this host.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// The network interfaces, one entry each. Default `/sys/class/net`.
    pub net_class: PathBuf,
    /// The system resolver configuration DNS checks fall back to.
    /// Default `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            net_class: PathBuf::from("/sys/class/net"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// Why configuration text was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The text is not TOML, with line and column: reading stops there.
    Syntax(String),
    /// Every problem, one per key: unknown keys, wrong types and bad values
    /// (with line and column), then what validation found.
    Invalid(Vec<String>),
}

/// Keys set aside before reading gives up: a bound on the passes over a
/// hostile file.
const MAX_READ_PROBLEMS: usize = 100;

/// Elements of arrays of tables dropped while reading, by array key and
/// original index: later elements move up, and validation names them by
/// their new index, which [`Self::original_keys`] turns back.
#[derive(Debug, Default)]
struct DroppedElements {
    by_array: std::collections::BTreeMap<String, Vec<usize>>,
}

impl DroppedElements {
    /// The index in the file of what is now element `index` of `array`.
    fn original(&self, array: &str, index: usize) -> usize {
        let mut original = index;
        if let Some(dropped) = self.by_array.get(array) {
            for &gone in dropped {
                if gone <= original {
                    original += 1;
                }
            }
        }
        original
    }

    fn note(&mut self, array: &str, original: usize) {
        let dropped = self.by_array.entry(array.to_owned()).or_default();
        dropped.push(original);
        dropped.sort_unstable();
    }

    /// `problem` with every `array[i]` it starts with numbered as in the
    /// file; outer arrays first, since inner ones are named by them.
    fn original_keys(&self, problem: &str) -> String {
        let mut problem = problem.to_owned();
        let mut arrays: Vec<&String> = self.by_array.keys().collect();
        arrays.sort_by_key(|array| array.len());
        for array in arrays {
            let Some(rest) = problem
                .strip_prefix(array.as_str())
                .and_then(|rest| rest.strip_prefix('['))
            else {
                continue;
            };
            let Some((index, rest)) = rest.split_once(']') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            problem = format!("{array}[{}]{rest}", self.original(array, index));
        }
        problem
    }
}

/// Removes from `table` the entry an error at `span` is about: the
/// innermost key, or the element of an array of tables that is wrong as a
/// whole (a required key missing). Returns its key as validation names
/// keys (`policy.check[2].zone`), or `None` if no entry holds `span`.
/// Tables are searched whatever their own span: a `[section]`'s covers
/// its header only.
fn drop_culprit(
    table: &mut toml::de::DeTable<'_>,
    span: &std::ops::Range<usize>,
    prefix: &str,
    dropped: &mut DroppedElements,
) -> Option<String> {
    let holds = |outer: std::ops::Range<usize>| outer.start <= span.start && span.end <= outer.end;
    let keys: Vec<_> = table.keys().cloned().collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let Some(value) = table.get_mut(&key) else {
            continue;
        };
        let culprit = holds(key.span()) || holds(value.span());
        match value.get_mut() {
            _ if holds(key.span()) => {}
            toml::de::DeValue::Table(inner) => {
                if let Some(inner_key) = drop_culprit(inner, span, &path, dropped) {
                    return Some(inner_key);
                }
            }
            toml::de::DeValue::Array(items) => {
                for index in 0..items.len() {
                    let item = &mut items.as_mut()[index];
                    let item_holds = holds(item.span());
                    let toml::de::DeValue::Table(element) = item.get_mut() else {
                        continue;
                    };
                    let original = dropped.original(&path, index);
                    let element_key = format!("{path}[{original}]");
                    if let Some(inner_key) = drop_culprit(element, span, &element_key, dropped) {
                        return Some(inner_key);
                    }
                    if item_holds {
                        let mut kept = toml::de::DeArray::new();
                        for (i, item) in items.iter().enumerate() {
                            if i != index {
                                kept.push(item.clone());
                            }
                        }
                        *items = kept;
                        dropped.note(&path, original);
                        return Some(element_key);
                    }
                }
            }
            _ => {}
        }
        if culprit {
            table.remove(&key);
            return Some(path);
        }
    }
    None
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(message) => f.write_str(message),
            Self::Invalid(problems) => f.write_str(&problems.join("; ")),
        }
    }
}

/// toml's message with the line and column first and the source excerpt
/// dropped, e.g. `line 3, column 1: unknown field `colour`, expected …`.
fn toml_message(error: &toml::de::Error, input: &str) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &input[..span.start.min(input.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

/// The configuration path to use: `--config`, then `SPAMWALL_CONFIG`, then
/// the default.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Err(ParseError::Invalid(problems)) => problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    /// Why `text` was refused, as one string: a key with an unknown name,
    /// a wrong type or a bad value.
    fn syntax(text: &str) -> String {
        match Config::parse(text) {
            Err(error) => error.to_string(),
            Ok(config) => panic!("expected an error, got {config:?}"),
        }
    }

    #[test]
    fn every_mistake_is_reported_at_once_with_its_key_and_line() {
        let problems = invalid(
            "[xdp]\nmode = \"turbo\"\ncolour = \"red\"\n\
             [ban]\nallowlist = [\"nope\", \"192.0.2.0/24\", \"also-not\"]\nbantime = \"forever\"\n\
             [daemon]\nstate_dir = \"relative\"\n\
             [[policy.check]]\ntype = \"helo\"\n\
             [[policy.check]]\nname = \"zen\"\ntype = \"dnsbl\"\nzone = \"zen.example\"\ntimeout = \"soon\"\n\
             [[policy.check]]\nname = \"x\"\ntype = \"dnsbl\"\n\
             [xpd]\n",
        );
        let all = problems.join("\n");
        for needle in [
            "xdp.mode: line 2, column 8: unknown variant `turbo`",
            "xdp.colour: line 3, column 1: unknown field `colour`",
            "ban.allowlist: line 5, column 13: allowlist entry \"nope\"",
            "allowlist entry \"also-not\"",
            "ban.bantime: line 6, column 11:",
            "policy.check[0]: line 9, column 1: missing field `name`",
            "policy.check[1].timeout: line 15",
            "xpd: line 19",
            // Validation still runs, with the file's own indexes.
            "daemon.state_dir: relative is not an absolute path",
            "policy.check[2].zone",
        ] {
            assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
        }
        assert!(!all.contains("policy.check[1].zone"), "{all}");
        assert!(
            problems[0].starts_with("xdp.mode") && problems[1].starts_with("xdp.colour"),
            "in the file's order: {all}"
        );
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let config = Config::parse("").expect("empty config");
        assert_eq!(
            config.daemon.control_socket,
            Path::new("/run/spamwall/control.sock")
        );
        assert_eq!(config.daemon.state_dir, Path::new("/var/lib/spamwall"));
        assert_eq!(config.daemon.bpf_pin_dir, Path::new("/sys/fs/bpf/spamwall"));
        assert!(config.xdp.interfaces.is_empty());
        assert_eq!(config.xdp.mode, AttachMode::Auto);
        assert!(config.xdp.ports.is_empty());
        assert_eq!(config.ban.bantime, BanTime(Some(Duration::from_hours(1))));
        assert_eq!(config.ban.backends, vec![Backend::Xdp]);
        assert_eq!(config.ban.capacity_v4, 1 << 20);
        assert!(
            config
                .ban
                .allowlist
                .covers(&"127.0.0.1/32".parse().expect("net"))
                .is_some()
        );
        assert!(
            config
                .ban
                .allowlist
                .covers(&"::1/128".parse().expect("net"))
                .is_some()
        );
    }

    #[test]
    fn full_example_parses() {
        let config = Config::parse(
            r#"
            [daemon]
            control_socket = "/tmp/s.sock"
            [xdp]
            interfaces = ["eth0", "eth1.100"]
            mode = "skb"
            ports = [25, 465, 587]
            [ban]
            bantime = "10m"
            allowlist = ["192.0.2.0/24", "2001:db8::1"]
            capacity_v4 = 1000
            "#,
        )
        .expect("valid config");
        assert_eq!(config.xdp.interfaces, ["eth0", "eth1.100"]);
        assert_eq!(config.xdp.mode, AttachMode::Skb);
        assert_eq!(config.xdp.ports, [25, 465, 587]);
        assert_eq!(config.ban.bantime, BanTime(Some(Duration::from_mins(10))));
        assert_eq!(config.ban.capacities().v4, 1000);
        let allow = &config.ban.allowlist;
        assert!(
            allow
                .covers(&"192.0.2.77/32".parse().expect("net"))
                .is_some()
        );
        assert!(
            allow
                .covers(&"2001:db8::1/128".parse().expect("net"))
                .is_some()
        );
        assert!(
            allow
                .covers(&"127.0.0.1/32".parse().expect("net"))
                .is_some(),
            "loopback stays allowed"
        );
        assert!(
            allow
                .covers(&"198.51.100.1/32".parse().expect("net"))
                .is_none()
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let message = syntax("[xdp]\ninterfaces = []\ncolour = \"red\"\n");
        assert!(message.contains("colour"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn unknown_section_is_named() {
        let message = syntax("[xpd]\n");
        assert!(message.contains("xpd"), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn wrong_type_is_named() {
        let message = syntax("[xdp]\nports = \"25\"\n");
        assert!(message.contains("line 2"), "{message}");
        let message = syntax("[xdp]\nports = [70000]\n");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn bad_mode_lists_the_choices() {
        let message = syntax("[xdp]\nmode = \"turbo\"\n");
        assert!(
            message.contains("turbo") && message.contains("skb"),
            "{message}"
        );
    }

    #[test]
    fn bad_allowlist_entry_is_named() {
        let message = syntax("[ban]\nallowlist = [\"10.0.0.0/8\", \"not-an-ip\"]\n");
        assert!(message.contains("not-an-ip"), "{message}");
    }

    #[test]
    fn durations() {
        assert_eq!("90s".parse(), Ok(BanTime(Some(Duration::from_secs(90)))));
        assert_eq!(
            "1w".parse(),
            Ok(BanTime(Some(Duration::from_hours(7 * 24))))
        );
        assert_eq!("3600".parse(), Ok(BanTime(Some(Duration::from_hours(1)))));
        assert_eq!("permanent".parse(), Ok(BanTime(None)));
        assert_eq!("0".parse(), Ok(BanTime(None)));
        assert!("soon".parse::<BanTime>().is_err_and(|e| e.contains("soon")));
        let config = Config::parse("[ban]\nbantime = 0\n").expect("integer bantime");
        assert_eq!(config.ban.bantime, BanTime(None));
        let message = syntax("[ban]\nmaxtime = \"permanent\"\n");
        assert!(
            message.contains("\"permanent\""),
            "a span has an end: {message}"
        );
        let message = syntax("[ban]\nbantime = \"forever\"\n");
        assert!(
            message.contains("forever") && message.contains("line 2"),
            "{message}"
        );
    }

    #[test]
    fn ban_lengths_beyond_the_maximum_are_refused_on_every_key() {
        assert_eq!(
            "10y".parse(),
            Ok(BanTime(Some(crate::clock::MAX_BAN_LENGTH)))
        );
        for text in ["10y 1s", "10000y", "20000000000000"] {
            let error = text.parse::<BanTime>().expect_err(text);
            assert!(error.contains("exceeds the maximum of 10years"), "{error}");
        }
        let message = syntax("[ban]\nbantime = \"10000y\"\n");
        assert!(
            message.contains("10000years") && message.contains("line 2"),
            "{message}"
        );
        let message = syntax("[ban]\nbantime = 18446744073709551615\n");
        assert!(message.contains("exceeds the maximum"), "{message}");
        let problems = invalid("[ban]\nmaxtime = \"99y\"\n");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("ban.maxtime:") && p.contains("99years")),
            "{problems:?}"
        );
        let message = syntax(
            "[policy]\n[[policy.threshold]]\nscore = 5\naction = \"REJECT\"\nban = \"99999y\"\n",
        );
        assert!(message.contains("99999years"), "{message}");
        // Every other length of time is bounded too, so no timer overflows.
        for text in [
            "[ban]\nhistory_age = 18446744073709551615\n",
            "[policy]\nidle_timeout = \"500000y\"\n",
            "[fail2ban]\nreconcile_interval = \"101y\"\n",
        ] {
            let message = syntax(text);
            assert!(message.contains("longest setting"), "{text}: {message}");
        }
    }

    #[test]
    fn the_reconcile_interval_defaults_to_a_minute_and_is_never_zero() {
        let config = Config::parse("").expect("defaults");
        assert_eq!(config.ban.reconcile_interval.0, Duration::from_mins(1));
        let config = Config::parse("[ban]\nreconcile_interval = \"2s\"\n").expect("2s");
        assert_eq!(config.ban.reconcile_interval.0, Duration::from_secs(2));
        let message = syntax("[ban]\nreconcile_interval = 0\n");
        assert!(message.contains("must be longer than zero"), "{message}");
    }

    #[test]
    fn the_widest_prefix_bounds_aggregation_too() {
        let config = Config::parse("").expect("defaults");
        assert_eq!((config.ban.widest_v4, config.ban.widest_v6), (16, 32));
        let problems = invalid(
            "[ban]\nwidest_v4 = 33\nwidest_v6 = 48\naggregate_threshold = 3\naggregate_v4_prefix = 8\naggregate_v6_prefix = 40\n",
        );
        for needle in [
            "ban.widest_v4: must be at most 32",
            "ban.aggregate_v4_prefix: /8 is wider than ban.widest_v4 (/33)",
            "ban.aggregate_v6_prefix: /40 is wider than ban.widest_v6 (/48)",
        ] {
            assert!(
                problems.iter().any(|p| p == needle),
                "{needle}: {problems:?}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let problems = invalid(
            r#"
            [daemon]
            state_dir = "relative/dir"
            [xdp]
            interfaces = ["eth0", "eth0", "this-name-is-too-long"]
            ports = [0, 25]
            [ban]
            backends = ["xdp", "xdp"]
            capacity_v6 = 0
            "#,
        );
        let all = problems.join("\n");
        for needle in [
            "daemon.state_dir",
            "listed twice",
            "this-name-is-too-long",
            "xdp.ports",
            "xdp is listed twice",
            "ban.capacity_v6",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn rules_and_thresholds_scope_their_bans_to_their_own_ports() {
        let config = Config::parse(
            r#"
            [xdp]
            ports = [25, 465, 587]
            [[logwatch.rule]]
            filter = "postfix"
            mode = "auth"
            ports = [993, 587, 465]
            [[logwatch.rule]]
            filter = "postfix"
            mode = "rbl"
            ports = [25]
            [[policy.threshold]]
            score = 15
            action = "reject"
            ban = "1h"
            ports = [25]
            "#,
        )
        .expect("valid");
        let scopes = config.ban_policy().scopes;
        assert_eq!(
            scopes.describe(),
            vec![
                Some(vec![25, 465, 587]),
                Some(vec![465, 587, 993]),
                Some(vec![25])
            ]
        );
        let problems = invalid(
            r#"
            [[logwatch.rule]]
            filter = "postfix"
            ports = [0]
            [[policy.threshold]]
            score = 5
            action = "prepend X-Spam: yes"
            ports = [25]
            "#,
        )
        .join("\n");
        assert!(
            problems.contains("logwatch.rule[0].ports: port 0"),
            "{problems}"
        );
        assert!(
            problems.contains("policy.threshold[0].ports: only a threshold with `ban`"),
            "{problems}"
        );
        let many = (1..=8)
            .map(|port| format!("[[logwatch.rule]]\nfilter = \"postfix\"\nports = [{port}]\n"))
            .collect::<Vec<_>>()
            .concat();
        let problems = invalid(&format!("[xdp]\nports = [25]\n{many}")).join("\n");
        assert!(problems.contains("9 distinct port scopes"), "{problems}");
    }

    #[test]
    fn ban_lifecycle_keys_parse_into_the_manager_policy() {
        let config = Config::parse(
            r#"
            [ban]
            bantime = "10m"
            increment = true
            factor = 2.0
            maxtime = "1d"
            history_age = "30d"
            ignore_self = false
            aggregate_threshold = 5
            aggregate_window = "5m"
            aggregate_v6_prefix = 56
            backends = ["xdp", "fail2ban"]
            [fail2ban]
            socket = "/run/fail2ban/fail2ban.sock"
            jail = "postfix-bots"
            [metrics]
            listen = "127.0.0.1:9465"
            "#,
        )
        .expect("valid config");
        let policy = config.ban.policy();
        assert_eq!(policy.default_bantime, Some(Duration::from_mins(10)));
        let escalation = policy.escalation.expect("increment on");
        assert!((escalation.factor - 2.0).abs() < f64::EPSILON);
        assert_eq!(escalation.max, Duration::from_hours(24));
        assert_eq!(policy.history_age, Duration::from_hours(24 * 30));
        assert!(!policy.ignore_self);
        let aggregation = policy.aggregation.expect("aggregation on");
        assert_eq!(
            (
                aggregation.threshold,
                aggregation.v4_prefix,
                aggregation.v6_prefix
            ),
            (5, 24, 56)
        );
        assert_eq!(
            config.fail2ban.expect("section").settings().jail,
            "postfix-bots"
        );
        assert_eq!(config.metrics.listen.as_deref(), Some("127.0.0.1:9465"));
        assert!(Config::parse("").expect("defaults").fail2ban.is_none());
    }

    #[test]
    fn ban_lifecycle_problems_are_named() {
        let problems = invalid(
            "[ban]\nfactor = -1.0\naggregate_v4_prefix = 40\n[metrics]\nlisten = \"nowhere\"\n[fail2ban]\njail = \"two words\"\n",
        );
        let all = problems.join("\n");
        for needle in [
            "ban.factor",
            "ban.aggregate_v4_prefix",
            "metrics.listen",
            "fail2ban.jail",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let message = syntax("[ban]\nmaxtime = 0\n");
        assert!(
            message.contains("longer than zero") && message.contains("line 2"),
            "{message}"
        );
    }

    #[test]
    fn host_warnings_name_missing_interfaces_and_loopback_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("eth0")).expect("mkdir");
        let host = HostPaths {
            net_class: dir.path().to_owned(),
            resolv_conf: dir.path().join("resolv.conf"),
        };
        let config = Config::parse("[xdp]\ninterfaces = [\"eth0\", \"eht1\"]\n").expect("valid");
        assert!(config.warnings().is_empty());
        assert_eq!(
            config.host_warnings(&host),
            [format!(
                "xdp.interfaces: eht1 does not exist on this host ({} has no eht1): the daemon cannot attach to it",
                dir.path().display()
            )]
        );
        let config = Config::parse("[xdp]\ninterfaces = [\"lo\"]\n").expect("valid");
        assert_eq!(config.warnings().len(), 1);
        assert!(
            config.warnings()[0].starts_with("xdp.interfaces: lo is the only interface"),
            "{:?}",
            config.warnings()
        );
        let config = Config::parse("[xdp]\ninterfaces = [\"lo\", \"eth0\"]\n").expect("valid");
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn config_path_resolution_prefers_the_flag() {
        assert_eq!(
            resolve_path(Some(Path::new("/x.toml"))),
            Path::new("/x.toml")
        );
    }
}
