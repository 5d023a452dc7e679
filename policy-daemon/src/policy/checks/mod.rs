//! The check chain: what each `[[policy.check]]` looks at and what it
//! scores.
//!
//! Local checks (`helo`, `rdns`, `list`) answer at once; DNS checks
//! (`dnsbl`, `rhsbl`, `spf`) go through [`Dns`] and run concurrently. A
//! check fires at most once per mail, with a score and a detail such as
//! `zen/sbl=127.0.0.2(+10)`.

mod dnsbl;
mod helo;
mod list;
mod rdns;
mod rhsbl;
mod spf;

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

pub use dnsbl::{Category, CodeMatch, DnsList};
pub use helo::{Helo, HeloRule};
pub use list::{List, ListField};
pub use rdns::{Rdns, RdnsRule};
pub use rhsbl::DomainList;
pub use spf::SpfCheck;

use super::{
    codec::Request,
    config::{CheckConfig, CheckType, PolicyConfig, parse_resolver},
    dns::{Dns, DnsError},
};

/// Most checks in a chain: which fired is kept in a fixed bit set.
pub const MAX_CHECKS: usize = 256;
/// Lookup timeout of a DNS check that names none.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// The attributes checks look at, taken from a request in one pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mail<'a> {
    /// `client_address`, parsed; IPv4-mapped IPv6 becomes IPv4.
    pub client: Option<IpAddr>,
    /// `client_name`: the forward-confirmed name or `unknown`.
    pub client_name: Option<&'a str>,
    /// `reverse_client_name`: the PTR name or `unknown`.
    pub reverse_client_name: Option<&'a str>,
    /// `helo_name`.
    pub helo: Option<&'a str>,
    /// `sender`; empty for the null sender.
    pub sender: Option<&'a str>,
    /// `recipient`.
    pub recipient: Option<&'a str>,
    /// `server_address`: our address the client connected to, as sent;
    /// [`parse_ip`] reads it when a check needs it.
    pub server: Option<&'a str>,
    /// `instance`: constant over the requests of one mail.
    pub instance: Option<&'a str>,
    /// `protocol_state`: `CONNECT`, `HELO`, `MAIL`, `RCPT`…
    pub protocol_state: Option<&'a str>,
}

impl<'a> Mail<'a> {
    /// The attributes of `request`; absent ones, and empty ones where
    /// emptiness means nothing, are `None`.
    pub fn from_request(request: &'a Request) -> Self {
        let mut mail = Self::default();
        for (name, value) in request.attributes() {
            let slot = match name {
                "client_address" => {
                    if mail.client.is_none() {
                        mail.client = parse_ip(value);
                    }
                    continue;
                }
                "server_address" => &mut mail.server,
                "client_name" => &mut mail.client_name,
                "reverse_client_name" => &mut mail.reverse_client_name,
                "helo_name" => &mut mail.helo,
                "sender" => {
                    if mail.sender.is_none() {
                        mail.sender = Some(value);
                    }
                    continue;
                }
                "recipient" => &mut mail.recipient,
                "instance" => &mut mail.instance,
                "protocol_state" => &mut mail.protocol_state,
                _ => continue,
            };
            if slot.is_none() && !value.is_empty() {
                *slot = Some(value);
            }
        }
        mail
    }
}

/// An address as Postfix writes it, IPv4-mapped IPv6 as IPv4.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.strip_prefix("IPv6:").unwrap_or(text);
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// What a check found.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// Points added to the mail's score.
    pub score: f64,
    /// What fired, e.g. `zen/sbl=127.0.0.2(+10)`.
    pub detail: String,
    /// A header line (`Received-SPF: …`, no line ending) for Postfix to
    /// prepend when the answer would otherwise be `DUNNO`.
    pub header: Option<String>,
}

impl Hit {
    /// A hit whose detail is `what(+score)`.
    pub fn new(score: f64, what: &str) -> Self {
        Self::from_parts(score, &[what])
    }

    /// A hit whose detail is the concatenated `parts` then `(+score)`.
    pub fn from_parts(score: f64, parts: &[&str]) -> Self {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let mut detail = String::with_capacity(len + 8);
        for part in parts {
            detail.push_str(part);
        }
        detail.push('(');
        push_signed(&mut detail, score);
        detail.push(')');
        Self {
            score,
            detail,
            header: None,
        }
    }
}

/// `+5`, `-2`, `+2.5`.
pub fn signed(score: f64) -> String {
    let mut text = String::with_capacity(8);
    push_signed(&mut text, score);
    text
}

/// Appends `score` as `{score:+}` writes it; whole scores, the usual
/// ones, without the float formatting machinery.
fn push_signed(text: &mut String, score: f64) {
    // Below 2^53 every whole f64 converts to u64 exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if score.fract() != 0.0 || score.abs() >= EXACT {
        write!(text, "{score:+}").expect("writing to a String");
        return;
    }
    text.push(if score.is_sign_negative() { '-' } else { '+' });
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "whole, non-negative and below 2^53: exact"
    )]
    let mut whole = score.abs() as u64;
    let mut digits = [0_u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (whole % 10) as u8;
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        text.push(char::from(digit));
    }
}

/// The outcome of a local check.
#[derive(Clone, Debug, PartialEq)]
pub enum Local<'c> {
    /// Nothing found.
    Pass,
    /// Found something.
    Hit(Hit),
    /// An allow list matched: the chain ends with this action.
    Allow(&'c str),
}

/// One compiled check.
#[derive(Debug)]
pub struct Check {
    /// Its unique name.
    pub name: String,
    /// What it does.
    pub kind: Kind,
}

/// The check types, compiled.
#[derive(Debug)]
pub enum Kind {
    Dnsbl(DnsList),
    Rhsbl(DomainList),
    Helo(Helo),
    Rdns(Rdns),
    List(Box<List>),
    Spf(SpfCheck),
}

/// Settings every check may need while it runs.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// `policy.hostnames`, lowercased.
    pub hostnames: &'a [String],
    /// This host's name as `Received-SPF` gives it: the first of
    /// `policy.hostnames`, else the system's.
    pub receiver: &'a str,
}

impl Check {
    /// Whether the check needs DNS.
    pub const fn is_dns(&self) -> bool {
        matches!(self.kind, Kind::Dnsbl(_) | Kind::Rhsbl(_) | Kind::Spf(_))
    }

    /// Runs a local check; DNS checks pass here.
    pub fn local(&self, mail: &Mail<'_>, context: Context<'_>) -> Local<'_> {
        match &self.kind {
            Kind::Dnsbl(_) | Kind::Rhsbl(_) | Kind::Spf(_) => Local::Pass,
            Kind::Helo(helo) => helo.evaluate(&self.name, mail, context),
            Kind::Rdns(rdns) => rdns.evaluate(&self.name, mail),
            Kind::List(list) => list.evaluate(&self.name, mail),
        }
    }

    /// Runs a DNS check, answering by `deadline`; local checks find
    /// nothing here.
    pub async fn dns(
        &self,
        mail: &Mail<'_>,
        dns: &Dns,
        deadline: Instant,
        context: Context<'_>,
    ) -> Result<Option<Hit>, DnsError> {
        match &self.kind {
            Kind::Dnsbl(list) => list.evaluate(&self.name, mail, dns).await,
            Kind::Rhsbl(list) => list.evaluate(&self.name, mail, dns).await,
            Kind::Spf(spf) => {
                spf.evaluate(&self.name, mail, dns, deadline, context.receiver)
                    .await
            }
            Kind::Helo(_) | Kind::Rdns(_) | Kind::List(_) => Ok(None),
        }
    }
}

/// The compiled chain and the DNS servers its checks use.
#[derive(Debug, Default)]
pub struct Chain {
    /// Checks in configuration order.
    pub checks: Vec<Check>,
    /// DNS servers by resolver index; `None` is the system's.
    pub resolvers: Vec<Option<SocketAddr>>,
    /// `policy.hostnames`, lowercased.
    pub hostnames: Vec<String>,
    /// See [`Context::receiver`].
    pub receiver: String,
}

/// Collects problems under one key prefix.
pub struct Problems<'a> {
    prefix: String,
    found: &'a mut Vec<String>,
}

impl<'a> Problems<'a> {
    /// Problems of `prefix` (e.g. `policy.check[2]`) go into `found`.
    pub fn new(prefix: String, found: &'a mut Vec<String>) -> Self {
        Self { prefix, found }
    }

    /// Records a problem of `key` under the prefix.
    pub fn push(&mut self, key: &str, message: impl std::fmt::Display) {
        self.found.push(format!("{}.{key}: {message}", self.prefix));
    }
}

impl Chain {
    /// Compiles `[[policy.check]]`; every problem is reported with its key.
    pub fn compile(config: &PolicyConfig) -> Result<Self, Vec<String>> {
        let mut found = Vec::new();
        if config.check.len() > MAX_CHECKS {
            found.push(format!(
                "policy.check: {} checks; at most {MAX_CHECKS}",
                config.check.len()
            ));
        }
        let default_resolver = config
            .resolver
            .as_deref()
            .and_then(|text| parse_resolver(text).ok());
        let mut resolvers: HashMap<Option<SocketAddr>, u16> = HashMap::new();
        let mut chain = Self {
            hostnames: config
                .hostnames
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            ..Self::default()
        };
        for (i, check) in config.check.iter().enumerate() {
            let mut problems = Problems::new(format!("policy.check[{i}]"), &mut found);
            check_name(check, &config.check[..i], &mut problems);
            check_keys(check, &mut problems);
            let mut resolver = || {
                let server = match &check.resolver {
                    None => default_resolver,
                    Some(text) => match parse_resolver(text) {
                        Ok(addr) => Some(addr),
                        Err(e) => {
                            problems.push("resolver", e);
                            None
                        }
                    },
                };
                let next = u16::try_from(resolvers.len()).unwrap_or(u16::MAX);
                let index = *resolvers.entry(server).or_insert(next);
                if usize::from(index) == chain.resolvers.len() {
                    chain.resolvers.push(server);
                }
                index
            };
            let kind = match check.kind {
                CheckType::Dnsbl => {
                    let index = resolver();
                    Kind::Dnsbl(DnsList::compile(check, index, &mut problems))
                }
                CheckType::Rhsbl => {
                    let index = resolver();
                    Kind::Rhsbl(DomainList::compile(check, index, &mut problems))
                }
                CheckType::Helo => Kind::Helo(Helo::compile(check, &mut problems)),
                CheckType::Rdns => Kind::Rdns(Rdns::compile(check, &mut problems)),
                CheckType::List => Kind::List(Box::new(List::compile(check, &mut problems))),
                CheckType::Spf => {
                    let index = resolver();
                    Kind::Spf(SpfCheck::compile(check, index, &mut problems))
                }
            };
            chain.checks.push(Check {
                name: check.name.clone(),
                kind,
            });
        }
        chain.receiver = chain
            .hostnames
            .first()
            .cloned()
            .unwrap_or_else(system_hostname);
        if found.is_empty() {
            Ok(chain)
        } else {
            Err(found)
        }
    }

    /// Settings for running the checks.
    pub fn context(&self) -> Context<'_> {
        Context {
            hostnames: &self.hostnames,
            receiver: &self.receiver,
        }
    }
}

/// The kernel's host name, `localhost` when it cannot be read.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn check_name(check: &CheckConfig, earlier: &[CheckConfig], problems: &mut Problems<'_>) {
    let name = &check.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.push(
            "name",
            format!("{name:?}: use letters, digits, '-', '_' and '.'"),
        );
    }
    if earlier.iter().any(|other| other.name == *name) {
        problems.push("name", format!("{name:?} is used by an earlier check"));
    }
}

/// Reports keys set on a check whose type does not use them.
fn check_keys(check: &CheckConfig, problems: &mut Problems<'_>) {
    let present = [
        ("zone", check.zone.is_some()),
        ("timeout", check.timeout.is_some()),
        ("scores", check.scores.is_some()),
        ("header", check.header.is_some()),
        ("resolver", check.resolver.is_some()),
        ("categories", check.categories.is_some()),
        ("fields", check.fields.is_some()),
        ("rules", check.rules.is_some()),
        ("allow", check.allow.is_some()),
        ("action", check.action.is_some()),
        ("client", check.client.is_some()),
        ("sender", check.sender.is_some()),
        ("recipient", check.recipient.is_some()),
        ("helo", check.helo.is_some()),
        ("file", check.file.is_some()),
    ];
    let allowed: &[&str] = match check.kind {
        CheckType::Dnsbl => &["zone", "timeout", "resolver", "categories"],
        CheckType::Rhsbl => &["zone", "timeout", "resolver", "categories", "fields"],
        CheckType::Helo | CheckType::Rdns => &["rules"],
        CheckType::Spf => &["timeout", "resolver", "scores", "header"],
        CheckType::List => &[
            "allow",
            "action",
            "client",
            "sender",
            "recipient",
            "helo",
            "file",
        ],
    };
    for (key, set) in present {
        if set && !allowed.contains(&key) {
            problems.push(key, format!("not used by a check of type {}", check.kind));
        }
    }
}

/// A check's score: the configured one, default 1; it must be finite.
fn score(check: &CheckConfig, problems: &mut Problems<'_>) -> f64 {
    let score = check.score.unwrap_or(1.0);
    if score.is_finite() {
        score
    } else {
        problems.push("score", "must be a finite number");
        0.0
    }
}

/// A rule list (`helo`, `rdns`): every rule when absent.
fn rules<T: Copy>(check: &CheckConfig, all: &[(&str, T)], problems: &mut Problems<'_>) -> Vec<T> {
    let Some(names) = &check.rules else {
        return all.iter().map(|(_, rule)| *rule).collect();
    };
    let mut chosen = Vec::new();
    for name in names {
        if let Some((_, rule)) = all.iter().find(|(known, _)| known == name) {
            chosen.push(*rule);
        } else {
            let known: Vec<&str> = all.iter().map(|(known, _)| *known).collect();
            problems.push(
                "rules",
                format!("unknown rule {name:?}; known: {}", known.join(", ")),
            );
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_fields_come_from_one_pass() {
        let request = Request::from_pairs([
            ("request", "smtpd_access_policy"),
            ("client_address", "::ffff:192.0.2.9"),
            ("client_name", "unknown"),
            ("reverse_client_name", ""),
            ("helo_name", "Host.Example"),
            ("sender", ""),
            ("recipient", "a@b.example"),
            ("server_address", "2001:db8::25"),
            ("instance", "1a.2b.3"),
        ]);
        let mail = Mail::from_request(&request);
        assert_eq!(mail.client, Some("192.0.2.9".parse().expect("ip")));
        assert_eq!(mail.client_name, Some("unknown"));
        assert_eq!(mail.reverse_client_name, None, "empty means absent");
        assert_eq!(mail.sender, Some(""), "the null sender is kept");
        assert_eq!(
            mail.server.and_then(parse_ip),
            Some("2001:db8::25".parse().expect("ip"))
        );
        assert_eq!(mail.instance, Some("1a.2b.3"));
    }

    #[test]
    fn scores_print_with_their_sign() {
        assert_eq!(signed(5.0), "+5");
        assert_eq!(signed(-2.0), "-2");
        assert_eq!(signed(2.5), "+2.5");
        assert_eq!(Hit::new(2.0, "helo-not-fqdn").detail, "helo-not-fqdn(+2)");
        assert_eq!(
            Hit::from_parts(-1.5, &["l", "=", "client"]).detail,
            "l=client(-1.5)"
        );
    }

    #[test]
    fn scores_print_as_the_float_formatter_prints_them() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let fixed = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            10.0,
            100.0,
            0.5,
            -0.25,
            1e15,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            -9_007_199_254_740_993.0,
            1e300,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
        ];
        let random = (0..10_000).map(|i| {
            let bits = next();
            match i % 3 {
                0 => f64::from_bits(bits),
                #[expect(clippy::cast_precision_loss, reason = "any value will do")]
                1 => (bits >> (bits % 64)) as f64 * if bits % 2 == 0 { 1.0 } else { -1.0 },
                _ => f64::from(i32::try_from(bits % 2000).expect("small") - 1000) / 4.0,
            }
        });
        for score in fixed.into_iter().chain(random).filter(|s| s.is_finite()) {
            assert_eq!(signed(score), format!("{score:+}"), "{score:e}");
        }
    }
}
