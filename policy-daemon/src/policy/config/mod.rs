//! `[policy]`: listeners, protocol limits, the check chain and the
//! threshold table.
//!
//! Parsing is plain serde; [`PolicyConfig::problems`] compiles the chain
//! (regexes, reply-code categories, list files, action templates) so that
//! `check-config` reports every mistake with its key, e.g.
//! `policy.check[2].zone`, before the daemon ever starts.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Deserializer, de};

pub use greylist::{DELAY_PLACEHOLDER, GreylistConfig};

use crate::duration::{BanTime, duration};

mod greylist;
pub mod ratelimit;

/// The listener every default configuration has: Postfix's customary port
/// on loopback.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10040";

/// Where the policy server listens: a TCP address or a UNIX socket path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `host:port`, IPv4 or `[IPv6]:port`.
    Tcp(SocketAddr),
    /// `unix:/absolute/path`.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{text:?}: a UNIX socket needs an absolute path, e.g. unix:/var/spool/postfix/private/spamwall"
                ));
            }
            return Ok(Self::Unix(path));
        }
        text.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
            format!("{text:?} is neither host:port (IPv4 or [IPv6]:port) nor unix:/path")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// The `[policy]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Whether the policy server runs. Default true; an empty `listen`
    /// list turns it off too.
    pub enabled: bool,
    /// Listeners. Default `["127.0.0.1:10040"]`.
    pub listen: Vec<ListenAddr>,
    /// DNS server for the DNS checks, `ip` or `ip:port` (UDP, then TCP on
    /// truncation). Default: the system's `/etc/resolv.conf`.
    pub resolver: Option<String>,
    /// Every request is answered within this time, from the checks that
    /// finished. Default 10 s (Postfix waits 100 s).
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// An idle connection is closed after this. Default 300 s, as
    /// Postfix's `smtpd_policy_service_max_idle`.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Connections served at once over all listeners. At the cap the
    /// connection idle the longest is closed to admit a new one; when all
    /// are busy, up to as many again wait for one to turn idle. Default
    /// 512.
    pub max_connections: usize,
    /// Longest `name=value` line in bytes. Default 4096.
    pub max_line_length: usize,
    /// Most attributes in one request. Default 100.
    pub max_attributes: usize,
    /// Largest request in bytes. Default 65536.
    pub max_request_size: usize,
    /// Mode of UNIX listener sockets. Default 0o666: Postfix's smtpd runs
    /// as `postfix`, not as spamwall's user.
    pub unix_mode: u32,
    /// How long a mail's score is kept after its first request. Default 1 h.
    #[serde(deserialize_with = "duration")]
    pub score_ttl: Duration,
    /// Most mails whose scores are kept at once. Default 100,000.
    pub score_cache_size: usize,
    /// Most DNS answers kept at once. Default 100,000.
    pub dns_cache_size: usize,
    /// How long a "not listed" answer without an SOA TTL is kept.
    /// Default 5 min.
    #[serde(deserialize_with = "duration")]
    pub dns_negative_ttl: Duration,
    /// Our own host names, for the `helo` check. Our addresses come from
    /// each request's `server_address`.
    pub hostnames: Vec<String>,
    /// The check chain, run in order.
    pub check: Vec<CheckConfig>,
    /// The threshold table; the highest score reached wins.
    pub threshold: Vec<ThresholdConfig>,
    /// Greylisting, for thresholds with `action = "greylist"`.
    pub greylist: Option<GreylistConfig>,
    /// Rate limits, counted at RCPT.
    pub ratelimit: Vec<ratelimit::RateLimitConfig>,
    /// Most rate limit counters (limit and key) kept at once; past it the
    /// least recently counted go. Default 100,000.
    pub ratelimit_keys: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 10040)))],
            resolver: None,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_mins(5),
            max_connections: 512,
            max_line_length: 4096,
            max_attributes: 100,
            max_request_size: 64 * 1024,
            unix_mode: 0o666,
            score_ttl: Duration::from_hours(1),
            score_cache_size: 100_000,
            dns_cache_size: 100_000,
            dns_negative_ttl: Duration::from_mins(5),
            hostnames: Vec::new(),
            check: Vec::new(),
            threshold: Vec::new(),
            greylist: None,
            ratelimit: Vec::new(),
            ratelimit_keys: ratelimit::DEFAULT_KEYS,
        }
    }
}

/// Check types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// Client IP against a DNS blocklist.
    Dnsbl,
    /// Domains (sender, HELO, reverse client name) against a domain list.
    Rhsbl,
    /// HELO sanity.
    Helo,
    /// Reverse DNS of the client.
    Rdns,
    /// Allow or deny by client CIDR, sender, recipient or HELO.
    List,
    /// SPF (RFC 7208) of the MAIL FROM domain, or of the HELO name for
    /// the null sender.
    Spf,
}

impl fmt::Display for CheckType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dnsbl => "dnsbl",
            Self::Rhsbl => "rhsbl",
            Self::Helo => "helo",
            Self::Rdns => "rdns",
            Self::List => "list",
            Self::Spf => "spf",
        })
    }
}

/// Domains an `rhsbl` check looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainField {
    /// The domain of `sender`.
    Sender,
    /// `helo_name`.
    Helo,
    /// `reverse_client_name` (the PTR name, confirmed or not).
    ReverseClientName,
    /// `client_name` (the forward-confirmed name).
    ClientName,
}

/// One `[[policy.check]]`. Keys that do not apply to the check's type are
/// reported by validation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Unique name, used in details and logs.
    pub name: String,
    /// `dnsbl`, `rhsbl`, `helo`, `rdns`, `list` or `spf`.
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// Score added when the check fires. Default 1.
    pub score: Option<f64>,
    /// Score of each SPF result, by its name (`spf`); results not listed
    /// score 0.
    pub scores: Option<BTreeMap<String, f64>>,
    /// Answer `PREPEND Received-SPF: …` where the answer would be `DUNNO`
    /// (`spf`). Default false.
    pub header: Option<bool>,
    /// DNS zone (`dnsbl`, `rhsbl`).
    pub zone: Option<String>,
    /// Lookup timeout (`dnsbl`, `rhsbl`, `spf`: each of its lookups).
    /// Default 2 s.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// This check's own DNS server, overriding `policy.resolver`.
    pub resolver: Option<String>,
    /// Reply-code categories (`dnsbl`, `rhsbl`).
    pub categories: Option<Vec<CategoryConfig>>,
    /// Domains to look up (`rhsbl`). Default sender, helo,
    /// `reverse_client_name`.
    pub fields: Option<Vec<DomainField>>,
    /// Which rules apply (`helo`, `rdns`). Default all.
    pub rules: Option<Vec<String>>,
    /// An allow list (`list`): a match ends the chain with `action`.
    pub allow: Option<bool>,
    /// Answer of an allow match (`list`). Default `DUNNO`.
    pub action: Option<String>,
    /// Client addresses or CIDR prefixes (`list`).
    pub client: Option<Vec<String>>,
    /// Sender addresses, exact or `/regex/` (`list`).
    pub sender: Option<Vec<String>>,
    /// Recipient addresses, exact or `/regex/` (`list`).
    pub recipient: Option<Vec<String>>,
    /// HELO names, exact or `/regex/` (`list`).
    pub helo: Option<Vec<String>>,
    /// File with one entry per line, `FIELD VALUE` or a bare address or
    /// prefix; `#` starts a comment (`list`).
    pub file: Option<PathBuf>,
}

/// One reply-code category of a DNS list.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// `127.0.0.N`, a range `127.0.0.2-127.0.0.8`, or `/regex/`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Category name, shown in details.
    pub name: String,
    /// Score of this category, used instead of the list's.
    pub score: f64,
}

/// One `[[policy.threshold]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Reached when a mail's score is at least this.
    pub score: f64,
    /// access(5) action template with `%IP%`, `%SCORE%`, `%DETAIL%`, or
    /// `greylist` to hand the mail to `[policy.greylist]`.
    pub action: String,
    /// Ban the client for this long (through the ban manager).
    pub ban: Option<BanTime>,
    /// The destination ports the ban holds on; default `xdp.ports`, `[]`
    /// all traffic.
    pub ports: Option<Vec<u16>>,
}

impl PolicyConfig {
    /// Whether any listener is to be started.
    pub fn serves(&self) -> bool {
        self.enabled && !self.listen.is_empty()
    }

    /// Every problem of the section's own keys, each naming its key;
    /// [`crate::policy::problems`] adds what compiling the checks and
    /// thresholds finds.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, listen) in self.listen.iter().enumerate() {
            if self.listen[..i].contains(listen) {
                problems.push(format!("policy.listen[{i}]: {listen} is listed twice"));
            }
        }
        if let Some(resolver) = &self.resolver
            && let Err(e) = parse_resolver(resolver)
        {
            problems.push(format!("policy.resolver: {e}"));
        }
        for (key, value) in [
            ("policy.max_connections", self.max_connections),
            ("policy.max_line_length", self.max_line_length),
            ("policy.max_attributes", self.max_attributes),
            ("policy.max_request_size", self.max_request_size),
            ("policy.score_cache_size", self.score_cache_size),
            ("policy.dns_cache_size", self.dns_cache_size),
            ("policy.ratelimit_keys", self.ratelimit_keys),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        if self.max_connections > usize::from(u16::MAX) {
            problems.push("policy.max_connections: at most 65535".to_owned());
        }
        for (key, value) in [
            ("policy.request_timeout", self.request_timeout),
            ("policy.idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{key}: must be longer than 0s"));
            }
        }
        if self.request_timeout >= Duration::from_secs(100) {
            problems.push(
                "policy.request_timeout: must stay below Postfix's smtpd_policy_service_timeout (100s), or Postfix answers 451 first"
                    .to_owned(),
            );
        }
        if self.unix_mode > 0o777 {
            problems.push(format!(
                "policy.unix_mode: {:#o} is not a permission mode (0o000 to 0o777)",
                self.unix_mode
            ));
        }
        for (i, host) in self.hostnames.iter().enumerate() {
            if host.trim().is_empty() || host.contains(char::is_whitespace) {
                problems.push(format!(
                    "policy.hostnames[{i}]: {host:?} is not a host name"
                ));
            }
        }
        problems
    }
}

/// Why a public resolver is a problem, said once for every such warning.
const PUBLIC_RESOLVER: &str = "DNS lists such as Spamhaus refuse queries that come through public resolvers (Spamhaus answers 127.255.255.254, which lists nobody), so these checks never fire: run a local resolver such as unbound and set policy.resolver = \"127.0.0.1\"";

impl PolicyConfig {
    /// Warnings about DNS list checks (`dnsbl`, `rhsbl`) whose queries go
    /// through a public resolver: a check's own `resolver`, else
    /// `policy.resolver`, else the `nameserver` lines of `resolv_conf`
    /// (`/etc/resolv.conf` in the daemon). Each names the key at fault
    /// and the checks it affects.
    pub fn resolver_warnings(&self, resolv_conf: &Path) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.serves() {
            return warnings;
        }
        let (mut by_policy, mut by_system) = (Vec::new(), Vec::new());
        for (i, check) in self.check.iter().enumerate() {
            if !matches!(check.kind, CheckType::Dnsbl | CheckType::Rhsbl) {
                continue;
            }
            match (&check.resolver, &self.resolver) {
                (Some(own), _) => {
                    if let Ok(addr) = parse_resolver(own)
                        && is_public_resolver(addr.ip())
                    {
                        warnings.push(format!(
                            "policy.check[{i}].resolver: {} ({}) is a public resolver: {PUBLIC_RESOLVER}",
                            addr.ip(),
                            check.name
                        ));
                    }
                }
                (None, Some(_)) => by_policy.push(check.name.as_str()),
                (None, None) => by_system.push(check.name.as_str()),
            }
        }
        if let Some(resolver) = &self.resolver
            && !by_policy.is_empty()
            && let Ok(addr) = parse_resolver(resolver)
            && is_public_resolver(addr.ip())
        {
            warnings.push(format!(
                "policy.resolver: {} is a public resolver, asked by the DNS list checks ({}): {PUBLIC_RESOLVER}",
                addr.ip(),
                by_policy.join(", ")
            ));
        }
        if !by_system.is_empty() {
            match std::fs::read_to_string(resolv_conf) {
                Err(e) => warnings.push(format!(
                    "policy.resolver: not set, and {} cannot be read ({e}): the DNS list checks ({}) have no resolver",
                    resolv_conf.display(),
                    by_system.join(", ")
                )),
                Ok(text) => {
                    let public: Vec<String> = resolv_conf_servers(&text)
                        .into_iter()
                        .filter(|ip| is_public_resolver(*ip))
                        .map(|ip| ip.to_string())
                        .collect();
                    if !public.is_empty() {
                        warnings.push(format!(
                            "policy.resolver: not set: the nameservers of {} answer the DNS list checks ({}), and {} {} public: {PUBLIC_RESOLVER}",
                            resolv_conf.display(),
                            by_system.join(", "),
                            public.join(", "),
                            if public.len() == 1 { "is" } else { "are" }
                        ));
                    }
                }
            }
        }
        warnings
    }
}

/// The `nameserver` addresses of resolv.conf(5) text, in order; a
/// `%zone` suffix is dropped.
pub fn resolv_conf_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let address = words.next()?;
            address.split('%').next()?.parse().ok()
        })
        .collect()
}

/// Whether `ip` is a resolver the Internet sees as someone else's: any
/// globally routed address. Loopback, private (RFC 1918), shared (CGNAT,
/// 100.64.0.0/10), link-local, unique local (`fc00::/7`), documentation,
/// benchmarking and reserved ranges are this host's or this network's.
pub fn is_public_resolver(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_resolver(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8))
        }
    }
}

/// Parses a resolver address: `ip` (port 53) or `ip:port` / `[ipv6]:port`.
pub fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not an address (ip, ip:port or [ipv6]:port)"))
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ParseError};

    const EXAMPLE: &str = r#"
[policy]
listen = ["127.0.0.1:10040", "unix:/var/spool/postfix/private/spamwall"]
resolver = "127.0.0.1:5353"
request_timeout = "10s"
idle_timeout = "300s"
max_connections = 512
score_ttl = "1h"
hostnames = ["mx.example.org"]
[[policy.check]]
name = "allow-partners"
type = "list"
allow = true
action = "DUNNO"
client = ["192.0.2.0/24", "2001:db8::/32"]
sender = ["/@partner\\.example$/"]
[[policy.check]]
name = "zen"
type = "dnsbl"
zone = "zen.example.test"
score = 5
timeout = "2s"
categories = [ { match = "127.0.0.2", name = "sbl", score = 10 }, { match = "127.0.0.10-127.0.0.11", name = "pbl", score = 3 } ]
[[policy.check]]
name = "dbl"
type = "rhsbl"
zone = "dbl.example.test"
fields = ["sender", "helo", "reverse_client_name"]
score = 3
[[policy.check]]
name = "helo"
type = "helo"
score = 2
[[policy.check]]
name = "rdns"
type = "rdns"
score = 2
[[policy.threshold]]
score = 10
action = "reject sender ip %IP% is blocked (score=%SCORE%, %DETAIL%)"
ban = "1h"
[[policy.threshold]]
score = 5
action = "prepend X-Spamwall-Score: %SCORE% (%DETAIL%)"
"#;

    fn invalid(text: &str) -> String {
        match Config::parse(text) {
            Err(ParseError::Invalid(problems)) => problems.join("\n"),
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn absent_section_gives_defaults() {
        let config = Config::parse("").expect("empty config");
        let policy = &config.policy;
        assert!(policy.serves());
        assert_eq!(
            policy.listen,
            [ListenAddr::Tcp("127.0.0.1:10040".parse().expect("addr"))]
        );
        assert_eq!(policy.request_timeout, Duration::from_secs(10));
        assert_eq!(policy.idle_timeout, Duration::from_mins(5));
        assert_eq!(policy.max_connections, 512);
        assert_eq!(policy.max_line_length, 4096);
        assert_eq!(policy.max_attributes, 100);
        assert_eq!(policy.max_request_size, 65536);
        assert_eq!(policy.unix_mode, 0o666);
        assert!(policy.check.is_empty() && policy.threshold.is_empty());
    }

    #[test]
    fn the_documented_example_parses() {
        let config = Config::parse(EXAMPLE).expect("example config");
        let policy = &config.policy;
        assert_eq!(policy.listen.len(), 2);
        assert_eq!(
            policy.listen[1],
            ListenAddr::Unix(PathBuf::from("/var/spool/postfix/private/spamwall"))
        );
        assert_eq!(policy.check.len(), 5);
        assert_eq!(policy.check[1].kind, CheckType::Dnsbl);
        assert_eq!(policy.check[1].timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            policy.threshold[0].ban,
            Some(BanTime(Some(Duration::from_hours(1))))
        );
        assert_eq!(policy.hostnames, ["mx.example.org"]);
    }

    #[test]
    fn empty_listen_turns_the_server_off() {
        let config = Config::parse("[policy]\nlisten = []\n").expect("config");
        assert!(!config.policy.serves());
        let config = Config::parse("[policy]\nenabled = false\n").expect("config");
        assert!(!config.policy.serves());
    }

    #[test]
    fn bad_listen_and_unknown_keys_name_their_line() {
        let message = Config::parse("[policy]\nlisten = [\"localhost\"]\n")
            .expect_err("bad listen")
            .to_string();
        assert!(
            message.contains("line 2") && message.contains("localhost"),
            "{message}"
        );
        let message = Config::parse(
            "[policy]\n[[policy.check]]\nname = \"x\"\ntype = \"helo\"\ncolour = 1\n",
        )
        .expect_err("unknown key")
        .to_string();
        assert!(message.contains("colour"), "{message}");
        let message = Config::parse("[policy]\nlisten = [\"unix:relative\"]\n")
            .expect_err("relative socket")
            .to_string();
        assert!(message.contains("absolute"), "{message}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let all = invalid(
            r#"
            [policy]
            listen = ["127.0.0.1:1", "127.0.0.1:1"]
            resolver = "dns.example"
            max_connections = 0
            request_timeout = "2m"
            unix_mode = 4095
            [[policy.check]]
            name = "zen"
            type = "dnsbl"
            categories = [ { match = "127.0.0.300", name = "x", score = 1 }, { match = "/(/", name = "y", score = 1 } ]
            [[policy.check]]
            name = "zen"
            type = "helo"
            zone = "pointless.example"
            rules = ["no-such-rule"]
            [[policy.check]]
            name = "partners"
            type = "list"
            client = ["192.0.2.1/24", "nope"]
            sender = ["/[/"]
            file = "/nonexistent/spamwall-list"
            action = "DUNNO"
            [[policy.check]]
            name = "bad name"
            type = "rhsbl"
            zone = "dbl.example"
            [[policy.threshold]]
            score = 10
            action = "rejct oops"
            [[policy.threshold]]
            score = 10
            action = "dunno"
            "#,
        );
        for needle in [
            "policy.listen[1]",
            "policy.resolver",
            "policy.max_connections",
            "policy.request_timeout",
            "policy.unix_mode",
            "policy.check[0].zone",
            "policy.check[0].categories[0]",
            "policy.check[0].categories[1]",
            "policy.check[1].name",
            "policy.check[1].zone",
            "policy.check[1].rules",
            "policy.check[2].client[0]",
            "policy.check[2].client[1]",
            "policy.check[2].sender[0]",
            "policy.check[2].file",
            "policy.check[2].action",
            "policy.check[3].name",
            "policy.threshold[0].action",
            "policy.threshold[1].score",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn public_resolvers_are_told_from_local_ones() {
        for public in [
            "8.8.8.8",
            "8.8.4.4",
            "1.1.1.1",
            "1.0.0.1",
            "9.9.9.9",
            "208.67.222.222",
            "2001:4860:4860::8888",
            "2606:4700:4700::1111",
            "2620:fe::fe",
            "::ffff:8.8.8.8",
        ] {
            assert!(
                is_public_resolver(public.parse().expect(public)),
                "{public}"
            );
        }
        for local in [
            "127.0.0.1",
            "127.0.0.53",
            "10.0.0.2",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.2.53",
            "::1",
            "fd00::53",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public_resolver(local.parse().expect(local)), "{local}");
        }
        assert_eq!(
            resolv_conf_servers(
                "# comment\nsearch example.org\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n  nameserver 8.8.8.8 \nnameserver bogus\n"
            ),
            [
                "127.0.0.53".parse::<IpAddr>().expect("ip"),
                "fe80::1".parse().expect("ip"),
                "8.8.8.8".parse().expect("ip")
            ]
        );
    }

    #[test]
    fn dns_lists_behind_a_public_resolver_are_warned_about() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.53\nnameserver 1.1.1.1\n").expect("write");
        let checks = "[[policy.check]]\nname = \"zen\"\ntype = \"dnsbl\"\nzone = \"zen.example\"\n\
                      [[policy.check]]\nname = \"dbl\"\ntype = \"rhsbl\"\nzone = \"dbl.example\"\n\
                      [[policy.check]]\nname = \"own\"\ntype = \"dnsbl\"\nzone = \"own.example\"\nresolver = \"9.9.9.9\"\n\
                      [[policy.check]]\nname = \"helo\"\ntype = \"helo\"\n";
        let config = Config::parse(checks).expect("valid");
        let warnings = config.policy.resolver_warnings(&resolv);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("policy.check[2].resolver: 9.9.9.9 (own) is a public resolver: DNS lists such as Spamhaus refuse"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with(&format!(
                "policy.resolver: not set: the nameservers of {} answer the DNS list checks (zen, dbl), and 1.1.1.1 is public:",
                resolv.display()
            )),
            "{warnings:?}"
        );
        let config =
            Config::parse(&format!("[policy]\nresolver = \"8.8.8.8\"\n{checks}")).expect("valid");
        let warnings = config.policy.resolver_warnings(&resolv);
        assert!(
            warnings.iter().any(|w| w
                .starts_with("policy.resolver: 8.8.8.8 is a public resolver, asked by the DNS list checks (zen, dbl):")),
            "{warnings:?}"
        );
        let config = Config::parse(&format!(
            "[policy]\nresolver = \"127.0.0.1:5353\"\n{checks}"
        ))
        .expect("valid");
        assert_eq!(config.policy.resolver_warnings(&resolv).len(), 1);
        let config = Config::parse(&format!("[policy]\nenabled = false\n{checks}")).expect("valid");
        assert!(config.policy.resolver_warnings(&resolv).is_empty());
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").expect("write");
        let config = Config::parse(checks).expect("valid");
        assert_eq!(
            config.policy.resolver_warnings(&resolv).len(),
            1,
            "own resolver only"
        );
    }

    #[test]
    fn resolver_addresses() {
        assert_eq!(
            parse_resolver("127.0.0.1"),
            Ok("127.0.0.1:53".parse().expect("addr"))
        );
        assert_eq!(
            parse_resolver("[::1]:5353"),
            Ok("[::1]:5353".parse().expect("addr"))
        );
        assert!(parse_resolver("ns.example").is_err());
    }
}
