//! `check_host()` (RFC 7208 §4): fetch the domain's record, walk its
//! mechanisms in order, follow `include:` and `redirect=`, count every
//! term that queries DNS and every lookup that comes back empty.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf, Variables};

use super::{SpfResult, syntax::ParsedRecords};
use crate::policy::dns::{BoxFuture, Dns, RecordType, Records, ipv4_query, ipv6_query};

/// Terms that query DNS (`include`, `a`, `mx`, `ptr`, `exists`,
/// `redirect`) one evaluation may use (§4.6.4).
pub const MAX_DNS_TERMS: u32 = 10;
/// Lookups answered with no record (NXDOMAIN or no data) one evaluation
/// may meet (§4.6.4).
pub const MAX_VOID_LOOKUPS: u32 = 2;
/// Names of one `mx` (MX exchanges) or `ptr` (PTR names) looked up
/// (§4.6.4).
pub const MAX_NAMES: usize = 10;
/// Longest domain name queried; longer expansions lose labels on the left
/// (§7.3).
const MAX_NAME_LENGTH: usize = 253;

/// Which identity is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The MAIL FROM domain (§2.4).
    MailFrom,
    /// The HELO name, for the null sender (§2.3).
    Helo,
}

impl Identity {
    /// As `Received-SPF` names it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::MailFrom => "mailfrom",
            Self::Helo => "helo",
        }
    }
}

/// What `check_host()` is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The SMTP client.
    pub ip: IpAddr,
    pub identity: Identity,
    /// `<domain>`: the sender's domain, or the HELO name.
    pub domain: String,
    /// `<sender>`: `local@domain`; `postmaster@` the HELO name for the
    /// null sender.
    pub sender: String,
    /// The HELO name as the client gave it, for the `h` macro.
    pub helo: String,
}

impl Query {
    /// The query for a mail: MAIL FROM when `sender` is not empty, else
    /// HELO (§2.4: a null sender is checked as `postmaster@` HELO).
    /// `None` when there is no identity to check.
    pub fn for_mail(ip: IpAddr, sender: Option<&str>, helo: Option<&str>) -> Option<Self> {
        let helo = helo.unwrap_or("");
        match sender.filter(|sender| !sender.is_empty()) {
            Some(sender) => {
                let (local, domain) = sender.rsplit_once('@').unwrap_or(("", sender));
                let local = if local.is_empty() {
                    "postmaster"
                } else {
                    local
                };
                Some(Self {
                    ip,
                    identity: Identity::MailFrom,
                    domain: domain.to_owned(),
                    sender: [local, "@", domain].concat(),
                    helo: helo.to_owned(),
                })
            }
            None if !helo.is_empty() => Some(Self {
                ip,
                identity: Identity::Helo,
                domain: helo.to_owned(),
                sender: ["postmaster@", helo].concat(),
                helo: helo.to_owned(),
            }),
            None => None,
        }
    }
}

/// The result and how it came about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub result: SpfResult,
    /// The directive that matched, or why the result is what it is
    /// (`ip4`, `no SPF record`, `more than 10 DNS lookups`, a DNS error).
    pub reason: String,
    /// Terms that queried DNS.
    pub lookups: u32,
    /// Lookups that came back empty.
    pub voids: u32,
}

/// Where DNS lookups go and how long they may take.
#[derive(Clone, Copy, Debug)]
pub struct Lookups<'a> {
    pub dns: &'a Dns,
    /// The check's resolver.
    pub resolver: u16,
    /// Longest wait for one lookup.
    pub timeout: Duration,
    /// No lookup waits past this: the result is `temperror` by then.
    pub deadline: Instant,
    /// Records parsed by earlier evaluations.
    pub parsed: &'a ParsedRecords,
}

/// Evaluates `query` (§4): never fails, a DNS failure or timeout is
/// `temperror`, a malformed record or a limit exceeded `permerror`.
pub async fn check_host(lookups: Lookups<'_>, query: &Query) -> Outcome {
    let domain = query.domain.trim_end_matches('.').to_ascii_lowercase();
    if !is_domain_name(&domain) {
        return Outcome {
            result: SpfResult::None,
            reason: "not a domain name".to_owned(),
            lookups: 0,
            voids: 0,
        };
    }
    let mut vars = Variables::new();
    vars.set_ip(&query.ip);
    vars.set_sender(query.sender.as_bytes().to_vec());
    vars.set_helo_domain(query.helo.as_bytes().to_vec());
    let mut evaluation = Evaluation {
        lookups,
        ip: query.ip,
        vars,
        terms: 0,
        voids: 0,
        validated: None,
        reason: String::new(),
    };
    let result = match evaluation.evaluate(domain, 0).await {
        Ok(result) => result,
        Err(Stop::Temporary(reason)) => {
            evaluation.reason = reason;
            SpfResult::TempError
        }
        Err(Stop::Permanent(reason)) => {
            evaluation.reason = reason;
            SpfResult::PermError
        }
    };
    Outcome {
        result,
        reason: evaluation.reason,
        lookups: evaluation.terms,
        voids: evaluation.voids,
    }
}

/// Why an evaluation ends before a mechanism decides.
#[derive(Debug)]
enum Stop {
    /// `temperror`: DNS failed or ran out of time.
    Temporary(String),
    /// `permerror`: the records are broken or exceed a limit.
    Permanent(String),
}

struct Evaluation<'a> {
    lookups: Lookups<'a>,
    ip: IpAddr,
    vars: Variables<'static>,
    /// Terms that queried DNS so far.
    terms: u32,
    /// Empty answers so far.
    voids: u32,
    /// The client's validated names (§5.5), looked up once.
    validated: Option<Arc<[String]>>,
    /// The directive that decided, or why none did.
    reason: String,
}

impl Evaluation<'_> {
    /// `check_host()` of `domain` (lowercase, no final dot).
    fn evaluate(&mut self, domain: String, depth: u32) -> BoxFuture<'_, Result<SpfResult, Stop>> {
        Box::pin(async move {
            let Some(record) = self.record(&domain).await? else {
                self.reason = format!("no SPF record at {domain}");
                return Ok(SpfResult::None);
            };
            self.vars.set_domain(domain.as_bytes().to_vec());
            let needs_ptr = record.directives.iter().any(|d| d.mechanism.needs_ptr())
                || record.redirect.as_ref().is_some_and(Macro::needs_ptr);
            if needs_ptr {
                let names = self.validated_names().await?;
                let name = names
                    .iter()
                    .find(|name| in_domain(name, &domain))
                    .or_else(|| names.first())
                    .map_or("unknown", String::as_str);
                self.vars.set_validated_domain(name.as_bytes().to_vec());
            }
            for directive in &record.directives {
                if self.matches(&directive.mechanism, &domain, depth).await? {
                    self.reason = [describe(&directive.mechanism), " at ", &domain].concat();
                    return Ok(match directive.qualifier {
                        Qualifier::Pass => SpfResult::Pass,
                        Qualifier::Fail => SpfResult::Fail,
                        Qualifier::SoftFail => SpfResult::SoftFail,
                        Qualifier::Neutral => SpfResult::Neutral,
                    });
                }
            }
            if let Some(redirect) = &record.redirect {
                self.count_term()?;
                let target = self.expand(redirect, &domain);
                return match self.evaluate(target.clone(), depth + 1).await? {
                    SpfResult::None => Err(Stop::Permanent(format!(
                        "redirect={target} has no SPF record"
                    ))),
                    result => Ok(result),
                };
            }
            self.reason = format!("no mechanism matched at {domain}");
            Ok(SpfResult::Neutral)
        })
    }

    /// Whether `mechanism` of `domain`'s record matches the client.
    async fn matches(
        &mut self,
        mechanism: &Mechanism,
        domain: &str,
        depth: u32,
    ) -> Result<bool, Stop> {
        Ok(match mechanism {
            Mechanism::All => true,
            Mechanism::Ip4 { addr, mask } => match self.ip {
                IpAddr::V4(ip) => u32::from(ip) & mask == u32::from(*addr) & mask,
                IpAddr::V6(_) => false,
            },
            Mechanism::Ip6 { addr, mask } => match self.ip {
                IpAddr::V6(ip) => u128::from(ip) & mask == u128::from(*addr) & mask,
                IpAddr::V4(_) => false,
            },
            Mechanism::A {
                macro_string,
                ip4_mask,
                ip6_mask,
            } => {
                self.count_term()?;
                let target = self.expand(macro_string, domain);
                self.address_matches(&target, *ip4_mask, *ip6_mask).await?
            }
            Mechanism::Mx {
                macro_string,
                ip4_mask,
                ip6_mask,
            } => {
                self.count_term()?;
                let target = self.expand(macro_string, domain);
                let exchanges = self.lookup(RecordType::Mx, &target).await?;
                let Records::Names(exchanges) = &*exchanges else {
                    return Ok(false);
                };
                if exchanges.len() > MAX_NAMES {
                    return Err(Stop::Permanent(format!(
                        "{target} has {} MX records; at most {MAX_NAMES} are looked up",
                        exchanges.len()
                    )));
                }
                for exchange in exchanges {
                    if self.address_matches(exchange, *ip4_mask, *ip6_mask).await? {
                        return Ok(true);
                    }
                }
                false
            }
            Mechanism::Ptr { macro_string } => {
                self.count_term()?;
                let target = self.expand(macro_string, domain);
                let target = target.trim_end_matches('.').to_ascii_lowercase();
                let names = self.validated_names().await?;
                names.iter().any(|name| in_domain(name, &target))
            }
            Mechanism::Exists { macro_string } => {
                self.count_term()?;
                let target = self.expand(macro_string, domain);
                // Always A, whatever the client's family (§5.7).
                !self.lookup(RecordType::A, &target).await?.is_empty()
            }
            Mechanism::Include { macro_string } => {
                self.count_term()?;
                let target = self.expand(macro_string, domain);
                let included = self.evaluate(target.clone(), depth + 1).await?;
                // The included record set `d` to its domain: back to ours.
                self.vars.set_domain(domain.as_bytes().to_vec());
                match included {
                    SpfResult::Pass => true,
                    SpfResult::None => {
                        return Err(Stop::Permanent(format!(
                            "include:{target} has no SPF record"
                        )));
                    }
                    _ => false,
                }
            }
        })
    }

    /// The one `v=spf1` record of `domain`; `None` when it has none.
    async fn record(&mut self, domain: &str) -> Result<Option<Arc<Spf>>, Stop> {
        if !is_domain_name(domain) {
            return Ok(None);
        }
        let records = self.lookup(RecordType::Txt, domain).await?;
        let Records::Txt(texts) = &*records else {
            return Ok(None);
        };
        let mut spf = texts.iter().filter(|text| is_spf1(text));
        let Some(text) = spf.next() else {
            return Ok(None);
        };
        if spf.next().is_some() {
            return Err(Stop::Permanent(format!(
                "{domain} has more than one v=spf1 record"
            )));
        }
        self.lookups.parsed.parse(text).map(Some).map_err(|why| {
            Stop::Permanent(format!("syntax error in the SPF record of {domain}: {why}"))
        })
    }

    /// Whether `name`'s A (IPv4 client) or AAAA (IPv6 client) records
    /// hold the client within the mask.
    async fn address_matches(
        &mut self,
        name: &str,
        ip4_mask: u32,
        ip6_mask: u128,
    ) -> Result<bool, Stop> {
        Ok(match self.ip {
            IpAddr::V4(ip) => match &*self.lookup(RecordType::A, name).await? {
                Records::A(addrs) => addrs
                    .iter()
                    .any(|addr| u32::from(*addr) & ip4_mask == u32::from(ip) & ip4_mask),
                _ => false,
            },
            IpAddr::V6(ip) => match &*self.lookup(RecordType::Aaaa, name).await? {
                Records::Aaaa(addrs) => addrs
                    .iter()
                    .any(|addr| u128::from(*addr) & ip6_mask == u128::from(ip) & ip6_mask),
                _ => false,
            },
        })
    }

    /// The client's PTR names whose addresses include it (§5.5), at most
    /// [`MAX_NAMES`] of them looked up.
    async fn validated_names(&mut self) -> Result<Arc<[String]>, Stop> {
        if let Some(names) = &self.validated {
            return Ok(Arc::clone(names));
        }
        let reverse = match self.ip {
            IpAddr::V4(ip) => ipv4_query(ip, "in-addr.arpa"),
            IpAddr::V6(ip) => ipv6_query(ip, "ip6.arpa"),
        };
        let names = self.lookup(RecordType::Ptr, &reverse).await?;
        let mut validated = Vec::new();
        if let Records::Names(names) = &*names {
            for name in names.iter().take(MAX_NAMES) {
                if self.address_matches(name, u32::MAX, u128::MAX).await? {
                    validated.push(name.clone());
                }
            }
        }
        let validated: Arc<[String]> = validated.into();
        self.validated = Some(Arc::clone(&validated));
        Ok(validated)
    }

    /// Counts a term that queries DNS.
    fn count_term(&mut self) -> Result<(), Stop> {
        self.terms += 1;
        if self.terms > MAX_DNS_TERMS {
            return Err(Stop::Permanent(format!(
                "more than {MAX_DNS_TERMS} DNS lookups"
            )));
        }
        Ok(())
    }

    /// `kind` records of `name`, counting an empty answer as a void
    /// lookup. A name DNS cannot carry (an empty or over-long label) has
    /// no records and is not asked.
    async fn lookup(&mut self, kind: RecordType, name: &str) -> Result<Arc<Records>, Stop> {
        let Some(name) = query_name(name) else {
            return Ok(Arc::new(Records::empty(kind)));
        };
        let remaining = self
            .lookups
            .deadline
            .saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Stop::Temporary(format!("no time left for {kind:?} {name}")));
        }
        let records = self
            .lookups
            .dns
            .records(
                self.lookups.resolver,
                kind,
                name,
                self.lookups.timeout.min(remaining),
            )
            .await
            .map_err(|error| Stop::Temporary(error.to_string()))?;
        if records.is_empty() {
            self.voids += 1;
            if self.voids > MAX_VOID_LOOKUPS {
                return Err(Stop::Permanent(format!(
                    "more than {MAX_VOID_LOOKUPS} void lookups"
                )));
            }
        }
        Ok(records)
    }

    /// `macro_string` expanded, `domain` for an absent domain-spec.
    fn expand(&self, macro_string: &Macro, domain: &str) -> String {
        macro_string
            .eval(&self.vars, domain, true)
            .trim_end_matches('.')
            .to_ascii_lowercase()
    }
}

/// The name to query for `name`: lowercase, ending in `.`, shortened on
/// the left to 253 characters (§7.3); `None` when a label is empty or
/// longer than 63.
fn query_name(name: &str) -> Option<String> {
    let mut name = name.trim_end_matches('.');
    while name.len() > MAX_NAME_LENGTH {
        name = name.split_once('.')?.1;
    }
    if !labels_fit(name) {
        return None;
    }
    let mut query = name.to_ascii_lowercase();
    query.push('.');
    Some(query)
}

/// Whether `domain` can be checked at all (§4.3): several labels, none
/// empty or longer than 63, and no address literal (a HELO `[192.0.2.1]`).
fn is_domain_name(domain: &str) -> bool {
    domain.len() <= MAX_NAME_LENGTH
        && domain.contains('.')
        && !domain.starts_with('[')
        && labels_fit(domain)
}

/// Whether every dot-separated label of `name` has 1 to 63 bytes (an
/// empty `name` has one empty label).
fn labels_fit(name: &str) -> bool {
    let mut label = 0_usize;
    for &byte in name.as_bytes() {
        if byte == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else {
            label += 1;
            if label > 63 {
                return false;
            }
        }
    }
    label > 0
}

/// Whether a TXT record is an SPF record: `v=spf1` alone or followed by a
/// space (§4.5), in any case.
fn is_spf1(text: &[u8]) -> bool {
    text.len() >= 6
        && text[..6].eq_ignore_ascii_case(b"v=spf1")
        && text.get(6).is_none_or(|&c| c == b' ')
}

/// Whether `name` is `domain` or a name under it.
fn in_domain(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// A mechanism as the log and header comment name it.
fn describe(mechanism: &Mechanism) -> &'static str {
    match mechanism {
        Mechanism::All => "all",
        Mechanism::Include { .. } => "include",
        Mechanism::A { .. } => "a",
        Mechanism::Mx { .. } => "mx",
        Mechanism::Ptr { .. } => "ptr",
        Mechanism::Ip4 { .. } => "ip4",
        Mechanism::Ip6 { .. } => "ip6",
        Mechanism::Exists { .. } => "exists",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::dns::{AddressLookup, stub::StubLookup};

    fn dns(zone: &[(&str, &str)]) -> (Dns, Arc<StubLookup>) {
        let stub = Arc::new(StubLookup::zone(zone));
        let dns = Dns::new(
            vec![(
                "stub".to_owned(),
                Arc::clone(&stub) as Arc<dyn AddressLookup>,
            )],
            1000,
            Duration::from_mins(5),
        );
        (dns, stub)
    }

    async fn check(dns: &Dns, client: &str, sender: &str) -> Outcome {
        let query = Query::for_mail(client.parse().expect("ip"), Some(sender), Some("helo.test"))
            .expect("query");
        let lookups = Lookups {
            dns,
            resolver: 0,
            timeout: Duration::from_millis(200),
            deadline: Instant::now() + Duration::from_secs(1),
            parsed: &ParsedRecords::new(),
        };
        check_host(lookups, &query).await
    }

    #[tokio::test]
    async fn mechanisms_decide_in_order() {
        let (dns, _) = dns(&[
            (
                "ex.test.",
                "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a:host.ex.test mx include:inc.test ~all",
            ),
            ("host.ex.test.", "198.51.100.10"),
            ("ex.test.", "mx:mx.ex.test"),
            ("mx.ex.test.", "198.51.100.20"),
            ("inc.test.", "v=spf1 ip4:203.0.113.0/25 -all"),
            ("other.test.", "google-site-verification=x"),
        ]);
        for (client, result) in [
            ("192.0.2.9", SpfResult::Pass),
            ("2001:db8::5", SpfResult::Pass),
            ("198.51.100.10", SpfResult::Pass),
            ("198.51.100.20", SpfResult::Pass),
            ("203.0.113.7", SpfResult::Pass),
            ("203.0.113.200", SpfResult::SoftFail),
        ] {
            let outcome = check(&dns, client, "a@ex.test").await;
            assert_eq!(outcome.result, result, "{client}: {outcome:?}");
        }
        let outcome = check(&dns, "192.0.2.9", "a@other.test").await;
        assert_eq!(outcome.result, SpfResult::None, "{outcome:?}");
    }

    #[tokio::test]
    async fn broken_records_and_limits_are_permerror() {
        let mut zone = vec![
            ("two.test.", "v=spf1 -all"),
            ("two.test.", "v=spf1 +all"),
            ("bad.test.", "v=spf1 ip4:192.0.2.300 -all"),
            ("noinc.test.", "v=spf1 include:nothing.test -all"),
            ("voids.test.", "v=spf1 a:v1.test a:v2.test a:v3.test +all"),
            ("twovoids.test.", "v=spf1 a:v1.test a:v2.test +all"),
        ];
        let chain: Vec<(String, String)> = (0..12)
            .map(|i| {
                (
                    format!("l{i}.test."),
                    format!("v=spf1 include:l{}.test -all", i + 1),
                )
            })
            .collect();
        zone.extend(chain.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let (dns, _) = dns(&zone);
        for (sender, result, reason) in [
            ("a@two.test", SpfResult::PermError, "more than one v=spf1"),
            ("a@bad.test", SpfResult::PermError, "syntax error"),
            ("a@noinc.test", SpfResult::PermError, "include:nothing.test"),
            (
                "a@voids.test",
                SpfResult::PermError,
                "more than 2 void lookups",
            ),
            ("a@twovoids.test", SpfResult::Pass, "all"),
            (
                "a@l0.test",
                SpfResult::PermError,
                "more than 10 DNS lookups",
            ),
            (
                "a@l1.test",
                SpfResult::PermError,
                "more than 10 DNS lookups",
            ),
            (
                "a@l2.test",
                SpfResult::PermError,
                "include:l12.test has no SPF record",
            ),
        ] {
            let outcome = check(&dns, "192.0.2.1", sender).await;
            assert_eq!(outcome.result, result, "{sender}: {outcome:?}");
            assert!(outcome.reason.contains(reason), "{sender}: {outcome:?}");
        }
    }

    #[tokio::test]
    async fn a_stalled_lookup_is_temperror_within_the_deadline() {
        let stall = Arc::new({
            let mut stub = StubLookup::zone(&[("ex.test.", "v=spf1 a:stall.ex.test -all")]);
            stub.records
                .insert(("stall.ex.test.".to_owned(), RecordType::A), None);
            stub
        });
        let dns = Dns::new(
            vec![("stub".to_owned(), stall as Arc<dyn AddressLookup>)],
            1000,
            Duration::from_mins(5),
        );
        let started = Instant::now();
        let outcome = check(&dns, "192.0.2.1", "a@ex.test").await;
        assert_eq!(outcome.result, SpfResult::TempError, "{outcome:?}");
        assert!(started.elapsed() < Duration::from_millis(800));
    }

    #[tokio::test]
    async fn macros_expand_into_the_names_asked() {
        let (dns, stub) = dns(&[
            ("ex.test.", "v=spf1 exists:%{ir}.%{l}._spf.%{d} -all"),
            ("1.2.0.192.bob._spf.ex.test.", "127.0.0.2"),
        ]);
        assert_eq!(
            check(&dns, "192.0.2.1", "bob@ex.test").await.result,
            SpfResult::Pass
        );
        assert_eq!(
            check(&dns, "192.0.2.1", "eve@ex.test").await.result,
            SpfResult::Fail
        );
        assert!(
            stub.asked()
                .contains(&"A 1.2.0.192.eve._spf.ex.test.".to_owned()),
            "{:?}",
            stub.asked()
        );
    }

    #[test]
    fn identities_follow_the_sender_and_fall_back_to_helo() {
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let mail =
            Query::for_mail(ip, Some("a@example.org"), Some("mx.example.net")).expect("mail from");
        assert_eq!(mail.identity, Identity::MailFrom);
        assert_eq!(mail.domain, "example.org");
        assert_eq!(mail.sender, "a@example.org");
        let bounce = Query::for_mail(ip, Some(""), Some("mx.example.net")).expect("helo");
        assert_eq!(bounce.identity, Identity::Helo);
        assert_eq!(bounce.domain, "mx.example.net");
        assert_eq!(bounce.sender, "postmaster@mx.example.net");
        let no_local = Query::for_mail(ip, Some("@example.org"), None).expect("mail from");
        assert_eq!(no_local.sender, "postmaster@example.org");
        assert_eq!(Query::for_mail(ip, Some(""), None), None);
        assert_eq!(Query::for_mail(ip, None, Some("")), None);
    }

    #[test]
    fn names_are_checked_before_they_are_asked() {
        assert_eq!(query_name("Example.ORG."), Some("example.org.".to_owned()));
        assert_eq!(query_name("a..example.org"), None);
        assert_eq!(query_name(&format!("{}.example.org", "a".repeat(64))), None);
        assert_eq!(query_name(""), None);
        let long = format!("{}example.org", "abcdefghi.".repeat(30));
        let shortened = query_name(&long).expect("shortened");
        assert!(shortened.len() <= MAX_NAME_LENGTH + 1, "{shortened}");
        assert!(shortened.ends_with(".example.org."), "{shortened}");
        assert!(is_domain_name("example.org"));
        assert!(!is_domain_name("localhost"));
        assert!(!is_domain_name("[192.0.2.1]"), "an address literal");
        assert!(is_spf1(b"v=spf1"));
        assert!(is_spf1(b"V=SPF1 -all"));
        assert!(!is_spf1(b"v=spf10 -all"));
        assert!(!is_spf1(b"v=spf1-all"));
        assert!(in_domain("mx.example.org", "example.org"));
        assert!(in_domain("example.org", "example.org"));
        assert!(!in_domain("badexample.org", "example.org"));
        let a63 = "a".repeat(63);
        let a64 = "a".repeat(64);
        for name in [
            "",
            ".",
            "a",
            "a.",
            ".a",
            "a..b",
            "a.b",
            "é.b",
            &a63,
            &a64,
            &format!("{a63}.{a63}"),
            &format!("{a63}.{a64}"),
            &format!("{a64}.b"),
        ] {
            let by_split = name
                .split('.')
                .all(|label| !label.is_empty() && label.len() <= 63);
            assert_eq!(labels_fit(name), by_split, "{name:?}");
        }
    }
}
